# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""SyntheticCriteo: determinism, layout, power-law ids, and a planted signal a logistic regression can learn.

SYNTHETIC data: nothing here is a real-data result.
"""

from typing import List, Tuple

import pytest
import torch
from torch import nn
from torchmetrics.functional.classification import binary_auroc
from torchrec.datasets.utils import Batch

from torchrec_memcom.datasets import SyntheticCriteo

_SIZES = [200] * 26


def _ids(batch: Batch) -> torch.Tensor:
    return batch.sparse_features.values().view(len(batch.sparse_features.keys()), -1).T


def _same(a: List[Batch], b: List[Batch]) -> bool:
    return all(
        torch.equal(x.dense_features, y.dense_features)
        and torch.equal(x.sparse_features.values(), y.sparse_features.values())
        and torch.equal(x.labels, y.labels)
        for x, y in zip(a, b, strict=True)
    )


def test_layout_and_determinism() -> None:
    ds = SyntheticCriteo(3, 64, [10, 1000, 2**31 + 11] + [5] * 23, seed=7)
    batches = list(ds)
    assert len(batches) == len(ds) == 3
    b = batches[0]
    assert b.dense_features.shape == (64, 13) and b.dense_features.dtype == torch.float32
    assert b.sparse_features.keys() == [f"cat_{i}" for i in range(26)] and b.sparse_features.stride() == 64
    ids = _ids(b)
    assert bool((ids >= 0).all()) and bool((ids < torch.tensor(ds.num_embeddings_per_feature)).all())
    assert set(b.labels.unique().tolist()) <= {0.0, 1.0}
    assert _same(batches, list(ds))
    assert _same(batches, list(SyntheticCriteo(3, 64, ds.num_embeddings_per_feature, seed=7)))
    assert not _same(batches, list(SyntheticCriteo(3, 64, ds.num_embeddings_per_feature, seed=8)))
    assert not _same(batches, list(SyntheticCriteo(3, 64, ds.num_embeddings_per_feature, seed=7, split="val")))


def test_ranks() -> None:
    r0 = list(SyntheticCriteo(2, 32, _SIZES, seed=1, rank=0, world_size=2))
    r1 = list(SyntheticCriteo(2, 32, _SIZES, seed=1, rank=1, world_size=2))
    assert len(r0) == len(r1) == 2 and not _same(r0, r1)
    assert _same(r0, list(SyntheticCriteo(2, 32, _SIZES, seed=1, rank=0, world_size=1)))
    with pytest.raises(ValueError):
        SyntheticCriteo(2, 32, _SIZES, rank=2, world_size=2)


def test_power_law() -> None:
    ids = torch.cat([_ids(b)[:, 0] for b in SyntheticCriteo(4, 4096, [10_000] * 26, seed=3)])
    counts = torch.bincount(ids, minlength=10_000).sort(descending=True).values
    assert counts[0] > 50 * len(ids) / 10_000  # the top id is far above uniform
    assert counts[:100].sum() > 0.3 * len(ids)  # 1% of ids carry a large share of traffic
    assert (counts > 0).sum() > 1000  # ... and the tail is still visited


def _data(split: str, num_batches: int) -> Tuple[SyntheticCriteo, torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = SyntheticCriteo(num_batches, 1024, _SIZES, seed=11, split=split)
    batches = list(ds)
    dense = torch.cat([b.dense_features for b in batches])
    ids = torch.cat([_ids(b) for b in batches])
    return ds, dense, ids, torch.cat([b.labels for b in batches])


def test_logistic_regression_learns_planted_signal() -> None:
    torch.manual_seed(0)
    _, dense, ids, labels = _data("train", 24)
    ds, val_dense, val_ids, val_labels = _data("val", 6)
    assert 0.1 < labels.mean() < 0.45
    offsets = torch.tensor([0] + _SIZES[:-1]).cumsum(0)
    linear = nn.Linear(13, 1)
    bias = nn.Embedding(sum(_SIZES), 1)
    nn.init.zeros_(bias.weight)

    def logits(d: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return linear(d).squeeze(1) + bias(i + offsets).sum(dim=(1, 2))

    opt = torch.optim.Adam([*linear.parameters(), *bias.parameters()], lr=0.05)
    for _ in range(3):
        for start in range(0, len(labels), 2048):
            sl = slice(start, start + 2048)
            loss = nn.functional.binary_cross_entropy_with_logits(logits(dense[sl], ids[sl]), labels[sl])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        auc = binary_auroc(logits(val_dense, val_ids), val_labels.long()).item()
        best = binary_auroc(ds.planted_logits(val_dense, val_ids), val_labels.long()).item()
    assert auc > 0.7, auc
    assert auc <= best + 0.01 and best > 0.75, best
