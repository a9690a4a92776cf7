# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Benchmark layouts: valid, the documented sizes, every method builds them, and bad layouts fail by name."""

import dataclasses
import math

import pytest
import torch

from torchrec_memcom.benchmarks.data import make_batches, sample_ids
from torchrec_memcom.benchmarks.layouts import (
    CRITEO_TERABYTE_CARDINALITIES,
    LAYOUTS,
    METHODS,
    MethodOptions,
    embedding_module,
    table_configs,
    table_spec,
)
from torchrec_memcom.modules.method import method_for_config


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_builds_every_layout_at_its_ratio(name: str, method: str) -> None:
    layout = LAYOUTS[name]
    tables = table_configs(method, layout, MethodOptions())
    module, report = embedding_module(tables, torch.device("meta"))
    assert [t.name for t in tables] == [f"t{i}" for i in range(layout.num_tables)]
    assert report.stock_bytes == layout.stock_bytes()
    compressed = [n for n in layout.num_embeddings if n >= layout.compress_min_rows]
    if method == "stock":
        assert report.total_bytes == layout.stock_bytes()
        return
    # every table at or above compress_min_rows is of the method, the others stay stock...
    for t, n in zip(tables, layout.num_embeddings):
        assert method_for_config(t).name == ("stock" if n < layout.compress_min_rows else method), t.name
    # ...so the whole layer shrinks to (stock bytes of the small tables) + (compressed bytes) / 16
    small = (sum(layout.num_embeddings) - sum(compressed)) * layout.embedding_dim * 4
    expected = small + sum(compressed) * layout.embedding_dim * 4 / 16
    assert report.total_bytes == pytest.approx(expected, rel=0.1)


def test_terabyte_is_beyond_one_gpu_and_scale_4_beyond_host_memory() -> None:
    tb = LAYOUTS["terabyte"]
    assert tb.num_tables == 26 and tb.embedding_dim == 128
    assert max(tb.num_embeddings) == 39_979_771  # MLPerf's 40M cap
    assert sum(CRITEO_TERABYTE_CARDINALITIES) == 187_767_399
    assert tb.stock_bytes() == 187_767_399 * 128 * 4  # 96.1 GB: more than a 40 GB budget per GPU
    assert "fused_uvm_caching" in tb.kernels
    big = tb.scaled(4)
    assert big.num_embeddings == tuple(4 * n for n in tb.num_embeddings)
    assert big.stock_bytes() > 256 * 2**30  # more than the 2-GPU machine's host memory
    assert big.scaled(0.25) == tb


def test_table_spec_keeps_small_tables_stock_and_sizes_buckets() -> None:
    layout = LAYOUTS["criteo"]
    opts = MethodOptions(ratio=8.0, lma_chunk_size=32, lma_shared_memory=False)
    assert table_spec("memcom", 99_999, layout, opts) is None
    assert table_spec("memcom", 10**6, layout, opts) == {"type": "memcom", "compression": 8.0, "num_buckets": 1024}
    tiny = dataclasses.replace(layout, compress_min_rows=0)
    assert table_spec("hash", 600, tiny, opts)["num_buckets"] == 512  # the largest power of two <= 600
    assert table_spec("lma", 10**6, layout, opts) == {
        "type": "lma",
        "compression": 8.0,
        "chunk_size": 32,
        "signature_bytes": 8,
        "memory_group": None,
    }
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        table_spec("foo", 10, layout, opts)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"embedding_dim": 6}, "embedding_dim=6"),
        ({"dense_arch": (16, 32)}, "dense_arch=.*must end with embedding_dim=64"),
        ({"over_arch": (32, 2)}, "over_arch"),
        ({"kernels": ("fused", "warp_speed")}, "unknown kernel.*warp_speed"),
        ({"num_embeddings": (10, 0)}, "num_embeddings"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_layout_fails_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(LAYOUTS["tiny"], **change)


def test_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="scale must be a finite number > 0, got -1"):
        LAYOUTS["tiny"].scaled(-1)


def test_powerlaw_ids_follow_zipf_and_stay_in_range() -> None:
    n, count, a = 1000, 200_000, 1.05
    g = torch.Generator().manual_seed(0)
    ids = sample_ids(n, count, "powerlaw", a, g, torch.device("cpu"))
    assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < n
    # the most frequent id's share matches the continuous power law's mass on [1, 2): independent reference math
    b = 1 - a
    expected = (2**b - 1) / ((n + 1) ** b - 1)
    top = torch.bincount(ids, minlength=n).max().item() / count
    assert top == pytest.approx(expected, rel=0.05)
    uniform = sample_ids(n, count, "uniform", a, g, torch.device("cpu"))
    assert torch.bincount(uniform, minlength=n).max().item() / count < 3 / n
    with pytest.raises(ValueError, match="ids must be one of"):
        sample_ids(n, 10, "normal", a, g, torch.device("cpu"))


def test_batches_hold_every_feature_with_the_layout_shape() -> None:
    layout = LAYOUTS["tiny"]
    (batch,) = make_batches(layout, 1, seed=3, device=torch.device("cpu"))
    kjt = batch.sparse_features
    assert kjt.keys() == [f"f{i}" for i in range(layout.num_tables)]
    assert kjt.stride() == layout.batch_size and batch.dense_features.shape == (layout.batch_size, 13)
    for key, n in zip(kjt.keys(), layout.num_embeddings):
        values = kjt[key].values()
        assert values.numel() == layout.batch_size * layout.pooling and int(values.max()) < n
    assert math.isclose(float(batch.labels.sum()) / layout.batch_size, 0.5, abs_tol=0.25)


def test_batches_carry_their_length_per_key_only_when_asked() -> None:
    layout = LAYOUTS["tiny"]
    (plain,) = make_batches(layout, 1, seed=3, device=torch.device("cpu"))
    (known,) = make_batches(layout, 1, seed=3, device=torch.device("cpu"), length_per_key=True)
    assert plain.sparse_features.length_per_key_or_none() is None  # as TorchRec's loaders: read from the lengths
    counts = plain.sparse_features.lengths().view(layout.num_tables, -1).sum(1).tolist()
    assert known.sparse_features.length_per_key_or_none() == counts == [layout.batch_size * layout.pooling] * 4
    assert torch.equal(known.sparse_features.values(), plain.sparse_features.values())
