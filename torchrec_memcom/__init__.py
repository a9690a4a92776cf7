# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""torchrec_memcom: compressed embedding tables (MEmCom, LMA, hashing trick, QR) for TorchRec.

- Collections: ``CompressedEmbeddingBagCollection`` (any mix of stock and compressed tables) and one per method
  (``MEmComEmbeddingBagCollection``, ...), drop-ins for ``torchrec.EmbeddingBagCollection`` (KJT in, KeyedTensor
  out), built from configs that extend ``torchrec.EmbeddingBagConfig`` with a ``compression_ratio``.
- One call for an existing model: ``compress_(model, CompressionConfig(...))``, warm-started from trained tables.
- Sharding: ``torchrec_memcom.distributed.get_sharders()`` and ``CompressedEmbeddingShardingPlanner``.
- New methods: subclass ``TableMethod`` and ``register_method`` it (see ``torchrec_memcom.modules.method``).
"""

from torchrec_memcom.configs import (
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)
from torchrec_memcom.convert import CompressionConfig, compress_, fit_signatures, warm_start_
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.modules import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagCollection,
    LMAEmbeddingBagCollection,
    MEmComEmbeddingBagCollection,
    QREmbeddingBagCollection,
    entity_weight_param_groups,
)
from torchrec_memcom.modules.method import TableMethod, register_method

__version__ = "0.2.0"

__all__ = [
    "CompressedEmbeddingBagCollection",
    "CompressionConfig",
    "HashEmbeddingBagCollection",
    "HashEmbeddingBagConfig",
    "LMAEmbeddingBagCollection",
    "LMAEmbeddingBagConfig",
    "MEmComEmbeddingBagCollection",
    "MEmComEmbeddingBagConfig",
    "MemoryReport",
    "QREmbeddingBagCollection",
    "QREmbeddingBagConfig",
    "TableMethod",
    "compress_",
    "entity_weight_param_groups",
    "fit_signatures",
    "register_method",
    "warm_start_",
]
