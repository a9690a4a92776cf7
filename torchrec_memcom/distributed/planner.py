# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Planner pieces: the true memory of compressed tables, constraints on logical tables, and a ready planner.

TorchRec's planner sizes a table from the tensor a sharder exposes (``shardable_parameters``). Ours expose the
physical tables (stock tables, MEmCom / hash shared tables, QR's Q and R, LMA's memories), so what scales with the
number of ids comes from each method (``modules.method.TableMethod``): bytes that travel with each shard (MEmCom's
weights and their optimizer state, ``CompressedStorageEstimator``) and bytes every rank holds (LMA's signatures,
``CompressedStorageReservation``). Methods also restrict the sharding types of their tables (MEmCom: row-wise or
table-wise), which ``default_constraints`` turns into planner constraints.
"""

import copy
import dataclasses
import warnings
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from torch import nn
from torch.distributed._shard.metadata import ShardMetadata
from torch.distributed._shard.sharding_spec import EnumerableShardingSpec
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.shard_estimators import EmbeddingPerfEstimator, EmbeddingStorageEstimator
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import ParameterConstraints, ShardingOption
from torchrec.distributed.types import ModuleSharder, ShardingPlan, ShardingType

from torchrec_memcom.configs import MEmComEmbeddingBagConfig
from torchrec_memcom.distributed import _compat
from torchrec_memcom.distributed.compressed import check_row_wise_buckets
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.method import TableMethod

__all__ = [
    "CompressedEmbeddingShardingPlanner",
    "CompressedStorageEstimator",
    "CompressedStorageReservation",
    "default_constraints",
    "physical_constraints",
    "place_on_device",
    "replicated_bytes",
]

_STATELESS = {EmbOptimType.EXACT_SGD}


def _collections(model: nn.Module) -> Iterator[Tuple[str, CompressedEmbeddingBagCollection]]:
    for name, m in model.named_modules():
        if isinstance(m, CompressedEmbeddingBagCollection):
            yield name, m


def _physical_owner(module: CompressedEmbeddingBagCollection, physical: str) -> Optional[TableMethod]:
    for m in module.methods().values():
        if any(c.name == physical for c in m.physical_tables()):
            return m
    return None


def replicated_bytes(model: nn.Module) -> int:
    """Bytes every rank holds whatever the plan (LMA signatures) for the compressed collections in ``model``."""
    return sum(m.replicated_bytes() for _, c in _collections(model) for m in c.methods().values())


def _state_per_value(option: ShardingOption, fused_params: Dict) -> int:
    """Optimizer-state values per entity weight: 0 for SGD, 1 for (row-wise) Adagrad and unknown optimizers."""
    optim = fused_params.get("optimizer")
    if optim is not None:
        return 0 if optim in _STATELESS else 1
    classes = getattr(option.tensor, "_optimizer_classes", None)
    if classes:
        return 0 if classes[0] is torch.optim.SGD else 1
    return 1


class CompressedStorageEstimator(EmbeddingStorageEstimator):
    """TorchRec's storage estimate plus what each method keeps beside a shard's rows (MEmCom: ``n_pad * rows / m``
    weights and their optimizer state; a table-wise shard holds all ``n_pad``).

    Args:
        topology (Topology), constraints: as for ``EmbeddingStorageEstimator``.
        fused_params (Optional[Dict]): the sharders' fused params (sizes the weights' optimizer state).
    """

    def __init__(
        self,
        topology: Topology,
        constraints: Optional[Dict[str, ParameterConstraints]] = None,
        fused_params: Optional[Dict] = None,
    ) -> None:
        super().__init__(topology, constraints)
        self._fused_params = dict(fused_params or {})

    def estimate(self, sharding_options: List[ShardingOption], *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().estimate(sharding_options, *args, **kwargs)
        on_device = self._topology.compute_device != "cpu"
        for option in sharding_options:
            module = option.module[1]
            if not isinstance(module, CompressedEmbeddingBagCollection):
                continue
            method = _physical_owner(module, option.name)
            if method is None:
                continue
            state = _state_per_value(option, self._fused_params)
            for shard in option.shards:
                extra = method.extra_shard_bytes(option.name, shard.size[0], state)
                if not extra:
                    continue
                storage = shard.storage
                assert storage is not None
                shard.storage = dataclasses.replace(
                    storage,
                    hbm=storage.hbm + (extra if on_device else 0),
                    ddr=storage.ddr + (0 if on_device else extra),
                )


class CompressedStorageReservation(HeuristicalStorageReservation):
    """TorchRec's heuristic reservation (dense parts, buffers) plus, on every rank, the bytes every rank holds
    (``replicated_bytes``: LMA signatures).

    Args:
        percentage (float): share of each device's memory held back, as in ``HeuristicalStorageReservation``.
        **kwargs: further ``HeuristicalStorageReservation`` arguments (``parameter_multiplier``, ...).
    """

    def __init__(self, percentage: float = 0.15, **kwargs) -> None:  # noqa: ANN003
        with warnings.catch_warnings():  # its warning is about dry runs on meta dense tensors, not our case
            warnings.simplefilter("ignore")
            super().__init__(percentage=percentage, **kwargs)

    def reserve(
        self,
        topology: Topology,
        batch_size: int,
        module: nn.Module,
        sharders: List[ModuleSharder[nn.Module]],
        constraints: Optional[Dict[str, ParameterConstraints]] = None,
    ) -> Topology:
        reserved = super().reserve(topology, batch_size, module, sharders, constraints)
        extra = replicated_bytes(module)
        if extra:
            on_device = reserved.compute_device != "cpu"
            for device in reserved.devices:
                s = device.storage
                device.storage = dataclasses.replace(
                    s, hbm=s.hbm - (extra if on_device else 0), ddr=s.ddr - (0 if on_device else extra)
                )
        return reserved


def place_on_device(plan: ShardingPlan, device: torch.device) -> ShardingPlan:
    """A copy of ``plan`` with every shard on ``device``: same ranks, offsets and sizes.

    For ranks that share one GPU (``init_distributed(device="cuda-shared")``) planned as the ranks of one host: the
    planner puts rank ``r``'s shards on ``cuda:(r mod ranks per host)``, a GPU the machine may not have.
    """
    placed = copy.deepcopy(plan)
    for module_plan in placed.plan.values():
        for ps in module_plan.values() if isinstance(module_plan, dict) else ():
            spec = ps.sharding_spec
            if isinstance(spec, EnumerableShardingSpec):
                spec.shards = [
                    ShardMetadata(s.shard_offsets, s.shard_sizes, f"rank:{s.placement.rank()}/{device}")
                    if s.placement is not None
                    else s
                    for s in spec.shards
                ]
    return placed


def physical_constraints(
    model: nn.Module, constraints: Optional[Dict[str, ParameterConstraints]]
) -> Dict[str, ParameterConstraints]:
    """Translates constraints written for logical tables into constraints on the tables the planner sees.

    A constraint on logical table ``t`` applies to each of its physical tables (QR: ``t__q`` and ``t__r``; LMA: its
    group's memory, from the group's first constrained table), with per-feature pooling factors mapped onto the
    physical features (an LMA memory sees each feature once per chunk). Constraints naming physical or stock tables
    pass through.
    """
    out: Dict[str, ParameterConstraints] = dict(constraints or {})
    if not constraints:
        return out
    for _, module in _collections(model):
        logical = {t.name: t for t in module.embedding_bag_configs()}
        feature_factor: Dict[str, float] = {}
        for name, t in logical.items():
            c = constraints.get(name)
            if c is not None and c.pooling_factors:
                feature_factor.update(zip(t.feature_names, c.pooling_factors))
        segments = {s.name: s for s in module.id_transform.segments()}
        for method in module.methods().values():
            physical = {c.name: c for c in method.physical_tables()}
            for t in method.tables:
                if t.name not in constraints or method.physical_names(t.name) == [t.name]:
                    continue
                base = out.pop(t.name)
                for p in method.physical_names(t.name):
                    if p in out and p not in constraints:
                        continue  # an earlier member of a shared memory set it
                    factors = [feature_factor.get(segments[f].feature, 1.0) for f in physical[p].feature_names]
                    out[p] = dataclasses.replace(base, pooling_factors=factors, num_poolings=None)
    return out


def default_constraints(
    model: nn.Module, constraints: Optional[Dict[str, ParameterConstraints]] = None
) -> Dict[str, ParameterConstraints]:
    """``constraints`` (on physical names) plus the sharding types each method allows for its tables (MEmCom:
    row-wise or table-wise), intersected with what the user asked, and ``BoundsCheckMode.NONE`` for tables whose ids
    are in range by construction (``TableMethod.ids_in_range``: every table the id transform feeds, whose kernel
    clamps the ids it maps and reports out-of-range ones itself, and LMA's memories) unless the user set a mode.

    Raises:
        ValueError: a constraint leaves a table no sharding type its method supports.
    """
    out = dict(constraints or {})
    for _, module in _collections(model):
        for method in module.methods().values():
            for c in method.physical_tables():
                given = out.get(c.name)
                if method.ids_in_range(c.name) and (given is None or given.bounds_check_mode is None):
                    given = dataclasses.replace(given or ParameterConstraints(), bounds_check_mode=BoundsCheckMode.NONE)
                    out[c.name] = given
                allowed = method.sharding_types(c.name)
                if allowed is None:
                    continue
                if given is None:
                    out[c.name] = ParameterConstraints(sharding_types=list(allowed))
                    continue
                types = [t for t in (given.sharding_types or allowed) if t in allowed]
                if not types:
                    raise ValueError(
                        f"{method.name} table '{c.name}': constrained to {given.sharding_types}, but it supports only "
                        f"{allowed}"
                    )
                out[c.name] = dataclasses.replace(given, sharding_types=types)
    return out


class CompressedEmbeddingShardingPlanner(EmbeddingShardingPlanner):
    """``EmbeddingShardingPlanner`` that knows the true memory and the sharding limits of compressed tables.

    It plans with ``CompressedStorageEstimator`` and ``CompressedStorageReservation``, accepts constraints on
    logical table names (``physical_constraints``), adds each method's sharding limits (``default_constraints``), and
    checks up front, on every rank, that row-wise MEmCom tables have a bucket count the world size divides.

    Args:
        topology (Topology): the cluster (world size, device, HBM/DDR caps).
        batch_size (Optional[int]): per-rank batch size for estimates.
        constraints (Optional[Dict[str, ParameterConstraints]]): keyed by logical or physical table name.
        storage_reservation (Optional[CompressedStorageReservation]): default ``CompressedStorageReservation()``.
        fused_params (Optional[Dict]): the sharders' fused params (sizes the entity weights' optimizer state).
        **kwargs: passed on to ``EmbeddingShardingPlanner``.
    """

    def __init__(
        self,
        topology: Topology,
        batch_size: Optional[int] = None,
        constraints: Optional[Dict[str, ParameterConstraints]] = None,
        storage_reservation: Optional["CompressedStorageReservation"] = None,
        fused_params: Optional[Dict] = None,
        **kwargs,  # noqa: ANN003
    ) -> None:
        self._logical_constraints = dict(constraints or {})
        self._topology_ = topology
        estimators = [
            EmbeddingPerfEstimator(topology, constraints),
            CompressedStorageEstimator(topology, constraints, fused_params),
        ]
        self._estimators_ = estimators
        enumerator = EmbeddingEnumerator(
            topology=topology, batch_size=batch_size or 512, constraints=constraints, estimator=estimators
        )
        self._enumerator_ = enumerator
        super().__init__(
            topology=topology,
            batch_size=batch_size,
            enumerator=enumerator,
            storage_reservation=storage_reservation or CompressedStorageReservation(),
            constraints=constraints,
            **kwargs,
        )

    def _prepare(self, module: nn.Module) -> None:
        """Checks buckets and rewrites logical constraints into physical ones for this model."""
        given = physical_constraints(module, self._logical_constraints)
        constraints = default_constraints(module, given)
        world_size = self._topology_.world_size
        row_wise = ShardingType.ROW_WISE.value
        for _, m in _collections(module):
            for method in m.methods().values():
                if not method.uses_entity_weights:
                    continue
                for t in method.tables:
                    assert isinstance(t, MEmComEmbeddingBagConfig)
                    if t.bucketed_hash().num_buckets % world_size == 0:
                        continue
                    asked = given.get(t.name)
                    if asked is not None and asked.sharding_types and row_wise in asked.sharding_types:
                        check_row_wise_buckets(t, world_size)  # raises: the user asked for row-wise
                    c = constraints[t.name]
                    types = [x for x in (c.sharding_types or []) if x != row_wise]
                    constraints[t.name] = dataclasses.replace(c, sharding_types=types)
        if world_size == 1:
            # One rank: row-, column- and grid-wise splits only add bucketizing and permutes; a table is whole anyway.
            for _, m in _collections(module):
                for c in m.physical_table_configs():
                    base = constraints.get(c.name)
                    if base is None or not base.sharding_types:
                        replaced = (
                            dataclasses.replace(base, sharding_types=[ShardingType.TABLE_WISE.value]) if base else None
                        )
                        constraints[c.name] = replaced or ParameterConstraints(sharding_types=["table_wise"])
        _compat.set_planner_constraints(self, self._enumerator_, self._estimators_, constraints)

    def plan(self, module: nn.Module, sharders: List[ModuleSharder[nn.Module]]) -> ShardingPlan:
        self._prepare(module)
        return super().plan(module, sharders)

    def collective_plan(
        self,
        module: nn.Module,
        sharders: Optional[List[ModuleSharder[nn.Module]]] = None,
        pg: Optional[dist.ProcessGroup] = None,
        **kwargs,  # noqa: ANN003
    ) -> ShardingPlan:
        self._prepare(module)  # on every rank, so a bad config fails everywhere with the same message
        return super().collective_plan(module, sharders, pg, **kwargs)
