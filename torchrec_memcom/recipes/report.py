# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Side-by-side comparison of DLRM runs: a table on stdout, a JSON and a PNG plot.

    python -m torchrec_memcom.recipes.report outputs/demo/ml1m_*/results.json --out outputs/demo

Reads the JSON each DLRM run (``torchrec_memcom.recipes.dlrm``) writes and compares embedding bytes, compression,
final AUC and logloss, and training throughput (samples/s over all ranks). The plot (needs matplotlib) shows AUC
against embedding bytes and the logloss per run. A results file whose ``status`` is not ``ok`` (a failed or
unfinished run) is refused.
"""

import argparse
import json
import os
from typing import Any, Dict, List, Sequence


def load_runs(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """The results of finished runs.

    Raises:
        ValueError: a file's ``status`` is not ``ok`` (naming the file and its error, if any).
    """
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        if run.get("status") != "ok":
            error = f": {run['error']}" if run.get("error") else ""
            raise ValueError(f"{path}: not a finished run (status {run.get('status')!r}{error})")
        runs.append(run)
    return runs


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _methods(run: Dict[str, Any]) -> str:
    """``memcom 16x`` / ``lowrank b4`` style label of the non-stock tables of a run (``stock`` when none is)."""
    tables = run["config"].get("tables") or {}
    labels = set()
    for s in tables.values():
        kind = s.get("type", "stock")
        if "compression" in s:
            labels.add(f"{kind} {s['compression']:g}x")
        elif kind != "stock" and "base_dim" in s:
            labels.add(f"{kind} b{s['base_dim']}")
    return ", ".join(sorted(labels)) or "stock"


def rows(runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for r in runs:
        final = r.get("final") or {}
        out.append(
            {
                "run": r["run_name"],
                "tables": _methods(r),
                "embedding_bytes": r["embedding_bytes"],
                "compression": r["compression"],
                "split": final.get("split"),
                "auc": final.get("auc"),
                "logloss": final.get("logloss"),
                "samples_per_s": r["train"]["samples_per_s"],
                "steps": r["train"]["steps"],
                "train_seconds": r["train"]["seconds"],
                "world_size": r["world_size"],
                "device": r["device"],
            }
        )
    return out


def table(entries: Sequence[Dict[str, Any]]) -> str:
    split = next((e["split"] for e in entries if e["split"]), "test")
    header = ["run", "tables", "embedding bytes", "compression", f"{split} AUC", "logloss", "samples/s", "steps"]
    lines = [
        [
            e["run"],
            e["tables"],
            _bytes(e["embedding_bytes"]),
            f"{e['compression']:.2f}x",
            f"{e['auc']:.4f}" if e["auc"] is not None else "-",
            f"{e['logloss']:.4f}" if e["logloss"] is not None else "-",
            f"{e['samples_per_s']:,.0f}" if e["samples_per_s"] else "-",
            str(e["steps"]),
        ]
        for e in entries
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = "  ".join
    text = [fmt(h.ljust(w) for h, w in zip(header, widths)), fmt("-" * w for w in widths)]
    text += [fmt(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines]
    return "\n".join(text)


def plot(entries: Sequence[Dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for e in entries:
        if e["auc"] is None:
            continue
        ax1.scatter(e["embedding_bytes"] / 2**20, e["auc"], s=60)
        ax1.annotate(
            f"{e['run']}\n{e['compression']:.1f}x",
            (e["embedding_bytes"] / 2**20, e["auc"]),
            textcoords="offset points",
            xytext=(6, -4),
            fontsize=8,
        )
    ax1.set_xscale("log")
    ax1.margins(x=0.35, y=0.15)
    ax1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xlabel("embedding bytes (MiB, log scale)")
    ax1.set_ylabel(f"{entries[0]['split'] or 'test'} AUC")
    ax1.set_title("AUC vs embedding memory")
    ax1.grid(alpha=0.3)
    names = [e["run"] for e in entries]
    ax2.bar(names, [e["logloss"] or 0.0 for e in entries], color="tab:orange")
    ax2.set_ylabel("logloss (lower is better)")
    ax2.set_title("logloss")
    low = min((e["logloss"] for e in entries if e["logloss"]), default=0.0)
    ax2.set_ylim(bottom=max(0.0, low * 0.9))
    ax2.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Compare DLRM runs (results.json of torchrec_memcom.recipes.dlrm).")
    p.add_argument("results", nargs="+", help="results.json files, one per run, in table order")
    p.add_argument("--out", default=None, help="folder for comparison.json and comparison.png")
    p.add_argument("--title", default="", help="printed above the table")
    args = p.parse_args(argv)
    try:
        entries = rows(load_runs(args.results))
    except ValueError as e:
        raise SystemExit(f"report: {e}") from None
    if args.title:
        print(args.title)
    print(table(entries))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "comparison.json"), "w", encoding="utf-8") as f:
            json.dump({"runs": entries}, f, indent=2)
            f.write("\n")
        print(f"wrote {os.path.join(args.out, 'comparison.json')}")
        try:
            plot(entries, os.path.join(args.out, "comparison.png"))
            print(f"wrote {os.path.join(args.out, 'comparison.png')}")
        except ImportError:
            print("no plot: matplotlib is not installed (pip install matplotlib)")


if __name__ == "__main__":
    main()
