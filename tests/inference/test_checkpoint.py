# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Round trip from a 2-rank gloo DCP checkpoint to an artifact: gather into one unsharded model (both checkpoint
layouts), serve it, export it; every stage reproduces the sharded model."""

from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torchrec import EmbeddingBagConfig

from tests.distributed.world import World
from tests.inference import ranks
from tests.inference.models import make_dlrm, mixed_tables
from torchrec_memcom.inference import InferenceConfig, export_model, load_checkpoint, program_inputs, to_inference


@pytest.fixture(scope="module")
def world2() -> Iterator[World]:
    world = World(2, "gloo")
    try:
        yield world
    finally:
        world.close()


@pytest.mark.slow
def test_two_rank_checkpoint_gathers_serves_and_exports(world2: World, tmp_path: Path) -> None:
    top, nested = str(tmp_path / "top"), str(tmp_path / "nested")
    results = world2.run(ranks.train_and_save, top_level=top, nested=nested, seed=5)
    gathered = results[0]["state"]
    sharded_logits = torch.cat([r["logits"] for r in results])
    reference = make_dlrm(mixed_tables(), seed=5).state_dict()
    changed = [k for k, v in reference.items() if isinstance(v, torch.Tensor) and not torch.equal(v, gathered[k])]
    assert any("embedding_bag_collection" in k for k in changed)  # the step trained the tables

    batch = ranks.global_batch(seed=32)
    keys = batch.sparse_features.keys()
    for path, layout in [(top, ""), (nested, "model")]:
        model = make_dlrm(mixed_tables(), seed=77)  # other weights, all overwritten by the load
        assert load_checkpoint(model, path) == layout
        for key, value in model.state_dict().items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, gathered[key], atol=0, rtol=0, msg=key)
            else:  # a module's extra state (e.g. the tables' fingerprint)
                assert value == gathered[key], key
        with torch.no_grad():
            _, (_, logits, _) = model(batch)
        torch.testing.assert_close(logits, sharded_logits, atol=1e-5, rtol=1e-5)

        served = to_inference(model.model, InferenceConfig(weight_dtype="fp32", entity_weight_dtype="fp32"))
        export_model(served, keys, batch.dense_features.shape[1], tmp_path / f"dlrm{layout}.pt2")
        program = torch.export.load(tmp_path / f"dlrm{layout}.pt2").module()
        with torch.no_grad():
            exported = program(*program_inputs(batch.sparse_features, keys, batch.dense_features)).squeeze(1)
        torch.testing.assert_close(exported, sharded_logits, atol=1e-5, rtol=1e-5)


def test_checkpoint_errors_name_the_problem(tmp_path: Path) -> None:
    model = make_dlrm(mixed_tables(), seed=1)
    dcp.save(model.state_dict(), checkpoint_id=str(tmp_path / "ckpt"))
    other = make_dlrm([EmbeddingBagConfig(name="x", num_embeddings=10, embedding_dim=16, feature_names=["x"])])
    with pytest.raises(ValueError, match="does not hold this model's state.*missing"):
        load_checkpoint(other, tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="not a DCP checkpoint"):
        load_checkpoint(model, tmp_path)
    on_meta = make_dlrm(mixed_tables(), device="meta")
    with pytest.raises(ValueError, match="meta"):
        load_checkpoint(on_meta, tmp_path / "ckpt")
    fresh = make_dlrm(mixed_tables(), seed=2)
    assert load_checkpoint(fresh, tmp_path / "ckpt", key="") == ""
    for key, value in fresh.state_dict().items():
        expected = model.state_dict()[key]
        assert torch.equal(value, expected) if isinstance(value, torch.Tensor) else value == expected, key
