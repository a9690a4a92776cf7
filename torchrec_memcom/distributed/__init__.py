# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharders, sharded modules and planner pieces for the compressed collections.

- ``get_sharders()``: ours followed by TorchRec's defaults; give the same list to the planner and to DMP.
- ``MEmComEmbeddingBagCollectionSharder``: co-located row-wise or table-wise MEmCom.
- ``LMAEmbeddingBagCollectionSharder``, ``HashEmbeddingBagCollectionSharder``, ``QREmbeddingBagCollectionSharder``.
"""

from typing import Any, Dict, List, Optional

from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ModuleSharder

from torchrec_memcom.distributed.baselines import (
    HashEmbeddingBagCollectionSharder,
    QREmbeddingBagCollectionSharder,
    ShardedHashEmbeddingBagCollection,
    ShardedQREmbeddingBagCollection,
)
from torchrec_memcom.distributed.lma import LMAEmbeddingBagCollectionSharder, ShardedLMAEmbeddingBagCollection
from torchrec_memcom.distributed.memcom import (
    MEmComEmbeddingBagCollectionSharder,
    ShardedMEmComEmbeddingBagCollection,
)

__all__ = [
    "HashEmbeddingBagCollectionSharder",
    "LMAEmbeddingBagCollectionSharder",
    "MEmComEmbeddingBagCollectionSharder",
    "QREmbeddingBagCollectionSharder",
    "ShardedHashEmbeddingBagCollection",
    "ShardedLMAEmbeddingBagCollection",
    "ShardedMEmComEmbeddingBagCollection",
    "ShardedQREmbeddingBagCollection",
    "get_sharders",
]


def get_sharders(fused_params: Optional[Dict[str, Any]] = None) -> List[ModuleSharder[nn.Module]]:
    """Our sharders followed by TorchRec's defaults (pass the same list to the planner and to DMP).

    Args:
        fused_params (Optional[Dict[str, Any]]): TBE kwargs for every physical table (e.g. ``{"optimizer":
            EmbOptimType.EXACT_ADAGRAD, "learning_rate": 0.05}``); ``None`` takes them from
            ``apply_optimizer_in_backward``, as for stock tables.
    """
    ebc = EmbeddingBagCollectionSharder(fused_params=fused_params)
    ours: List[ModuleSharder[nn.Module]] = [
        MEmComEmbeddingBagCollectionSharder(ebc_sharder=ebc),
        LMAEmbeddingBagCollectionSharder(ebc_sharder=ebc),
        HashEmbeddingBagCollectionSharder(ebc_sharder=ebc),
        QREmbeddingBagCollectionSharder(ebc_sharder=ebc),
    ]
    defaults = [
        s for s in get_default_sharders() if not (fused_params and isinstance(s, EmbeddingBagCollectionSharder))
    ]
    if fused_params:
        defaults.insert(0, ebc)
    return [*ours, *defaults]
