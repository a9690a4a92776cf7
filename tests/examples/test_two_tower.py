# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The two-tower recipe (``torchrec_memcom.recipes.two_tower``): the in-batch softmax, the config schema, and the
recipe end to end on real MovieLens-1M (one process through the checkout's entry point, and 2 gloo processes via
torchrun with row-wise LMA and MEmCom tables, checkpoints and a bitwise resume)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom import MEmComEmbeddingBagConfig
from torchrec_memcom.recipes.config import ConfigError, apply_overrides, from_dict
from torchrec_memcom.recipes.schemas import TwoTowerConfig, load_recipe_config
from torchrec_memcom.recipes.two_tower_model import (
    TwoTower,
    TwoTowerBatch,
    build_two_tower,
    in_batch_softmax_loss,
    item_log_frequency,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "torchrec_memcom/recipes/configs/two_tower"
METHODS = ("stock", "hash", "qr", "memcom", "lma")


def test_configs_are_found_by_the_recursive_config_test() -> None:
    from tests.examples.test_configs import CONFIGS as ALL

    names = {p.relative_to(ROOT).as_posix() for p in ALL}
    for method in METHODS:
        path = CONFIGS / f"ml1m_{method}.yaml"
        assert path.relative_to(ROOT).as_posix() in names
        cfg = load_recipe_config(path)
        assert isinstance(cfg, TwoTowerConfig) and cfg.data.name == "ml1m_ranking"
        assert all(spec["type"] == method for spec in cfg.tables.values())


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.temperature=0", "model.temperature"),
        ("model.tower_layer_sizes=[]", "model.tower_layer_sizes"),
        ("model.bogus=1", "model.bogus"),
        ("eval.k=0", "eval.k"),
        ("eval.split=train", "eval.split"),
        ("data.name=ml1m_ctr", "data.name"),
        ("tables.title={type: hash, compression: 4}", "tables.title"),
        ("tables.user={type: memcom, compression: 80}", "tables.user"),  # MEmCom stays below d = 64x
        ("sharding.nope=[row_wise]", "sharding.nope"),
        ("checkpoint.keep=0", "checkpoint.keep"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    raw = yaml.safe_load((CONFIGS / "ml1m_memcom.yaml").read_text())
    with pytest.raises(ConfigError) as e:
        from_dict(TwoTowerConfig, apply_overrides(raw, [override]))
    assert str(e.value).startswith(f"{key}"), str(e.value)


def test_in_batch_softmax_masks_duplicates_and_same_user_positives() -> None:
    torch.manual_seed(0)
    u, v = torch.randn(4, 8), torch.randn(4, 8)
    users, items = torch.tensor([0, 0, 1, 2]), torch.tensor([5, 6, 5, 7])
    loss, pos = in_batch_softmax_loss(u, v, users, items)
    logits = u @ v.t()
    # row 0 (user 0, item 5): column 1 is user 0's other positive and column 2 is item 5 again: only column 3 competes
    rows = _row_losses(u, v, users, items)
    assert torch.allclose(rows[0], torch.logsumexp(logits[0, [0, 3]], 0) - logits[0, 0])
    assert torch.allclose(loss, rows.mean())
    masked = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.nn.functional.cross_entropy(logits.masked_fill(masked, float("-inf")), torch.arange(4))
    assert torch.allclose(loss, expected) and torch.allclose(pos, logits.diagonal())
    # logQ: every logit of candidate j drops by log q(item_j)
    log_q = torch.log(torch.tensor([0.1] * 5 + [0.5, 0.2, 0.2]))
    loss_q, pos_q = in_batch_softmax_loss(u, v, users, items, log_q)
    assert torch.allclose(pos_q, logits.diagonal() - log_q[items])
    shifted = (logits - log_q[items].unsqueeze(0)).masked_fill(masked, float("-inf"))
    assert torch.allclose(loss_q, torch.nn.functional.cross_entropy(shifted, torch.arange(4)))


def _row_losses(u: torch.Tensor, v: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Per-row losses of ``in_batch_softmax_loss``, one row at a time (each row alone against the batch)."""
    out = []
    for i in range(len(users)):
        keep = [j for j in range(len(users)) if j == i or (items[j] != items[i] and users[j] != users[i])]
        logits = u[i] @ v[keep].t()
        out.append(torch.logsumexp(logits, 0) - logits[keep.index(i)])
    return torch.stack(out)


def test_towers_read_their_features_by_name() -> None:
    """A tower's input is its features in its tables' order, whatever order the (sharded) collection returns."""

    class Fixed(nn.Module):
        def __init__(self, kt: KeyedTensor) -> None:
            super().__init__()
            self.kt = kt

        def forward(self, _: KeyedJaggedTensor) -> KeyedTensor:
            return self.kt

    tables = [EmbeddingBagConfig(name=f"t_{f}", num_embeddings=8, embedding_dim=2, feature_names=[f]) for f in "ab"]
    model = TwoTower(EmbeddingBagCollection(tables), EmbeddingBagCollection(tables), 0, [3])
    a, b = torch.randn(4, 2), torch.randn(4, 2)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["a", "b"], torch.zeros(8, dtype=torch.int64), torch.ones(8, dtype=torch.int32)
    )
    model.user_ebc = Fixed(KeyedTensor(keys=["a", "b"], length_per_key=[2, 2], values=torch.cat([a, b], dim=1)))
    expected = model.user_embedding(kjt)
    model.user_ebc = Fixed(KeyedTensor(keys=["b", "a"], length_per_key=[2, 2], values=torch.cat([b, a], dim=1)))
    torch.testing.assert_close(model.user_embedding(kjt), expected, rtol=0, atol=0)


def test_model_trains_and_reports_memory() -> None:
    def tables(features: List[str], n: int) -> List[EmbeddingBagConfig]:
        return [
            EmbeddingBagConfig(name=f"t_{f}", num_embeddings=n, embedding_dim=8, feature_names=[f]) for f in features
        ]

    user = [
        MEmComEmbeddingBagConfig(
            name="t_u", num_embeddings=64, embedding_dim=8, feature_names=["u"], compression_ratio=2
        )
    ]
    item = tables(["i"], 32)
    log_q = item_log_frequency(torch.randint(0, 32, (500,)), 32)
    model = build_two_tower(user, item, 1, [16, 8], 0.1, True, log_q, ebc_device=None, dense_device=None)
    users, items = torch.randint(0, 64, (16,)), torch.randint(0, 32, (16,))
    kjt = KeyedJaggedTensor.from_lengths_sync(["u", "i"], torch.cat([users, items]), torch.ones(32, dtype=torch.int32))
    batch = TwoTowerBatch(torch.rand(16, 1), kjt, torch.ones(16), users, items)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        loss = model(batch)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    report = model.model.memory_report()
    assert {t.method for t in report.tables} == {"memcom", "stock"} and report.compression_ratio > 1


def _env() -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU and gloo even on a GPU machine: the comparisons are bitwise
    return env


def _run(cmd: List[str]) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


TINY = ["train.batch_size=256", "train.lma_signature_rows=20000", "eval.user_batch_size=2048"]


def train_example(config: str, out_dir: Path, *overrides: str) -> str:
    """Runs ``examples/two_tower/train.py`` with ``config``, ``TINY`` and ``overrides``, writing to ``out_dir``;
    returns its output."""
    cmd = [sys.executable, "examples/two_tower/train.py", "--config", config, "--set", *TINY, *overrides]
    return _run([*cmd, f"output.dir={out_dir}"])


def test_one_process(tmp_path: Path) -> None:
    out = train_example("ml1m_memcom", tmp_path, "train.max_steps=3")
    assert "[two_tower ml1m_memcom] test nDCG@10" in out
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["world_size"] == 1 and r["train"]["steps"] == 3 and r["train"]["samples_per_s"] > 0
    assert r["final"]["split"] == "test" and r["final"]["num_users"] == 6040
    assert 0 <= r["final"]["ndcg@10"] <= r["final"]["recall@10"] <= 1
    assert 15 < r["compression"] < 16 and r["embedding_bytes"] < r["stock_embedding_bytes"]


def _losses(path: Path) -> Dict[int, float]:
    return {int(s): v for s, v in json.loads((path / "results.json").read_text())["train"]["losses"]}


def test_two_processes_and_resume(tmp_path: Path) -> None:
    """Row-wise LMA (user+zip memory, movie memory) and MEmCom, a QR small table; periodic val evaluation; a
    checkpoint at step 2 from which a second run reproduces steps 3-4 bitwise."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    overrides = [
        *TINY,
        "train.max_steps=4",
        "eval.every_steps=3",
        "tables.zip={type: memcom, compression: 8}",
        "tables.genres={type: qr, compression: 2}",
        "sharding={user: [row_wise], movie: [row_wise]}",
        f"checkpoint.dir={tmp_path}/ckpt",
        "checkpoint.every_steps=2",
        "checkpoint.keep=null",
    ]
    recipe = ["-m", "torchrec_memcom.recipes.two_tower", "--config", "ml1m_lma", "--set"]
    _run([*cmd, *recipe, *overrides, f"output.dir={tmp_path}/a"])
    r = json.loads((tmp_path / "a/results.json").read_text())
    assert r["status"] == "ok" and r["world_size"] == 2 and r["train"]["steps"] == 4 and len(r["train"]["losses"]) == 4
    assert [(e["step"], e["split"]) for e in r["evals"]] == [(3, "val"), (4, "test")]
    assert all(e["num_users"] == 6040 for e in r["evals"])
    assert {t["method"] for t in r["memory"]["tables"]} == {"lma", "memcom", "qr", "stock"}
    assert "row_wise" in r["plan"] and r["lma_signature_coverage"]["t_user"] > 0.5
    shutil.copytree(tmp_path / "ckpt/step_2", tmp_path / "ckpt2/step_2")
    resume = [*overrides, f"checkpoint.dir={tmp_path}/ckpt2", f"output.dir={tmp_path}/b"]
    out = _run([*cmd, *recipe[:-1], "--resume", "--set", *resume])
    assert f"resumed from {tmp_path}/ckpt2/step_2 at step 2" in out
    again = json.loads((tmp_path / "b/results.json").read_text())
    assert _losses(tmp_path / "b") == {s: v for s, v in _losses(tmp_path / "a").items() if s > 2}
    assert {**again["final"], "seconds": 0} == {**r["final"], "seconds": 0}
