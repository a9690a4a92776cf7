# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Table configs of the compressed embedding-bag collections.

Each config extends TorchRec's ``EmbeddingBagConfig``: ``num_embeddings`` (n) and ``embedding_dim`` (d) stay the
*logical* table, exactly as for a stock table, and the new fields say how to compress it. Every config takes either a
``compression_ratio`` (stock fp32 bytes / our bytes, counting everything that scales with n) or an explicit physical
size, never both; ``layout()``-style methods solve for the physical sizes, and ``__post_init__`` validates eagerly so a
bad config fails where it is written.
"""

import math
import numbers
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, data_type_to_dtype

from torchrec_memcom.hashing import BucketedHash, default_num_buckets

__all__ = [
    "ENTITY_WEIGHT_OPTIMIZERS",
    "HashEmbeddingBagConfig",
    "LMAEmbeddingBagConfig",
    "MEmComEmbeddingBagConfig",
    "QREmbeddingBagConfig",
    "LowRankEmbeddingBagConfig",
    "physical_dim",
    "projection_bytes",
    "stock_bytes",
]

_FP32_BYTES = 4
ENTITY_WEIGHT_OPTIMIZERS = (None, "sgd", "adagrad")


def stock_bytes(config: EmbeddingBagConfig) -> int:
    """Bytes of a stock fp32 table of the config's logical ``num_embeddings x embedding_dim``."""
    return config.num_embeddings * config.embedding_dim * _FP32_BYTES


def _element_size(config: EmbeddingBagConfig) -> int:
    return torch.empty((), dtype=data_type_to_dtype(config.data_type)).element_size()


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_sizes(config: EmbeddingBagConfig, kind: str) -> None:
    """Name, ``num_embeddings`` and ``embedding_dim`` of a table, checked before TorchRec divides by them."""
    if not config.name:
        raise ValueError(f"{kind} config needs a table name")
    for field in ("num_embeddings", "embedding_dim"):
        value = getattr(config, field)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{kind} table '{config.name}': {field} must be an integer >= 1, got {value!r}")


def _check_common(
    config: EmbeddingBagConfig, kind: str, ratio: Optional[float], size: Optional[int], size_name: str
) -> None:
    if ratio is not None and not _is_real(ratio):
        raise ValueError(
            f"{kind} table '{config.name}': compression_ratio must be a number, got {ratio!r} ({type(ratio).__name__})"
        )
    if size is not None and not _is_int(size):
        raise ValueError(f"{kind} table '{config.name}': {size_name} must be an integer, got {size!r}")
    if (ratio is None) == (size is None):
        raise ValueError(
            f"{kind} table '{config.name}': give exactly one of compression_ratio and {size_name} "
            f"(got compression_ratio={ratio}, {size_name}={size})"
        )
    if ratio is not None and not (ratio >= 1.0 and math.isfinite(ratio)):
        raise ValueError(f"{kind} table '{config.name}': compression_ratio must be a finite number >= 1, got {ratio}")
    if size is not None and size < 1:
        raise ValueError(f"{kind} table '{config.name}': {size_name} must be >= 1, got {size}")
    if not config.feature_names:
        config.feature_names = [config.name]


def physical_dim(config: EmbeddingBagConfig) -> int:
    """Width of a table's stored rows: its ``base_dim`` if it has one (then a learned ``base_dim x embedding_dim``
    projection gives the ``embedding_dim``-wide output), else ``embedding_dim``."""
    if isinstance(config, LowRankEmbeddingBagConfig):
        return config.rank()
    return getattr(config, "base_dim", None) or config.embedding_dim


def projection_bytes(config: EmbeddingBagConfig) -> int:
    """Bytes of a table's fp32 ``base_dim x embedding_dim`` output projection (0 without one)."""
    base = physical_dim(config)
    return base * config.embedding_dim * _FP32_BYTES if base < config.embedding_dim else 0


def _check_base_dim(config: EmbeddingBagConfig, kind: str) -> None:
    base = getattr(config, "base_dim", None)
    if base is not None and (not _is_int(base) or not 1 <= base < config.embedding_dim):
        raise ValueError(
            f"{kind} table '{config.name}': base_dim must be an integer in [1, embedding_dim={config.embedding_dim}), "
            f"got {base!r}"
        )


def _check_module_dict_key(config: EmbeddingBagConfig, kind: str) -> None:
    """The shared table is named after the logical one, and TorchRec keeps tables in an ``nn.ModuleDict``."""
    if hasattr(nn.ModuleDict(), config.name) or "." in config.name:
        raise ValueError(
            f"{kind} table name '{config.name}' cannot be used: TorchRec keeps tables in an nn.ModuleDict, where it "
            "clashes with an attribute or contains a '.'"
        )


def _check_buckets(config: EmbeddingBagConfig, kind: str, num_buckets: Optional[int]) -> None:
    n = config.num_embeddings
    if num_buckets is not None and (not _is_int(num_buckets) or not 1 <= num_buckets <= n):
        raise ValueError(
            f"{kind} table '{config.name}': num_buckets must be in [1, num_embeddings={n}], got {num_buckets!r}"
        )


def _bucketed_hash(config: EmbeddingBagConfig, kind: str, rows: int, num_buckets: Optional[int]) -> BucketedHash:
    n = config.num_embeddings
    b = num_buckets if num_buckets is not None else default_num_buckets(rows, n)
    if b < 1 or b > n:
        raise ValueError(f"{kind} table '{config.name}': num_buckets must be in [1, num_embeddings={n}], got {b}")
    if rows % b != 0:
        raise ValueError(
            f"{kind} table '{config.name}': num_shared_rows={rows} must be a multiple of num_buckets={b} "
            "(buckets keep the hash independent of the world size)"
        )
    return BucketedHash(num_embeddings=n, num_rows=rows, num_buckets=b)


def _rows_for_budget(budget_bytes: float, bytes_per_row: int, b: int) -> int:
    """Most rows, a multiple of ``b``, that fit in ``budget_bytes`` (0 if not even ``b`` rows fit)."""
    return max(0, int(budget_bytes // bytes_per_row) // b * b)


@dataclass
class MEmComEmbeddingBagConfig(EmbeddingBagConfig):
    """MEmCom table: ``embedding(i) = w[s(i)] * U[h(s(i))]`` (Pansare et al., MLSys 2022).

    ``U`` is a shared ``num_shared_rows x d`` table reached through the bucketed hash ``h`` (see ``hashing``) and
    ``w`` holds one trainable fp32 weight per (scrambled) id ``s(i)``, so memory is ``m*d + n_pad`` elements and the
    ratio can never reach ``d``.

    Args:
        compression_ratio (Optional[float]): stock fp32 bytes / (U + w) bytes; solves for ``num_shared_rows``.
        num_shared_rows (Optional[int]): rows ``m`` of ``U`` (a multiple of ``num_buckets``).
        num_buckets (Optional[int]): fixed bucket count ``B``; default: the largest power of two <= 1024 leaving
            >= 64 rows per bucket. Row-wise sharding over ``W`` ranks needs ``W | B``.
        entity_weight_init (float): initial value of every ``w`` (1.0: training starts as the hashing trick).
        entity_weight_optimizer (Optional[str]): update rule of ``w`` when sharded (fused, in backward): ``"sgd"``
            or ``"adagrad"``; ``None`` follows the shared table's fused optimizer (row-wise Adagrad on a width-1 row
            is Adagrad).
        entity_weight_lr_scale (float): ``w``'s learning rate = the shared table's times this (MEmCom's ``w``
            often wants a larger one; see docs/RESULTS.md).
    """

    compression_ratio: Optional[float] = None
    num_shared_rows: Optional[int] = None
    num_buckets: Optional[int] = None
    entity_weight_init: float = 1.0
    entity_weight_optimizer: Optional[str] = None
    entity_weight_lr_scale: float = 1.0
    base_dim: Optional[int] = None

    def __post_init__(self) -> None:
        check_sizes(self, "MEmCom")
        super().__post_init__()
        _check_base_dim(self, "MEmCom")
        _check_common(self, "MEmCom", self.compression_ratio, self.num_shared_rows, "num_shared_rows")
        _check_module_dict_key(self, "MEmCom")
        _check_buckets(self, "MEmCom", self.num_buckets)
        if self.entity_weight_optimizer not in ENTITY_WEIGHT_OPTIMIZERS:
            raise ValueError(
                f"MEmCom table '{self.name}': entity_weight_optimizer must be one of {ENTITY_WEIGHT_OPTIMIZERS}, "
                f"got {self.entity_weight_optimizer!r}"
            )
        if not _is_real(self.entity_weight_lr_scale) or not (0 < self.entity_weight_lr_scale < math.inf):
            raise ValueError(
                f"MEmCom table '{self.name}': entity_weight_lr_scale must be a finite number > 0, "
                f"got {self.entity_weight_lr_scale!r}"
            )
        if not _is_real(self.entity_weight_init) or not math.isfinite(self.entity_weight_init):
            raise ValueError(
                f"MEmCom table '{self.name}': entity_weight_init must be a finite number, "
                f"got {self.entity_weight_init!r}"
            )
        self.bucketed_hash()

    def bucketed_hash(self) -> BucketedHash:
        """The table's hash, with ``num_shared_rows`` solved from ``compression_ratio`` when needed."""
        if self.num_shared_rows is not None:
            return _bucketed_hash(self, "MEmCom", self.num_shared_rows, self.num_buckets)
        n, d, ratio = self.num_embeddings, physical_dim(self), self.compression_ratio
        assert ratio is not None
        if ratio >= self.embedding_dim:
            raise ValueError(
                f"MEmCom table '{self.name}': compression_ratio={ratio} is not reachable: MEmCom keeps one weight per "
                f"id, so it stays below d={self.embedding_dim}x (use the hashing trick or LMA for more)"
            )
        budget = stock_bytes(self) / ratio - projection_bytes(self)
        row_bytes = d * _element_size(self)
        guess = max(1, int((budget - n * _FP32_BYTES) / row_bytes))
        b = self.num_buckets if self.num_buckets is not None else default_num_buckets(guess, n)
        n_pad = -(-n // b) * b
        rows = _rows_for_budget(budget - n_pad * _FP32_BYTES, row_bytes, b)
        if rows == 0:
            best = stock_bytes(self) / (b * row_bytes + n_pad * _FP32_BYTES + projection_bytes(self))
            raise ValueError(
                f"MEmCom table '{self.name}' (n={n}, d={d}): compression_ratio={ratio} leaves no shared rows after "
                f"the {n_pad * _FP32_BYTES} bytes of entity weights; the most it reaches is {best:.2f}x"
            )
        return _bucketed_hash(self, "MEmCom", rows, b)


@dataclass
class HashEmbeddingBagConfig(EmbeddingBagConfig):
    """Hashing-trick table: ``embedding(i) = U[h(s(i))]`` with MEmCom's bucketed hash and no per-id weight.

    Args:
        compression_ratio (Optional[float]): stock fp32 bytes / U bytes; solves for ``num_shared_rows``.
        num_shared_rows (Optional[int]): rows ``m`` of ``U`` (a multiple of ``num_buckets``).
        num_buckets (Optional[int]): fixed bucket count, as for MEmCom.
    """

    compression_ratio: Optional[float] = None
    num_shared_rows: Optional[int] = None
    num_buckets: Optional[int] = None
    base_dim: Optional[int] = None

    def __post_init__(self) -> None:
        check_sizes(self, "Hash")
        super().__post_init__()
        _check_base_dim(self, "Hash")
        _check_common(self, "Hash", self.compression_ratio, self.num_shared_rows, "num_shared_rows")
        _check_module_dict_key(self, "Hash")
        _check_buckets(self, "Hash", self.num_buckets)
        self.bucketed_hash()

    def bucketed_hash(self) -> BucketedHash:
        """The table's hash, with ``num_shared_rows`` solved from ``compression_ratio`` when needed."""
        if self.num_shared_rows is not None:
            return _bucketed_hash(self, "Hash", self.num_shared_rows, self.num_buckets)
        assert self.compression_ratio is not None
        budget = stock_bytes(self) / self.compression_ratio - projection_bytes(self)
        row_bytes = physical_dim(self) * _element_size(self)
        b = self.num_buckets
        if b is None:
            b = default_num_buckets(max(1, int(budget / row_bytes)), self.num_embeddings)
        rows = _rows_for_budget(budget, row_bytes, b)
        if rows == 0:
            raise ValueError(
                f"Hash table '{self.name}' (n={self.num_embeddings}, d={self.embedding_dim}): "
                f"compression_ratio={self.compression_ratio} leaves no rows; the most it reaches with "
                f"num_buckets={b} is {stock_bytes(self) / (b * row_bytes + projection_bytes(self)):.2f}x"
            )
        return _bucketed_hash(self, "Hash", rows, b)


@dataclass
class QREmbeddingBagConfig(EmbeddingBagConfig):
    """Quotient-remainder table (Shi et al., KDD 2020): ``embedding(i) = Q[i // c] * R[i % c]`` (elementwise).

    Bags follow the authors' ``QREmbeddingBag``: ``pool(Q) * pool(R)``, which equals the per-id product for
    one-hot bags. Per-id input weights scale the Q side only, so a one-hot weighted bag is ``x * Q[i // c] * R[i % c]``.

    Args:
        compression_ratio (Optional[float]): stock fp32 bytes / (Q + R) bytes; solves for ``num_remainder_rows``.
        num_remainder_rows (Optional[int]): ``c``, the rows of ``R``; ``Q`` has ``ceil(n / c)`` rows.
    """

    compression_ratio: Optional[float] = None
    num_remainder_rows: Optional[int] = None
    base_dim: Optional[int] = None

    def __post_init__(self) -> None:
        check_sizes(self, "QR")
        super().__post_init__()
        _check_base_dim(self, "QR")
        _check_common(self, "QR", self.compression_ratio, self.num_remainder_rows, "num_remainder_rows")
        self.remainder_rows()

    def remainder_rows(self) -> int:
        """``c``: given, or the smallest ``c`` with ``ceil(n / c) + c`` rows inside the ratio's budget."""
        n = self.num_embeddings
        if self.num_remainder_rows is not None:
            if self.num_remainder_rows > n:
                raise ValueError(
                    f"QR table '{self.name}': num_remainder_rows={self.num_remainder_rows} exceeds num_embeddings={n}"
                )
            return self.num_remainder_rows
        assert self.compression_ratio is not None
        row_bytes = physical_dim(self) * _element_size(self)
        rows_budget = (stock_bytes(self) / self.compression_ratio - projection_bytes(self)) / row_bytes
        # c = ceil(sqrt(n)) minimises the integer row count ceil(n/c) + c; a budget below it (even one above the
        # real bound 2*sqrt(n)) has no integer c, and the search below would end at c = n (ratio < 1).
        c = math.isqrt(n - 1) + 1 if n > 1 else 1
        if -(-n // c) + c > rows_budget:
            best = stock_bytes(self) / ((-(-n // c) + c) * row_bytes + projection_bytes(self))
            raise ValueError(
                f"QR table '{self.name}' (n={n}, d={self.embedding_dim}): compression_ratio={self.compression_ratio} "
                f"is not reachable; QR needs at least ceil(n/c) + c >= 2*sqrt(n) rows, at most {best:.2f}x"
            )
        disc = max(0.0, rows_budget * rows_budget - 4 * n)
        c = max(1, math.floor((rows_budget - math.sqrt(disc)) / 2))
        while c < n and -(-n // c) + c > rows_budget:
            c += 1
        return c

    def quotient_rows(self) -> int:
        return -(-self.num_embeddings // self.remainder_rows())


MAX_CODE_BITS = 16
"""Widest LMA chunk code (``lsh`` packs codes of 2 to 16 bits)."""


def code_bits(signature_bytes: int, num_chunks: int) -> int:
    """Bits per LMA chunk code: ``min(16, 8 * signature_bytes // num_chunks)`` (0: no signature)."""
    return min(MAX_CODE_BITS, 8 * signature_bytes // num_chunks)


_ALLOCATIONS = ("semantic", "hashed")


@dataclass
class LMAEmbeddingBagConfig(EmbeddingBagConfig):
    """LMA table (Desai et al., 2021): embedding = concat over chunks k of ``M[loc_k(i)]``, chunk width ``Z``.

    Each id stores one small code per chunk (its signature), fitted from its co-occurrence context (``lsh``): ids
    with similar contexts get the same code of chunk ``k``, and a code owns a block of rows of chunk ``k``'s slice of
    the table's rows, so similar ids share rows. Ids without a signature get hashed rows anywhere in ``M``. ``M``
    holds ``memory_rows x Z`` elements; tables naming the same ``memory_group`` share one ``M`` (one TBE table).

    Args:
        compression_ratio (Optional[float]): stock fp32 bytes / (M share + signature) bytes; solves ``memory_rows``.
        memory_rows (Optional[int]): this table's share of ``M``, in rows of width ``chunk_size`` (>= d / Z).
        chunk_size (Optional[int]): ``Z``; divides ``d``; a multiple of 4 runs on TBE kernels, 1 is the paper's
            per-element reference path (plain PyTorch, unsharded only). Default: largest of 16, 8, 4 dividing ``d``,
            else 1.
        memory_group (Optional[str]): tables with the same group share one memory (default: the table's own).
        signature_bytes (Optional[int]): bytes stored per id (counted in the budget): ``d / Z`` codes of
            ``min(16, 8 * signature_bytes // (d / Z))`` bits, at least 2; 0 stores nothing (every id hashed).
            Default (``None``): 4, or the nearest valid value (set in ``__post_init__``).
        allocation (str): ``"semantic"`` (fit and use signatures) or ``"hashed"`` (never fit them: every id on its
            hashed rows, the ablation control; the signature bytes are still allocated and counted).
        context_features (Optional[List[str]]): features whose co-occurring values form an id's context; default:
            every other feature of the input.
        label_context (bool): put the row's binary label into the context tokens when the fitting batches carry
            labels (an id's context becomes "who liked it" and "who did not").
        signature_rank (int): components of the spectral embedding the codes are cut from (at least ``4 d / Z``
            are used when the data allows).
        base_dim (Optional[int]): store chunks of a ``base_dim``-wide embedding and project it to ``d`` with a learned
            ``base_dim x d`` matrix (counted in the budget); default: no projection.
    """

    compression_ratio: Optional[float] = None
    memory_rows: Optional[int] = None
    chunk_size: Optional[int] = None
    memory_group: Optional[str] = None
    signature_bytes: Optional[int] = None
    allocation: str = "semantic"
    context_features: Optional[List[str]] = None
    label_context: bool = True
    signature_rank: int = 64
    base_dim: Optional[int] = None

    def __post_init__(self) -> None:
        check_sizes(self, "LMA")
        super().__post_init__()
        _check_base_dim(self, "LMA")
        _check_common(self, "LMA", self.compression_ratio, self.memory_rows, "memory_rows")
        z = self.chunk()
        if physical_dim(self) % z != 0:
            what = "base_dim" if self.base_dim else "embedding_dim"
            raise ValueError(f"LMA table '{self.name}': chunk_size={z} must divide {what}={physical_dim(self)}")
        if z != 1 and z % 4 != 0:
            raise ValueError(
                f"LMA table '{self.name}': chunk_size={z} must be a multiple of 4 (FBGEMM TBE rows), or 1 for the "
                "plain-PyTorch reference path"
            )
        chunks = self.num_chunks()
        most = MAX_CODE_BITS * chunks // 8
        least = -(-2 * chunks // 8)
        if self.signature_bytes is None:
            self.signature_bytes = min(max(4, least), most)
        if not isinstance(self.signature_bytes, int) or not (
            self.signature_bytes == 0 or least <= self.signature_bytes <= most
        ):
            raise ValueError(
                f"LMA table '{self.name}': signature_bytes must be 0 or in [{least}, {most}] for {chunks} chunks "
                f"(codes of 2 to {MAX_CODE_BITS} bits per chunk), got {self.signature_bytes}"
            )
        if self.allocation not in _ALLOCATIONS:
            raise ValueError(
                f"LMA table '{self.name}': allocation must be one of {_ALLOCATIONS}, got {self.allocation!r}"
            )
        if self.signature_rank < 1:
            raise ValueError(f"LMA table '{self.name}': signature_rank must be >= 1, got {self.signature_rank}")
        rows = self.rows()
        if rows < chunks:
            raise ValueError(
                f"LMA table '{self.name}': {rows} memory rows cannot hold {chunks} chunks (need >= {chunks})"
            )

    def code_bits(self) -> int:
        """Bits of each chunk code: ``min(16, 8 * signature_bytes // num_chunks)`` (0 without signatures)."""
        assert self.signature_bytes is not None  # set by __post_init__
        return code_bits(self.signature_bytes, self.num_chunks())

    def chunk(self) -> int:
        """``Z``: given, or the largest of 16, 8, 4 dividing ``d`` (1 if none does)."""
        if self.chunk_size is not None:
            if self.chunk_size < 1:
                raise ValueError(f"LMA table '{self.name}': chunk_size must be >= 1, got {self.chunk_size}")
            return self.chunk_size
        return next((z for z in (16, 8, 4) if physical_dim(self) % z == 0), 1)

    def num_chunks(self) -> int:
        return physical_dim(self) // self.chunk()

    def group(self) -> str:
        return self.memory_group if self.memory_group is not None else self.name

    def signature_bytes_total(self) -> int:
        assert self.signature_bytes is not None  # set by __post_init__
        return self.num_embeddings * self.signature_bytes

    def rows(self) -> int:
        """This table's rows of ``M`` (width ``Z``): given, or what the ratio's budget leaves after signatures."""
        if self.memory_rows is not None:
            return self.memory_rows
        assert self.compression_ratio is not None
        budget = stock_bytes(self) / self.compression_ratio - self.signature_bytes_total() - projection_bytes(self)
        row_bytes = self.chunk() * _element_size(self)
        rows = int(budget // row_bytes)
        if rows < 1:
            best = stock_bytes(self) / (self.signature_bytes_total() + row_bytes + projection_bytes(self))
            raise ValueError(
                f"LMA table '{self.name}' (n={self.num_embeddings}, d={self.embedding_dim}): "
                f"compression_ratio={self.compression_ratio} leaves no memory rows after "
                f"{self.signature_bytes_total()} bytes of signatures ({self.signature_bytes} per id); the most it "
                f"reaches is {best:.2f}x (lower signature_bytes to go further)"
            )
        return rows


@dataclass
class LowRankEmbeddingBagConfig(EmbeddingBagConfig):
    """A stock table stored at a smaller width: ``embedding(i) = E[i] P`` with ``E`` (``n x base_dim``) and a learned
    ``base_dim x d`` projection ``P`` (a low-rank factorisation; "stock at a smaller d" where the model needs ``d``).

    Args:
        compression_ratio (Optional[float]): stock fp32 bytes / (E + P) bytes; solves for ``base_dim``.
        base_dim (Optional[int]): the stored width (``< d``).
    """

    compression_ratio: Optional[float] = None
    base_dim: Optional[int] = None

    def __post_init__(self) -> None:
        check_sizes(self, "LowRank")
        super().__post_init__()
        _check_common(self, "LowRank", self.compression_ratio, self.base_dim, "base_dim")
        _check_base_dim(self, "LowRank")
        self.rank()

    def rank(self) -> int:
        """``base_dim``: given, or the widest that fits the ratio's budget with its projection."""
        if self.base_dim is not None:
            return self.base_dim
        assert self.compression_ratio is not None
        n, d = self.num_embeddings, self.embedding_dim
        k = int(stock_bytes(self) / self.compression_ratio // ((n + d) * _element_size(self)))
        if not 1 <= k < d:
            raise ValueError(
                f"LowRank table '{self.name}' (n={n}, d={d}): compression_ratio={self.compression_ratio} gives "
                f"base_dim={k}, outside [1, {d}); the range is {n * d / ((n + d) * (d - 1)):.2f}x to "
                f"{n * d / (n + d):.2f}x"
            )
        return k
