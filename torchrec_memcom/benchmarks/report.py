# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Benchmark results: rows from every rank's and every repeat's measurements, ratios against stock, the JSON payload,
markdown tables and the weak-scaling combine of runs on different numbers of GPUs.

Pure functions of plain dicts (the JSON), so they are tested on a fixed payload without running anything.
"""

import copy
import json
import os
import platform
import socket
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from torchrec_memcom import provenance
from torchrec_memcom.benchmarks import host_time
from torchrec_memcom.benchmarks.layouts import Layout
from torchrec_memcom.benchmarks.planning import plan_summary
from torchrec_memcom.benchmarks.trace_ops import IdleTime, idle_table
from torchrec_memcom.distributed.compressed import lma_sends_raw_ids

__all__ = [
    "OPTIMIZERS",
    "add_ratios",
    "attach_profile",
    "combine",
    "environment",
    "markdown_report",
    "markdown_table",
    "merge_ranks",
    "merge_repeats",
    "optimizer_label",
    "write_outputs",
]

# --optimizer -> (fused TBE optimizer, torch.optim optimizer of the dense layers)
OPTIMIZERS: Dict[str, Tuple[str, str]] = {
    "rowwise_adagrad": ("exact_rowwise_adagrad", "adagrad"),
    "sgd": ("exact_sgd", "sgd"),
}
_DENSE_NAMES = {"adagrad": "Adagrad", "sgd": "SGD"}
_MEMORY_KEYS = ("peak_bytes", "train_peak_bytes", "build_peak_bytes", "resident_bytes", "peak_reserved_bytes")


def optimizer_label(optimizer: str, lr: float) -> str:
    """``"fused EXACT_ROWWISE_ADAGRAD + dense Adagrad, lr 0.01"``: what every table of a report trained with."""
    sparse, dense = OPTIMIZERS[optimizer]
    return f"fused {sparse.upper()} + dense {_DENSE_NAMES[dense]}, lr {lr:g}"


def _index_dtype_text(index_dtype: Optional[str]) -> str:
    if index_dtype is None:
        return "; TBE indices: stock int64, compressed int32 where their ids fit (the defaults)"
    return f"; TBE indices {index_dtype} for every method (`--index-dtype`)"


def _lma_ids_text(cfg: Dict[str, Any], world_size: int) -> str:
    """How LMA's ids crossed table- and column-wise input dists (``--lma-raw-ids``), when LMA ran."""
    methods = cfg.get("methods") or []
    if "lma" not in (methods.split(",") if isinstance(methods, str) else methods):
        return ""
    raw = lma_sends_raw_ids(cfg.get("lma_raw_ids"), world_size)
    return "; LMA ids " + ("raw through the input dist" if raw else "as chunk locations through the input dist")


def _memcom_rows_text(cfg: Dict[str, Any]) -> str:
    """Where one-rank MEmCom's rows were computed, when the run turned the default off
    (``--no-memcom-rows-in-transform``)."""
    if cfg.get("memcom_rows_in_transform", True):
        return ""
    return "; MEmCom's rows after the dist (`--no-memcom-rows-in-transform`)"


def _warmup_text(cfg: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> str:
    """``"10 warmup"`` (runs before ``--warmup-s``) or ``">= 10 warmup steps and >= 2 s (31-240 run)"``."""
    if cfg.get("warmup_s") is None:
        return f"{cfg['warmup']} warmup"
    ran = [r["warmup_steps"] for r in results if r.get("warmup_steps") is not None]
    counts = f" ({min(ran)}-{max(ran)} run)" if ran else ""
    return f">= {cfg['warmup']} warmup steps and >= {cfg['warmup_s']:g} s{counts}"


_KERNEL_MS = "total_ms_per_step"  # a profile's GPU kernel ms per step (on CUDA; else its self CPU ms)


def merge_ranks(kind: str, method: str, label: str, per_rank: List[Dict[str, Any]], layout: Layout) -> Dict[str, Any]:
    """One result row from every rank's measurements of one repeat (per step, the slowest rank counts)."""
    r0 = per_rank[0]
    world_size = len(per_rank)
    row: Dict[str, Any] = {"model": kind, "method": method, "label": label, "status": r0["status"]}
    report = r0["memory_report"]
    row.update(
        world_size=world_size,
        report_bytes=report["total_bytes"],
        report_stock_bytes=report["stock_bytes"],
        compression_ratio=report["compression_ratio"],
        memory_report=report,
        tables=r0["tables"],
        plan_s=max(r["plan_s"] for r in per_rank),
        hbm_cap_bytes=r0["hbm_cap_bytes"],
        ddr_cap_bytes=r0["ddr_cap_bytes"],
    )
    if r0["status"] != "ok":
        row.update(reason=r0["reason"], planner_error=r0.get("planner_error"))
        return row
    row.update(step_mode=r0.get("step_mode", "eager"), capture_error=r0.get("capture_error"))
    step_ms = [max(r["step_ms"][i] for r in per_rank) for i in range(len(r0["step_ms"]))]
    median = statistics.median(step_ms)
    row.update(
        global_batch=world_size * layout.batch_size,
        samples_per_s=world_size * layout.batch_size / (median / 1e3),
        step_ms_median=median,
        step_ms_mean=statistics.fmean(step_ms),
        step_ms_min=min(step_ms),
        step_ms_max=max(step_ms),
        step_ms_wall_mean=max(r["wall_ms"] for r in per_rank) / max(len(step_ms), 1),
        step_ms_per_rank_median=[statistics.median(r["step_ms"]) for r in per_rank],
        step_ms_all=step_ms,
        host_ms_median=max(statistics.median(r["host_step_ms"]) for r in per_rank) if "host_step_ms" in r0 else None,
        repeats=1,
        step_ms_repeat_medians=[median],
        local_embedding_bytes_per_rank=[r["local_embedding_bytes"] for r in per_rank],
        local_embedding_bytes_max=max(r["local_embedding_bytes"] for r in per_rank),
        local_embedding_uvm_bytes_max=max(r["local_embedding_uvm_bytes"] for r in per_rank),
        local_dense_bytes_per_rank=[r["local_dense_bytes"] for r in per_rank],
        host_rss_bytes_max=max((r["host_rss_bytes"] or 0) for r in per_rank) or None,
        shard_s=max(r["shard_s"] for r in per_rank),
        warmup_steps=r0.get("warmup_steps"),
        batches=r0.get("batches"),
        fresh_batches=all(r.get("fresh_batches", False) for r in per_rank),
        uvm_cache=_merge_cache_stats([r.get("uvm_cache") for r in per_rank]),
        plan_tables=r0["plan_tables"],
        plan_estimate=r0["plan_estimate"],
    )
    row["plan_summary"] = plan_summary(r0["plan_tables"])
    for key in (*_MEMORY_KEYS, "start_allocated_bytes"):
        if key in r0:
            row[f"{key}_per_rank"] = [r[key] for r in per_rank]
            row[f"{key}_max"] = max(r[key] for r in per_rank)
    if "lma_signature_coverage" in r0:
        row["lma_signature_coverage"] = r0["lma_signature_coverage"]
        row["lma_fit_s"] = max(r["lma_fit_s"] for r in per_rank)
    return row


def _merge_cache_stats(per_rank: Sequence[Optional[Dict[str, float]]]) -> Optional[Dict[str, float]]:
    """All ranks' UVM cache counters (``uvm_cache.cache_stats``) as one: per step, summed over ranks."""
    stats = [c for c in per_rank if c]
    if not stats:
        return None
    out = {k: sum(c[k] for c in stats) for k in stats[0] if k.endswith("_per_step")}
    unique = out["unique_ids_per_step"]
    out["unique_miss_rate"] = out["unique_misses_per_step"] / unique if unique else 0.0
    out["steps"] = stats[0]["steps"]
    out["ranks"] = len(stats)
    return out


def _batches_text(results: Sequence[Dict[str, Any]]) -> str:
    """How many batches each rank cycled, and whether every timed step's batch was new to the model."""
    ran = [r for r in results if r.get("batches")]
    if not ran:
        return ""
    count = ran[0]["batches"]
    if all(r.get("fresh_batches") for r in ran):
        return f"; {count} distinct batches per rank, every timed step's new to the model (fresh ids for a UVM cache)"
    return f"; {count} distinct batches per rank, cycled"


def uvm_cache_table(results: Sequence[Dict[str, Any]]) -> List[str]:
    """The UVM cache counters of the rows that had tables in host memory, as markdown lines (none: ``[]``)."""
    rows = [r for r in results if r.get("uvm_cache")]
    if not rows:
        return []
    steps = rows[0]["uvm_cache"]["steps"]
    lines = [
        "",
        f"UVM cache (tables in host memory behind FBGEMM's HBM cache; FBGEMM's counters over {steps} steps after the "
        "timed ones, all ranks; ids per step: every id of the TBEs holding a cache, whose HBM tables TorchRec groups "
        "with the cached ones; distinct and not cached: the cached tables' ids):",
        "",
        "| model | method | ids per step | distinct | distinct not cached (read from host) | miss rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["uvm_cache"]
        lines.append(
            f"| {r['model']} | {r['label']} | {c['ids_per_step']:,.0f} | {c['unique_ids_per_step']:,.0f} | "
            f"{c['unique_misses_per_step']:,.0f} | {c['unique_miss_rate']:.1%} |"
        )
    return lines


def attach_profile(row: Dict[str, Any], per_rank: List[Dict[str, Any]]) -> None:
    """Puts rank 0's profile of a method (from the profile pass) into its row, with every rank's host ms/step, and
    the row's GPU busy: GPU kernel ms per step (profiled) / the timed median step (not profiled: the profiler's own
    host overhead stretches its wall time)."""
    row["profile"] = dict(per_rank[0])
    row["profile"]["host_ms_per_step_per_rank"] = [p["host_ms_per_step"] for p in per_rank]
    on_gpu = row["profile"].get("time_basis") == "GPU kernel time"
    row["gpu_busy"] = row["profile"][_KERNEL_MS] / row["step_ms_median"] if on_gpu else None


def merge_repeats(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from the rows of the repeats of one (model, method): the median of the per-repeat median steps
    (and samples/s from it), every step time, the largest memory peaks."""
    out = copy.deepcopy(dict(rows[0]))
    ok = [r for r in rows if r["status"] == "ok"]
    if len(rows) == 1 or not ok:
        return out
    medians = [r["step_ms_median"] for r in ok]
    median = statistics.median(medians)
    steps = [t for r in ok for t in r["step_ms_all"]]
    out.update(
        repeats=len(ok),
        step_ms_repeat_medians=medians,
        step_ms_median=median,
        samples_per_s=out["global_batch"] / (median / 1e3),
        step_ms_all=steps,
        step_ms_mean=statistics.fmean(steps),
        step_ms_min=min(steps),
        step_ms_max=max(steps),
    )
    hosts = [r["host_ms_median"] for r in ok if r.get("host_ms_median") is not None]
    out["host_ms_median"] = statistics.median(hosts) if hosts else None
    warm = [r["warmup_steps"] for r in ok if r.get("warmup_steps") is not None]
    if warm:
        out["warmup_steps"] = min(warm)
    for key in (*_MEMORY_KEYS, "local_embedding_bytes", "local_embedding_uvm_bytes"):
        if f"{key}_max" in out:
            out[f"{key}_max"] = max(r[f"{key}_max"] for r in ok)
    return out


def add_ratios(results: List[Dict[str, Any]]) -> None:
    """Throughput, memory and host time of each row relative to the stock row of the same model (same run)."""
    stock = {r["model"]: r for r in results if r["method"] == "stock" and r["status"] == "ok"}
    for r in results:
        base = stock.get(r["model"])
        if r["status"] != "ok" or base is None:
            continue
        r["throughput_vs_stock"] = r["samples_per_s"] / base["samples_per_s"]
        r["report_bytes_vs_stock"] = r["report_bytes"] / base["report_bytes"]
        if "peak_bytes_max" in r and "peak_bytes_max" in base:
            r["peak_bytes_vs_stock"] = r["peak_bytes_max"] / base["peak_bytes_max"]
        r["local_embedding_bytes_vs_stock"] = r["local_embedding_bytes_max"] / max(base["local_embedding_bytes_max"], 1)
        if r.get("host_ms_median") and base.get("host_ms_median"):
            r["host_vs_stock"] = r["host_ms_median"] / base["host_ms_median"]
        if r.get("profile") and base.get("profile"):
            if r.get("gpu_busy") is not None and base.get("gpu_busy") is not None:
                r["kernel_vs_stock"] = r["profile"][_KERNEL_MS] / base["profile"][_KERNEL_MS]


def _bytes(b: Optional[float]) -> str:
    if b is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


def _x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _profile_cell(r: Dict[str, Any], key: str) -> str:
    prof = r.get("profile")
    if not prof or prof.get(key) is None:
        return "-"
    return f"{prof[key]:.2f}"


def _gpu_ops_cell(r: Dict[str, Any]) -> str:
    ops = (r.get("profile") or {}).get("gpu_ops_per_step")
    return "-" if ops is None else f"{ops:g}"


def _syncs_cell(r: Dict[str, Any]) -> str:
    syncs = (r.get("profile") or {}).get("host_syncs")
    return "-" if not syncs else f"{syncs['per_step']:g}"


def step_spread(r: Dict[str, Any]) -> str:
    """The 10th-90th percentile of a row's timed steps ("p10-p90" in ms): a wide range marks a noisy run, where the
    median step (and its ratio to stock) says less than the GPU kernel time."""
    steps = r.get("step_ms_all") or []
    if len(steps) < 2:
        return "-"
    deciles = statistics.quantiles(steps, n=10, method="inclusive")
    return f"{deciles[0]:.2f}-{deciles[-1]:.2f}"


def markdown_table(results: List[Dict[str, Any]]) -> str:
    """The main table: throughput, step time and its spread, host time, GPU busy and GPU kernel time (profiled rows),
    memory, plan."""
    ok = [r for r in results if r["status"] == "ok"]
    profiled = any(r.get("profile") for r in ok)
    uvm = any(r.get("local_embedding_uvm_bytes_max") for r in ok)
    repeated = any(r.get("repeats", 1) > 1 for r in ok)
    graphed = any(r.get("step_mode", "eager") != "eager" for r in ok)
    columns: List[Tuple[str, Any]] = [
        ("model", lambda r: r["model"]),
        ("method", lambda r: r["label"]),
    ]
    if graphed:
        columns.append(("step", lambda r: r.get("step_mode", "eager")))
    columns += [
        ("samples/s", lambda r: f"{r['samples_per_s']:,.0f}"),
        ("step ms (median)", lambda r: f"{r['step_ms_median']:.2f}"),
        ("throughput vs stock", lambda r: _x(r.get("throughput_vs_stock"))),
    ]
    if repeated:
        columns.append(("repeat medians (ms)", lambda r: " / ".join(f"{m:.2f}" for m in r["step_ms_repeat_medians"])))
    columns += [
        ("host ms/step", lambda r: "-" if r.get("host_ms_median") is None else f"{r['host_ms_median']:.2f}"),
        ("host vs stock", lambda r: _x(r.get("host_vs_stock"))),
    ]
    if profiled:
        columns += [
            ("GPU busy", lambda r: "-" if r.get("gpu_busy") is None else f"{r['gpu_busy']:.0%}"),
            ("GPU kernel ms/step", lambda r: "-" if r.get("gpu_busy") is None else _profile_cell(r, _KERNEL_MS)),
            ("kernel vs stock", lambda r: _x(r.get("kernel_vs_stock"))),
            ("GPU ops/step", _gpu_ops_cell),
            ("host syncs/step", _syncs_cell),
        ]
    columns.append(("steps p10-p90 (ms)", step_spread))
    columns += [
        ("peak HBM/rank (max)", lambda r: _bytes(r.get("peak_bytes_max"))),
        ("peak vs stock", lambda r: _x(r.get("peak_bytes_vs_stock"))),
        ("emb bytes/rank (max)", lambda r: _bytes(r["local_embedding_bytes_max"])),
    ]
    if uvm:
        columns += [
            ("of which host (UVM)/rank", lambda r: _bytes(r.get("local_embedding_uvm_bytes_max"))),
            ("host RSS/rank (max)", lambda r: _bytes(r.get("host_rss_bytes_max"))),
        ]
    columns += [
        ("emb bytes (report)", lambda r: _bytes(r["report_bytes"])),
        ("report vs stock", lambda r: _x(r.get("report_bytes_vs_stock"))),
        ("plan", lambda r: r["plan_summary"]),
    ]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        if r["status"] == "ok":
            cells = [str(f(r)) for _, f in columns]
        else:
            reason = r["reason"].splitlines()[0][:240].replace("|", "\\|")
            cells = [r["model"], r["label"], f"{r['status']}: {reason}"] + [""] * (len(columns) - 3)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gb(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / 1e9:.1f} GB"


def _sites_in_order() -> List[host_time.Site]:
    """The default sites, each followed by the finer sites inside it (a table's row order; every finer site sits
    inside a default one)."""
    out: List[host_time.Site] = []
    for site in host_time.SITES:
        out.append(site)
        out += [f for f in host_time.FINE_SITES if f.inside == site.label]
    return out


_SITES_IN_ORDER = _sites_in_order()


def host_breakdown_tables(results: List[Dict[str, Any]]) -> List[str]:
    """Per model, the host time per step of each part of the embedding layer (``host_time.host_breakdown``), one
    column per profiled method; markdown lines (none without a breakdown)."""
    lines: List[str] = []
    for model in dict.fromkeys(r["model"] for r in results):
        rows = [r for r in results if r["model"] == model and (r.get("profile") or {}).get("host_breakdown")]
        if not rows:
            continue
        labels: Dict[str, Optional[str]] = {}
        for r in rows:
            for label, site in r["profile"]["host_breakdown"]["sites"].items():
                labels.setdefault(label, site["inside"])
        order = {s.label: i for i, s in enumerate(_SITES_IN_ORDER)}
        labels = dict(sorted(labels.items(), key=lambda kv: order.get(kv[0], len(order))))
        lines += [
            "",
            f"## Host time by part: {model} (ms per step; rank 0, no profiler, each part's time includes what it "
            "calls, indented parts run inside the part above)",
            "",
            "| part | " + " | ".join(r["label"] for r in rows) + " |",
            "|---|" + "---:|" * len(rows),
            "| host ms/step (median step call) | "
            + " | ".join(f"{r['profile']['host_breakdown']['step_ms']:.3f}" for r in rows)
            + " |",
        ]
        for label, inside in labels.items():
            cells = []
            for r in rows:
                site = r["profile"]["host_breakdown"]["sites"].get(label)
                cells.append("-" if site is None else f"{site['ms_per_step']:.3f} ({site['calls_per_step']:g}x)")
            name = f"&nbsp;&nbsp;{label}" if inside else label
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _op_rows(entries: Sequence[Dict[str, Any]]) -> List[str]:
    """Markdown rows of a profile's op list (``name``, ``count``, ``self_us``, ``share``)."""
    rows = []
    for e in entries:
        name = e["name"].replace("|", "\\|")[:90]
        rows.append(f"| `{name}` | {e['count']} | {e['self_us'] / 1e3:.2f} | {e['share']:.1%} |")
    return rows


def _devices_text(env: Dict[str, Any]) -> str:
    shared = env.get("ranks_per_device", 1)
    if shared == 1:
        return f"{env['world_size']} x {env['device_name']} ({env['backend']})"
    planned = (  # runs before ranks_per_host was recorded planned each rank as a host of its own
        "the planner plans the ranks as one host's GPUs, each with its share of this one's memory"
        if env.get("ranks_per_host", 1) > 1
        else "the planner sees each rank as a host of its own, so its plans can differ from a one-host machine's"
    )
    return (
        f"{env['world_size']} ranks, {shared} sharing each {env['device_name']} ({env['backend']}, `--device "
        "cuda-shared`: the all-to-alls between ranks are real but go through the host; the step times are not a "
        f"multi-GPU machine's; {planned})"
    )


def markdown_report(payload: Dict[str, Any]) -> str:
    """The whole markdown report of one run: setup, the optimizer, the main table, plans, LMA fits, profiles."""
    env, cfg = payload["environment"], payload["config"]
    layout = cfg["layout_spec"]
    results = payload["results"]
    first = next((r for r in results if "hbm_cap_bytes" in r), {})
    scale = cfg.get("scale", 1.0)
    rows = sum(layout["num_embeddings"])
    repeats = cfg.get("repeats", 1)
    lines = [
        f"# Sharded embedding benchmark: layout `{cfg['layout']}`" + (f" x{scale:g}" if scale != 1 else ""),
        "",
        f"- {_devices_text(env)}, torch {env['torch']}, "
        f"torchrec {env['torchrec']}, fbgemm_gpu {env['fbgemm_gpu']}"
        + (f"; code {env['revision']}, {env['time']}" if "revision" in env else ""),
        f"- {len(layout['num_embeddings'])} tables, dim {layout['embedding_dim']}, {rows:,} logical rows "
        f"({_gb(rows * layout['embedding_dim'] * 4)} as fp32 stock tables); batch {layout['batch_size']} per rank, "
        f"pooling {layout['pooling']}; ids {cfg['ids']}"
        + (f" (zipf {cfg['zipf']})" if cfg["ids"] == "powerlaw" else ""),
        f"- compression {cfg['ratio']:g}x on tables >= {layout['compress_min_rows']:,} rows; sharding "
        f"{cfg['sharding_type'] or 'planner'}; kernels {', '.join(layout.get('kernels', []))}; pipeline "
        f"{cfg['pipeline']}"
        + ("; TorchRec's input-dist permutation cached (`--cache-recat`)" if cfg.get("cache_recat") else "")
        + ("; steps replayed from CUDA graphs where capturable (`--cuda-graph`)" if cfg.get("cuda_graph") else "")
        + ("; dense matmuls in TF32 (`--allow-tf32`)" if cfg.get("allow_tf32") else "")
        + (
            "; batches carry their per-feature id counts (`--known-length-per-key`)"
            if cfg.get("known_length_per_key")
            else ""
        )
        + _index_dtype_text(cfg.get("index_dtype"))
        + _lma_ids_text(cfg, env["world_size"])
        + _memcom_rows_text(cfg)
        + f"; {cfg['iters']} timed steps after {_warmup_text(cfg, results)}"
        + (f", {repeats} interleaved repeats (median of the per-repeat medians)" if repeats > 1 else "")
        + _batches_text(results),
        f"- planner budget per rank: HBM {_gb(first.get('hbm_cap_bytes'))}, DDR {_gb(first.get('ddr_cap_bytes'))}"
        + (
            f" (HBM enforced by torch.cuda.set_per_process_memory_fraction); UVM-cached tables in "
            f"{cfg.get('uvm_memory')} memory, cache load factor {cfg.get('cache_load_factor')}"
            if cfg.get("hbm_cap_gb")
            else ""
        ),
        "- samples/s = world size x batch / median step time (slowest rank per step); peak = max over ranks of "
        "torch.cuda.max_memory_allocated; emb/rank = this rank's embedding parameters, buffers and TBE optimizer "
        "state (UVM: the part in host memory); report = the whole embedding layer by `memory_report()`; host "
        "ms/step = median time of one step's call right after a synchronisation (40 steps after the timed ones, "
        "no profiler: the host's launch time), GPU busy = GPU kernel time per step under the "
        "profiler / the timed median step (profiled methods, in a separate pass after all timed runs, each method "
        "rebuilt); GPU ops/step = kernels, copies and memsets the step put on the GPU (same pass: each costs a "
        "launch on the host, so they count the host's work where its time varies by machine); host syncs/step = "
        "host-device synchronisations per step under "
        'torch.cuda.set_sync_debug_mode("warn") (same pass). Synthetic ids: speed and memory only.',
    ]
    base = next((r for r in results if "start_allocated_bytes_max" in r), None)
    if base is not None:
        lines.append(
            f"- peaks include {_bytes(base['start_allocated_bytes_max'])} allocated before the first model was built "
            "(input batches, loss weights, library workspaces)."
        )
    lines += ["", f"Optimizer: {cfg['optimizer_label']}.", "", markdown_table(results)]
    for r in results:
        if r.get("capture_error"):
            reason = " ".join(r["capture_error"].split())[:300]
            how = "through TrainPipelineSparseDist" if r["step_mode"].startswith("pipelined") else "eagerly"
            lines.append(f"\n{r['model']} / {r['label']}: not capturable in a CUDA graph, ran {how}: {reason}")
    lines += uvm_cache_table(results)
    lines += ["", "## Plans", ""]
    for r in results:
        if r["status"] == "ok":
            plan = ", ".join(f"{t}: {v}" for t, v in r["plan_tables"].items())
            est = r.get("plan_estimate", {}).get("perf_ms_max")
            lines.append(f"- {r['model']} / {r['label']}" + (f" (est. {est:.2f} ms)" if est else "") + f": {plan}")
        else:
            lines.append(f"- {r['model']} / {r['label']}: {r['status']}: {r['reason']}")
    for r in results:
        cov = r.get("lma_signature_coverage")
        if cov:
            mean = sum(cov.values()) / len(cov)
            lines.append(
                f"\nLMA ({r['model']}): ids with a signature after fitting on {layout['lma_fit_rows']} rows: mean "
                f"{mean:.1%} over {len(cov)} tables ({r['lma_fit_s']:.1f} s)."
            )
    lines += host_breakdown_tables(results)
    for r in results:
        prof = r.get("profile")
        if not prof:
            continue
        busy = f", GPU busy {prof['gpu_busy']:.0%}" if prof.get("gpu_busy") is not None else ""
        lines += [
            f"\n## Profile: {r['model']} / {r['label']} ({prof['time_basis']}: {prof[_KERNEL_MS]:.2f} ms per "
            f"step over {prof['steps']} steps, vs {r['step_ms_median']:.2f} ms step time; under the profiler: wall "
            f"{prof['wall_ms_per_step']:.2f} ms, host (self CPU) {prof['host_ms_per_step']:.2f} ms{busy} per step)",
            "",
            "| op / kernel | calls | self ms | share |",
            "|---|---|---|---|",
        ]
        lines += _op_rows(prof["top"])
        if prof.get("host_top"):
            lines += ["", "| host op (self CPU) | calls | self ms | share of host |", "|---|---|---|---|"]
            lines += _op_rows(prof["host_top"])
        lines += _idle_rows(prof.get("gpu_idle"))
        if prof.get("trace"):
            lines.append(f"\nFull table: `{prof['table']}`; trace: `{prof['trace']}`.")
        syncs = prof.get("host_syncs")
        if syncs and syncs["sites"]:
            lines += ["", f"Host-device synchronisations: {syncs['per_step']:g} per step", ""]
            lines += [f"- {n:g} x `{site}`" for site, n in syncs["sites"].items()]
    return "\n".join(lines) + "\n"


def _idle_rows(idle: Optional[Dict[str, Any]]) -> List[str]:
    """The profile's ``gpu_idle`` (``measure.profile_steps``): where the GPU waited for the host, under the profiler."""
    if not idle or not idle["span_us_per_step"]:
        return []
    span, busy = idle["span_us_per_step"], idle["busy_us_per_step"]
    head = (
        f"GPU idle under the profiler (its host overhead stretches the gaps): {span - busy:.0f} of {span:.0f} us per "
        f"step, {busy / span:.0%} busy; each gap charged to the launch that ended it (`trace_ops --idle`), largest:"
    )
    return ["", head, ""] + idle_table([IdleTime(**r) for r in idle["top"]])


def write_outputs(payload: Dict[str, Any], out: str, md: str, text: Optional[str] = None) -> None:
    """Writes the JSON payload to ``out`` and its markdown report (``text``, default ``markdown_report``) to ``md``."""
    text = markdown_report(payload) if text is None else text
    for path, body in ((out, json.dumps(payload, indent=2)), (md, text)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(body)


def environment(
    device: torch.device, world_size: int, backend: str, ranks_per_device: int = 1, ranks_per_host: Optional[int] = None
) -> Dict[str, Any]:
    """Hardware and library versions of a run (recorded in its JSON): ``provenance.environment()`` and the run's
    ranks, backend, device (with the ranks that share one: ``init_distributed(device="cuda-shared")``), host and the
    ranks the planner sees on one host (``DistContext.ranks_per_host``; default: every rank)."""
    cuda = device.type == "cuda"
    return {
        **provenance.environment(),
        "world_size": world_size,
        "ranks_per_device": ranks_per_device,
        "ranks_per_host": ranks_per_host or world_size,
        "backend": backend,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "device_memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        "hostname": socket.gethostname(),
    }


def combine(paths: Sequence[str]) -> str:
    """Weak-scaling table: samples/s of each (model, method) in every run, relative to the run with fewest ranks."""
    runs, shared = [], []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
        if runs[-1]["environment"].get("ranks_per_device", 1) > 1:
            shared.append(p)
    runs.sort(key=lambda r: r["environment"]["world_size"])
    base = runs[0]
    w0 = base["environment"]["world_size"]
    head = ["model", "method"]
    head += [f"{r['environment']['world_size']} x {r['environment']['device_name']} samples/s" for r in runs]
    for r in runs[1:]:
        w = r["environment"]["world_size"]
        head += [f"speedup {w}/{w0}", f"weak-scaling eff. {w}/{w0}"]
    cfg = base["config"]
    lines = [
        f"Weak scaling (per-rank batch {cfg['layout_spec']['batch_size']}, layout `{cfg['layout']}`); efficiency = "
        "speedup / rank ratio.",
        "",
        f"Optimizer: {cfg.get('optimizer_label') or optimizer_label(cfg['optimizer'], cfg['lr'])}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for p in shared:
        lines.insert(1, f"WARNING: {p} ran ranks sharing one GPU (cuda-shared): its samples/s say nothing of scaling")
    for r in runs[1:]:
        if r["environment"]["device_name"] != base["environment"]["device_name"]:
            lines.insert(1, "WARNING: the runs used different devices; compare timings from one device kind only")
        for key in ("layout_spec", "ratio", "optimizer", "ids", "zipf", "sharding_type", "pipeline", "scale"):
            if r["config"].get(key) != cfg.get(key):
                lines.insert(1, f"WARNING: the runs differ in {key}: {cfg.get(key)} vs {r['config'].get(key)}")
    index = [{(x["model"], x["method"]): x for x in r["results"] if x["status"] == "ok"} for r in runs]
    for key in dict.fromkeys(k for idx in index for k in idx):
        cells = [key[0], index[0][key]["label"] if key in index[0] else key[1]]
        cells += [f"{idx[key]['samples_per_s']:,.0f}" if key in idx else "-" for idx in index]
        for r, idx in zip(runs[1:], index[1:]):
            w = r["environment"]["world_size"]
            if key in idx and key in index[0]:
                s = idx[key]["samples_per_s"] / index[0][key]["samples_per_s"]
                cells += [f"{s:.2f}x", f"{s / (w / w0):.0%}"]
            else:
                cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
