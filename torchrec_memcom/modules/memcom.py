# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom: a small hashed shared table plus one trainable weight per id."""

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import HashEmbeddingBagConfig, MEmComEmbeddingBagConfig, stock_bytes
from torchrec_memcom.hashing import BucketedHash
from torchrec_memcom.memory import MemoryReport, TableMemory, tensor_bytes
from torchrec_memcom.modules._base import (
    CompressedCollection,
    finish_pooling,
    init_table,
    shared_table_config,
)

__all__ = ["MEmComEmbeddingBagCollection"]


class _HashedCollection(CompressedCollection):
    """Tables reached through a ``BucketedHash``: ``U[h(s(i))]``, optionally scaled per id by ``w[s(i)]``."""

    def __init__(
        self,
        tables: Sequence[MEmComEmbeddingBagConfig | HashEmbeddingBagConfig],
        config_type: type,
        is_weighted: bool,
        device: Optional[torch.device | str],
        inner_weighted: bool,
    ) -> None:
        super().__init__(tables, config_type, is_weighted, device)
        self._hashes: Dict[str, BucketedHash] = {t.name: t.bucketed_hash() for t in tables}
        self._embedding_bag_collection = EmbeddingBagCollection(
            tables=[
                shared_table_config(t, t.name, self._hashes[t.name].num_rows, t.embedding_dim, t.feature_names)
                for t in tables
            ],
            is_weighted=inner_weighted,
            device=device,
        )

    def bucketed_hash(self, table: str) -> BucketedHash:
        return self._hashes[table]

    def shared_weight(self, table: str) -> nn.Parameter:
        """The shared table ``U`` of ``table`` (``num_shared_rows x d``)."""
        return self._embedding_bag_collection.embedding_bags[table].weight

    def _per_id_weights(self, table: str, scrambled: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pools ``[x_i *] [w[s(i)] *] U[h(s(i))]`` per bag; KJT in, KeyedTensor (keys = features) out."""
        feature_dict = self._split(features)
        values: List[torch.Tensor] = []
        lengths: List[torch.Tensor] = []
        weights: List[torch.Tensor] = []
        for feature, table in self._feature_tables:
            jt: JaggedTensor = feature_dict[feature]
            h = self._hashes[table.name]
            scrambled = h.scramble(jt.values())
            values.append(h.rows_of_scrambled(scrambled))
            lengths.append(jt.lengths())
            w = self._per_id_weights(table.name, scrambled)
            if self._is_weighted:
                w = jt.weights() if w is None else w * jt.weights()
            if w is not None:
                weights.append(w)
        hashed = KeyedJaggedTensor(
            keys=self.feature_names(),
            values=torch.cat(values),
            lengths=torch.cat(lengths),
            weights=torch.cat(weights) if weights else None,
        )
        return finish_pooling(self._embedding_bag_collection(hashed), self._feature_tables, feature_dict)

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
                t.name: nn.Parameter(torch.empty(self._hashes[t.name].padded_num_embeddings, device=device))
                for t in tables
            }
        )
        self.reset_parameters()

    def _per_id_weights(self, table: str, scrambled: torch.Tensor) -> Optional[torch.Tensor]:
        return self.entity_weights[table][scrambled]

    def entity_weight(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """``w`` of raw ids (the parameter itself is stored in scrambled order)."""
        return self.entity_weights[table][self._hashes[table].scramble(ids)]

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
