# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Training throughput and memory of sharded stock and compressed embedding tables (TorchRec DMP, one process per GPU).

For every method (``stock`` first, then MEmCom, LMA, hashing trick, QR at ``--ratio`` compression of the same logical
tables) and every model (``--model``: ``ebc`` = the embedding layer alone, ``dlrm`` = ``torchrec.models.dlrm.DLRM``
inside ``DLRMTrain``), one after another in the same process:

1. build the model on ``meta`` (``EmbeddingBagCollection`` for stock, ``CompressedEmbeddingBagCollection`` otherwise;
   tables below ``--compress-min-rows`` rows stay stock inside it, as one would deploy them);
2. plan it with ``CompressedEmbeddingShardingPlanner`` (the planner picks the sharding, with the fused kernel and
   the layout's pooling factor; ``--sharding-type`` forces one), wrap it in ``DistributedModelParallel``;
3. LMA only: fit the signatures on ``--lma-fit-rows`` rows of a batch sample shared by all ranks (``0`` leaves them
   empty; every id then takes its hashed fallback location, at the same lookup cost);
4. ``--warmup`` steps, then ``--iters`` timed steps: forward, backward and the fused embedding optimizer step
   (``--optimizer``: fused EXACT_SGD or EXACT_ROWWISE_ADAGRAD; the DLRM's MLPs get torch.optim SGD / Adagrad), plain
   or through ``TrainPipelineSparseDist`` (``--pipeline``). The ``ebc`` loss is ``sum(pooled * R)`` for a fixed random
   ``R``; the DLRM's is its BCE loss;
5. read the peak allocator memory per rank, then free everything before the next method.

Batches (``--num-batches`` per rank, cycled) are generated on the device up front, with equal per-rank batch sizes and
power-law (or uniform, ``--ids``) ids, so no data loading is timed. Step times come from CUDA events between steps
(``time.perf_counter`` on CPU); per step the slowest rank counts, and samples/s = world size x batch / median step.

Rank 0 prints a markdown table, writes the JSON (``--out``; rewritten after every method, so a crash keeps what was
measured) and a markdown file (``--md``). The JSON records the world size and device, so runs on 1 and 2 GPUs combine
into a weak-scaling table (per-rank batch fixed): ``--combine one_gpu.json two_gpus.json``.

Layouts (``--layout``): ``big`` = 8 tables x 4M rows x 128, multi-hot pooling 20, batch 16384 per rank; ``criteo`` =
26 one-hot features with Criteo-Kaggle cardinalities capped at 10M, dim 128, batch 16384 per rank (the 7 tables of
>= 100k rows are compressed); ``tiny`` = a CPU smoke test. Synthetic ids: these are speed and memory numbers only.

Usage::

    python scripts/bench_sharded.py --layout tiny --device cpu --iters 3 --warmup 1            # one process
    python -m torch.distributed.run --nproc-per-node 2 scripts/bench_sharded.py --layout tiny --device cpu
    python3 -m torch.distributed.run --nproc-per-node 1 scripts/bench_sharded.py --layout big --out outputs/big_1.json
    python3 -m torch.distributed.run --nproc-per-node 2 scripts/bench_sharded.py --layout big --out outputs/big_2.json
    python scripts/bench_sharded.py --combine outputs/big_1.json outputs/big_2.json
    python scripts/bench_sharded.py --layout criteo --model dlrm --pipeline --profile memcom
"""

import argparse
import dataclasses
import gc
import itertools
import json
import logging
import math
import os
import platform
import re
import socket
import statistics
import sys
import time
from collections import Counter
from datetime import timedelta
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torchrec
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.types import ModuleSharder, ShardedModule, ShardingEnv, ShardingPlan, ShardingType
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from tqdm import tqdm

from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    MemoryReport,
    QREmbeddingBagConfig,
)
from torchrec_memcom.convert import fit_signatures as fit_all_signatures
from torchrec_memcom.distributed import get_sharders
from torchrec_memcom.distributed.planner import CompressedEmbeddingShardingPlanner

METHODS = ["stock", "memcom", "lma", "hash", "qr"]
MODELS = ["ebc", "dlrm"]
SHARDING_TYPES = [t.value for t in ShardingType]
NUM_DENSE = 13

# Criteo Kaggle (Display Advertising Challenge) categorical cardinalities, as listed by facebookresearch/dlrm.
CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Layout:
    """Logical tables and batch shape of a benchmark (one feature per table).

    Args:
        num_embeddings (Tuple[int, ...]): rows of each table ``t<i>`` (feature ``f<i>``).
        embedding_dim (int): dim of every table (DLRM needs one dim).
        batch_size (int): rows per rank per step.
        pooling (int): ids per bag (1 = one-hot).
        compress_min_rows (int): smaller tables stay stock in every method.
        num_buckets (int): MEmCom / hash bucket count (the world size must divide it for row-wise).
        dense_arch (Tuple[int, ...]): DLRM dense MLP (last = ``embedding_dim``).
        over_arch (Tuple[int, ...]): DLRM over MLP (last = 1).
        lma_fit_rows (int): rows of the LMA signature sample.
    """

    num_embeddings: Tuple[int, ...]
    embedding_dim: int
    batch_size: int
    pooling: int
    compress_min_rows: int
    num_buckets: int
    dense_arch: Tuple[int, ...]
    over_arch: Tuple[int, ...]
    lma_fit_rows: int


LAYOUTS: Dict[str, Layout] = {
    "big": Layout((4_000_000,) * 8, 128, 16384, 20, 0, 1024, (512, 256, 128), (1024, 1024, 512, 256, 1), 1024),
    "criteo": Layout(
        tuple(min(n, 10_000_000) for n in CRITEO_KAGGLE_CARDINALITIES),
        128,
        16384,
        1,
        100_000,
        1024,
        (512, 256, 128),
        (1024, 1024, 512, 256, 1),
        16384,
    ),
    "tiny": Layout((20_000, 10_000, 5_000, 100), 64, 64, 4, 1_000, 64, (16, 64), (32, 1), 256),
}


# -- distributed setup ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(device_arg: str) -> Tuple[int, int, torch.device]:
    """Joins (or, without ``RANK`` in the environment, creates) the default process group: NCCL on CUDA, else gloo.

    Returns:
        (rank, world size, this rank's device).
    """
    if "RANK" not in os.environ:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            LOCAL_WORLD_SIZE="1",
        )
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    timeout = timedelta(minutes=30)
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _barrier(device: torch.device) -> None:
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def gather(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# -- tables, models and inputs -------------------------------------------------------------------------------------


def feature_name(i: int) -> str:
    return f"f{i}"


def table_configs(method: str, layout: Layout, args: argparse.Namespace) -> List[EmbeddingBagConfig]:
    """The layout's logical tables as ``method`` builds them (small tables stay stock).

    Raises:
        ValueError: the method cannot reach ``--ratio`` on some table (from the config's own validation).
    """
    out: List[EmbeddingBagConfig] = []
    for i, n in enumerate(layout.num_embeddings):
        common: Dict[str, Any] = dict(
            name=f"t{i}", num_embeddings=n, embedding_dim=layout.embedding_dim, feature_names=[feature_name(i)]
        )
        if method == "stock" or n < args.compress_min_rows:
            out.append(EmbeddingBagConfig(**common))
        elif method == "memcom":
            out.append(
                MEmComEmbeddingBagConfig(
                    **common, compression_ratio=args.ratio, num_buckets=_buckets(n, args.num_buckets)
                )
            )
        elif method == "hash":
            out.append(
                HashEmbeddingBagConfig(
                    **common, compression_ratio=args.ratio, num_buckets=_buckets(n, args.num_buckets)
                )
            )
        elif method == "qr":
            out.append(QREmbeddingBagConfig(**common, compression_ratio=args.ratio))
        elif method == "lma":
            out.append(
                LMAEmbeddingBagConfig(
                    **common,
                    compression_ratio=args.ratio,
                    chunk_size=args.lma_chunk_size,
                    signature_bytes=args.lma_signature_bytes,
                    memory_group="all" if args.lma_shared_memory else None,
                )
            )
        else:
            raise ValueError(f"unknown method {method}")
    return out


def _buckets(n: int, wanted: int) -> int:
    """``wanted`` buckets, or the largest power of two <= ``n`` for a table with fewer ids."""
    if n >= wanted:
        return wanted
    return 1 << (n.bit_length() - 1)


def method_label(method: str, args: argparse.Namespace) -> str:
    if method == "stock":
        return "stock EBC"
    name = {"memcom": "MEmCom", "lma": f"LMA Z={args.lma_chunk_size}", "hash": "Hash", "qr": "QR"}[method]
    return f"{name} {args.ratio:g}x"


class EmbeddingTrain(nn.Module):
    """Model (a): the embedding layer alone; ``forward(batch) -> (loss, pooled)`` with ``loss = sum(pooled * R)``.

    ``R`` (``(B, sum of dims)``, fixed, random) is a plain attribute, not a buffer, so DMP and DDP leave it alone.
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
    """The unsharded model, embedding tables on ``meta``, and its embedding module's memory report."""
    if all(type(t) is EmbeddingBagConfig for t in tables):
        ebc: EmbeddingBagCollectionInterface = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
        report = MemoryReport.stock(tables, {t.name: ebc.embedding_bags[t.name].weight for t in tables})
    else:
        ebc = CompressedEmbeddingBagCollection(tables, device=torch.device("meta"))
        report = ebc.memory_report()
    if kind == "ebc":
        return EmbeddingTrain(ebc, loss_weights), report
    dlrm = DLRM(
        embedding_bag_collection=ebc,
        dense_in_features=NUM_DENSE,
        dense_arch_layer_sizes=list(layout.dense_arch),
        over_arch_layer_sizes=list(layout.over_arch),
        dense_device=device,
    )
    return DLRMTrain(dlrm), report


def _coprime_multiplier(n: int) -> int:
    a = 2_654_435_761
    while math.gcd(a, n) != 1:
        a += 2
    return a


def sample_ids(
    n: int, count: int, args: argparse.Namespace, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``count`` ids in ``[0, n)``: uniform, or a power law ``P(rank k) ~ (k + 1)^-zipf`` whose ranks go through a
    fixed bijection of ``[0, n)`` (popular ids spread over the table, as after Criteo's hashing)."""
    if args.ids == "uniform":
        return torch.randint(0, n, (count,), generator=generator, device=device)
    u = torch.rand(count, generator=generator, device=device, dtype=torch.float64)
    a = args.zipf
    if abs(a - 1.0) < 1e-9:
        x = torch.exp(u * math.log(n + 1.0))
    else:
        b = 1.0 - a
        x = (1.0 + u * ((n + 1.0) ** b - 1.0)) ** (1.0 / b)
    rank = (x.floor().to(torch.int64) - 1).clamp_(0, n - 1)
    return (rank * _coprime_multiplier(n) + n // 3) % n


def make_batches(layout: Layout, args: argparse.Namespace, count: int, seed: int, device: torch.device) -> List[Batch]:
    """``count`` batches of ``layout.batch_size`` rows (dense features, labels, one KJT of every feature)."""
    g = torch.Generator(device=device).manual_seed(seed)
    b, p = layout.batch_size, layout.pooling
    keys = [feature_name(i) for i in range(len(layout.num_embeddings))]
    out = []
    for _ in range(count):
        values = torch.cat([sample_ids(n, b * p, args, g, device) for n in layout.num_embeddings])
        lengths = torch.full((len(keys) * b,), p, dtype=torch.int64, device=device)
        kjt = KeyedJaggedTensor(keys=keys, values=values, lengths=lengths)
        dense = torch.randn(b, NUM_DENSE, generator=g, device=device)
        labels = torch.randint(0, 2, (b,), generator=g, device=device).to(torch.float32)
        out.append(Batch(dense_features=dense, sparse_features=kjt, labels=labels))
    return out


# -- planning and sharding -----------------------------------------------------------------------------------------


class _AnyDeviceEBCSharder(EmbeddingBagCollectionSharder):
    """The stock EBC sharder, offering on CPU the sharding types it offers on CUDA (TorchRec lists row-wise types for
    CUDA only; they run on gloo too), so ``--sharding-type row_wise`` can be tried on CPU."""

    def sharding_types(self, compute_device_type: str) -> List[str]:
        return super().sharding_types("cuda")


def make_sharders(fused_params: Dict[str, Any], device: torch.device) -> List[ModuleSharder[nn.Module]]:
    """``get_sharders`` (ours + TorchRec's); on CPU with the stock EBC sharder swapped for ``_AnyDeviceEBCSharder``."""
    sharders = get_sharders(fused_params=fused_params)
    if device.type == "cpu":
        sharders = [
            _AnyDeviceEBCSharder(fused_params=fused_params) if type(s) is EmbeddingBagCollectionSharder else s
            for s in sharders
        ]
    return sharders


def fused_params_for(args: argparse.Namespace) -> Dict[str, Any]:
    if args.optimizer == "sgd":
        return {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": args.lr}
    return {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": args.lr, "eps": 1e-8}


def constraints_for(
    tables: List[EmbeddingBagConfig], layout: Layout, sharding_type: Optional[str]
) -> Dict[str, ParameterConstraints]:
    """Per logical table: the fused kernel (dense for data-parallel), the layout's pooling, an optional forced type."""
    kernel = "dense" if sharding_type == ShardingType.DATA_PARALLEL.value else "fused"
    return {
        t.name: ParameterConstraints(
            sharding_types=[sharding_type] if sharding_type else None,
            compute_kernels=[kernel],
            pooling_factors=[float(layout.pooling)] * len(t.feature_names),
        )
        for t in tables
    }


def topology_for(world_size: int, device: torch.device) -> Topology:
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    hbm = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    return Topology(world_size=world_size, compute_device=device.type, local_world_size=local, hbm_cap=hbm)


def plan_tables(plan: ShardingPlan) -> Dict[str, str]:
    """``{physical table: "sharding_type/kernel[@ranks]"}`` from a sharding plan."""
    out: Dict[str, str] = {}
    for module_plan in plan.plan.values():
        for table, ps in module_plan.items():  # type: ignore[union-attr]
            where = ""
            if ps.sharding_type in (ShardingType.TABLE_WISE.value, ShardingType.COLUMN_WISE.value) and ps.ranks:
                where = "@" + ",".join(str(r) for r in sorted(set(ps.ranks)))
            out[table] = f"{ps.sharding_type}/{ps.compute_kernel}{where}"
    return dict(sorted(out.items(), key=lambda kv: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", kv[0])]))


_SHORT = {
    "table_wise": "TW",
    "row_wise": "RW",
    "column_wise": "CW",
    "table_row_wise": "TWRW",
    "table_column_wise": "TWCW",
    "data_parallel": "DP",
    "grid_shard": "GRID",
}


def plan_summary(tables: Dict[str, str]) -> str:
    """``"TW x7, RW x2"``: count of physical tables per sharding type."""
    counts = Counter(_SHORT.get(v.split("/")[0], v.split("/")[0]) for v in tables.values())
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def make_optimizer(dmp: DistributedModelParallel, args: argparse.Namespace) -> CombinedOptimizer:
    """The fused embedding optimizers plus torch.optim (SGD or Adagrad, ``--lr``) over everything else."""
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    optimizers: List[KeyedOptimizer] = [dmp.fused_optimizer]
    if dense:

        def dense_optimizer(params: Any) -> torch.optim.Optimizer:
            if args.optimizer == "sgd":
                return torch.optim.SGD(params, lr=args.lr)
            return torch.optim.Adagrad(params, lr=args.lr, eps=1e-8)

        optimizers.append(KeyedOptimizerWrapper(dense, dense_optimizer))
    return CombinedOptimizer(optimizers)


def _storages_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: Dict[Tuple[str, int], int] = {}
    for t in tensors:
        if t.is_meta:
            continue
        s = t.untyped_storage()
        seen[(str(t.device), s.data_ptr())] = s.nbytes()
    return sum(seen.values())


def local_embedding_bytes(model: nn.Module) -> int:
    """Bytes of this rank's sharded embedding modules' parameters and buffers (weights, TBE optimizer state, LMA
    signatures), each storage counted once (MEmCom's entity-weight optimizer state is not a buffer: not counted)."""
    tops: List[Tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if isinstance(m, ShardedModule) and not any(name.startswith(p + ".") for p, _ in tops):
            tops.append((name, m))
    return _storages_bytes(itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for _, m in tops))


def fit_lma_signatures(model: nn.Module, batches: Sequence[Batch], max_rows: int) -> Dict[str, float]:
    """Fits every LMA id transform in ``model`` on the same rows on every rank; returns coverage per table."""
    coverage: Dict[str, float] = {}
    threads = torch.get_num_threads()
    # The MinHash minima are built on the CPU; torchrun sets one thread per rank, so lend each rank its share.
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(threads, (os.cpu_count() or 1) // local_world_size))
    try:
        coverage.update(fit_all_signatures(model, batches, max_rows=max_rows))
    finally:
        torch.set_num_threads(threads)
    return coverage


# -- timing --------------------------------------------------------------------------------------------------------


def timed_steps(step: Callable[[], None], iters: int, device: torch.device) -> Tuple[List[float], float]:
    """Runs ``iters`` steps; returns (ms per step, wall ms for all of them).

    On CUDA, events recorded between consecutive steps time each one on the GPU timeline (gaps included) with a
    single synchronization at the end; on CPU, ``time.perf_counter`` around each step.
    """
    _sync(device)
    t0 = time.perf_counter()
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        events[0].record()
        for i in range(iters):
            step()
            events[i + 1].record()
        torch.cuda.synchronize(device)
        times = [events[i].elapsed_time(events[i + 1]) for i in range(iters)]
    else:
        times = []
        for _ in range(iters):
            s = time.perf_counter()
            step()
            times.append((time.perf_counter() - s) * 1e3)
    return times, (time.perf_counter() - t0) * 1e3


def make_step(
    dmp: DistributedModelParallel,
    optimizer: CombinedOptimizer,
    batches: List[Batch],
    device: torch.device,
    pipelined: bool,
) -> Callable[[], None]:
    """One training step over cycled ``batches``: plain, or ``TrainPipelineSparseDist.progress``."""
    batch_iter = itertools.cycle(batches)
    if pipelined:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        pipeline = TrainPipelineSparseDist(dmp, optimizer, device)

        def pipelined_step() -> None:
            pipeline.progress(batch_iter)

        return pipelined_step

    def step() -> None:
        loss, _ = dmp(next(batch_iter))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def profile_steps(
    step: Callable[[], None], steps: int, device: torch.device, path_stem: str, rank: int
) -> Dict[str, Any]:
    """Profiles ``steps`` steps; rank 0 writes ``<stem>.trace.json`` (chrome trace) and ``<stem>.txt`` (top ops)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    if rank != 0:
        return {}
    on_gpu = device.type == "cuda"
    sort_by = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    averages = prof.key_averages()
    table = averages.table(sort_by=sort_by, row_limit=30)
    os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
    prof.export_chrome_trace(path_stem + ".trace.json")
    with open(path_stem + ".txt", "w") as f:
        f.write(table)

    def self_time(e: Any) -> float:
        if on_gpu:
            return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))
        return float(e.self_cpu_time_total)

    # On CUDA, kernels only (an op's self CUDA time, or a GPU-side annotation such as "nccl:all_to_all", repeats
    # its kernels' time); on CPU, ops by self CPU time.
    events = [
        e
        for e in averages
        if not on_gpu
        or (e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False))
    ]
    total = sum(self_time(e) for e in events) or 1.0
    top = sorted(events, key=self_time, reverse=True)[:15]
    host_us = sum(float(e.self_cpu_time_total) for e in averages if e.device_type == torch.autograd.DeviceType.CPU)
    return {
        "steps": steps,
        "wall_ms_per_step": wall_ms,
        "host_ms_per_step": host_us / 1e3 / steps,
        "gpu_busy": (total / 1e3 / steps) / wall_ms if on_gpu else None,
        "trace": path_stem + ".trace.json",
        "table": path_stem + ".txt",
        "time_basis": "GPU kernel time" if on_gpu else "self CPU time",
        "total_ms_per_step": total / 1e3 / steps,
        "top": [{"name": e.key, "count": e.count, "self_us": self_time(e), "share": self_time(e) / total} for e in top],
        "table_text": table,
    }


# -- one method ----------------------------------------------------------------------------------------------------


def run_method(
    kind: str,
    method: str,
    layout: Layout,
    args: argparse.Namespace,
    batches: List[Batch],
    fit_batches: List[Batch],
    loss_weights: torch.Tensor,
    rank: int,
    world_size: int,
    device: torch.device,
) -> Dict[str, Any]:
    """Builds, shards, trains and measures one (model, method); returns this rank's measurements."""
    out: Dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        out["start_allocated_bytes"] = torch.cuda.memory_allocated(device)
    tables = table_configs(method, layout, args)
    t0 = time.perf_counter()
    model, report = build_model(kind, tables, layout, device, loss_weights)
    fused = fused_params_for(args)
    sharders = make_sharders(fused, device)
    planner = CompressedEmbeddingShardingPlanner(
        topology=topology_for(world_size, device),
        batch_size=layout.batch_size,
        constraints=constraints_for(tables, layout, args.sharding_type),
        fused_params=fused,
    )
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    out["plan_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dmp = DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=device,
        plan=plan,
        sharders=sharders,
    )
    optimizer = make_optimizer(dmp, args)
    _sync(device)
    out["shard_s"] = time.perf_counter() - t0
    if method == "lma" and args.lma_fit_rows > 0:
        t0 = time.perf_counter()
        out["lma_signature_coverage"] = fit_lma_signatures(dmp, fit_batches, args.lma_fit_rows)
        out["lma_fit_s"] = time.perf_counter() - t0
    out["local_embedding_bytes"] = local_embedding_bytes(dmp)
    out["local_dense_bytes"] = _storages_bytes(p for _, p in in_backward_optimizer_filter(dmp.named_parameters()))
    if device.type == "cuda":
        out["resident_bytes"] = torch.cuda.memory_allocated(device)
        out["build_peak_bytes"] = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)

    step = make_step(dmp, optimizer, batches, device, args.pipeline)
    for _ in range(args.warmup):
        step()
    _barrier(device)
    out["step_ms"], out["wall_ms"] = timed_steps(step, args.iters, device)
    if device.type == "cuda":
        out["train_peak_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_bytes"] = max(out["build_peak_bytes"], out["train_peak_bytes"])
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    if method in args.profile:
        stem = os.path.join(args.profile_dir, f"profile_{args.layout}_{kind}_{method}_w{world_size}")
        out["profile"] = profile_steps(step, args.profile_steps, device, stem, rank)

    out["plan_tables"] = plan_tables(plan)
    out["memory_report"] = report.to_dict()
    out["tables"] = [{"name": t.name, "type": type(t).__name__, "num_embeddings": t.num_embeddings} for t in tables]
    return out


def free_memory(device: torch.device) -> Optional[int]:
    """Collects garbage and empties the CUDA cache; returns the bytes still allocated (CUDA) or ``None``."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated(device)
    return None


def merge_ranks(kind: str, method: str, label: str, per_rank: List[Dict[str, Any]], layout: Layout) -> Dict[str, Any]:
    """One result row from every rank's measurements (per step, the slowest rank counts)."""
    r0 = per_rank[0]
    world_size = len(per_rank)
    step_ms = [max(r["step_ms"][i] for r in per_rank) for i in range(len(r0["step_ms"]))]
    median = statistics.median(step_ms)
    wall_mean = max(r["wall_ms"] for r in per_rank) / max(len(step_ms), 1)
    report = r0["memory_report"]
    row: Dict[str, Any] = {
        "model": kind,
        "method": method,
        "label": label,
        "status": "ok",
        "world_size": world_size,
        "global_batch": world_size * layout.batch_size,
        "samples_per_s": world_size * layout.batch_size / (median / 1e3),
        "step_ms_median": median,
        "step_ms_mean": statistics.fmean(step_ms),
        "step_ms_min": min(step_ms),
        "step_ms_max": max(step_ms),
        "step_ms_wall_mean": wall_mean,
        "step_ms_per_rank_median": [statistics.median(r["step_ms"]) for r in per_rank],
        "step_ms_all": step_ms,
        "report_bytes": report["total_bytes"],
        "report_stock_bytes": report["stock_bytes"],
        "compression_ratio": report["compression_ratio"],
        "memory_report": report,
        "local_embedding_bytes_per_rank": [r["local_embedding_bytes"] for r in per_rank],
        "local_embedding_bytes_max": max(r["local_embedding_bytes"] for r in per_rank),
        "local_dense_bytes_per_rank": [r["local_dense_bytes"] for r in per_rank],
        "plan_s": max(r["plan_s"] for r in per_rank),
        "shard_s": max(r["shard_s"] for r in per_rank),
        "plan_tables": r0["plan_tables"],
        "plan_summary": plan_summary(r0["plan_tables"]),
        "tables": r0["tables"],
    }
    keys = ("peak_bytes", "train_peak_bytes", "build_peak_bytes", "resident_bytes", "peak_reserved_bytes")
    for key in (*keys, "start_allocated_bytes"):
        if key in r0:
            row[f"{key}_per_rank"] = [r[key] for r in per_rank]
            row[f"{key}_max"] = max(r[key] for r in per_rank)
    if "lma_signature_coverage" in r0:
        row["lma_signature_coverage"] = r0["lma_signature_coverage"]
        row["lma_fit_s"] = max(r["lma_fit_s"] for r in per_rank)
    if r0.get("profile"):
        row["profile"] = r0["profile"]
    return row


def add_ratios(results: List[Dict[str, Any]]) -> None:
    """Throughput and memory of each row relative to the stock row of the same model (same run)."""
    stock = {r["model"]: r for r in results if r["method"] == "stock" and r["status"] == "ok"}
    for r in results:
        base = stock.get(r["model"])
        if r["status"] != "ok" or base is None:
            continue
        r["throughput_vs_stock"] = r["samples_per_s"] / base["samples_per_s"]
        r["report_bytes_vs_stock"] = r["report_bytes"] / base["report_bytes"]
        if "peak_bytes_max" in r and "peak_bytes_max" in base:
            r["peak_bytes_vs_stock"] = r["peak_bytes_max"] / base["peak_bytes_max"]
        r["local_embedding_bytes_vs_stock"] = r["local_embedding_bytes_max"] / max(base["local_embedding_bytes_max"], 1)


# -- reporting -----------------------------------------------------------------------------------------------------


def _bytes(b: Optional[float]) -> str:
    if b is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


def _x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def markdown_table(results: List[Dict[str, Any]]) -> str:
    header = [
        "model",
        "method",
        "samples/s",
        "step ms (median)",
        "throughput vs stock",
        "peak mem/rank (max)",
        "peak vs stock",
        "emb bytes/rank (max)",
        "emb bytes (report)",
        "report vs stock",
        "plan",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        if r["status"] != "ok":
            cells = [r["model"], r["label"], "skipped: " + r["reason"].splitlines()[0][:150]] + [""] * (len(header) - 3)
        else:
            cells = [
                r["model"],
                r["label"],
                f"{r['samples_per_s']:,.0f}",
                f"{r['step_ms_median']:.2f}",
                _x(r.get("throughput_vs_stock")),
                _bytes(r.get("peak_bytes_max")),
                _x(r.get("peak_bytes_vs_stock")),
                _bytes(r["local_embedding_bytes_max"]),
                _bytes(r["report_bytes"]),
                _x(r.get("report_bytes_vs_stock")),
                r["plan_summary"],
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(payload: Dict[str, Any]) -> str:
    env, cfg = payload["environment"], payload["config"]
    layout = cfg["layout_spec"]
    lines = [
        f"# Sharded embedding benchmark: layout `{cfg['layout']}`",
        "",
        f"- {env['world_size']} x {env['device_name']} ({env['backend']}), torch {env['torch']}, "
        f"torchrec {env['torchrec']}, fbgemm_gpu {env['fbgemm_gpu']}",
        f"- {len(layout['num_embeddings'])} tables, dim {layout['embedding_dim']}, "
        f"{sum(layout['num_embeddings']):,} logical rows; batch {layout['batch_size']} per rank, pooling "
        f"{layout['pooling']}; ids {cfg['ids']}" + (f" (zipf {cfg['zipf']})" if cfg["ids"] == "powerlaw" else ""),
        f"- compression {cfg['ratio']:g}x on tables >= {cfg['compress_min_rows']:,} rows; fused "
        f"{'EXACT_SGD' if cfg['optimizer'] == 'sgd' else 'EXACT_ROWWISE_ADAGRAD'} (lr {cfg['lr']}); "
        f"sharding {cfg['sharding_type'] or 'planner'}; pipeline {cfg['pipeline']}; "
        f"{cfg['iters']} timed steps after {cfg['warmup']} warmup",
        "- samples/s = world size x batch / median step time (slowest rank per step); peak = max over ranks of "
        "torch.cuda.max_memory_allocated; emb/rank = this rank's embedding parameters, buffers and TBE optimizer "
        "state; report = the whole embedding layer by `memory_report()`. Synthetic ids: speed and memory only.",
    ]
    base = next((r for r in payload["results"] if "start_allocated_bytes_max" in r), None)
    if base is not None:
        lines.append(
            f"- peaks include {_bytes(base['start_allocated_bytes_max'])} allocated before the first model was built "
            "(input batches, loss weights, library workspaces)."
        )
    lines += [
        "",
        markdown_table(payload["results"]),
        "",
        "## Plans",
        "",
    ]
    for r in payload["results"]:
        if r["status"] == "ok":
            plan = ", ".join(f"{t}: {v}" for t, v in r["plan_tables"].items())
            lines.append(f"- {r['model']} / {r['label']}: {plan}")
    for r in payload["results"]:
        cov = r.get("lma_signature_coverage")
        if cov:
            mean = sum(cov.values()) / len(cov)
            lines.append(
                f"\nLMA ({r['model']}): ids with a signature after fitting on {cfg['lma_fit_rows']} rows: mean "
                f"{mean:.1%} over {len(cov)} tables ({r['lma_fit_s']:.1f} s)."
            )
        prof = r.get("profile")
        if prof:
            lines += [
                f"\n## Profile: {r['model']} / {r['label']} ({prof['time_basis']}: "
                f"{prof['total_ms_per_step']:.2f} ms per step over {prof['steps']} steps, vs "
                f"{r['step_ms_median']:.2f} ms step time; under the profiler: wall {prof['wall_ms_per_step']:.2f} ms, "
                f"host (self CPU) {prof['host_ms_per_step']:.2f} ms"
                + (f", GPU busy {prof['gpu_busy']:.0%}" if prof.get("gpu_busy") is not None else "")
                + " per step)",
                "",
            ]
            lines += ["| op / kernel | calls | self ms | share |", "|---|---|---|---|"]
            for e in prof["top"]:
                name = e["name"].replace("|", "\\|")[:90]
                lines.append(f"| `{name}` | {e['count']} | {e['self_us'] / 1e3:.2f} | {e['share']:.1%} |")
            lines.append(f"\nFull table: `{prof['table']}`; trace: `{prof['trace']}`.")
    return "\n".join(lines) + "\n"


def write_outputs(payload: Dict[str, Any], args: argparse.Namespace) -> None:
    for path, text in ((args.out, json.dumps(payload, indent=2)), (args.md, markdown_report(payload))):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def environment(device: torch.device, world_size: int) -> Dict[str, Any]:
    import fbgemm_gpu

    return {
        "world_size": world_size,
        "backend": dist.get_backend(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_memory_bytes": torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "?"),
        "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "?"),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def combine(paths: Sequence[str]) -> str:
    """Weak-scaling table: samples/s of each (model, method) in every run, relative to the run with fewest ranks."""
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    runs.sort(key=lambda r: r["environment"]["world_size"])
    base = runs[0]
    w0 = base["environment"]["world_size"]
    head = ["model", "method"]
    for r in runs:
        env = r["environment"]
        head.append(f"{env['world_size']} x {env['device_name']} samples/s")
    for r in runs[1:]:
        w = r["environment"]["world_size"]
        head += [f"speedup {w}/{w0}", f"weak-scaling eff. {w}/{w0}"]
    lines = [
        f"Weak scaling (per-rank batch {base['config']['layout_spec']['batch_size']}, layout "
        f"`{base['config']['layout']}`); efficiency = speedup / rank ratio.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in runs[1:]:
        if r["environment"]["device_name"] != base["environment"]["device_name"]:
            lines.insert(1, "WARNING: the runs used different devices; compare timings from one device kind only")
        for key in ("layout_spec", "ratio", "optimizer", "ids", "zipf", "sharding_type", "pipeline"):
            if r["config"].get(key) != base["config"].get(key):
                a, b = base["config"].get(key), r["config"].get(key)
                lines.insert(1, f"WARNING: the runs differ in {key}: {a} vs {b}")
    index = [{(x["model"], x["method"]): x for x in r["results"] if x["status"] == "ok"} for r in runs]
    keys = list(dict.fromkeys(k for idx in index for k in idx))
    for key in keys:
        cells = [key[0], index[0][key]["label"] if key in index[0] else key[1]]
        for idx in index:
            cells.append(f"{idx[key]['samples_per_s']:,.0f}" if key in idx else "-")
        for r, idx in zip(runs[1:], index[1:]):
            w = r["environment"]["world_size"]
            if key in idx and key in index[0]:
                s = idx[key]["samples_per_s"] / index[0][key]["samples_per_s"]
                cells += [f"{s:.2f}x", f"{s / (w / w0):.0%}"]
            else:
                cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="big", help="logical tables and batch shape")
    p.add_argument("--model", choices=[*MODELS, "both"], default="both", help="embedding layer alone, DLRM, or both")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, run in this order (stock first)")
    p.add_argument("--ratio", type=float, default=16.0, help="compression ratio of every compressed table")
    p.add_argument("--compress-min-rows", type=int, default=None, help="smaller tables stay stock (layout default)")
    p.add_argument("--num-buckets", type=int, default=None, help="MEmCom / hash buckets (layout default)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per rank per step (layout default)")
    p.add_argument("--pooling", type=int, default=None, help="ids per bag (layout default)")
    p.add_argument("--ids", choices=["powerlaw", "uniform"], default="powerlaw", help="id distribution")
    p.add_argument("--zipf", type=float, default=1.05, help="power-law exponent of id popularity")
    p.add_argument("--num-batches", type=int, default=4, help="distinct batches per rank, cycled")
    p.add_argument("--optimizer", choices=["sgd", "rowwise_adagrad"], default="sgd", help="fused embedding optimizer")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (embeddings and dense)")
    p.add_argument("--sharding-type", choices=SHARDING_TYPES, default=None, help="force one type (default: planner)")
    p.add_argument("--pipeline", action="store_true", help="train through TrainPipelineSparseDist")
    p.add_argument("--iters", type=int, default=50, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per method")
    p.add_argument("--lma-chunk-size", type=int, default=16, help="LMA chunk width Z")
    p.add_argument("--lma-signature-bytes", type=int, default=8, help="LMA signature bytes per id (4, 8 or 16)")
    p.add_argument(
        "--lma-shared-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="LMA: one memory shared by all compressed tables (as in the paper)",
    )
    p.add_argument(
        "--lma-fit-rows", type=int, default=None, help="rows of the LMA signature sample (layout default; 0 = empty)"
    )
    p.add_argument(
        "--profile", default="", help="comma-separated methods to profile after timing them (host time, GPU busy)"
    )
    p.add_argument("--profile-steps", type=int, default=5, help="steps under the profiler")
    p.add_argument("--profile-dir", default=None, help="where traces and tables go (default: next to --out)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/bench_sharded.json", help="JSON output (rank 0)")
    p.add_argument("--md", default="outputs/bench_sharded.md", help="markdown output (rank 0)")
    p.add_argument("--verbose", action="store_true", help="keep TorchRec's planner warnings")
    p.add_argument("--combine", nargs="+", metavar="JSON", help="print the scaling table of earlier runs and exit")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.profile = [m.strip() for m in args.profile.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {METHODS}")
    if args.profile_dir is None:
        args.profile_dir = os.path.join(os.path.dirname(args.out), "profiles")
    if "stock" in args.methods:  # stock first: the ratios are taken against it
        args.methods = ["stock", *[m for m in args.methods if m != "stock"]]
    return args


def resolve_layout(args: argparse.Namespace) -> Layout:
    """The chosen layout with the command line's overrides applied (and written back into ``args``)."""
    layout = LAYOUTS[args.layout]
    overrides = {
        "batch_size": args.batch_size,
        "pooling": args.pooling,
        "compress_min_rows": args.compress_min_rows,
        "num_buckets": args.num_buckets,
        "lma_fit_rows": args.lma_fit_rows,
    }
    layout = dataclasses.replace(layout, **{k: v for k, v in overrides.items() if v is not None})
    for k in overrides:
        setattr(args, k, getattr(layout, k))
    return layout


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.combine:
        print(combine(args.combine))
        return
    layout = resolve_layout(args)
    if not args.verbose:  # per-table "no dense kernel for data_parallel" notes and the Topology constructor warning
        logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    rank, world_size, device = init_distributed(args.device)
    if args.num_buckets % world_size != 0:
        raise SystemExit(f"--num-buckets {args.num_buckets} must be a multiple of the world size {world_size}")
    kinds = MODELS if args.model == "both" else [args.model]
    batches = make_batches(layout, args, args.num_batches, seed=args.seed * 1_000_003 + rank, device=device)
    fit_batches: List[Batch] = []
    if "lma" in args.methods and args.lma_fit_rows > 0:  # same rows on every rank: signatures are replicated
        fit_batches = make_batches(
            layout, args, -(-args.lma_fit_rows // layout.batch_size), seed=args.seed + 777, device=device
        )
    total_dim = layout.embedding_dim * len(layout.num_embeddings)
    g = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + rank + 1)
    loss_weights = torch.randn(layout.batch_size, total_dim, generator=g, device=device)

    payload: Dict[str, Any] = {
        "config": {**vars(args), "layout_spec": dataclasses.asdict(layout)},
        "environment": environment(device, world_size),
        "results": [],
    }
    results: List[Dict[str, Any]] = payload["results"]
    jobs = [(k, m) for k in kinds for m in args.methods]
    for kind, method in tqdm(jobs, desc="methods", unit="run", disable=rank != 0, file=sys.stdout):
        label = method_label(method, args)
        reason = None
        if method == "memcom" and args.sharding_type and args.sharding_type not in ("row_wise", "table_wise"):
            reason = f"MEmCom shards row_wise or table_wise only, not {args.sharding_type}"
        else:
            try:  # deterministic, identical on every rank, and before any collective: safe to skip
                table_configs(method, layout, args)
            except ValueError as e:
                reason = str(e)
        if reason is not None:
            results.append({"model": kind, "method": method, "label": label, "status": "skipped", "reason": reason})
            continue
        mine = run_method(kind, method, layout, args, batches, fit_batches, loss_weights, rank, world_size, device)
        leftover = free_memory(device)
        per_rank = gather(mine)
        if rank == 0:
            row = merge_ranks(kind, method, label, per_rank, layout)
            if leftover is not None:
                row["allocated_after_free_bytes"] = leftover
            results.append(row)
            add_ratios(results)
            write_outputs(payload, args)
        _barrier(device)

    if rank == 0:
        add_ratios(results)
        write_outputs(payload, args)
        print()
        print(markdown_report(payload))
        print(f"wrote {args.out} and {args.md}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
