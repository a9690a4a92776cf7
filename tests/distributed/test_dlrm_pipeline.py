# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""DLRM with every table kind under DMP: plain loop, TrainPipelineSparseDist and the unsharded reference agree."""

import pytest

from tests.distributed import scenarios
from tests.distributed.world import World


def test_dlrm_pipeline_two_ranks(world2: World) -> None:
    losses = world2.run(scenarios.dlrm_pipeline_matches_reference, steps=4)[0]
    assert len(losses["pipeline"]) == 4


def test_dlrm_pipeline_four_ranks(world4: World) -> None:
    world4.run(scenarios.dlrm_pipeline_matches_reference, steps=3)


@pytest.mark.parametrize("memcom_sharding", ["row_wise", "table_wise"])
def test_dlrm_pipeline_one_rank(world1: World, memcom_sharding: str) -> None:
    """One rank: the input dists are the identity (no all-to-all, no bucketing), under the pipeline too, and the
    transform also computes MEmCom's rows and entity-weight slots (the pipeline's context carries them)."""
    losses = world1.run(scenarios.dlrm_pipeline_matches_reference, steps=3, memcom_sharding=memcom_sharding)[0]
    assert len(losses["pipeline"]) == 3
    assert losses["slots_in_transform"] == [True], losses["slots_in_transform"]
