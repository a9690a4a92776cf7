# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The planner sees the true memory of compressed tables (single process: planning needs no process group)."""

from typing import List

import pytest
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torchrec import EmbeddingBagConfig
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError

from tests.distributed.scenarios import Wrap
from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)
from torchrec_memcom.distributed import get_sharders
from torchrec_memcom.distributed.planner import CompressedEmbeddingShardingPlanner, physical_constraints

MiB = 2**20
SGD = {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": 0.1}
N, D = 2_000_000, 64  # a stock fp32 table of 488 MiB


def _model(tables: List[EmbeddingBagConfig]) -> Wrap:
    return Wrap(CompressedEmbeddingBagCollection(tables, device="meta"))


def _plan(tables: List[EmbeddingBagConfig], ddr_mib: float, world_size: int = 2, **constraints: ParameterConstraints):
    planner = CompressedEmbeddingShardingPlanner(
        topology=Topology(world_size=world_size, compute_device="cpu", ddr_cap=int(ddr_mib * MiB)),
        batch_size=64,
        constraints=constraints or None,
        fused_params=SGD,
    )
    return planner.plan(_model(tables), get_sharders(fused_params=SGD))


def _memcom(ratio: float = 16.0) -> MEmComEmbeddingBagConfig:
    return MEmComEmbeddingBagConfig(
        name="t", num_embeddings=N, embedding_dim=D, feature_names=["f"], compression_ratio=ratio, num_buckets=64
    )


def test_budget_fits_compressed_not_stock() -> None:
    stock = [EmbeddingBagConfig(name="t", num_embeddings=N, embedding_dim=D, feature_names=["f"])]
    with pytest.raises(PlannerError):
        _plan(stock, ddr_mib=200)
    plan = _plan([_memcom()], ddr_mib=200)
    assert "t" in str(plan)


def test_budget_too_small_for_compressed_fails() -> None:
    with pytest.raises(PlannerError):
        _plan([_memcom()], ddr_mib=8)


def test_entity_weights_are_counted() -> None:
    # A tiny shared table but 2M entity weights (7.6 MiB of w): the shared table alone would fit in 4 MiB/rank.
    tiny_u = MEmComEmbeddingBagConfig(
        name="t", num_embeddings=N, embedding_dim=D, feature_names=["f"], num_shared_rows=1024, num_buckets=64
    )
    table_wise = {"t": ParameterConstraints(sharding_types=["table_wise"])}
    # TorchRec's own planner sees only the shared table and plans it into 4 MiB ...
    stock_planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=2, compute_device="cpu", ddr_cap=4 * MiB), batch_size=64, constraints=table_wise
    )
    assert stock_planner.plan(_model([tiny_u]), get_sharders(fused_params=SGD))
    # ... ours adds the weights and refuses.
    with pytest.raises(PlannerError):
        _plan([tiny_u], ddr_mib=4, **table_wise)
    assert _plan([tiny_u], ddr_mib=40, **table_wise)


def test_signatures_are_reserved_on_every_rank() -> None:
    # 2M ids x 16 signature bytes = 30.5 MiB on every rank, next to a small memory.
    lma = LMAEmbeddingBagConfig(
        name="t",
        num_embeddings=N,
        embedding_dim=D,
        feature_names=["f"],
        memory_rows=4096,
        chunk_size=4,  # 16 chunks: 16 bytes = 8-bit codes
        signature_bytes=16,
    )
    with pytest.raises(PlannerError):
        _plan([lma], ddr_mib=30)
    assert _plan([lma], ddr_mib=60)


def test_world_size_must_divide_buckets_up_front() -> None:
    # Asked for row-wise over 3 ranks with 64 buckets: a clear error before planning.
    with pytest.raises(ValueError, match=r"MEmCom table 't'.*3 ranks.*num_buckets=64"):
        _plan([_memcom()], ddr_mib=1000, world_size=3, t=ParameterConstraints(sharding_types=["row_wise"]))
    # Unconstrained, the planner only considers what keeps ids and rows co-located: table-wise.
    plan = _plan([_memcom()], ddr_mib=1000, world_size=3)
    assert plan.plan["ebc"]["t"].sharding_type == "table_wise"
    # A type MEmCom cannot take is refused by name.
    with pytest.raises(ValueError, match=r"memcom table 't': constrained to \['column_wise'\]"):
        _plan([_memcom()], ddr_mib=1000, world_size=2, t=ParameterConstraints(sharding_types=["column_wise"]))


def test_row_wise_plan_is_bucket_aligned() -> None:
    plan = _plan([_memcom()], ddr_mib=1000, world_size=4, t=ParameterConstraints(sharding_types=["row_wise"]))
    param = plan.plan["ebc"]["t"]
    rows = _memcom().bucketed_hash().num_rows
    assert [s.shard_offsets[0] for s in param.sharding_spec.shards] == [r * rows // 4 for r in range(4)]


def test_logical_constraints_reach_physical_tables() -> None:
    qr = QREmbeddingBagConfig(
        name="q", num_embeddings=1000, embedding_dim=16, feature_names=["fq"], compression_ratio=4
    )
    lma = [
        LMAEmbeddingBagConfig(
            name=n,
            num_embeddings=500,
            embedding_dim=16,
            feature_names=[f],
            compression_ratio=2,
            chunk_size=8,
            memory_group="g",
        )
        for n, f in (("a", "fa"), ("b", "fb"))
    ]
    model = _model([qr, *lma])
    out = physical_constraints(
        model,
        {"q": ParameterConstraints(sharding_types=["row_wise"]), "a": ParameterConstraints(pooling_factors=[3.0])},
    )
    assert out["q__q"].sharding_types == ["row_wise"] and out["q__r"].sharding_types == ["row_wise"]
    # memory g serves a's 2 chunks (pooling 3) and b's 2 chunks (default 1)
    assert out["g__memory"].pooling_factors == [3.0, 3.0, 1.0, 1.0]
    plan = _plan([qr, *lma], ddr_mib=100, q=ParameterConstraints(sharding_types=["row_wise"]))
    assert plan.plan["ebc"]["q__q"].sharding_type == "row_wise"


def test_tables_of_a_compressed_collection_skip_fbgemm_bounds_check() -> None:
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode

    lma = LMAEmbeddingBagConfig(
        name="t", num_embeddings=5000, embedding_dim=16, feature_names=["f"], compression_ratio=4, chunk_size=8
    )
    stock = EmbeddingBagConfig(name="s", num_embeddings=5000, embedding_dim=16, feature_names=["g"])
    plan = _plan([lma, stock], ddr_mib=1000).plan["ebc"]
    # chunk locations are in range by construction, and the transform clamps a stock table's ids into its range (its
    # own check reports them): FBGEMM's per-batch check would find nothing
    assert plan["t__memory"].bounds_check_mode == BoundsCheckMode.NONE
    assert plan["s"].bounds_check_mode == BoundsCheckMode.NONE
    # a mode the user asks for wins
    asked = _plan([lma, stock], ddr_mib=1000, t=ParameterConstraints(bounds_check_mode=BoundsCheckMode.FATAL))
    assert asked.plan["ebc"]["t__memory"].bounds_check_mode == BoundsCheckMode.FATAL


def test_place_on_device_keeps_the_plan_on_one_gpu() -> None:
    """Ranks sharing one GPU plan as one host's GPUs (rank r's shards on cuda:r); ``place_on_device`` moves every
    shard to the shared GPU and changes nothing else, and MEmCom's weights follow their table's shards."""
    import torch
    from torch.distributed._shard.sharding_spec import EnumerableShardingSpec

    from torchrec_memcom.distributed.local_entity_weights import _owner_placements
    from torchrec_memcom.distributed.planner import place_on_device

    stock = EmbeddingBagConfig(name="s", num_embeddings=1000, embedding_dim=D, feature_names=["g"])
    planner = CompressedEmbeddingShardingPlanner(
        topology=Topology(world_size=2, compute_device="cuda", local_world_size=2),
        batch_size=64,
        constraints={"t": ParameterConstraints(sharding_types=["row_wise"])},
        fused_params=SGD,
    )
    plan = planner.plan(_model([_memcom(), stock]), get_sharders(fused_params=SGD))
    placed = place_on_device(plan, torch.device("cuda", 0))

    def shards(p):  # noqa: ANN001, ANN202
        return {
            (module, name): [(str(s.placement), s.shard_offsets, s.shard_sizes) for s in ps.sharding_spec.shards]
            for module, mp in p.plan.items()
            for name, ps in mp.items()
            if isinstance(ps.sharding_spec, EnumerableShardingSpec)
        }

    before, after = shards(plan), shards(placed)
    assert before.keys() == after.keys() and len(before) == 2
    assert {p for v in before.values() for p, _, _ in v} == {"rank:0/cuda:0", "rank:1/cuda:1"}  # not changed
    for key, planned in before.items():
        assert [(p.split("/")[0] + "/cuda:0", o, s) for p, o, s in planned] == after[key], key
    (memcom,) = [mp["t"] for mp in placed.plan.values() if "t" in mp]
    assert memcom.sharding_type == "row_wise"
    assert _owner_placements(memcom, [0, 1]) == ["rank:0/cuda:0", "rank:1/cuda:0"]
    (planned,) = [mp["t"] for mp in plan.plan.values() if "t" in mp]
    assert _owner_placements(planned, [0, 1]) == ["rank:0/cuda:0", "rank:1/cuda:1"]
