# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``scripts/bench_quality.py``: a tiny sweep end to end (JSON, PNGs, markdown), its pieces (AUC, data cache,
infeasible points and fallbacks, goal checks) and its agreement with the example configs it mirrors."""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

from torchrec_memcom.recipes.schemas import load_recipe_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_quality.py"


@pytest.fixture(scope="module")
def bq() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_sweep_end_to_end(bq: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "out"
    md = tmp_path / "docs" / "RESULTS.md"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--device",
        "cpu",
        "--seeds",
        "1",
        "--ratios",
        "16,64",
        "--methods",
        "stock,memcom,qr",
        "--trials",
        "2",
        "--max-steps",
        "2",
        "--subsample",
        "0.03",
        "--embedding-dim",
        "32",
        "--ctr-batch-size",
        "512",
        "--ranking-batch-size",
        "512",
        "--out-dir",
        str(out),
        "--results-md",
        str(md),
        "--plots-dir",
        str(tmp_path / "docs"),
        "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    payload = json.loads((out / "quality.json").read_text())
    assert payload["settings"]["trials"] == 2 and payload["environment"]["device"] == "cpu"
    assert payload["command"].startswith("python scripts/bench_quality.py --device cpu")
    runs: List[Dict[str, Any]] = payload["runs"]
    # per protocol: 2 trials x 3 methods, then stock once + memcom and qr at 16x and 64x
    assert len(runs) == 2 * (6 + 5)
    for protocol in ("ctr", "ranking"):
        tuning = payload["tuning"][protocol]
        assert set(tuning) == {"stock", "memcom", "qr"} and all(len(t["trials"]) == 2 for t in tuning.values())
        finals = {(r["method"], r["ratio"]): r for r in runs if r["phase"] == "final" and r["protocol"] == protocol}
        assert finals[("memcom", 16.0)]["reused_from_tuning"]
        qr64 = finals[("qr", 64.0)]
        assert qr64["status"] == "infeasible" and "not reachable" in qr64["reason"]
        assert finals[("memcom", 16.0)]["status"] == "ok" and finals[("memcom", 16.0)]["compression"] > 10
        memcom64 = finals[("memcom", 64.0)]  # with d = 32 MEmCom stays below 32x
        assert memcom64["status"] == "infeasible" and "below d=32x" in memcom64["reason"]
    aggs = {(a["protocol"], a["method"], a["ratio"]): a for a in payload["aggregates"]}
    assert aggs[("ctr", "qr", 64.0)]["status"] == "n/a"
    assert 0 < aggs[("ctr", "stock", None)]["auc"] < 1 and aggs[("ranking", "stock", None)]["ndcg@10"] >= 0
    assert {g["goal"] for g in payload["goals"]} == {g[0] for g in bq.GOALS}
    text = md.read_text()
    assert "## ML-1M CTR with DLRM" in text and "## ML-1M ranking with the two-tower model" in text
    assert "| qr | 64x | n/a |" in text and "| memcom | 64x | n/a |" in text
    assert "Goal checks" in text and "Reduced run" in text
    assert "](quality_ctr.png)" in text and (tmp_path / "docs" / "quality_ranking.png").stat().st_size > 1000
    # the report alone, from the JSON
    md2 = tmp_path / "again.md"
    cmd = [sys.executable, str(SCRIPT), "--report-only", str(out / "quality.json"), "--results-md", str(md2)]
    cmd += ["--plots-dir", str(tmp_path / "plots2")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert md2.read_text().split("## Protocols")[1] == text.split("## Protocols")[1].replace(
        "](quality_", "](plots2/quality_"
    )


def test_binary_auc_matches_torchmetrics(bq: ModuleType) -> None:
    from torchmetrics.functional.classification import binary_auroc

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (2000,), generator=g)
    scores = (labels + torch.randn(2000, generator=g)).round(decimals=1)  # many ties
    assert bq.binary_auc(scores, labels) == pytest.approx(float(binary_auroc(scores, labels)), abs=1e-6)


def test_data_cache_round_trip(bq: ModuleType, tmp_path: Path) -> None:
    from torchrec_memcom.datasets import load_movielens_1m

    data = load_movielens_1m()
    path = tmp_path / "ml1m.npz"
    data.save_npz(str(path))
    back = load_movielens_1m(str(path))
    assert path.stat().st_size < 12 * 2**20
    for f in ("user", "movie", "rating", "timestamp", "zip", "year", "genre_offsets", "genre_ids"):
        assert np.array_equal(getattr(back, f), getattr(data, f)), f
        assert getattr(back, f).dtype == getattr(data, f).dtype, f
    assert back.vocabularies == data.vocabularies


def test_infeasible_points_and_fallbacks(bq: ModuleType) -> None:
    sizes = {"user": 6040, "movie": 3706, "zip": 3439, "gender": 2, "age": 7, "occupation": 21, "genres": 18}
    features = list(sizes)
    with pytest.raises(bq.Infeasible, match="not reachable"):
        bq.build_tables(features, sizes, 128, bq.table_specs("qr", 64.0, {}))
    with pytest.raises(bq.Infeasible, match="signatures"):
        bq.build_tables(features, sizes, 128, bq.table_specs("lma", 64.0, {"signature_bytes": 8}))
    bq.build_tables(features, sizes, 128, bq.table_specs("lma", 64.0, {"signature_bytes": 4}))
    bq.build_tables(features, sizes, 128, bq.table_specs("memcom", 64.0, {}))  # d = 128: below 128x

    class FakeTrainer:
        protocol = "ctr"

        def run(self, method: str, ratio: float, seed: int, setting: Dict[str, Any]) -> Dict[str, Any]:
            base = {"protocol": "ctr", "method": method, "ratio": ratio, "seed": seed, "setting": dict(setting)}
            if ratio == 64.0 and setting.get("signature_bytes") == 8:
                return {**base, "status": "infeasible", "reason": "no memory rows"}
            return {**base, "status": "ok"}

    args = argparse.Namespace(methods=["lma"], ratios=[16.0, 64.0], seeds=1, tune_ratio=16.0, quiet=True)
    sweep = bq.Sweep.__new__(bq.Sweep)
    sweep.args, sweep.payload = args, {"runs": []}
    sweep.save = lambda: None
    chosen = {**FakeTrainer().run("lma", 16.0, 0, {"signature_bytes": 8}), "phase": "tune"}
    sweep._final(FakeTrainer(), {"lma": chosen}, bq._progress(0, False))
    by_ratio = {r["ratio"]: r for r in sweep.payload["runs"]}
    assert by_ratio[16.0]["reused_from_tuning"] and by_ratio[16.0]["setting"] == {"signature_bytes": 8}
    assert by_ratio[64.0]["status"] == "ok" and by_ratio[64.0]["setting"] == {"signature_bytes": 4}
    assert by_ratio[64.0]["fallback"] == {"from": {"signature_bytes": 8}, "because": "no memory rows"}


def test_goal_checks(bq: ModuleType) -> None:
    def agg(protocol: str, method: str, ratio: Any, **metrics: float) -> Dict[str, Any]:
        return {"protocol": protocol, "method": method, "ratio": ratio, "status": "ok", "embedding_bytes": 1, **metrics}

    aggs = [
        agg("ranking", "stock", None, **{"ndcg@10": 0.050}),
        agg("ranking", "memcom", 16.0, **{"ndcg@10": 0.049}),
        agg("ranking", "hash", 16.0, **{"ndcg@10": 0.045}),
        agg("ctr", "stock", None, auc=0.890),
        agg("ctr", "memcom", 16.0, auc=0.880),
        agg("ctr", "lma", 16.0, auc=0.8885),
    ]
    goals = {g["goal"]: g["status"] for g in bq.goal_checks(aggs)}
    assert goals == {
        "memcom_ndcg_loss": "met",  # 2% <= 4%
        "memcom_beats_hash_ndcg": "met",
        "memcom_auc_loss": "missed",  # 1.1% > 0.5%
        "lma_auc_near_stock": "met",  # 0.0015 <= 0.002
        "lma_beats_hash_auc": "not evaluated",  # no CTR hash run
    }


def test_settings_mirror_the_example_configs(bq: ModuleType) -> None:
    """The sweep's models and optimizers are the examples' (batch size and epochs may differ, for speed)."""
    dlrm = load_recipe_config("ml1m_stock", recipe="dlrm")
    ctr = bq.PROTOCOL_SETTINGS["ctr"]
    assert ctr["over_arch_layer_sizes"] == dlrm.model.over_arch_layer_sizes
    assert ctr["dense_arch_hidden"] == dlrm.model.dense_arch_layer_sizes[:-1]
    assert (ctr["sparse_lr"], ctr["dense_optimizer"], ctr["dense_lr"]) == (
        dlrm.optimizer.sparse.lr,
        dlrm.optimizer.dense.name,
        dlrm.optimizer.dense.lr,
    )
    assert dlrm.optimizer.sparse.name == "exact_adagrad" and ctr["epochs"] == dlrm.train.epochs
    tt = load_recipe_config("ml1m_stock", recipe="two_tower")
    ranking = bq.PROTOCOL_SETTINGS["ranking"]
    for key in ("tower_layer_sizes", "temperature", "normalize", "logq_correction"):
        assert ranking[key] == getattr(tt.model, key), key
    assert (ranking["sparse_lr"], ranking["dense_optimizer"], ranking["dense_lr"]) == (
        tt.optimizer.sparse.lr,
        tt.optimizer.dense.name,
        tt.optimizer.dense.lr,
    )
    assert tt.optimizer.sparse.name == "exact_adagrad"
