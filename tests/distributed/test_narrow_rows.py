# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The fused backward of narrow-row TBEs (``distributed.narrow_rows``) in sharded collections: which TBEs take it,
and sharded LMA with fused row-wise Adagrad against the unsharded reference with it on (Triton's interpreter on 2
gloo ranks; NCCL in ``test_gpu.py``) and off (FBGEMM's backward)."""

from typing import Any, Dict, List

import pytest
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
    WeightDecayMode,
)

from tests.distributed import scenarios
from tests.distributed.world import World
from tests.interpreted import run_interpreted
from torchrec_memcom.distributed.narrow_rows import narrow_row_backward_enabled, narrow_row_plan

# LMA's memory in these tables: 8-wide rows; weighted: FBGEMM's backward per call
CASES: List[Dict[str, Any]] = [
    dict(method="lma", sharding_type="table_wise"),
    dict(method="lma", sharding_type="row_wise"),
    dict(method="lma_mixed", sharding_type="table_wise"),
    dict(method="lma", sharding_type="row_wise", weighted=True),
]
# against FBGEMM's backward: column-wise (4-wide shards, each with its own row-wise state, unlike the unsharded
# reference) and table-row-wise
AGAINST_FBGEMM: List[Dict[str, Any]] = [
    dict(method="lma", sharding_type="column_wise"),
    dict(method="lma", sharding_type="table_row_wise"),
]


def _tbe(dims: List[int], **kwargs: Any) -> SplitTableBatchedEmbeddingBagsCodegen:
    kwargs = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.1, **kwargs}
    specs = [(10 + i, d, EmbeddingLocation.HOST, ComputeDevice.CPU) for i, d in enumerate(dims)]
    return SplitTableBatchedEmbeddingBagsCodegen(specs, device="cpu", **kwargs)


def test_plan_takes_narrow_rowwise_adagrad_tables_only() -> None:
    plan = narrow_row_plan(_tbe([16, 16], feature_table_map=[0, 0, 1]))
    assert plan is not None and plan.dim == 16
    assert plan.feature_rows.tolist() == [0, 0, 10]  # the second table's rows follow the first's 10
    assert plan.weights.numel() == 21 * 16 and plan.momentum.numel() == 21
    assert narrow_row_plan(_tbe([64])) is None  # wider than NARROW_ROW_MAX_DIM
    assert narrow_row_plan(_tbe([12])) is None  # not a power of two
    assert narrow_row_plan(_tbe([8, 16])) is None  # two widths
    assert narrow_row_plan(_tbe([16], optimizer=EmbOptimType.EXACT_SGD)) is None
    assert narrow_row_plan(_tbe([16], optimizer=EmbOptimType.EXACT_ADAGRAD)) is None
    assert narrow_row_plan(_tbe([16], weight_decay=0.01, weight_decay_mode=WeightDecayMode.L2)) is None
    assert narrow_row_plan(_tbe([16], gradient_clipping=True, max_gradient=1.0)) is None


def test_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert narrow_row_backward_enabled()
    monkeypatch.setenv("TORCHREC_MEMCOM_NARROW_ROWS", "0")
    assert not narrow_row_backward_enabled()
    monkeypatch.setenv("TORCHREC_MEMCOM_NARROW_ROWS", "yes")
    with pytest.raises(ValueError, match="TORCHREC_MEMCOM_NARROW_ROWS"):
        narrow_row_backward_enabled()


def test_reference_optimizer_matches_fbgemm(world2: World) -> None:
    """The written-out row-wise Adagrad of the reference against FBGEMM's fused one (the CPU TBEs keep FBGEMM's
    backward without Triton's interpreter)."""
    for case in CASES[:2]:
        results = world2.run(scenarios.sharded_matches_unsharded, optimizer="rowwise_adagrad", **case)
        assert all(r["narrow_row_tables"] == [] for r in results)


def check_two_ranks_interpreted() -> None:
    world = World(2, "gloo")
    try:
        for case in CASES:
            results = world.run(scenarios.sharded_matches_unsharded, optimizer="rowwise_adagrad", **case)
            # table-wise: the memory lives on one rank (lma_mixed's 16-wide stock table, on the other, qualifies too);
            # row-wise gives each rank a shard of it
            took = [r["narrow_row_tables"] for r in results]
            assert "g__memory" in sum(took, []), (case, took)
            assert case["sharding_type"] == "table_wise" or all("g__memory" in t for t in took), (case, took)
        for case in AGAINST_FBGEMM:
            results = world.run(scenarios.narrow_rows_match_fbgemm, **case)
            assert all(r["narrow_row_tables"][0] and not r["narrow_row_tables"][1] for r in results), (case, results)
            assert all(r["checked"] >= 2 for r in results), results
    finally:
        world.close()


def test_two_ranks_interpreted() -> None:
    """Every case on 2 gloo ranks with the fused backward's Triton kernels run by Triton's interpreter."""
    run_interpreted("tests.distributed.test_narrow_rows", "check_two_ranks_interpreted")
