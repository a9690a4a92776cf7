# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Baselines in the same API: the hashing trick and quotient-remainder (QR) tables."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import HashEmbeddingBagConfig, QREmbeddingBagConfig, stock_bytes
from torchrec_memcom.memory import MemoryReport, TableMemory, tensor_bytes
from torchrec_memcom.modules._base import (
    CompressedCollection,
    IdTransform,
    init_table,
    keyed_tensor,
    shared_table_config,
)
from torchrec_memcom.modules.memcom import _HashedCollection

__all__ = ["HashEmbeddingBagCollection", "QRIds", "QREmbeddingBagCollection"]

QUOTIENT_SUFFIX = "__q"
REMAINDER_SUFFIX = "__r"


class HashEmbeddingBagCollection(_HashedCollection):
    """Hashing-trick tables: ``embedding(i) = U[h(s(i))]`` with MEmCom's bucketed hash (MEmCom with ``w = 1``).

    Args:
        tables (List[HashEmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    def __init__(
        self,
        tables: List[HashEmbeddingBagConfig],
        is_weighted: bool = False,
        device: Optional[torch.device | str] = None,
    ) -> None:
        super().__init__(tables, HashEmbeddingBagConfig, is_weighted, device, inner_weighted=is_weighted)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_shared()

    def memory_report(self) -> MemoryReport:
        return MemoryReport(
            [
                TableMemory(
                    t.name, "hash", stock_bytes(t), {"shared_table": tensor_bytes(self.shared_weight(t.name))}, [t.name]
                )
                for t in self._embedding_bag_configs
            ]
        )


def _ones(t: torch.Tensor) -> torch.Tensor:
    return torch.nn.init.ones_(t)


class QRIds(IdTransform):
    """Splits each feature ``f`` into ``f__q`` (ids ``i // c``, input weights) and ``f__r`` (ids ``i % c``, weight 1);
    ``combine`` multiplies the two pooled sides."""

    def __init__(self, tables: Sequence[QREmbeddingBagConfig], is_weighted: bool) -> None:
        super().__init__(tables, is_weighted)
        self.remainders: Dict[str, int] = {t.name: t.remainder_rows() for t in tables}

    def forward(self, features: KeyedJaggedTensor) -> Tuple[KeyedJaggedTensor, Dict[str, torch.Tensor]]:
        """Checks ``features``; returns (KJT of every ``f__q`` then every ``f__r``, MEAN divisors)."""
        kjt = self.select(features)
        ids = kjt.values().to(torch.int64)
        quotient = torch.empty_like(ids)
        remainder = torch.empty_like(ids)
        for table, lo, hi in self.table_ranges(kjt):
            c = self.remainders[table.name]
            quotient[lo:hi] = torch.div(ids[lo:hi], c, rounding_mode="floor")
            remainder[lo:hi] = ids[lo:hi] % c
        names = self.feature_names()
        ones = torch.ones(ids.shape, dtype=torch.float32, device=ids.device)
        lengths_per_key = kjt.length_per_key()
        split = KeyedJaggedTensor(
            keys=[f + QUOTIENT_SUFFIX for f in names] + [f + REMAINDER_SUFFIX for f in names],
            values=torch.cat([quotient, remainder]),
            lengths=torch.cat([kjt.lengths(), kjt.lengths()]),
            weights=torch.cat([kjt.weights() if self._is_weighted else ones, ones]),
            stride=kjt.stride(),
            length_per_key=lengths_per_key + lengths_per_key,
        )
        return split, self.kjt_mean_divisors(kjt)

    def combine(self, pooled: KeyedTensor, divisors: Dict[str, torch.Tensor]) -> KeyedTensor:
        """``pool(Q) * pool(R)`` per feature (each side divided by the bag size for MEAN)."""
        by_key = pooled.to_dict()
        out = []
        for feature in self.feature_names():
            q, r = by_key[feature + QUOTIENT_SUFFIX], by_key[feature + REMAINDER_SUFFIX]
            if feature in divisors:
                q, r = q / divisors[feature], r / divisors[feature]
            out.append(q * r)
        return keyed_tensor(self.feature_names(), out)


class QREmbeddingBagCollection(CompressedCollection):
    """Quotient-remainder tables (Shi et al., KDD 2020): ``embedding(i) = Q[i // c] * R[i % c]`` (elementwise).

    Like the authors' ``QREmbeddingBag``, a bag pools each side and multiplies: ``pool(x * Q[i // c]) *
    pool(R[i % c])``, which is the per-id product for one-hot bags. ``Q`` (``ceil(n / c) x d``, init from the
    config's ``init_fn``) and ``R`` (``c x d``, init to ones, so training starts from ``Q`` alone) are the tables
    ``<name>__q`` and ``<name>__r`` of a stock ``EmbeddingBagCollection`` fed features ``<feature>__q`` /
    ``<feature>__r``.

    Args:
        tables (List[QREmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights (applied to the Q side).
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    def __init__(
        self,
        tables: List[QREmbeddingBagConfig],
        is_weighted: bool = False,
        device: Optional[torch.device | str] = None,
    ) -> None:
        super().__init__(tables, QREmbeddingBagConfig, is_weighted, device)
        self.id_transform = QRIds(tables, is_weighted)
        inner = []
        for t in tables:
            c = self.num_remainder_rows(t.name)
            q_rows = -(-t.num_embeddings // c)
            q_features = [f + QUOTIENT_SUFFIX for f in t.feature_names]
            r_features = [f + REMAINDER_SUFFIX for f in t.feature_names]
            inner.append(shared_table_config(t, t.name + QUOTIENT_SUFFIX, q_rows, t.embedding_dim, q_features))
            inner.append(shared_table_config(t, t.name + REMAINDER_SUFFIX, c, t.embedding_dim, r_features, _ones))
        self._inner_configs = inner
        self._embedding_bag_collection = EmbeddingBagCollection(tables=inner, is_weighted=True, device=device)
        self.reset_parameters()

    def num_remainder_rows(self, table: str) -> int:
        return self.id_transform.remainders[table]

    def reset_parameters(self) -> None:
        for cfg in self._inner_configs:
            init_table(self._embedding_bag_collection.embedding_bags[cfg.name].weight, cfg)

    def memory_report(self) -> MemoryReport:
        bags = self._embedding_bag_collection.embedding_bags
        return MemoryReport(
            [
                TableMemory(
                    t.name,
                    "qr",
                    stock_bytes(t),
                    {
                        "quotient_table": tensor_bytes(bags[t.name + QUOTIENT_SUFFIX].weight),
                        "remainder_table": tensor_bytes(bags[t.name + REMAINDER_SUFFIX].weight),
                    },
                    [t.name],
                )
                for t in self._embedding_bag_configs
            ]
        )
