# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The quality-vs-bytes sweep end to end: data cache, runs (``recipes.frontier`` on ``recipes.sweep``), the JSON,
the report (``recipes.frontier_report``) and a pack of at most 8 files to bring back from a GPU machine.

    python scripts/bench_quality.py --prepare data/                       # writes data/ml-1m.npz (never commit it)
    python scripts/bench_quality.py --data data/ml-1m.npz --protocols ctr,planted --workers 12 --out sweep \\
        --deadline 450 --pack $OUT                                         # on the GPU machine
    python scripts/bench_quality.py --report sweep/frontier.json           # docs/RESULTS.md and docs/quality_*.png
    python scripts/bench_quality.py --smoke --cpu --workers 2 --out sweep-cpu   # the CPU smoke version

A rerun with the same ``--out`` skips every finished run (``--resume-from PACK/runs.tar.gz`` restores the cache a
pack carried), so a sweep cut by ``--deadline`` continues where it stopped.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import tarfile
import time
from typing import Any, Dict, List, Optional, Sequence

from torchrec_memcom.provenance import environment
from torchrec_memcom.recipes.frontier import PROTOCOLS, Study, protocol
from torchrec_memcom.recipes.frontier_report import write_report
from torchrec_memcom.recipes.sweep import Pool

__all__ = ["SMOKE", "main", "prepare", "run_study", "smoke_studies", "studies"]

SMOKE: Dict[str, Dict[str, Any]] = {
    "ctr": {
        "grid": dict(
            stock_dims=(4, 8, 16, 64),
            comp_dims=(16, 64),
            comp_targets=(4, 8),
            lowrank_targets=(4, 8),
            narrow=(("hash", 16),),
            methods=("hash", "memcom", "lma"),
            sparse_lrs=(0.05, 0.15),
            dense_lrs=(0.05,),
            alloc_methods=("stock", "hash", "memcom"),
            alloc_ratios=(16,),
            alloc_dims=(64,),
            alloc_lma_ratios=(16,),
        ),
        "extra": [
            "train.batch_size=1024",
            "train.max_steps=40",
            "train.early_stopping.every_steps=20",
            "train.lma_signature_rows=20000",
        ],
    },
    "ranking": {
        "grid": dict(
            stock_dims=(4, 16, 64),
            comp_dims=(16, 64),
            comp_targets=(4, 8),
            lowrank_targets=(4,),
            narrow=(),
            methods=("hash", "memcom", "lma"),
            sparse_lrs=(0.05, 0.15),
            dense_lrs=(0.001,),
            alloc_methods=("stock", "hash", "memcom"),
            alloc_ratios=(16,),
            alloc_dims=(64,),
            alloc_lma_ratios=(16,),
        ),
        "extra": [
            "train.batch_size=1024",
            "train.max_steps=30",
            "train.early_stopping.every_steps=15",
            "train.lma_signature_rows=20000",
            "eval.user_batch_size=1024",
        ],
    },
    "planted": {
        "grid": dict(stock_dims=(4, 8, 32), comp_targets=(1, 4), methods=("hash", "memcom", "lma")),
        "extra": [
            "data.num_features=4",
            "data.num_embeddings_per_feature=[200000, 100000, 50000, 50000]",
            "data.train_rows=60000",
            "data.eval_rows=20000",
            "train.batch_size=2048",
            "eval.batch_size=20000",
            "train.max_steps=30",
            "train.early_stopping.every_steps=15",
            "train.lma_signature_rows=20000",
        ],
    },
}
"""The CPU smoke version: small grids and a few dozen training steps per run (the machinery, not the results)."""


def prepare(directory: str) -> str:
    """Writes the parsed MovieLens-1M to ``<directory>/ml-1m.npz`` (for machines without the data package)."""
    from torchrec_memcom.datasets import load_movielens_1m

    path = os.path.join(directory, "ml-1m.npz")
    load_movielens_1m().save_npz(path)
    return path


def studies(
    names: Sequence[str],
    seeds: int,
    data: Optional[str],
    allocator: bool,
    extra: Sequence[str] = (),
    smoke: bool = False,
) -> List[Study]:
    """The studies of ``names`` (``ctr``, ``ranking``, ``planted``), full size or the smoke version."""
    out = []
    for name in names:
        p = protocol(name, **SMOKE[name]["grid"]) if smoke else protocol(name)
        more = [*(SMOKE[name]["extra"] if smoke else []), *extra]
        max_epochs = {"ctr": 6, "ranking": 8, "planted": 3}[name]
        out.append(
            Study(
                p,
                seeds=seeds if not p.synthetic else 1,
                max_epochs=max_epochs,
                data_path=None if p.synthetic else data,
                extra=more,
                allocator=allocator and not p.synthetic,
            )
        )
    return out


def smoke_studies(names: Sequence[str], data: Optional[str] = None) -> List[Study]:
    return studies(names, 2, data, True, smoke=True)


def _environment() -> Dict[str, Any]:
    """``provenance.environment()`` with the study's device and a one-line versions string (the report's header)."""
    import torch

    env = environment()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    versions = f"torch {env['torch']}, torchrec {env['torchrec']}, python {env['python']}"
    return {**env, "device": device, "versions": versions}


def _ceiling(study: Study) -> Optional[Dict[str, float]]:
    """The planted model's Bayes ceiling on the test rows the runs evaluate (``None`` for other data)."""
    if not study.p.synthetic:
        return None
    from torchrec_memcom.recipes.schemas import load_recipe_config

    cfg = load_recipe_config(study.p.config, study._common() + list(study.extra), recipe=study.p.recipe)
    if cfg.data.name != "planted":
        return None
    return cfg.data.dataset("test").ceiling()


def run_study(
    out_dir: str,
    plan: Sequence[Study],
    workers: int,
    *,
    cpu: bool = False,
    deadline_s: Optional[float] = None,
    retry_failed: bool = False,
    progress: bool = True,
    final: bool = True,
    command: str = "",
) -> Dict[str, Any]:
    """Runs every study of ``plan`` in one pool and writes ``<out_dir>/frontier.json``; returns its payload."""
    start = time.monotonic()
    deadline = start + deadline_s if deadline_s else None
    pool = Pool(out_dir, workers=workers, cpu=cpu, retry_failed=retry_failed, progress=progress, deadline=deadline)
    try:
        for study in plan:
            study.schedule(pool)
        pool.join()
    finally:
        pool.close()
    plans = {}
    for study in plan:
        summary = study.summary()
        summary["ceiling"] = _ceiling(study)
        summary["alloc_target"] = study.p.alloc_target
        plans[study.p.name] = summary
    payload = {
        "command": command,
        "final": final,
        "environment": _environment(),
        "wall_seconds": time.monotonic() - start,
        "workers": workers,
        "plans": plans,
        "records": [r.to_dict() for r in pool.records.values()],
        "skipped": [r.name for r in pool.skipped],
    }
    from torchrec_memcom.recipes.training import write_json

    write_json(os.path.join(out_dir, "frontier.json"), payload)
    return payload


def pack(out_dir: str, pack_dir: str, payload: Dict[str, Any]) -> List[str]:
    """At most 8 files in ``pack_dir``: ``frontier.json``, ``RESULTS.md``, one PNG per protocol and ``runs.tar.gz``
    (the run cache, for ``--resume-from``)."""
    os.makedirs(pack_dir, exist_ok=True)
    shutil.copy(os.path.join(out_dir, "frontier.json"), os.path.join(pack_dir, "frontier.json"))
    write_report(payload, os.path.join(pack_dir, "RESULTS.md"), pack_dir)
    with tarfile.open(os.path.join(pack_dir, "runs.tar.gz"), "w:gz") as tar:
        tar.add(os.path.join(out_dir, "runs"), arcname="runs")
    return sorted(os.listdir(pack_dir))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    p.add_argument("--prepare", metavar="DIR", help="write DIR/ml-1m.npz and exit")
    p.add_argument("--report", metavar="JSON", help="only write the markdown and plots from a frontier.json")
    p.add_argument("--results-md", default="docs/RESULTS.md", help="markdown the report writes")
    p.add_argument("--plots-dir", default="docs", help="folder of the report's PNGs")
    p.add_argument("--protocols", default="ctr,ranking,planted", help=f"comma-separated, of {sorted(PROTOCOLS)}")
    p.add_argument("--data", default=None, help="MovieLens-1M path for data.path (e.g. DIR/ml-1m.npz from --prepare)")
    p.add_argument("--out", default="outputs/quality", help="the sweep's folder (run cache, logs, frontier.json)")
    p.add_argument("--workers", type=int, default=2, help="parallel runs (worker processes)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the selected points")
    p.add_argument("--no-allocator", action="store_true", help="skip the allocator comparison")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--smoke", action="store_true", help="the small CPU version (machinery check, not results)")
    p.add_argument("--cpu", action="store_true", help="hide GPUs from the workers")
    p.add_argument("--deadline", type=float, default=None, help="seconds after which no new run starts")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs cached as failed")
    p.add_argument("--resume-from", default=None, help="a pack's runs.tar.gz to restore the run cache from")
    p.add_argument("--pack", default=None, metavar="DIR", help="also write the <= 8-file pack into DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.prepare:
        print(f"wrote {prepare(args.prepare)}")
        return {}
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            payload = json.load(f)
        print(write_report(payload, args.results_md, args.plots_dir))
        return payload
    if args.resume_from:
        with tarfile.open(args.resume_from) as tar:
            tar.extractall(args.out, filter="data")
    names = [n for n in args.protocols.split(",") if n]
    plan = studies(names, args.seeds, args.data, not args.no_allocator, args.set, smoke=args.smoke)
    command = "python scripts/bench_quality.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    payload = run_study(
        args.out,
        plan,
        args.workers,
        cpu=args.cpu,
        deadline_s=args.deadline,
        retry_failed=args.retry_failed,
        progress=not args.quiet,
        final=not args.smoke,
        command=command,
    )
    ok = sum(r["status"] == "ok" for r in payload["records"])
    print(
        f"{ok} runs ok, {len(payload['records']) - ok} failed, {len(payload['skipped'])} not started; "
        f"{payload['wall_seconds']:.0f} s -> {os.path.join(args.out, 'frontier.json')}"
    )
    if args.pack:
        print("packed:", pack(args.out, args.pack, payload))
    return payload


if __name__ == "__main__":
    main()
