# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The benchmark harness: run order of ``--repeats``, merging, skips, optimizer and UVM options, the warmup, the
profiler."""

import json
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType

from torchrec_memcom.benchmarks import harness
from torchrec_memcom.benchmarks.harness import BenchOptions, fused_params_for, run_benchmark, schedule
from torchrec_memcom.benchmarks.layouts import LAYOUTS
from torchrec_memcom.benchmarks.measure import host_step_ms, host_syncs, profile_steps, timed_steps, warm_up
from torchrec_memcom.recipes.training import DistContext


def test_schedule_interleaves_the_methods_repeat_by_repeat() -> None:
    assert schedule(["ebc", "dlrm"], ["stock", "hash", "qr"], 2) == [
        (0, "ebc", "stock"),
        (0, "ebc", "hash"),
        (0, "ebc", "qr"),
        (1, "ebc", "stock"),
        (1, "ebc", "hash"),
        (1, "ebc", "qr"),
        (0, "dlrm", "stock"),
        (0, "dlrm", "hash"),
        (0, "dlrm", "qr"),
        (1, "dlrm", "stock"),
        (1, "dlrm", "hash"),
        (1, "dlrm", "qr"),
    ]
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        schedule(["ebc"], ["stock"], 0)


@pytest.fixture
def one_rank() -> Iterator[DistContext]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield DistContext(0, 1, 0, torch.device("cpu"), "gloo")
    finally:
        dist.destroy_process_group()


def _planned() -> Dict[str, Any]:
    """What a fake ``run_method`` reports for any planned method."""
    return {
        "status": "ok",
        "memory_report": {"total_bytes": 10, "stock_bytes": 10, "compression_ratio": 1.0},
        "tables": [],
        "plan_s": 0.0,
        "hbm_cap_bytes": None,
        "ddr_cap_bytes": None,
    }


def _timed(out: Dict[str, Any], step_ms: List[float], host_ms: float = 1.0) -> Dict[str, Any]:
    """``out`` plus what a fake ``run_method`` reports for a timed run."""
    return {
        **out,
        "step_ms": step_ms,
        "host_step_ms": [host_ms] * 4,
        "wall_ms": 1.0,
        "local_embedding_bytes": 10,
        "local_embedding_uvm_bytes": 0,
        "local_dense_bytes": 0,
        "host_rss_bytes": None,
        "shard_s": 0.0,
        "plan_tables": {"t0": "table_wise/fused@0"},
        "plan_estimate": {},
    }


def test_run_benchmark_runs_the_schedule_and_takes_the_median_of_repeat_medians(
    one_rank: DistContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: List[Tuple[str, str]] = []
    step_ms = {"stock": iter([[4.0, 4.0, 4.0], [6.0, 6.0, 6.0], [5.0, 5.0, 5.0]]), "hash": iter([[2.0] * 3] * 3)}

    def fake_run_method(kind: str, method: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        calls.append((kind, method))
        out = _planned()
        if method == "lma":
            return {**out, "status": "does not fit", "reason": "needs more"}
        return _timed(out, next(step_ms[method]))

    monkeypatch.setattr(harness, "run_method", fake_run_method)
    written: List[List[str]] = []
    layout = LAYOUTS["tiny"]
    opts = BenchOptions(layout_name="tiny", sharding_type="column_wise", iters=3, warmup=0, warmup_s=0.0)
    rows = run_benchmark(
        layout,
        opts,
        ["ebc"],
        ["stock", "memcom", "lma", "hash"],
        3,
        one_rank,
        lambda rs: written.append([r["method"] for r in rs]),
    )
    # memcom cannot be column-wise (never run); lma does not fit at the first repeat (never retried)
    assert calls == [("ebc", "stock"), ("ebc", "lma"), ("ebc", "hash"), ("ebc", "stock"), ("ebc", "hash")] + [
        ("ebc", "stock"),
        ("ebc", "hash"),
    ]
    assert written[-1] == ["stock", "memcom", "lma", "hash"] and len(written) == 4 + 2 + 2
    stock, memcom, lma, hash_ = rows
    assert memcom["status"] == "skipped" and "column_wise" in memcom["reason"]
    assert lma["status"] == "does not fit" and lma["reason"] == "needs more"
    assert stock["step_ms_repeat_medians"] == [4.0, 6.0, 5.0] and stock["step_ms_median"] == 5.0
    assert hash_["repeats"] == 3 and hash_["throughput_vs_stock"] == pytest.approx(2.5)


def test_optimizer_and_uvm_fused_params() -> None:
    opts = BenchOptions()
    assert opts.optimizer == "rowwise_adagrad"  # the default users train with
    cpu = fused_params_for(opts, ["fused", "fused_uvm_caching"], "cpu")
    assert cpu["optimizer"] == EmbOptimType.EXACT_ROWWISE_ADAGRAD and "uvm_host_mapped" not in cpu
    assert fused_params_for(opts, ["fused", "fused_uvm_caching"], "cuda")["uvm_host_mapped"] is True
    assert "uvm_host_mapped" not in fused_params_for(opts, ["fused"], "cuda")
    managed = BenchOptions(uvm_memory="managed", optimizer="sgd", lr=0.5)
    params = fused_params_for(managed, ["fused_uvm_caching"], "cuda")
    assert "uvm_host_mapped" not in params and params["optimizer"] == EmbOptimType.EXACT_SGD
    assert params["learning_rate"] == 0.5


def test_profiles_come_from_a_separate_pass_after_every_timed_run(
    one_rank: DistContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: List[Tuple[str, bool]] = []

    def fake_run_method(kind: str, method: str, *args: Any) -> Dict[str, Any]:
        stem = args[6] if len(args) > 6 else None
        calls.append((method, stem is not None))
        out = _planned()
        if stem is not None:  # profiled, not timed
            assert stem.endswith(f"profile_tiny_{kind}_{method}_w1")
            return {**out, "profile": {"host_ms_per_step": {"stock": 2.0, "hash": 3.0}[method]}}
        return _timed(out, [{"stock": 4.0, "hash": 2.0}[method]] * 3, {"stock": 1.0, "hash": 1.5}[method])

    monkeypatch.setattr(harness, "run_method", fake_run_method)
    opts = BenchOptions(layout_name="tiny", profile=("stock", "hash"), profile_dir=str(tmp_path), warmup_s=0.0)
    stock, hash_ = run_benchmark(LAYOUTS["tiny"], opts, ["ebc"], ["stock", "hash"], 2, one_rank, lambda rs: None)
    assert calls == [("stock", False), ("hash", False)] * 2 + [("stock", True), ("hash", True)]
    assert stock["repeats"] == hash_["repeats"] == 2 and hash_["throughput_vs_stock"] == pytest.approx(2.0)
    assert hash_["profile"]["host_ms_per_step_per_rank"] == [3.0]  # the profiler's, kept with its profile
    assert hash_["host_ms_median"] == 1.5 and hash_["host_vs_stock"] == pytest.approx(1.5)  # timed, no profiler


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"uvm_memory": "disk"}, "uvm_memory must be"),
        ({"cache_load_factor": 0.0}, "cache_load_factor must be in"),
        ({"iters": 0}, "need iters >= 1"),
        ({"warmup_s": -1.0}, "warmup_s >= 0"),
    ],
)
def test_bad_options_fail_early(kwargs: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchOptions(**kwargs)


def test_warm_up_runs_the_minimum_steps_then_chunks_until_the_time_and_every_rank_are_done() -> None:
    cpu = torch.device("cpu")
    calls: List[float] = []

    def step() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.002)

    assert warm_up(step, 3, 0.0, cpu) == 3 and len(calls) == 3
    assert warm_up(step, 0, 0.0, cpu) == 0
    calls.clear()
    ran = warm_up(step, 2, 0.05, cpu, chunk=4)
    end = time.perf_counter()
    assert ran == len(calls) and (ran - 2) % 4 == 0 and ran >= 2 + 4
    # the clock starts after the minimum steps; the last chunk started before the time was up
    assert calls[-4] - calls[2] < 0.05 <= end - calls[1] - 0.002

    answers: List[bool] = []

    def slow_peer(mine: bool) -> bool:  # another rank reaches the time two checks later
        answers.append(mine)
        return mine and len(answers) > 2

    calls.clear()
    assert warm_up(step, 1, 0.0, cpu, slow_peer, chunk=5) == 1 + 2 * 5 == len(calls)
    assert answers == [True, True, True]


def test_profile_keeps_traces_in_files_and_numbers_in_the_result(tmp_path: Path) -> None:
    a = torch.randn(64, 64)

    def step() -> None:
        (a @ a).relu_().sum()

    result = profile_steps(step, 3, torch.device("cpu"), str(tmp_path / "p" / "stock"), write=True)
    assert result["steps"] == 3 and result["host_ms_per_step"] > 0 and result["wall_ms_per_step"] > 0
    assert result["gpu_busy"] is None and result["time_basis"] == "self CPU time"
    assert result["trace"] == str(tmp_path / "p" / "stock.trace.json") and Path(result["trace"]).stat().st_size > 0
    assert "aten::mm" in Path(result["table"]).read_text()
    assert any(e["name"] == "aten::mm" and e["count"] == 3 for e in result["top"])
    text = json.dumps(result)
    assert len(text) < 5000 and "Self CPU" not in text  # paths only, no trace or table contents
    silent = profile_steps(step, 1, torch.device("cpu"), str(tmp_path / "q" / "x"), write=False)
    assert silent["trace"] is None and not (tmp_path / "q").exists()


def test_host_step_ms_times_each_call_of_every_round() -> None:
    calls: List[float] = []

    def step() -> None:  # 2 ms of host work
        calls.append(time.perf_counter())
        time.sleep(0.002)

    times = host_step_ms(step, torch.device("cpu"), rounds=3, per_round=2)
    assert len(times) == len(calls) == 6
    assert all(2.0 <= t < 50.0 for t in times)


@pytest.mark.gpu
def test_host_step_ms_is_the_hosts_time_not_the_gpus() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")

    def step() -> None:  # a few us to launch, tens of ms on the GPU
        torch.cuda._sleep(50_000_000)

    gpu_ms, _ = timed_steps(step, 3, device)
    host = host_step_ms(step, device, rounds=2, per_round=3)
    assert min(gpu_ms) > 10.0 and max(host) < min(gpu_ms) / 5, (gpu_ms, host)


def test_sync_site_names_the_library_code_behind_a_torchrec_read() -> None:
    """A synchronisation's site: the innermost frame, the innermost one outside ``torch/``, and this package's
    innermost library frame when it is neither (its benchmark harness is not the library)."""
    import traceback

    import torchrec_memcom
    from torchrec_memcom.benchmarks.measure import _sync_site

    package = Path(torchrec_memcom.__file__).parent

    def frame(path: str, line: int, name: str) -> traceback.FrameSummary:
        return traceback.FrameSummary(path, line, name, line="")

    harness_ = frame(str(package / "benchmarks" / "measure.py"), 10, "step")
    transform = frame(str(package / "modules" / "transform.py"), 330, "_lengths_per_key")
    read = frame("/env/site-packages/torchrec/sparse/jagged_tensor.py", 1305, "_maybe_compute_length_per_key")
    op = frame("/env/site-packages/torch/_tensor.py", 7, "tolist")
    warn = frame("/usr/lib/python3/warnings.py", 1, "warn")
    lengths = "torchrec/sparse/jagged_tensor.py:1305 (_maybe_compute_length_per_key)"
    ours = "torchrec_memcom/modules/transform.py:330 (_lengths_per_key)"
    assert _sync_site([harness_, transform, read, op, warn]) == f"torch/_tensor.py:7 (tolist) <- {lengths} <- {ours}"
    assert _sync_site([harness_, transform, read]) == f"{lengths} <- {ours}"
    assert _sync_site([harness_, read]) == lengths  # TorchRec's own read (stock's): no library frame
    assert _sync_site([harness_, transform, op]) == f"torch/_tensor.py:7 (tolist) <- {ours}"  # ours called the op
    assert _sync_site([harness_, transform]) == ours


@pytest.mark.gpu
def test_host_syncs_finds_each_synchronisation_and_its_caller() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    a = torch.randn(256, 256, device=device)

    def asynchronous() -> None:
        (a @ a).relu_().sum()

    def two_syncs() -> None:
        total = (a @ a).sum()
        total.item()  # one
        a[a > 0].sum()  # boolean indexing: a shape that depends on the data

    assert host_syncs(asynchronous, 3, device) == {"steps": 3, "per_step": 0.0, "sites": {}}
    found = host_syncs(two_syncs, 4, device)
    assert found is not None and len(found["sites"]) == 2, found
    assert all("test_harness.py" in site and "(two_syncs)" in site for site in found["sites"])
    assert found["per_step"] == sum(found["sites"].values()) >= 2.0 and min(found["sites"].values()) == 1.0
    assert host_syncs(two_syncs, 1, torch.device("cpu")) is None
    assert torch.cuda.get_sync_debug_mode() == 0  # the caller's mode is back
    torch.cuda.synchronize()  # the debug mode is off again: no warning escapes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (a @ a).sum().item()


def test_init_distributed_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchrec_memcom.recipes.training import init_distributed

    with pytest.raises(ValueError, match="device must be one of 'auto', 'cuda', 'cpu', 'cuda-shared', got 'tpu'"):
        init_distributed(device="tpu")
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda-shared"):
            with pytest.raises(ValueError, match=f"device='{device}', but CUDA is not available"):
                init_distributed(device=device)
    from torchrec.test_utils import get_free_port

    launcher = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "localhost"}
    for var, value in {**launcher, "MASTER_PORT": str(get_free_port())}.items():
        monkeypatch.setenv(var, value)  # restored afterwards
    ctx = init_distributed(device="cpu")  # gloo on CPU, even where CUDA is
    try:
        assert (ctx.rank, ctx.world_size, ctx.device.type, ctx.backend) == (0, 1, "cpu", "gloo")
    finally:
        ctx.close()


@pytest.mark.gpu
def test_profile_charges_the_gpu_idle_time_to_the_launch_after_it(tmp_path: Path) -> None:
    """A step that sleeps 5 ms on the host between two GPU ops: the profile's ``gpu_idle`` charges about that gap to
    the second op's launch, each step."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    a = torch.randn(512, 512, device=device)

    def step() -> None:
        a.mul_(1.0)
        time.sleep(0.005)
        torch.cos(a)

    out = profile_steps(step, 4, device, str(tmp_path / "p"), write=True)
    idle = out["gpu_idle"]
    assert 0 < idle["busy_us_per_step"] < idle["span_us_per_step"], idle
    top = idle["top"][0]
    assert top["op"] == "aten::cos" and top["gaps_per_step"] == 1.0 and top["us_per_step"] >= 4000, idle
