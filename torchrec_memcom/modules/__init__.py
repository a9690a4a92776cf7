# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Unsharded compressed embedding-bag collections (no torch.distributed imports).

- ``CompressedEmbeddingBagCollection``: any mix of stock and compressed tables, one physical lookup
- ``MEmComEmbeddingBagCollection``: ``w[i] * U[h(i)]``
- ``LMAEmbeddingBagCollection``: chunks of a shared memory at LSH locations
- ``HashEmbeddingBagCollection``, ``QREmbeddingBagCollection``, ``LowRankEmbeddingBagCollection``: baselines
- ``method``: what a compression method is, and the registry (one file per method: ``stock``, ``memcom``,
  ``baselines``, ``lma``, ``lowrank``)
"""

from torchrec_memcom.modules import stock  # noqa: F401 - registers the stock method
from torchrec_memcom.modules.baselines import QREmbeddingBagCollection
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.lma import LMAEmbeddingBagCollection
from torchrec_memcom.modules.lowrank import LowRankEmbeddingBagCollection
from torchrec_memcom.modules.memcom import (
    HashEmbeddingBagCollection,
    MEmComEmbeddingBagCollection,
    entity_weight_param_groups,
)

__all__ = [
    "CompressedEmbeddingBagCollection",
    "HashEmbeddingBagCollection",
    "LMAEmbeddingBagCollection",
    "LowRankEmbeddingBagCollection",
    "MEmComEmbeddingBagCollection",
    "QREmbeddingBagCollection",
    "entity_weight_param_groups",
]
