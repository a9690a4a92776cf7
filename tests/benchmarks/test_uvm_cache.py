# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""UVM caching in the benchmark: batch counts that never repeat a batch, FBGEMM's cache counters, their report."""

import dataclasses
from typing import Any, List

import pytest
import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
)

from torchrec_memcom.benchmarks import uvm_cache
from torchrec_memcom.benchmarks.data import batch_bytes, make_batches
from torchrec_memcom.benchmarks.harness import BenchOptions, batch_count, fused_params_for
from torchrec_memcom.benchmarks.layouts import LAYOUTS
from torchrec_memcom.benchmarks.measure import warm_up
from torchrec_memcom.benchmarks.report import markdown_table, merge_ranks, uvm_cache_table

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object only: nothing is allocated on it


class _FakeTBE:
    """The counters' interface of FBGEMM's TBE: ``[calls, requested, unique, unique misses, ...]`` per step."""

    def __init__(self, per_step: List[int]) -> None:
        self.per_step = torch.tensor(per_step + [0, 0], dtype=torch.int64)
        self.uvm_cache_stats = torch.zeros(6, dtype=torch.int64)
        self.gather_uvm_cache_stats = False
        self.seen: List[bool] = []

    def reset_uvm_cache_stats(self) -> None:
        assert self.gather_uvm_cache_stats, "FBGEMM asserts this too"
        self.uvm_cache_stats.zero_()

    def lookup(self) -> None:
        self.seen.append(self.gather_uvm_cache_stats)
        if self.gather_uvm_cache_stats:
            self.uvm_cache_stats += self.per_step

    def get_uvm_cache_stats(self) -> torch.Tensor:
        return self.uvm_cache_stats


def test_cache_stats_sums_the_tbes_counters_per_step_with_counting_on_only_inside() -> None:
    a, b = _FakeTBE([1, 100, 60, 15]), _FakeTBE([1, 50, 40, 25])
    a.uvm_cache_stats += 7  # left from before: reset first

    def step() -> None:
        a.lookup()
        b.lookup()

    stats = uvm_cache.cache_stats(step, [a, b], 4, CPU)
    assert stats == {
        "steps": 4,
        "lookups_per_step": 2.0,
        "ids_per_step": 150.0,
        "unique_ids_per_step": 100.0,
        "unique_misses_per_step": 40.0,
        "unique_miss_rate": pytest.approx(0.4),
    }
    assert a.seen == [True] * 4 and not a.gather_uvm_cache_stats and not b.gather_uvm_cache_stats
    assert uvm_cache.cache_stats(step, [], 4, CPU) is None

    def failing() -> None:
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError, match="step failed"):
        uvm_cache.cache_stats(failing, [a], 2, CPU)
    assert not a.gather_uvm_cache_stats  # switched off again


def test_cached_tbes_and_set_gathering_on_a_real_tbe() -> None:
    def tbe(gather: bool) -> Any:
        return SplitTableBatchedEmbeddingBagsCodegen(
            [(100, 8, EmbeddingLocation.HOST, ComputeDevice.CPU)], gather_uvm_cache_stats=gather
        )

    class Kernel(torch.nn.Module):  # TorchRec's fused kernel: the FBGEMM TBE in _emb_module
        def __init__(self, module: Any) -> None:
            super().__init__()
            self._emb_module = module

    class Lookup(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._emb_modules = torch.nn.ModuleList([Kernel(tbe(True)), Kernel(tbe(False))])

    class Sharded(torch.nn.Module):  # like TorchRec's sharded collections: lookups in a plain list
        def __init__(self, lookups: List[Any]) -> None:
            super().__init__()
            self._lookups = lookups

    real = tbe(True)
    real.gather_uvm_cache_stats = False
    assert uvm_cache.cache_stats(lambda: None, [real], 1, CPU) == {  # FBGEMM's own reset and counters
        "steps": 1,
        "lookups_per_step": 0.0,
        "ids_per_step": 0.0,
        "unique_ids_per_step": 0.0,
        "unique_misses_per_step": 0.0,
        "unique_miss_rate": 0.0,
    }
    assert not real.gather_uvm_cache_stats

    lookups = [Lookup()]
    model = torch.nn.Sequential(Sharded(lookups), Sharded(lookups))  # a compressed collection shares its EBC's
    inner = [k._emb_module for k in lookups[0]._emb_modules]
    assert list(model.modules()) == [model, model[0], model[1]]  # what modules() misses
    assert uvm_cache.cached_tbes(model) == []  # no HBM cache on CPU
    uvm_cache.set_gathering(model, False)
    assert [m.gather_uvm_cache_stats for m in inner] == [False, False]
    uvm_cache.set_gathering(model, True)
    assert [m.gather_uvm_cache_stats for m in inner] == [True, False]  # only the one built with counters
    cached = tbe(True)
    cached.lxu_cache_weights = torch.zeros(4, 8)  # stands for an HBM cache
    lookups[0]._emb_modules.append(Kernel(cached))
    assert uvm_cache.cached_tbes(model) == [cached]  # once, though two collections hold it


def test_batch_count_is_fresh_with_uvm_caching_on_cuda() -> None:
    tb, big = LAYOUTS["terabyte"], LAYOUTS["big"]
    opts = BenchOptions(warmup=20, iters=100, hbm_cap_bytes=40 * 10**9)
    fresh = uvm_cache.fresh_batch_count(20, 100)
    assert fresh == uvm_cache.FRESH_WARMUP_STEPS + 20 + 100 + uvm_cache.STATS_STEPS + uvm_cache.PIPELINE_AHEAD
    # one terabyte batch: 16384 rows x 26 one-hot int64 ids, 13 float32 dense features and a float32 label
    assert batch_bytes(tb) == 16384 * (26 * 8 + 13 * 4 + 4) and fresh * batch_bytes(tb) < 0.1 * 40e9
    tiny = LAYOUTS["tiny"]
    b0, b1 = make_batches(tiny, 2, seed=0, device=CPU)  # what a batch really holds, its lengths shared
    assert b0.sparse_features.lengths() is b1.sparse_features.lengths()
    held = [b0.sparse_features.values(), b0.dense_features, b0.labels]
    assert batch_bytes(tiny) == sum(t.numel() * t.element_size() for t in held)
    assert batch_count(opts, tb, CUDA) == fresh
    assert batch_count(opts, tb, CPU) == 4 and batch_count(opts, big, CUDA) == 4
    # big's batches (20 ids per bag, 8 tables: 22 MB each) under a 10 GB budget: as many as a tenth of it holds
    cached_big = BenchOptions(kernels=("fused_uvm_caching",), hbm_cap_bytes=10 * 10**9)
    assert batch_count(cached_big, big, CUDA) == 10**9 // batch_bytes(big) == 45 < uvm_cache.fresh_batch_count(10, 50)
    assert batch_count(dataclasses.replace(cached_big, hbm_cap_bytes=10**7), big, CUDA) == 4  # never fewer
    assert batch_count(cached_big, big, CUDA, ranks_per_device=3) == 10**9 // 3 // batch_bytes(big) == 15  # a share
    assert batch_count(BenchOptions(num_batches=7), tb, CUDA) == 7
    assert fused_params_for(opts, tb.kernels, "cuda")["gather_uvm_cache_stats"] is True
    assert "gather_uvm_cache_stats" not in fused_params_for(opts, tb.kernels, "cpu")
    assert "gather_uvm_cache_stats" not in fused_params_for(opts, big.kernels, "cuda")


def test_warm_up_stops_before_the_batches_would_repeat() -> None:
    # 200 batches, 100 timed steps, 20 counted, 2 ahead: 78 warmup steps at most; too few batches for 10: no cap
    assert uvm_cache.warmup_cap(200, 10, 100) == 200 - 100 - 20 - 2 == 78
    assert uvm_cache.warmup_cap(125, 10, 100) is None and uvm_cache.warmup_cap(132, 10, 100) == 10
    calls: List[int] = []
    # 3 steps, then chunks of 10 until 100 s (never) or the cap: the last chunk must end at or before 25 steps
    assert warm_up(lambda: calls.append(1), 3, 100.0, CPU, chunk=10, max_steps=25) == 23 == len(calls)
    assert warm_up(lambda: None, 30, 100.0, CPU, chunk=10, max_steps=25) == 30  # the minimum wins


def _rank(cache: Any, fresh: bool) -> dict:
    return {
        "status": "ok",
        "host_step_ms": [1.0],
        "memory_report": {"total_bytes": 2, "stock_bytes": 2, "compression_ratio": 1.0},
        "tables": [],
        "plan_s": 0.1,
        "shard_s": 0.1,
        "hbm_cap_bytes": 1,
        "ddr_cap_bytes": 1,
        "step_ms": [5.0],
        "wall_ms": 5.0,
        "local_embedding_bytes": 1,
        "local_embedding_uvm_bytes": 1,
        "local_dense_bytes": 0,
        "host_rss_bytes": 1,
        "plan_tables": {"t0": "table_wise/fused_uvm_caching@0"},
        "plan_estimate": {},
        "warmup_steps": 10,
        "batches": 300,
        "fresh_batches": fresh,
        "uvm_cache": cache,
    }


def test_report_sums_the_ranks_counters_and_says_whether_batches_were_fresh() -> None:
    counts = {"steps": 20, "lookups_per_step": 1.0, "ids_per_step": 1000.0, "unique_miss_rate": 0.5}
    r0 = {**counts, "unique_ids_per_step": 400.0, "unique_misses_per_step": 100.0}
    r1 = {**counts, "unique_ids_per_step": 600.0, "unique_misses_per_step": 300.0}
    stock = merge_ranks("dlrm", "stock", "stock EBC", [_rank(r0, True), _rank(r1, True)], LAYOUTS["tiny"])
    c = stock["uvm_cache"]
    assert (c["ids_per_step"], c["unique_ids_per_step"], c["unique_misses_per_step"]) == (2000.0, 1000.0, 400.0)
    assert c["unique_miss_rate"] == pytest.approx(0.4) and c["ranks"] == 2 and stock["fresh_batches"]
    assert c["lookups_per_step"] == 2.0  # every per-step counter summed; the rate recomputed, not summed
    hashed = merge_ranks("dlrm", "hash", "Hash 16x", [_rank(None, True), _rank(None, False)], LAYOUTS["tiny"])
    assert hashed["uvm_cache"] is None and not hashed["fresh_batches"]  # one rank cycled
    lines = uvm_cache_table([stock, hashed])
    assert "over 20 steps after the timed ones" in lines[1]
    assert lines[-1] == "| dlrm | stock EBC | 2,000 | 1,000 | 400 | 40.0% |" and len(lines) == 6
    assert uvm_cache_table([hashed]) == []
    assert markdown_table([stock])  # the main table still renders with the new keys
