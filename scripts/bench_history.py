# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The MEmCom paper's setting on MovieLens-1M (docs/HISTORY.md): the two-tower ranking recipe with the user-history
feature, stock and compressed input tables, against the model without history; test metrics at the best validation
step, embedding bytes, and the lift over the no-history model.

Every run is the shipped recipe (``torchrec_memcom.recipes.sweep``: the command line a user gets) with early stopping
on the validation nDCG@10 (``train.early_stopping``: evaluated every ``--eval-every`` steps, stopped after
``--patience`` evaluations without a better one, the best state restored) and then the test split. The test split is
never looked at for any choice. Finished runs are cached in ``<out>/runs/`` (a rerun skips them); ``--table`` prints
the markdown table of the cached runs.

Usage::

    python scripts/bench_history.py --models nohist stock memcom hash lma --seeds 0 --workers 2
    python scripts/bench_history.py --models memcom --set optimizer.sparse.lr=0.05 --tag lr005
    python scripts/bench_history.py --table
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout that is not installed

from torchrec_memcom.recipes.sweep import Record, Run, load_record, run_all  # noqa: E402

MODELS = {
    "nohist": "ml1m_stock",
    "stock": "ml1m_history_stock",
    "memcom": "ml1m_history_memcom",
    "memcom_all": "ml1m_history_memcom_all",
    "hash": "ml1m_history_hash",
    "lma": "ml1m_history_lma",
}
"""Model name -> two-tower preset; ``nohist`` is the reference of the lift column."""
METRIC = "ndcg@10"
ITEM_TABLES = {"t_movie", "t_genres"}  # the item tower's tables; every other table is an input embedding


def make_runs(
    models: Sequence[str],
    seeds: Sequence[int],
    overrides: Sequence[str],
    epochs: int,
    every: int,
    patience: int,
    tag: str,
) -> List[Run]:
    """One run per (model, seed): at most ``epochs`` epochs, early stopping on val nDCG@10, then the test split."""
    stop = f"{{metric: {METRIC}, patience: {patience}, every_steps: {every}}}"
    common = [f"train.epochs={epochs}", f"train.early_stopping={stop}", "eval.split=val", "eval.final_split=test"]
    suffix = f"_{tag}" if tag else ""
    return [
        Run(
            f"{m}{suffix}_s{s}",
            "two_tower",
            MODELS[m],
            (*common, f"train.seed={s}", *overrides),
            tags={"model": m + suffix, "seed": s},
        )
        for m in models
        for s in seeds
    ]


def input_bytes(result: Mapping[str, Any]) -> int:
    """Bytes of the user tower's tables (the input embeddings the MEmCom paper compresses)."""
    return sum(t["total_bytes"] for t in result["memory"]["tables"] if not set(t["tables"]) & ITEM_TABLES)


def _cell(xs: List[float]) -> str:
    return f"{statistics.mean(xs):.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "")


def table(records: Sequence[Record]) -> str:
    """Markdown table, one row per model (seeds averaged, ± the sample std over seeds); the lift divides the mean
    test nDCG@10 by ``nohist``'s, the relative loss is ``(stock - model) / stock`` (the MEmCom paper's measure)."""
    groups: Dict[str, List[Record]] = {}
    for r in records:
        if r.status == "ok":
            groups.setdefault(r.run.tags["model"], []).append(r)
    mean = {m: statistics.mean(r.result["final"][METRIC] for r in rs) for m, rs in groups.items()}
    base, stock = mean.get("nohist"), mean.get("stock")
    lines = [
        "| model | preset | seeds | input tables | all tables | best val nDCG@10 | best step / last | test nDCG@10 | "
        "test Recall@10 | lift vs no history | rel. loss vs stock | wall s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = sorted(MODELS, key=len, reverse=True)  # memcom_all before memcom: the longest name a label starts with
    rank = {label: list(MODELS).index(next(m for m in order if label.startswith(m))) for label in groups}
    for model, rs in sorted(groups.items(), key=lambda kv: (rank[kv[0]], kv[0])):
        res = [r.result for r in rs]
        ndcg = [x["final"][METRIC] for x in res]
        lift = f"{mean[model] / base:.2f}x" if base else "-"
        loss = f"{(stock - mean[model]) / stock:+.1%}" if stock and model != "nohist" else "-"
        steps = ", ".join(f"{x['early_stopping']['best_step']} / {x['train']['steps']}" for x in res)
        lines.append(
            f"| {model} | {rs[0].run.config} | {','.join(str(r.run.tags['seed']) for r in rs)} | "
            f"{input_bytes(res[0]) / 1024:,.0f} KiB | {res[0]['embedding_bytes'] / 1024:,.0f} KiB | "
            f"{_cell([x['early_stopping']['best_value'] for x in res])} | {steps} | {_cell(ndcg)} | "
            f"{_cell([x['final']['recall@10'] for x in res])} | {lift} | {loss} | "
            f"{statistics.mean(r.seconds for r in rs):,.0f} |"
        )
    return "\n".join(lines)


def cached(out: str) -> List[Record]:
    """Every finished run cached under ``out`` (its ``runs/*.json``)."""
    records = []
    for path in sorted(Path(out, "runs").glob("*.json")):
        d = json.loads(path.read_text(encoding="utf-8"))["run"]
        record = load_record(out, Run(**{**d, "overrides": tuple(d["overrides"])}))
        if record is not None:
            records.append(record)
    return records


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--set", nargs="*", default=[], help="recipe overrides for every run, key.sub=value")
    p.add_argument("--tag", default="", help="suffix of the run names (for runs with --set overrides)")
    p.add_argument("--epochs", type=int, default=10, help="the longest training (early stopping picks the step)")
    p.add_argument("--patience", type=int, default=2, help="evaluations without a better val nDCG@10 before stopping")
    p.add_argument("--eval-every", type=int, default=241, help="steps between val evaluations (241: half an epoch)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (one process and one CPU thread each)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "history"))
    p.add_argument("--table", action="store_true", help="print the table of the cached runs and exit")
    a = p.parse_args(argv)
    if not a.table:
        runs = make_runs(a.models, a.seeds, a.set, a.epochs, a.eval_every, a.patience, a.tag)
        for r in run_all(runs, a.out, workers=a.workers, threads=1, cpu=True).values():
            if r.status != "ok":
                print(f"{r.run.name} failed: {r.error}", file=sys.stderr)
    print(table(cached(a.out)))


if __name__ == "__main__":
    main()
