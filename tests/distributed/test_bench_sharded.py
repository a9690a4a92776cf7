# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``scripts/bench_sharded.py`` runs end to end: tiny layout, one process (gloo on CPU; NCCL on CUDA if present).

The script is started as a user would start it (a plain ``python scripts/bench_sharded.py``, which creates its own
single-rank process group), and its JSON must hold a measured row for every (model, method).
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_sharded.py"
METHODS = {"stock", "memcom", "lma", "hash", "qr"}
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _run(tmp_path: Path, *extra: str, timeout: float = 300) -> Dict[str, Any]:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--layout",
        "tiny",
        "--iters",
        "2",
        "--warmup",
        "1",
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


def _check_results(payload: Dict[str, Any]) -> None:
    results = payload["results"]
    for model in ("ebc", "dlrm"):
        rows = {r["method"]: r for r in results if r["model"] == model}
        assert set(rows) == METHODS, (model, sorted(rows))
        for method, r in rows.items():
            assert r["status"] == "ok", (model, method, r.get("reason"))
            assert r["samples_per_s"] > 0 and r["step_ms_median"] > 0
            assert r["plan_tables"], (model, method)
            assert r["local_embedding_bytes_max"] > 0
            if method == "stock":
                assert r["throughput_vs_stock"] == pytest.approx(1.0)
                assert r["compression_ratio"] == pytest.approx(1.0)
            else:
                assert r["compression_ratio"] > 8, (model, method, r["compression_ratio"])
                assert r["report_bytes_vs_stock"] < 0.125


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sharded", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_layout_single_process_cpu(tmp_path: Path) -> None:
    start = time.perf_counter()
    payload = _run(tmp_path, "--device", "cpu")
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"took {elapsed:.0f} s"
    _check_results(payload)
    env = payload["environment"]
    assert env["world_size"] == 1 and env["device"] == "cpu" and env["backend"] == "gloo"
    assert payload["config"]["layout_spec"]["batch_size"] == 64
    md = (tmp_path / "bench.md").read_text()
    assert "| ebc | stock EBC |" in md and "| dlrm | MEmCom 16x |" in md
    # the scaling helper reads two runs' JSON (here the same run twice: 1.00x, 100%)
    table = _load_script().combine([str(tmp_path / "bench.json")] * 2)
    assert "| ebc | stock EBC |" in table and "1.00x" in table


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_small_layout_single_gpu(tmp_path: Path) -> None:
    payload = _run(tmp_path, "--device", "cuda", "--batch-size", "1024", "--pipeline", "--optimizer", "rowwise_adagrad")
    _check_results(payload)
    env = payload["environment"]
    assert env["backend"] == "nccl" and env["device"] == "cuda" and env["device_name"]
    for r in payload["results"]:
        assert r["peak_bytes_max"] > 0 and r["peak_bytes_vs_stock"] > 0
