# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""What the planner chooses for stock and compressed tables on 1, 2, 4, ... ranks (planning only, no GPUs).

For every layout, world size and method, the embedding layer is built on ``meta`` and planned with
``CompressedEmbeddingShardingPlanner`` on ``Topology(world_size=W, compute_device="cuda")`` (an H200's HBM per rank
unless a cap is given), with the sharders' full choice of sharding types and kernels unless ``kernels`` restricts
it. The report lists the sharding types and kernels chosen and the planner's own estimates: the slowest rank's
forward + backward time (compute and comms, ms per step) and the largest per-rank HBM and DDR use.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from torchrec_memcom.benchmarks.layouts import Layout, MethodOptions, embedding_module, method_label, table_configs
from torchrec_memcom.benchmarks.planning import (
    constraints_for,
    kernel_counts,
    make_sharders,
    make_topology,
    plan_model,
    plan_summary,
    storage_reason,
)

__all__ = ["H200_HBM_BYTES", "planner_caption", "planner_markdown", "planner_report"]

# What torch reports for an H200's memory (about 139 GiB).
H200_HBM_BYTES = 139 * 2**30


def planner_report(
    layouts: Mapping[str, Layout],
    methods: Sequence[str],
    world_sizes: Sequence[int],
    opts: MethodOptions,
    fused_params: Dict[str, Any],
    hbm_cap: Optional[int] = None,
    ddr_cap: Optional[int] = None,
    kernels: Optional[Sequence[str]] = None,
    cache_load_factor: Optional[float] = None,
    sharding_type: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """One row per (layout, world size, method): the plan's tables, summary, kernels and the planner's estimates, or
    ``status="does not fit"`` with the planner's reason; ``"skipped"`` where a method cannot build the layout or take
    a forced ``sharding_type``."""
    rows: List[Dict[str, Any]] = []
    sharders = make_sharders(fused_params, "cuda")
    for name, layout in layouts.items():
        for world_size in world_sizes:
            topology = make_topology(world_size, "cuda", hbm_cap=hbm_cap or H200_HBM_BYTES, ddr_cap=ddr_cap)
            for method in methods:
                row: Dict[str, Any] = {
                    "layout": name,
                    "world_size": world_size,
                    "method": method,
                    "label": method_label(method, opts),
                }
                rows.append(row)
                try:
                    tables = table_configs(method, layout, opts)
                except ValueError as e:
                    row.update(status="skipped", reason=str(e))
                    continue
                module, _ = embedding_module(tables, torch.device("meta"))
                constraints = constraints_for(tables, layout, sharding_type, kernels, cache_load_factor)
                try:
                    outcome = plan_model(module, topology, layout.batch_size, constraints, fused_params, sharders)
                except ValueError as e:  # a method's own limits (MEmCom: row-wise or table-wise only)
                    row.update(status="skipped", reason=str(e))
                    continue
                if outcome.error is not None:
                    row.update(status="does not fit", reason=storage_reason(outcome.error), error=outcome.error)
                    continue
                est = outcome.estimate
                row.update(
                    status="ok",
                    plan_tables=outcome.tables,
                    plan_summary=plan_summary(outcome.tables),
                    kernels=kernel_counts(outcome.tables),
                    perf_ms_per_rank=est["perf_ms_per_rank"],
                    perf_ms_max=est["perf_ms_max"],
                    hbm_bytes_max=max(est["hbm_bytes_per_rank"]),
                    ddr_bytes_max=max(est["ddr_bytes_per_rank"]),
                )
    stock = {(r["layout"], r["world_size"]): r for r in rows if r["method"] == "stock" and r["status"] == "ok"}
    for r in rows:
        base = stock.get((r["layout"], r["world_size"]))
        if r["status"] == "ok" and base is not None and base["perf_ms_max"] > 0:
            r["perf_vs_stock"] = r["perf_ms_max"] / base["perf_ms_max"]
    return rows


def planner_caption(
    hbm_cap: Optional[int],
    ddr_cap: Optional[int],
    optimizer: str,
    kernels: Optional[Sequence[str]],
    sharding_type: Optional[str],
) -> str:
    """The line above a planner report: topology, budgets, optimizer, kernels, forced sharding."""
    hbm = f"{hbm_cap / 1e9:g} GB" if hbm_cap else "an H200's 139 GiB"
    ddr = f"{ddr_cap / 1e9:g} GB" if ddr_cap else "TorchRec's default 128 GiB"
    return (
        f"Planner choices on Topology(world_size=W, compute_device='cuda'), HBM {hbm} and DDR {ddr} per rank, batch "
        f"per rank as in each layout; optimizer: {optimizer}; kernels: "
        f"{', '.join(kernels) if kernels else 'any the sharders offer'}; sharding {sharding_type or 'planner'}. "
        "Estimates are TorchRec's perf model (forward + backward compute and comms of the slowest rank) and storage "
        "estimates, not measurements."
    )


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def planner_markdown(rows: List[Dict[str, Any]], caption: str) -> str:
    """Markdown: one table per layout (ranks x methods), headed by ``caption`` (hardware, optimizer)."""
    lines = [caption, ""]
    for layout in dict.fromkeys(r["layout"] for r in rows):
        lines += [
            f"### Layout `{layout}`",
            "",
            "| ranks | method | plan (physical tables) | kernels | est. ms/step (slowest rank) | est. vs stock "
            "| est. HBM/rank (max) | est. DDR/rank (max) |",
            "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            if r["layout"] != layout:
                continue
            if r["status"] != "ok":
                lines.append(f"| {r['world_size']} | {r['label']} | {r['status']}: {r['reason'][:200]} | | | | | |")
                continue
            kernels = ", ".join(f"{k} x{v}" for k, v in sorted(r["kernels"].items()))
            vs = f"{r['perf_vs_stock']:.2f}x" if "perf_vs_stock" in r else "-"
            lines.append(
                f"| {r['world_size']} | {r['label']} | {r['plan_summary']} | {kernels} | {r['perf_ms_max']:.3f} | "
                f"{vs} | {_gib(r['hbm_bytes_max'])} | {_gib(r['ddr_bytes_max'])} |"
            )
        lines.append("")
    return "\n".join(lines)
