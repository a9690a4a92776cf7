# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The two-tower recipe with the user-history feature (``data.user_history``): its config keys, the history table
(its own rows, MEAN-pooled unless the spec says otherwise), the model forward with and without the feature,
evaluation inputs that hold only training history, the ``ml1m_history_*`` presets, and one short run."""

import json
from pathlib import Path
from typing import List

import pytest
import torch
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tests.datasets.test_movielens import needs_ml1m
from tests.datasets.test_movielens_history import _bags, _tiny
from tests.examples.test_two_tower import train_example
from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.datasets import HISTORY_FEATURE, MovieLensRanking
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.schemas import TwoTowerConfig, load_recipe_config
from torchrec_memcom.recipes.training import DistContext, build_tables
from torchrec_memcom.recipes.two_tower import TwoTowerTask, as_pair_batch
from torchrec_memcom.recipes.two_tower_model import build_two_tower, item_log_frequency

PRESETS = ("stock", "memcom", "memcom_all", "hash", "lma")
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
SMALL = ["model.embedding_dim=8", "model.tower_layer_sizes=[16, 8]"]


def _task(overrides: List[str], history: int = 2, preset: str = "ml1m_history_stock") -> TwoTowerTask:
    """The recipe's task on the hand-made dataset of ``test_movielens_history`` (no MovieLens files needed)."""
    cfg = load_recipe_config(preset, [*SMALL, f"data.user_history={history}", *overrides], recipe="two_tower")
    task = TwoTowerTask(cfg, CPU)
    task.__dict__["ds"] = MovieLensRanking(_tiny(), history_length=history)  # the cached_property, filled in
    return task


def test_config_keys() -> None:
    cfg = load_recipe_config("ml1m_history_memcom", ["data.user_history=7"], recipe="two_tower")
    assert cfg.data.user_history == 7 and cfg.data.feature_names()[5] == HISTORY_FEATURE
    assert load_recipe_config("ml1m_stock", recipe="two_tower").data.feature_names().count(HISTORY_FEATURE) == 0
    with pytest.raises(ConfigError, match=r"^.*data\.user_history: must be >= 0"):
        load_recipe_config("ml1m_history_stock", ["data.user_history=-1"], recipe="two_tower")
    with pytest.raises(ConfigError, match=r"tables\.history: unknown feature"):  # no history without user_history
        load_recipe_config("ml1m_history_stock", ["data.user_history=0"], recipe="two_tower")
    with pytest.raises(ConfigError, match=r"tables\.history"):
        load_recipe_config("ml1m_history_stock", ["tables.history.pooling=max"], recipe="two_tower")


@pytest.mark.parametrize(
    "spec, pooling",
    [
        (None, PoolingType.MEAN),
        ("{type: stock, pooling: sum}", PoolingType.SUM),
        ("{type: hash, compression: 2}", PoolingType.MEAN),
    ],
)
def test_history_table_is_its_own_and_mean_pooled_by_default(spec: str, pooling: PoolingType) -> None:
    overrides = ["tables={}"] + ([f"tables.history={spec}"] if spec else [])
    model, report = _task(overrides).build_model()
    user = {t.name: t for t in model.model.user_ebc.embedding_bag_configs()}
    item = {t.name: t for t in model.model.item_ebc.embedding_bag_configs()}
    assert list(user) == ["t_user", "t_gender", "t_age", "t_occupation", "t_zip", "t_history"]
    assert list(item) == ["t_movie", "t_genres"]
    assert user["t_history"].pooling == pooling and user["t_zip"].pooling == PoolingType.SUM
    assert user["t_history"].num_embeddings == item["t_movie"].num_embeddings == 6
    assert {t.name for t in report.tables} >= {"t_history", "t_movie"}


def _lookup(ebc: CompressedEmbeddingBagCollection, keys: List[str], bags: List[List[int]]) -> torch.Tensor:
    """``[len(bags), d]`` pooled output of feature ``keys[-1]`` for ``bags`` (the other keys get one id 0 each)."""
    n = len(bags)
    values = [torch.zeros(n * (len(keys) - 1), dtype=torch.int64), torch.tensor([i for b in bags for i in b])]
    lengths = [torch.ones(n * (len(keys) - 1), dtype=torch.int32), torch.tensor([len(b) for b in bags])]
    kjt = KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths).to(torch.int32))
    return ebc(kjt)[keys[-1]]


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_forward_pools_the_history_bag(pooling: str) -> None:
    torch.manual_seed(0)
    ds = MovieLensRanking(_tiny(), history_length=3)
    specs = {HISTORY_FEATURE: {"type": "memcom", "compression": 2, "pooling": pooling}}
    sizes = ds.num_embeddings_per_feature
    user = build_tables(ds.user_feature_names, sizes, 8, specs, {HISTORY_FEATURE: PoolingType.MEAN})
    item = build_tables(ds.item_feature_names, sizes, 8, specs)
    log_q = item_log_frequency(ds.train_items, ds.num_items)
    model = build_two_tower(user, item, 1, [16, 8], 0.1, True, log_q, ebc_device=None, dense_device=None)
    ebc = model.model.user_ebc
    # the pooled history is the mean (sum) of its ids' single-id embeddings; an empty bag pools to zeros
    rows = _lookup(ebc, ds.user_feature_names, [[i] for i in range(6)])
    bags = [[2, 1, 3], [4], [], [5, 5, 0]]
    pooled = _lookup(ebc, ds.user_feature_names, bags)
    for bag, got in zip(bags, pooled):
        expected = rows[bag].sum(0) if bag else torch.zeros(8)
        if pooling == "mean" and bag:
            expected = expected / len(bag)
        torch.testing.assert_close(got, expected)
    # a training batch: the loss trains the history table, and the user vector depends on the history
    batch = as_pair_batch(next(iter(ds.train_batches(5, shuffle=False))))
    loss = model(batch)[0]
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in ebc.named_parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)
    users = ds.user_features(torch.tensor([0, 0]))
    other = KeyedJaggedTensor(keys=users.keys(), values=users.values().clone(), lengths=users.lengths())
    # user 0's last history id 4 -> an id of another embedding (MEmCom at 2x: some ids share one at init)
    other.values()[-1] = next(i for i in range(6) if not torch.equal(rows[i], rows[4]))
    with torch.no_grad():
        a, b = model.model.user_embedding(users), model.model.user_embedding(other)
    torch.testing.assert_close(a[0], a[1])
    assert not torch.allclose(a[0], b[1])


def test_forward_without_history() -> None:
    ds = MovieLensRanking(_tiny())
    sizes = ds.num_embeddings_per_feature
    user, item = build_tables(ds.user_feature_names, sizes, 8, {}), build_tables(ds.item_feature_names, sizes, 8, {})
    model = build_two_tower(user, item, 1, [16, 8], 0.1, True, None, ebc_device=None, dense_device=None)
    assert HISTORY_FEATURE not in model.model.user_features and model.model.user_mlp[0].in_features == 5 * 8
    batch = as_pair_batch(next(iter(ds.train_batches(5, shuffle=False))))
    assert HISTORY_FEATURE not in batch.sparse_features.keys()
    loss, (_, positives, _) = model(batch)
    assert torch.isfinite(loss) and positives.shape == (5,)


def test_evaluation_features_hold_only_training_history() -> None:
    task = _task([])
    users, movies = torch.tensor([1, 0, 1]), torch.tensor([0, 0, 0])
    kjt = task._features(users, movies)
    assert kjt.keys() == task.cfg.data.feature_names()
    assert _bags(kjt["history"].values().numpy(), kjt["history"].lengths().numpy()) == [[5], [3, 4], [5]]
    held_out = {int(task.ds.targets(s)[u]) for s in ("val", "test") for u in (0, 1)}
    assert held_out == {5, 0, 2}  # user 0: val 5 test 0; user 1: val 0 test 2 - none of them in its own history
    for user, bag in zip(users.tolist(), _bags(kjt["history"].values().numpy(), kjt["history"].lengths().numpy())):
        assert not {int(task.ds.targets("val")[user]), int(task.ds.targets("test")[user])} & set(bag)


@needs_ml1m
@pytest.mark.parametrize("method", PRESETS)
def test_presets(method: str) -> None:
    cfg = load_recipe_config(f"ml1m_history_{method}", recipe="two_tower")
    assert isinstance(cfg, TwoTowerConfig) and cfg.data.user_history > 0
    _, report = TwoTowerTask(cfg, CPU).build_model()
    tables = {t.name: t for t in report.tables}
    group = {name: t for t in report.tables for name in t.tables}  # LMA reports its memory group
    user_tower = [group[f"t_{f}"] for f in cfg.data.user_feature_names()]
    stock = sum(t.stock_bytes for t in {id(t): t for t in user_tower}.values())
    total = sum(t.total_bytes for t in {id(t): t for t in user_tower}.values())
    if method == "stock":
        assert report.compression_ratio == 1.0
    else:
        assert group["t_history"].method == method.split("_")[0] and 15 < stock / total < 16.5  # input embeddings
        assert (group["t_movie"].method == "stock") == (method != "memcom_all")
    if method in ("stock", "memcom", "hash", "lma"):
        assert tables["t_movie"].compression_ratio == 1.0


@needs_ml1m
def test_short_run(tmp_path: Path) -> None:
    out = train_example("ml1m_history_memcom", tmp_path, "train.max_steps=2")
    assert "[two_tower ml1m_history_memcom] test nDCG@10" in out
    r = json.loads((tmp_path / "results.json").read_text())
    methods = {t["name"]: t["method"] for t in r["memory"]["tables"]}
    assert methods["t_history"] == "memcom" and methods["t_movie"] == "stock"
    assert r["final"]["num_users"] == 6040 and 0 <= r["final"]["ndcg@10"] <= r["final"]["recall@10"] <= 1
    assert r["config"]["data"]["user_history"] == 50
