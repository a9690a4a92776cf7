# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharded checkpoints with torch.distributed.checkpoint: save at world size 2, load at 4 and unsharded (1), and an
unsharded checkpoint into a sharded model; outputs are identical everywhere."""

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from tests.distributed import scenarios
from tests.distributed.world import World


def _unsharded_outputs(state_path: Path) -> torch.Tensor:
    model = scenarios.mixed_wrap(torch.device("cpu"), seed=123)
    state = model.state_dict()
    dcp.load(state, checkpoint_id=str(state_path))
    model.load_state_dict(state)
    with torch.no_grad():
        return model(scenarios.eval_batch(8))


def test_reshard_2_to_4_and_1(world2: World, world4: World, tmp_path: Path) -> None:
    path = str(tmp_path / "ckpt")
    saved = torch.cat(world2.run(scenarios.checkpoint_roundtrip, path=path, action="save"))
    loaded4 = torch.cat(world4.run(scenarios.checkpoint_roundtrip, path=path, action="load", seed=5))
    loaded2 = torch.cat(world2.run(scenarios.checkpoint_roundtrip, path=path, action="load", seed=6))
    # Same world size: bit-identical. Another world size sums pooled partials in another order: float tolerance.
    torch.testing.assert_close(loaded2, saved, atol=0, rtol=0)
    torch.testing.assert_close(loaded4, saved, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(_unsharded_outputs(tmp_path / "ckpt"), saved, atol=1e-6, rtol=1e-6)


def test_unsharded_state_into_sharded_model(world2: World, tmp_path: Path) -> None:
    model = scenarios.mixed_wrap(torch.device("cpu"), seed=11)
    model.ebc.fit_signatures([scenarios.eval_batch(16)])
    dcp.save(model.state_dict(), checkpoint_id=str(tmp_path / "unsharded"))
    with torch.no_grad():
        expected = model(scenarios.eval_batch(8))
    got = torch.cat(world2.run(scenarios.checkpoint_roundtrip, path=str(tmp_path / "unsharded"), action="load", seed=3))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
