# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharded vs unsharded: forward, backward and fused optimizer steps, for every sharding type each method offers."""

from typing import Dict, List, Optional

import pytest
import torch
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from tests.distributed import scenarios
from tests.distributed.world import World

# (method, sharding type, extra options); each case runs on 2 and on 4 ranks.
CASES: List[Dict] = [
    dict(method="memcom", sharding_type="row_wise"),
    dict(method="memcom", sharding_type="row_wise", weighted=True, pooling="MEAN", optimizer="adagrad"),
    dict(method="memcom", sharding_type="table_wise"),
    dict(method="memcom", sharding_type="table_wise", weighted=True, optimizer="adagrad"),
    dict(method="hash", sharding_type="table_wise"),
    dict(method="hash", sharding_type="row_wise", weighted=True),
    dict(method="hash", sharding_type="column_wise"),
    dict(method="hash", sharding_type="table_row_wise"),
    dict(method="hash", sharding_type="table_column_wise"),
    dict(method="hash", sharding_type="data_parallel", optimizer="adagrad"),
    dict(method="qr", sharding_type="table_wise"),
    dict(method="qr", sharding_type="row_wise", weighted=True, pooling="MEAN"),
    dict(method="qr", sharding_type="column_wise"),
    dict(method="qr", sharding_type="data_parallel"),
    dict(method="lma", sharding_type="table_wise"),
    dict(method="lma", sharding_type="table_wise", weighted=True, pooling="MEAN", optimizer="adagrad"),
    dict(method="lma", sharding_type="table_wise", lma_raw_ids=False),
    dict(method="lma", sharding_type="column_wise", lma_raw_ids=True),  # raw ids on one GPU too (gpu tests)
    dict(method="lma", sharding_type="row_wise", weighted=True, pooling="MEAN", optimizer="adagrad"),
    dict(method="lma", sharding_type="column_wise"),
    dict(method="lma", sharding_type="table_row_wise"),
    dict(method="lma", sharding_type="data_parallel"),
    dict(method="lowrank", sharding_type="row_wise", optimizer="adagrad"),
    dict(method="lowrank", sharding_type="table_wise"),
    dict(method="hash_narrow", sharding_type="column_wise", pooling="MEAN"),
    # fused row-wise Adagrad (the benchmarks' and most users' optimizer) against it written out in plain PyTorch
    dict(method="memcom", sharding_type="row_wise", optimizer="rowwise_adagrad"),
    dict(method="hash", sharding_type="table_row_wise", optimizer="rowwise_adagrad"),
    dict(method="qr", sharding_type="row_wise", weighted=True, optimizer="rowwise_adagrad"),
    dict(method="lma", sharding_type="row_wise", optimizer="rowwise_adagrad"),
    dict(method="lma_mixed", sharding_type="table_wise", optimizer="rowwise_adagrad"),
]


def test_rowwise_adagrad_reference_matches_torchrec_and_torch() -> None:
    """The reference's row-wise Adagrad equals TorchRec's ``RowWiseAdagrad`` on a table and ``torch.optim.Adagrad`` on
    a vector (rows of one element), over steps whose gradients leave some rows zero."""
    g = torch.Generator().manual_seed(0)
    for shape, other in (((6, 4), RowWiseAdagrad), ((7,), torch.optim.Adagrad)):
        start = torch.randn(shape, generator=g)
        ours, theirs = (torch.nn.Parameter(start.clone()) for _ in range(2))
        opts = [
            scenarios.reference_optimizer([ours], "rowwise_adagrad"),
            other([theirs], lr=scenarios.LR, eps=scenarios.EPS),
        ]
        for _ in range(3):
            kept = (torch.rand(shape[0], generator=g) < 0.6).float()  # rows left without a gradient
            grad = torch.randn(shape, generator=g) * kept.view(-1, *[1] * (len(shape) - 1))
            for p, opt in zip((ours, theirs), opts):
                p.grad = grad.clone()
                opt.step()
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
        assert not torch.equal(ours, start)


def _id(case: Dict) -> str:
    return "-".join(str(v) for v in case.values())


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_two_ranks(world2: World, case: Dict) -> None:
    results = world2.run(scenarios.sharded_matches_unsharded, **case)
    assert all(r["checked"] >= 1 for r in results) or case["sharding_type"] == "table_wise"
    # model-parallel lookups scale the gradients of weights that take one (MEmCom's) by the world size (TorchRec's
    # CommOpGradientScaling); a batch's own weights take none here
    scaled = case["method"] == "memcom" and case["sharding_type"] != "data_parallel"
    assert all((r["gradient_scaling_nodes"] > 0) == scaled for r in results), (results, case)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_four_ranks(world4: World, case: Dict) -> None:
    results = world4.run(scenarios.sharded_matches_unsharded, **case)
    assert sum(r["checked"] for r in results) >= 2


@pytest.mark.parametrize("raw", [None, True])
def test_one_rank_lma_ids(world1: World, raw: Optional[bool]) -> None:
    """On one rank LMA sends chunk locations by default (the all-to-all is a local copy); raw ids on request."""
    world1.run(scenarios.sharded_matches_unsharded, method="lma", sharding_type="table_wise", lma_raw_ids=raw)


@pytest.mark.parametrize(
    "case",
    [
        dict(method="memcom", sharding_type="table_wise", weighted=True, optimizer="adagrad"),
        dict(method="memcom", sharding_type="table_wise", optimizer="adagrad", memcom_rows_in_transform=False),
        dict(method="memcom", sharding_type="row_wise"),
        dict(method="hash", sharding_type="column_wise"),
        dict(method="qr", sharding_type="table_column_wise", pooling="MEAN"),
        dict(method="hash", sharding_type="data_parallel"),
    ],
    ids=_id,
)
def test_one_rank(world1: World, case: Dict) -> None:
    """On one rank every sharding skips TorchRec's all-to-all (and its per-batch synchronisation; row-wise also its
    bucketing, which keeps every id over one rank): its input dists are the data-parallel identity."""
    (result,) = world1.run(scenarios.sharded_matches_unsharded, **case)
    assert result["gradient_scaling_nodes"] == 0  # by 1 on one rank: left out (_compat)
    assert result["input_dists"] and all(d == "DpSparseFeaturesDist" for d in result["input_dists"]), result[
        "input_dists"
    ]


@pytest.mark.parametrize("world", ["world1", "world2"])
def test_whole_features_out_of_order_are_relabelled(world: str, request: pytest.FixtureRequest) -> None:
    """The stock table's feature sits between two tables of one LMA memory, whose features the lookup returns
    together: the output keeps the lookup's order (relabelled, no copy), as a sharded TorchRec EBC's keys do, and
    equals the unsharded module feature by feature (forward, backward, steps)."""
    results = request.getfixturevalue(world).run(
        scenarios.sharded_matches_unsharded, method="lma_mixed", sharding_type="table_wise"
    )
    assert all(r["keys"] != ["f0", "f1", "fs", "f2"] and sorted(r["keys"]) == ["f0", "f1", "f2", "fs"] for r in results)


@pytest.mark.parametrize("world", ["world1", "world2", "world4"])
@pytest.mark.parametrize("method", ["memcom", "hash", "qr", "lma"])
def test_kjt_lengths_read_no_more_often_than_stock(world: str, method: str, request: pytest.FixtureRequest) -> None:
    """A training step reads KJTs' lengths per key to the host (on CUDA a synchronisation each) no more often than
    TorchRec's own EBC with the same (table-wise) sharding: the id transform's read replaces the input dist's, and the
    received KJTs are handed on with the lengths per key TorchRec computed. ``-m gpu`` counts every synchronisation
    the same way."""
    results = request.getfixturevalue(world).run(
        scenarios.step_counts_against_stock, method=method, sharding_type="table_wise"
    )
    scenarios.assert_busiest_rank_no_more_than_stock(results, method, "length_reads")


def test_per_sample_weight_gradients_only_for_memcom(world2: World) -> None:
    """FBGEMM skips the per-sample-weight gradient of every feature but MEmCom's (their weights are constant)."""
    for r in world2.run(scenarios.memcom_weight_grads_only):
        assert r["constant"] > 0 and r["constant_nonzero"] == 0, r
        assert r["memcom"] > 0 and r["memcom_nonzero"] == r["memcom"], r


def test_physical_index_dtype() -> None:
    """int32 lookups unless an id or the tables' rows could exceed it, or fused_params name the index type."""
    import torch
    from torchrec.distributed.fused_params import FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE as INDEX

    from torchrec_memcom import CompressedEmbeddingBagCollection, HashEmbeddingBagConfig, MEmComEmbeddingBagConfig
    from torchrec_memcom.distributed.compressed import physical_index_dtype

    def module(*tables: object) -> CompressedEmbeddingBagCollection:
        return CompressedEmbeddingBagCollection(list(tables), device=torch.device("meta"))

    def hashed(name: str, n: int, rows: int) -> HashEmbeddingBagConfig:
        return HashEmbeddingBagConfig(
            name=name, num_embeddings=n, embedding_dim=8, feature_names=[name], num_shared_rows=rows, num_buckets=4
        )

    small = module(hashed("a", 1000, 64), MEmComEmbeddingBagConfig(
        name="m", num_embeddings=5000, embedding_dim=8, feature_names=["m"], num_shared_rows=400, num_buckets=4
    ))  # fmt: skip
    assert physical_index_dtype(small, None) == torch.int32
    assert physical_index_dtype(small, {INDEX: torch.int64}) == torch.int64
    assert physical_index_dtype(small, {INDEX: torch.int32}) == torch.int32
    with pytest.raises(ValueError, match="int32 or int64"):
        physical_index_dtype(small, {INDEX: torch.int16})
    # a logical table with ids past 2**31 (they cross the input dist as ids): int64, and int32 is refused
    huge = module(hashed("big", 3_000_000_000, 4000))
    assert physical_index_dtype(huge, None) == torch.int64
    with pytest.raises(ValueError, match=r"'?big'? reach 3,000,000,000"):
        physical_index_dtype(huge, {INDEX: torch.int32})
    # physical tables whose rows together pass 2**31 (FBGEMM sorts table offset + row in the index dtype)
    wide = module(*[hashed(f"t{i}", 2_000_000_000, 1_500_000_000) for i in range(2)])
    assert physical_index_dtype(wide, None) == torch.int64
    with pytest.raises(ValueError, match="all physical tables together reach 3,000,000,000"):
        physical_index_dtype(wide, {INDEX: torch.int32})
