# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``train.early_stopping`` in the recipes: the run stops after ``patience`` non-improving validation evaluations,
restores the best state (the final metric on the validation split equals the best evaluation's, bitwise), records
the curve, and refuses bad settings up front. Tiny SYNTHETIC DLRM runs in this process (every table type)."""

from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.examples.tiny import TINY, run_in_process
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.schemas import load_recipe_config

STEPS_PER_EPOCH = 16  # 1024 rows / 64 per step
EPOCHS = ["train.max_steps=null", "data.train_rows=1024", "eval.every_steps=null", "eval.final_split=val"]


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stopping: str, *extra: str) -> Dict[str, Any]:
    overrides = [*EPOCHS, f"train.early_stopping={stopping}", f"output.dir={tmp_path / 'out'}", *extra]
    return run_in_process(monkeypatch, overrides)


def _values(r: Dict[str, Any]) -> List[float]:
    return [p["value"] for p in r["early_stopping"]["curve"]]


@pytest.mark.parametrize("keep_best", ["memory", "checkpoint"])
def test_stops_and_restores_the_best_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keep_best: str) -> None:
    # min_delta = 1: no later evaluation can beat the first, so the best state is the first epoch's
    stopping = f"{{metric: auc, patience: 2, min_delta: 1.0, keep_best: {keep_best}}}"
    r = _run(monkeypatch, tmp_path, stopping, "train.epochs=6", f"checkpoint.dir={tmp_path / 'ckpt'}")
    es = r["early_stopping"]
    assert es["stopped_early"] and es["restored"]
    assert r["train"]["steps"] == 3 * STEPS_PER_EPOCH  # 1 best + 2 non-improving epochs of the 6 allowed
    assert [p["step"] for p in es["curve"]] == [16, 32, 48] and [p["epoch"] for p in es["curve"]] == [0, 1, 2]
    assert es["best_step"] == STEPS_PER_EPOCH and es["best_epoch"] == 0
    values = _values(r)
    assert values[1] != values[0] and values[2] != values[0]  # training went on after the best state
    # the final evaluation (on val) sees the restored state: exactly the first evaluation's metrics
    assert r["final"]["split"] == "val"
    assert r["final"]["auc"] == values[0] == es["best_value"]
    assert r["final"]["logloss"] == r["evals"][0]["logloss"]


def test_runs_every_epoch_while_improving_and_keeps_the_best(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    r = _run(monkeypatch, tmp_path, "{metric: logloss, patience: 5}", "train.epochs=3")
    es = r["early_stopping"]
    assert not es["stopped_early"] and r["train"]["steps"] == 3 * STEPS_PER_EPOCH
    assert es["mode"] == "min" and len(es["curve"]) == 3
    values = _values(r)
    best = min(range(3), key=lambda i: values[i])
    assert es["best_epoch"] == best and es["best_value"] == values[best]
    assert r["final"]["logloss"] == values[best]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.early_stopping={metric: ndcg@10}", "'ndcg@10' is not a metric of this recipe"),
        ("train.early_stopping={metric: auc, patience: 0}", "patience: must be >= 1"),
        ("train.early_stopping={metric: auc, keep_best: disk}", "keep_best: must be one of"),
    ],
)
def test_bad_settings_are_refused_when_loading(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe_config("ml1m_stock", [override], recipe="dlrm")


def test_checkpoint_mode_needs_a_checkpoint_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep_best: 'checkpoint' needs a checkpoint.dir"):
        _run(monkeypatch, tmp_path, "{metric: auc, keep_best: checkpoint}", "train.epochs=2")


@pytest.mark.slow
def test_two_ranks_restore_their_own_shards(tmp_path: Path) -> None:
    """2 gloo ranks (MEmCom and LMA row-wise, so every rank holds part of a table): the final validation metrics
    equal the best evaluation's, so each rank restored its own shards of the best state."""
    from tests.examples.test_dlrm_train import _results, _torchrun

    out = tmp_path / "out"
    stopping = "train.early_stopping={metric: auc, patience: 1, min_delta: 1.0}"
    _torchrun("--set", *TINY, *EPOCHS, "data.train_rows=2048", "train.epochs=4", stopping, f"output.dir={out}")
    r = _results(out)
    es = r["early_stopping"]
    assert r["world_size"] == 2 and es["stopped_early"] and es["best_step"] == 16 and len(es["curve"]) == 2
    assert es["curve"][1]["value"] != es["curve"][0]["value"]
    assert r["final"]["auc"] == es["best_value"] and r["final"]["logloss"] == r["evals"][0]["logloss"]
