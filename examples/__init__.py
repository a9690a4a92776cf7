# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Example recipes; run from the repository root (``python -m examples.dlrm.train`` or the scripts).

Shared recipe code (configs, data, training helpers, TorchX components) lives in ``torchrec_memcom.recipes``.
"""
