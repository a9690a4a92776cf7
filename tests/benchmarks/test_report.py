# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Benchmark reports on fixed measurements: merging ranks and repeats, ratios, markdown tables, weak scaling."""

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List

import pytest

from torchrec_memcom.benchmarks.layouts import LAYOUTS
from torchrec_memcom.benchmarks.report import (
    add_ratios,
    attach_profile,
    combine,
    markdown_report,
    markdown_table,
    merge_ranks,
    merge_repeats,
    optimizer_label,
    step_spread,
)

TINY = LAYOUTS["tiny"]  # batch 64 per rank


def _rank(step_ms: List[float], emb: int, uvm: int = 0, host_ms: float = 1.0) -> Dict[str, Any]:
    return {
        "status": "ok",
        "host_step_ms": [host_ms, host_ms, 3 * host_ms],
        "memory_report": {"total_bytes": emb * 2, "stock_bytes": 16 * emb * 2, "compression_ratio": 16.0},
        "tables": [{"name": "t0", "type": "EmbeddingBagConfig", "num_embeddings": 10}],
        "plan_s": 0.5,
        "shard_s": 1.0,
        "hbm_cap_bytes": 40 * 10**9,
        "ddr_cap_bytes": 100 * 10**9,
        "step_ms": step_ms,
        "wall_ms": sum(step_ms),
        "local_embedding_bytes": emb,
        "local_embedding_uvm_bytes": uvm,
        "local_dense_bytes": 0,
        "host_rss_bytes": 2**30,
        "plan_tables": {"t0": "table_wise/fused@0"},
        "plan_estimate": {"perf_ms_max": 1.5},
        "peak_bytes": 3 * emb,
    }


def _profile(
    host_ms: float,
    kernel_ms: float = 1.8,
    basis: str = "GPU kernel time",
    syncs: float = 0.0,
    gpu_ops: float = 30.0,
) -> Dict[str, Any]:
    return {
        "gpu_ops_per_step": gpu_ops,
        "host_syncs": {"steps": 5, "per_step": syncs, "sites": {"m.py:3 (f)": syncs} if syncs else {}},
        "steps": 5,
        "host_ms_per_step": host_ms,
        "gpu_busy": 0.5,  # under the profiler: not the table's
        "wall_ms_per_step": 2.0,
        "time_basis": basis,
        "total_ms_per_step": kernel_ms,
        "top": [{"name": "kernel|x", "count": 5, "self_us": 9000.0, "share": 1.0}],
        "host_top": [{"name": "cudaStreamSynchronize", "count": 5, "self_us": 4000.0, "share": 0.25}],
        "trace": "p/profile.trace.json",
        "table": "p/profile.txt",
        "gpu_idle": {
            "span_us_per_step": 2000.0,
            "busy_us_per_step": 1500.0,
            "top": [
                {"us_per_step": 300.0, "gaps_per_step": 2.0, "context": "_WeightsAtBackward", "op": "a|b"},
                {"us_per_step": 150.0, "gaps_per_step": 1.0, "context": "", "op": ""},
            ],
        },
    }


def test_merge_ranks_takes_the_slowest_rank_per_step() -> None:
    ranks = [_rank([1.0, 5.0, 2.0], 100, host_ms=0.5), _rank([4.0, 1.0, 1.0], 300, host_ms=0.75)]
    row = merge_ranks("ebc", "stock", "stock EBC", ranks, TINY)
    assert "profile" not in row
    attach_profile(row, [_profile(3.0), _profile(4.0)])
    assert row["step_ms_all"] == [4.0, 5.0, 2.0] and row["step_ms_median"] == 4.0
    assert row["host_ms_median"] == 0.75  # the slowest rank's median host time
    assert row["samples_per_s"] == pytest.approx(2 * 64 / 4e-3)
    assert row["local_embedding_bytes_max"] == 300 and row["peak_bytes_max"] == 900
    assert row["profile"]["host_ms_per_step_per_rank"] == [3.0, 4.0]
    assert row["gpu_busy"] == pytest.approx(1.8 / 4.0)  # kernel ms under the profiler / the timed median step
    attach_profile(row, [_profile(3.0, basis="self CPU time")])
    assert row["gpu_busy"] is None
    assert row["plan_summary"] == "TW x1" and row["repeats"] == 1


def test_merge_repeats_reports_the_median_of_the_repeat_medians() -> None:
    repeats = [
        merge_ranks("ebc", "hash", "Hash 16x", [_rank(steps, 10)], TINY)
        for steps in ([10.0, 11.0, 12.0], [30.0, 31.0, 29.0], [12.0, 13.0, 11.0])
    ]
    repeats[2]["peak_bytes_max"] = 99
    row = merge_repeats(repeats)
    assert row["repeats"] == 3 and row["step_ms_repeat_medians"] == [11.0, 30.0, 12.0]
    assert row["step_ms_median"] == 12.0
    assert row["samples_per_s"] == pytest.approx(64 / 12e-3)
    assert row["peak_bytes_max"] == 99 and len(row["step_ms_all"]) == 9
    # one long slow repeat moves the pooled median of all steps, not the median of the repeat medians
    skew = [merge_ranks("ebc", "hash", "Hash 16x", [_rank(s, 10)], TINY) for s in ([1.0] * 3, [9.0] * 7, [2.0] * 3)]
    assert merge_repeats(skew)["step_ms_median"] == 2.0 != statistics.median([1.0] * 3 + [9.0] * 7 + [2.0] * 3)


def _payload(world_size: int = 1, profiled: bool = True) -> Dict[str, Any]:
    rows = [
        merge_ranks("dlrm", "stock", "stock EBC", [_rank([8.0, 8.0], 1600, host_ms=4.0)] * world_size, TINY),
        merge_ranks("dlrm", "memcom", "MEmCom 16x", [_rank([10.0, 10.0], 100, host_ms=6.0)] * world_size, TINY),
        {
            "model": "dlrm",
            "method": "lma",
            "label": "LMA Z=16 16x",
            "status": "does not fit",
            "reason": "Unable to find a plan: needs HBM 1 / DDR 2 GiB, has HBM 0.5 / DDR 1 GiB",
        },
    ]
    if profiled:
        for row, host_ms, kernel_ms, syncs, ops in zip(rows, (4.0, 6.0), (7.2, 9.0), (0.0, 1.4), (29.0, 48.2)):
            attach_profile(row, [_profile(host_ms, kernel_ms, syncs=syncs, gpu_ops=ops)] * world_size)
    add_ratios(rows)
    config = {
        "layout": "tiny",
        "layout_spec": {**TINY.__dict__},
        "ratio": 16.0,
        "ids": "powerlaw",
        "zipf": 1.05,
        "sharding_type": None,
        "pipeline": True,
        "iters": 2,
        "warmup": 1,
        "optimizer": "rowwise_adagrad",
        "lr": 0.01,
        "optimizer_label": optimizer_label("rowwise_adagrad", 0.01),
    }
    env = {k: "x" for k in ("device_name", "backend", "torch", "torchrec", "fbgemm_gpu")}
    return {"config": config, "environment": {**env, "world_size": world_size}, "results": rows}


def test_ratios_and_main_table_with_host_time_and_gpu_busy() -> None:
    payload = _payload()
    stock, memcom, lma = payload["results"]
    assert memcom["throughput_vs_stock"] == pytest.approx(0.8)
    assert memcom["host_vs_stock"] == pytest.approx(1.5)
    assert stock["gpu_busy"] == pytest.approx(7.2 / 8.0) and memcom["gpu_busy"] == pytest.approx(9.0 / 10.0)
    assert memcom["local_embedding_bytes_vs_stock"] == pytest.approx(1 / 16)
    assert "throughput_vs_stock" not in lma
    lines = markdown_table(payload["results"]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:8] == [
        "model",
        "method",
        "samples/s",
        "step ms (median)",
        "throughput vs stock",
        "host ms/step",
        "host vs stock",
        "GPU busy",
    ]
    assert header[8:13] == [
        "GPU kernel ms/step",
        "kernel vs stock",
        "GPU ops/step",
        "host syncs/step",
        "steps p10-p90 (ms)",
    ]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:13] == [
        "dlrm",
        "MEmCom 16x",
        "6,400",
        "10.00",
        "0.80x",
        "6.00",
        "1.50x",
        "90%",
        "9.00",
        "1.25x",
        "48.2",
        "1.4",
        "10.00-10.00",
    ]
    assert [c.strip() for c in lines[2].strip("|").split("|")][10:12] == ["29", "0"]
    assert lines[4].startswith("| dlrm | LMA Z=16 16x | does not fit: Unable to find a plan: needs HBM 1 / DDR 2")
    unprofiled = markdown_table(_payload(profiled=False)["results"])
    assert "| host ms/step | host vs stock | steps p10-p90 (ms) |" in unprofiled and "GPU busy" not in unprofiled
    # the spread of the timed steps: 10th to 90th percentile
    assert step_spread({"step_ms_all": [float(t) for t in range(1, 102)]}) == "11.00-91.00"
    assert step_spread({"step_ms_all": [5.0]}) == "-"


def test_markdown_report_states_the_optimizer_above_the_table() -> None:
    text = markdown_report(_payload())
    lines = text.splitlines()
    i = lines.index("Optimizer: fused EXACT_ROWWISE_ADAGRAD + dense Adagrad, lr 0.01.")
    assert lines[i + 2].startswith("| model | method |")
    assert "- dlrm / LMA Z=16 16x: does not fit: Unable to find a plan" in text
    assert "| `kernel\\|x` | 5 | 9.00 | 100.0% |" in lines
    assert "Full table: `p/profile.txt`; trace: `p/profile.trace.json`." in text
    assert "| `cudaStreamSynchronize` | 5 | 4.00 | 25.0% |" in lines  # where the host's time goes
    # the sites of MEmCom's synchronisations, none for stock's
    i = lines.index("Host-device synchronisations: 1.4 per step")
    assert lines[i + 2] == "- 1.4 x `m.py:3 (f)`" and text.count("Host-device synchronisations") == 1
    assert optimizer_label("sgd", 0.5) == "fused EXACT_SGD + dense SGD, lr 0.5"
    # where the GPU waited for the host, under the profiler, in each profiled method's section
    assert text.count("GPU idle under the profiler (its host overhead stretches the gaps): 500 of 2000 us") == 2
    assert "| 300.0 | 2 | _WeightsAtBackward | `a\\|b` |" in lines and "| 150.0 | 1 | - | `-` |" in lines


@pytest.mark.parametrize(
    "world_size, raw, expected", [(1, None, "as chunk locations"), (2, None, "raw"), (1, True, "raw")]
)
def test_header_says_how_lma_ids_crossed_the_input_dist(world_size: int, raw: Any, expected: str) -> None:
    payload = _payload(world_size)
    payload["config"].update(methods=["stock", "memcom", "lma"], lma_raw_ids=raw)
    assert f"; LMA ids {expected} through the input dist;" in markdown_report(payload)
    payload["config"]["methods"] = ["stock", "memcom"]
    assert "LMA ids" not in markdown_report(payload)


def test_header_says_where_memcom_rows_were_computed_when_not_the_default() -> None:
    payload = _payload(1)
    assert "MEmCom's rows after the dist" not in markdown_report(payload)  # the default (and older runs' configs)
    payload["config"]["memcom_rows_in_transform"] = False
    assert "; MEmCom's rows after the dist (`--no-memcom-rows-in-transform`);" in markdown_report(payload)


def test_cuda_graph_runs_name_each_rows_step_and_why_a_method_ran_eagerly() -> None:
    payload = _payload(1, profiled=False)
    assert "| step |" not in markdown_report(payload) and "CUDA graphs" not in markdown_report(payload)
    stock = _rank([8.0], 1600)
    stock.update(step_mode="eager (not capturable)", capture_error="RuntimeError: Cannot copy between CPU and CUDA")
    memcom = {**_rank([4.0], 100), "step_mode": "cuda graph"}
    payload["results"][:2] = [
        merge_ranks("dlrm", "stock", "stock EBC", [stock], TINY),
        merge_ranks("dlrm", "memcom", "MEmCom 16x", [memcom], TINY),
    ]
    add_ratios(payload["results"])
    payload["config"]["cuda_graph"] = True
    md = markdown_report(payload)
    assert "; steps replayed from CUDA graphs where capturable (`--cuda-graph`)" in md
    assert "| dlrm | stock EBC | eager (not capturable) |" in md and "| dlrm | MEmCom 16x | cuda graph |" in md
    assert "stock EBC: not capturable in a CUDA graph, ran eagerly: RuntimeError: Cannot copy between CPU" in md
    assert "| 2.00x |" in md  # 8 ms eager stock against a 4 ms replay
    assert "TF32" not in md
    payload["config"]["allow_tf32"] = True
    assert "; dense matmuls in TF32 (`--allow-tf32`)" in markdown_report(payload)
    payload["results"][0]["step_mode"] = "pipelined (not capturable)"  # --cuda-graph --pipeline
    assert "stock EBC: not capturable in a CUDA graph, ran through TrainPipelineSparseDist: RuntimeError" in (
        markdown_report(payload)
    )


def test_combine_two_runs_into_weak_scaling(tmp_path: Path) -> None:
    one, two = _payload(1), _payload(2)
    two["results"][1]["samples_per_s"] = 1.5 * one["results"][1]["samples_per_s"]
    paths = []
    for name, p in (("two.json", two), ("one.json", one)):  # any order: sorted by world size
        (tmp_path / name).write_text(json.dumps(p))
        paths.append(str(tmp_path / name))
    table = combine(paths)
    assert "Optimizer: fused EXACT_ROWWISE_ADAGRAD + dense Adagrad, lr 0.01." in table
    assert "| dlrm | stock EBC | 8,000 | 16,000 | 2.00x | 100% |" in table
    assert "| dlrm | MEmCom 16x | 6,400 | 9,600 | 1.50x | 75% |" in table
    assert "LMA" not in table  # only measured rows scale


def test_runs_of_ranks_sharing_a_gpu_say_so(tmp_path: Path) -> None:
    one, shared = _payload(1), _payload(2)
    assert markdown_report(one).splitlines()[2].startswith("- 1 x x (x), torch x")
    assert "sharing" not in markdown_report(shared)  # runs recorded before ranks_per_device was
    shared["environment"]["ranks_per_device"] = 2
    first = markdown_report(shared).splitlines()[2]
    assert first.startswith("- 2 ranks, 2 sharing each x (x, `--device cuda-shared`") and "not a multi-GPU" in first
    assert "the planner sees each rank as a host of its own" in first  # recorded before ranks_per_host was
    shared["environment"]["ranks_per_host"] = 2
    assert "the planner plans the ranks as one host's GPUs" in markdown_report(shared).splitlines()[2]
    paths = []
    for name, p in (("one.json", one), ("shared.json", shared)):
        (tmp_path / name).write_text(json.dumps(p))
        paths.append(str(tmp_path / name))
    table = combine(paths)
    assert f"WARNING: {paths[1]} ran ranks sharing one GPU (cuda-shared)" in table
    assert "WARNING" not in combine(paths[:1] + paths[:1])


def test_host_memory_columns_appear_when_tables_live_in_host_memory() -> None:
    rows = [
        merge_ranks("dlrm", "stock", "stock EBC", [_rank([30.0], 10 * 2**30, uvm=8 * 2**30)], TINY),
        merge_ranks("dlrm", "hash", "Hash 16x", [_rank([6.0], 2**30)], TINY),
    ]
    rows[0]["plan_tables"]["t0"] = "table_wise/fused_uvm_caching@0"
    add_ratios(rows)
    lines = markdown_table(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    i = header.index("of which host (UVM)/rank")
    assert header[i - 1] == "emb bytes/rank (max)" and header[i + 1] == "host RSS/rank (max)"
    stock, hash_ = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:4])
    assert (stock[i - 1], stock[i], stock[i + 1]) == ("10.00 GiB", "8.00 GiB", "1.00 GiB")
    assert hash_[i] == "0 B" and hash_[4] == "5.00x"
    assert "host (UVM)" not in markdown_table(rows[1:])


def test_header_names_the_code_revision_and_time_when_recorded() -> None:
    payload = _payload(1)
    assert "; code " not in markdown_report(payload)  # runs recorded before the revision was
    payload["environment"].update(revision="abc1234+dirty", time="2026-12-02 10:05:21")
    first = markdown_report(payload).splitlines()[2]
    assert first.endswith("fbgemm_gpu x; code abc1234+dirty, 2026-12-02 10:05:21")
