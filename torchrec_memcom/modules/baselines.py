# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Quotient-remainder (QR) tables (Shi et al., KDD 2020). The hashing trick lives beside MEmCom (``memcom.py``)."""

from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.configs import QREmbeddingBagConfig, physical_dim, stock_bytes
from torchrec_memcom.memory import TableMemory, tensor_bytes
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.memcom import HashEmbeddingBagCollection  # noqa: F401 - re-exported
from torchrec_memcom.modules.method import (
    Combine,
    Segment,
    TableMethod,
    is_mean,
    physical_config,
    projected,
    register_method,
)
from torchrec_memcom.modules.warm_start import fit_qr
from torchrec_memcom.ops import IdOp

__all__ = ["QREmbeddingBagCollection", "QRMethod", "QUOTIENT_SUFFIX", "REMAINDER_SUFFIX"]

QUOTIENT_SUFFIX = "__q"
REMAINDER_SUFFIX = "__r"


def _ones(t: torch.Tensor) -> torch.Tensor:
    return torch.nn.init.ones_(t)


@register_method
class QRMethod(TableMethod):
    """``embedding(i) = Q[i // c] * R[i % c]`` (elementwise); bags pool each side and multiply, as the authors'
    ``QREmbeddingBag``: ``pool(x * Q[i // c]) * pool(R[i % c])`` (the per-id product for one-hot bags).

    ``Q`` (``ceil(n / c) x d``, the config's ``init_fn``) and ``R`` (``c x d``, ones: training starts from ``Q``
    alone) are the physical tables ``<table>__q`` / ``<table>__r``, fed the features ``<feature>__q`` / ``__r``.
    """

    name = "qr"
    config_type = QREmbeddingBagConfig

    def __init__(self, tables: List[EmbeddingBagConfig]) -> None:
        super().__init__(tables)
        self.remainders: Dict[str, int] = {t.name: t.remainder_rows() for t in tables}  # type: ignore[attr-defined]

    def physical_tables(self) -> List[EmbeddingBagConfig]:
        out = []
        for t in self.tables:
            c = self.remainders[t.name]
            q = [f + QUOTIENT_SUFFIX for f in t.feature_names]
            r = [f + REMAINDER_SUFFIX for f in t.feature_names]
            dim = physical_dim(t)
            out.append(physical_config(t, t.name + QUOTIENT_SUFFIX, -(-t.num_embeddings // c), dim, q))
            out.append(physical_config(t, t.name + REMAINDER_SUFFIX, c, dim, r, init_fn=_ones))
        return out

    def segments(self) -> List[Segment]:
        out = []
        for t in self.tables:
            c = self.remainders[t.name]
            for f in t.feature_names:
                out.append(Segment(f + QUOTIENT_SUFFIX, f, t.name + QUOTIENT_SUFFIX, IdOp.DIV, (c,)))
                out.append(Segment(f + REMAINDER_SUFFIX, f, t.name + REMAINDER_SUFFIX, IdOp.MOD, (c,), False))
        return out

    def combines(self) -> List[Combine]:
        return [
            Combine(f, "product", (f + QUOTIENT_SUFFIX, f + REMAINDER_SUFFIX), mean=is_mean(t), project=projected(t))
            for t in self.tables
            for f in t.feature_names
        ]

    @torch.no_grad()
    def warm_start_table(
        self, owner: nn.Module, table: EmbeddingBagConfig, weight: torch.Tensor, counts: Optional[torch.Tensor]
    ) -> None:
        """Per dimension, the (count-weighted) rank-1 fit ``Q[q] * R[r] ~ E[q c + r]``."""
        q_table = owner.physical_weight(table.name + QUOTIENT_SUFFIX)  # type: ignore[operator]
        q, r = fit_qr(weight.to(q_table), self.remainders[table.name], counts)
        q_table.copy_(q)
        owner.physical_weight(table.name + REMAINDER_SUFFIX).copy_(r)  # type: ignore[operator]

    def num_remainder_rows(self, owner: nn.Module, table: str) -> int:
        return self.remainders[table]

    def fingerprint(self, table: EmbeddingBagConfig) -> Dict[str, Any]:
        return {**super().fingerprint(table), "num_remainder_rows": self.remainders[table.name]}

    def physical_names(self, table: str) -> List[str]:
        return [table + QUOTIENT_SUFFIX, table + REMAINDER_SUFFIX]

    def memory_rows(self, owner: nn.Module) -> List[TableMemory]:
        return [
            TableMemory(
                t.name,
                "qr",
                stock_bytes(t),
                {
                    "quotient_table": tensor_bytes(owner.physical_weight(t.name + QUOTIENT_SUFFIX)),
                    "remainder_table": tensor_bytes(owner.physical_weight(t.name + REMAINDER_SUFFIX)),
                },
                [t.name],
            )
            for t in self.tables
        ]


class QREmbeddingBagCollection(CompressedEmbeddingBagCollection):
    """Quotient-remainder tables (Shi et al., KDD 2020): ``embedding(i) = Q[i // c] * R[i % c]`` (see ``QRMethod``).

    Args:
        tables (List[QREmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights (applied to the Q side).
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    _config_types = (QREmbeddingBagConfig,)


QRMethod.collection_type = QREmbeddingBagCollection
