# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""World-size-independent hashing of entity ids onto shared rows.

Ids ``i`` in ``[0, n)`` are first scrambled by a fixed bijection of ``[0, n_pad)`` (``n_pad`` = ``n`` rounded up to a
multiple of the bucket count ``B``), so that ids sorted by frequency do not pile onto one shard. The scrambled id ``s``
belongs to bucket ``b(s) = s // (n_pad / B)`` and maps to a row inside bucket ``b``'s block of ``m / B`` shared rows::

    h(s) = b(s) * (m / B) + mix(s) mod (m / B)

Because ``B`` is fixed by the table's config, never by the world size, a checkpoint can be resharded; and when ``W | B``
and ``B | m``, TorchRec's row-wise split of the shared table lines up with the raw-id split of the entity weights, so a
rank owns both ``w[s]`` and ``U[h(s)]`` for every id it receives.

All arithmetic stays below 2**62 in int64, so CPU and CUDA give bit-identical results.
"""

import math
from dataclasses import dataclass
from typing import Tuple, Union

import torch

# A Mersenne prime; (x mod P) * A < 2**62 for A < P keeps every product inside int64.
_P: int = 2**31 - 1
_MIX_A1: int = 1_103_515_245
_MIX_A2: int = 1_664_525_125 % _P
_MIX_C: int = 1_013_904_223
_LOW_BITS: int = 30
# Scramble multipliers are drawn below this bound so that a * (n_pad - 1) + c < 2**62.
_MAX_NPAD: int = 2**40


IntOrTensor = Union[int, torch.Tensor]


def mix(x: torch.Tensor, salt: int | torch.Tensor = 0) -> torch.Tensor:
    """A 2-universal-style hash of non-negative int64 values ``< 2**61`` into ``[0, P)``, ``P = 2**31 - 1``.

    ``salt`` (a non-negative int, or an int64 tensor broadcastable with ``x``) selects one function of the family.
    """
    lo = torch.bitwise_and(x, (1 << _LOW_BITS) - 1)
    hi = torch.bitwise_right_shift(x, _LOW_BITS) % _P
    a1, a2, c = mix_params(salt)
    return ((lo % _P) * a1 % _P + hi * a2 % _P + c) % _P


def mix_params(salt: int | torch.Tensor) -> Tuple[IntOrTensor, IntOrTensor, IntOrTensor]:
    """``(a1, a2, c)`` of ``mix`` for ``salt``: ``mix(x) = ((x mod 2**30) * a1 + (x >> 30) * a2 + c) mod P``."""
    return (_MIX_A1 + 2 * salt) % (_P - 1) + 1, (_MIX_A2 + 7 * salt) % (_P - 1) + 1, (_MIX_C + salt) % _P


def scramble(ids: torch.Tensor, a: IntOrTensor, c: IntOrTensor, n_pad: IntOrTensor) -> torch.Tensor:
    """``(a * i + c) mod n_pad``; the parameters may be per-value int64 tensors (several tables at once)."""
    return (ids.to(torch.int64) * a + c) % n_pad


def bucketed_rows(scrambled: torch.Tensor, ids_per_bucket: IntOrTensor, rows_per_bucket: IntOrTensor) -> torch.Tensor:
    """``b(s) * (m / B) + mix(s) mod (m / B)`` with ``b(s) = s // (n_pad / B)``; parameters may be per-value tensors."""
    bucket = torch.div(scrambled, ids_per_bucket, rounding_mode="floor")
    return bucket * rows_per_bucket + mix(scrambled) % rows_per_bucket


def _scramble_multiplier(n_pad: int) -> int:
    """An odd multiplier coprime with ``n_pad`` and small enough that ``a * n_pad`` fits in 2**62."""
    a = min(2_654_435_761, (2**62) // max(n_pad, 1) - 1)
    a = max(a, 1)
    while math.gcd(a, n_pad) != 1:
        a -= 1
    return a


@dataclass(frozen=True)
class BucketedHash:
    """The hash of one table: ``n`` logical ids onto ``num_rows`` shared rows in ``num_buckets`` aligned blocks.

    Args:
        num_embeddings (int): logical id space ``n``; ids must lie in ``[0, n)``.
        num_rows (int): shared rows ``m``; a multiple of ``num_buckets``.
        num_buckets (int): fixed bucket count ``B`` (``B <= n``); row-wise sharding needs ``world_size | B``.
    """

    num_embeddings: int
    num_rows: int
    num_buckets: int

    def __post_init__(self) -> None:
        if self.num_buckets < 1 or self.num_rows % self.num_buckets != 0:
            raise ValueError(f"num_rows={self.num_rows} must be a positive multiple of num_buckets={self.num_buckets}")
        if self.num_buckets > self.num_embeddings:
            raise ValueError(f"num_buckets={self.num_buckets} exceeds num_embeddings={self.num_embeddings}")
        if self.padded_num_embeddings > _MAX_NPAD:
            raise ValueError(f"num_embeddings={self.num_embeddings} exceeds the supported 2**40")

    @property
    def padded_num_embeddings(self) -> int:
        """``n_pad``: ``n`` rounded up to a multiple of ``B``; the length of the scrambled id space."""
        return -(-self.num_embeddings // self.num_buckets) * self.num_buckets

    @property
    def ids_per_bucket(self) -> int:
        return self.padded_num_embeddings // self.num_buckets

    @property
    def rows_per_bucket(self) -> int:
        return self.num_rows // self.num_buckets

    @property
    def scramble_params(self) -> Tuple[int, int]:
        """``(a, c)`` of the scramble ``s = (a * i + c) mod n_pad``."""
        n_pad = self.padded_num_embeddings
        return _scramble_multiplier(n_pad), (n_pad // 3) | 1

    def scramble(self, ids: torch.Tensor) -> torch.Tensor:
        """The fixed bijection ``s = (a * i + c) mod n_pad`` with ``gcd(a, n_pad) = 1`` (int64 out)."""
        a, c = self.scramble_params
        return scramble(ids, a, c, self.padded_num_embeddings)

    def rows_of_scrambled(self, scrambled: torch.Tensor) -> torch.Tensor:
        """Shared-table row of each scrambled id: its bucket's block, then ``mix`` inside the block."""
        return bucketed_rows(scrambled, self.ids_per_bucket, self.rows_per_bucket)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Shared-table row ``h(scramble(i))`` of each raw id (int64 out)."""
        return self.rows_of_scrambled(self.scramble(ids))


def default_num_buckets(num_rows: int, num_embeddings: int, max_buckets: int = 1024, min_rows: int = 64) -> int:
    """Largest power of two ``<= max_buckets`` leaving at least ``min_rows`` shared rows per bucket (at least 1)."""
    b = 1
    while b * 2 <= max_buckets and b * 2 * min_rows <= num_rows and b * 2 <= num_embeddings:
        b *= 2
    return b
