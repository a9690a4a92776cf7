# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Builds, plans, shards, trains and measures one (model, method) of a layout, and runs a whole benchmark.

For every method (``stock``, then MEmCom, LMA, hashing trick, QR at ``MethodOptions.ratio`` of the same logical
tables) and every model (``ebc`` = the embedding layer alone, loss ``sum(pooled * R)`` for a fixed random ``R``;
``dlrm`` = ``torchrec.models.dlrm.DLRM`` inside ``DLRMTrain``), in one process per GPU:

1. build the model on ``meta``; 2. plan it with ``CompressedEmbeddingShardingPlanner`` under the per-rank HBM / DDR
budget (rank 0 plans; "does not fit" is the planner's error, broadcast to every rank); 3. shard it with
``DistributedModelParallel`` (tables are initialised on the device by TorchRec's TBE kernels: no host copy);
4. LMA only: fit the signatures on a batch sample shared by all ranks; 5. warm up, then time steps (forward,
backward with the fused embedding optimizer, dense optimizer), plain or through ``TrainPipelineSparseDist``, then
the host's own time per step (``measure.host_step_ms``); 6. free everything before the next method.

With ``repeats`` > 1 the methods run interleaved (stock, m1, m2, ..., stock, m1, ...), each repeat rebuilt. Profiles
come from a separate pass after every timed run (each profiled method rebuilt, warmed up, profiled, not timed): once
``torch.profiler`` has run in a process, later host-bound steps in it run slower and erratic (measured: MEmCom's
DLRM step 9.35 ms without a profiler before it, 9.8-10.7 ms after stock's profile). The profile pass also counts the
host-device synchronisations per step and where they come from (``measure.host_syncs``), and splits the host's time
per step over the parts of the embedding layer (``host_time.host_breakdown``).
"""

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import torch
import torch.distributed as dist
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.distributed.fused_params import (
    FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE,
    FUSED_PARAM_EMBEDDING_TABLE_OFFSET_TYPE,
)
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ShardingEnv
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface

from torchrec_memcom.benchmarks import data, host_time, measure, report, uvm_cache
from torchrec_memcom.benchmarks.layouts import Layout, MethodOptions, embedding_module, method_label, table_configs
from torchrec_memcom.benchmarks.planning import (
    UVM_CACHING,
    constraints_for,
    host_memory_bytes,
    make_sharders,
    make_topology,
    plan_model,
    split_caps,
    storage_reason,
)
from torchrec_memcom.convert import fit_signatures
from torchrec_memcom.distributed.cuda_graph_step import GraphCaptureError, on_capture_stream, warmup_steps_for
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.recipes.config import DenseOptimizerConfig, SparseOptimizerConfig
from torchrec_memcom.recipes.training import DistContext, combined_optimizer, fused_params

__all__ = [
    "OPTIMIZERS",
    "BenchOptions",
    "EmbeddingTrain",
    "build_model",
    "fused_params_for",
    "hbm_budget",
    "precheck",
    "run_benchmark",
    "run_method",
    "schedule",
]

OPTIMIZERS = report.OPTIMIZERS


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """Everything a run measures with, besides the layout (which the command line may override).

    Args:
        layout_name (str): the layout's name (file names, reports).
        methods (MethodOptions): how compressed tables are configured.
        ids, zipf: id distribution of the synthetic batches (``data.sample_ids``); num_batches: distinct batches
            per rank, cycled (``None``: 4, or with UVM caching on CUDA ``uvm_cache.fresh_batch_count``, so that no
            timed step finds its batch's ids in FBGEMM's cache from an earlier cycle).
        optimizer (str): ``rowwise_adagrad`` (fused EXACT_ROWWISE_ADAGRAD + dense Adagrad) or ``sgd``.
        lr (float): learning rate of both.
        sharding_type (Optional[str]): force one sharding type (default: the planner's choice).
        kernels (Optional[Tuple[str, ...]]): compute kernels the planner may choose (default: the layout's).
        cache_load_factor (float): HBM cache share of ``fused_uvm_caching`` tables.
        hbm_cap_bytes (Optional[int]): per-GPU HBM budget (planner topology and the allocator's limit).
        ddr_cap_bytes (Optional[int]): per-rank host budget of the planner (default: 90% of available / ranks).
        uvm_memory (str): ``host_mapped`` (pinned host memory, FBGEMM's ``uvm_host_mapped``) or ``managed`` (CUDA
            managed memory, FBGEMM's default) for tables the planner puts in host memory.
        pipeline (bool): train through ``TrainPipelineSparseDist``.
        cuda_graph (bool): train through ``distributed.CudaGraphTrainStep`` (one rank, CUDA: each step one CUDA
            graph replay); a method whose step cannot be captured (stock TorchRec's sharded EBC) runs eagerly, or
            through the pipeline with ``pipeline``, and its row says so (``step_mode``, ``capture_error``).
        known_length_per_key (bool): the batches' KJTs carry their per-feature id counts
            (``data.make_batches(length_per_key=True)``), as the recipes' loaders give them: no host read of the
            lengths from the device in the step (else TorchRec's input dist and the id transform read them).
        index_dtype (Optional[str]): ``int32`` or ``int64``: the TBE index type of every method, stock's too
            (TorchRec's ``embedding_table_index_type``); ``None``: each library's default (stock TorchRec int64, the
            compressed tables int32 where their ids fit: ``distributed.compressed.physical_index_dtype``).
        iters (int): timed steps per method and repeat.
        warmup (int), warmup_s (float): untimed steps per method and repeat: at least ``warmup`` steps and
            ``warmup_s`` seconds (``measure.warm_up``).
        profile (Tuple[str, ...]): methods to profile after timing them (first repeat).
        profile_steps (int), profile_dir (str): steps under the profiler, where traces go.
        fine_host_sites (bool): the profile pass's host-time table also splits the id transform, MEmCom's weights
            and update, and the lookup (``host_time.FINE_SITES``).
        seed (int): base seed of the batches and loss weights.
    """

    layout_name: str = "big"
    methods: MethodOptions = MethodOptions()
    ids: str = "powerlaw"
    zipf: float = 1.05
    num_batches: Optional[int] = None
    optimizer: str = "rowwise_adagrad"
    lr: float = 0.01
    sharding_type: Optional[str] = None
    kernels: Optional[Tuple[str, ...]] = None
    cache_load_factor: float = 0.2
    hbm_cap_bytes: Optional[int] = None
    ddr_cap_bytes: Optional[int] = None
    uvm_memory: str = "host_mapped"
    pipeline: bool = False
    cuda_graph: bool = False
    known_length_per_key: bool = False
    index_dtype: Optional[str] = None
    iters: int = 50
    warmup: int = 10
    warmup_s: float = 2.0
    profile: Tuple[str, ...] = ()
    profile_steps: int = 5
    profile_dir: str = "outputs/profiles"
    fine_host_sites: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.index_dtype not in (None, "int32", "int64"):
            raise ValueError(f"index_dtype must be 'int32', 'int64' or None, got {self.index_dtype!r}")
        if self.uvm_memory not in ("host_mapped", "managed"):
            raise ValueError(f"uvm_memory must be 'host_mapped' or 'managed', got {self.uvm_memory!r}")
        if not 0 < self.cache_load_factor <= 1:
            raise ValueError(f"cache_load_factor must be in (0, 1], got {self.cache_load_factor}")
        if self.iters < 1 or self.warmup < 0 or self.warmup_s < 0 or (self.num_batches or 1) < 1:
            raise ValueError(
                "need iters >= 1, warmup >= 0, warmup_s >= 0, num_batches >= 1; "
                f"got {self.iters, self.warmup, self.warmup_s, self.num_batches}"
            )


def fused_params_for(opts: BenchOptions, kernels: Sequence[str], device_type: str) -> Dict[str, Any]:
    """TBE kwargs of the fused optimizer (``recipes.training.fused_params``), plus host-mapped UVM tables when the
    planner may put tables in host memory on CUDA and ``opts.uvm_memory`` asks for it, and ``opts.index_dtype``."""
    params = fused_params(SparseOptimizerConfig(name=OPTIMIZERS[opts.optimizer][0], lr=opts.lr))  # type: ignore[arg-type]
    if opts.index_dtype is not None:
        dtype = getattr(torch, opts.index_dtype)
        params[FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE] = params[FUSED_PARAM_EMBEDDING_TABLE_OFFSET_TYPE] = dtype
    if device_type == "cuda" and UVM_CACHING in kernels:
        params["gather_uvm_cache_stats"] = True  # buffers for uvm_cache.cache_stats; off while timing
        if opts.uvm_memory == "host_mapped":
            params["uvm_host_mapped"] = True
    return params


def uses_uvm_cache(opts: BenchOptions, layout: Layout, device: torch.device) -> bool:
    """Whether the planner may put tables in host memory behind FBGEMM's HBM cache in this run."""
    return device.type == "cuda" and UVM_CACHING in (opts.kernels or layout.kernels)


def hbm_budget(opts: BenchOptions, device: torch.device, ranks_per_device: int = 1) -> Optional[int]:
    """A rank's HBM budget: ``opts.hbm_cap_bytes``, else the GPU's memory, shared by the ``ranks_per_device`` ranks
    on the GPU (``DistContext.ranks_per_device``); ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return (opts.hbm_cap_bytes or torch.cuda.get_device_properties(device).total_memory) // ranks_per_device


BATCH_MEMORY_SHARE = 0.1  # of the HBM budget, at most, for fresh batches


def batch_count(opts: BenchOptions, layout: Layout, device: torch.device, ranks_per_device: int = 1) -> int:
    """Distinct batches per rank: ``opts.num_batches``, else with UVM caching ``uvm_cache.fresh_batch_count`` (at
    most ``BATCH_MEMORY_SHARE`` of the rank's ``hbm_budget``: beyond it they cycle, and the report says so), else 4."""
    if opts.num_batches is not None:
        return opts.num_batches
    if not uses_uvm_cache(opts, layout, device):
        return 4
    budget = cast(int, hbm_budget(opts, device, ranks_per_device))
    fit = int(BATCH_MEMORY_SHARE * budget) // data.batch_bytes(layout)
    return max(4, min(uvm_cache.fresh_batch_count(opts.warmup, opts.iters), fit))


class EmbeddingTrain(nn.Module):
    """Model (a): the embedding layer alone; ``forward(batch) -> (loss, pooled)`` with ``loss = sum(pooled * R)``.

    ``R`` (``(B, sum of dims)``, fixed, random) is a plain attribute, not a buffer, so DMP and DDP leave it alone. It
    weighs the output's columns in the order they come (a sharded collection's keys may come in any order): a speed
    workload, like stock TorchRec's, with no copy to put them in order.
    """

    def __init__(self, ebc: EmbeddingBagCollectionInterface, loss_weights: torch.Tensor) -> None:
        super().__init__()
        self.ebc = ebc
        self._loss_weights = loss_weights

    def forward(self, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled = self.ebc(batch.sparse_features).values()
        return (pooled * self._loss_weights).sum(), pooled.detach()


def build_model(
    kind: str, tables: List[EmbeddingBagConfig], layout: Layout, device: torch.device, loss_weights: torch.Tensor
) -> Tuple[nn.Module, MemoryReport]:
    """The unsharded ``kind`` (``ebc`` or ``dlrm``) model, embedding tables on ``meta``, and its memory report."""
    ebc, report = embedding_module(tables, torch.device("meta"))
    if kind == "ebc":
        return EmbeddingTrain(ebc, loss_weights), report
    if kind != "dlrm":
        raise ValueError(f"unknown model '{kind}' (choose ebc or dlrm)")
    dlrm = DLRM(
        embedding_bag_collection=ebc,
        dense_in_features=data.NUM_DENSE,
        dense_arch_layer_sizes=list(layout.dense_arch),
        over_arch_layer_sizes=list(layout.over_arch),
        dense_device=device,
    )
    return DLRMTrain(dlrm), report


def precheck(method: str, layout: Layout, opts: BenchOptions, world_size: int) -> Optional[str]:
    """Why ``method`` cannot run with these options (deterministic, the same on every rank), or ``None``."""
    if method == "memcom" and opts.sharding_type and opts.sharding_type not in ("row_wise", "table_wise"):
        return f"MEmCom shards row_wise or table_wise only, not {opts.sharding_type}"
    if method == "memcom" and opts.sharding_type == "row_wise" and layout.num_buckets % world_size:
        return f"row-wise MEmCom needs num_buckets={layout.num_buckets} to be a multiple of the world size {world_size}"
    try:
        table_configs(method, layout, opts.methods)
    except ValueError as e:
        return str(e)
    return None


def schedule(kinds: Sequence[str], methods: Sequence[str], repeats: int) -> List[Tuple[int, str, str]]:
    """``(repeat, model, method)`` in run order: per model, the methods interleaved repeat by repeat."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return [(r, k, m) for k in kinds for r in range(repeats) for m in methods]


def _fit_lma(model: nn.Module, batches: Sequence[Batch], max_rows: int, ranks_on_host: int) -> Dict[str, float]:
    # The MinHash minima are built on the CPU; torchrun sets one thread per rank, so lend each rank its share.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, (os.cpu_count() or 1) // max(ranks_on_host, 1)))
    try:
        return fit_signatures(model, batches, max_rows=max_rows)
    finally:
        torch.set_num_threads(threads)


def run_method(
    kind: str,
    method: str,
    layout: Layout,
    opts: BenchOptions,
    ctx: DistContext,
    batches: List[Batch],
    fit_batches: List[Batch],
    loss_weights: torch.Tensor,
    profile_stem: Optional[str] = None,
) -> Dict[str, Any]:
    """Builds, plans, shards, trains and measures one (model, method); returns this rank's measurements, with
    ``status`` ``"ok"`` or ``"does not fit"`` (the planner found no plan under the memory budget: ``reason``).

    With ``profile_stem``, profiles ``opts.profile_steps`` steps after the warmup instead of timing (``profile``)."""
    device = ctx.device
    cuda = device.type == "cuda"
    out: Dict[str, Any] = {"status": "ok"}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        out["start_allocated_bytes"] = torch.cuda.memory_allocated(device)
    tables = table_configs(method, layout, opts.methods)
    out["tables"] = [{"name": t.name, "type": type(t).__name__, "num_embeddings": t.num_embeddings} for t in tables]
    t0 = time.perf_counter()
    model, report = build_model(kind, tables, layout, device, loss_weights)
    out["memory_report"] = report.to_dict()
    kernels = list(opts.kernels or layout.kernels)
    fused = fused_params_for(opts, kernels, device.type)
    sharders = make_sharders(fused, device.type, opts.methods.lma_raw_ids, opts.methods.memcom_rows_in_transform)
    local_world_size = ctx.ranks_per_host
    hbm, ddr = split_caps(
        hbm_budget(opts, device, ctx.ranks_per_device), opts.ddr_cap_bytes, host_memory_bytes(), local_world_size
    )
    out["hbm_cap_bytes"], out["ddr_cap_bytes"] = hbm, ddr
    outcome = plan_model(
        model,
        make_topology(ctx.world_size, device.type, local_world_size, hbm, ddr),
        layout.batch_size,
        constraints_for(tables, layout, opts.sharding_type, kernels, opts.cache_load_factor),
        fused,
        sharders,
        pg=dist.GroupMember.WORLD,
    )
    out["plan_s"] = time.perf_counter() - t0
    if outcome.plan is None:
        assert outcome.error is not None
        out.update(status="does not fit", reason=storage_reason(outcome.error), planner_error=outcome.error)
        return out
    out["plan_tables"], out["plan_estimate"] = outcome.tables, outcome.estimate
    t0 = time.perf_counter()
    # with CUDA graphs, on the capture stream: DDP (the dense part) keeps gradient accumulators made on this stream
    with on_capture_stream(device, enabled=opts.cuda_graph and cuda):
        dmp = DistributedModelParallel(
            module=model,
            env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
            device=device,
            plan=ctx.place(outcome.plan),
            sharders=sharders,
        )
    dense = DenseOptimizerConfig(name=OPTIMIZERS[opts.optimizer][1], lr=opts.lr)  # type: ignore[arg-type]
    optimizer = combined_optimizer(dmp, dense)
    measure.sync(device)
    out["shard_s"] = time.perf_counter() - t0
    if method == "lma" and layout.lma_fit_rows > 0:
        t0 = time.perf_counter()
        out["lma_signature_coverage"] = _fit_lma(dmp, fit_batches, layout.lma_fit_rows, local_world_size)
        out["lma_fit_s"] = time.perf_counter() - t0
    emb = measure.embedding_bytes(dmp)
    out["local_embedding_bytes"], out["local_embedding_uvm_bytes"] = emb["total"], emb["uvm"]
    out["local_dense_bytes"] = measure.dense_bytes(dmp)
    if cuda:
        out["resident_bytes"] = torch.cuda.memory_allocated(device)
        out["build_peak_bytes"] = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)

    uvm_cache.set_gathering(dmp, False)  # counted in a pass of their own, not while timing
    step = measure.make_step(dmp, optimizer, batches, opts.pipeline, opts.cuda_graph)

    def all_done(mine: bool) -> bool:
        return bool(ctx.all_reduce(torch.tensor([int(mine)]), dist.ReduceOp.MIN).item())

    # with UVM caching, the warmup stops where the batches would start a second cycle
    cap = uvm_cache.warmup_cap(len(batches), opts.warmup, opts.iters) if uses_uvm_cache(opts, layout, device) else None
    out["step_mode"] = "cuda graph" if opts.cuda_graph else "eager"
    # with CUDA graphs the warmup runs at least to the capture (its eager steps, then the capture's)
    first = max(opts.warmup, warmup_steps_for(dmp) + 1) if opts.cuda_graph else opts.warmup
    try:
        out["warmup_steps"] = measure.warm_up(step, first, opts.warmup_s, device, all_done, max_steps=cap)
    except GraphCaptureError as e:  # (one rank: no other rank waits in a collective)
        fallback = "pipelined" if opts.pipeline else "eager"
        out["step_mode"], out["capture_error"] = f"{fallback} (not capturable)", e.cause or str(e)
        step = measure.make_step(dmp, optimizer, batches, opts.pipeline)
        out["warmup_steps"] = measure.warm_up(step, opts.warmup, opts.warmup_s, device, all_done, max_steps=cap)
    out["batches"] = len(batches)
    out["fresh_batches"] = out["warmup_steps"] + opts.iters + uvm_cache.PIPELINE_AHEAD <= len(batches)
    ctx.barrier()
    if profile_stem is not None:
        out["profile"] = measure.profile_steps(step, opts.profile_steps, device, profile_stem, write=ctx.is_main)
        out["profile"]["host_syncs"] = measure.host_syncs(step, opts.profile_steps, device)
        sites = host_time.SITES + (host_time.FINE_SITES if opts.fine_host_sites else [])
        out["profile"]["host_breakdown"] = host_time.host_breakdown(step, device, sites=sites)
        return out
    out["step_ms"], out["wall_ms"] = measure.timed_steps(step, opts.iters, device)
    out["uvm_cache"] = uvm_cache.cache_stats(step, uvm_cache.cached_tbes(dmp), uvm_cache.STATS_STEPS, device)
    out["host_step_ms"] = measure.host_step_ms(step, device)
    out["host_rss_bytes"] = measure.host_rss_bytes()
    if cuda:
        out["train_peak_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_bytes"] = max(out["build_peak_bytes"], out["train_peak_bytes"])
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return out


def run_benchmark(
    layout: Layout,
    opts: BenchOptions,
    kinds: Sequence[str],
    methods: Sequence[str],
    repeats: int,
    ctx: DistContext,
    on_result: Callable[[List[Dict[str, Any]]], None],
    progress: Callable[[Sequence[Any]], Any] = lambda jobs: jobs,
) -> List[Dict[str, Any]]:
    """Runs ``schedule(kinds, methods, repeats)``, then one profile pass per method of ``opts.profile`` that ran;
    returns (on rank 0; ``[]`` elsewhere) one result row per (model, method), calling ``on_result(rows)`` on rank 0
    after every job so a crash keeps what was measured."""
    device = ctx.device
    seed = opts.seed * 1_000_003 + ctx.rank
    count = batch_count(opts, layout, device, ctx.ranks_per_device)
    batches = data.make_batches(layout, count, seed, device, opts.ids, opts.zipf, opts.known_length_per_key)
    fit_batches: List[Batch] = []
    if "lma" in methods and layout.lma_fit_rows > 0:  # the same rows on every rank: signatures are replicated
        count = -(-layout.lma_fit_rows // layout.batch_size)
        fit_batches = data.make_batches(layout, count, opts.seed + 777, device, opts.ids, opts.zipf)
    weights = data.loss_weights(layout, opts.seed * 1_000_003 + ctx.rank + 1, device)

    rows: Dict[Tuple[str, str], Dict[str, Any]] = {}
    repeats_of: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    label = {m: method_label(m, opts.methods) for m in methods}
    order = list(dict.fromkeys((k, m) for _, k, m in schedule(kinds, methods, 1)))
    status: Dict[Tuple[str, str], str] = {}  # on every rank, and the same on all (plan outcomes are broadcast)
    jobs = [(kind, method, False) for _, kind, method in schedule(kinds, methods, repeats)]
    jobs += [(kind, method, True) for kind, method in order if method in opts.profile]
    for kind, method, profiling in progress(jobs):
        key = (kind, method)
        if status.get(key, "ok") != "ok":
            continue  # skipped or does not fit: the same in every repeat
        reason = precheck(method, layout, opts, ctx.world_size)
        if reason is not None:
            status[key] = "skipped"
            rows[key] = {"model": kind, "method": method, "label": label[method], "status": "skipped", "reason": reason}
        elif profiling:
            stem = os.path.join(opts.profile_dir, f"profile_{opts.layout_name}_{kind}_{method}_w{ctx.world_size}")
            mine = run_method(kind, method, layout, opts, ctx, batches, fit_batches, weights, stem)
            measure.free_memory(device)
            profiles: List[Any] = [None] * ctx.world_size
            dist.all_gather_object(profiles, mine.get("profile"))
            if ctx.is_main and mine["status"] == "ok":
                report.attach_profile(rows[key], profiles)
        else:
            mine = run_method(kind, method, layout, opts, ctx, batches, fit_batches, weights)
            status[key] = mine["status"]
            leftover = measure.free_memory(device)
            per_rank: List[Any] = [None] * ctx.world_size
            dist.all_gather_object(per_rank, mine)
            if ctx.is_main:
                one = report.merge_ranks(kind, method, label[method], per_rank, layout)
                if leftover is not None:
                    one["allocated_after_free_bytes"] = leftover
                repeats_of.setdefault(key, []).append(one)
                rows[key] = report.merge_repeats(repeats_of[key])
        if ctx.is_main:
            ordered = [rows[k] for k in order if k in rows]
            report.add_ratios(ordered)
            on_result(ordered)
        ctx.barrier()
    return [rows[k] for k in order if k in rows] if ctx.is_main else []
