# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharders, the sharded collection and planner pieces for the compressed collections.

- ``get_sharders()``: ours (one per registered collection type) followed by TorchRec's defaults; give the same list
  to the planner and to DMP.
- ``ShardedCompressedEmbeddingBagCollection``: one input dist, one lookup, one output dist for any mix of tables.
- ``planner``: ``CompressedEmbeddingShardingPlanner`` (true memory of compressed tables, per-table constraints).
- ``checkpoint``: ``torch.distributed.checkpoint`` save / load, unsharded state in and out.
- ``CudaGraphTrainStep``: a one-rank training step replayed from a CUDA graph (no Python per step);
  ``CudaGraphTrainPipeline``: the same behind TorchRec's ``TrainPipeline`` interface (``progress(dataloader_iter)``).
"""

from typing import Any, Dict, List, Optional

from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ModuleSharder

from torchrec_memcom.distributed.compressed import (
    CompressedEmbeddingBagCollectionSharder,
    ShardedCompressedEmbeddingBagCollection,
)
from torchrec_memcom.distributed.cuda_graph_pipeline import CudaGraphTrainPipeline
from torchrec_memcom.distributed.cuda_graph_step import CudaGraphTrainStep, GraphCaptureError
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.method import registered_methods

__all__ = [
    "CompressedEmbeddingBagCollectionSharder",
    "CudaGraphTrainPipeline",
    "CudaGraphTrainStep",
    "GraphCaptureError",
    "ShardedCompressedEmbeddingBagCollection",
    "get_sharders",
]


def get_sharders(
    fused_params: Optional[Dict[str, Any]] = None,
    lma_raw_ids: Optional[bool] = None,
    memcom_rows_in_transform: bool = True,
) -> List[ModuleSharder[nn.Module]]:
    """Our sharders (``CompressedEmbeddingBagCollection`` and every registered per-method collection) followed by
    TorchRec's defaults; pass the same list to the planner and to DMP.

    Args:
        fused_params (Optional[Dict[str, Any]]): TBE kwargs for every physical table (e.g. ``{"optimizer":
            EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.05}``); ``None`` takes them from
            ``apply_optimizer_in_backward``, as for stock tables.
        lma_raw_ids (Optional[bool]): send LMA ids once through table- and column-wise input dists and compute their
            chunk locations on the receiving rank (``CompressedEmbeddingBagCollectionSharder``); ``None``: when the
            world has more than one rank.
        memcom_rows_in_transform (bool): on one rank, MEmCom's rows and weight slots come from the id
            transform's launch (default; ``CompressedEmbeddingBagCollectionSharder``); ``False``: after the dist.
    """
    ebc = EmbeddingBagCollectionSharder(fused_params=fused_params)
    types = [CompressedEmbeddingBagCollection] + [
        m.collection_type for m in registered_methods() if m.collection_type is not None
    ]
    ours: List[ModuleSharder[nn.Module]] = [
        CompressedEmbeddingBagCollectionSharder(
            t, ebc_sharder=ebc, lma_raw_ids=lma_raw_ids, memcom_rows_in_transform=memcom_rows_in_transform
        )
        for t in dict.fromkeys(types)
    ]
    defaults = [
        s for s in get_default_sharders() if not (fused_params and isinstance(s, EmbeddingBagCollectionSharder))
    ]
    if fused_params:
        defaults.insert(0, ebc)
    return [*ours, *defaults]
