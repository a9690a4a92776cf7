# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Planning for the benchmarks, on CPU for a CUDA topology: the beyond-HBM layout puts stock tables in host memory
(``fused_uvm_caching``) under a GPU budget while the compressed tables stay in HBM; "does not fit" comes from the
planner; the planner report lists the choices per rank count."""

import logging
import re
from typing import Dict, List

import pytest
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType

from torchrec_memcom.benchmarks.harness import BenchOptions, hbm_budget
from torchrec_memcom.benchmarks.layouts import LAYOUTS, METHODS, Layout, MethodOptions, embedding_module, table_configs
from torchrec_memcom.benchmarks.plan_report import planner_markdown, planner_report
from torchrec_memcom.benchmarks.planning import (
    PlanOutcome,
    constraints_for,
    host_memory_bytes,
    make_sharders,
    make_topology,
    plan_model,
    plan_summary,
    split_caps,
    storage_reason,
)

GB = 10**9
FUSED = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.01, "eps": 1e-8}
HBM_CAP, HOST_CAP = 40 * GB, 110 * GB  # the GPU budget of the benchmark, ~ a 128 GiB host's share


@pytest.fixture(autouse=True)
def _quiet_planner() -> None:
    logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)


def _plan(
    method: str, layout: Layout, world_size: int, hbm: int = HBM_CAP, ddr: int = HOST_CAP, cache: float = 0.2
) -> PlanOutcome:
    tables = table_configs(method, layout, MethodOptions())
    module, _ = embedding_module(tables, torch.device("meta"))
    return plan_model(
        module,
        make_topology(world_size, "cuda", hbm_cap=hbm, ddr_cap=ddr),
        layout.batch_size,
        constraints_for(tables, layout, None, layout.kernels, cache_load_factor=cache),
        FUSED,
        make_sharders(FUSED, "cuda"),
    )


def _kernels(outcome: PlanOutcome) -> Dict[str, str]:
    return {t: v.split("@")[0].split("/")[1] for t, v in outcome.tables.items()}


@pytest.mark.parametrize("world_size", [1, 2])
def test_terabyte_stock_goes_to_uvm_caching_under_the_hbm_budget(world_size: int) -> None:
    tb = LAYOUTS["terabyte"]
    outcome = _plan("stock", tb, world_size)
    assert outcome.plan is not None, outcome.error
    kernels = _kernels(outcome)
    cached = [t for t, k in kernels.items() if k == "fused_uvm_caching"]
    assert cached and set(kernels.values()) <= {"fused", "fused_uvm_caching"}
    # the planner keeps each rank's HBM within the budget (reservations aside) and the cached tables' rows in DDR
    est = outcome.estimate
    assert max(est["hbm_bytes_per_rank"]) < HBM_CAP
    rows = dict(zip((f"t{i}" for i in range(tb.num_tables)), tb.num_embeddings))
    assert sum(est["ddr_bytes_per_rank"]) >= sum(rows[t] for t in cached) * tb.embedding_dim * 4
    # what FBGEMM will be told: the cache holds 20% of each cached table
    module_plan = next(iter(outcome.plan.plan.values()))
    for t in cached:
        assert module_plan[t].cache_params is not None and module_plan[t].cache_params.load_factor == 0.2


@pytest.mark.parametrize("scale", [1, 4])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "stock"])
def test_terabyte_compressed_tables_train_in_hbm(scale: int, method: str) -> None:
    outcome = _plan(method, LAYOUTS["terabyte"].scaled(scale), 1)
    assert outcome.plan is not None, outcome.error
    assert set(_kernels(outcome).values()) == {"fused"}
    assert outcome.estimate["ddr_bytes_per_rank"] == [0]
    assert 0 < outcome.estimate["hbm_bytes_per_rank"][0] < HBM_CAP


def test_terabyte_at_scale_4_stock_does_not_fit_the_host_but_would_with_more_of_it() -> None:
    big = LAYOUTS["terabyte"].scaled(4)
    outcome = _plan("stock", big, 1)
    assert outcome.plan is None and outcome.error is not None
    reason = storage_reason(outcome.error)
    assert reason.startswith("Unable to find a plan for this model because of insufficient storage: needs HBM")
    need_hbm, need_ddr, have_hbm, have_ddr = (float(v) for _, v in re.findall(r"(HBM|DDR) ([\d.]+)", reason))
    # the planner's own numbers say why: 384 GB of rows exceed the host, and their 20% cache the HBM budget
    assert need_ddr > have_ddr == pytest.approx(HOST_CAP / 2**30, abs=1e-3)
    assert need_hbm > have_hbm and need_hbm * 2**30 > 0.2 * big.stock_bytes() * 0.9
    # with 1 TB of host memory and a 5% cache stock would run from host memory behind the HBM cache
    roomy = _plan("stock", big, 1, ddr=1000 * GB, cache=0.05)
    assert roomy.plan is not None and "fused_uvm_caching" in _kernels(roomy).values()


def test_storage_reason_of_a_fixed_message() -> None:
    message = (
        "Unable to find a plan for this model because of insufficient storage. \n"
        "Planner evaluated 239 proposals.\n"
        "\t  Global storage available for model parallel: Storage(hbm = 31.601 GB, ddr = 102.445 GB), \n"
        "\t  Global storage requirement for model parallel: Storage(hbm = 76.87 GB, ddr = 358.138 GB))\n"
    )
    assert storage_reason(message) == (
        "Unable to find a plan for this model because of insufficient storage: needs HBM 76.87 / DDR 358.138 GiB, "
        "has HBM 31.601 / DDR 102.445 GiB (all ranks, after reservations)"
    )
    assert storage_reason("strict constraints.\nmore") == "strict constraints"


def test_constraints_kernels_and_cache() -> None:
    layout = LAYOUTS["tiny"]
    tables = table_configs("stock", layout, MethodOptions())
    c = constraints_for(tables, layout, None, ("fused", "fused_uvm_caching"), 0.3)["t0"]
    assert c.compute_kernels == ["fused", "fused_uvm_caching"] and c.cache_params.load_factor == 0.3
    assert c.pooling_factors == [4.0] and c.sharding_types is None
    c = constraints_for(tables, layout, None, ("fused",), 0.3)["t1"]
    assert c.cache_params is None
    c = constraints_for(tables, layout, "data_parallel", ("fused",), None)["t2"]
    assert c.compute_kernels == ["dense"] and c.sharding_types == ["data_parallel"]


def test_plan_summary_marks_host_memory_tables() -> None:
    tables = {"t0": "table_wise/fused_uvm_caching@0", "t1": "table_wise/fused@0", "t2": "row_wise/fused"}
    assert plan_summary(tables) == "RW x1, TW x1, TW/UVM$ x1"


def test_host_budget_from_meminfo(tmp_path) -> None:  # noqa: ANN001
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       134217728 kB\nMemAvailable:   100000000 kB\n")
    assert host_memory_bytes(str(meminfo)) == 100_000_000 * 1024
    assert host_memory_bytes(str(tmp_path / "missing")) is None
    assert split_caps(5, None, 1000, 2) == (5, 450)
    assert split_caps(5, 7, 1000, 2) == (5, 7)
    assert split_caps(None, None, None, 2) == (None, None)
    # 2 ranks on each of 2 GPUs (cuda-shared): each rank half a GPU's budget (harness.hbm_budget), a quarter of the
    # host's
    assert split_caps(hbm_budget(BenchOptions(hbm_cap_bytes=10), torch.device("cuda"), 2), None, 1000, 4) == (5, 225)
    assert split_caps(hbm_budget(BenchOptions(), torch.device("cpu"), 4), 7, None, 4) == (None, 7)


def test_planner_report_lists_choices_and_estimates_per_rank_count() -> None:
    layout = LAYOUTS["criteo"]
    rows = planner_report({"criteo": layout}, ["stock", "hash", "qr"], [1, 2], MethodOptions(), FUSED)
    assert [(r["world_size"], r["method"]) for r in rows] == [(w, m) for w in (1, 2) for m in ("stock", "hash", "qr")]
    by: Dict[tuple, dict] = {(r["world_size"], r["method"]): r for r in rows}
    for r in rows:
        assert r["status"] == "ok" and r["perf_ms_max"] > 0 and r["hbm_bytes_max"] > 0
        assert sum(r["kernels"].values()) == len(r["plan_tables"])
    assert by[(1, "stock")]["perf_vs_stock"] == 1.0
    # QR looks up two tables per compressed feature: more physical tables than stock, 16x less memory
    assert len(by[(1, "qr")]["plan_tables"]) == layout.num_tables + 7
    assert by[(2, "hash")]["hbm_bytes_max"] < by[(2, "stock")]["hbm_bytes_max"] / 5
    text = planner_markdown(rows, "caption line")
    lines: List[str] = text.splitlines()
    assert lines[0] == "caption line" and "### Layout `criteo`" in lines
    assert any(line.startswith("| 2 | Hash 16x | TW x26 |") for line in lines), text
