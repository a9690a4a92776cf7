# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The budget allocator: bytes from the configs' memory reports, the exact knapsack against brute force, the frequency
model's formulas and behaviour, the measured search with a fake evaluator of known sensitivities, and clear errors."""

import functools
import itertools
import json
import math
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.allocator import (
    EvaluationCache,
    FrequencyModel,
    TableInfo,
    candidate_specs,
    measure_losses,
    option_bytes,
    parse_budget,
    propose,
    propose_measured,
    solve_knapsack,
)
from torchrec_memcom.tables import table_config


def _zipf_counts(n: int, a: float, rows: int, seed: int = 0) -> np.ndarray:
    p = np.arange(1, n + 1, dtype=np.float64) ** -a
    return np.random.default_rng(seed).multinomial(rows, p / p.sum())


def _built_bytes(section: Dict[str, Dict[str, Any]], tables: List[TableInfo]) -> int:
    """Bytes of a proposal's ``tables:`` section, built the way a recipe would (one table per feature, at the model's
    dim; narrowed tables carry their output projection)."""
    configs = [
        table_config(t.name, t.feature_names, t.num_embeddings, t.embedding_dim, section[t.feature_names[0]])
        for t in tables
    ]
    return CompressedEmbeddingBagCollection(configs, device="meta").memory_report().total_bytes


def test_option_bytes_are_the_memory_report() -> None:
    t = TableInfo("movie", 50_000, 32)
    assert option_bytes(t, {"type": "stock"})[0] == 50_000 * 32 * 4
    assert option_bytes(t, {"type": "stock", "embedding_dim": 8})[0] == 50_000 * 8 * 4 + 8 * 32 * 4
    assert option_bytes(t, {"type": "stock", "embedding_dim": 8}, lambda a, b: 0)[0] == 50_000 * 8 * 4
    for spec in (
        {"type": "hash", "compression": 16},
        {"type": "memcom", "compression": 8},
        {"type": "lma", "compression": 4},
        {"type": "qr", "compression": 32},
    ):
        cfg = table_config("movie", ["movie"], 50_000, 32, spec)
        want = CompressedEmbeddingBagCollection([cfg], device="meta").memory_report().total_bytes
        got, report = option_bytes(t, spec)
        assert got == want == report.total_bytes and report.tables[0].method == spec["type"]
    with pytest.raises(ValueError, match="embedding_dim"):
        option_bytes(t, {"type": "stock", "embedding_dim": 64})


def test_candidate_specs() -> None:
    t = TableInfo("user", 10_000, 16)
    specs = candidate_specs(t, ratios=(4, 16, 64))
    assert {"type": "stock"} in specs and {"type": "stock", "embedding_dim": 8} in specs
    assert {"type": "stock", "embedding_dim": 4} in specs and {"type": "hash", "compression": 64} in specs
    assert {"type": "memcom", "compression": 4} in specs
    assert {"type": "memcom", "compression": 16} not in specs  # MEmCom stays below d = 16x
    assert {"type": "memcom", "compression": 16, "embedding_dim": 8} not in specs
    assert len(specs) == len({json.dumps(s, sort_keys=True) for s in specs})
    assert candidate_specs(t, methods=["stock"], dims=[16]) == [{"type": "stock"}]
    with pytest.raises(ValueError, match="unknown methods"):
        candidate_specs(t, methods=["bloom"])
    with pytest.raises(ValueError, match="dims"):
        candidate_specs(t, dims=[32])
    with pytest.raises(ValueError, match="ratios"):
        candidate_specs(t, ratios=[0.5])
    with pytest.raises(ValueError, match="memory_group"):
        candidate_specs(t, extra=[{"type": "lma", "compression": 4, "memory_group": "g"}])


def test_parse_budget() -> None:
    assert parse_budget(1000, 10**6) == 1000 and parse_budget(2.5e3, 10**6) == 2500
    assert parse_budget("16x", 1600) == 100 and parse_budget(" 4 MiB", 0) == 4 * 2**20
    assert parse_budget("1.5GB", 0) == 1_500_000_000 and parse_budget("2kib", 0) == 2048
    for bad, match in [
        ("4 MiBs", "unknown unit"),
        ("lots", "expected bytes"),
        ("0.5x", "ratio"),
        (0, "positive"),
        (-5, "positive"),
        (float("nan"), "positive"),
        (None, "positive"),
        (True, "positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_budget(bad, 1000)  # type: ignore[arg-type]


def test_knapsack_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        groups = [
            [(int(rng.integers(1, 100)), float(rng.random())) for _ in range(int(rng.integers(1, 6)))]
            for _ in range(int(rng.integers(1, 5)))
        ]
        floor = sum(min(b for b, _ in g) for g in groups)
        budget = int(rng.integers(floor, floor + 150))
        best = min(
            (sum(o[1] for o in combo), sum(o[0] for o in combo))
            for combo in itertools.product(*groups)
            if sum(o[0] for o in combo) <= budget
        )
        chosen, exact = solve_knapsack(groups, budget)
        picked = [g[i] for g, i in zip(groups, chosen)]
        assert exact and sum(b for b, _ in picked) <= budget
        assert sum(v for _, v in picked) == pytest.approx(best[0], abs=1e-12)
        thinned, exact = solve_knapsack(groups, budget, max_states=2)  # approximate, still within the budget
        assert sum(g[i][0] for g, i in zip(groups, thinned)) <= budget
    with pytest.raises(ValueError, match="below the cheapest"):
        solve_knapsack([[(5, 0.0)], [(7, 0.0), (9, 0.0)]], 11)
    with pytest.raises(ValueError, match="at least one option"):
        solve_knapsack([[(5, 0.0)], []], 100)


def test_frequency_model_formulas() -> None:
    """With almost no noise every row learns fully: the model reduces to energy shares and collision shares."""
    n, d, m, s = 4096, 16, 512, 0.3
    t = TableInfo("t", n, d, counts=np.ones(n, dtype=np.int64))
    model = FrequencyModel(noise=1e-12, spectrum_decay=1.0, scalar_share=s)

    def retained(spec: Dict[str, Any]) -> float:
        return model.retained(t, spec, option_bytes(t, spec)[1])

    harmonic = [sum(1.0 / k for k in range(1, j + 1)) for j in range(d + 1)]
    assert retained({"type": "stock"}) == pytest.approx(1.0)
    assert retained({"type": "stock", "embedding_dim": 4}) == pytest.approx(harmonic[4] / harmonic[16])
    own = (1 / n) / (1 / n + (1 - 1 / n) / m)  # flat traffic, m shared rows
    assert retained({"type": "hash", "num_shared_rows": m}) == pytest.approx(own)
    assert retained({"type": "memcom", "num_shared_rows": m}) == pytest.approx(own + (1 - own) * s)
    own_q, own_r = ((1 / n) / (1 / n + (1 - 1 / n) / rows) for rows in (n // 64, 64))
    assert retained({"type": "qr", "num_remainder_rows": 64}) == pytest.approx(1 - (1 - own_q) * (1 - own_r))
    own_lma = (1 / n) / (1 / n + (1 - 1 / n) / (2048 * 8 / d))  # 2048 rows of width 8 = 1024 rows of d = 16
    assert retained({"type": "lma", "memory_rows": 2048, "chunk_size": 8}) == pytest.approx(own_lma)
    gain = FrequencyModel(noise=1e-12, semantic_gain=0.5)
    spec = {"type": "lma", "memory_rows": 2048, "chunk_size": 8}
    assert gain.retained(t, spec, option_bytes(t, spec)[1]) == pytest.approx(own_lma + 0.5 * (1 - own_lma))
    # with noise, a rarely seen id learns a ridge share of each dimension: o e_k / (o e_k + noise)
    noisy = FrequencyModel(noise=2.0, spectrum_decay=0.0)
    e = 1.0 / d
    assert noisy.retained(t, {"type": "stock"}, option_bytes(t, {"type": "stock"})[1]) == pytest.approx(e / (e + 2.0))


def test_model_gives_frequent_ids_wide_rows_and_rare_ids_narrow_ones() -> None:
    n, d = 20_000, 32
    frequent = TableInfo("frequent", n, d, counts=np.full(n, 100_000))
    rare = TableInfo("rare", n, d, counts=np.full(n, 2))
    for tables in ([frequent, rare], [rare, frequent]):
        a = propose(tables, int(1.5 * n * d * 4), methods=("stock",))  # mixed dimensions only
        assert a.specs["frequent"] == {"type": "stock"}  # keep stock
        assert a.specs["rare"]["type"] == "stock" and a.specs["rare"]["embedding_dim"] < d


@pytest.mark.parametrize("rows", [100_000, 1_000_000])
def test_skewed_tables_get_more_bytes_than_flat_ones(rows: int) -> None:
    """Under tight budgets a Zipf table's head fits in few rows and carries most of its traffic, so it earns more
    bytes than a table of the same size with flat traffic. (At loose budgets the skewed table saturates, its tail
    being too rare to learn, and the knapsack may give the rest to the flat table's per-id weights; and on a coarse
    ratio grid the nearest options of the two tables can cost about the same.)"""
    n, d = 50_000, 32
    skewed = TableInfo("skewed", n, d, counts=_zipf_counts(n, 1.2, rows))
    flat = TableInfo("flat", n, d, counts=_zipf_counts(n, 0.0, rows))
    fine = [2 ** (k / 4) for k in range(4, 41)]  # ratios 2 ... 1024 in steps of 2**0.25: bytes can follow value
    for tables in ([skewed, flat], [flat, skewed]):
        for budget in ("64x", "128x", "256x"):
            a = propose(tables, budget, ratios=fine)
            assert a.bytes["skewed"] > 1.3 * a.bytes["flat"], (budget, a.specs, a.bytes)


def test_proposals_fit_the_budget_and_improve_with_it() -> None:
    tables = [
        TableInfo("a", 30_000, 16, counts=_zipf_counts(30_000, 1.1, 200_000, 1)),
        TableInfo("b", 5_000, 16, ["b1", "b2"], counts=_zipf_counts(5_000, 0.8, 200_000, 2)),
        TableInfo("c", 300, 16, counts=_zipf_counts(300, 1.0, 200_000, 3)),
    ]
    previous = math.inf
    for budget in ("2x", "4x", "16x", "64x")[::-1]:
        a = propose(tables, budget, ratios=(2, 4, 8, 16, 64, 256))
        assert a.total_bytes <= a.budget_bytes and a.exact
        assert a.total_bytes == _built_bytes(a.tables, tables) == sum(a.bytes.values())
        assert set(a.tables) == {"a", "b1", "b2", "c"} and a.tables["b1"] == a.tables["b2"]
        assert a.predicted_loss <= previous + 1e-12
        previous = a.predicted_loss
    assert json.loads(json.dumps(a.to_dict()))["total_bytes"] == a.total_bytes and "TOTAL" in str(a)
    # without narrowing, every spec is a `tables:` entry that table_config (and so the recipes) takes today
    wide = propose(tables, "16x", narrow=False)
    configs = [table_config(t.name, t.feature_names, t.num_embeddings, 16, wide.specs[t.name]) for t in tables]
    assert CompressedEmbeddingBagCollection(configs, device="meta").memory_report().total_bytes == wide.total_bytes
    assert wide.total_bytes <= wide.budget_bytes and wide.predicted_loss >= previous - 1e-12


def _fake_sensitivity(table: str, spec: Dict[str, Any]) -> float:
    """A known metric drop per (table, option): larger for more compression, table-specific slopes."""
    slope = {"x": 0.004, "y": 0.001, "z": 0.0002}[table]
    dim = spec.get("base_dim", 16)  # recipe specs: a narrowed table has a base_dim (and explicit sizes)
    rows = spec.get("num_shared_rows", spec.get("num_remainder_rows"))
    ratio = float(spec.get("compression", 1.0)) if rows is None else 3000 / rows
    method = {"stock": 0.0, "lowrank": 0.05, "hash": 0.3, "memcom": 0.1, "qr": 0.2, "lma": 0.25}[spec["type"]]
    return slope * (math.log2(ratio) + method + 2 * math.log2(16 / dim))


def test_measured_search_recovers_the_brute_force_optimum(tmp_path: Path) -> None:
    from torchrec_memcom.allocator.options import recipe_spec

    tables = [TableInfo("x", 4000, 16), TableInfo("y", 3000, 16), TableInfo("z", 500, 16)]
    kw: Dict[str, Any] = dict(
        methods=("stock", "hash", "memcom"), ratios=(4, 8), dims={"x": [16, 8], "y": [16, 8], "z": [16]}
    )
    calls: List[Dict[str, Any]] = []

    def evaluate(section: Dict[str, Dict[str, Any]]) -> float:
        calls.append(section)
        return 0.8 - sum(_fake_sensitivity(t.name, section[t.name]) for t in tables)

    budget = 2 * 4000 * 16 * 4 // 5
    cache = tmp_path / "cache.json"
    a = propose_measured(tables, budget, evaluate, cache=str(cache), verify=0, **kw)
    options = {t.name: candidate_specs(t, kw["methods"], kw["ratios"], kw["dims"][t.name]) for t in tables}
    sizes = {t.name: {json.dumps(s): option_bytes(t, s)[0] for s in options[t.name]} for t in tables}
    best = max(
        (
            (0.8 - sum(_fake_sensitivity(t.name, recipe_spec(t, s)) for t, s in zip(tables, combo)), combo)
            for combo in itertools.product(*options.values())
            if sum(sizes[t.name][json.dumps(s)] for t, s in zip(tables, combo)) <= budget
        ),
        key=lambda x: x[0],
    )
    assert [a.specs[t.name] for t in tables] == list(best[1])
    assert a.total_bytes <= budget and a.evaluations == len(calls)
    feasible = sum(1 for n in options for s in options[n] if s != {"type": "stock"})
    assert 1 < a.evaluations <= 1 + feasible
    assert all(sum(sec[f] != {"type": "stock"} for f in sec) <= 1 for sec in calls)  # one table varied at a time
    # the cache answers a rerun, in process and from its JSON file
    again = propose_measured(tables, budget, evaluate, cache=str(cache), verify=0, **kw)
    assert again.evaluations == 0 and again.specs == a.specs and len(calls) == a.evaluations
    assert len(EvaluationCache(str(cache)).results) == a.evaluations


def test_joint_check_replaces_a_knapsack_mix_that_interacts_badly() -> None:
    """One table at a time, hashing costs x little and MEmCom costs y little, so the knapsack mixes them; trained
    together the mix is bad (an interaction the additive losses cannot see) and the check returns a uniform choice."""
    tables = [TableInfo("x", 4000, 16), TableInfo("y", 4000, 16)]
    kw: Dict[str, Any] = dict(methods=("stock", "hash", "memcom"), ratios=(8,), dims={"x": [16], "y": [16]})
    drop = {"x": {"hash": 0.01, "memcom": 0.03}, "y": {"hash": 0.03, "memcom": 0.01}}

    def metric(section: Dict[str, Dict[str, Any]], interaction: float) -> float:
        types = {section[n]["type"] for n in ("x", "y")} - {"stock"}
        value = 0.8 - sum(drop[n].get(section[n]["type"], 0.0) for n in ("x", "y"))
        return value - (interaction if types == {"hash", "memcom"} else 0.0)

    evaluate = functools.partial(metric, interaction=0.1)

    budget = 2 * 4000 * 16 * 4 // 6  # both tables must be compressed
    plain = propose_measured(tables, budget, evaluate, verify=0, **kw)
    assert (plain.specs["x"]["type"], plain.specs["y"]["type"]) == ("hash", "memcom") and plain.verified is None
    checked = propose_measured(tables, budget, evaluate, **kw)
    assert checked.specs["x"] == checked.specs["y"] and checked.total_bytes <= budget
    assert checked.verified is not None and checked.verified["knapsack"] == pytest.approx(0.8 - 0.02 - 0.1)
    assert max(checked.verified.values()) == pytest.approx(evaluate(checked.tables)) == pytest.approx(0.76)
    assert checked.evaluations == plain.evaluations + len(checked.verified)
    # without interactions the knapsack's proposal is kept (its joint run confirms the additive prediction)
    additive = propose_measured(tables, budget, functools.partial(metric, interaction=0.0), **kw)
    assert (additive.specs["x"]["type"], additive.specs["y"]["type"]) == ("hash", "memcom")
    assert additive.verified["knapsack"] == max(additive.verified.values())


def test_measured_losses_follow_the_metric_direction() -> None:
    tables = [TableInfo("x", 1000, 8)]
    cands = {"x": [{"type": "stock"}, {"type": "hash", "compression": 4}]}
    logloss = {"stock": 0.40, "hash": 0.45}
    losses, calls = measure_losses(tables, cands, lambda sec: logloss[sec["x"]["type"]], higher_is_better=False)
    assert losses["x"] == [0.0, pytest.approx(0.05)] and calls == 2
    losses, _ = measure_losses(tables, cands, lambda sec: {"stock": 0.80, "hash": 0.78}[sec["x"]["type"]])
    assert losses["x"] == [0.0, pytest.approx(0.02)]
    with pytest.raises(ValueError, match="evaluate returned nan"):
        measure_losses(tables, cands, lambda sec: float("nan"))
    with pytest.raises(ValueError, match="unknown tables"):
        measure_losses(tables, {"nope": []}, lambda sec: 0.5)


def test_clear_errors() -> None:
    t = TableInfo("t", 10_000, 16, counts=np.ones(10_000))
    with pytest.raises(ValueError, match=r"100 bytes is impossible: the cheapest options need 400 bytes \(t: 400 B"):
        propose([t], 100)
    with pytest.raises(ValueError, match="impossible"):
        propose_measured([t], 100, lambda sec: 0.5)
    with pytest.raises(ValueError, match="unknown unit"):
        propose([t], "3 parsecs")
    with pytest.raises(ValueError, match="needs id counts"):
        propose([TableInfo("u", 100, 16)], "4x")
    with pytest.raises(ValueError, match="duplicate table names"):
        propose([t, t], "4x")
    with pytest.raises(ValueError, match="duplicate feature names"):
        propose([t, TableInfo("u", 10, 16, ["t"], counts=np.ones(10))], "4x")
    with pytest.raises(ValueError, match="unknown tables"):
        propose([t], "4x", dims={"nope": [8]})
    with pytest.raises(ValueError, match="table 't': counts"):
        TableInfo("t", 10, 16, counts=np.ones(11))
    with pytest.raises(ValueError, match="table 't': counts"):
        TableInfo("t", 10, 16, counts=-np.ones(3))
    with pytest.raises(ValueError, match="num_embeddings"):
        TableInfo("t", 0, 16)
    with pytest.raises(ValueError, match="noise"):
        FrequencyModel(noise=0.0)
    with pytest.raises(ValueError, match="scalar_share"):
        FrequencyModel(scalar_share=2.0)


def test_narrowed_options_become_recipe_specs_of_the_same_bytes() -> None:
    from torchrec_memcom.allocator.options import option_bytes, recipe_spec
    from torchrec_memcom.tables import table_config

    t = TableInfo(name="t", num_embeddings=50_000, embedding_dim=32)
    for spec in (
        {"type": "stock", "embedding_dim": 8},
        {"type": "hash", "compression": 4, "embedding_dim": 16},
        {"type": "memcom", "compression": 2, "embedding_dim": 8},
        {"type": "qr", "compression": 8, "embedding_dim": 16},
        {"type": "lma", "compression": 2, "embedding_dim": 16, "signature_bytes": 2},
    ):
        core = recipe_spec(t, spec)
        assert "embedding_dim" not in core and core["base_dim"] == spec["embedding_dim"]
        cfg = table_config("t", ["t"], 50_000, 32, core)  # what the recipes build, at the model's d
        bytes_core = CompressedEmbeddingBagCollection([cfg], device="meta").memory_report().total_bytes
        assert bytes_core == option_bytes(t, spec)[0], spec
