# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""LMA: embeddings assembled from a shared memory at LSH-chosen locations (Desai et al., 2021)."""

from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import LMAEmbeddingBagConfig, stock_bytes
from torchrec_memcom.lsh import Batch, SignatureBuilder, build_signatures, chunk_locations
from torchrec_memcom.memory import MemoryReport, TableMemory, tensor_bytes
from torchrec_memcom.modules._base import (
    CompressedCollection,
    IdTransform,
    init_table,
    keyed_tensor,
    shared_table_config,
)
from torchrec_memcom.ops import lma_locations

__all__ = ["LMAEmbeddingBagCollection", "LMAIds", "chunk_feature_name", "memory_table_name"]


def chunk_feature_name(feature: str, chunk: int) -> str:
    """Sub-feature of ``feature`` that looks up chunk ``chunk`` on the memory table."""
    return f"{feature}__c{chunk}"


def memory_table_name(group: str) -> str:
    return f"{group}__memory"


class _Signatures(nn.Module):
    """Holds one ``(n, signature_bytes)`` uint8 buffer per table (state-dict key ``...signatures.<table>``)."""


class LMAIds(IdTransform):
    """Maps ids to LMA chunk locations: feature ``f`` becomes sub-features ``f__c<k>`` with ids ``loc_k(i)``.

    Holds the tables' signature buffers (``signatures.<table>``, uint8 ``(n, signature_bytes)``; all ``0xFF`` = no
    signature until ``fit_signatures`` / ``set_signatures``). Table ``t`` of a memory group owns the rows
    ``[row_offset(t), row_offset(t) + rows(t))`` of the group's memory (tables in config order) for its ids with a
    signature; ids without one are hashed over the whole memory.
    """

    def __init__(
        self,
        tables: Sequence[LMAEmbeddingBagConfig],
        is_weighted: bool,
        group_rows: Dict[str, int],
        device: Optional[torch.device | str],
    ) -> None:
        super().__init__(tables, is_weighted)
        self.group_rows = dict(group_rows)
        self.elementwise_groups = {t.group() for t in tables if t.chunk() == 1}
        self._tables = {t.name: t for t in tables}
        self._table_index = {t.name: i for i, t in enumerate(tables)}
        self._row_offset: Dict[str, int] = {}
        used: Dict[str, int] = {}
        for t in tables:
            self._row_offset[t.name] = used.get(t.group(), 0)
            used[t.group()] = self._row_offset[t.name] + t.rows()
        self.signatures = _Signatures()
        for t in tables:
            sig = torch.full((t.num_embeddings, t.signature_bytes), 0xFF, dtype=torch.uint8, device=device)
            self.signatures.register_buffer(t.name, sig)

    def location_params(self, table: str) -> Tuple[int, int, int, int, int, int]:
        """``(num_chunks, bits, memory_rows, row_offset, num_rows, table_salt)`` of ``lsh.chunk_locations`` for
        ``table`` (``bits = 0`` for ``allocation="hashed"`` tables: their signatures are ignored)."""
        t = self._tables[table]
        bits = t.code_bits() if t.allocation == "semantic" else 0
        memory_rows = self.group_rows[t.group()]
        return t.num_chunks(), bits, memory_rows, self._row_offset[table], t.rows(), self._table_index[table]

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Clears the signatures (no id has one), e.g. after ``meta`` + ``to_empty``."""
        for name in self._tables:
            sig = self.table_signatures(name)
            if not sig.is_meta:
                sig.fill_(0xFF)

    def table_signatures(self, table: str) -> torch.Tensor:
        return getattr(self.signatures, table)

    def locations(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """``(N, d / Z)`` memory rows holding the chunks of each id of ``table``."""
        return chunk_locations(ids, self.table_signatures(table), *self.location_params(table))

    def chunk_features(self, feature_dict: Dict[str, JaggedTensor]) -> Optional[KeyedJaggedTensor]:
        """KJT of the sub-features ``f__c<k>`` (values ``loc_k(i)``) of every feature on a TBE memory table."""
        keys: List[str] = []
        values: List[torch.Tensor] = []
        lengths: List[torch.Tensor] = []
        weights: List[torch.Tensor] = []
        for feature, table in self._feature_tables:
            assert isinstance(table, LMAEmbeddingBagConfig)
            if table.group() in self.elementwise_groups:
                continue
            jt = feature_dict[feature]
            loc = self.locations(table.name, jt.values())
            for k in range(table.num_chunks()):
                keys.append(chunk_feature_name(feature, k))
                values.append(loc[:, k])
                lengths.append(jt.lengths())
                if self._is_weighted:
                    weights.append(jt.weights())
        if not keys:
            return None
        return KeyedJaggedTensor(
            keys=keys,
            values=torch.cat(values),
            lengths=torch.cat(lengths),
            weights=torch.cat(weights) if weights else None,
        )

    @torch.no_grad()
    def fit_signatures(
        self, batches: Iterable[Batch], max_rows: Optional[int] = None, progress: bool = False
    ) -> Dict[str, float]:
        """Fits every semantic table's signatures on training rows; returns the fraction of ids that got one.

        Works on the unsharded module and on a sharded one alike (every rank must read the same rows, so that the
        replicated signatures agree). Tables with ``allocation="hashed"`` or no signature bytes are skipped (0.0).

        Args:
            batches (Iterable): training rows holding each table's features and its context features
                (``context_features``, default every other key of the batch): KJTs, or ``(kjt, labels)`` pairs
                (binary labels, used by tables with ``label_context``).
            max_rows (Optional[int]): sample size: rows read at most.
            progress (bool): show a tqdm bar.
        """
        tables = [t for t in self._tables.values() if t.allocation == "semantic" and t.code_bits() > 0]
        builders = [
            SignatureBuilder(t.num_embeddings, t.num_chunks(), t.signature_bytes, t.signature_rank) for t in tables
        ]
        if tables:
            build_signatures(
                batches,
                [(t.name, t.num_embeddings, t.feature_names, t.context_features, t.label_context) for t in tables],
                builders,
                max_rows=max_rows,
                progress=progress,
            )
        for t, b in zip(tables, builders):
            self.set_signatures(t.name, b.signatures())
        coverage = {name: 0.0 for name in self._tables}
        coverage.update({t.name: b.coverage() for t, b in zip(tables, builders)})
        return coverage

    @torch.no_grad()
    def set_signatures(self, table: str, signatures: torch.Tensor) -> None:
        """Loads ``(n, signature_bytes)`` uint8 signatures of ``table`` (as built by ``lsh.SignatureBuilder``)."""
        buf = self.table_signatures(table)
        if signatures.shape != buf.shape or signatures.dtype != torch.uint8:
            raise ValueError(
                f"LMA table '{table}': signatures must be uint8 of shape {tuple(buf.shape)}, "
                f"got {signatures.dtype} {tuple(signatures.shape)}"
            )
        buf.copy_(signatures)

    def forward(self, features: KeyedJaggedTensor) -> Tuple[KeyedJaggedTensor, Dict[str, torch.Tensor]]:
        """Checks ``features``; returns (chunk-location KJT for the memory tables, MEAN divisors). TBE groups only.

        Sub-features are feature-major (``f__c0 .. f__c<K-1>``, then the next feature), each holding its feature's
        bags; the locations of one feature are written straight into that layout.
        """
        if self.elementwise_groups:
            raise ValueError(
                f"LMA memory groups {sorted(self.elementwise_groups)} use chunk_size=1 (the plain-PyTorch reference "
                "path), which has no TBE/sharded form; use a chunk_size that is a multiple of 4"
            )
        kjt = self.select(features)
        ids = kjt.values()
        lengths_per_key = kjt.length_per_key()
        chunks = [t.num_chunks() for _, t in self._feature_tables]
        out = torch.empty(sum(k * n for k, n in zip(chunks, lengths_per_key)), dtype=torch.int64, device=ids.device)
        keys: List[str] = []
        sub_lengths: List[int] = []
        weights: List[torch.Tensor] = []
        lo = base = 0
        for (feature, table), n, k in zip(self._feature_tables, lengths_per_key, chunks):
            # (K, n) block of the output, written through its (n, K) transpose
            block = out[base : base + k * n].view(k, n).t()
            lma_locations(
                ids[lo : lo + n], self.table_signatures(table.name), *self.location_params(table.name), out=block
            )
            keys += [chunk_feature_name(feature, c) for c in range(k)]
            sub_lengths += [n] * k
            if self._is_weighted:
                weights.append(kjt.weights()[lo : lo + n].repeat(k))
            lo += n
            base += k * n
        lengths = kjt.lengths().view(len(chunks), -1)
        repeats = torch.tensor(chunks, device=lengths.device)
        located = KeyedJaggedTensor(
            keys=keys,
            values=out,
            lengths=lengths.repeat_interleave(repeats, dim=0, output_size=sum(chunks)).reshape(-1),
            weights=torch.cat(weights) if weights else None,
            stride=kjt.stride(),
            length_per_key=sub_lengths,
        )
        return located, self.kjt_mean_divisors(kjt)

    def combine(
        self,
        pooled: Optional[KeyedTensor],
        divisors: Dict[str, torch.Tensor],
        elementwise: Optional[Dict[str, torch.Tensor]] = None,
    ) -> KeyedTensor:
        """Concatenates each feature's ``d / Z`` pooled chunks (or takes its ``Z = 1`` result), then MEAN-divides."""
        by_key = pooled.to_dict() if pooled is not None else {}
        out = []
        for feature, table in self._feature_tables:
            assert isinstance(table, LMAEmbeddingBagConfig)
            if elementwise is not None and feature in elementwise:
                emb = elementwise[feature]
            else:
                emb = torch.cat([by_key[chunk_feature_name(feature, k)] for k in range(table.num_chunks())], dim=1)
            if feature in divisors:
                emb = emb / divisors[feature]
            out.append(emb)
        return keyed_tensor(self.feature_names(), out)


class LMAEmbeddingBagCollection(CompressedCollection):
    """LMA tables: ``embedding(i) = concat_k M[loc_k(i)]`` with ``d / Z`` chunks of width ``Z``.

    ``loc_k`` comes from the id's compact LSH signature (``lsh``), a buffer filled by ``fit_signatures`` from
    co-occurrence in training rows; ids without one get hashed locations. Tables with the same ``memory_group`` share
    one memory ``M``. For ``Z % 4 == 0``, ``M`` is a table of a stock ``EmbeddingBagCollection``
    (``_embedding_bag_collection``, table ``<group>__memory`` of ``rows x Z``) and each feature ``f`` becomes ``d / Z``
    sub-features ``f__c<k>`` on it, so its sharded form runs on FBGEMM TBE. ``Z = 1`` (the paper's per-element
    allocation) is a plain-PyTorch reference path (``elementwise_memories[group]``, unsharded only).

    A bag pools ``sum_i x_i * embedding(i)`` (``x_i`` = input weight if ``is_weighted``; MEAN divides by the bag size).

    Args:
        tables (List[LMAEmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    def __init__(
        self,
        tables: List[LMAEmbeddingBagConfig],
        is_weighted: bool = False,
        device: Optional[torch.device | str] = None,
    ) -> None:
        super().__init__(tables, LMAEmbeddingBagConfig, is_weighted, device)
        groups: Dict[str, List[LMAEmbeddingBagConfig]] = OrderedDict()
        for t in tables:
            groups.setdefault(t.group(), []).append(t)
        self._groups = groups
        group_rows: Dict[str, int] = {}
        for g, members in groups.items():
            for attr in ("chunk", "data_type"):
                values = {str(getattr(m, attr)() if attr == "chunk" else getattr(m, attr)) for m in members}
                if len(values) > 1:
                    raise ValueError(f"LMA memory_group '{g}': tables {[m.name for m in members]} differ in {attr}")
            group_rows[g] = sum(m.rows() for m in members)
        self.id_transform = LMAIds(tables, is_weighted, group_rows, device)

        inner: List[EmbeddingBagConfig] = []
        self._inner_configs: Dict[str, EmbeddingBagConfig] = {}
        self.elementwise_memories = nn.ParameterDict()
        for g, members in groups.items():
            first = members[0]
            if first.chunk() == 1:
                self.elementwise_memories[g] = nn.Parameter(torch.empty(group_rows[g], device=device))
                continue
            features = [
                chunk_feature_name(f, k) for m in members for f in m.feature_names for k in range(m.num_chunks())
            ]
            cfg = shared_table_config(first, memory_table_name(g), group_rows[g], first.chunk(), features)
            inner.append(cfg)
            self._inner_configs[g] = cfg
        self._embedding_bag_collection: Optional[EmbeddingBagCollection] = (
            EmbeddingBagCollection(tables=inner, is_weighted=is_weighted, device=device) if inner else None
        )
        self.reset_parameters()

    def memory_rows(self, group: str) -> int:
        return self.id_transform.group_rows[group]

    def table_signatures(self, table: str) -> torch.Tensor:
        return self.id_transform.table_signatures(table)

    def locations(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """``(N, d / Z)`` memory rows holding the chunks of each id of ``table``."""
        return self.id_transform.locations(table, ids)

    def memory_weight(self, group: str) -> torch.Tensor:
        """The memory ``M`` of ``group``: ``(rows, Z)`` table, or ``(rows,)`` for ``Z = 1``."""
        if group in self.elementwise_memories:
            return self.elementwise_memories[group]
        assert self._embedding_bag_collection is not None
        return self._embedding_bag_collection.embedding_bags[memory_table_name(group)].weight

    def _elementwise_pooled(self, feature_dict: Dict[str, JaggedTensor]) -> Dict[str, torch.Tensor]:
        """Pooled embeddings of the features whose memory has ``Z = 1`` (gather + segment sum, plain PyTorch)."""
        pooled: Dict[str, torch.Tensor] = {}
        for feature, table in self.id_transform._feature_tables:
            assert isinstance(table, LMAEmbeddingBagConfig)
            if table.group() not in self.elementwise_memories:
                continue
            jt = feature_dict[feature]
            loc = self.locations(table.name, jt.values())
            emb = self.elementwise_memories[table.group()][loc]  # (N, d)
            if self._is_weighted:
                emb = emb * jt.weights().unsqueeze(1)
            batch = jt.lengths().numel()
            bag = torch.repeat_interleave(torch.arange(batch, device=loc.device), jt.lengths())
            pooled[feature] = emb.new_zeros(batch, table.embedding_dim).index_add_(0, bag, emb)
        return pooled

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pools ``sum_i x_i * concat_k M[loc_k(i)]`` per bag; KJT in, KeyedTensor (keys = features) out."""
        if len(self.elementwise_memories) == 0:
            return super().forward(features)
        feature_dict = self.id_transform.split(features)
        kjt = self.id_transform.chunk_features(feature_dict)
        chunks = None
        if kjt is not None:
            assert self._embedding_bag_collection is not None
            chunks = self._embedding_bag_collection(kjt)
        return self.id_transform.combine(
            chunks, self.id_transform.mean_divisors(feature_dict), self._elementwise_pooled(feature_dict)
        )

    def fit_signatures(
        self, batches: Iterable[Batch], max_rows: Optional[int] = None, progress: bool = False
    ) -> Dict[str, float]:
        """Fits every table's signatures on training rows (see ``LMAIds.fit_signatures``)."""
        return self.id_transform.fit_signatures(batches, max_rows=max_rows, progress=progress)

    def set_signatures(self, table: str, signatures: torch.Tensor) -> None:
        """Loads ``(n, signature_bytes)`` uint8 signatures of ``table`` (as built by ``lsh.SignatureBuilder``)."""
        self.id_transform.set_signatures(table, signatures)

    def reset_parameters(self) -> None:
        """Initialises every memory from its config and clears all signatures (fit or load them afterwards)."""
        for g, members in self._groups.items():
            weight = self.memory_weight(g)
            if g in self._inner_configs:
                init_table(weight, self._inner_configs[g])
            else:
                init_table(weight, members[0])
        self.id_transform.reset_buffers()

    def memory_report(self) -> MemoryReport:
        rows = []
        for g, members in self._groups.items():
            names = [m.name for m in members]
            rows.append(
                TableMemory(
                    names[0] if names == [g] else f"group:{g}",
                    "lma",
                    sum(stock_bytes(m) for m in members),
                    {
                        "memory": tensor_bytes(self.memory_weight(g)),
                        "signatures": sum(tensor_bytes(self.table_signatures(n)) for n in names),
                    },
                    names,
                )
            )
        return MemoryReport(rows)
