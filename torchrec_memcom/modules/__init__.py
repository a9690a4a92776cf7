# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Unsharded compressed embedding-bag collections (no torch.distributed imports).

- ``MEmComEmbeddingBagCollection``: ``w[i] * U[h(i)]``
- ``LMAEmbeddingBagCollection``: chunks of a shared memory at LSH locations
- ``HashEmbeddingBagCollection``, ``QREmbeddingBagCollection``: baselines
- ``CompressedEmbeddingBagCollection``: any mix of the above and stock tables
"""

from torchrec_memcom.modules.baselines import HashEmbeddingBagCollection, QREmbeddingBagCollection
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.lma import LMAEmbeddingBagCollection
from torchrec_memcom.modules.memcom import MEmComEmbeddingBagCollection

__all__ = [
    "CompressedEmbeddingBagCollection",
    "HashEmbeddingBagCollection",
    "LMAEmbeddingBagCollection",
    "MEmComEmbeddingBagCollection",
    "QREmbeddingBagCollection",
]
