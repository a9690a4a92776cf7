# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""DLRM with every table kind under DMP: plain loop, TrainPipelineSparseDist and the unsharded reference agree."""

from tests.distributed import scenarios
from tests.distributed.world import World


def test_dlrm_pipeline_two_ranks(world2: World) -> None:
    losses = world2.run(scenarios.dlrm_pipeline_matches_reference, steps=4)[0]
    assert len(losses["pipeline"]) == 4


def test_dlrm_pipeline_four_ranks(world4: World) -> None:
    world4.run(scenarios.dlrm_pipeline_matches_reference, steps=3)


def test_dlrm_pipeline_one_rank(world1: World) -> None:
    """One rank: the table-wise input dists are the identity (no all-to-all), under the pipeline too."""
    losses = world1.run(scenarios.dlrm_pipeline_matches_reference, steps=3)[0]
    assert len(losses["pipeline"]) == 3
