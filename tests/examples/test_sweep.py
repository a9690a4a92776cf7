# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``recipes.sweep`` and ``recipes.frontier`` on tiny SYNTHETIC DLRM runs: runs in this process and in worker
processes give the same results, finished runs are cached and skipped on a rerun, failures are recorded, dependent
stages run in order, and a toy frontier study goes end to end (tuning, seeds, JSON, report)."""

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import List

import pytest
import torch

from tests.examples.tiny import CONFIG, TINY
from torchrec_memcom.recipes.frontier import Protocol, Study
from torchrec_memcom.recipes.frontier_report import aggregate, write_report
from torchrec_memcom.recipes.quality import run_study
from torchrec_memcom.recipes.sweep import Pool, Record, Run, run_all

BASE = tuple(t for t in TINY if not t.startswith(("sharding=", "tables="))) + ("sharding={}",)


def _runs() -> List[Run]:
    return [
        Run("stock-s1", "dlrm", CONFIG, (*BASE, "train.seed=1")),
        Run("hash-s2", "dlrm", CONFIG, (*BASE, "tables={cat_0: {type: hash, compression: 4}}", "train.seed=2")),
    ]


@pytest.fixture(autouse=True)
def _cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # in-process runs: CPU and gloo everywhere


def test_in_process_and_worker_runs_agree_and_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    inline = run_all(_runs(), str(tmp_path / "a"), workers=0, progress=False)
    # the in-process runs leave no rank variables behind (a later torchrun or recipe process would join a stale job)
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT"} & set(os.environ)
    assert all(r.status == "ok" and not r.cached for r in inline.values())
    auc = {name: r.result["final"]["auc"] for name, r in inline.items()}
    assert auc["stock-s1"] != auc["hash-s2"]
    assert inline["hash-s2"].result["embedding_bytes"] < inline["stock-s1"].result["embedding_bytes"]
    # two worker processes, each its own one-process group: the same numbers, bitwise
    parallel = run_all(_runs(), str(tmp_path / "b"), workers=2, cpu=True, progress=False)
    assert {name: r.result["final"]["auc"] for name, r in parallel.items()} == auc
    # a rerun finds every result in the cache and starts nothing
    again = run_all(_runs(), str(tmp_path / "b"), workers=2, cpu=True, progress=False)
    assert all(r.cached for r in again.values())
    assert {name: r.result["final"]["auc"] for name, r in again.items()} == auc
    # changing a run's overrides changes its key: it runs again
    changed = dataclasses.replace(_runs()[0], overrides=(*BASE, "train.seed=3"))
    fresh = run_all([changed], str(tmp_path / "b"), workers=0, progress=False)
    assert not fresh["stock-s1"].cached and fresh["stock-s1"].result["final"]["auc"] != auc["stock-s1"]


def test_failures_are_recorded_and_retried_on_request(tmp_path: Path) -> None:
    bad = Run("bad", "dlrm", CONFIG, (*BASE, "optimizer.dense.lr=1e30"))
    first = run_all([bad], str(tmp_path), workers=0, progress=False)["bad"]
    assert first.status == "failed" and "ConfigError" in first.error and "lr" in first.error
    assert run_all([bad], str(tmp_path), workers=0, progress=False)["bad"].cached
    retried = run_all([bad], str(tmp_path), workers=0, progress=False, retry_failed=True)["bad"]
    assert not retried.cached and retried.status == "failed"
    saved = json.loads((tmp_path / "runs" / "bad.json").read_text())
    assert saved["status"] == "failed" and saved["key"] == bad.key


def test_callbacks_run_dependent_stages_and_names_are_unique(tmp_path: Path) -> None:
    order: List[str] = []
    with Pool(str(tmp_path), workers=0, progress=False) as pool:
        first, second = _runs()

        def then(records: List[Record]) -> None:
            order.append("first done")
            pool.submit([second], then=lambda recs: order.append(f"second {recs[0].status}"))

        pool.submit([first], then=then)
        with pytest.raises(ValueError, match="used by two different runs"):
            pool.submit([dataclasses.replace(first, overrides=("train.seed=9",))])
        records = pool.join()
    assert order == ["first done", "second ok"] and set(records) == {"stock-s1", "hash-s2"}


def test_nothing_starts_after_the_deadline(tmp_path: Path) -> None:
    called: List[str] = []
    with Pool(str(tmp_path), workers=0, progress=False, deadline=time.monotonic() - 1) as pool:
        pool.submit(_runs(), then=lambda records: called.append("then"))
        records = pool.join()
    assert records == {} and [r.name for r in pool.skipped] == ["stock-s1", "hash-s2"] and called == []
    assert not (tmp_path / "runs").exists()


def test_run_names_are_checked() -> None:
    with pytest.raises(ValueError, match="run name"):
        Run("a b", "dlrm", CONFIG)
    with pytest.raises(ValueError, match="unknown recipe"):
        Run("a", "wide_deep", CONFIG)


def test_toy_frontier_study_end_to_end(tmp_path: Path) -> None:
    p = Protocol(
        name="toy",
        recipe="dlrm",
        config=CONFIG,
        metric="auc",
        label="toy SYNTHETIC",
        large=("cat_0", "cat_1"),
        base=tuple(t for t in BASE if not t.startswith(("train.max_steps", "eval.every_steps", "model."))),
        sparse_lrs=(0.05, 0.1),
        dense_lrs=(0.05,),
        stock_dims=(4, 8),
        comp_dims=(8,),
        comp_targets=(4,),
        methods=("hash",),
        lowrank_targets=(),
        narrow=(),
        rep_dim=8,
        rep_target=4,
        synthetic=True,
    )
    study = Study(p, seeds=2, max_epochs=2, patience=1, extra=["data.train_rows=640"], allocator=False)
    payload = run_study(str(tmp_path / "sweep"), [study], workers=0, progress=False, final=False)
    plan = payload["plans"]["toy"]
    names = {r["run"]["name"] for r in payload["records"]}
    assert all(r["status"] == "ok" for r in payload["records"])
    # 2 tuning trials for each of stock and hash (at d=8 / ratio 2), the other stock point and no-id at the chosen
    # rate, then the second seed of every line's best point per byte point
    assert set(plan["tuned"]) == {"stock", "hash", "no-id"} and plan["tuned"]["no-id"]["from"] == "stock"
    stock_lr = plan["tuned"]["stock"]
    assert stock_lr["sparse_lr"] == max(
        (0.05, 0.1), key=lambda lr: plan["tuned"]["stock"]["trials"][f"toy-stock-d8-s0-lr{lr:g}x0.05"]
    )
    assert len(names) == 4 + 2 + 4
    rows = {r["point"]: r for r in aggregate(payload, "toy")}
    assert set(rows) == {"stock-d4", "stock-d8", "hash-d8-r2", "no-id-d16"}
    assert all(r["seeds"] == [0, 1] for r in rows.values())
    # every run stopped early or ran both epochs, with its curve in the record
    for rec in payload["records"]:
        es = rec["result"]["early_stopping"]
        assert es["metric"] == "auc" and 1 <= len(es["curve"]) <= 2
    out = write_report(payload, str(tmp_path / "docs" / "RESULTS.md"), str(tmp_path / "docs"))
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "CPU SMOKE RUN" in text and "| hash | hash-d8-r2 |" in text and out["plots"]["toy"] == "quality_toy.png"
    assert (tmp_path / "docs" / "quality_toy.png").stat().st_size > 10_000


def test_toy_study_with_the_allocator(tmp_path: Path) -> None:
    p = Protocol(
        name="toy",
        recipe="dlrm",
        config=CONFIG,
        metric="auc",
        label="toy SYNTHETIC",
        large=("cat_0", "cat_1"),
        base=tuple(t for t in BASE if not t.startswith(("train.max_steps", "eval.every_steps", "model."))),
        sparse_lrs=(0.05,),
        dense_lrs=(0.05,),
        stock_dims=(4, 8),
        comp_dims=(8,),
        comp_targets=(4,),
        methods=("hash",),
        lowrank_targets=(),
        narrow=(),
        rep_dim=8,
        rep_target=4,
        d0=8,
        alloc_target=4,
        alloc_methods=("stock", "hash"),
        alloc_ratios=(2, 4),
        alloc_dims=(8,),
        alloc_lma_ratios=(),
    )
    study = Study(p, seeds=2, max_epochs=1, patience=1, extra=["data.train_rows=640"], allocator=True)
    # the budget is the largest uniform point of the byte point 4: hash at d=8, ratio 2 on cat_0 and cat_1
    assert study.alloc_budget() == 2 * 2000 * 8 * 4 // 2 + 4 * 2000 * 8 * 4
    payload = run_study(str(tmp_path / "sweep"), [study], workers=0, progress=False, final=False)
    assert all(r["status"] == "ok" for r in payload["records"])
    alloc = payload["plans"]["toy"]["allocator"]
    assert alloc["uniform_at_budget"] in {"stock-d4", "stock-d8", "hash-d8-r2"}
    for line in ("alloc-model", "alloc-measured"):
        assert set(alloc[line]["tables"]) == {"cat_0", "cat_1"}
        assert alloc[line]["embedding_bytes"] <= study.alloc_budget()
    rows = {r["line"]: r for r in aggregate(payload, "toy") if r["line"].startswith("alloc")}
    assert set(rows) == {"alloc-model", "alloc-measured"} and all(r["seeds"] == [0, 1] for r in rows.values())
    measured = [r for r in payload["records"] if r["run"]["tags"].get("phase") == "allocator-measure"]
    one_at_a_time = [r for r in measured if r["run"]["name"].startswith("toy-measure-")]
    joint = [r for r in measured if r["run"]["name"].startswith("toy-verify-")]
    assert len(one_at_a_time) == 1 + 2 * 2  # all stock, then each table at hash 2x and 4x (stock does not fit)
    assert 1 <= len(joint) <= 1 + 3 and len(measured) == len(one_at_a_time) + len(joint)  # proposal + <= 3 uniform
    verified = alloc["alloc-measured"]["verified"]
    assert "knapsack" in verified and len(verified) >= len(joint)
    if max(verified, key=verified.__getitem__) != "knapsack":  # a uniform allocation won the joint runs
        specs = alloc["alloc-measured"]["tables"]
        assert specs["cat_0"] == specs["cat_1"], specs
