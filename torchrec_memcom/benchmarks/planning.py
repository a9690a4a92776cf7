# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Planning for the benchmarks: sharders, constraints, the topology under a memory budget, a plan that reports
"does not fit" instead of failing, and what the planner chose (sharding types, kernels, per-rank estimates).

Everything here runs without GPUs: ``Topology(compute_device="cuda", hbm_cap=..., ddr_cap=...)`` plans for CUDA on
any machine, which is how the tests check that stock tables beyond the HBM budget go to ``fused_uvm_caching`` while
the compressed ones stay in HBM.
"""

import dataclasses
import re
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError, ShardingOption, Stats
from torchrec.distributed.types import CacheParams, ModuleSharder, ShardingPlan, ShardingType
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.benchmarks.layouts import Layout
from torchrec_memcom.distributed import get_sharders
from torchrec_memcom.distributed.planner import CompressedEmbeddingShardingPlanner

__all__ = [
    "UVM_CACHING",
    "PlanOutcome",
    "constraints_for",
    "host_memory_bytes",
    "kernel_counts",
    "make_sharders",
    "make_topology",
    "plan_model",
    "plan_summary",
    "plan_tables",
    "split_caps",
    "storage_reason",
]

UVM_CACHING = "fused_uvm_caching"
GB = 10**9


class _AnyDeviceEBCSharder(EmbeddingBagCollectionSharder):
    """The stock EBC sharder, offering on CPU the sharding types it offers on CUDA (TorchRec lists row-wise types for
    CUDA only; they run on gloo too), so ``--sharding-type row_wise`` can be tried on CPU."""

    def sharding_types(self, compute_device_type: str) -> List[str]:
        return super().sharding_types("cuda")


def make_sharders(
    fused_params: Dict[str, Any],
    device_type: str,
    lma_raw_ids: Optional[bool] = None,
    memcom_rows_in_transform: bool = True,
) -> List[ModuleSharder[nn.Module]]:
    """``get_sharders(fused_params, lma_raw_ids, memcom_rows_in_transform)``; on CPU with the stock EBC sharder
    swapped for one offering every type."""
    sharders = get_sharders(
        fused_params=fused_params, lma_raw_ids=lma_raw_ids, memcom_rows_in_transform=memcom_rows_in_transform
    )
    if device_type != "cpu":
        return sharders
    return [
        _AnyDeviceEBCSharder(fused_params=fused_params) if type(s) is EmbeddingBagCollectionSharder else s
        for s in sharders
    ]


def constraints_for(
    tables: Sequence[EmbeddingBagConfig],
    layout: Layout,
    sharding_type: Optional[str] = None,
    kernels: Optional[Sequence[str]] = None,
    cache_load_factor: Optional[float] = None,
) -> Dict[str, ParameterConstraints]:
    """Per logical table: the layout's pooling factor, the compute kernels the planner may choose (``None``: every
    kernel the sharders offer; a forced ``data_parallel`` takes ``dense``), an optional forced sharding type, and
    the HBM cache share of ``fused_uvm_caching`` tables (``cache_load_factor``, the planner's and FBGEMM's)."""
    if sharding_type == ShardingType.DATA_PARALLEL.value:
        kernels = ["dense"]
    cache = None
    if cache_load_factor is not None and (kernels is None or UVM_CACHING in kernels):
        cache = CacheParams(load_factor=cache_load_factor)
    return {
        t.name: ParameterConstraints(
            sharding_types=[sharding_type] if sharding_type else None,
            compute_kernels=list(kernels) if kernels is not None else None,
            pooling_factors=[float(layout.pooling)] * len(t.feature_names),
            cache_params=cache,
        )
        for t in tables
    }


def host_memory_bytes(meminfo: str = "/proc/meminfo") -> Optional[int]:
    """``MemAvailable`` of this host in bytes (``None`` where ``/proc/meminfo`` has none)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def make_topology(
    world_size: int,
    compute_device: str,
    local_world_size: Optional[int] = None,
    hbm_cap: Optional[int] = None,
    ddr_cap: Optional[int] = None,
) -> Topology:
    """TorchRec's topology; caps are bytes per rank (``None``: TorchRec's defaults, 32 GiB HBM / 128 GiB DDR)."""
    return Topology(
        world_size=world_size,
        compute_device=compute_device,
        local_world_size=local_world_size or world_size,
        hbm_cap=hbm_cap,
        ddr_cap=ddr_cap,
    )


class _Recorder(Stats):
    """Keeps the sharding options of the plan the planner chose (TorchRec hands them to its ``Stats``)."""

    def __init__(self) -> None:
        self.best_plan: List[ShardingOption] = []

    def log(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102 (Stats.log takes keywords in every version)
        self.best_plan = list(kwargs.get("best_plan") or [])


@dataclasses.dataclass
class PlanOutcome:
    """A plan, or why there is none.

    Attributes:
        plan: the sharding plan (``None`` if the planner found none).
        error: the planner's message when it found none (a ``PlannerError``: the tables do not fit, or constraints).
        tables: ``{physical table: "sharding_type/kernel[@ranks]"}``.
        estimate: the planner's per-rank estimates for the chosen plan: ``perf_ms_per_rank`` (forward + backward
            compute and comms), ``hbm_bytes_per_rank`` and ``ddr_bytes_per_rank`` (tables and optimizer state).
    """

    plan: Optional[ShardingPlan]
    error: Optional[str] = None
    tables: Dict[str, str] = dataclasses.field(default_factory=dict)
    estimate: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _estimate(best_plan: List[ShardingOption], world_size: int) -> Dict[str, Any]:
    perf = [0.0] * world_size
    hbm = [0] * world_size
    ddr = [0] * world_size
    for option in best_plan:
        for shard in option.shards:
            r = shard.rank
            if r is None or not 0 <= r < world_size:
                continue
            if shard.perf is not None:
                perf[r] += float(shard.perf.total)
            if shard.storage is not None:
                hbm[r] += int(shard.storage.hbm)
                ddr[r] += int(shard.storage.ddr)
    return {
        "perf_ms_per_rank": perf,
        "perf_ms_max": max(perf),
        "hbm_bytes_per_rank": hbm,
        "ddr_bytes_per_rank": ddr,
    }


def plan_model(
    model: nn.Module,
    topology: Topology,
    batch_size: int,
    constraints: Dict[str, ParameterConstraints],
    fused_params: Dict[str, Any],
    sharders: List[ModuleSharder[nn.Module]],
    pg: Optional[dist.ProcessGroup] = None,
) -> PlanOutcome:
    """Plans ``model`` with ``CompressedEmbeddingShardingPlanner``; a ``PlannerError`` becomes ``outcome.error``.

    With ``pg``, rank 0 plans and broadcasts the outcome (plan or error) to every rank, so all ranks agree and none
    waits forever on a rank whose planner failed; any other exception is raised on every rank.
    """
    outcome: List[Any] = [None]
    rank = dist.get_rank(pg) if pg is not None else 0
    if rank == 0:
        recorder = _Recorder()
        planner = CompressedEmbeddingShardingPlanner(
            topology=topology,
            batch_size=batch_size,
            constraints=constraints,
            fused_params=fused_params,
            stats=[recorder],
        )
        try:
            plan = planner.plan(model, sharders)
            outcome[0] = PlanOutcome(plan, None, plan_tables(plan), _estimate(recorder.best_plan, topology.world_size))
        except PlannerError as e:
            outcome[0] = PlanOutcome(None, str(e))
        except Exception as e:  # noqa: BLE001 (re-raised on every rank below)
            outcome[0] = e
    if pg is not None:
        dist.broadcast_object_list(outcome, src=dist.get_global_rank(pg, 0), group=pg)
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


_STORAGE = r"Storage\(hbm = ([\d.]+) GB, ddr = ([\d.]+) GB"


def storage_reason(message: str) -> str:
    """One line from a planner error: ``"...: needs HBM x / DDR y GiB, has HBM a / DDR b GiB ..."`` when the message
    states them (TorchRec's "GB" are GiB, rounded to 3 decimals), else its first line."""
    need = re.search(r"storage requirement for model parallel: " + _STORAGE, message)
    have = re.search(r"storage available for model parallel: " + _STORAGE, message)
    first = message.strip().splitlines()[0].rstrip(" .") if message.strip() else "the planner found no plan"
    if not (need and have):
        return first
    return (
        f"{first}: needs HBM {need[1]} / DDR {need[2]} GiB, has HBM {have[1]} / DDR {have[2]} GiB (all ranks, "
        "after reservations)"
    )


def _natural(name: str) -> List[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def plan_tables(plan: ShardingPlan) -> Dict[str, str]:
    """``{physical table: "sharding_type/kernel[@ranks]"}`` from a sharding plan (ranks for table/column-wise)."""
    out: Dict[str, str] = {}
    for module_plan in plan.plan.values():
        for table, ps in module_plan.items():  # type: ignore[union-attr]
            where = ""
            if ps.sharding_type in (ShardingType.TABLE_WISE.value, ShardingType.COLUMN_WISE.value) and ps.ranks:
                where = "@" + ",".join(str(r) for r in sorted(set(ps.ranks)))
            out[table] = f"{ps.sharding_type}/{ps.compute_kernel}{where}"
    return dict(sorted(out.items(), key=lambda kv: _natural(kv[0])))


_SHORT = {
    "table_wise": "TW",
    "row_wise": "RW",
    "column_wise": "CW",
    "table_row_wise": "TWRW",
    "table_column_wise": "TWCW",
    "data_parallel": "DP",
    "grid_shard": "GRID",
}
_SHORT_KERNEL = {"fused": "", "dense": "", UVM_CACHING: "UVM$", "fused_uvm": "UVM"}


def plan_summary(tables: Dict[str, str]) -> str:
    """``"TW x7, RW x2, TW/UVM$ x2"``: physical tables per sharding type (and kernel, where not HBM-resident)."""

    def key(v: str) -> str:
        kind, kernel = v.split("@")[0].split("/")
        k = _SHORT_KERNEL.get(kernel, kernel)
        return _SHORT.get(kind, kind) + (f"/{k}" if k else "")

    counts: Counter = Counter(key(v) for v in tables.values())
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def kernel_counts(tables: Dict[str, str]) -> Dict[str, int]:
    """Physical tables per compute kernel."""
    return dict(Counter(v.split("@")[0].split("/")[1] for v in tables.values()))


def split_caps(
    hbm_cap: Optional[int], ddr_cap: Optional[int], host_bytes: Optional[int], local_world_size: int
) -> Tuple[Optional[int], Optional[int]]:
    """Per-rank (HBM, DDR) budgets: ``hbm_cap`` as given; ``ddr_cap`` as given, else 90% of the host's available
    memory shared by the ``local_world_size`` ranks of this host, else TorchRec's default (``None``)."""
    if ddr_cap is None and host_bytes is not None:
        ddr_cap = int(0.9 * host_bytes) // max(local_world_size, 1)
    return hbm_cap, ddr_cap
