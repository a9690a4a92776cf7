# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``examples/dlrm/train.py`` end to end on CPU: 2 gloo processes via torchrun (every table type in one model,
row-wise MEmCom and LMA), exact resume from a DCP checkpoint, one process, and the comparison report.

Uses a tiny SYNTHETIC Criteo-layout config (overrides of ``synthetic_criteo_stock.yaml``), so each launch is a
few seconds of training plus the processes' start-up (importing TorchRec).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "examples/dlrm/configs/synthetic_criteo_stock.yaml"
STEPS = 8
CKPT_EVERY = 4

# Six features; one table of each type (stock for the rest), two of them row-wise: the sharded paths that matter.
TINY = [
    "data.num_features=6",
    "data.num_embeddings=2000",
    "data.train_rows=4096",
    "data.eval_rows=512",
    "model.embedding_dim=16",
    "model.dense_arch_layer_sizes=[16, 16]",
    "model.over_arch_layer_sizes=[16, 1]",
    "tables={cat_0: {type: memcom, compression: 4}, cat_1: {type: lma, compression: 4, chunk_size: 8},"
    " cat_2: {type: qr, compression: 4}, cat_3: {type: hash, compression: 4}}",
    "sharding={cat_0: [row_wise], cat_1: [row_wise]}",
    "train.batch_size=64",
    f"train.max_steps={STEPS}",
    "train.log_every_steps=2",
    "train.lma_signature_rows=2000",
    "eval.batch_size=100",
    "eval.every_steps=4",
    "output.run_name=tiny",
]


def _env() -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # torchrun / torchx of this venv
    return env


def _run(cmd: List[str], timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _torchrun(*args: str) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return _run([*cmd, "examples/dlrm/train.py", "--config", CONFIG, *args])


def _losses(path: Path) -> Dict[int, float]:
    return {int(s): v for s, v in json.loads(path.read_text())["train"]["losses"]}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted 2-process run with checkpoints every ``CKPT_EVERY`` steps; returns its folder."""
    out = tmp_path_factory.mktemp("dlrm2")
    _torchrun(
        "--set",
        *TINY,
        f"output.dir={out}",
        f"checkpoint.dir={out}/ckpt",
        f"checkpoint.every_steps={CKPT_EVERY}",
        "checkpoint.keep=null",
    )
    return out


def test_two_ranks_end_to_end(two_ranks: Path) -> None:
    r = json.loads((two_ranks / "results.json").read_text())
    assert r["world_size"] == 2 and r["device"] == "cpu"
    assert r["train"]["steps"] == STEPS and len(r["train"]["losses"]) == STEPS
    assert r["train"]["samples_per_s"] > 0
    assert all(0 < v < 5 for _, v in r["train"]["losses"])
    methods = {t["method"] for t in r["memory"]["tables"]}
    assert methods == {"stock", "memcom", "lma", "qr", "hash"}
    assert 1 < r["compression"] and r["embedding_bytes"] < r["stock_embedding_bytes"]
    assert r["lma_signature_coverage"]["t_cat_1"] > 0.2  # power-law ids: 2,000 rows see about 30% of them
    assert "row_wise" in r["plan"]
    # periodic val evaluations and the final test one (synthetic splits come in whole batches: 2 x 2 x 100 rows)
    assert [(e["step"], e["split"]) for e in r["evals"]] == [(4, "val"), (8, "val"), (8, "test")]
    for e in r["evals"]:
        assert e["num_samples"] == 400 and 0 < e["auc"] < 1 and e["logloss"] > 0
    assert r["final"]["split"] == "test"
    assert sorted(p.name for p in (two_ranks / "ckpt").iterdir()) == ["step_4", "step_8"]


def test_resume_reproduces_the_uninterrupted_losses(two_ranks: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(two_ranks / "ckpt" / f"step_{CKPT_EVERY}", ckpt / f"step_{CKPT_EVERY}")
    out = _torchrun("--set", *TINY, f"output.dir={tmp_path}", f"checkpoint.dir={ckpt}", "--resume")
    assert f"resumed from {ckpt}/step_{CKPT_EVERY} at step {CKPT_EVERY}" in out
    full, resumed = _losses(two_ranks / "results.json"), _losses(tmp_path / "results.json")
    assert sorted(resumed) == list(range(CKPT_EVERY + 1, STEPS + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], rel=1e-5, abs=1e-6), (step, loss, full[step])
    first = json.loads((two_ranks / "results.json").read_text())["final"]
    again = json.loads((tmp_path / "results.json").read_text())["final"]
    assert again["auc"] == pytest.approx(first["auc"], abs=1e-5)


def test_one_process(tmp_path: Path) -> None:
    out = _run(
        [
            sys.executable,
            "examples/dlrm/train.py",
            "--config",
            CONFIG,
            "--set",
            *TINY,
            "sharding={}",
            "train.max_steps=3",
            "eval.every_steps=null",
            f"output.dir={tmp_path}",
        ]
    )
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["world_size"] == 1 and r["train"]["steps"] == 3
    assert "[dlrm tiny] test AUC" in out


def test_config_errors_exit_before_training(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "examples/dlrm/train.py", "--config", CONFIG, "--set", "tables.cat_0.type=bloom"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert f"config error: {CONFIG}: tables.cat_0: table 't_cat_0': unknown table type 'bloom'" in proc.stderr


def test_report(two_ranks: Path, tmp_path: Path) -> None:
    out = _run([sys.executable, "examples/dlrm/report.py", str(two_ranks / "results.json"), "--out", str(tmp_path)])
    assert "tiny" in out and "test AUC" in out
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert json.loads((tmp_path / "comparison.json").read_text())["runs"][0]["run"] == "tiny"
