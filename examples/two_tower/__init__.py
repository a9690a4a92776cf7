# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Two-tower retrieval: ``train.py`` runs ``torchrec_memcom.recipes.two_tower``; presets in
``torchrec_memcom/recipes/configs/two_tower/``."""
