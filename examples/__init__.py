# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Entry points of the recipes for a checkout (``python examples/dlrm/train.py --config ml1m_memcom``).

The recipes, their YAML presets and the TorchX components ship inside the package: ``torchrec_memcom.recipes``.
"""
