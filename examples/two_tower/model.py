# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The two-tower model moved into the package: ``torchrec_memcom.recipes.two_tower_model``. Re-exported here for
code that still imports ``examples.two_tower.model`` (``scripts/bench_quality.py``)."""

from torchrec_memcom.recipes.two_tower_model import (
    TwoTower,
    TwoTowerBatch,
    TwoTowerTrain,
    build_two_tower,
    in_batch_softmax_loss,
    item_log_frequency,
    tower_mlp,
)

__all__ = [
    "TwoTower",
    "TwoTowerBatch",
    "TwoTowerTrain",
    "build_two_tower",
    "in_batch_softmax_loss",
    "item_log_frequency",
    "tower_mlp",
]
