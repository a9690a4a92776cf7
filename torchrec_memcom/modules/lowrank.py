# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Low-rank stock tables: a stock table at a smaller width, then a learned projection to the model's width."""

from typing import List, Mapping, Optional, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.configs import LowRankEmbeddingBagConfig, physical_dim, stock_bytes
from torchrec_memcom.memory import TableMemory, tensor_bytes
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.method import (
    Combine,
    Segment,
    TableMethod,
    is_mean,
    physical_config,
    projected,
    register_method,
)
from torchrec_memcom.ops import IdOp

__all__ = ["LowRankEmbeddingBagCollection", "LowRankMethod"]


@register_method
class LowRankMethod(TableMethod):
    """``embedding(i) = E[i] P``: ``E`` (``n x base_dim``) is a physical table fed the ids unchanged; the
    projection ``P`` (``base_dim x d``, ``projections.<table>``) is applied when combining (pooling is linear, so the
    pooled bag is projected once)."""

    name = "lowrank"
    config_type = LowRankEmbeddingBagConfig

    def physical_tables(self) -> List[EmbeddingBagConfig]:
        return [physical_config(t, t.name, t.num_embeddings, physical_dim(t), t.feature_names) for t in self.tables]

    def segments(self) -> List[Segment]:
        return [Segment(f, f, t.name, IdOp.IDENTITY) for t in self.tables for f in t.feature_names]

    def combines(self) -> List[Combine]:
        return [
            Combine(f, "one", (f,), mean=is_mean(t), project=projected(t)) for t in self.tables for f in t.feature_names
        ]

    @torch.no_grad()
    def warm_start(self, owner: nn.Module, trained: Mapping[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]) -> None:
        """The rows, already in the projection's basis (``warm_start_`` projects them): copied."""
        for t in self.tables:
            if t.name in trained:
                owner.physical_weight(t.name).copy_(trained[t.name][0])  # type: ignore[operator]

    def memory_rows(self, owner: nn.Module) -> List[TableMemory]:
        return [
            TableMemory(
                t.name, "lowrank", stock_bytes(t), {"table": tensor_bytes(owner.physical_weight(t.name))}, [t.name]
            )
            for t in self.tables
        ]


class LowRankEmbeddingBagCollection(CompressedEmbeddingBagCollection):
    """Low-rank stock tables (``embedding(i) = E[i] P``, see ``LowRankMethod``).

    Args:
        tables (List[LowRankEmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    _config_types = (LowRankEmbeddingBagConfig,)


LowRankMethod.collection_type = LowRankEmbeddingBagCollection
