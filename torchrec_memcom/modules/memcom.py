# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom (a small hashed shared table plus one trainable weight per id) and the hashing trick it builds on."""

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.configs import HashEmbeddingBagConfig, MEmComEmbeddingBagConfig, physical_dim, stock_bytes
from torchrec_memcom.hashing import BucketedHash
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
from torchrec_memcom.modules.warm_start import fit_memcom, fit_shared_rows
from torchrec_memcom.ops import IdOp

__all__ = [
    "HashEmbeddingBagCollection",
    "HashMethod",
    "MEmComEmbeddingBagCollection",
    "MEmComMethod",
]

_FP32_BYTES = 4


class _HashedMethod(TableMethod):
    """Tables reached through a ``BucketedHash``: one shared table ``U`` (``m x d``) per logical table."""

    def __init__(self, tables: List[EmbeddingBagConfig]) -> None:
        super().__init__(tables)
        self.hashes: Dict[str, BucketedHash] = {t.name: t.bucketed_hash() for t in tables}  # type: ignore[attr-defined]

    def physical_tables(self) -> List[EmbeddingBagConfig]:
        return [
            physical_config(t, t.name, self.hashes[t.name].num_rows, physical_dim(t), t.feature_names)
            for t in self.tables
        ]

    def _hash_params(self, table: str) -> Tuple[int, ...]:
        h = self.hashes[table]
        a, c = h.scramble_params
        return (a, c, h.padded_num_embeddings, h.ids_per_bucket, h.rows_per_bucket)

    def combines(self) -> List[Combine]:
        return [
            Combine(f, "one", (f,), mean=is_mean(t), project=projected(t)) for t in self.tables for f in t.feature_names
        ]

    def fingerprint(self, table: EmbeddingBagConfig) -> Dict[str, Any]:
        h = self.hashes[table.name]
        return {
            **super().fingerprint(table),
            "num_shared_rows": h.num_rows,
            "num_buckets": h.num_buckets,
            "scramble": list(h.scramble_params),
        }

    def _trained_ids(self, table: str, weight: torch.Tensor) -> torch.Tensor:
        return torch.arange(self.by_name[table].num_embeddings, device=weight.device)

    # accessors (``CompressedEmbeddingBagCollection.bucketed_hash`` etc.)

    def bucketed_hash(self, owner: nn.Module, table: str) -> BucketedHash:
        return self.hashes[table]

    def shared_weight(self, owner: nn.Module, table: str) -> nn.Parameter:
        return owner.physical_weight(table)  # type: ignore[operator]


@register_method
class HashMethod(_HashedMethod):
    """Hashing trick: ``embedding(i) = U[h(s(i))]`` (MEmCom's bucketed hash, no per-id weight)."""

    name = "hash"
    config_type = HashEmbeddingBagConfig

    def segments(self) -> List[Segment]:
        return [
            Segment(f, f, t.name, IdOp.HASH, self._hash_params(t.name)) for t in self.tables for f in t.feature_names
        ]

    @torch.no_grad()
    def warm_start_table(
        self, owner: nn.Module, table: EmbeddingBagConfig, weight: torch.Tensor, counts: Optional[torch.Tensor]
    ) -> None:
        """``U[b]`` = the count-weighted mean of the trained rows of the ids hashed to ``b``."""
        u = owner.physical_weight(table.name)  # type: ignore[operator]
        rows = self.hashes[table.name](self._trained_ids(table.name, weight))
        c = counts if counts is not None else torch.ones(weight.shape[0], dtype=weight.dtype)
        u.copy_(fit_shared_rows(rows, weight.to(u), u.shape[0], c.to(u), u.detach()))

    def memory_rows(self, owner: nn.Module) -> List[TableMemory]:
        return [
            TableMemory(
                t.name, "hash", stock_bytes(t), {"shared_table": tensor_bytes(owner.physical_weight(t.name))}, [t.name]
            )
            for t in self.tables
        ]


@register_method
class MEmComMethod(_HashedMethod):
    """MEmCom: ``embedding(i) = w[s(i)] * U[h(s(i))]`` with one trainable fp32 weight per (scrambled) id.

    The physical ids are the scrambled ids ``s`` (what a row-wise input dist buckets, so a rank receives the ids whose
    weights and shared rows it owns); rows and the per-sample weights ``w[s] (* x)`` are formed after the dist.
    """

    name = "memcom"
    config_type = MEmComEmbeddingBagConfig
    uses_entity_weights = True
    module_state_name = "entity_weights"

    def segments(self) -> List[Segment]:
        return [
            Segment(f, f, t.name, IdOp.SCRAMBLE, self._hash_params(t.name))
            for t in self.tables
            for f in t.feature_names
        ]

    def module_state(self, device: Optional[torch.device]) -> nn.Module:
        return nn.ParameterDict(
            {
                t.name: nn.Parameter(torch.empty(self.hashes[t.name].padded_num_embeddings, device=device))
                for t in self.tables
            }
        )

    def reset_state(self, owner: nn.Module) -> None:
        for t in self.tables:
            w = owner.entity_weights[t.name]  # type: ignore[index]
            if not w.is_meta:
                with torch.no_grad():
                    w.fill_(t.entity_weight_init)  # type: ignore[attr-defined]

    def rows_and_weights(
        self, owner: nn.Module, segment: Segment, scrambled: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unsharded: shared rows ``h(s)`` and weights ``w[s]`` of scrambled ids."""
        h = self.hashes[segment.table]
        return h.rows_of_scrambled(scrambled), owner.entity_weights[segment.table][scrambled]  # type: ignore[index]

    @torch.no_grad()
    def warm_start_table(
        self, owner: nn.Module, table: EmbeddingBagConfig, weight: torch.Tensor, counts: Optional[torch.Tensor]
    ) -> None:
        """``(U, w)`` = the least-squares fit of ``E_i ~ w_i U[h(i)]`` (count-weighted), by alternating updates."""
        u = owner.physical_weight(table.name)  # type: ignore[operator]
        s = self.hashes[table.name].scramble(self._trained_ids(table.name, weight))
        rows = self.hashes[table.name].rows_of_scrambled(s)
        shared, w = fit_memcom(weight.to(u), rows, u.shape[0], counts, u.detach())
        u.copy_(shared)
        owner.entity_weights[table.name][s] = w  # type: ignore[index]

    def entity_weight(self, owner: nn.Module, table: str, ids: torch.Tensor) -> torch.Tensor:
        """``w`` of raw ids (the parameter itself is stored in scrambled order)."""
        return owner.entity_weights[table][self.hashes[table].scramble(ids)]  # type: ignore[index]

    def memory_rows(self, owner: nn.Module) -> List[TableMemory]:
        return [
            TableMemory(
                t.name,
                "memcom",
                stock_bytes(t),
                {
                    "shared_table": tensor_bytes(owner.physical_weight(t.name)),
                    "entity_weights": tensor_bytes(owner.entity_weights[t.name]),  # type: ignore[index]
                },
                [t.name],
            )
            for t in self.tables
        ]

    def fingerprint(self, table: EmbeddingBagConfig) -> Dict[str, Any]:
        return {**super().fingerprint(table), "padded_num_embeddings": self.hashes[table.name].padded_num_embeddings}

    def sharding_types(self, physical_table: str) -> Optional[List[str]]:
        # Co-location of ids, rows and weights: row-wise (W | num_buckets) or the whole table on one rank.
        return ["row_wise", "table_wise"]

    def extra_shard_bytes(self, physical_table: str, shard_rows: int, state_per_value: int) -> int:
        # per local weight: itself, a gradient scratch, and optimizer state
        h = self.hashes[physical_table]
        return h.padded_num_embeddings * shard_rows // h.num_rows * _FP32_BYTES * (2 + state_per_value)


class HashEmbeddingBagCollection(CompressedEmbeddingBagCollection):
    """Hashing-trick tables: ``embedding(i) = U[h(s(i))]`` with MEmCom's bucketed hash (MEmCom with ``w = 1``).

    Args:
        tables (List[HashEmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    _config_types = (HashEmbeddingBagConfig,)


class MEmComEmbeddingBagCollection(CompressedEmbeddingBagCollection):
    """MEmCom tables (Pansare et al., MLSys 2022): ``embedding(i) = w[s(i)] * U[h(s(i))]``.

    A bag pools ``sum_i x_i * w[s(i)] * U[h(s(i))]`` (``x_i`` = input weight, if ``is_weighted``; MEAN divides by
    the bag size), i.e. a weighted bag over the shared table with ``per_sample_weights = w[s] * x``. ``U`` is a table
    of the physical ``EmbeddingBagCollection`` (so its sharded form runs on FBGEMM TBE); ``w`` is
    ``entity_weights[table]``, indexed by the scrambled id ``s(i)`` of ``hashing.BucketedHash``. Each table's
    ``entity_weight_optimizer`` / ``entity_weight_lr_scale`` set how ``w`` trains when sharded (fused, in backward);
    unsharded, ``entity_weight_param_groups`` gives ``torch.optim`` the same per-table learning rates.

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

    _config_types = (MEmComEmbeddingBagConfig,)


HashMethod.collection_type = HashEmbeddingBagCollection
MEmComMethod.collection_type = MEmComEmbeddingBagCollection


def entity_weight_param_groups(module: nn.Module, lr: float) -> List[Dict[str, Any]]:
    """``torch.optim`` parameter groups for an unsharded model: every MEmCom ``w`` at ``lr`` times its table's
    ``entity_weight_lr_scale``, every other parameter at ``lr``.

    Example::

        optimizer = torch.optim.Adagrad(entity_weight_param_groups(model, lr=0.05))
    """
    special: Dict[int, float] = {}
    for m in module.modules():
        if isinstance(m, CompressedEmbeddingBagCollection):
            for method in m.methods().values():
                if isinstance(method, MEmComMethod):
                    for t in method.tables:
                        special[id(m.entity_weights[t.name])] = t.entity_weight_lr_scale  # type: ignore
    groups: Dict[float, List[nn.Parameter]] = {}
    for p in module.parameters():
        groups.setdefault(special.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]
