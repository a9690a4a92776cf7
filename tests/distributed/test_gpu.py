# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The multi-process checks on CUDA: every sharding case of the CPU suite, with its optimizer (the GPU kit keeps exact
SGD, exact Adagrad, exact row-wise Adagrad and the dense kernels of data-parallel tables), in these worlds: NCCL with a
rank per GPU (1 or 2), and 2 (where there is one GPU) and 4 gloo ranks sharing GPU 0, so that the kernels that run
after a real dist between ranks (MEmCom's rows of the ids a rank received, LMA's expansion of raw ids, row-wise blocks
of ``w``) run on a GPU on any machine."""

from pathlib import Path
from typing import Dict

import pytest
import torch

from tests.distributed import scenarios
from tests.distributed.test_sharding import CASES, _id
from tests.distributed.world import World

pytestmark = pytest.mark.gpu


# the session-wide worlds of conftest.py, by test id
_WORLDS = {"nccl": "gpu_world", "gloo2": "gpu_gloo_world2", "gloo4": "gpu_gloo_world4"}


@pytest.fixture(params=list(_WORLDS))
def world(request: pytest.FixtureRequest) -> World:
    if request.param == "gloo2" and torch.cuda.is_available() and torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs: the NCCL world has two ranks")
    return request.getfixturevalue(_WORLDS[request.param])


def test_every_rank_runs_on_a_gpu(world: World) -> None:
    results = world.run(scenarios.rank_device)
    devices, gpus = [d for d, _ in results], results[0][1]
    shared = world.world_size > gpus
    expected = ["cuda:0" if shared else f"cuda:{r}" for r in range(world.world_size)]
    assert devices == expected, devices


# and the relabelled combine (whole features out of order: a stock table between two tables of one LMA memory)
GPU_CASES = CASES + [dict(method="lma_mixed", sharding_type="table_wise")]


@pytest.mark.parametrize("case", GPU_CASES, ids=_id)
def test_sharded_matches_unsharded_gpu(world: World, case: Dict) -> None:
    results = world.run(scenarios.sharded_matches_unsharded, **case)
    assert sum(r["checked"] for r in results) >= 1, results  # some rank compared its tables' state


def test_per_sample_weight_gradients_only_for_memcom_gpu(world: World) -> None:
    for r in world.run(scenarios.memcom_weight_grads_only):
        assert r["constant"] > 0 and r["constant_nonzero"] == 0, r
        assert r["memcom"] > 0 and r["memcom_nonzero"] == r["memcom"], r


@pytest.mark.parametrize("memcom_sharding", ["row_wise", "table_wise"])
def test_dlrm_pipeline_gpu(world: World, memcom_sharding: str) -> None:
    world.run(scenarios.dlrm_pipeline_matches_reference, steps=4, memcom_sharding=memcom_sharding)


@pytest.mark.parametrize("sharding_type", ["table_wise", "row_wise"])
@pytest.mark.parametrize("method", ["memcom", "hash", "qr", "lma"])
def test_no_host_sync_beyond_stock_gpu(world: World, method: str, sharding_type: str) -> None:
    """The sharded compressed step synchronises the host with the GPU no more often than TorchRec's own EBC with the
    same sharding, on one rank and across ranks: its read of the KJT's lengths per key moves from TorchRec's input dist
    to the id transform, and nothing is added."""
    results = world.run(scenarios.step_counts_against_stock, method=method, sharding_type=sharding_type)
    scenarios.assert_busiest_rank_no_more_than_stock(results, method, "syncs")


def test_checkpoint_roundtrip_gpu(world: World, tmp_path: Path) -> None:
    path = str(tmp_path / "ckpt")
    saved = torch.cat(world.run(scenarios.checkpoint_roundtrip, path=path, action="save"))
    loaded = torch.cat(world.run(scenarios.checkpoint_roundtrip, path=path, action="load", seed=4))
    torch.testing.assert_close(loaded, saved, atol=0, rtol=0)
