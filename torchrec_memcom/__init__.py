# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""torchrec_memcom: compressed embedding tables (MEmCom, LMA, hashing trick, QR) for TorchRec.

Each collection is a drop-in for ``torchrec.EmbeddingBagCollection`` (KJT in, KeyedTensor out) built from configs that
extend ``torchrec.EmbeddingBagConfig`` with a ``compression_ratio``.
"""

from torchrec_memcom.configs import (
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.modules import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagCollection,
    LMAEmbeddingBagCollection,
    MEmComEmbeddingBagCollection,
    QREmbeddingBagCollection,
)

__version__ = "0.1.0"

__all__ = [
    "CompressedEmbeddingBagCollection",
    "HashEmbeddingBagCollection",
    "HashEmbeddingBagConfig",
    "LMAEmbeddingBagCollection",
    "LMAEmbeddingBagConfig",
    "MEmComEmbeddingBagCollection",
    "MEmComEmbeddingBagConfig",
    "MemoryReport",
    "QREmbeddingBagCollection",
    "QREmbeddingBagConfig",
]
