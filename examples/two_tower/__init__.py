# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Two-tower retrieval with compressed embedding tables: ``model.py`` (towers, in-batch softmax), ``train.py`` (the
recipe), ``configs/``."""
