# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Which host code launched each GPU op of a profile.

``measure.profile_steps`` counts the kernels, copies and memsets a step puts on the GPU (``gpu_ops_per_step``) and
writes a chrome trace. This module reads that trace and says where each op came from: the GPU event is matched to the
runtime or driver call that launched it (the ``correlation`` id both carry; Triton launches through the driver), and
that call to the CPU events around it on its thread. An op is attributed to ``(context, op)``: the outermost
``record_function`` range or autograd node around the call (TorchRec's ``## ... ##`` ranges, ``...Backward`` nodes;
the outermost CPU op when there is neither) and the innermost CPU op (the ATen or FBGEMM op that launched it).

``autograd_node_host_us`` gives the backward's host side instead: the host time of each autograd node per step (the
node's whole evaluation on the autograd thread, what it calls included). ``idle_by_launcher`` says where the GPU
waits for the host: each gap in which no GPU op runs is charged to the launch that ends it.

Usage (on a trace that ``bench_sharded.py --profile`` wrote; ``--profile-steps`` steps)::

    python -m torchrec_memcom.benchmarks.trace_ops profiles/profile_big_ebc_memcom_w1.trace.json --steps 3
    python -m torchrec_memcom.benchmarks.trace_ops profiles/profile_big_ebc_hash_w1.trace.json --steps 5 --nodes
    python -m torchrec_memcom.benchmarks.trace_ops profiles/profile_dlrm_dlrm_memcom_w1.trace.json --steps 5 --idle
"""

import argparse
import collections
import json
import re
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

__all__ = [
    "IdleReport",
    "IdleTime",
    "LaunchedOps",
    "autograd_node_host_us",
    "gpu_ops_by_launcher",
    "idle_by_launcher",
    "idle_markdown",
    "idle_summary",
    "idle_table",
    "markdown",
    "nodes_markdown",
]

_GPU_CATEGORIES = ("kernel", "gpu_memset", "gpu_memcpy")
_LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
_CPU_CATEGORIES = ("cpu_op", "user_annotation")
_AUTOGRAD_NODE = "autograd::engine::evaluate_function: "
_UNMATCHED = "(no launching call in the trace)"
_BATCH_NUMBER = re.compile(r" \d+ ##$")  # "## forward 221 ##" -> "## forward ##"


class LaunchedOps(NamedTuple):
    """GPU ops of one kind from one launcher: how many per step, their category and name, where they came from."""

    per_step: float
    category: str
    name: str
    context: str
    op: str


def _is_context(event: Dict[str, Any]) -> bool:
    name = event["name"]
    if name.startswith("ProfilerStep"):
        return False
    return event.get("cat") == "user_annotation" or name.startswith(_AUTOGRAD_NODE)


def _launcher(cpu: List[Dict[str, Any]], call: Dict[str, Any]) -> Tuple[str, str]:
    """``(context, op)`` of a launching call among the CPU events of its thread (sorted by start)."""
    start, end = call["ts"], call["ts"] + call.get("dur", 0)
    around = [e for e in cpu if e["ts"] <= start and e["ts"] + e.get("dur", 0) >= end]
    around = [e for e in around if not e["name"].startswith("ProfilerStep")]
    if not around:
        return "", ""
    contexts = [e for e in around if _is_context(e)]
    context = (contexts[0] if contexts else around[0])["name"].replace(_AUTOGRAD_NODE, "")
    context = _BATCH_NUMBER.sub(" ##", context)  # TorchRec's pipeline ranges name their batch: one row for all
    ops = [e for e in around if e.get("cat") == "cpu_op"]
    return context, ops[-1]["name"] if ops else ""


def _index(trace: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], Dict[Any, Dict[str, Any]], Dict[Any, List[Any]]]:
    """``(complete events, launching calls by correlation id, CPU events per (pid, tid) sorted by start)``."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    calls = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("cat") in _LAUNCH_CATEGORIES and "correlation" in e.get("args", {})
    }
    cpu: Dict[Tuple[Any, Any], List[Dict[str, Any]]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") in _CPU_CATEGORIES:
            cpu[(e["pid"], e["tid"])].append(e)
    for thread in cpu.values():
        thread.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))  # outer ranges before the ops they contain
    return events, calls, cpu


def _launcher_of(
    gpu_op: Dict[str, Any], calls: Dict[Any, Dict[str, Any]], cpu: Dict[Any, List[Any]]
) -> Tuple[str, str]:
    call = calls.get(gpu_op.get("args", {}).get("correlation"))
    return _launcher(cpu[(call["pid"], call["tid"])], call) if call is not None else (_UNMATCHED, "")


def gpu_ops_by_launcher(trace: Dict[str, Any], steps: int) -> List[LaunchedOps]:
    """The GPU ops of a chrome trace (``torch.profiler``'s ``export_chrome_trace``) grouped by ``(category, name,
    context, op)``, counts divided by ``steps``, sorted by context then op. Ops whose launching call is not in the
    trace get the context ``"(no launching call in the trace)"``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    events, calls, cpu = _index(trace)
    counts: Dict[Tuple[str, str, str, str], int] = collections.Counter()
    for e in events:
        if e.get("cat") in _GPU_CATEGORIES:
            counts[(e["cat"], e["name"], *_launcher_of(e, calls, cpu))] += 1
    rows = [LaunchedOps(n / steps, *key) for key, n in counts.items()]
    return sorted(rows, key=lambda r: (r.context, r.op, r.category, r.name))


class IdleTime(NamedTuple):
    """GPU idle time ended by the launches of one ``(context, op)``: per step, its total and number of gaps."""

    us_per_step: float
    gaps_per_step: float
    context: str
    op: str


class IdleReport(NamedTuple):
    """``idle_by_launcher``'s answer: per step, the GPU's span (first op's start to last op's end), the time some op
    ran in it (streams overlapping counted once), and the idle gaps by the launcher of the op that ended each."""

    span_us_per_step: float
    busy_us_per_step: float
    rows: List[IdleTime]


def idle_by_launcher(trace: Dict[str, Any], steps: int) -> IdleReport:
    """Where a step's GPU waits for the host: every gap in which no GPU op ran, between the trace's first and last
    GPU op, is charged to the ``(context, op)`` that launched the op ending it (``gpu_ops_by_launcher``'s
    attribution): the host was still on its way to that launch. Rows sorted by idle time, largest first."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    events, calls, cpu = _index(trace)
    gpu = sorted((e for e in events if e.get("cat") in _GPU_CATEGORIES), key=lambda e: e["ts"])
    if not gpu:
        return IdleReport(0.0, 0.0, [])
    idle: Dict[Tuple[str, str], float] = collections.Counter()
    gaps: Dict[Tuple[str, str], int] = collections.Counter()
    start, end, busy = gpu[0]["ts"], gpu[0]["ts"] + gpu[0].get("dur", 0), 0.0
    run_start = start
    for e in gpu[1:]:
        if e["ts"] > end:  # a gap: the busy run so far ends
            busy += end - run_start
            key = _launcher_of(e, calls, cpu)
            idle[key] += e["ts"] - end
            gaps[key] += 1
            run_start = e["ts"]
        end = max(end, e["ts"] + e.get("dur", 0))
    busy += end - run_start
    rows = [IdleTime(idle[k] / steps, gaps[k] / steps, *k) for k in idle]
    rows.sort(key=lambda r: (-r.us_per_step, r.context, r.op))
    return IdleReport((end - start) / steps, busy / steps, rows)


def idle_summary(trace_path: str, steps: int, top: int = 8) -> Dict[str, Any]:
    """``idle_by_launcher`` of a trace file of ``steps`` steps, as JSON (``measure.profile_steps``' ``gpu_idle``): per
    step the GPU's span and busy time, and the ``top`` launches whose host path the GPU waited for longest."""
    with open(trace_path) as f:
        report = idle_by_launcher(json.load(f), steps)
    return {
        "span_us_per_step": report.span_us_per_step,
        "busy_us_per_step": report.busy_us_per_step,
        "top": [r._asdict() for r in report.rows[:top]],
    }


def autograd_node_host_us(trace: Dict[str, Any], steps: int) -> List[Tuple[str, float, float]]:
    """``(node, host us per step, calls per step)`` of every autograd node of a chrome trace (its
    ``autograd::engine::evaluate_function: <node>`` ranges summed, then divided by ``steps``), largest first."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    total: Dict[str, float] = collections.Counter()
    calls: Dict[str, int] = collections.Counter()
    for e in trace["traceEvents"]:
        if e.get("ph") == "X" and e.get("cat") in _CPU_CATEGORIES and e["name"].startswith(_AUTOGRAD_NODE):
            node = e["name"][len(_AUTOGRAD_NODE) :]
            total[node] += e.get("dur", 0)
            calls[node] += 1
    return sorted(((n, total[n] / steps, calls[n] / steps) for n in total), key=lambda r: (-r[1], r[0]))


def nodes_markdown(rows: List[Tuple[str, float, float]]) -> str:
    """A markdown table of ``autograd_node_host_us``'s rows, with the total per step."""
    lines = ["| host us per step | calls per step | autograd node |", "|---:|---:|---|"]
    lines += [f"| {us:.1f} | {n:g} | `{node}` |" for node, us, n in rows]
    lines.append(f"| {sum(r[1] for r in rows):.1f} | | total |")
    return "\n".join(lines)


def idle_table(rows: Sequence[IdleTime]) -> List[str]:
    """Markdown lines of ``IdleTime`` rows: a header, then one line each."""
    lines = ["| idle us per step | gaps per step | ended by a launch in | by |", "|---:|---:|---|---|"]
    for r in rows:
        context, op = r.context[:80].replace("|", "\\|") or "-", (r.op or "-")[:60].replace("|", "\\|")
        lines.append(f"| {r.us_per_step:.1f} | {r.gaps_per_step:g} | {context} | `{op}` |")
    return lines


def idle_markdown(report: IdleReport, limit: int = 25) -> str:
    """A markdown table of ``idle_by_launcher``'s rows (the ``limit`` largest, the rest summed), span and busy first."""
    span, busy = report.span_us_per_step, report.busy_us_per_step
    if not span:
        return "no GPU ops in the trace"
    lines = [f"GPU span {span:.1f} us per step, busy {busy:.1f} ({busy / span:.0%}), idle {span - busy:.1f}", ""]
    lines += idle_table(report.rows[:limit])
    rest = report.rows[limit:]
    if rest:
        gaps = sum(r.gaps_per_step for r in rest)
        lines.append(f"| {sum(r.us_per_step for r in rest):.1f} | {gaps:g} | {len(rest)} other launchers | |")
    gaps = sum(r.gaps_per_step for r in report.rows)
    lines.append(f"| {sum(r.us_per_step for r in report.rows):.1f} | {gaps:g} | total | |")
    return "\n".join(lines)


def markdown(rows: List[LaunchedOps], name_width: int = 70) -> str:
    """A markdown table of ``gpu_ops_by_launcher``'s rows, with the total per step."""
    lines = ["| per step | GPU op | launched in | by |", "|---:|---|---|---|"]
    for r in rows:
        name = f"{r.category}: {r.name}"[:name_width].replace("|", "\\|")
        context = r.context.replace("|", "\\|") or "-"
        lines.append(f"| {r.per_step:g} | `{name}` | {context} | `{r.op or '-'}` |")
    lines.append(f"| {sum(r.per_step for r in rows):g} | total | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="chrome trace JSON (bench_sharded.py --profile writes <method>.trace.json)")
    parser.add_argument("--steps", type=int, required=True, help="steps the trace covers (--profile-steps)")
    parser.add_argument("--nodes", action="store_true", help="host time per autograd node instead of GPU ops")
    parser.add_argument("--idle", action="store_true", help="the GPU's idle time by the launch that ended it")
    args = parser.parse_args()
    with open(args.trace) as f:
        trace = json.load(f)
    if args.idle:
        print(idle_markdown(idle_by_launcher(trace, args.steps)))
    elif args.nodes:
        print(nodes_markdown(autograd_node_host_us(trace, args.steps)))
    else:
        print(markdown(gpu_ops_by_launcher(trace, args.steps)))


if __name__ == "__main__":
    main()
