# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""DLRM: ``train.py`` runs ``torchrec_memcom.recipes.dlrm``, ``report.py`` compares runs; presets in
``torchrec_memcom/recipes/configs/dlrm/``."""
