# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""FBGEMM's HBM cache in front of tables in host memory (``fused_uvm_caching``): fresh batches and its miss rate.

A benchmark that cycles a few batches measures a warm cache only: after one cycle every id of every batch sits in
the HBM cache, and a table in host memory trains at HBM speed. With UVM caching, ``fresh_batch_count`` makes as many
batches as the steps that read them (warmup, timed steps, the statistics pass; the harness caps their memory), so
each timed step brings ids the model has not seen in this run, as a training stream does; the popular ids stay
popular (the same distribution), so the cache keeps them. ``cache_stats`` reads FBGEMM's own counters (the TBE's
``gather_uvm_cache_stats``) over a few steps after the timed ones; the counting is off while timing (it adds work to
each cached lookup).
"""

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen
from torch import nn

from torchrec_memcom.distributed import _compat

__all__ = [
    "FRESH_WARMUP_STEPS",
    "PIPELINE_AHEAD",
    "STATS_STEPS",
    "cache_stats",
    "cached_tbes",
    "fresh_batch_count",
    "warmup_cap",
    "set_gathering",
]

STATS_STEPS = 20  # steps of the statistics pass
FRESH_WARMUP_STEPS = 128  # batches set aside for the warmup beyond its minimum step count
PIPELINE_AHEAD = 2  # batches TorchRec's TrainPipelineSparseDist takes from the iterator ahead of the step it runs

# FBGEMM's uvm_cache_stats layout (fbgemm_gpu's UVMCacheStatsIndex)
_CALLS, _REQUESTED, _UNIQUE, _UNIQUE_MISSES = 0, 1, 2, 3


def _after_warmup(iters: int) -> int:
    """Batches a run reads after its warmup: the timed steps, the statistics pass, the pipeline's look-ahead."""
    return iters + STATS_STEPS + PIPELINE_AHEAD


def fresh_batch_count(warmup: int, iters: int) -> int:
    """Batches per rank that no step of a run with UVM caching reads twice: ``FRESH_WARMUP_STEPS`` beyond the
    minimum ``warmup``, then what the run reads after it (the host-time pass after them cycles back)."""
    return FRESH_WARMUP_STEPS + warmup + _after_warmup(iters)


def warmup_cap(batches: int, warmup: int, iters: int) -> Optional[int]:
    """The most warmup steps that leave every later step of the run a batch of its own (``None``: ``batches`` are
    too few for ``warmup`` steps and that: they cycle anyway)."""
    cap = batches - _after_warmup(iters)
    return cap if cap >= warmup else None


def _tbes(model: nn.Module) -> Iterator[Any]:
    """Every FBGEMM TBE of ``model``'s sharded collections, once (a compressed collection shares its inner EBC's
    lookups)."""
    seen = set()
    for m in model.modules():
        for _, tbe in _compat.fused_tbes(m):
            if isinstance(tbe, SplitTableBatchedEmbeddingBagsCodegen) and id(tbe) not in seen:
                seen.add(id(tbe))
                yield tbe


def cached_tbes(model: nn.Module) -> List[Any]:
    """The TBE modules of ``model`` with an HBM cache (tables in host memory behind it)."""
    return [m for m in _tbes(model) if m.lxu_cache_weights.numel() > 0]


def set_gathering(model: nn.Module, on: bool) -> None:
    """Turns FBGEMM's cache counters on or off in every TBE built with them (``gather_uvm_cache_stats=True``)."""
    for m in _tbes(model):
        if m.uvm_cache_stats.numel() > 1:
            m.gather_uvm_cache_stats = on


def cache_stats(
    step: Callable[[], None], tbes: Sequence[Any], steps: int, device: torch.device
) -> Optional[Dict[str, float]]:
    """Runs ``steps`` steps with the counters of ``tbes`` on; returns per step the ids the TBEs looked up (all their
    tables': TorchRec groups HBM and cached tables in one TBE), the cached tables' distinct ids and those of them not
    in the cache (read from host memory), and ``unique_miss_rate`` = misses / distinct ids. ``None`` without cached
    tables or counters."""
    tbes = [t for t in tbes if t.uvm_cache_stats.numel() > 1]
    if not tbes or steps < 1:
        return None
    for t in tbes:
        t.gather_uvm_cache_stats = True  # before the reset, which FBGEMM allows only with counting on
        t.reset_uvm_cache_stats()
    try:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        totals = torch.stack([t.get_uvm_cache_stats().to("cpu", torch.int64) for t in tbes]).sum(0).tolist()
    finally:
        for t in tbes:
            t.gather_uvm_cache_stats = False
    unique = totals[_UNIQUE]
    return {
        "steps": steps,
        "lookups_per_step": totals[_CALLS] / steps,
        "ids_per_step": totals[_REQUESTED] / steps,
        "unique_ids_per_step": unique / steps,
        "unique_misses_per_step": totals[_UNIQUE_MISSES] / steps,
        "unique_miss_rate": totals[_UNIQUE_MISSES] / unique if unique else 0.0,
    }
