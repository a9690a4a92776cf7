# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Training steps, their timing and profile, and the memory of a sharded model.

CUDA-only pieces are marked and small: CUDA events for step times, ``torch.cuda`` memory statistics, and FBGEMM's
``is_uvm_tensor`` to tell host-resident (UVM) table storage from HBM.
"""

import collections
import gc
import itertools
import os
import time
import traceback
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ShardedModule
from torchrec.optim.keyed import CombinedOptimizer
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_memcom.benchmarks.trace_ops import idle_summary
from torchrec_memcom.distributed.cuda_graph_step import CudaGraphTrainStep

__all__ = [
    "dense_bytes",
    "embedding_bytes",
    "free_memory",
    "host_rss_bytes",
    "host_step_ms",
    "host_syncs",
    "make_step",
    "profile_steps",
    "sync",
    "timed_steps",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    dmp: DistributedModelParallel,
    optimizer: CombinedOptimizer,
    batches: Sequence[Batch],
    pipelined: bool,
    cuda_graph: bool = False,
) -> Callable[[], None]:
    """One training step over cycled ``batches`` (the model returns ``(loss, ...)``): forward, backward (the fused
    embedding optimizer runs inside it) and the dense optimizer; or ``TrainPipelineSparseDist.progress``
    (``pipelined``); or, with ``cuda_graph`` (before ``pipelined``), a ``distributed.CudaGraphTrainStep`` replay (its
    first calls warm up and capture; a step that cannot be captured raises ``GraphCaptureError`` there)."""
    batch_iter = itertools.cycle(batches)
    if cuda_graph:
        graphed = CudaGraphTrainStep(dmp, optimizer)
        return lambda: graphed(next(batch_iter))
    if pipelined:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        pipeline = TrainPipelineSparseDist(dmp, optimizer, batches[0].dense_features.device)
        return lambda: pipeline.progress(batch_iter)

    def step() -> None:
        loss, _ = dmp(next(batch_iter))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def warm_up(
    step: Callable[[], None],
    min_steps: int,
    min_seconds: float,
    device: torch.device,
    all_done: Callable[[bool], bool] = lambda done: done,
    chunk: int = 10,
    max_steps: Optional[int] = None,
) -> int:
    """Runs ``min_steps`` steps (the first ones compile kernels), then more in chunks of ``chunk`` until
    ``min_seconds`` have passed since (synchronised wall time) or ``max_steps`` would be passed; returns the steps
    run. ``all_done(mine)`` tells whether every rank is done, so that all ranks run the same number of steps (their
    collectives must match).

    A fixed count of a few steps is too short: after 5 warmup steps the first 6 timed DLRM steps ran 10-20% slower
    than the rest in every method (H200), and a 2 ms step needs hundreds of steps to reach the same time.
    """
    done = 0
    for _ in range(min_steps):
        step()
        done += 1
    sync(device)
    t0 = time.perf_counter()
    while True:
        sync(device)
        capped = max_steps is not None and done + chunk > max_steps
        if all_done(capped or time.perf_counter() - t0 >= min_seconds):
            return done
        for _ in range(chunk):
            step()
            done += 1


def timed_steps(step: Callable[[], None], iters: int, device: torch.device) -> Tuple[List[float], float]:
    """Runs ``iters`` steps; returns (ms per step, wall ms for all of them).

    On CUDA, events recorded between consecutive steps time each one on the GPU timeline (gaps included) with a
    single synchronization at the end; on CPU, ``time.perf_counter`` around each step.
    """
    sync(device)
    t0 = time.perf_counter()
    if device.type == "cuda":  # CUDA only
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


def host_step_ms(step: Callable[[], None], device: torch.device, rounds: int = 10, per_round: int = 4) -> List[float]:
    """The host's own time per step: ``rounds`` times, synchronise, then time ``per_round`` calls of ``step`` with
    ``time.perf_counter`` (ms each).

    Right after a synchronisation the GPU's queue is empty, so a call returns as soon as the host has launched its
    work: its time is the host's (Python, launches, and any waits of the step's own synchronisations), not the GPU's.
    The profiler's self-CPU time overstates it (measured: 2.5x for a 1.4 ms step). ``per_round`` stays well below the
    launches the GPU's queue holds (~1,000; a step launches 30-300 kernels). On CPU the step runs synchronously: its
    time is the whole step's.
    """
    times: List[float] = []
    for _ in range(rounds):
        sync(device)
        for _ in range(per_round):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
    sync(device)
    return times


def profile_steps(
    step: Callable[[], None], steps: int, device: torch.device, path_stem: str, write: bool
) -> Dict[str, Any]:
    """Profiles ``steps`` steps: host time (self CPU time of every op), wall time, GPU busy (kernel time / wall) and
    the top ops; with ``write``, saves ``<stem>.trace.json`` (chrome trace) and ``<stem>.txt`` (op table), whose
    paths (not contents) go in the result."""
    on_gpu = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_gpu:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    averages = prof.key_averages()
    if write:
        os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
        prof.export_chrome_trace(path_stem + ".trace.json")
        with open(path_stem + ".txt", "w") as f:
            f.write(averages.table(sort_by="self_cuda_time_total" if on_gpu else "self_cpu_time_total", row_limit=40))

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
    host_events = [e for e in averages if e.device_type == torch.autograd.DeviceType.CPU]
    host_us = sum(float(e.self_cpu_time_total) for e in host_events)
    host_top = sorted(host_events, key=lambda e: float(e.self_cpu_time_total), reverse=True)[:10]
    return {
        "steps": steps,
        "wall_ms_per_step": wall_ms,
        "host_ms_per_step": host_us / 1e3 / steps,
        "gpu_busy": (total / 1e3 / steps) / wall_ms if on_gpu else None,
        "time_basis": "GPU kernel time" if on_gpu else "self CPU time",
        "total_ms_per_step": total / 1e3 / steps,
        # what the host launched on the GPU per step (kernels, Triton's included, copies and memsets): a launch costs
        # host time whatever its size, so in a host-bound step this count, unlike host ms, does not vary by machine
        "gpu_ops_per_step": sum(e.count for e in events) / steps if on_gpu else None,
        "top": [{"name": e.key, "count": e.count, "self_us": self_time(e), "share": self_time(e) / total} for e in top],
        "host_top": [
            {
                "name": e.key,
                "count": e.count,
                "self_us": float(e.self_cpu_time_total),
                "share": e.self_cpu_time_total / host_us,
            }
            for e in host_top
        ]
        if on_gpu
        else [],
        "trace": path_stem + ".trace.json" if write else None,
        "table": path_stem + ".txt" if write else None,
        "gpu_idle": idle_summary(path_stem + ".trace.json", steps) if write and on_gpu else None,
    }


_SYNC_WARNING = "synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode("warn")'s message


def _site(frame: traceback.FrameSummary) -> str:
    path = frame.filename
    for root in ("site-packages/", "torchrec_memcom/", "scripts/"):
        if root in path:
            path = (root if root != "site-packages/" else "") + path.rsplit(root, 1)[1]
            break
    return f"{path}:{frame.lineno} ({frame.name})"


# this package's library code (not its benchmarks), by path
_LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_BENCHMARKS = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _ours(frame: traceback.FrameSummary) -> bool:
    path = os.path.abspath(frame.filename)
    return path.startswith(_LIBRARY) and not path.startswith(_BENCHMARKS)


def _sync_site(stack: List[traceback.FrameSummary]) -> str:
    """Where a synchronisation came from: the innermost frame; the innermost one outside ``torch/`` (the library
    code that called the op) when they differ; and the innermost one of this package's library code when it is
    neither (a TorchRec read that the compressed collection called, e.g. the id transform's lengths per key)."""
    frames = [f for f in stack if not f.filename.endswith("warnings.py")]
    inner = frames[-1]
    caller = next((f for f in reversed(frames) if "/torch/" not in f.filename), inner)
    ours = next((f for f in reversed(frames) if _ours(f)), None)
    chain = [inner]
    for frame in (caller, ours):
        if frame is not None and all(frame is not f for f in chain):
            chain.append(frame)
    return " <- ".join(_site(f) for f in chain)


def host_syncs(step: Callable[[], None], steps: int, device: torch.device) -> Optional[Dict[str, Any]]:
    """Host-device synchronisations in ``steps`` steps (CUDA only; ``None`` elsewhere), found by running them under
    ``torch.cuda.set_sync_debug_mode("warn")``: ``{"per_step": ..., "sites": {site: count per step}}``.

    A synchronisation (``.item()``, ``.tolist()``, a shape that depends on data, a blocking copy to the host) stalls
    the host until the GPU has caught up, so the host's and the GPU's time add up instead of overlapping. Sites are
    Python frames; a synchronisation inside a C++ autograd thread without a Python caller is not seen.
    """
    if device.type != "cuda":
        return None
    sites: collections.Counter = collections.Counter()

    def record(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if _SYNC_WARNING in str(message):
            sites[_sync_site(traceback.extract_stack()[:-1])] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        sync(device)
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        sync(device)
    total = sum(sites.values())
    return {
        "steps": steps,
        "per_step": total / steps,
        "sites": {k: v / steps for k, v in sorted(sites.items(), key=lambda kv: -kv[1])},
    }


def _is_uvm(t: torch.Tensor) -> bool:
    """Whether ``t`` lives in CUDA managed or host-mapped memory (FBGEMM's UVM; CUDA only)."""
    if t.device.type != "cuda":
        return False
    op = getattr(torch.ops.fbgemm, "is_uvm_tensor", None)
    return bool(op(t)) if op is not None else False


def _storages(tensors: Iterator[torch.Tensor]) -> Dict[Tuple[str, int], Tuple[int, bool]]:
    seen: Dict[Tuple[str, int], Tuple[int, bool]] = {}
    for t in tensors:
        if t.is_meta:
            continue
        s = t.untyped_storage()
        key = (str(t.device), s.data_ptr())
        if key not in seen:
            seen[key] = (s.nbytes(), _is_uvm(t))
    return seen


def embedding_bytes(model: nn.Module) -> Dict[str, int]:
    """Bytes of this rank's sharded embedding modules' parameters and buffers (weights, TBE optimizer state and
    caches, LMA signatures), each storage once: ``{"total": ..., "uvm": ...}`` (``uvm``: host-resident UVM tables)."""
    tops: List[nn.Module] = []
    names: List[str] = []
    for name, m in model.named_modules():
        if isinstance(m, ShardedModule) and not any(name.startswith(p + ".") for p in names):
            names.append(name)
            tops.append(m)
    tensors = itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for m in tops)
    seen = _storages(tensors)
    return {"total": sum(b for b, _ in seen.values()), "uvm": sum(b for b, uvm in seen.values() if uvm)}


def dense_bytes(model: nn.Module) -> int:
    """Bytes of the parameters outside the fused embedding optimizers (MLPs, data-parallel tables)."""
    return sum(b for b, _ in _storages(p for _, p in in_backward_optimizer_filter(model.named_parameters())).values())


def host_rss_bytes() -> Optional[int]:
    """This process's resident host memory (``VmRSS``; pinned host-mapped tables count once touched)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def free_memory(device: torch.device) -> Optional[int]:
    """Collects garbage and empties the CUDA cache; returns the bytes still allocated (CUDA) or ``None``."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated(device)
    return None
