# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``recipes.allocate`` on a tiny SYNTHETIC DLRM config: id counts from the recipe's own training batches, a
model-based proposal within the budget that the recipe trains with ``--tables`` at exactly the proposed bytes, and a
measured proposal from short recipe runs that picks the best combination of the measured options (brute force)."""

import itertools
import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
import yaml
from torchrec.test_utils import get_free_port

from tests.examples.tiny import CONFIG, TINY
from torchrec_memcom.allocator import EvaluationCache, candidate_specs, option_bytes
from torchrec_memcom.recipes import allocate, dlrm
from torchrec_memcom.recipes.allocate import ProposalSetup, id_counts, measured_runs, propose_for_recipe
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.sweep import run_all

BASE = [t for t in TINY if not t.startswith(("sharding=", "tables="))] + ["sharding={}", "tables={}"]
FEATURES = ["cat_0", "cat_1"]


@pytest.fixture(autouse=True)
def _cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="localhost")
    for k, v in {**env, "MASTER_PORT": str(get_free_port())}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _setup(**kwargs: Any) -> ProposalSetup:
    """Two allocated tables of 2000 ids x 16 (128,000 B stock each) beside four stock ones (512,000 B): 100,000 B
    for the two leave hash at 4x (32,000 B) or 16x (8,000 B), not stock."""
    grid: Dict[str, Any] = dict(budget=612_000, features=FEATURES, methods=("stock", "hash"), ratios=(4, 16))
    grid["dims"] = (16,)
    return ProposalSetup("dlrm", CONFIG, BASE, **{**grid, **kwargs})


def test_id_counts_count_the_training_rows() -> None:
    setup = _setup()
    counts = id_counts("dlrm", setup.cfg, FEATURES, sample_rows=640)
    for f in FEATURES:
        assert counts[f].shape == (2000,) and counts[f].sum() == 640  # 10 batches of 64 rows, one id each
    assert np.count_nonzero(counts["cat_0"]) > 100 and counts["cat_0"].max() > 5  # power-law ids


def test_model_proposal_trains_through_tables_file_at_its_bytes(tmp_path: Path) -> None:
    setup = _setup()
    allocation = propose_for_recipe(setup)
    assert allocation.total_bytes <= allocation.budget_bytes == setup.budget_bytes
    assert set(allocation.tables) == set(FEATURES)
    path = tmp_path / "tables.yaml"
    allocate.write_tables_yaml(allocation.tables, str(path), "a test proposal")
    assert yaml.safe_load(path.read_text()) == {"tables": allocation.tables}
    argv = ["--config", CONFIG, "--tables", str(path), "--set", *BASE[:-1], f"output.dir={tmp_path / 'out'}"]
    results = dlrm.main(argv)
    assert results["config"]["tables"] == allocation.tables
    assert results["embedding_bytes"] == allocation.total_bytes  # the recipe's memory report


def test_tables_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables: {cat_0: {type: hash, compression: 4}}\ntrain: {epochs: 2}\n")
    with pytest.raises(ConfigError, match="expects only a tables: mapping"):
        dlrm.main(["--config", CONFIG, "--tables", str(bad), "--set", *BASE])
    with pytest.raises(ConfigError, match=r"budget .* is below the other tables"):
        _setup(budget=1000)


def test_measured_proposal_is_the_best_combination_of_the_measurements(tmp_path: Path) -> None:
    setup = _setup()
    short = ["eval.final_split=val", "train.early_stopping=null", "train.max_steps=4", "eval.every_steps=null"]
    runs, names = measured_runs(setup, short, {}, "measure")
    assert len(runs) == len(names) and len({r.key for r in runs}) == len(runs)
    records = run_all(runs, str(tmp_path), workers=0, progress=False)
    assert all(r.status == "ok" for r in records.values())
    measured = {key: records[name].result["final"]["auc"] for key, name in names.items()}
    with pytest.raises(KeyError, match="no measurement"):  # the joint check's runs are still missing
        propose_for_recipe(setup, measured)
    runs2, names2 = measured_runs(setup, short, {}, "verify", measured)
    assert runs2 and not set(names2) & set(measured)
    records2 = run_all(runs2, str(tmp_path), workers=0, progress=False)
    measured.update({key: records2[name].result["final"]["auc"] for key, name in names2.items()})
    allocation = propose_for_recipe(setup, measured)
    # brute force over every option pair of the two tables, with the losses measured from the all-stock baseline
    infos = setup.infos()
    base = measured[EvaluationCache.key({f: {"type": "stock"} for f in FEATURES})]
    options: List[List[Any]] = []
    for t in infos:
        row = []
        for spec in candidate_specs(t, setup.methods, setup.ratios, [16]):
            section = {f: {"type": "stock"} for f in FEATURES}
            section[t.feature_names[0]] = dict(spec)  # one width (the model's 16): specs are recipe specs
            key = EvaluationCache.key(section)
            if key in measured:
                row.append((t.feature_names[0], spec, option_bytes(t, spec)[0], base - measured[key]))
        options.append(row)
    best = min(
        (c for c in itertools.product(*options) if sum(o[2] for o in c) <= setup.table_budget),
        key=lambda c: (sum(o[3] for o in c), sum(o[2] for o in c)),
    )
    best_section = {o[0]: o[1] for o in best}
    verified = allocation.verified
    assert verified is not None and "knapsack" in verified and len(verified) >= 2
    assert verified["knapsack"] == measured[EvaluationCache.key(best_section)]  # the proposal, trained as a whole
    assert max(verified.values()) == measured[EvaluationCache.key(allocation.tables)]  # the best contender wins
    if max(verified, key=verified.__getitem__) == "knapsack":
        assert best_section == allocation.tables, json.dumps(allocation.tables)
    else:  # a uniform allocation measured better jointly than the knapsack's mix
        assert len({json.dumps(s, sort_keys=True) for s in allocation.tables.values()}) == 1
