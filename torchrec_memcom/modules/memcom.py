# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom: a small hashed shared table plus one trainable weight per id."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import HashEmbeddingBagConfig, MEmComEmbeddingBagConfig, stock_bytes
from torchrec_memcom.hashing import BucketedHash
from torchrec_memcom.memory import MemoryReport, TableMemory, tensor_bytes
from torchrec_memcom.modules._base import CompressedCollection, IdTransform, init_table, shared_table_config
from torchrec_memcom.ops import hash_ids

__all__ = ["HashedIds", "MEmComEmbeddingBagCollection"]


class HashedIds(IdTransform):
    """Scrambles ids and hashes them onto shared rows (``hashing.BucketedHash``), per table.

    ``forward`` gives the hashing trick's lookup (rows ``h(s(i))``, weighted by the input weights); MEmCom splits it
    into ``scramble`` (before a sharded input dist) and ``rows`` (after it, where ``w`` is local).
    """

    def __init__(self, tables: Sequence[MEmComEmbeddingBagConfig | HashEmbeddingBagConfig], is_weighted: bool) -> None:
        super().__init__(tables, is_weighted)
        self.hashes: Dict[str, BucketedHash] = {t.name: t.bucketed_hash() for t in tables}

    def _with_values(
        self, kjt: KeyedJaggedTensor, values: torch.Tensor, weights: Optional[torch.Tensor]
    ) -> KeyedJaggedTensor:
        return KeyedJaggedTensor(
            keys=kjt.keys(),
            values=values,
            lengths=kjt.lengths(),
            weights=weights,
            stride=kjt.stride(),
            length_per_key=kjt.length_per_key(),
            offset_per_key=kjt.offset_per_key(),
        )

    def scramble(self, features: KeyedJaggedTensor) -> Tuple[KeyedJaggedTensor, Dict[str, torch.Tensor]]:
        """Checks ``features``; returns (KJT of this module's features with ids scrambled, MEAN divisors)."""
        kjt = self.select(features)
        values = kjt.values()
        scrambled = torch.empty(values.shape, dtype=torch.int64, device=values.device)
        for table, lo, hi in self.table_ranges(kjt):
            scrambled[lo:hi] = self.hashes[table.name].scramble(values[lo:hi])
        return self._with_values(kjt, scrambled, kjt.weights_or_none()), self.kjt_mean_divisors(kjt)

    def rows(
        self, scrambled: KeyedJaggedTensor, entity_weights: Optional[nn.ParameterDict] = None
    ) -> KeyedJaggedTensor:
        """Shared-table rows ``h(s)`` of scrambled ids, weighted by ``[w[s] *] [x]`` (what the shared tables pool)."""
        s = scrambled.values()
        rows = torch.empty_like(s)
        w_parts: List[torch.Tensor] = []
        for table, lo, hi in self.table_ranges(scrambled):
            rows[lo:hi] = self.hashes[table.name].rows_of_scrambled(s[lo:hi])
            if entity_weights is not None:
                w_parts.append(entity_weights[table.name][s[lo:hi]])
        w = torch.cat(w_parts) if w_parts else None
        if self._is_weighted:
            w = scrambled.weights() if w is None else w * scrambled.weights()
        return self._with_values(scrambled, rows, w)

    def forward(self, features: KeyedJaggedTensor) -> Tuple[KeyedJaggedTensor, Dict[str, torch.Tensor]]:
        """Checks ``features``; returns (KJT of shared-table rows ``h(s(i))`` weighted by ``x``, MEAN divisors)."""
        kjt = self.select(features)
        values = kjt.values()
        rows = torch.empty(values.shape, dtype=torch.int64, device=values.device)
        for table, lo, hi in self.table_ranges(kjt):
            hash_ids(values[lo:hi], self.hashes[table.name], rows_out=rows[lo:hi])
        return self._with_values(kjt, rows, kjt.weights_or_none()), self.kjt_mean_divisors(kjt)


class _HashedCollection(CompressedCollection):
    """Tables reached through a ``BucketedHash``: ``U[h(s(i))]`` in a stock ``EmbeddingBagCollection``."""

    def __init__(
        self,
        tables: Sequence[MEmComEmbeddingBagConfig | HashEmbeddingBagConfig],
        config_type: type,
        is_weighted: bool,
        device: Optional[torch.device | str],
        inner_weighted: bool,
    ) -> None:
        super().__init__(tables, config_type, is_weighted, device)
        self.id_transform = HashedIds(tables, is_weighted)
        self._embedding_bag_collection = EmbeddingBagCollection(
            tables=[
                shared_table_config(t, t.name, self.bucketed_hash(t.name).num_rows, t.embedding_dim, t.feature_names)
                for t in tables
            ],
            is_weighted=inner_weighted,
            device=device,
        )

    def bucketed_hash(self, table: str) -> BucketedHash:
        return self.id_transform.hashes[table]

    def shared_weight(self, table: str) -> nn.Parameter:
        """The shared table ``U`` of ``table`` (``num_shared_rows x d``)."""
        return self._embedding_bag_collection.embedding_bags[table].weight

    def _reset_shared(self) -> None:
        for t in self._embedding_bag_configs:
            init_table(self.shared_weight(t.name), t)


class MEmComEmbeddingBagCollection(_HashedCollection):
    """MEmCom tables (Pansare et al., MLSys 2022): ``embedding(i) = w[s(i)] * U[h(s(i))]``.

    A bag pools ``sum_i x_i * w[s(i)] * U[h(s(i))]`` (``x_i`` = input weight, if ``is_weighted``; MEAN divides by
    the bag size), i.e. a weighted bag over the shared table with ``per_sample_weights = w[ids] * x``. ``U`` lives in a
    stock weighted ``EmbeddingBagCollection`` (``_embedding_bag_collection``), so its sharded form runs on FBGEMM TBE;
    ``w`` is ``entity_weights[table]``, indexed by the scrambled id ``s(i)`` of ``hashing.BucketedHash``.

    Args:
        tables (List[MEmComEmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation (then ``reset_parameters``).

    Example::

        tables = [MEmComEmbeddingBagConfig(name="t1", num_embeddings=1000, embedding_dim=8, feature_names=["f1"],
                                           compression_ratio=4.0)]
        ebc = MEmComEmbeddingBagCollection(tables)
        #        0       1
        # f1   [1, 2]   [3]
        kjt = KeyedJaggedTensor.from_lengths_sync(["f1"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
        ebc(kjt).values().shape  # (2, 8)
    """

    def __init__(
        self,
        tables: List[MEmComEmbeddingBagConfig],
        is_weighted: bool = False,
        device: Optional[torch.device | str] = None,
    ) -> None:
        super().__init__(tables, MEmComEmbeddingBagConfig, is_weighted, device, inner_weighted=True)
        self.entity_weights = nn.ParameterDict(
            {
                t.name: nn.Parameter(torch.empty(self.bucketed_hash(t.name).padded_num_embeddings, device=device))
                for t in tables
            }
        )
        self.reset_parameters()

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pools ``sum_i x_i * w[s(i)] * U[h(s(i))]`` per bag; KJT in, KeyedTensor (keys = features) out."""
        scrambled, divisors = self.id_transform.scramble(features)
        pooled = self._embedding_bag_collection(self.id_transform.rows(scrambled, self.entity_weights))
        return self.id_transform.combine(pooled, divisors)

    def entity_weight(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """``w`` of raw ids (the parameter itself is stored in scrambled order)."""
        return self.entity_weights[table][self.bucketed_hash(table).scramble(ids)]

    def reset_parameters(self) -> None:
        self._reset_shared()
        for t in self._embedding_bag_configs:
            w = self.entity_weights[t.name]
            if not w.is_meta:
                with torch.no_grad():
                    w.fill_(t.entity_weight_init)

    def memory_report(self) -> MemoryReport:
        return MemoryReport(
            [
                TableMemory(
                    t.name,
                    "memcom",
                    stock_bytes(t),
                    {
                        "shared_table": tensor_bytes(self.shared_weight(t.name)),
                        "entity_weights": tensor_bytes(self.entity_weights[t.name]),
                    },
                    [t.name],
                )
                for t in self._embedding_bag_configs
            ]
        )
