# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""DLRM with compressed embedding tables: ``train.py`` (the recipe), ``report.py`` (comparison), ``configs/``."""
