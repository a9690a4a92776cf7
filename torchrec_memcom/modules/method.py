# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""What a compression method is, and the registry of methods.

A method (stock, hashing trick, QR, MEmCom, LMA, ...) describes how its logical tables become *physical* tables of
one stock ``EmbeddingBagCollection`` and how ids and pooled embeddings move between the two:

- ``physical_tables()``: the stock tables that hold its memory (they are sharded like any TorchRec table);
- ``segments()``: per logical feature, the physical features it feeds, each an ``ops.IdOp`` of its ids (applied in
  one fused kernel for all tables; ``IdOp.CUSTOM`` segments are filled by ``custom_ids_into``, one call per method
  for all its features);
- ``combines()``: per logical feature, how its pooled embedding comes from the physical ones (one, concatenation,
  product; MEAN division);
- state beside the tables (MEmCom's per-id weights, LMA's signatures), memory rows for ``memory_report``, the
  fingerprint that checkpoints must match, and the planner's view (allowed sharding types, extra bytes per shard,
  bytes replicated on every rank).

``CompressedEmbeddingBagCollection``, its sharder, the planner, ``tables.table_config`` and ``compress_`` all read the
registry, so a new method is one new file that defines a ``TableMethod`` subclass and calls ``register_method``.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Type

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType

from torchrec_memcom.configs import physical_dim
from torchrec_memcom.memory import TableMemory
from torchrec_memcom.ops import IdOp

__all__ = [
    "Combine",
    "CustomJob",
    "Segment",
    "TableMethod",
    "method_for_config",
    "projected",
    "method_for_name",
    "register_method",
    "registered_methods",
]


class CustomJob(NamedTuple):
    """The ``IdOp.CUSTOM`` segments of one logical feature in a KJT's values: its ids ``ids[start : start + n]``, and
    where column ``k`` of ``custom_ids`` goes (``dst[k]``, ``-1``: nowhere)."""

    feature: str
    start: int
    n: int
    dst: Tuple[int, ...]


@dataclass(frozen=True)
class Segment:
    """One physical feature: ``op`` applied to the ids of logical feature ``feature``, looked up in ``table``.

    Args:
        name (str): the physical feature's name (a feature of the physical table ``table``).
        feature (str): the logical feature whose ids it transforms.
        table (str): the physical table it pools.
        op (IdOp): the transform of the ids.
        params (Tuple[int, ...]): up to ``ops.NUM_OP_PARAMS`` integer parameters of ``op``.
        carry_weight (bool): pools with the input weight of each id (else weight 1).
    """

    name: str
    feature: str
    table: str
    op: IdOp
    params: Tuple[int, ...] = ()
    carry_weight: bool = True


@dataclass(frozen=True)
class Combine:
    """How the pooled embedding of logical feature ``feature`` comes from its physical features.

    ``kind`` is ``"one"`` (the single part), ``"concat"`` (parts side by side) or ``"product"`` (elementwise product
    of the parts, each MEAN-divided first when ``mean``); ``mean`` divides by the bag size (the physical tables pool
    SUM); ``project`` names the table whose output projection applies last (tables with a ``base_dim``).
    """

    feature: str
    kind: str
    parts: Tuple[str, ...]
    mean: bool = False
    project: Optional[str] = None  # table whose learned ``base_dim x d`` projection maps the result to ``d``


class TableMethod:
    """One compression method's view of the tables of one collection that use it (see the module docstring).

    Instances are created by ``CompressedEmbeddingBagCollection`` with that collection's tables of ``config_type``;
    hooks that need the module's state receive the collection (``owner``). Subclasses set the class attributes and
    override the hooks; the defaults describe a method without extra state.
    """

    name: ClassVar[str]
    config_type: ClassVar[Type[EmbeddingBagConfig]]
    # The per-method drop-in collection (set by the method's file, e.g. ``MEmComEmbeddingBagCollection``).
    collection_type: ClassVar[Optional[type]] = None
    # MEmCom: physical ids are per-id weight slots, turned into rows and weights after the input dist.
    uses_entity_weights: ClassVar[bool] = False

    def __init__(self, tables: Sequence[EmbeddingBagConfig]) -> None:
        self.tables: List[EmbeddingBagConfig] = list(tables)
        self.by_name: Dict[str, EmbeddingBagConfig] = {t.name: t for t in self.tables}

    # -- layout ------------------------------------------------------------------------------------------------

    def physical_tables(self) -> List[EmbeddingBagConfig]:
        """Stock tables holding this method's memory, in the order of the logical tables."""
        raise NotImplementedError

    def segments(self) -> List[Segment]:
        """Physical features of every logical feature, logical features in table order."""
        raise NotImplementedError

    def combines(self) -> List[Combine]:
        """How each logical feature is pooled from its segments, in table order."""
        raise NotImplementedError

    def custom_ids(
        self, transform: nn.Module, feature: str, ids: torch.Tensor, out: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``(N, S)`` physical ids of the ``S`` ``IdOp.CUSTOM`` segments of ``feature`` (in ``segments()`` order),
        written into ``out`` (an ``(N, S)``-shaped, possibly transposed view) when given."""
        raise NotImplementedError(f"{type(self).__name__} has no CUSTOM segments")

    def custom_ids_into(
        self, transform: nn.Module, jobs: Sequence["CustomJob"], ids: torch.Tensor, out: torch.Tensor
    ) -> None:
        """Writes the ``custom_ids`` columns of every job into the flat ``out`` (column ``k`` of the job's ids at
        ``out[dst[k] : dst[k] + n]``; ``dst[k] < 0``: not written). One call per step for all of this method's
        features: override with a single launch (LMA does); this default calls ``custom_ids`` job by job."""
        for job in jobs:
            cols = self.custom_ids(transform, job.feature, ids[job.start : job.start + job.n].to(torch.int64))
            for k, d in enumerate(job.dst):
                if d >= 0:
                    out[d : d + job.n] = cols[:, k]

    # -- state ---------------------------------------------------------------------------------------------------

    def transform_state(self, device: Optional[torch.device]) -> Optional[nn.Module]:
        """Integer state the id transform reads (e.g. LMA signatures), registered as
        ``id_transform.<transform_state_name>``."""
        return None

    transform_state_name: ClassVar[Optional[str]] = None

    def module_state(self, device: Optional[torch.device]) -> Optional[nn.Module]:
        """Trainable state beside the tables (e.g. MEmCom's per-id weights), registered on the collection."""
        return None

    module_state_name: ClassVar[Optional[str]] = None

    def reset_state(self, owner: nn.Module) -> None:
        """(Re)initialises the method's own state (not the physical tables); a no-op on ``meta``."""

    def memory_rows(self, owner: nn.Module) -> List[TableMemory]:
        """One memory-report row per logical table (or shared memory)."""
        raise NotImplementedError

    def fingerprint(self, table: EmbeddingBagConfig) -> Dict[str, Any]:
        """What a checkpoint of ``table`` must agree with to be loaded (method, sizes, hash parameters)."""
        return {
            "method": self.name,
            "num_embeddings": table.num_embeddings,
            "embedding_dim": table.embedding_dim,
            "physical_dim": physical_dim(table),
        }

    def fit(self, owner: nn.Module, batches: Any, max_rows: Optional[int], progress: bool) -> Dict[str, float]:
        """Fits data-dependent state (LMA signatures) from training batches; returns per-table coverage."""
        return {}

    def warm_start(self, owner: nn.Module, trained: Mapping[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]) -> None:
        """Initialises this method's tables from trained stock tables: ``trained[table] = (weight (n x d), id counts
        (n,) or None)``, e.g. each shared row as the (count-weighted) mean of the rows mapped to it, so a converted
        model starts near the trained one. Tables missing from ``trained`` keep their state. By default one table at a
        time (``warm_start_table``); methods whose tables share memory override this."""
        for t in self.tables:
            if t.name in trained:
                self.warm_start_table(owner, t, *trained[t.name])

    def warm_start_table(
        self, owner: nn.Module, table: EmbeddingBagConfig, weight: torch.Tensor, counts: Optional[torch.Tensor]
    ) -> None:
        """``warm_start`` for one table."""
        raise NotImplementedError(f"{self.name} tables have no warm start")

    # -- planner -------------------------------------------------------------------------------------------------

    def sharding_types(self, physical_table: str) -> Optional[List[str]]:
        """Sharding types the physical table supports (``None``: every type TorchRec offers)."""
        return None

    def ids_in_range(self, physical_table: str) -> bool:
        """Whether every id the transform writes for the physical table lies in ``[0, num_embeddings)`` whatever the
        input (then FBGEMM's per-batch bounds check of its indices is skipped: ``BoundsCheckMode.NONE``). By default:
        tables fed only by built-in ops, whose source ids ``ops.transform_segments`` clamps into the logical table's
        range (out-of-range ids are still reported by the transform's own check); a method writing ``CUSTOM``
        segments must say so itself."""
        ops = [s.op for s in self.segments() if s.table == physical_table]
        return bool(ops) and IdOp.CUSTOM not in ops

    def extra_shard_bytes(self, physical_table: str, shard_rows: int, state_per_value: int) -> int:
        """Bytes a shard of ``shard_rows`` rows holds beside its rows (e.g. MEmCom's weights and their optimizer
        state, ``state_per_value`` extra fp32 values per weight)."""
        return 0

    def replicated_bytes(self) -> int:
        """Bytes every rank holds whatever the plan (e.g. LMA signatures)."""
        return 0

    def physical_names(self, table: str) -> List[str]:
        """Physical tables a constraint on logical ``table`` applies to."""
        return [table]


_BY_CONFIG: Dict[Type[EmbeddingBagConfig], Type[TableMethod]] = {}
_BY_NAME: Dict[str, Type[TableMethod]] = {}


def register_method(method: Type[TableMethod]) -> Type[TableMethod]:
    """Adds ``method`` to the registry (usable as a class decorator); names and config types must be unique."""
    if method.name in _BY_NAME and _BY_NAME[method.name] is not method:
        raise ValueError(f"a method named '{method.name}' is already registered")
    if method.config_type in _BY_CONFIG and _BY_CONFIG[method.config_type] is not method:
        raise ValueError(f"{method.config_type.__name__} already belongs to method '{_BY_CONFIG[method.config_type]}'")
    _BY_CONFIG[method.config_type] = method
    _BY_NAME[method.name] = method
    return method


def method_for_config(config: EmbeddingBagConfig) -> Type[TableMethod]:
    """The method of a table config (exact type; a plain ``EmbeddingBagConfig`` is ``stock``)."""
    try:
        return _BY_CONFIG[type(config)]
    except KeyError:
        raise TypeError(
            f"table '{config.name}': unsupported config type {type(config).__name__} "
            f"(registered: {sorted(c.__name__ for c in _BY_CONFIG)})"
        ) from None


def method_for_name(name: str) -> Type[TableMethod]:
    """The method registered as ``name`` (``stock``, ``hash``, ``qr``, ``memcom``, ``lma``, ...)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown table type '{name}' (choose from {sorted(_BY_NAME)})") from None


def registered_methods() -> List[Type[TableMethod]]:
    """Every registered method, in registration order."""
    return list(_BY_NAME.values())


def config_fields(config: EmbeddingBagConfig) -> Dict[str, Any]:
    """The fields a method config adds to ``EmbeddingBagConfig`` (what a fingerprint or a spec records)."""
    base = {f.name for f in dataclasses.fields(EmbeddingBagConfig)}
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in base}


def physical_config(
    table: EmbeddingBagConfig,
    name: str,
    num_rows: int,
    dim: int,
    features: Sequence[str],
    init_fn: Any = None,
    pooling: PoolingType = PoolingType.SUM,
) -> EmbeddingBagConfig:
    """Config of a physical table (SUM-pooled unless stated: MEAN is applied when combining)."""
    return EmbeddingBagConfig(
        name=name,
        num_embeddings=num_rows,
        embedding_dim=dim,
        feature_names=list(features),
        data_type=table.data_type,
        pooling=pooling,
        init_fn=init_fn if init_fn is not None else table.init_fn,
    )


def is_mean(table: EmbeddingBagConfig) -> bool:
    return table.pooling == PoolingType.MEAN


def projected(table: EmbeddingBagConfig) -> Optional[str]:
    """``table.name`` if its rows are narrower than its output (a learned projection follows), else ``None``."""
    return table.name if physical_dim(table) < table.embedding_dim else None


def spec_fields(config_type: Type[EmbeddingBagConfig]) -> Mapping[str, dataclasses.Field]:
    """Fields of ``config_type`` beyond ``EmbeddingBagConfig``'s (what a YAML table spec may set)."""
    base = {f.name for f in dataclasses.fields(EmbeddingBagConfig)}
    return {f.name: f for f in dataclasses.fields(config_type) if f.name not in base}
