# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Runs the two-tower recipe with validation early stopping, seed by seed, and tabulates test metrics
(docs/HISTORY.md: the MEmCom paper's setting, compressed input embeddings with a user-history feature).

Each run is two calls of the shipped recipe (``python -m torchrec_memcom.recipes.two_tower``), exactly as a user
would make them:

1. train at most ``--epochs`` epochs, evaluating the VALIDATION split and saving a checkpoint every ``--eval-every``
   steps; stop (early stopping) once ``--patience`` evaluations in a row did not beat the best one;
2. pick the checkpoint with the best validation nDCG@10 (the first one on ties) and evaluate the TEST split from
   it (``--resume`` with ``train.max_steps`` = that step: no training step runs, only the final evaluation).

The test split is never looked at for any choice. Each run's record (``<out>/<name>/seed_<s>/run.json``) holds the
validation curve, the chosen step, the test metrics, the embedding bytes and the CPU seconds of both calls
(``resource.getrusage`` of the children: the whole process, data loading and evaluation included). Checkpoints
other than the chosen one are deleted. ``--table`` prints the markdown table of every ``<out>/*/seed_*/run.json``.

Usage::

    python scripts/bench_history.py --name stock --config ml1m_history_stock --seeds 0 1 2
    python scripts/bench_history.py --name memcom_w10 --config ml1m_history_memcom \\
        --set tables.history.entity_weight_lr_scale=10 --seeds 0
    python scripts/bench_history.py --table              # markdown table of every finished run
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
RECIPE = [sys.executable, "-m", "torchrec_memcom.recipes.two_tower"]
METRIC = "ndcg@10"
_VAL = re.compile(r"\[two_tower\] step (\d+) val: nDCG@10 ([0-9.]+) Recall@10 ([0-9.]+)")
_TOTAL = re.compile(r"\d+/(\d+) \[")  # the progress bar's total steps


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _call(cmd: List[str], log: Path) -> float:
    """Runs ``cmd`` in the checkout (output to ``log``); returns its CPU seconds. Raises on a non-zero exit."""
    before = _cpu_seconds()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return _cpu_seconds() - before


def _train(cmd: List[str], log: Path, patience: int) -> Tuple[List[Tuple[int, float, float]], int, float, bool]:
    """Runs the training ``cmd``, reading its validation lines; stops it (SIGTERM: the checkpoints so far are
    committed) once ``patience`` evaluations in a row did not beat the best nDCG@10. Returns the curve
    ``[(step, ndcg, recall)]``, the total steps it was asked to run, its CPU seconds and whether it was stopped."""
    before = _cpu_seconds()
    curve: List[Tuple[int, float, float]] = []
    total, stopped = 0, False
    with log.open("w") as f:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            f.flush()
            if not total and (m := _TOTAL.search(line)):
                total = int(m.group(1))
            if m := _VAL.search(line):
                curve.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
                best = max(range(len(curve)), key=lambda i: (curve[i][1], -i))
                if len(curve) - 1 - best >= patience:
                    stopped = True
                    f.write(f"bench_history: no better val nDCG@10 in {patience} evaluations: stopping\n")
                    proc.terminate()
                    break
        proc.wait()
    if proc.returncode and not stopped:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return curve, total, _cpu_seconds() - before, stopped


def run_one(
    name: str, config: str, overrides: Sequence[str], seed: int, epochs: int, every: int, patience: int, out: Path
) -> Dict[str, Any]:
    """Trains one seed with periodic validation and checkpoints (early stopping after ``patience`` evaluations
    without a better one), then evaluates TEST at the best validation step."""
    d = out / name / f"seed_{seed}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    common = [*overrides, f"train.seed={seed}", f"checkpoint.every_steps={every}", "checkpoint.keep=null"]
    train_cmd = [
        *RECIPE,
        "--config",
        config,
        "--set",
        *common,
        f"train.epochs={epochs}",
        f"eval.every_steps={every}",
        "eval.final_split=null",
        f"checkpoint.dir={d / 'ckpt'}",
        f"output.dir={d / 'train'}",
        f"output.run_name={name}",
    ]
    start = time.perf_counter()
    curve, total, train_cpu, stopped = _train(train_cmd, d / "train.log", patience)
    train_wall = time.perf_counter() - start
    if not curve:
        raise RuntimeError(f"no validation result in {d / 'train.log'}")
    best_step, best_ndcg, best_recall = max(curve, key=lambda c: (c[1], -c[0]))
    (d / "best").mkdir()
    os.replace(d / "ckpt" / f"step_{best_step}", d / "best" / f"step_{best_step}")
    shutil.rmtree(d / "ckpt")
    test_cmd = [
        *RECIPE,
        "--config",
        config,
        "--resume",
        "--set",
        *common,
        f"train.max_steps={best_step}",
        "eval.every_steps=null",
        "eval.final_split=test",
        f"checkpoint.dir={d / 'best'}",
        f"output.dir={d / 'test'}",
        f"output.run_name={name}",
    ]
    test_cpu = _call(test_cmd, d / "test.log")
    tested = json.loads((d / "test" / "results.json").read_text())
    record = {
        "name": name,
        "config": config,
        "overrides": list(overrides),
        "seed": seed,
        "max_epochs": epochs,
        "steps_per_epoch": total // epochs,
        "stopped_early": stopped,
        "val_curve": curve,
        "best_step": best_step,
        "best_val": {METRIC: best_ndcg, "recall@10": best_recall},
        "test": tested["final"],
        "embedding_bytes": tested["embedding_bytes"],
        "stock_embedding_bytes": tested["stock_embedding_bytes"],
        "memory": tested["memory"],
        "train_wall_seconds": train_wall,
        "cpu_seconds": {"train": train_cpu, "test": test_cpu},
        "commands": [train_cmd[1:], test_cmd[1:]],
    }
    (d / "run.json").write_text(json.dumps(record, indent=1))
    return record


def _mean_std(xs: List[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"


def table(out: Path) -> str:
    """Markdown table of every finished run under ``out``, one row per name (seeds aggregated)."""
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for p in sorted(out.glob("*/seed_*/run.json")):
        r = json.loads(p.read_text())
        runs.setdefault(r["name"], []).append(r)
    lines = [
        "| run | seeds | embedding bytes (input tables / all) | best val nDCG@10 | epochs at best | test nDCG@10 | "
        "test Recall@10 | CPU s per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rs in runs.items():
        per_epoch = rs[0]["steps_per_epoch"]
        seeds = ",".join(str(r["seed"]) for r in rs)
        at = ", ".join(f"{r['best_step'] / per_epoch:g}" for r in rs)
        cpu = statistics.mean(sum(r["cpu_seconds"].values()) for r in rs)
        lines.append(
            f"| {name} | {seeds} | {_input_bytes(rs[0]) / 1024:.0f} KiB / {rs[0]['embedding_bytes'] / 1024:.0f} KiB | "
            f"{_mean_std([r['best_val'][METRIC] for r in rs])} | {at} | {_mean_std([r['test'][METRIC] for r in rs])} | "
            f"{_mean_std([r['test']['recall@10'] for r in rs])} | {cpu:,.0f} |"
        )
    return "\n".join(lines)


def _input_bytes(r: Dict[str, Any]) -> int:
    """Bytes of the user tower's tables (the input embeddings): every table but the item tower's movie and genres."""
    item = {"t_movie", "t_genres"}
    return sum(t["total_bytes"] for t in r["memory"]["tables"] if not set(t["tables"]) & item)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", help="run name (a folder under --out)")
    p.add_argument("--config", help="two-tower preset or YAML")
    p.add_argument("--set", nargs="*", default=[], help="recipe overrides, key.sub=value")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10, help="longest training (early stopping picks the step)")
    p.add_argument("--patience", type=int, default=2, help="stop after this many evaluations without a better one")
    p.add_argument("--eval-every", type=int, default=241, help="steps between val evaluations (241: half an epoch)")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "history")
    p.add_argument("--table", action="store_true", help="print the markdown table of the finished runs and exit")
    a = p.parse_args()
    if a.table:
        print(table(a.out))
        return
    if not a.name or not a.config:
        p.error("--name and --config are required (or --table)")
    for seed in a.seeds:
        r = run_one(a.name, a.config, a.set, seed, a.epochs, a.eval_every, a.patience, a.out)
        test, cpu = r["test"], sum(r["cpu_seconds"].values())
        print(
            f"{a.name} seed {seed}: best val {r['best_val'][METRIC]:.4f} at step {r['best_step']}, test nDCG@10 "
            f"{test[METRIC]:.4f} Recall@10 {test['recall@10']:.4f}, {cpu:,.0f} CPU s",
            flush=True,
        )


if __name__ == "__main__":
    main()
