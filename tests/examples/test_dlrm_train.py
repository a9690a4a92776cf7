# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The DLRM recipe end to end on CPU: 2 gloo processes via torchrun (every table type in one model, row-wise MEmCom
and LMA), exact resume from a DCP checkpoint, automatic resume after killed ranks under ``torchrun --max-restarts``
(bitwise the uninterrupted model), the checkout's entry point, and the comparison report.

Uses the tiny SYNTHETIC config of ``tests/examples/tiny.py``, so each launch is a few seconds of training plus the
processes' start-up (importing TorchRec).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.examples.tiny import CONFIG, STEPS, TINY, committed

ROOT = Path(__file__).resolve().parents[2]
CKPT_EVERY = 4


def _env(gpu: bool = False) -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # torchrun / torchx of this venv
    env.pop("TORCHELASTIC_RESTART_COUNT", None)
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU and gloo even on a GPU machine: the comparisons are bitwise
    return env


def _run(cmd: List[str], timeout: int = 600, gpu: bool = False) -> str:
    """Runs ``cmd`` in its own session, so a timeout also ends the workers torchrun started."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_env(gpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout} s:\n{out[-6000:]}") from None
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _torchrun(
    *args: str, script: List[str] = ("-m", "torchrec_memcom.recipes.dlrm"), restarts: int = 0, gpu: bool = False
) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["--max-restarts", str(restarts), "--monitor-interval", "0.2"]
    return _run([*cmd, *script, "--config", CONFIG, *args], gpu=gpu)


def _results(path: Path) -> Dict:
    return json.loads((path / "results.json").read_text())


def _losses(path: Path) -> Dict[int, float]:
    return {int(s): v for s, v in _results(path)["train"]["losses"]}


def _state(checkpoint: Path, tmp: Path) -> Dict[str, torch.Tensor]:
    """Every tensor of a DCP checkpoint (model and optimizers, whole tables), by flattened key."""
    dcp_to_torch_save(checkpoint, tmp / "state.pt")
    flat: Dict[str, torch.Tensor] = {}

    def walk(d: Dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif torch.is_tensor(v):
                flat[f"{prefix}{k}"] = v

    walk(torch.load(tmp / "state.pt", weights_only=False), "")
    return flat


def _assert_same_model(a: Path, b: Path, tmp: Path) -> None:
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    sa, sb = _state(a, tmp / "a"), _state(b, tmp / "b")
    assert sa.keys() == sb.keys() and len(sa) > 20
    assert any(k.startswith("optimizer.") for k in sa) and any("entity_weights" in k for k in sa)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different


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
    r = _results(two_ranks)
    assert r["status"] == "ok" and r["world_size"] == 2 and r["device"] == "cpu"
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
    assert committed(two_ranks / "ckpt") == ["step_4", "step_8"]
    record = json.loads((two_ranks / "ckpt/step_4/checkpoint.json").read_text())
    assert record["trainer"] == {
        "step": 4, "epoch": 0, "samples_in_epoch": 512, "global_batch": 128, "batch_size": 64, "seed": 2026
    }  # fmt: skip
    assert record["world_size"] == 2 and {"rng_rank0.pt", "rng_rank1.pt", ".metadata"} <= set(record["files"])


def test_resume_reproduces_the_uninterrupted_run_bitwise(two_ranks: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(two_ranks / "ckpt" / f"step_{CKPT_EVERY}", ckpt / f"step_{CKPT_EVERY}")
    out = _torchrun("--resume", "--set", *TINY, f"output.dir={tmp_path}", f"checkpoint.dir={ckpt}")
    assert f"resumed from {ckpt}/step_{CKPT_EVERY} at step {CKPT_EVERY}" in out
    full, resumed = _losses(two_ranks), _losses(tmp_path)
    assert resumed == {s: full[s] for s in range(CKPT_EVERY + 1, STEPS + 1)}
    final, again = _results(two_ranks)["final"], _results(tmp_path)["final"]
    assert {**again, "seconds": 0} == {**final, "seconds": 0}
    _assert_same_model(two_ranks / f"ckpt/step_{STEPS}", ckpt / f"step_{STEPS}", tmp_path)


@pytest.mark.slow
def test_killed_ranks_restart_and_match(two_ranks: Path, tmp_path: Path) -> None:
    """``torchrun --max-restarts 2``: rank 0 dies while committing step 6, then rank 1 dies in step 7 of the first
    restart (see ``faulty_dlrm.py``). Each restart resumes by itself (no ``--resume``) from the newest committed
    checkpoint, and the run ends with exactly the uninterrupted run's model, losses and metrics."""
    ckpt = tmp_path / "ckpt"
    out = _torchrun(
        "--set",
        *TINY,
        f"output.dir={tmp_path}",
        f"checkpoint.dir={ckpt}",
        "checkpoint.every_steps=2",
        "checkpoint.keep=null",
        script=["tests/examples/faulty_dlrm.py"],
        restarts=2,
    )
    assert f"removing {ckpt}/step_6.tmp (left by an interrupted save)" in out  # the half-written step 6
    assert f"resumed from {ckpt}/step_4 at step 4 (epoch 0, row 512 of the epoch; restart 1)" in out
    assert f"resumed from {ckpt}/step_6 at step 6 (epoch 0, row 768 of the epoch; restart 2)" in out
    r, full = _results(tmp_path), _results(two_ranks)
    assert r["status"] == "ok" and r["train"]["resumed_from"] == f"{ckpt}/step_6"
    assert _losses(tmp_path) == {s: v for s, v in _losses(two_ranks).items() if s > 6}
    for mine, theirs in zip(r["evals"], full["evals"][1:]):  # this attempt's evaluations: step 8 val and test
        assert {**mine, "seconds": 0} == {**theirs, "seconds": 0}
    assert committed(ckpt) == ["step_2", "step_4", "step_6", "step_8"]
    _assert_same_model(two_ranks / f"ckpt/step_{STEPS}", ckpt / f"step_{STEPS}", tmp_path)


def test_checkout_entry_point_one_process(tmp_path: Path) -> None:
    overrides = ["sharding={}", "train.max_steps=3", "eval.every_steps=null", f"output.dir={tmp_path}"]
    out = _run([sys.executable, "examples/dlrm/train.py", "--config", CONFIG, "--set", *TINY, *overrides])
    r = _results(tmp_path)
    assert r["world_size"] == 1 and r["train"]["steps"] == 3
    assert "[dlrm tiny] test AUC" in out


def test_errors_exit_before_training_with_one_line(tmp_path: Path) -> None:
    cases = {
        "tables.cat_0.type=bloom": f"{CONFIG}.yaml: tables.cat_0: table 't_cat_0': unknown table type",
        "optimizer.dense.lr=1e30": f"{CONFIG}.yaml: optimizer.dense.lr: must be in (0, 1000], got 1e+30",
    }
    for override, message in cases.items():
        cmd = [sys.executable, "-m", "torchrec_memcom.recipes.dlrm", "--config", CONFIG, "--set", override]
        proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and proc.stderr.startswith("config error: ") and message in proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr


def test_report(two_ranks: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torchrec_memcom.recipes.report", str(two_ranks / "results.json"), "--out"]
    out = _run([*cmd, str(tmp_path)])
    assert "tiny" in out and "test AUC" in out
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert json.loads((tmp_path / "comparison.json").read_text())["runs"][0]["run"] == "tiny"
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({"status": "failed", "error": "TrainingDiverged: ..."}))
    proc = subprocess.run([*cmd[:3], str(failed)], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "not a finished run (status 'failed': TrainingDiverged" in proc.stderr


def test_report_labels_each_kind_of_table() -> None:
    from torchrec_memcom.recipes.report import _methods

    tables = {
        "user": {"type": "memcom", "compression": 16},
        "movie": {"type": "lowrank", "base_dim": 4},
        "zip": {"type": "hash", "base_dim": 16, "compression": 8},
        "age": {"type": "stock"},
    }
    assert _methods({"config": {"tables": tables}}) == "hash 8x, lowrank b4, memcom 16x"
    assert _methods({"config": {"tables": {}}}) == "stock"


def test_shared_gpu_device_without_cuda_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from torchrec_memcom.recipes.config import ConfigError
    from torchrec_memcom.recipes.dlrm import DLRMTask
    from torchrec_memcom.recipes.runner import main

    with pytest.raises(ConfigError, match=r"--device: .*device='cuda-shared', but CUDA is not available"):
        main(DLRMTask, ["--config", CONFIG, "--device", "cuda-shared"])


@pytest.mark.gpu
def test_two_ranks_sharing_one_gpu_train_and_resume(tmp_path: Path) -> None:
    """``--device cuda-shared``: 2 ranks on GPU 0 (gloo), planned as one host's two GPUs, train the tiny DLRM with
    MEmCom and LMA row-wise, evaluate, checkpoint, and resume from step 4 to the uninterrupted run's losses, metrics
    and state (to float tolerance: GPU kernels)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    full, part = tmp_path / "full", tmp_path / "part"
    sets = [*TINY, f"checkpoint.every_steps={CKPT_EVERY}", "checkpoint.keep=null"]
    out = _torchrun(
        "--device", "cuda-shared", "--set", *sets, f"output.dir={full}", f"checkpoint.dir={full}/ckpt", gpu=True
    )
    r = _results(full)
    assert (r["status"], r["world_size"], r["device"], r["ranks_per_device"]) == ("ok", 2, "cuda", 2)
    assert "2 x cuda (2 ranks sharing each)" in out
    # one host of two GPUs: rank 1's shards planned on cuda:1, placed on the shared GPU 0
    assert "row_wise" in r["plan"] and "rank:1/cuda:0" in r["plan"] and "cuda:1" not in r["plan"], r["plan"]
    assert [(e["step"], e["split"]) for e in r["evals"]] == [(4, "val"), (8, "val"), (8, "test")]
    assert all(0 < e["auc"] < 1 for e in r["evals"])
    ckpt = part / "ckpt"
    shutil.copytree(full / "ckpt" / f"step_{CKPT_EVERY}", ckpt / f"step_{CKPT_EVERY}")
    out = _torchrun(
        "--device", "cuda-shared", "--resume", "--set", *TINY, f"output.dir={part}", f"checkpoint.dir={ckpt}", gpu=True
    )
    assert f"resumed from {ckpt}/step_{CKPT_EVERY} at step {CKPT_EVERY}" in out
    resumed, uninterrupted = _losses(part), _losses(full)
    assert resumed.keys() == set(range(CKPT_EVERY + 1, STEPS + 1))
    for step, loss in resumed.items():
        assert abs(loss - uninterrupted[step]) < 1e-5, (step, loss, uninterrupted[step])
    assert abs(_results(part)["final"]["auc"] - r["final"]["auc"]) < 1e-4
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sa, sb = _state(full / f"ckpt/step_{STEPS}", tmp_path / "a"), _state(ckpt / f"step_{STEPS}", tmp_path / "b")
    assert sa.keys() == sb.keys() and any("entity_weights" in k for k in sa)
    differ = [k for k in sa if not torch.allclose(sa[k].double(), sb[k].double(), atol=1e-4, rtol=1e-4)]
    assert not differ, differ


@pytest.mark.gpu
@pytest.mark.parametrize("dense", ["adagrad", "adam"])
def test_cuda_graph_steps_train_like_the_pipeline(tmp_path: Path, dense: str) -> None:
    """One GPU: ``train.cuda_graph`` (11 eager steps for DDP, then replays, evaluations between them) trains the
    tiny DLRM like ``TrainPipelineSparseDist``: the same losses, evaluations and checkpointed state, with the dense
    Adagrad (host-side step counters, counted per replay) and Adam (on CUDA built ``capturable=True`` in both runs:
    its step counter on the GPU)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    steps = 20
    runs = {}
    for graph in ("false", "true"):
        out = tmp_path / graph
        sets = [*TINY, f"train.max_steps={steps}", f"train.cuda_graph={graph}", f"optimizer.dense.name={dense}"]
        sets += [f"output.dir={out}", f"checkpoint.dir={out}/ckpt", f"checkpoint.every_steps={steps}"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        _run([*cmd, "-m", "torchrec_memcom.recipes.dlrm", "--config", CONFIG, "--set", *sets], gpu=True)
        runs[graph] = out
    eager, graphed = _results(runs["false"]), _results(runs["true"])
    assert graphed["status"] == "ok" and graphed["device"] == "cuda" and graphed["train"]["steps"] == steps
    torch.testing.assert_close(
        torch.tensor([v for _, v in graphed["train"]["losses"]]),
        torch.tensor([v for _, v in eager["train"]["losses"]]),
        atol=1e-5,
        rtol=1e-4,
    )
    for a, b in zip(graphed["evals"], eager["evals"]):
        assert (a["step"], a["split"]) == (b["step"], b["split"]) and abs(a["auc"] - b["auc"]) < 1e-4, (a, b)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sa = _state(runs["true"] / f"ckpt/step_{steps}", tmp_path / "a")
    sb = _state(runs["false"] / f"ckpt/step_{steps}", tmp_path / "b")
    assert sa.keys() == sb.keys() and any("entity_weights" in k for k in sa)
    assert any(k.endswith(".step") for k in sa), sorted(sa)  # the dense optimizer's step counters are compared
    differ = [k for k in sa if not torch.allclose(sa[k].double(), sb[k].double(), atol=1e-4, rtol=1e-4)]
    assert not differ, differ  # e.g. the dense Adagrad's host-side step counters, which replays must count
