# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Table configs: physical sizes solved from a compression ratio, and eager, precise validation errors."""

import math

import pytest

from torchrec_memcom import (
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)


def _ratio(stock: int, physical: int) -> float:
    return stock / physical


@pytest.mark.parametrize(
    "n,d,ratio,num_buckets",
    [(1000, 16, 4.0, None), (1000, 16, 2.0, 4), (10_000, 8, 4.0, None), (100_000, 32, 16.0, None), (5000, 64, 32.0, 8)],
)
def test_memcom_rows_from_ratio(n: int, d: int, ratio: float, num_buckets: int) -> None:
    cfg = MEmComEmbeddingBagConfig(
        name="t", num_embeddings=n, embedding_dim=d, compression_ratio=ratio, num_buckets=num_buckets
    )
    h = cfg.bucketed_hash()
    b = h.num_buckets
    if num_buckets is not None:
        assert b == num_buckets
    else:
        assert b & (b - 1) == 0 and (b == 1 or h.num_rows // b >= 64)
    assert h.num_rows % b == 0 and h.num_embeddings == n
    n_pad = -(-n // b) * b
    achieved = _ratio(n * d * 4, h.num_rows * d * 4 + n_pad * 4)
    assert ratio <= achieved <= 1.05 * ratio


@pytest.mark.parametrize(
    "n,d,ratio,num_buckets",
    [(1000, 16, 4.0, None), (1000, 16, 100.0, None), (100_000, 32, 300.0, 64), (500, 4, 1.0, 2)],
)
def test_hash_rows_from_ratio(n: int, d: int, ratio: float, num_buckets: int) -> None:
    cfg = HashEmbeddingBagConfig(
        name="t", num_embeddings=n, embedding_dim=d, compression_ratio=ratio, num_buckets=num_buckets
    )
    h = cfg.bucketed_hash()
    assert h.num_rows % h.num_buckets == 0
    if num_buckets is not None:
        assert h.num_buckets == num_buckets
    achieved = _ratio(n * d * 4, h.num_rows * d * 4)
    assert ratio <= achieved <= 1.05 * ratio


def _qr_rows(n: int, c: int) -> int:
    return -(-n // c) + c


@pytest.mark.parametrize("n", [1, 2, 10, 100, 999, 1000, 10_000])
@pytest.mark.parametrize("ratio", [1.0, 1.5, 3.0, 7.0, 15.0, 15.7, 24.0, 49.0])
def test_qr_remainder_rows_are_the_smallest_within_budget(n: int, ratio: float) -> None:
    """``c`` is the smallest with ``ceil(n/c) + c`` rows in budget; unreachable ratios raise (brute force)."""
    budget = n / ratio  # rows of d fp32 elements
    feasible = [c for c in range(1, n + 1) if _qr_rows(n, c) <= budget]
    if not feasible:
        with pytest.raises(ValueError, match=r"QR table 'q' \(n=\d+, d=4\): compression_ratio=.* is not reachable"):
            QREmbeddingBagConfig(name="q", num_embeddings=n, embedding_dim=4, compression_ratio=ratio)
        return
    cfg = QREmbeddingBagConfig(name="q", num_embeddings=n, embedding_dim=4, compression_ratio=ratio)
    c = cfg.remainder_rows()
    assert c == feasible[0]
    assert cfg.quotient_rows() == -(-n // c)
    assert _ratio(n, cfg.quotient_rows() + c) >= ratio


def test_qr_ratio_between_the_real_and_the_integer_bound_raises() -> None:
    """n=1000: 2*sqrt(n) = 63.2 rows, but no integer c gives fewer than 64 (ratio 15.625)."""
    assert QREmbeddingBagConfig(name="q", num_embeddings=1000, embedding_dim=8, compression_ratio=15.6).remainder_rows()
    with pytest.raises(ValueError, match=r"QR table 'q'.*compression_ratio=15.7 is not reachable.*at most 15.62x"):
        QREmbeddingBagConfig(name="q", num_embeddings=1000, embedding_dim=8, compression_ratio=15.7)


def test_qr_reaches_sqrt_n_over_two_and_no_further() -> None:
    cfg = QREmbeddingBagConfig(name="q", num_embeddings=10_000, embedding_dim=8, compression_ratio=50.0)
    assert cfg.remainder_rows() == 100 and cfg.quotient_rows() == 100
    with pytest.raises(ValueError, match=r"QR table 'q' \(n=10000, d=8\).*not reachable.*at most 50.00x"):
        QREmbeddingBagConfig(name="q", num_embeddings=10_000, embedding_dim=8, compression_ratio=51.0)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (MEmComEmbeddingBagConfig, dict(num_shared_rows=8)),
        (HashEmbeddingBagConfig, dict(compression_ratio=2.0)),
        (QREmbeddingBagConfig, dict(num_remainder_rows=4)),
    ],
)
def test_feature_names_default_to_the_table_name(cls: type, kwargs: dict) -> None:
    cfg = cls(name="clicks", num_embeddings=100, embedding_dim=4, **kwargs)
    assert cfg.feature_names == ["clicks"]
    cfg = cls(name="clicks", num_embeddings=100, embedding_dim=4, feature_names=["a", "b"], **kwargs)
    assert cfg.feature_names == ["a", "b"]


def test_physical_sizes_are_taken_as_given() -> None:
    h = MEmComEmbeddingBagConfig(
        name="t", num_embeddings=1000, embedding_dim=8, num_shared_rows=96, num_buckets=32
    ).bucketed_hash()
    assert (h.num_rows, h.num_buckets, h.padded_num_embeddings) == (96, 32, 1024)
    cfg = MEmComEmbeddingBagConfig(name="t", num_embeddings=1000, embedding_dim=8, num_shared_rows=96)
    assert cfg.bucketed_hash().num_buckets == 1  # 96 rows leave < 64 per bucket for B = 2
    assert (
        QREmbeddingBagConfig(name="q", num_embeddings=100, embedding_dim=4, num_remainder_rows=7).quotient_rows() == 15
    )


NAME = "clicks"
BASE = dict(name=NAME, num_embeddings=1000, embedding_dim=8)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        # exactly one of ratio and size
        (MEmComEmbeddingBagConfig, {}, r"give exactly one of compression_ratio and num_shared_rows"),
        (
            MEmComEmbeddingBagConfig,
            dict(compression_ratio=2.0, num_shared_rows=64),
            r"give exactly one of compression_ratio and num_shared_rows.*=2.0.*=64",
        ),
        (HashEmbeddingBagConfig, {}, r"give exactly one of compression_ratio and num_shared_rows"),
        (HashEmbeddingBagConfig, dict(compression_ratio=2.0, num_shared_rows=64), r"give exactly one"),
        (QREmbeddingBagConfig, {}, r"give exactly one of compression_ratio and num_remainder_rows"),
        (QREmbeddingBagConfig, dict(compression_ratio=2.0, num_remainder_rows=8), r"give exactly one"),
        # ratio < 1 or not finite
        (
            MEmComEmbeddingBagConfig,
            dict(compression_ratio=0.5),
            r"compression_ratio must be a finite number >= 1, got 0.5",
        ),
        (HashEmbeddingBagConfig, dict(compression_ratio=0.99), r"must be a finite number >= 1, got 0.99"),
        (QREmbeddingBagConfig, dict(compression_ratio=0.0), r"must be a finite number >= 1, got 0.0"),
        (HashEmbeddingBagConfig, dict(compression_ratio=math.inf), r"must be a finite number >= 1, got inf"),
        (MEmComEmbeddingBagConfig, dict(compression_ratio=math.nan), r"must be a finite number >= 1, got nan"),
        # sizes
        (MEmComEmbeddingBagConfig, dict(num_shared_rows=0), r"num_shared_rows must be >= 1, got 0"),
        (QREmbeddingBagConfig, dict(num_remainder_rows=0), r"num_remainder_rows must be >= 1, got 0"),
        (QREmbeddingBagConfig, dict(num_remainder_rows=1001), r"num_remainder_rows=1001 exceeds num_embeddings=1000"),
        (
            MEmComEmbeddingBagConfig,
            dict(num_shared_rows=30, num_buckets=4),
            r"num_shared_rows=30 must be a multiple of num_buckets=4",
        ),
        (
            HashEmbeddingBagConfig,
            dict(num_shared_rows=100, num_buckets=8),
            r"num_shared_rows=100 must be a multiple of num_buckets=8",
        ),
        (
            MEmComEmbeddingBagConfig,
            dict(num_shared_rows=2048, num_buckets=2048),
            r"num_buckets must be in \[1, num_embeddings=1000\], got 2048",
        ),
        (
            HashEmbeddingBagConfig,
            dict(num_shared_rows=8, num_buckets=0),
            r"num_buckets must be in \[1, num_embeddings=1000\], got 0",
        ),
        # ratios the method cannot reach
        (MEmComEmbeddingBagConfig, dict(compression_ratio=8.0), r"compression_ratio=8.0 is not reachable.*below d=8x"),
        (
            MEmComEmbeddingBagConfig,
            dict(compression_ratio=100.0),
            r"compression_ratio=100.0 is not reachable.*below d=8x",
        ),
        (
            MEmComEmbeddingBagConfig,
            dict(compression_ratio=7.99),
            r"\(n=1000, d=8\): compression_ratio=7.99 leaves no shared rows.*the most it reaches is \d+\.\d\dx",
        ),
        (
            HashEmbeddingBagConfig,
            dict(compression_ratio=8000.1),
            r"compression_ratio=8000.1 leaves no rows; the most it reaches",
        ),
        (
            QREmbeddingBagConfig,
            dict(compression_ratio=16.0),
            r"compression_ratio=16.0 is not reachable.*at most 15.62x",
        ),
    ],
)
def test_config_errors_name_the_table_and_the_range(cls: type, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=rf"table '{NAME}'.*{match}"):
        cls(**BASE, **kwargs)


@pytest.mark.parametrize(
    "cls", [MEmComEmbeddingBagConfig, HashEmbeddingBagConfig, QREmbeddingBagConfig, LMAEmbeddingBagConfig]
)
@pytest.mark.parametrize(
    "n,d,field,bad",
    [
        (10, 0, "embedding_dim", "0"),
        (10, -1, "embedding_dim", "-1"),
        (0, 8, "num_embeddings", "0"),
        (2.5, 8, "num_embeddings", "2.5"),
    ],
)
def test_empty_logical_tables_raise(cls: type, n: int, d: int, field: str, bad: str) -> None:
    # checked before TorchRec's default init_fn divides by n (a ZeroDivisionError for n = 0 before)
    with pytest.raises(ValueError, match=rf"table '{NAME}': {field} must be an integer >= 1, got {bad}"):
        cls(name=NAME, num_embeddings=n, embedding_dim=d, compression_ratio=1.0)


@pytest.mark.parametrize(
    "cls", [MEmComEmbeddingBagConfig, HashEmbeddingBagConfig, QREmbeddingBagConfig, LMAEmbeddingBagConfig]
)
@pytest.mark.parametrize("ratio", ["4", True, None])
def test_non_numeric_compression_ratio_raises(cls: type, ratio: object) -> None:
    # "4" used to raise a TypeError without the table, True was taken as 1
    kwargs = {"compression_ratio": ratio} if ratio is not None else {"compression_ratio": [4]}
    with pytest.raises(ValueError, match=rf"table '{NAME}': compression_ratio must be a number, got"):
        cls(name=NAME, num_embeddings=1000, embedding_dim=16, **kwargs)


@pytest.mark.parametrize("cls", [MEmComEmbeddingBagConfig, HashEmbeddingBagConfig])
@pytest.mark.parametrize("buckets", [0, -2, 2.0])
def test_bad_bucket_counts_raise(cls: type, buckets: object) -> None:
    # num_buckets=0 used to raise ZeroDivisionError
    with pytest.raises(ValueError, match=rf"table '{NAME}': num_buckets must be in \[1, num_embeddings=1000\]"):
        cls(name=NAME, num_embeddings=1000, embedding_dim=16, compression_ratio=4.0, num_buckets=buckets)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"entity_weight_optimizer": "adam"}, r"entity_weight_optimizer must be one of"),
        ({"entity_weight_lr_scale": 0.0}, r"entity_weight_lr_scale must be a finite number > 0"),
        ({"entity_weight_lr_scale": float("inf")}, r"entity_weight_lr_scale must be a finite number > 0"),
        ({"entity_weight_init": float("nan")}, r"entity_weight_init must be a finite number"),
    ],
)
def test_entity_weight_settings_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=rf"table '{NAME}': {match}"):
        MEmComEmbeddingBagConfig(name=NAME, num_embeddings=1000, embedding_dim=16, compression_ratio=4.0, **kwargs)


@pytest.mark.parametrize("cls", [MEmComEmbeddingBagConfig, HashEmbeddingBagConfig, QREmbeddingBagConfig])
def test_tables_need_a_name(cls: type) -> None:
    with pytest.raises(ValueError, match=r"needs a table name"):
        cls(name="", num_embeddings=10, embedding_dim=4, compression_ratio=1.0)


def test_table_names_that_clash_with_module_dict_are_rejected() -> None:
    from torchrec_memcom import MEmComEmbeddingBagConfig

    with pytest.raises(ValueError, match="table name 'items' cannot be used"):
        MEmComEmbeddingBagConfig(name="items", num_embeddings=100, embedding_dim=8, compression_ratio=2)
