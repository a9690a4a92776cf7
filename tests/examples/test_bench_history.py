# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""scripts/bench_history.py: the runs it makes (the recipe's early stopping, then test) and its table from cached
records (input-table bytes, lift over the no-history model, models in a fixed order)."""

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.scripts import load_script
from torchrec_memcom.recipes.schemas import TwoTowerConfig, load_recipe_config
from torchrec_memcom.recipes.sweep import Record

bench = load_script("bench_history")


def test_runs_use_the_recipes_early_stopping() -> None:
    runs = bench.make_runs(["nohist", "memcom"], [0, 1], ["optimizer.sparse.lr=0.2"], 7, 100, 3, "lr02")
    assert [r.name for r in runs] == ["nohist_lr02_s0", "nohist_lr02_s1", "memcom_lr02_s0", "memcom_lr02_s1"]
    assert len({r.key for r in runs}) == 4
    cfg = load_recipe_config(runs[3].config, list(runs[3].overrides), recipe="two_tower")
    assert isinstance(cfg, TwoTowerConfig) and cfg.data.user_history == 50 and cfg.train.seed == 1
    stop = cfg.train.early_stopping
    assert (stop.metric, stop.patience, stop.every_steps, cfg.train.epochs) == ("ndcg@10", 3, 100, 7)
    assert (cfg.eval.split, cfg.eval.final_split, cfg.optimizer.sparse.lr) == ("val", "test", 0.2)
    assert load_recipe_config(runs[0].config, list(runs[0].overrides), recipe="two_tower").data.user_history == 0


def _record(run: Any, ndcg: float, user_bytes: int) -> Record:
    tables = [
        {"name": "t_user", "tables": ["t_user"], "total_bytes": user_bytes},
        {"name": "g", "tables": ["t_history", "t_zip"], "total_bytes": 1000},  # an LMA memory group of input tables
        {"name": "t_movie", "tables": ["t_movie"], "total_bytes": 5000},
        {"name": "t_genres", "tables": ["t_genres"], "total_bytes": 70},
    ]
    result: Dict[str, Any] = {
        "final": {"ndcg@10": ndcg, "recall@10": 2 * ndcg},
        "early_stopping": {"best_value": ndcg + 0.01, "best_step": 482},
        "train": {"steps": 964},
        "memory": {"tables": tables},
        "embedding_bytes": user_bytes + 6070,
    }
    return Record(run, "ok", result=result, seconds=60.0)


def test_table_from_cached_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = {r.name: r for r in bench.make_runs(["memcom", "nohist", "memcom_all"], [0, 1], [], 10, 241, 2, "")}
    runs.update({r.name: r for r in bench.make_runs(["stock"], [0], [], 10, 241, 2, "")})
    values = {"nohist_s0": 0.04, "nohist_s1": 0.06, "memcom_s0": 0.09, "memcom_s1": 0.11, "memcom_all_s0": 0.07}
    values["stock_s0"] = 0.125
    (tmp_path / "runs").mkdir()
    for name, ndcg in values.items():
        record = _record(runs[name], ndcg, user_bytes=2048 if "memcom" in name else 20480)
        (tmp_path / "runs" / f"{name}.json").write_text(json.dumps(record.to_dict()))
    stale = _record(runs["memcom_all_s1"], 0.5, 2048).to_dict()
    stale["key"] = "0" * 16  # a record of other overrides than the run's: not this run's result
    (tmp_path / "runs" / "memcom_all_s1.json").write_text(json.dumps(stale))
    bench.main(["--table", "--out", str(tmp_path)])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0].strip("| ") for r in rows] == ["nohist", "stock", "memcom", "memcom_all"]  # MODELS order
    by = {r[0].strip("| "): r for r in rows}
    assert by["memcom"][2] == "0,1" and by["memcom_all"][2] == "0"
    assert by["nohist"][3] == "21 KiB" and by["memcom"][3] == "3 KiB"  # user + the history/zip group
    assert by["memcom"][7] == "0.1000 ± 0.0141" and by["memcom_all"][7] == "0.0700"
    assert by["memcom"][9] == "2.00x" and by["memcom_all"][9] == "1.40x" and by["nohist"][9] == "1.00x"
    assert by["memcom"][6] == "482 / 964, 482 / 964"
    assert by["memcom"][10] == "+20.0%" and by["memcom_all"][10] == "+44.0%" and by["stock"][10] == "+0.0%"
    assert by["nohist"][10] == "-" and by["stock"][9] == "2.50x"
