# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharded hashing-trick and QR collections: every sharding type TorchRec offers for their tables."""

from torchrec_memcom.distributed._transformed import ShardedTransformedCollection, TransformedCollectionSharder
from torchrec_memcom.modules.baselines import HashEmbeddingBagCollection, QREmbeddingBagCollection

__all__ = [
    "HashEmbeddingBagCollectionSharder",
    "QREmbeddingBagCollectionSharder",
    "ShardedHashEmbeddingBagCollection",
    "ShardedQREmbeddingBagCollection",
]


class ShardedHashEmbeddingBagCollection(ShardedTransformedCollection[HashEmbeddingBagCollection]):
    """Sharded hashing trick: ids hashed on the data-parallel side, shared tables sharded as stock EBC tables."""


class HashEmbeddingBagCollectionSharder(TransformedCollectionSharder[HashEmbeddingBagCollection]):
    """Shards ``HashEmbeddingBagCollection``: the planner sees the shared tables (``num_shared_rows x d``)."""

    unsharded_type = HashEmbeddingBagCollection
    sharded_type = ShardedHashEmbeddingBagCollection


class ShardedQREmbeddingBagCollection(ShardedTransformedCollection[QREmbeddingBagCollection]):
    """Sharded QR: ids split into quotient/remainder features on the data-parallel side; Q and R sharded as tables."""


class QREmbeddingBagCollectionSharder(TransformedCollectionSharder[QREmbeddingBagCollection]):
    """Shards ``QREmbeddingBagCollection``: the planner sees ``<table>__q`` and ``<table>__r``."""

    unsharded_type = QREmbeddingBagCollection
    sharded_type = ShardedQREmbeddingBagCollection
