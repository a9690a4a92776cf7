# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""LMA: embeddings assembled from a shared memory at LSH-chosen locations (Desai et al., 2021)."""

import warnings
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.configs import LMAEmbeddingBagConfig, stock_bytes
from torchrec_memcom.lsh import Batch, SignatureBuilder, build_signatures, unpack_codes
from torchrec_memcom.memory import TableMemory, tensor_bytes
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.method import (
    Combine,
    CustomJob,
    Segment,
    TableMethod,
    is_mean,
    physical_config,
    projected,
    register_method,
)
from torchrec_memcom.modules.warm_start import fit_shared_rows
from torchrec_memcom.ops import IdOp, LMAJob, lma_locations, lma_locations_grouped

__all__ = ["LMAEmbeddingBagCollection", "LMAMethod", "chunk_feature_name", "memory_table_name"]

# Below this share of ids with a signature, a training forward warns that the table runs as the hashing trick.
MIN_COVERAGE = 0.01


def chunk_feature_name(feature: str, chunk: int) -> str:
    """Sub-feature of ``feature`` that looks up chunk ``chunk`` on the memory table."""
    return f"{feature}__c{chunk}"


def memory_table_name(group: str) -> str:
    return f"{group}__memory"


def _max_id(signatures: torch.Tensor, ids: torch.Tensor) -> Optional[int]:
    """The clamp of ``lma_locations`` for ids of a table with these signatures: on CUDA ids are range-checked one step
    later (``InputCheck``), so they must never read outside the signatures meanwhile; on CPU they are checked first."""
    return signatures.shape[0] - 1 if ids.is_cuda else None


class _Signatures(nn.Module):
    """One ``(n, signature_bytes)`` uint8 buffer per table (state-dict key ``id_transform.signatures.<table>``)."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = True  # coverage must be recomputed
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "changed", True))


@register_method
class LMAMethod(TableMethod):
    """LMA tables: ``embedding(i) = concat_k M[loc_k(i)]``, ``d / Z`` chunks of width ``Z``.

    Each feature ``f`` becomes ``d / Z`` physical features ``f__c<k>`` on its group's memory table
    ``<group>__memory`` (``rows x Z``), whose ids are the chunk locations ``loc_k(i)`` computed from the id's
    signature (``lsh.chunk_locations``). Table ``t`` of a group owns rows ``[row_offset(t), row_offset(t) + rows(t))``
    of the memory (tables in config order) for its ids with a signature; ids without one are hashed over the whole
    memory.
    """

    name = "lma"
    config_type = LMAEmbeddingBagConfig
    transform_state_name = "signatures"

    def __init__(self, tables: List[EmbeddingBagConfig]) -> None:
        super().__init__(tables)
        groups: Dict[str, List[LMAEmbeddingBagConfig]] = OrderedDict()
        for t in tables:
            assert isinstance(t, LMAEmbeddingBagConfig)
            groups.setdefault(t.group(), []).append(t)
        self._groups = groups
        self.group_rows: Dict[str, int] = {}
        for g, members in groups.items():
            for attr in ("chunk", "data_type"):
                values = {str(getattr(m, attr)() if attr == "chunk" else getattr(m, attr)) for m in members}
                if len(values) > 1:
                    raise ValueError(f"LMA memory_group '{g}': tables {[m.name for m in members]} differ in {attr}")
            self.group_rows[g] = sum(m.rows() for m in members)
        self._index = {t.name: i for i, t in enumerate(tables)}
        self._row_offset: Dict[str, int] = {}
        used: Dict[str, int] = {}
        for t in self._lma():
            self._row_offset[t.name] = used.get(t.group(), 0)
            used[t.group()] = self._row_offset[t.name] + t.rows()
        # constants of the hot path, fixed by the configs
        self._semantic = [t for t in self._lma() if t.allocation == "semantic" and t.code_bits() > 0]
        semantic = {t.name for t in self._semantic}
        self._params: Dict[str, Tuple[int, int, int, int, int, int]] = {
            t.name: (
                t.num_chunks(),
                t.code_bits() if t.name in semantic else 0,
                self.group_rows[t.group()],
                self._row_offset[t.name],
                t.rows(),
                self._index[t.name],
            )
            for t in self._lma()
        }
        self._table_of = {f: t for t in self._lma() for f in t.feature_names}
        self._coverage: Dict[str, float] = {}
        self._warned = False

    def _lma(self) -> List[LMAEmbeddingBagConfig]:
        return self.tables  # type: ignore[return-value]

    def groups(self) -> List[str]:
        return list(self._groups)

    # -- layout ----------------------------------------------------------------------------------------------------

    def physical_tables(self) -> List[EmbeddingBagConfig]:
        out = []
        for g, members in self._groups.items():
            features = [
                chunk_feature_name(f, k) for m in members for f in m.feature_names for k in range(m.num_chunks())
            ]
            out.append(
                physical_config(members[0], memory_table_name(g), self.group_rows[g], members[0].chunk(), features)
            )
        return out

    def segments(self) -> List[Segment]:
        return [
            Segment(chunk_feature_name(f, k), f, memory_table_name(t.group()), IdOp.CUSTOM)
            for t in self._lma()
            for f in t.feature_names
            for k in range(t.num_chunks())
        ]

    def combines(self) -> List[Combine]:
        return [
            Combine(
                f,
                "concat",
                tuple(chunk_feature_name(f, k) for k in range(t.num_chunks())),
                mean=is_mean(t),
                project=projected(t),
            )
            for t in self._lma()
            for f in t.feature_names
        ]

    def transform_state(self, device: Optional[torch.device]) -> nn.Module:
        sigs = _Signatures()
        for t in self._lma():
            empty = torch.full((t.num_embeddings, t.signature_bytes), 0xFF, dtype=torch.uint8, device=device)
            sigs.register_buffer(t.name, empty)
        return sigs

    def reset_state(self, owner: nn.Module) -> None:
        """Clears every signature (no id has one): fit or load them afterwards."""
        sigs = owner.id_transform.signatures  # type: ignore[union-attr]
        for t in self._lma():
            buf = getattr(sigs, t.name)
            if not buf.is_meta:
                buf.fill_(0xFF)
        sigs.changed = True

    # -- locations -------------------------------------------------------------------------------------------------

    def location_params(self, table: str) -> Tuple[int, int, int, int, int, int]:
        """``(num_chunks, bits, memory_rows, row_offset, num_rows, table_salt)`` of ``lsh.chunk_locations`` for
        ``table`` (``bits = 0`` for ``allocation="hashed"`` tables: their signatures are ignored)."""
        return self._params[table]

    def _locations(
        self, signatures: torch.Tensor, table: str, ids: torch.Tensor, out: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return lma_locations(ids, signatures, *self._params[table], out=out, max_id=_max_id(signatures, ids))

    def custom_ids(
        self, transform: nn.Module, feature: str, ids: torch.Tensor, out: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        table = self._table_of[feature]
        sigs = transform.signatures  # type: ignore[union-attr]
        if transform.training:
            self._warn_if_unfitted(sigs)
        return self._locations(getattr(sigs, table.name), table.name, ids, out)

    def custom_ids_into(
        self, transform: nn.Module, jobs: Sequence[CustomJob], ids: torch.Tensor, out: torch.Tensor
    ) -> None:
        """Chunk locations of every job's ids, all tables in one launch (``ops.lma_locations_grouped``)."""
        sigs = transform.signatures  # type: ignore[union-attr]
        if transform.training:
            self._warn_if_unfitted(sigs)
        lma_jobs = []
        for job in jobs:
            table = self._table_of[job.feature].name
            buf = getattr(sigs, table)
            lma_jobs.append(LMAJob(job.start, job.n, job.dst, buf, self._params[table], _max_id(buf, ids)))
        lma_locations_grouped(ids, lma_jobs, out)

    def _warn_if_unfitted(self, sigs: nn.Module) -> None:
        if self._warned:
            return
        coverage = self.signature_coverage_of(sigs)
        low = {t.name: coverage[t.name] for t in self._semantic if coverage[t.name] < MIN_COVERAGE}
        if low:
            self._warned = True
            warnings.warn(
                f"LMA tables {sorted(low)} train with signatures for under {MIN_COVERAGE:.0%} of their ids "
                f"(coverage {low}): every id takes its hashed fallback, i.e. the hashing trick. Call "
                "fit_signatures(batches) on training rows before training (or load fitted signatures).",
                stacklevel=3,
            )

    def signature_coverage_of(self, sigs: nn.Module) -> Dict[str, float]:
        if getattr(sigs, "changed", True):
            self._coverage = {}
            semantic = {t.name for t in self._semantic}
            for t in self._lma():
                buf = getattr(sigs, t.name)
                if t.name not in semantic or buf.numel() == 0 or buf.is_meta:
                    self._coverage[t.name] = 0.0
                    continue
                first = unpack_codes(buf, t.num_chunks(), t.code_bits())[:, 0]
                self._coverage[t.name] = float((first != (1 << t.code_bits()) - 1).float().mean())
            sigs.changed = False  # type: ignore[assignment]
        return dict(self._coverage)

    # -- accessors -------------------------------------------------------------------------------------------------

    def table_signatures(self, owner: nn.Module, table: str) -> torch.Tensor:
        return getattr(owner.id_transform.signatures, table)  # type: ignore[union-attr]

    @torch.no_grad()
    def set_signatures(self, owner: nn.Module, table: str, signatures: torch.Tensor) -> None:
        """Loads ``(n, signature_bytes)`` uint8 signatures of ``table`` (as packed by ``lsh.SignatureBuilder``)."""
        buf = self.table_signatures(owner, table)
        if signatures.shape != buf.shape or signatures.dtype != torch.uint8:
            raise ValueError(
                f"LMA table '{table}': signatures must be uint8 of shape {tuple(buf.shape)}, "
                f"got {signatures.dtype} {tuple(signatures.shape)}"
            )
        buf.copy_(signatures)
        owner.id_transform.signatures.changed = True  # type: ignore[union-attr]

    def locations(self, owner: nn.Module, table: str, ids: torch.Tensor) -> torch.Tensor:
        """``(N, d / Z)`` memory rows holding the chunks of each id of ``table``."""
        return self._locations(self.table_signatures(owner, table), table, ids)

    def memory_weight(self, owner: nn.Module, group: str) -> nn.Parameter:
        """The memory ``M`` of ``group``: a ``(rows, Z)`` table."""
        return owner.physical_weight(memory_table_name(group))  # type: ignore[operator]

    @torch.no_grad()
    def warm_start(self, owner: nn.Module, trained: Mapping[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]) -> None:
        """Each memory row = the count-weighted mean of the trained chunks (``E_i[k Z : (k + 1) Z]``) placed on it,
        over every member table of its memory (fit or load the signatures first: they decide the places)."""
        for g, members in self._groups.items():
            memory = self.memory_weight(owner, g)
            rows, chunks, weights = [], [], []
            for t in members:
                if t.name not in trained:
                    continue
                weight, counts = trained[t.name]
                n, z = t.num_embeddings, t.chunk()
                loc = self.locations(owner, t.name, torch.arange(n, device=memory.device))  # (n, K)
                rows.append(loc.reshape(-1))
                chunks.append(weight.to(memory).reshape(n * t.num_chunks(), z))
                c = counts if counts is not None else torch.ones(n)
                weights.append(c.to(memory).repeat_interleave(t.num_chunks()))
            if rows:
                fitted = fit_shared_rows(
                    torch.cat(rows), torch.cat(chunks), memory.shape[0], torch.cat(weights), memory.detach()
                )
                memory.copy_(fitted)

    @torch.no_grad()
    def fit(
        self, owner: nn.Module, batches: Iterable[Batch], max_rows: Optional[int], progress: bool
    ) -> Dict[str, float]:
        """Fits the signatures of every semantic table on training rows: KJTs holding each table's features and its
        context features (``context_features``, default every other key), or ``(kjt, labels)`` pairs (binary labels,
        used by tables with ``label_context``). Returns the fraction of ids that got one per table (0.0 for tables
        with ``allocation="hashed"`` or no signature bytes, which are not fitted)."""
        tables = self._semantic
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
            self.set_signatures(owner, t.name, b.signatures().to(self.table_signatures(owner, t.name).device))
        coverage = {t.name: 0.0 for t in self._lma()}
        coverage.update({t.name: b.coverage() for t, b in zip(tables, builders)})
        return coverage

    # -- reports and planning --------------------------------------------------------------------------------------

    def memory_rows(self, owner: nn.Module) -> List[TableMemory]:
        rows = []
        for g, members in self._groups.items():
            names = [m.name for m in members]
            rows.append(
                TableMemory(
                    names[0] if names == [g] else f"group:{g}",
                    "lma",
                    sum(stock_bytes(m) for m in members),
                    {
                        "memory": tensor_bytes(self.memory_weight(owner, g)),
                        "signatures": sum(tensor_bytes(self.table_signatures(owner, n)) for n in names),
                    },
                    names,
                )
            )
        return rows

    def fingerprint(self, table: EmbeddingBagConfig) -> Dict[str, Any]:
        assert isinstance(table, LMAEmbeddingBagConfig)
        return {
            **super().fingerprint(table),
            "memory_group": table.group(),
            "group_rows": self.group_rows[table.group()],
            "chunk_size": table.chunk(),
            "signature_bytes": table.signature_bytes,
            "allocation": table.allocation,
            "row_offset": self._row_offset[table.name],
            "table_salt": self._index[table.name],
        }

    def replicated_bytes(self) -> int:
        return sum(t.signature_bytes_total() for t in self._lma())

    def ids_in_range(self, physical_table: str) -> bool:
        # chunk locations are < memory rows by construction (ids are clamped before the location kernel on CUDA and
        # range-checked before it on CPU)
        return physical_table in {memory_table_name(g) for g in self._groups}

    def physical_names(self, table: str) -> List[str]:
        t = self.by_name[table]
        assert isinstance(t, LMAEmbeddingBagConfig)
        return [memory_table_name(t.group())]


class LMAEmbeddingBagCollection(CompressedEmbeddingBagCollection):
    """LMA tables: ``embedding(i) = concat_k M[loc_k(i)]`` with ``d / Z`` chunks of width ``Z`` (see ``LMAMethod``).

    ``loc_k`` comes from the id's signature (one small code per chunk, ``lsh``), fitted by ``fit_signatures`` from
    co-occurrence in training rows so that ids with similar contexts share rows; ids without one get hashed
    locations (a training forward warns when a semantic table has almost none).
    Tables with the same ``memory_group`` share one memory ``M``. ``Z`` must be a multiple of 4 to shard (FBGEMM TBE);
    ``Z = 1`` (the paper's per-element LMA) runs unsharded only.

    Args:
        tables (List[LMAEmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    _config_types = (LMAEmbeddingBagConfig,)

    def _lma(self) -> LMAMethod:
        method = self.methods()["lma"]
        assert isinstance(method, LMAMethod)
        return method

    def memory_rows(self, group: str) -> int:
        """Rows of ``group``'s memory (width ``Z``)."""
        return self._lma().group_rows[group]


LMAMethod.collection_type = LMAEmbeddingBagCollection
