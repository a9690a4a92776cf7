# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The frontier study's report: aggregates (mean ± std over seeds), Pareto curves, PNG plots and ``RESULTS.md``.

Input: the sweep's JSON (``quality.run_study`` writes ``frontier.json``: the plan of every protocol and every run's
record). Per protocol and point: the test metric over its seeds, the embedding bytes (the recipes' memory report),
the lift over the no-id model (``metric - no-id``), the share of the best stock model's lift kept, and the
relative loss against the best stock point (chosen by validation). A line's Pareto curve keeps its points that no
cheaper point of the same line beats (on the test mean; the points themselves were chosen by validation).
"""

import math
import os
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["aggregate", "goal_checks", "markdown", "pareto", "plot", "write_report"]

LINE_ORDER = [
    "stock",
    "lowrank",
    "hash",
    "qr",
    "memcom",
    "lma",
    "hash-narrow",
    "memcom-narrow",
    "alloc-model",
    "alloc-measured",
    "no-id",
]


def _mean_std(xs: Sequence[float]) -> Dict[str, Any]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _val(rec: Mapping[str, Any], metric: str) -> Optional[float]:
    es = (rec.get("result") or {}).get("early_stopping") or {}
    if es.get("best_value") is not None:
        return float(es["best_value"])
    evals = [e for e in (rec.get("result") or {}).get("evals") or [] if e.get("split") == "val"]
    return float(evals[-1][metric]) if evals else None


def aggregate(payload: Mapping[str, Any], protocol: str) -> List[Dict[str, Any]]:
    """One row per (line, point) of ``protocol``: seeds, test metric mean ± std, validation metric, bytes, epochs."""
    plan = payload["plans"][protocol]
    metric = plan["metric"]
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for rec in payload["records"]:
        tags = rec["run"]["tags"]
        if tags.get("protocol") != protocol or rec["status"] != "ok":
            continue
        tuned = plan["tuned"].get(tags["line"], {})
        if (tags["sparse_lr"], tags["dense_lr"]) != (tuned.get("sparse_lr"), tuned.get("dense_lr")):
            continue  # a tuning trial with another learning rate
        groups.setdefault(f"{tags['line']}|{tags['point']}", []).append(rec)
    rows = []
    for recs in groups.values():
        tags = recs[0]["run"]["tags"]
        res = [r["result"] for r in recs]
        es = [r.get("early_stopping") or {} for r in res]
        rows.append(
            {
                "line": tags["line"],
                "point": tags["point"],
                "d": tags["d"],
                "target": tags["target"],
                "spec": tags["spec"],
                "seeds": sorted(r["run"]["tags"]["seed"] for r in recs),
                "test": _mean_std([r["final"][metric] for r in res]),
                "val_seed0": next((_val(r, metric) for r in recs if r["run"]["tags"]["seed"] == 0), None),
                "embedding_bytes": res[0]["embedding_bytes"],
                "compression": res[0]["compression"],
                "best_epoch": _mean_std([e.get("best_epoch") for e in es if e.get("best_epoch") is not None]),
                "samples_per_s": _mean_std([r["train"].get("samples_per_s") for r in res]),
                "selected": plan["selected"].get(tags["line"], {}).get(str(tags["target"])) == tags["point"]
                or plan["selected"].get(tags["line"], {}).get(tags["target"]) == tags["point"],
            }
        )
    order = {name: i for i, name in enumerate(LINE_ORDER)}
    rows.sort(key=lambda r: (order.get(r["line"], 99), r["embedding_bytes"]))
    _add_references(rows)
    return rows


def _add_references(rows: List[Dict[str, Any]]) -> None:
    """Adds ``lift`` over no-id, ``lift_kept`` of the best stock's lift and ``rel_loss`` vs the best stock point
    (best by the seed-0 validation metric)."""
    noid = next((r["test"]["mean"] for r in rows if r["line"] == "no-id"), None)
    stock = [r for r in rows if r["line"] == "stock" and r["val_seed0"] is not None]
    best = max(stock, key=lambda r: r["val_seed0"]) if stock else None
    ref = best["test"]["mean"] if best else None
    for r in rows:
        m = r["test"]["mean"]
        r["best_stock"] = best["point"] if best else None
        r["lift"] = m - noid if m is not None and noid is not None else None
        r["lift_kept"] = (m - noid) / (ref - noid) if None not in (m, noid, ref) and ref != noid else None
        r["rel_loss"] = (ref - m) / ref if None not in (m, ref) and ref else None


def pareto(rows: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The rows no cheaper (or equally cheap) row beats on the test mean, by increasing bytes."""
    out: List[Mapping[str, Any]] = []
    for r in sorted((r for r in rows if r["test"]["mean"] is not None), key=lambda r: r["embedding_bytes"]):
        if not out or r["test"]["mean"] > out[-1]["test"]["mean"]:
            out.append(r)
    return out


def _curve_rows(rows: Sequence[Mapping[str, Any]], line: str) -> List[Mapping[str, Any]]:
    """The line's selected points (the ones with every seed), or all its points if none was selected."""
    mine = [r for r in rows if r["line"] == line]
    chosen = [r for r in mine if r["selected"] or line in ("stock", "lowrank", "no-id") or line.startswith("alloc")]
    return chosen or mine


def plot(payload: Mapping[str, Any], protocol: str, path: str) -> bool:
    """Test metric vs embedding bytes (log x), one Pareto curve per line; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    plan = payload["plans"][protocol]
    rows = aggregate(payload, protocol)
    fig, ax = plt.subplots(figsize=(8, 5.2))
    for i, line in enumerate(LINE_ORDER):
        mine = [r for r in rows if r["line"] == line]
        if not mine:
            continue
        color = "0.3" if line == "no-id" else f"C{i % 10}"
        if line != "no-id":  # every point of the line, faintly (seed 0 only for the unselected ones)
            xs0, ys0 = [r["embedding_bytes"] for r in mine], [r["test"]["mean"] for r in mine]
            ax.scatter(xs0, ys0, s=10, color=color, alpha=0.3)
        curve = pareto(_curve_rows(rows, line))
        xs, ys = [r["embedding_bytes"] for r in curve], [r["test"]["mean"] for r in curve]
        es = [r["test"]["std"] or 0.0 for r in curve]
        if line == "no-id":
            ax.axhline(ys[0], color=color, ls=":", label="no-id (no id information)")
            continue
        ax.errorbar(
            xs, ys, yerr=es, color=color, marker="o", ms=4, capsize=2, label=line, lw=1.5 if line == "stock" else 1
        )
    ceiling = plan.get("ceiling")
    if ceiling:
        ax.axhline(ceiling["bayes_auc"], color="k", ls="--", lw=0.8, label="Bayes ceiling (planted model)")
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes (memory report, whole layer)")
    ax.set_ylabel(f"test {plan['metric']} (mean over seeds)")
    title = plan["label"] + (" - SYNTHETIC DATA" if plan.get("synthetic") else "")
    ax.set_title(title + ("" if payload.get("final") else " [CPU smoke run]"), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _kib(b: Optional[float]) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


def _pm(s: Mapping[str, Any], digits: int = 4) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _num(x: Optional[float], fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def protocol_section(payload: Mapping[str, Any], protocol: str, plot_name: Optional[str]) -> List[str]:
    plan = payload["plans"][protocol]
    metric = plan["metric"]
    rows = aggregate(payload, protocol)
    out = [f"## {plan['label']}" + (" (SYNTHETIC)" if plan.get("synthetic") else ""), ""]
    sizes = plan.get("table_sizes") or {}
    if sizes:
        out += [
            f"{len(sizes)} tables, {sum(sizes.values()):,} ids ("
            + ", ".join(f"{k} {v:,}" for k, v in sizes.items())
            + ")"
            + (f"; compressed: {', '.join(plan['large'])}" if plan.get("large") else "")
            + ".",
            "",
        ]
    if plan.get("ceiling"):
        c = plan["ceiling"]
        out += [
            f"Bayes ceiling of the planted model on the test rows: AUC {c['bayes_auc']:.4f}, logloss "
            f"{c['bayes_logloss']:.4f}.",
            "",
        ]
    out += [
        f"Recipe `{plan['recipe']}` preset `{plan['config']}` with `"
        + " ".join([*plan["common_overrides"], *plan.get("extra_overrides", [])])
        + "`.",
        "",
    ]
    tuned = ", ".join(
        f"{k}: sparse {v['sparse_lr']:g} / dense {v['dense_lr']:g}" + (f" (from {v['from']})" if "from" in v else "")
        for k, v in plan["tuned"].items()
    )
    out += [f"Learning rates chosen on validation (grid {plan['lr_grid']}): {tuned}.", ""]
    out += [
        f"| line | point | embedding bytes | seeds | test {metric} | lift over no-id | share of stock's lift | "
        f"rel. loss vs best stock | best epoch | samples/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if not (r["selected"] or r["line"] in ("stock", "lowrank", "no-id") or r["line"].startswith("alloc")):
            continue
        out.append(
            f"| {r['line']} | {r['point']} | {_kib(r['embedding_bytes'])} | {len(r['seeds'])} | {_pm(r['test'])} | "
            f"{_num(r['lift'], '+.4f')} | {_num(r['lift_kept'], '.0%')} | {_num(r['rel_loss'], '+.1%')} | "
            f"{_num(r['best_epoch']['mean'], '.1f')} | {_num(r['samples_per_s']['mean'], ',.0f')} |"
        )
    if rows:
        out += [
            "",
            f"Best stock point (by validation): `{rows[0]['best_stock']}`. Every other point (seed 0 only) is "
            "in the JSON and drawn faintly in the plot.",
        ]
    if plan["infeasible"]:
        out += [
            "",
            "Points a method cannot reach: "
            + "; ".join(f"{x['point']}: {x['why'].split(':')[-1].strip()}" for x in plan["infeasible"][:8])
            + ("; ..." if len(plan["infeasible"]) > 8 else ""),
        ]
    alloc = plan.get("allocator")
    if alloc:
        out += ["", f"**Allocator** at {_kib(plan['alloc_budget'])} (the byte point {plan.get('alloc_target', '')}):"]
        for line in ("alloc-model", "alloc-measured"):
            if line in alloc:
                info = alloc[line]
                if "error" in info:
                    out.append(f"- {line}: {info['error']}")
                    continue
                row = next((r for r in rows if r["line"] == line), None)
                res = _pm(row["test"]) if row else "not run"
                out.append(
                    f"- {line}: test {metric} {res} at {_kib(info['embedding_bytes'])}; tables `{info['tables']}`"
                )
                if info.get("verified"):
                    checked = ", ".join(f"{name} {value:.4f}" for name, value in info["verified"].items())
                    out.append(f"  - chosen among (joint short runs, validation {metric}): {checked}")
        uni = alloc.get("uniform_at_budget")
        row = next((r for r in rows if r["point"] == uni), None)
        if row:
            out.append(
                f"- best uniform point within the budget (by validation): `{uni}`, test {metric} {_pm(row['test'])}"
                f" at {_kib(row['embedding_bytes'])}"
            )
    out += goal_checks(rows, plan)
    if plot_name:
        out += ["", f"![{plan['label']}]({plot_name})"]
    return out + [""]


def goal_checks(rows: Sequence[Mapping[str, Any]], plan: Mapping[str, Any]) -> List[str]:
    """Issue 8's goals on this protocol, from the test means: at every byte point of at most 1/16 of the best stock
    model's bytes, the best method point (alone or narrowed) against the best stock point (stock or lowrank) of the
    same byte point (>= +0.003 AUC, >= +5% relative nDCG); the allocator's proposals against the best uniform point."""
    metric = plan["metric"]
    ref = next((r for r in rows if r["point"] == (rows[0]["best_stock"] if rows else None)), None)
    if ref is None:
        return []
    out = ["", f"**Goal checks** (test means; best stock `{ref['point']}` at {_kib(ref['embedding_bytes'])}):"]
    stockish = ("stock", "lowrank")
    for target in sorted({r["target"] for r in rows if r["target"]}):
        if not 0 < target * 16 <= ref["d"]:
            continue
        at = [r for r in rows if r["target"] == target and r["test"]["mean"] is not None]
        best_stock = max((r for r in at if r["line"] in stockish), key=lambda r: r["test"]["mean"], default=None)
        best_method = max(
            (r for r in at if r["line"] not in (*stockish, "no-id") and not r["line"].startswith("alloc")),
            key=lambda r: r["test"]["mean"],
            default=None,
        )
        if best_stock is None or best_method is None:
            continue
        gain = best_method["test"]["mean"] - best_stock["test"]["mean"]
        rel = gain / best_stock["test"]["mean"]
        met = gain >= 0.003 if metric == "auc" else rel >= 0.05
        out.append(
            f"- byte point {target} ({'MET' if met else 'MISSED'}): best method `{best_method['point']}` "
            f"{_pm(best_method['test'])} ({_kib(best_method['embedding_bytes'])}) vs best stock "
            f"`{best_stock['point']}` {_pm(best_stock['test'])} ({_kib(best_stock['embedding_bytes'])}): "
            f"{gain:+.4f} ({rel:+.1%}; goal " + ("+0.003" if metric == "auc" else "+5%") + ")"
        )
    uni = (plan.get("allocator") or {}).get("uniform_at_budget")
    uni_row = next((r for r in rows if r["point"] == uni), None)
    for line in ("alloc-model", "alloc-measured"):
        row = next((r for r in rows if r["line"] == line), None)
        if row and uni_row and row["test"]["mean"] is not None:
            gain = row["test"]["mean"] - uni_row["test"]["mean"]
            same = _same_tables(row["spec"], uni_row["spec"])
            verdict = (
                "MET: the same tables, a tie up to GPU run-to-run noise" if same else "MET" if gain >= 0 else "MISSED"
            )
            out.append(
                f"- {line} vs the best uniform point `{uni}` ({verdict}): {_pm(row['test'])} "
                f"vs {_pm(uni_row['test'])}: {gain:+.4f}"
            )
    return out


def _same_tables(proposal: Any, uniform: Any) -> bool:
    """Whether an allocator proposal (``{feature: spec}``) gives every table the uniform point's ``spec`` (fields
    the proposal adds to every spec of a method, e.g. MEmCom's entity-weight lr scale, are not compared)."""
    if not isinstance(proposal, Mapping) or not proposal or not isinstance(uniform, Mapping) or not uniform:
        return False
    return all(isinstance(s, Mapping) and all(s.get(k) == v for k, v in uniform.items()) for s in proposal.values())


def markdown(payload: Mapping[str, Any], plots: Mapping[str, Optional[str]]) -> str:
    env = payload.get("environment", {})
    smoke = not payload.get("final")
    lines = ["# Results: quality against embedding bytes", ""]
    if smoke:
        lines += [
            "> **CPU SMOKE RUN, not the study's results**: a tiny grid with few training steps on a 2-core CPU, "
            "to check the machinery end to end. The numbers below say nothing about the methods; the GPU sweep "
            "(`scripts/bench_quality.py`, see its docstring) replaces this file.",
            "",
        ]
    lines += [
        f"Generated by `{payload.get('command', 'scripts/bench_quality.py')}` (do not edit by hand) on "
        f"{env.get('device', '?')} ({env.get('versions', '')}) at {env.get('time', '?')}; wall time "
        f"{payload.get('wall_seconds', 0) / 60:.1f} min (this invocation), {len(payload['records'])} runs taking "
        f"{sum(r.get('seconds', 0.0) for r in payload['records']) / 60:.1f} min in all (cached ones included).",
        "",
        "Every number is a packaged recipe (`torchrec_memcom.recipes.dlrm` / `two_tower`) run at world size 1 with the "
        "overrides shown: what `python -m torchrec_memcom.recipes.<recipe> --config <preset> --set ...` gives. "
        "Embedding bytes are the whole embedding layer's, from the modules' memory report (MEmCom's per-id weights, "
        "LMA's signatures and narrow tables' projections included). Training length: early stopping on the validation "
        "split (patience and most epochs below); learning rates: the same grid for every line, tuned on validation at "
        "one representative point per line; test metric: mean ± std over the seeds of each line's best point per byte "
        "point (chosen on validation).",
        "",
        "Lines: `stock` (every table at the model width `d`), `lowrank` (stock stored `b` wide with a learned `b x d` "
        "projection), `hash` / `qr` / `memcom` / `lma` at model width `d` and ratio `r` on the compressed tables, "
        "`*-narrow` (the method stored `b` wide with a projection), `alloc-*` (the allocator's proposals), `no-id` "
        "(every table one shared row, `{type: hash, num_shared_rows: 1}`: the model sees no id at all). *Lift* is a "
        "point's test metric minus no-id's; *share of stock's lift* divides it by the best stock point's lift; *rel. "
        "loss* is against the best stock point (best by validation). Point names read `<line>-d<d>[-b<b>][-r<r>]`.",
        "",
    ]
    for protocol in payload["plans"]:
        lines += protocol_section(payload, protocol, plots.get(protocol))
    return "\n".join(lines)


def write_report(
    payload: Mapping[str, Any], md_path: str, plots_dir: str, plot_prefix: str = "quality_"
) -> Dict[str, Any]:
    """Writes the PNGs (``<plots_dir>/<plot_prefix><protocol>.png``) and the markdown; returns the paths."""
    plots: Dict[str, Optional[str]] = {}
    for protocol in payload["plans"]:
        path = os.path.join(plots_dir, f"{plot_prefix}{protocol}.png")
        ok = plot(payload, protocol, path)
        plots[protocol] = os.path.relpath(path, os.path.dirname(os.path.abspath(md_path))) if ok else None
    os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown(payload, plots))
    return {"markdown": md_path, "plots": plots}
