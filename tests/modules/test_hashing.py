# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The world-size-independent bucketed hash: bijective scramble, bucket co-location, balance, stability."""

import math
from typing import List

import pytest
import torch

from torchrec_memcom.hashing import BucketedHash, default_num_buckets, mix

# (n, m, B): several sizes, bucket counts from 1 to 1024, n not a multiple of B (padding) included.
SHAPES = [(1, 1, 1), (7, 3, 1), (10, 6, 3), (100, 16, 8), (997, 40, 4), (1000, 64, 64), (4096, 2048, 1024)]

# The documented hash, in Python integers (no overflow possible), with its constants written out: these pin the
# function, since a checkpoint's shared rows are only valid for the hash they were trained with.
P = 2**31 - 1


def ref_mix(x: int, salt: int = 0) -> int:
    a1 = (1_103_515_245 + 2 * salt) % (P - 1) + 1
    a2 = (1_664_525_125 % P + 7 * salt) % (P - 1) + 1
    return ((x & (2**30 - 1)) * a1 + (x >> 30) * a2 + 1_013_904_223 + salt) % P


def ref_scramble(i: int, n_pad: int) -> int:
    a = min(2_654_435_761, 2**62 // n_pad - 1)
    while math.gcd(a, n_pad) != 1:
        a -= 1
    return (a * i + ((n_pad // 3) | 1)) % n_pad


def ref_rows(ids: List[int], n: int, m: int, b: int) -> List[int]:
    n_pad = -(-n // b) * b
    out = []
    for i in ids:
        s = ref_scramble(i, n_pad)
        out.append(s // (n_pad // b) * (m // b) + ref_mix(s) % (m // b))
    return out


@pytest.mark.parametrize("n,m,b", SHAPES)
def test_scramble_is_a_bijection_of_the_padded_range(n: int, m: int, b: int) -> None:
    h = BucketedHash(num_embeddings=n, num_rows=m, num_buckets=b)
    n_pad = h.padded_num_embeddings
    assert n_pad % b == 0 and n <= n_pad < n + b
    s = h.scramble(torch.arange(n_pad))
    assert s.dtype == torch.int64
    assert torch.equal(torch.sort(s).values, torch.arange(n_pad))


@pytest.mark.parametrize("n,m,b", SHAPES)
def test_rows_lie_in_their_buckets_block(n: int, m: int, b: int) -> None:
    h = BucketedHash(num_embeddings=n, num_rows=m, num_buckets=b)
    ids = torch.arange(n)
    rows = h(ids)
    assert rows.dtype == torch.int64
    assert int(rows.min()) >= 0 and int(rows.max()) < m
    bucket = h.scramble(ids) // (h.padded_num_embeddings // b)
    assert torch.equal(rows // (m // b), bucket)
    assert torch.equal(h.rows_of_scrambled(h.scramble(ids)), rows)


@pytest.mark.parametrize("n,m,b", [(1000, 64, 64), (4096, 2048, 1024), (100, 16, 8)])
@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_row_wise_split_of_rows_lines_up_with_split_of_scrambled_ids(n: int, m: int, b: int, world_size: int) -> None:
    """With ``W | B``, the rank owning ``w[s(i)]`` (even split of ``n_pad``) owns ``U[h(i)]`` (even split of ``m``)."""
    h = BucketedHash(num_embeddings=n, num_rows=m, num_buckets=b)
    ids = torch.arange(n)
    rank_of_weight = h.scramble(ids) // (h.padded_num_embeddings // world_size)
    rank_of_row = h(ids) // (m // world_size)
    assert torch.equal(rank_of_weight, rank_of_row)


def test_matches_the_documented_formula_in_python_integers() -> None:
    for n, m, b in SHAPES:
        ids = list(range(n))
        assert h_list(n, m, b, ids) == ref_rows(ids, n, m, b)
    # Ids near 2**40 (the largest supported n) stay exact: no int64 overflow.
    big = [0, 1, 2**39 + 12_345, 2**40 - 2, 2**40 - 1]
    assert h_list(2**40, 1024, 1024, big) == ref_rows(big, 2**40, 1024, 1024)
    x = [0, 1, 2**30 - 1, 2**30, 2**45 + 7, 2**61 - 1]
    for salt in (0, 1, 3, 1000):
        assert mix(torch.tensor(x), salt=salt).tolist() == [ref_mix(v, salt) for v in x]


def h_list(n: int, m: int, b: int, ids: List[int]) -> List[int]:
    return BucketedHash(num_embeddings=n, num_rows=m, num_buckets=b)(torch.tensor(ids)).tolist()


def test_pinned_values() -> None:
    """Fixed outputs: changing the hash silently invalidates every trained checkpoint."""
    ids = torch.tensor([0, 1, 2, 3, 99, 500, 999])
    h = BucketedHash(num_embeddings=1000, num_rows=64, num_buckets=4)
    assert h.scramble(ids).tolist() == [333, 94, 855, 616, 672, 833, 572]
    assert h(ids).tolist() == [16, 3, 56, 44, 40, 57, 45]
    assert BucketedHash(1000, 1000, 1)(ids).tolist() == [504, 291, 520, 660, 320, 225, 717]
    big = BucketedHash(num_embeddings=2**40, num_rows=1024, num_buckets=1024)
    assert big(torch.tensor([0, 2**40 - 1, 2**39 + 12345])).tolist() == [341, 341, 901]
    assert mix(torch.tensor([0, 1, 2**30, 2**61 - 1])).tolist() == [1013904223, 2117419469, 530945702, 462146600]


def test_elementwise_and_independent_of_batching_dtype_and_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each id's row depends on the id and the table only: not on the batch, its split, the dtype or the world."""
    h = BucketedHash(num_embeddings=1000, num_rows=64, num_buckets=4)
    ids = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    full = h(ids)
    for world_size in (2, 4, 8):
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(world_size))
        parts = [h(chunk) for chunk in ids.chunk(world_size)]
        assert torch.equal(torch.cat(parts), full)
    assert torch.equal(h(ids.to(torch.int32)), full)
    assert torch.equal(h(ids.view(10, 100)).view(-1), full)
    assert torch.equal(h(ids.flip(0)), full.flip(0))


def test_deterministic_on_cpu() -> None:
    ids = torch.randint(0, 10_000, (5000,), generator=torch.Generator().manual_seed(1))
    h1 = BucketedHash(num_embeddings=10_000, num_rows=1024, num_buckets=16)
    h2 = BucketedHash(num_embeddings=10_000, num_rows=1024, num_buckets=16)
    assert torch.equal(h1(ids), h1(ids))
    assert torch.equal(h1(ids), h2(ids))
    assert torch.equal(h1.scramble(ids), h2.scramble(ids))


@pytest.mark.parametrize("n,m,b", [(1000, 64, 4), (4096, 256, 64), (10_000, 1024, 16), (100_000, 4096, 1024)])
@pytest.mark.parametrize("fraction", [1, 4])
def test_sequential_ids_are_balanced_over_buckets(n: int, m: int, b: int, fraction: int) -> None:
    """Sequential ids (all of them, or the first quarter: frequency-sorted hot ids) fill buckets within 2x."""
    h = BucketedHash(num_embeddings=n, num_rows=m, num_buckets=b)
    ids = torch.arange(n // fraction)
    per_bucket = torch.bincount(h.scramble(ids) // h.ids_per_bucket, minlength=b)
    assert int(per_bucket.max()) <= 2 * ids.numel() / b
    rows_per_bucket = torch.bincount(h(ids) // h.rows_per_bucket, minlength=b)
    assert torch.equal(rows_per_bucket, per_bucket)


@pytest.mark.parametrize("n,m,b", [(1000, 64, 4), (4096, 256, 64), (10_000, 1024, 16)])
def test_all_ids_spread_over_all_rows(n: int, m: int, b: int) -> None:
    """Every shared row is used and none takes more than twice its share of the id space."""
    rows = BucketedHash(num_embeddings=n, num_rows=m, num_buckets=b)(torch.arange(n))
    per_row = torch.bincount(rows, minlength=m)
    assert int(per_row.min()) >= 1
    assert int(per_row.max()) <= 2 * n / m


def test_salt_selects_different_functions() -> None:
    x = torch.arange(1000)
    a, b = mix(x, salt=0), mix(x, salt=1)
    assert int(a.min()) >= 0 and int(a.max()) < P
    assert float((a == b).float().mean()) < 0.01
    salts = torch.tensor([0, 1]).repeat(500)
    assert torch.equal(mix(x, salt=salts), torch.where(salts == 0, a, b))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(num_embeddings=100, num_rows=10, num_buckets=4),
            r"num_rows=10 must be a positive multiple of num_buckets=4",
        ),
        (dict(num_embeddings=100, num_rows=10, num_buckets=0), r"num_buckets=0"),
        (dict(num_embeddings=4, num_rows=8, num_buckets=8), r"num_buckets=8 exceeds num_embeddings=4"),
        (dict(num_embeddings=2**40 + 1, num_rows=1, num_buckets=1), r"2\*\*40"),
    ],
)
def test_bad_hash_shapes_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BucketedHash(**kwargs)


@pytest.mark.parametrize("rows,n", [(1, 10), (64, 10), (128, 10_000), (5000, 10_000), (10**6, 10**7), (10**6, 100)])
def test_default_num_buckets(rows: int, n: int) -> None:
    b = default_num_buckets(rows, n)
    assert b >= 1 and b & (b - 1) == 0
    assert b <= 1024 and b <= max(n, 1)
    assert b == 1 or rows // b >= 64
    # The largest such power of two.
    assert 2 * b > 1024 or 2 * b > n or rows // (2 * b) < 64
