# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Warm start vs training from scratch, on the DLRM recipe (MovieLens-1M CTR), every run a recipe run.

Per seed: the stock preset (``ml1m_stock``, its full budget) trains and checkpoints; then, per method preset
(``ml1m_<method>``: the large tables compressed 16x),

- ``converted``: ``train.init_from=<stock checkpoint> train.epochs=0``: the stock model converted by the warm start,
  evaluated without training;
- ``+1 epoch``: the same conversion, then one epoch of training;
- ``scratch``: the preset as it is (random init, its full budget).

Prints the table (test AUC, mean ± std over seeds), writes ``<out>/warm_start.json`` and, with ``--md``, a markdown
table. Runs go through ``recipes.sweep`` (parallel workers, cached per run)::

    python -m torchrec_memcom.recipes.warm_start_study --out outputs/warm_start --workers 2 --md docs/WARM_START.md
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from torchrec_memcom.provenance import environment
from torchrec_memcom.recipes.sweep import Pool, Record, Run

__all__ = ["main", "stages", "summarize"]

STAGES = ("converted", "+1 epoch", "scratch")


def _stock_run(seed: int, out: str, common: Sequence[str]) -> Run:
    ckpt = os.path.join(out, "checkpoints", f"stock-s{seed}")
    overrides = (*common, f"train.seed={seed}", f"checkpoint.dir={ckpt}", "checkpoint.keep=1")
    return Run(f"stock-s{seed}", "dlrm", "ml1m_stock", overrides, {"method": "stock", "stage": "trained", "seed": seed})


def _latest(directory: str) -> str:
    steps = sorted(
        (int(d.split("_")[1]), d)
        for d in os.listdir(directory)
        if d.startswith("step_") and os.path.isfile(os.path.join(directory, d, "checkpoint.json"))
    )
    if not steps:
        raise RuntimeError(f"the stock run left no committed checkpoint in {directory}")
    return os.path.join(directory, steps[-1][1])


def stages(method: str, seed: int, stock_checkpoint: str, common: Sequence[str]) -> List[Run]:
    """The converted and +1 epoch runs of ``method`` from ``stock_checkpoint``."""
    base = (*common, f"train.seed={seed}", f"train.init_from={stock_checkpoint}")
    tags = {"method": method, "seed": seed}
    return [
        Run(f"{method}-converted-s{seed}", "dlrm", f"ml1m_{method}", (*base, "train.epochs=0"),
            {**tags, "stage": "converted"}),
        Run(f"{method}-plus1-s{seed}", "dlrm", f"ml1m_{method}", (*base, "train.epochs=1"),
            {**tags, "stage": "+1 epoch"}),
    ]  # fmt: skip


def summarize(records: Sequence[Record]) -> Dict[str, Any]:
    """Test AUC per (method, stage): values by seed, mean and std; bytes per method."""
    table: Dict[str, Dict[str, Any]] = {}
    for r in records:
        t = r.run.tags
        row = table.setdefault(t["method"], {})
        cell = row.setdefault(t["stage"], {"auc": {}, "logloss": {}, "failed": []})
        if r.status != "ok":
            cell["failed"].append(f"seed {t['seed']}: {r.error}")
            continue
        cell["auc"][t["seed"]] = r.result["final"]["auc"]
        cell["logloss"][t["seed"]] = r.result["final"]["logloss"]
        row["embedding_bytes"] = r.result["embedding_bytes"]
        row["epochs"] = row.get("epochs") or {}
        row["epochs"][t["stage"]] = r.result["config"]["train"]["epochs"]
    for row in table.values():
        for cell in row.values():
            if isinstance(cell, dict) and "auc" in cell and cell["auc"]:
                values = list(cell["auc"].values())
                cell["mean"] = statistics.fmean(values)
                cell["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return table


def _text(table: Dict[str, Any], seeds: int) -> str:
    def cell(row: Dict[str, Any], stage: str) -> str:
        c = row.get(stage)
        if not c or "mean" not in c:
            return "failed" if c and c["failed"] else "-"
        return f"{c['mean']:.4f} ± {c['std']:.4f}"

    stock = table.get("stock", {})
    lines = [
        f"Test AUC on MovieLens-1M CTR (DLRM recipe), mean ± std over {seeds} seeds. Stock tables (full budget): "
        f"{cell(stock, 'trained')} at {stock.get('embedding_bytes', 0) / 2**20:.2f} MiB.",
        "",
        "| method (16x) | embedding bytes | converted (no training) | converted + 1 epoch | from scratch (full "
        "budget) | +1 epoch - scratch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, row in table.items():
        if method == "stock":
            continue
        plus, scratch = row.get("+1 epoch", {}), row.get("scratch", {})
        gap = f"{plus['mean'] - scratch['mean']:+.4f}" if "mean" in plus and "mean" in scratch else "-"
        kib = row.get("embedding_bytes", 0) / 1024
        lines.append(
            f"| {method} | {kib:.0f} KiB | {cell(row, 'converted')} | {cell(row, '+1 epoch')} | "
            f"{cell(row, 'scratch')} | {gap} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    p.add_argument("--methods", default="memcom,hash,qr,lma", help="comma-separated ml1m_<method> presets")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="outputs/warm_start")
    p.add_argument("--md", default=None, help="also write the table (and the command) to this markdown file")
    p.add_argument("--cpu", action="store_true", help="hide GPUs from the workers")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    # one process: the presets' global batch (2 ranks x 512) in one rank
    common = ("train.batch_size=1024", "checkpoint.at_end=true", *args.set)
    start = time.time()
    with Pool(args.out, workers=args.workers, cpu=args.cpu, progress=not args.quiet) as pool:
        for seed in range(args.seeds):
            scratch = [
                Run(f"{m}-scratch-s{seed}", "dlrm", f"ml1m_{m}", (*common, f"train.seed={seed}"),
                    {"method": m, "stage": "scratch", "seed": seed})
                for m in methods
            ]  # fmt: skip
            stock = _stock_run(seed, args.out, common)

            def convert(records: List[Record], seed: int = seed, stock: Run = stock) -> None:
                if records[0].status != "ok":
                    return
                ckpt = _latest(os.path.join(args.out, "checkpoints", stock.name))
                pool.submit([r for m in methods for r in stages(m, seed, ckpt, common)])

            pool.submit([stock], then=convert)
            pool.submit(scratch)
        records = pool.join()
    table = summarize(list(records.values()))
    text = _text(table, args.seeds)
    args_given = argv if argv is not None else sys.argv[1:]
    command = "python -m torchrec_memcom.recipes.warm_start_study " + " ".join(args_given)
    payload = {
        "command": command.strip(),
        "seconds": time.time() - start,
        # "cuda": whether the runs used the GPU (the report's GPU / CPU); "cuda_version": the build's
        "environment": {**environment(), "cuda_version": torch.version.cuda,
                        "cuda": torch.cuda.is_available() and not args.cpu, "cpus": os.cpu_count()},
        "common_overrides": list(common),
        "table": table,
    }  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "warm_start.json"), "w") as f:
        json.dump(payload, f, indent=1, default=str)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"{text}\n\nProduced by `{payload['command']}` ({payload['seconds'] / 60:.0f} min, ")
            f.write(f"{'GPU' if payload['environment']['cuda'] else 'CPU'}; every run: {' '.join(common)}).\n")
    return payload


if __name__ == "__main__":
    main()
