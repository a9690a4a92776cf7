# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The ranking protocol's user-history feature: exact bags on a hand-made dataset (ties, truncation, empty bags),
and no leakage on the real MovieLens-1M (against per-user sequences rebuilt from the raw ratings)."""

from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

from tests.datasets.test_movielens import needs_ml1m
from torchrec_memcom.datasets import HISTORY_FEATURE, MovieLens1M, MovieLensRanking, load_movielens_1m
from torchrec_memcom.datasets.movielens import USER_FEATURES

# (user, movie, timestamp); user 0 has a time tie at 5 (movie 3 before movie 4 by id).
_RATINGS: List[Tuple[int, int, int]] = [
    (0, 3, 5),
    (0, 1, 2),
    (1, 0, 4),
    (0, 4, 5),
    (0, 0, 9),
    (1, 5, 1),
    (0, 2, 1),
    (1, 2, 8),
    (0, 5, 7),
]
# user 0 by (time, movie): 2, 1, 3, 4 | val 5 | test 0; user 1: 5 | val 0 | test 2


def _tiny() -> MovieLens1M:
    users, movies, ts = (np.array(c, dtype=np.int64) for c in zip(*_RATINGS))
    ro = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    return MovieLens1M(
        source="tiny",
        user=users,
        movie=movies,
        rating=np.full(len(users), 4, dtype=np.int8),
        timestamp=ts,
        gender=ro([0, 1]),
        age=ro([0, 1]),
        occupation=ro([0, 1]),
        zip=ro([0, 1]),
        year=np.full(6, 1990.0),
        genre_offsets=ro(range(7)),
        genre_ids=ro([0] * 6),
        vocabularies={
            "user": ("a", "b"),
            "movie": tuple("m0 m1 m2 m3 m4 m5".split()),
            "gender": ("F", "M"),
            "age": ("1", "18"),
            "occupation": ("0", "1"),
            "zip": ("z0", "z1"),
            "genres": ("Drama",),
        },
    )


def _bags(values: np.ndarray, lengths: np.ndarray) -> List[List[int]]:
    ends = np.cumsum(lengths)
    return [values[e - n : e].tolist() for e, n in zip(ends, lengths)]


def test_exact_bags_with_ties_and_truncation() -> None:
    r = MovieLensRanking(_tiny(), history_length=2)
    assert r.train_items.tolist() == [2, 1, 3, 4, 5]  # the protocol itself is unchanged by the option
    assert r.targets("val").tolist() == [5, 0] and r.targets("test").tolist() == [0, 2]
    # train pair j's history: at most 2 train items before it, oldest first; the user's first pair has none
    assert _bags(*r.train_history(np.arange(5))) == [[], [2], [2, 1], [1, 3], []]
    assert _bags(*r.query_history(np.array([0, 1]))) == [[3, 4], [5]]  # the last 2 train items, no held-out item
    long = MovieLensRanking(_tiny(), history_length=50)
    assert _bags(*long.train_history(np.arange(5))) == [[], [2], [2, 1], [2, 1, 3], []]
    assert _bags(*long.query_history(np.array([1, 0]))) == [[5], [2, 1, 3, 4]]


def test_batches_and_features_carry_the_history() -> None:
    r = MovieLensRanking(_tiny(), history_length=2)
    assert r.feature_names == [*USER_FEATURES, HISTORY_FEATURE, "movie", "genres"]
    assert r.num_embeddings_per_feature[HISTORY_FEATURE] == 6
    (b,) = list(r.train_batches(5, shuffle=False, drop_last=False))
    kjt = b.sparse_features
    assert kjt.keys() == r.feature_names and kjt.stride() == 5
    assert _bags(kjt["history"].values().numpy(), kjt["history"].lengths().numpy()) == [[], [2], [2, 1], [1, 3], []]
    assert kjt["movie"].values().tolist() == [2, 1, 3, 4, 5]
    # per-feature counts from the host (no device read after the copy), equal to the lengths' sums, multi-hot too
    counts = kjt.lengths().view(len(kjt.keys()), -1).sum(1).tolist()
    assert kjt.length_per_key_or_none() == counts and counts[kjt.keys().index("history")] == 5
    assert kjt.to(torch.device("meta")).length_per_key_or_none() == counts  # KJT.to keeps them
    shuffled = next(iter(r.train_batches(5, shuffle=True, seed=1, drop_last=False))).sparse_features
    rows = {m: h for m, h in zip(kjt["movie"].values().tolist(), _bags(*r.train_history(np.arange(5))))}
    got = _bags(shuffled["history"].values().numpy(), shuffled["history"].lengths().numpy())
    assert [rows[m] for m in shuffled["movie"].values().tolist()] == got  # each pair keeps its own history
    users = r.user_features(torch.tensor([1, 0]))
    assert users.keys() == [*USER_FEATURES, HISTORY_FEATURE] and users["history"].values().tolist() == [5, 3, 4]
    plain = MovieLensRanking(_tiny())
    assert plain.feature_names == [*USER_FEATURES, "movie", "genres"]
    assert next(iter(plain.train_batches(5, shuffle=False))).sparse_features.keys() == plain.feature_names


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_history_length(bad: object) -> None:
    with pytest.raises(ValueError, match="history_length"):
        MovieLensRanking(_tiny(), history_length=bad)  # type: ignore[arg-type]


def _sequences(ml: MovieLens1M, users: np.ndarray) -> Dict[int, List[Tuple[int, int]]]:
    """Each user's (timestamp, movie) interactions in the protocol's order, rebuilt from the raw ratings."""
    return {int(u): sorted(zip(ml.timestamp[ml.user == u].tolist(), ml.movie[ml.user == u].tolist())) for u in users}


@needs_ml1m
def test_no_leakage_on_movielens_1m() -> None:
    ml = load_movielens_1m()
    h = 50
    r = MovieLensRanking(ml, history_length=h)
    users = np.random.default_rng(0).choice(r.num_users, 40, replace=False)
    seqs = _sequences(ml, users)
    val, test = r.targets("val").numpy(), r.targets("test").numpy()
    train_users = r.train_users.numpy()
    queries = _bags(*r.query_history(users))
    for u, query in zip(users.tolist(), queries):
        seq = seqs[u]
        train = [m for _, m in seq[:-2]]
        assert (seq[-2][1], seq[-1][1]) == (val[u], test[u])
        assert query == train[-h:]  # the whole (truncated) train history, nothing held out
        assert val[u] not in query and test[u] not in query
        rows = np.flatnonzero(train_users == u)
        bags = _bags(*r.train_history(rows))
        for j, (row, bag) in enumerate(zip(rows, bags)):
            assert int(r.train_items[row]) == train[j]
            assert bag == train[max(0, j - h) : j]  # only earlier items of the same user, at most h
    # every train bag over the whole data: length min(position, h), never the pair's own item
    values, lengths = r.train_history(np.arange(len(train_users)))
    position = np.arange(len(train_users)) - np.searchsorted(train_users, train_users)
    assert np.array_equal(lengths, np.minimum(position, h))
    owner = np.repeat(np.arange(len(train_users)), lengths)
    assert not np.any(values == r.train_items.numpy()[owner])
