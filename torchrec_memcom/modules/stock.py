# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Stock tables inside a compressed collection: the table itself is the physical table, ids pass unchanged."""

import dataclasses
from typing import List, Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType

from torchrec_memcom.configs import stock_bytes
from torchrec_memcom.memory import TableMemory, tensor_bytes
from torchrec_memcom.modules.method import Combine, Segment, TableMethod, is_mean, projected, register_method
from torchrec_memcom.ops import IdOp

__all__ = ["StockMethod"]


@register_method
class StockMethod(TableMethod):
    """A plain ``EmbeddingBagConfig``: ``embedding(i) = E[i]``.

    Its physical table is the table itself, SUM-pooled; MEAN is applied when combining, as for every method (so the
    lookup may be weighted, which MEAN ``nn.EmbeddingBag`` refuses, and row-wise MEAN needs no extra callback).
    """

    name = "stock"
    config_type = EmbeddingBagConfig

    def physical_tables(self) -> List[EmbeddingBagConfig]:
        return [
            dataclasses.replace(t, pooling=PoolingType.SUM, feature_names=list(t.feature_names)) for t in self.tables
        ]

    def segments(self) -> List[Segment]:
        return [Segment(f, f, t.name, IdOp.IDENTITY) for t in self.tables for f in t.feature_names]

    def combines(self) -> List[Combine]:
        return [
            Combine(f, "one", (f,), mean=is_mean(t), project=projected(t)) for t in self.tables for f in t.feature_names
        ]

    @torch.no_grad()
    def warm_start_table(
        self, owner: nn.Module, table: EmbeddingBagConfig, weight: torch.Tensor, counts: Optional[torch.Tensor]
    ) -> None:
        """The trained rows (for a narrower table: already in its projection's basis, see ``convert.warm_start_``)."""
        owner.physical_weight(table.name).copy_(weight)  # type: ignore[operator]

    def memory_rows(self, owner: nn.Module) -> List[TableMemory]:
        return [
            TableMemory(
                t.name, self.name, stock_bytes(t), {"table": tensor_bytes(owner.physical_weight(t.name))}, [t.name]
            )
            for t in self.tables
        ]
