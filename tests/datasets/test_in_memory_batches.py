# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""InMemoryBatches: rank sharding, drop_last, shuffling."""

from typing import List

import numpy as np
import pytest
import torch
from torchrec.datasets.utils import Batch

from torchrec_memcom.datasets import InMemoryBatches
from torchrec_memcom.datasets._batching import single_id_kjt


def _make(rows: np.ndarray) -> Batch:
    return Batch(
        dense_features=torch.zeros(len(rows), 1),
        sparse_features=single_id_kjt(["row"], [rows]),
        labels=torch.from_numpy(rows.astype(np.float32)),
    )


def _rows(batches: InMemoryBatches) -> List[List[int]]:
    return [b.labels.long().tolist() for b in batches]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_last_equal_disjoint(world_size: int, shuffle: bool) -> None:
    n, bs = 103, 8
    per_rank = [
        _rows(InMemoryBatches(n, _make, bs, shuffle=shuffle, seed=5, drop_last=True, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    expected = n // (bs * world_size)
    for r, batches in enumerate(per_rank):
        assert len(batches) == expected
        assert len(InMemoryBatches(n, _make, bs, drop_last=True, rank=r, world_size=world_size)) == expected
        assert all(len(b) == bs for b in batches)
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen)) == expected * bs * world_size
    if not shuffle:  # rank r holds slice r of every global batch
        assert per_rank[-1][0] == list(range((world_size - 1) * bs, world_size * bs))


def test_no_drop_last_covers_all_rows() -> None:
    n, bs, ws = 21, 4, 2
    per_rank = [_rows(InMemoryBatches(n, _make, bs, shuffle=True, seed=1, rank=r, world_size=ws)) for r in range(ws)]
    assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(n))
    assert [len(b) for b in per_rank[0]] == [4, 4, 3] and [len(b) for b in per_rank[1]] == [4, 4, 2]
    assert [len(InMemoryBatches(n, _make, bs, rank=r, world_size=ws)) for r in range(ws)] == [3, 3]


def test_shuffle_seed_and_epoch() -> None:
    a = InMemoryBatches(50, _make, 10, shuffle=True, seed=3)
    b = InMemoryBatches(50, _make, 10, shuffle=True, seed=3)
    assert _rows(a) == _rows(b) != _rows(InMemoryBatches(50, _make, 10, shuffle=False))
    first = _rows(a)
    a.set_epoch(1)
    assert _rows(a) != first
    assert sorted(sum(_rows(a), [])) == list(range(50))


def test_bad_rank() -> None:
    with pytest.raises(ValueError):
        InMemoryBatches(10, _make, 2, rank=2, world_size=2)
    with pytest.raises(ValueError):
        InMemoryBatches(10, _make, 0)


def test_single_id_batches_carry_their_length_per_key() -> None:
    kjt = single_id_kjt(["a", "b"], [np.array([3, 1, 2]), np.array([0, 0, 5])])
    assert kjt.length_per_key_or_none() == [3, 3] == kjt.lengths().view(2, -1).sum(1).tolist()
    assert kjt["b"].values().tolist() == [0, 0, 5]
