# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Planner pieces: the true memory of compressed tables, constraints on logical tables, and a ready planner.

TorchRec's planner sizes a table from the tensor a sharder exposes (``shardable_parameters``). Ours expose the
physical tables (MEmCom/hash shared tables, QR's Q and R, LMA's memories), so what scales with the number of ids must
be added: MEmCom's entity weights (and their optimizer state) travel with each shard of the shared table
(``CompressedStorageEstimator``); LMA's signatures are replicated on every rank (``CompressedStorageReservation``).
"""

import dataclasses
import warnings
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.shard_estimators import EmbeddingPerfEstimator, EmbeddingStorageEstimator
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import ParameterConstraints, ShardingOption
from torchrec.distributed.types import ModuleSharder, ShardingPlan, ShardingType

from torchrec_memcom.configs import LMAEmbeddingBagConfig, MEmComEmbeddingBagConfig
from torchrec_memcom.distributed.memcom import check_row_wise_buckets
from torchrec_memcom.modules.baselines import QUOTIENT_SUFFIX, REMAINDER_SUFFIX, QREmbeddingBagCollection
from torchrec_memcom.modules.lma import LMAEmbeddingBagCollection, memory_table_name
from torchrec_memcom.modules.memcom import MEmComEmbeddingBagCollection

__all__ = [
    "CompressedEmbeddingShardingPlanner",
    "CompressedStorageEstimator",
    "CompressedStorageReservation",
    "physical_constraints",
    "signature_bytes",
]

_STATELESS = {EmbOptimType.EXACT_SGD}
_FP32 = 4


def _modules(model: nn.Module, kind: type) -> Iterator[Tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if isinstance(m, kind):
            yield name, m


def signature_bytes(model: nn.Module) -> int:
    """Bytes of LMA signatures in ``model`` (every rank holds all of them)."""
    return sum(
        t.num_embeddings * t.signature_bytes
        for _, m in _modules(model, LMAEmbeddingBagCollection)
        for t in m.embedding_bag_configs()
        if isinstance(t, LMAEmbeddingBagConfig)
    )


def _entity_state_multiplier(option: ShardingOption, fused_params: Dict) -> int:
    """Optimizer-state elements per entity weight: 0 for SGD, 1 for (row-wise) Adagrad and unknown optimizers."""
    optim = fused_params.get("optimizer")
    if optim is not None:
        return 0 if optim in _STATELESS else 1
    classes = getattr(option.tensor, "_optimizer_classes", None)
    if classes:
        return 0 if classes[0] is torch.optim.SGD else 1
    return 1


class CompressedStorageEstimator(EmbeddingStorageEstimator):
    """TorchRec's storage estimate plus MEmCom's entity weights and their optimizer state, per shard.

    A row-wise shard holding ``rows`` of the ``m`` shared rows also holds ``n_pad * rows / m`` weights (the
    co-located design); a table-wise shard holds all ``n_pad``.
    """

    def estimate(self, sharding_options: List[ShardingOption], *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().estimate(sharding_options, *args, **kwargs)
        on_device = self._topology.compute_device != "cpu"
        for option in sharding_options:
            module = option.module[1]
            if not isinstance(module, MEmComEmbeddingBagCollection):
                continue
            table = next(t for t in module.embedding_bag_configs() if t.name == option.name)
            assert isinstance(table, MEmComEmbeddingBagConfig)
            h = table.bucketed_hash()
            fused = getattr(self, "_memcom_fused_params", {}) or {}
            per_weight = _FP32 * (1 + _entity_state_multiplier(option, fused))
            for shard in option.shards:
                extra = h.padded_num_embeddings * shard.size[0] // h.num_rows * per_weight
                storage = shard.storage
                assert storage is not None
                shard.storage = dataclasses.replace(
                    storage,
                    hbm=storage.hbm + (extra if on_device else 0),
                    ddr=storage.ddr + (0 if on_device else extra),
                )


class CompressedStorageReservation(HeuristicalStorageReservation):
    """TorchRec's heuristic reservation (dense parts, buffers) plus, on every rank, the model's LMA signatures.

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
        extra = signature_bytes(module)
        if extra:
            on_device = reserved.compute_device != "cpu"
            for device in reserved.devices:
                s = device.storage
                device.storage = dataclasses.replace(
                    s, hbm=s.hbm - (extra if on_device else 0), ddr=s.ddr - (0 if on_device else extra)
                )
        return reserved


def physical_constraints(
    model: nn.Module, constraints: Optional[Dict[str, ParameterConstraints]]
) -> Dict[str, ParameterConstraints]:
    """Translates constraints written for logical tables into constraints on the tables the planner sees.

    QR table ``t`` -> ``t__q`` and ``t__r``; LMA tables -> their memory table ``<group>__memory`` (pooling factors
    repeated for each of the ``d / Z`` chunk sub-features of every member table; other fields from the group's first
    constrained table); MEmCom / hash tables keep their names. Constraints naming stock tables pass through.
    """
    out: Dict[str, ParameterConstraints] = dict(constraints or {})
    if not constraints:
        return out
    for _, m in _modules(model, QREmbeddingBagCollection):
        for t in m.embedding_bag_configs():
            if t.name in constraints:
                c = out.pop(t.name)
                out[t.name + QUOTIENT_SUFFIX] = c
                out[t.name + REMAINDER_SUFFIX] = c
    for _, m in _modules(model, LMAEmbeddingBagCollection):
        groups: Dict[str, List[LMAEmbeddingBagConfig]] = {}
        for t in m.embedding_bag_configs():
            assert isinstance(t, LMAEmbeddingBagConfig)
            groups.setdefault(t.group(), []).append(t)
        for g, members in groups.items():
            given = {t.name: out.pop(t.name) for t in members if t.name in constraints}
            if not given:
                continue
            base = next(iter(given.values()))
            factors: List[float] = []
            for t in members:
                c = given.get(t.name)
                per_feature = c.pooling_factors if c is not None and c.pooling_factors else [1.0] * t.num_features()
                factors += [pf for pf in per_feature for _ in range(t.num_chunks())]
            out[memory_table_name(g)] = dataclasses.replace(base, pooling_factors=factors, num_poolings=None)
    return out


class CompressedEmbeddingShardingPlanner(EmbeddingShardingPlanner):
    """``EmbeddingShardingPlanner`` that knows the true memory of compressed tables.

    It plans with ``CompressedStorageEstimator`` and ``CompressedStorageReservation``, accepts constraints on
    logical table names (``physical_constraints``), and checks up front, on every rank, that row-wise MEmCom tables
    have a bucket count the world size divides.

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
        self._batch_size_ = batch_size
        self._storage_estimator = CompressedStorageEstimator(topology, constraints)
        self._storage_estimator._memcom_fused_params = fused_params or {}
        enumerator = EmbeddingEnumerator(
            topology=topology,
            batch_size=batch_size or 512,
            constraints=constraints,
            estimator=[EmbeddingPerfEstimator(topology, constraints), self._storage_estimator],
        )
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
        constraints = physical_constraints(module, self._logical_constraints)
        world_size = self._topology_.world_size
        for _, m in _modules(module, MEmComEmbeddingBagCollection):
            for t in m.embedding_bag_configs():
                allowed = constraints.get(t.name)
                types = allowed.sharding_types if allowed is not None and allowed.sharding_types else None
                if types is None or ShardingType.ROW_WISE.value in types:
                    assert isinstance(t, MEmComEmbeddingBagConfig)
                    check_row_wise_buckets(t, world_size)
        self._constraints = constraints
        self._enumerator._constraints = constraints
        for estimator in self._enumerator._estimators:
            estimator._constraints = constraints

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
