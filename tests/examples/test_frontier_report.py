# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``recipes.frontier_report`` on a fixed sweep JSON: means and stds over seeds, lift over the no-id model, share of
stock's lift, relative loss against the best stock point (chosen by validation), Pareto curves, markdown and PNG."""

import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from torchrec_memcom.recipes.frontier_report import aggregate, goal_checks, markdown, pareto, write_report


def _rec(
    line: str,
    point: str,
    target: int,
    seed: int,
    test: float,
    val: float,
    nbytes: int,
    lr: float = 0.05,
    status: str = "ok",
) -> Dict[str, Any]:
    tags = {
        "protocol": "ctr",
        "line": line,
        "point": point,
        "d": 8,
        "target": target,
        "spec": None,
        "seed": seed,
        "sparse_lr": lr,
        "dense_lr": 0.05,
        "phase": "frontier",
    }
    result: Optional[Dict[str, Any]] = {
        "final": {"split": "test", "auc": test},
        "early_stopping": {"best_value": val, "best_epoch": seed + 1},
        "evals": [],
        "embedding_bytes": nbytes,
        "compression": 1.0,
        "train": {"samples_per_s": 1000.0},
    }
    return {
        "run": {"name": f"{point}-s{seed}-{lr}", "tags": tags},
        "status": status,
        "result": result if status == "ok" else None,
        "error": None if status == "ok" else "boom",
    }


@pytest.fixture
def payload() -> Dict[str, Any]:
    records: List[Dict[str, Any]] = [
        _rec("stock", "stock-d4", 4, 0, 0.80, 0.79, 400),
        _rec("stock", "stock-d4", 4, 1, 0.82, 0.0, 400),
        _rec("stock", "stock-d8", 8, 0, 0.86, 0.85, 800),  # best stock by validation
        _rec("stock", "stock-d8", 8, 1, 0.84, 0.0, 800),
        _rec("stock", "stock-d16", 16, 0, 0.90, 0.84, 1600),  # better on test, worse on val: not the reference
        _rec("stock", "stock-d16", 16, 0, 0.99, 0.99, 1600, lr=0.15),  # a tuning trial at another rate: left out
        _rec("hash", "hash-d8-r2", 4, 0, 0.83, 0.82, 420),
        _rec("hash", "hash-d8-r2", 4, 1, 0.81, 0.0, 420),
        _rec("hash", "hash-d16-r4", 4, 0, 0.70, 0.70, 410),  # seed 0 only: not selected
        _rec("hash", "hash-d16-r2", 8, 0, 0.79, 0.78, 820, status="failed"),
        _rec("no-id", "no-id-d16", 0, 0, 0.60, 0.60, 100),
        _rec("no-id", "no-id-d16", 0, 1, 0.62, 0.61, 100),
    ]
    tuned = {
        "stock": {"sparse_lr": 0.05, "dense_lr": 0.05},
        "hash": {"sparse_lr": 0.05, "dense_lr": 0.05},
        "no-id": {"sparse_lr": 0.05, "dense_lr": 0.05, "from": "stock"},
    }
    plan = {
        "label": "ML-1M CTR",
        "metric": "auc",
        "recipe": "dlrm",
        "config": "ml1m_stock",
        "synthetic": False,
        "common_overrides": ["train.batch_size=4096"],
        "lr_grid": [[0.05, 0.05], [0.15, 0.05]],
        "tuned": tuned,
        "selected": {"hash": {"4": "hash-d8-r2"}},
        "infeasible": [],
        "allocator": None,
        "ceiling": None,
    }
    return {
        "final": True,
        "plans": {"ctr": plan},
        "records": records,
        "environment": {"device": "test"},
        "wall_seconds": 60.0,
    }


def test_aggregates_against_hand_computed_values(payload: Dict[str, Any]) -> None:
    rows = {r["point"]: r for r in aggregate(payload, "ctr")}
    assert set(rows) == {"stock-d4", "stock-d8", "stock-d16", "hash-d8-r2", "hash-d16-r4", "no-id-d16"}
    d4 = rows["stock-d4"]
    assert d4["seeds"] == [0, 1] and d4["test"]["mean"] == pytest.approx(0.81)
    assert d4["test"]["std"] == pytest.approx(statistics.stdev([0.80, 0.82]))
    assert rows["stock-d16"]["test"]["mean"] == pytest.approx(0.90)  # the 0.15 trial is not mixed in
    noid, ref = 0.61, 0.85  # no-id mean; stock-d8 (best by validation, not by test) mean
    h = rows["hash-d8-r2"]
    assert h["best_stock"] == "stock-d8" and h["selected"] and not rows["hash-d16-r4"]["selected"]
    assert h["lift"] == pytest.approx(0.82 - noid)
    assert h["lift_kept"] == pytest.approx((0.82 - noid) / (ref - noid))
    assert h["rel_loss"] == pytest.approx((ref - 0.82) / ref)
    assert rows["stock-d16"]["rel_loss"] == pytest.approx((ref - 0.90) / ref)  # negative: better than the reference
    assert h["best_epoch"]["mean"] == pytest.approx(1.5)


def test_pareto_keeps_points_no_cheaper_point_beats(payload: Dict[str, Any]) -> None:
    rows = aggregate(payload, "ctr")
    stock = pareto([r for r in rows if r["line"] == "stock"])
    assert [r["point"] for r in stock] == ["stock-d4", "stock-d8", "stock-d16"]
    hashed = pareto([r for r in rows if r["line"] == "hash"])
    assert [r["point"] for r in hashed] == ["hash-d16-r4", "hash-d8-r2"]  # 410 B at 0.70, then 420 B at 0.82
    everything = pareto(rows)
    assert [r["point"] for r in everything] == ["no-id-d16", "stock-d4", "hash-d8-r2", "stock-d8", "stock-d16"]


def test_markdown_and_plot(payload: Dict[str, Any], tmp_path: Path) -> None:
    text = markdown(payload, {"ctr": "quality_ctr.png"})
    assert "CPU SMOKE RUN" not in text
    assert "| hash | hash-d8-r2 | 420 B |" not in text  # bytes are rendered in KiB / MiB
    line = next(row for row in text.splitlines() if row.startswith("| hash | hash-d8-r2 |"))
    assert "0.8200 ± 0.0141" in line and "+0.2100" in line and "88%" in line and "+3.5%" in line
    assert "hash-d16-r4" not in text.split("Best stock point")[0]  # seed-0-only points stay in the JSON and plot
    smoke = markdown({**payload, "final": False}, {})
    assert "CPU SMOKE RUN" in smoke
    out = write_report(payload, str(tmp_path / "RESULTS.md"), str(tmp_path / "img"))
    assert out["plots"]["ctr"] == "img/quality_ctr.png" and (tmp_path / "img" / "quality_ctr.png").stat().st_size > 0


def test_goal_checks_compare_methods_with_stock_at_each_small_byte_point(payload: Dict[str, Any]) -> None:
    rows = aggregate(payload, "ctr")
    for r in rows:
        if r["point"] == "stock-d8":
            r["d"] = 128  # a best stock model 16x wider than the byte point 4 (at 8 only 4 would qualify)
    lines = goal_checks(rows, payload["plans"]["ctr"])
    assert len(lines) == 3 and "byte point 4 (MET)" in lines[2]
    assert "`hash-d8-r2` 0.8200 ± 0.0141" in lines[2] and "`stock-d4` 0.8100 ± 0.0141" in lines[2]
    assert "+0.0100" in lines[2]


def _alloc_rows(proposal: Dict[str, Any], test: float) -> List[Dict[str, Any]]:
    def row(line: str, point: str, spec: Any, mean: float, d: int = 16, target: int = 0) -> Dict[str, Any]:
        return {
            "line": line,
            "point": point,
            "spec": spec,
            "d": d,
            "target": target,
            "embedding_bytes": 400,
            "test": {"mean": mean, "std": 0.0, "n": 3},
            "best_stock": "stock-d16",
        }

    return [
        row("stock", "stock-d16", None, 0.80),
        row("lowrank", "lowrank-d16-b2", {"type": "lowrank", "base_dim": 2}, 0.8500, target=8),
        row("alloc-measured", "alloc-measured-d16", proposal, test, target=8),
    ]


@pytest.mark.parametrize(
    "proposal, test, verdict",
    [
        # the proposal is the uniform point's tables: a tie, whatever the noise between the two runs says
        (
            {"user": {"type": "lowrank", "base_dim": 2}, "movie": {"type": "lowrank", "base_dim": 2}},
            0.8499,
            "(MET: the same tables, a tie up to GPU run-to-run noise)",
        ),
        (
            {"user": {"type": "lowrank", "base_dim": 2}, "movie": {"type": "stock", "embedding_dim": 2}},
            0.8499,
            "(MISSED)",
        ),
        ({"user": {"type": "hash", "compression": 8}, "movie": {"type": "lowrank", "base_dim": 2}}, 0.8501, "(MET)"),
    ],
)
def test_goal_checks_allocator_against_the_uniform_point(proposal: Dict[str, Any], test: float, verdict: str) -> None:
    plan = {"metric": "auc", "allocator": {"uniform_at_budget": "lowrank-d16-b2"}}
    lines = goal_checks(_alloc_rows(proposal, test), plan)
    alloc = [ln for ln in lines if ln.startswith("- alloc-measured")]
    assert len(alloc) == 1 and verdict in alloc[0] and "`lowrank-d16-b2`" in alloc[0], lines


def test_allocator_section_lists_the_jointly_checked_candidates(payload: Dict[str, Any]) -> None:
    plan = payload["plans"]["ctr"]
    tables = {"user": {"type": "stock", "embedding_dim": 8}}
    verified = {"knapsack": 0.8844, 'uniform {"type": "qr", "compression": 8}': 0.8722}
    plan.update(alloc_budget=4096, alloc_target=8)
    plan["allocator"] = {"alloc-measured": {"tables": tables, "embedding_bytes": 4000, "verified": verified}}
    text = markdown(payload, {})
    assert "- alloc-measured: test auc not run at 4 KiB" in text
    assert (
        '(joint short runs, validation auc): knapsack 0.8844, uniform {"type": "qr", "compression": 8} 0.8722' in text
    )
