# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""benchmarks.trace_ops on hand-built chrome traces whose attribution is known by construction, and on a real CPU
profile's trace (no GPU ops: an empty table)."""

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from torchrec_memcom.benchmarks.trace_ops import (
    IdleReport,
    IdleTime,
    LaunchedOps,
    autograd_node_host_us,
    gpu_ops_by_launcher,
    idle_by_launcher,
    idle_markdown,
    idle_summary,
    markdown,
    nodes_markdown,
)

FWD, BWD = 1, 2  # host threads: the main one and autograd's


def _x(cat: str, name: str, ts: float, dur: float, tid: int = FWD, **args: Any) -> Dict[str, Any]:
    return {"ph": "X", "cat": cat, "name": name, "pid": 7, "tid": tid, "ts": ts, "dur": dur, "args": args}


def _step(t0: float, corr: int) -> List[Dict[str, Any]]:
    """One step: a TorchRec range around an op that launches a kernel (runtime API); a bare op that launches a
    Triton kernel (driver API); a backward node whose op launches a kernel and a memset; a kernel with no call."""
    return [
        _x("user_annotation", f"ProfilerStep#{corr}", t0, 100),
        _x("user_annotation", f"## input_dist {corr} ##", t0 + 1, 20),  # TorchRec's pipeline numbers its batches
        _x("cpu_op", "aten::to", t0 + 2, 10),
        _x("cpu_op", "aten::copy_", t0 + 3, 8),
        _x("cuda_runtime", "cudaMemcpyAsync", t0 + 4, 2, correlation=corr),
        _x("gpu_memcpy", "Memcpy HtoD", t0 + 30, 1, correlation=corr),
        _x("cpu_op", "_LocalRowsAndWeights", t0 + 25, 10),
        _x("cuda_driver", "cuLaunchKernel", t0 + 26, 2, correlation=corr + 1),
        _x("kernel", "_memcom_rows_kernel", t0 + 40, 5, correlation=corr + 1),
        _x("cpu_op", "autograd::engine::evaluate_function: MulBackward0", t0 + 50, 30, tid=BWD),
        _x("cpu_op", "MulBackward0", t0 + 51, 28, tid=BWD),
        _x("cpu_op", "aten::mul", t0 + 52, 20, tid=BWD),
        _x("cuda_runtime", "cudaLaunchKernel", t0 + 53, 2, tid=BWD, correlation=corr + 2),
        _x("cuda_runtime", "cudaMemsetAsync", t0 + 60, 2, tid=BWD, correlation=corr + 3),
        _x("kernel", "mul_kernel", t0 + 70, 3, correlation=corr + 2),
        _x("gpu_memset", "Memset (Device)", t0 + 74, 1, correlation=corr + 3),
        _x("kernel", "orphan", t0 + 80, 1, correlation=corr + 99),
    ]


def test_attributes_each_gpu_op_to_its_launcher() -> None:
    trace = {"traceEvents": _step(0, 10) + _step(1000, 20) + [{"ph": "i", "name": "marker"}]}
    rows = gpu_ops_by_launcher(trace, steps=2)
    assert rows == [
        LaunchedOps(1.0, "gpu_memcpy", "Memcpy HtoD", "## input_dist ##", "aten::copy_"),
        LaunchedOps(1.0, "kernel", "orphan", "(no launching call in the trace)", ""),
        LaunchedOps(1.0, "gpu_memset", "Memset (Device)", "MulBackward0", "aten::mul"),
        LaunchedOps(1.0, "kernel", "mul_kernel", "MulBackward0", "aten::mul"),
        LaunchedOps(1.0, "kernel", "_memcom_rows_kernel", "_LocalRowsAndWeights", "_LocalRowsAndWeights"),
    ]
    table = markdown(rows)
    assert "| 5 | total | | |" in table
    assert "| 1 | `kernel: mul_kernel` | MulBackward0 | `aten::mul` |" in table


def test_autograd_node_host_time_per_step() -> None:
    extra = _x("cpu_op", "autograd::engine::evaluate_function: SumBackward0", 2000, 6, tid=BWD)
    trace = {"traceEvents": _step(0, 10) + _step(1000, 20) + [extra]}
    # MulBackward0: 30 us in each of the 2 steps; SumBackward0: 6 us once; the ops inside a node are not nodes
    assert autograd_node_host_us(trace, steps=2) == [("MulBackward0", 30.0, 1.0), ("SumBackward0", 3.0, 0.5)]
    table = nodes_markdown(autograd_node_host_us(trace, steps=2))
    assert "| 30.0 | 1 | `MulBackward0` |" in table and "| 33.0 | | total |" in table


def test_idle_gaps_charged_to_the_launch_that_ends_them() -> None:
    trace = {"traceEvents": _step(0, 10) + _step(1000, 20)}
    # GPU ops per step at 30-31 (memcpy), 40-45 (rows), 70-73 (mul), 74-75 (memset), 80-81 (orphan); the gaps before
    # rows 9 us, before mul 25 and memset 1 (both aten::mul in MulBackward0), before the orphan 5, and 949 between
    # the steps, ended by the second step's memcpy
    report = idle_by_launcher(trace, steps=2)
    assert report == IdleReport(
        span_us_per_step=(1081 - 30) / 2,
        busy_us_per_step=11.0,
        rows=[
            IdleTime(474.5, 0.5, "## input_dist ##", "aten::copy_"),
            IdleTime(26.0, 2.0, "MulBackward0", "aten::mul"),
            IdleTime(9.0, 1.0, "_LocalRowsAndWeights", "_LocalRowsAndWeights"),
            IdleTime(5.0, 1.0, "(no launching call in the trace)", ""),
        ],
    )
    assert sum(r.us_per_step for r in report.rows) == report.span_us_per_step - report.busy_us_per_step
    table = idle_markdown(report, limit=2)
    assert table.startswith("GPU span 525.5 us per step, busy 11.0 (2%), idle 514.5")
    assert "| 26.0 | 2 | MulBackward0 | `aten::mul` |" in table
    assert "| 14.0 | 2 | 2 other launchers | |" in table and "| 514.5 | 4.5 | total | |" in table


def test_profile_records_the_largest_idle_gaps_of_its_trace(tmp_path: Path) -> None:
    """``measure.profile_steps``' ``gpu_idle``: the trace's idle report per step, its largest gaps first."""
    path = tmp_path / "p.trace.json"
    path.write_text(json.dumps({"traceEvents": _step(0, 10) + _step(1000, 20)}))
    idle = idle_summary(str(path), steps=2, top=2)
    assert idle == {
        "span_us_per_step": 525.5,
        "busy_us_per_step": 11.0,
        "top": [
            {"us_per_step": 474.5, "gaps_per_step": 0.5, "context": "## input_dist ##", "op": "aten::copy_"},
            {"us_per_step": 26.0, "gaps_per_step": 2.0, "context": "MulBackward0", "op": "aten::mul"},
        ],
    }


def test_idle_time_counts_overlapping_streams_once() -> None:
    events = [
        _x("kernel", "a", 0, 10, correlation=1),
        _x("kernel", "b", 5, 15, correlation=2),  # another stream, overlapping a: busy 0-20
        _x("kernel", "c", 12, 3, correlation=3),  # inside b: no gap
        _x("cpu_op", "aten::mul", 20, 9),
        _x("cuda_runtime", "cudaLaunchKernel", 25, 2, correlation=4),
        _x("kernel", "d", 30, 5, correlation=4),
    ]
    report = idle_by_launcher({"traceEvents": events}, steps=1)
    assert report == IdleReport(35.0, 25.0, [IdleTime(10.0, 1.0, "aten::mul", "aten::mul")])
    assert idle_by_launcher({"traceEvents": []}, steps=1) == IdleReport(0.0, 0.0, [])
    assert idle_markdown(IdleReport(0.0, 0.0, [])).startswith("no GPU ops in the trace")


def test_rejects_bad_steps() -> None:
    with pytest.raises(ValueError, match="steps must be >= 1"):
        gpu_ops_by_launcher({"traceEvents": []}, steps=0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        autograd_node_host_us({"traceEvents": []}, steps=0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        idle_by_launcher({"traceEvents": []}, steps=0)


def test_cpu_profiler_trace_has_no_gpu_ops(tmp_path: Path) -> None:
    x = torch.ones(8, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        (x * 2).sum().backward()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())
    assert gpu_ops_by_launcher(trace, steps=1) == []
    assert idle_by_launcher(trace, steps=1) == IdleReport(0.0, 0.0, [])
    nodes = {node: calls for node, _, calls in autograd_node_host_us(trace, steps=1)}
    assert nodes["MulBackward0"] == 1 and nodes["SumBackward0"] == 1  # the real backward's nodes, once each
