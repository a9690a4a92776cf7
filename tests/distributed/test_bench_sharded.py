# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``scripts/bench_sharded.py`` runs end to end: tiny layout, one process (gloo on CPU; NCCL on CUDA if present) and
two gloo processes under ``torch.distributed.run``.

The script is started as a user would start it (a plain ``python scripts/bench_sharded.py``, which creates its own
single-rank process group), and its JSON must hold a measured row for every (model, method).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Tuple

import pytest
import torch

from tests.scripts import load_script
from torchrec_memcom.provenance import code_revision

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_sharded.py"
METHODS = {"stock", "memcom", "lma", "hash", "qr"}
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _run(tmp_path: Path, *extra: str, timeout: float = 300, nproc: int = 0) -> Dict[str, Any]:
    out = tmp_path / "bench.json"
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc else []
    cmd = [
        sys.executable,
        *launcher,
        str(SCRIPT),
        "--layout",
        "tiny",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--warmup-s",
        "0",
        "--out",
        str(out),
        "--md",
        str(tmp_path / "bench.md"),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}  # not under a launcher: one rank
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


def _check_results(payload: Dict[str, Any], models: Tuple[str, ...] = ("ebc", "dlrm")) -> None:
    results = payload["results"]
    for model in models:
        rows = {r["method"]: r for r in results if r["model"] == model}
        assert set(rows) == METHODS, (model, sorted(rows))
        for method, r in rows.items():
            assert r["status"] == "ok", (model, method, r.get("reason"))
            assert r["samples_per_s"] > 0 and r["step_ms_median"] > 0 and r["host_ms_median"] > 0
            assert r["plan_tables"], (model, method)
            assert r["local_embedding_bytes_max"] > 0
            if method == "stock":
                assert r["throughput_vs_stock"] == pytest.approx(1.0)
                assert r["compression_ratio"] == pytest.approx(1.0)
            else:
                assert r["compression_ratio"] > 8, (model, method, r["compression_ratio"])
                assert r["report_bytes_vs_stock"] < 0.125


def _load_script() -> ModuleType:
    return load_script("bench_sharded")


def test_tiny_layout_single_process_cpu(tmp_path: Path) -> None:
    payload = _run(tmp_path, "--device", "cpu", "--chart", str(tmp_path / "bench.png"))
    _check_results(payload)
    env = payload["environment"]
    assert env["world_size"] == 1 and env["device"] == "cpu" and env["backend"] == "gloo"
    assert env["revision"] == code_revision()  # the code that ran, in the record
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert payload["config"]["layout_spec"]["batch_size"] == 64
    assert payload["config"]["optimizer"] == "rowwise_adagrad"  # the default
    md = (tmp_path / "bench.md").read_text()
    assert "| ebc | stock EBC |" in md and "| dlrm | MEmCom 16x |" in md
    assert "Optimizer: fused EXACT_ROWWISE_ADAGRAD + dense Adagrad, lr 0.01." in md
    assert "TBE indices: stock int64, compressed int32 where their ids fit" in md
    # the scaling helper reads two runs' JSON (here the same run twice: 1.00x, 100%)
    table = _load_script().combine([str(tmp_path / "bench.json")] * 2)
    assert "| ebc | stock EBC |" in table and "1.00x" in table


@pytest.mark.parametrize("in_transform", [True, False])
def test_memcom_rows_in_transform_or_after_the_dist(tmp_path: Path, in_transform: bool) -> None:
    """One rank: MEmCom's rows come from the id transform (the default) or, with ``--no-memcom-rows-in-transform``,
    from the rows kernel after the dist; the host-time parts show which ran."""
    flag = "--memcom-rows-in-transform" if in_transform else "--no-memcom-rows-in-transform"
    fine = ["--fine-host-sites"] if in_transform else []
    payload = _run(
        tmp_path, "--device", "cpu", "--model", "ebc", "--methods", "memcom", "--profile", "memcom", flag, *fine
    )
    (row,) = [r for r in payload["results"] if r["method"] == "memcom"]
    assert row["status"] == "ok", row.get("reason")
    parts = row["profile"]["host_breakdown"]["sites"]
    assert parts["after the dist (MEmCom weights, LMA expansion)"]["calls_per_step"] == 1
    assert ("MEmCom: rows and weights after the dist" in parts) == (not in_transform), sorted(parts)
    # --fine-host-sites: the finer parts that run on CPU too (the Triton launches are CUDA's)
    for part in ("MEmCom: weights gather w[slots]", "FBGEMM TBE forward", "id transform: segments call"):
        assert (part in parts) == in_transform, (part, sorted(parts))
    md = (tmp_path / "bench.md").read_text()
    assert ("MEmCom's rows after the dist (`--no-memcom-rows-in-transform`)" in md) == (not in_transform)


def test_cuda_graph_needs_one_cuda_rank() -> None:
    """Refused before any model is built, naming the ranks and device (the class itself would fail mid-run)."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    cmd = [sys.executable, str(SCRIPT), "--layout", "tiny", "--device", "cpu", "--cuda-graph"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--cuda-graph needs one rank on a CUDA device (here 1 rank(s) on cpu)" in (
        proc.stderr
    ), proc.stderr[-3000:]


def test_methods_run_stock_first_unless_the_order_is_kept() -> None:
    parse = _load_script().parse_args
    assert parse(["--methods", "memcom,stock,hash"]).methods == ["stock", "memcom", "hash"]
    assert parse(["--methods", "memcom,stock,hash", "--keep-order"]).methods == ["memcom", "stock", "hash"]


@pytest.mark.slow
def test_tiny_layout_two_gloo_processes_with_repeats_and_profiles(tmp_path: Path) -> None:
    # a later --warmup-s wins over _run's: the ranks must agree on a time-based warmup's step count
    payload = _run(
        tmp_path, "--device", "cpu", "--model", "ebc", "--repeats", "2", "--optimizer", "sgd", "--profile", "hash",
        "--warmup-s", "0.3", "--cache-recat", "--index-dtype", "int64", "--known-length-per-key", nproc=2,
    )  # fmt: skip
    _check_results(payload, models=("ebc",))
    assert payload["environment"]["world_size"] == 2 and payload["config"]["optimizer"] == "sgd"
    for r in payload["results"]:
        assert r["world_size"] == 2 and r["repeats"] == 2 and len(r["step_ms_repeat_medians"]) == 2
        assert r["warmup_steps"] >= 1
        assert len(r["local_embedding_bytes_per_rank"]) == 2
        profiled = r["method"] in ("stock", "hash")  # stock joins: host time is relative to it
        assert bool(r.get("profile")) == profiled, r["method"]
        if profiled:
            assert r["profile"]["host_ms_per_step"] > 0 and len(r["profile"]["host_ms_per_step_per_rank"]) == 2
            assert Path(r["profile"]["trace"]).is_file()
            parts = r["profile"]["host_breakdown"]["sites"]
            assert parts["TorchRec EBC input dist"]["calls_per_step"] == 1 and parts["backward"]["ms_per_step"] > 0
            assert parts["TorchRec input dist: splits wait (its sync)"]["calls_per_step"] >= 1
            assert ("id transform" in parts) == (r["method"] == "hash")
    hash_row = next(r for r in payload["results"] if r["method"] == "hash")
    assert hash_row["host_vs_stock"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "| host ms/step | host vs stock | GPU busy |" in md and "permutation cached (`--cache-recat`)" in md
    assert "TBE indices int64 for every method (`--index-dtype`)" in md
    assert "batches carry their per-feature id counts (`--known-length-per-key`)" in md
    assert "## Host time by part: ebc" in md


def test_stock_does_not_fit_a_small_budget_the_compressed_tables_train(tmp_path: Path) -> None:
    # 8.6 MiB of stock tables vs a 5 MB host budget on CPU: the planner's verdict, not a guess
    payload = _run(tmp_path, "--device", "cpu", "--model", "ebc", "--methods", "stock,hash,qr", "--ddr-cap-gb", "0.005")
    stock, hash_row, qr = payload["results"]
    assert stock["status"] == "does not fit"
    assert stock["reason"].startswith("Unable to find a plan for this model because of insufficient storage: needs")
    assert "insufficient storage" in stock["planner_error"]
    for r in (hash_row, qr):
        assert r["status"] == "ok" and r["samples_per_s"] > 0 and "throughput_vs_stock" not in r
    assert "| ebc | stock EBC | does not fit: Unable to find a plan" in (tmp_path / "bench.md").read_text()


def test_planner_report_prints_plans_for_each_rank_count(tmp_path: Path) -> None:
    out = tmp_path / "plans.json"
    cmd = [sys.executable, str(SCRIPT), "--planner-report", "--planner-layouts", "tiny", "--planner-world-sizes",
           "1,2", "--methods", "stock,hash", "--out", str(out), "--md", str(tmp_path / "plans.md")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["world_size"], r["method"], r["status"]) for r in rows] == [
        (w, m, "ok") for w in (1, 2) for m in ("stock", "hash")
    ]
    assert "| 2 | Hash 16x |" in proc.stdout and "optimizer: fused EXACT_ROWWISE_ADAGRAD" in proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_beyond_hbm_single_gpu(tmp_path: Path) -> None:
    # 3.6 GB of stock tables (tiny x 400) under a 2 GB HBM budget (the process's CUDA allocations capped there too):
    # the planner puts stock tables in host memory behind FBGEMM's HBM cache (fused_uvm_caching); the 16x compressed
    # tables stay in HBM.
    payload = _run(
        tmp_path, "--device", "cuda", "--scale", "400", "--batch-size", "512", "--model", "dlrm", "--pipeline",
        "--methods", "stock,hash", "--kernels", "fused,fused_uvm_caching", "--hbm-cap-gb", "2",
    )  # fmt: skip
    stock, hash_row = payload["results"]
    assert stock["status"] == "ok" and hash_row["status"] == "ok", payload["results"]
    assert any("fused_uvm_caching" in v for v in stock["plan_tables"].values())
    assert stock["local_embedding_uvm_bytes_max"] > 1e9 and stock["peak_bytes_max"] < 2e9
    assert all(v.split("@")[0].endswith("/fused") for v in hash_row["plan_tables"].values())
    assert hash_row["local_embedding_uvm_bytes_max"] == 0 and hash_row["throughput_vs_stock"] > 0
    # no timed step repeats a batch (a cycled batch's ids would all be in the cache); FBGEMM's counters: the TBE
    # holding the cached tables (TorchRec groups them with the HBM ones) looks up batch x pooling ids per feature it
    # holds; the distinct ids of the cached tables are at most batch x pooling per cached feature, some read from host
    fresh = 128 + 1 + 2 + 20 + 2  # uvm_cache.fresh_batch_count(warmup 1, iters 2)
    assert stock["batches"] == hash_row["batches"] == fresh and stock["fresh_batches"] and hash_row["fresh_batches"]
    cached = sum(v.split("@")[0].endswith("/fused_uvm_caching") for v in stock["plan_tables"].values())
    cache, ids = stock["uvm_cache"], 512 * 4
    assert cache["ids_per_step"] % ids == 0 and cached * ids <= cache["ids_per_step"] <= len(stock["plan_tables"]) * ids
    assert 0 < cache["unique_misses_per_step"] <= cache["unique_ids_per_step"] <= cached * ids + 1
    assert hash_row["uvm_cache"] is None
    assert "UVM cache (tables in host memory" in (tmp_path / "bench.md").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_small_layout_single_gpu(tmp_path: Path) -> None:
    payload = _run(tmp_path, "--device", "cuda", "--batch-size", "1024", "--pipeline", "--optimizer", "rowwise_adagrad")
    _check_results(payload)
    env = payload["environment"]
    assert env["backend"] == "nccl" and env["device"] == "cuda" and env["device_name"]
    for r in payload["results"]:
        assert r["peak_bytes_max"] > 0 and r["peak_bytes_vs_stock"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_two_ranks_sharing_one_gpu_count_their_syncs(tmp_path: Path) -> None:
    # --device cuda-shared: 2 gloo ranks on GPU 0 with real all-to-alls between them; each method's host-device
    # synchronisations per step across ranks, table-wise (one input dist for every method) against stock's
    payload = _run(
        tmp_path, "--device", "cuda-shared", "--model", "dlrm", "--pipeline", "--sharding-type", "table_wise",
        "--profile", "all", "--profile-steps", "2", nproc=2, timeout=600,
    )  # fmt: skip
    env = payload["environment"]
    assert (env["world_size"], env["ranks_per_device"], env["backend"], env["device"]) == (2, 2, "gloo", "cuda")
    assert env["ranks_per_host"] == 2  # planned as one host's two GPUs, every shard placed on GPU 0
    _check_results(payload, models=("dlrm",))
    total = torch.cuda.get_device_properties(0).total_memory
    rows = {r["method"]: r for r in payload["results"]}
    stock = rows["stock"]["profile"]["host_syncs"]["per_step"]
    assert stock >= 1, rows["stock"]["profile"]["host_syncs"]  # the counter sees TorchRec's own
    for method, r in rows.items():
        assert r["hbm_cap_bytes"] == total // 2, method  # each rank plans with half the GPU
        syncs = r["profile"]["host_syncs"]
        assert syncs["per_step"] <= stock, (method, syncs, rows["stock"]["profile"]["host_syncs"])
    assert "2 ranks, 2 sharing each" in (tmp_path / "bench.md").read_text()
