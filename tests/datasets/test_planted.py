# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""PlantedCTR: determinism, disjoint splits and ranks, Zipf popularity, a planted model of known rank whose Bayes AUC
is exact and reached by a calibrated scorer, id counts, the recipe data section, and a short DLRM run that learns.

SYNTHETIC data: nothing here is a real-data result.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Set, Tuple

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc
from torchrec.datasets.utils import Batch

from torchrec_memcom.datasets import PlantedCTR, bayes_auc, bayes_logloss
from torchrec_memcom.recipes.config import ConfigError, from_dict
from torchrec_memcom.recipes.data import DATASETS, DataConfig, PlantedData

ROOT = Path(__file__).resolve().parents[2]
_SIZES = [5000, 300, 20_000, 7]


def _ids(batch: Batch) -> torch.Tensor:
    return batch.sparse_features.values().view(len(batch.sparse_features.keys()), -1).T


def _rows(batches: List[Batch]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.cat([b.dense_features for b in batches]),
        torch.cat([_ids(b) for b in batches]),
        torch.cat([b.labels for b in batches]),
    )


def _fingerprints(batches: List[Batch]) -> Set[bytes]:
    dense, ids, _ = _rows(batches)
    return {d.numpy().tobytes() + i.numpy().tobytes() for d, i in zip(dense, ids)}


def _same(a: List[Batch], b: List[Batch]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_rows(a), _rows(b), strict=True)) and len(a) == len(b)


def test_layout_and_determinism() -> None:
    ds = PlantedCTR(300, 64, _SIZES, seed=7, latent_rank=6)
    batches = list(ds)
    assert len(batches) == len(ds) == 5 and [len(b.labels) for b in batches] == [64] * 4 + [44]
    b = batches[0]
    assert b.dense_features.shape == (64, 13) and b.dense_features.dtype == torch.float32
    assert b.sparse_features.keys() == [f"cat_{i}" for i in range(4)] and b.sparse_features.stride() == 64
    ids = _ids(b)
    assert bool((ids >= 0).all()) and bool((ids < torch.tensor(_SIZES)).all())
    assert set(torch.cat([x.labels for x in batches]).unique().tolist()) == {0.0, 1.0}
    assert _same(batches, list(ds))
    assert _same(batches, list(PlantedCTR(300, 64, _SIZES, seed=7, latent_rank=6)))
    other = list(PlantedCTR(300, 64, _SIZES, seed=8, latent_rank=6))
    assert not torch.equal(_rows(batches)[1], _rows(other)[1])
    # the model (not only the rows) depends on the seed
    a, c = PlantedCTR(1, 1, _SIZES, seed=7), PlantedCTR(1, 1, _SIZES, seed=8)
    assert not np.array_equal(a.latent(0, np.arange(10)), c.latent(0, np.arange(10)))
    np.testing.assert_array_equal(a.latent(0, np.arange(10)), PlantedCTR(5, 2, _SIZES, seed=7).latent(0, np.arange(10)))


def test_splits_are_disjoint_streams_of_one_model() -> None:
    splits = {s: PlantedCTR(2000, 500, _SIZES, seed=3, split=s) for s in ("train", "val", "test")}
    prints = {s: _fingerprints(list(ds)) for s, ds in splits.items()}
    assert all(len(p) == 2000 for p in prints.values())
    assert not prints["train"] & prints["val"] and not prints["train"] & prints["test"]
    assert not prints["val"] & prints["test"]
    ids = np.arange(50)
    for f in range(len(_SIZES)):  # ... of the same planted model
        np.testing.assert_array_equal(
            splits["train"].latent(f, ids % _SIZES[f]), splits["test"].latent(f, ids % _SIZES[f])
        )


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_take_disjoint_slices_of_each_global_batch(shuffle: bool) -> None:
    kw = dict(seed=1, shuffle=shuffle, shuffle_seed=5, drop_last=True)
    whole = PlantedCTR(1000, 64, _SIZES, **kw)  # type: ignore[arg-type]
    ranks = [PlantedCTR(1000, 32, _SIZES, rank=r, world_size=2, **kw) for r in (0, 1)]  # type: ignore[arg-type]
    for ds in (whole, *ranks):
        ds.set_epoch(3)
    w, r0, r1 = list(whole), list(ranks[0]), list(ranks[1])
    assert len(w) == len(r0) == len(r1) == 1000 // 64 == len(ranks[1])
    assert not _fingerprints(r0) & _fingerprints(r1)
    for big, a, b in zip(w, r0, r1):
        for x, y, z in zip(_rows([big]), _rows([a]), _rows([b])):
            assert torch.equal(x, torch.cat([y, z]))
    # without drop_last the ranks cover every row exactly once (rank_slice semantics for the short last batch)
    eval_ranks = [PlantedCTR(1001, 100, _SIZES, seed=1, rank=r, world_size=3) for r in range(3)]
    seen = [p for ds in eval_ranks for p in _fingerprints(list(ds))]
    assert len(seen) == len(set(seen)) == 1001
    assert set(seen) == _fingerprints(list(PlantedCTR(1001, 1001, _SIZES, seed=1)))


def test_epochs_reorder_the_same_rows() -> None:
    ds = PlantedCTR(640, 64, _SIZES, seed=2, shuffle=True, shuffle_seed=9, drop_last=True)
    ds.set_epoch(0)
    e0 = list(ds)
    ds.set_epoch(1)
    e1 = list(ds)
    assert _fingerprints(e0) == _fingerprints(e1) and len(_fingerprints(e0)) == 640
    assert not torch.equal(_rows(e0)[1], _rows(e1)[1])
    ds.set_epoch(0)
    assert _same(e0, list(ds))


def _zipf_mass(k: np.ndarray, n: int, a: float) -> np.ndarray:
    """P(rank k) of the documented sampler: the mass of [k + 1, k + 2) under density x**-a on [1, n + 1)."""
    return ((k + 1.0) ** (1 - a) - (k + 2.0) ** (1 - a)) / (1.0 - (n + 1.0) ** (1 - a))


def test_zipf_popularity() -> None:
    n, rows = 100_000, 400_000
    ds = PlantedCTR(rows, 4096, [n, n], seed=4, zipf_exponent=[1.05, 1.4])
    counts = ds.id_counts()
    for f, a in enumerate((1.05, 1.4)):
        ids, c = counts[f"cat_{f}"]
        assert c.sum() == rows
        by_id = dict(zip(ids.tolist(), c.tolist()))
        top, hundredth = (by_id.get(int(i), 0) for i in ds.id_of_rank(f, np.array([0, 99])))
        expected = rows * _zipf_mass(np.array([0, 99]), n, a)
        assert top == c.max()  # rank 0 is the most frequent id
        # Poisson counts: within 4 standard deviations of the expected counts
        assert abs(top - expected[0]) < 4 * np.sqrt(expected[0]), (a, top, expected[0])
        assert abs(hundredth - expected[1]) < 4 * np.sqrt(expected[1]), (a, hundredth, expected[1])
        assert top / hundredth > 50  # heavy head: rank 1 vs rank 100
    # ranks and ids are a bijection
    k = np.arange(0, n, 37)
    np.testing.assert_array_equal(ds.rank_of_id(0, ds.id_of_rank(0, k)), k)
    assert len(np.unique(ds.id_of_rank(0, np.arange(n)))) == n


def test_id_counts_match_the_batches() -> None:
    ds = PlantedCTR(3000, 256, _SIZES, seed=6, num_clusters=5)
    _, ids, _ = _rows(list(ds))
    counts = ds.id_counts(block=1000)
    for f, name in enumerate(ds.feature_names):
        want = torch.bincount(ids[:, f], minlength=_SIZES[f]).numpy()
        got = np.zeros(_SIZES[f], dtype=np.int64)
        got[counts[name][0]] = counts[name][1]
        np.testing.assert_array_equal(got, want)
    assert ds.id_counts(100)["cat_0"][1].sum() == 100


def test_bayes_auc_is_exact() -> None:
    rng = np.random.default_rng(0)
    z = np.round(rng.normal(0.0, 1.5, 300), 1)  # with ties
    p = 1 / (1 + np.exp(-z))
    num = den = 0.0
    for i in range(len(z)):  # brute force over ordered pairs (positive i, negative j != i)
        for j in range(len(z)):
            if i != j:
                w = p[i] * (1 - p[j])
                den += w
                num += w * (1.0 if z[i] > z[j] else 0.5 if z[i] == z[j] else 0.0)
    assert bayes_auc(z) == pytest.approx(num / den, abs=1e-12)
    assert bayes_auc(torch.from_numpy(z)) == pytest.approx(num / den, abs=1e-12)
    # the mean empirical AUC of the logits over label draws converges to it
    z = rng.normal(0.0, 1.5, 4000)
    p = torch.from_numpy(1 / (1 + np.exp(-z)))
    gen = torch.Generator().manual_seed(0)
    aucs = [
        binary_auroc(torch.from_numpy(z), (torch.rand(4000, generator=gen, dtype=torch.float64) < p).long())
        for _ in range(200)
    ]
    assert float(torch.stack(aucs).mean()) == pytest.approx(bayes_auc(z), abs=0.002)
    logloss = -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    assert bayes_logloss(z) == pytest.approx(float(logloss), rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        bayes_auc(np.zeros(1))


@pytest.mark.parametrize("clusters", [0, 4])
def test_pairwise_interactions_have_the_planted_rank(clusters: int) -> None:
    r = 6
    ds = PlantedCTR(1, 1, [500, 400, 50], seed=5, latent_rank=r, num_clusters=clusters)
    a, b = np.arange(0, 500, 9), np.arange(0, 400, 7)
    grid = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
    ids = torch.from_numpy(np.concatenate([grid, np.full((len(grid), 1), 3)], axis=1))
    dense = torch.ones(len(grid), 13)
    logits = ds.planted_logits(dense, ids).numpy().reshape(len(a), len(b))
    # double centering removes the per-id terms (biases, interactions with the fixed feature): <v_0(i), v_1(j)> left
    centered = logits - logits.mean(0, keepdims=True) - logits.mean(1, keepdims=True) + logits.mean()
    s = np.linalg.svd(centered, compute_uv=False)
    assert s[r - 1] > 1e-3 * s[0] and s[r] < 1e-9 * s[0], s[: r + 2]
    v = ds.latent(0, np.arange(500))
    assert v.shape == (500, r)
    if not clusters:
        assert abs(float(v.var()) - 1.0) < 0.1


def test_clusters_share_latent_directions_and_contexts() -> None:
    r, c = 64, 8
    ds = PlantedCTR(20_000, 4096, [4000, 4000], seed=2, latent_rank=r, num_clusters=c, cluster_share=0.5)
    ids = np.arange(4000)
    v = ds.latent(0, ids)
    cluster = ds.rank_of_id(0, ids) % c
    cos = (v @ v.T) / r
    same = cluster[:, None] == cluster[None, :]
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    assert abs(float(cos[same & off_diagonal].mean()) - 0.5) < 0.1  # the centroid's share of the variance
    assert abs(float(cos[~same].mean())) < 0.1
    # a row's features draw from the row segment's cluster half the time (cluster_affinity=0.5): the clusters of
    # co-occurring ids agree far more often than the 1/8 of independent draws
    _, pair, _, _ = ds.sample(np.arange(20_000))
    agree = np.mean(ds.rank_of_id(0, pair[:, 0]) % c == ds.rank_of_id(1, pair[:, 1]) % c)
    assert agree > 0.3, agree
    assert np.mean(ds.rank_of_id(0, pair[:, 0]) % c == ds.rank_of_id(1, pair[::-1, 1]) % c) < 0.2


def test_calibrated_scorer_reaches_the_bayes_auc() -> None:
    kw = dict(seed=9, latent_rank=8, base_ctr=0.2)
    train = PlantedCTR(120_000, 4096, _SIZES, split="train", **kw)  # type: ignore[arg-type]
    test = PlantedCTR(60_000, 4096, _SIZES, split="test", **kw)  # type: ignore[arg-type]
    _, _, y, z = train.sample(np.arange(120_000))
    assert abs(float(y.mean()) - 0.2) < 0.01  # the intercept is solved for the click rate
    # logistic regression of the labels on the planted logit (Newton): slope 1, intercept 0 if labels follow it
    x = np.stack([np.ones_like(z), z], axis=1)
    beta = np.zeros(2)
    for _ in range(25):
        p = 1 / (1 + np.exp(-x @ beta))
        beta += np.linalg.solve(x.T @ (x * (p * (1 - p))[:, None]), x.T @ (y - p))
    assert abs(beta[0]) < 0.05 and abs(beta[1] - 1) < 0.05, beta
    _, _, yt, zt = test.sample(np.arange(60_000))
    auc = float(binary_auroc(torch.from_numpy(beta[0] + beta[1] * zt), torch.from_numpy(yt).long()))
    ceiling = test.ceiling()
    assert ceiling["num_rows"] == 60_000 and 0.7 < ceiling["bayes_auc"] < 0.9
    assert auc == pytest.approx(ceiling["bayes_auc"], abs=0.008)  # ~3 standard errors at 60k rows
    # a scorer that knows the logit only up to noise stays clearly below it
    noisy = zt + np.random.default_rng(0).normal(0.0, 1.0, zt.shape)
    assert float(binary_auroc(torch.from_numpy(noisy), torch.from_numpy(yt).long())) < ceiling["bayes_auc"] - 0.03


def test_bad_arguments() -> None:
    for kwargs, match in [
        (dict(num_embeddings_per_feature=[0, 5]), "sizes"),
        (dict(zipf_exponent=[1.0]), "zipf_exponent"),
        (dict(split="dev"), "split"),
        (dict(latent_rank=0), "latent_rank"),
        (dict(num_clusters=10), "num_clusters"),
        (dict(cluster_share=1.5), "cluster_share"),
        (dict(bias_signal=-1.0), "signal"),
        (dict(rank=2, world_size=2), "rank"),
    ]:
        full = {"num_embeddings_per_feature": [8, 9], **kwargs}
        with pytest.raises(ValueError, match=match):
            PlantedCTR(10, 2, **full)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_rows"):
        PlantedCTR(10, 2, [8, 9]).sample(np.array([10]))


def test_recipe_data_section() -> None:
    assert DATASETS["planted"] is PlantedData
    cfg = DataConfig.from_config_dict(
        {"name": "planted", "num_features": 3, "num_embeddings": 1000, "train_rows": 1000, "eval_rows": 300}, "data"
    )
    assert isinstance(cfg, PlantedData) and cfg.table_sizes() == {"cat_0": 1000, "cat_1": 1000, "cat_2": 1000}
    train = cfg.batches("train", 64, rank=1, world_size=2, train=True, seed=0)
    assert train.has_len() and len(train) == 1000 // 128
    train.set_epoch(2)
    assert len(list(train)) == 7
    val = cfg.batches("val", 64, rank=0, world_size=1, train=False, seed=0)
    assert sum(len(b.labels) for b in val) == 300
    ceiling = cfg.dataset("test").ceiling()
    assert ceiling["num_rows"] == 300
    for override, key in [
        ({"zipf_exponents": [1.0, 1.1]}, "data.zipf_exponents"),
        ({"num_clusters": 5000}, "data.num_clusters"),
        ({"num_embeddings": 0}, "data.num_embeddings"),
        ({"cluster_affinity": 2.0}, "data.cluster_affinity"),
    ]:
        with pytest.raises(ConfigError, match=key):
            from_dict(PlantedData, {"num_features": 3, "num_embeddings": 1000, **override}, "data")


@pytest.mark.slow
def test_dlrm_recipe_learns_the_planted_model(tmp_path: Path) -> None:
    sets = [
        "data.num_features=4",
        "data.num_embeddings_per_feature=null",
        "data.num_embeddings=3000",
        "data.latent_rank=4",
        "data.train_rows=65536",
        "data.eval_rows=16384",
        "model.embedding_dim=8",
        "model.dense_arch_layer_sizes=[16, 8]",
        "model.over_arch_layer_sizes=[32, 1]",
        "train.batch_size=512",
        "train.epochs=2",
        "eval.batch_size=4096",
        f"output.dir={tmp_path}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "examples/dlrm/train.py", "--config", "planted_stock", "--set"]
    proc = subprocess.run(cmd + sets, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    final = json.loads((tmp_path / "results.json").read_text())["final"]
    data = from_dict(PlantedData, {s.split("=")[0][5:]: json.loads(s.split("=")[1]) for s in sets[:6]}, "data")
    ceiling = data.dataset("test").ceiling()
    assert final["split"] == "test" and final["num_samples"] == 16384
    assert 0.6 < final["auc"] <= ceiling["bayes_auc"] + 0.01, (final["auc"], ceiling)
