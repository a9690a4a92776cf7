# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Every compressed collection trains inside TorchRec's DLRM on a learnable synthetic CTR task (CPU, unsharded).

The task plants a click propensity per id of each of three sparse features plus a linear effect of one dense feature:
``P(click) = sigmoid(a_0[id_0] + a_1[id_1] + a_2[id_2] + 1.5 * x_0 + b)``. Fresh rows are drawn every step, so the
running training loss is also a held-out loss. A model that learns must end clearly below its starting loss and
below the label-entropy baseline (the loss of predicting the base rate).
"""

import functools
import math
from typing import Callable, List, Tuple

import pytest
import torch
from torchrec.datasets.utils import Batch
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagCollection,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagCollection,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagCollection,
    QREmbeddingBagConfig,
)

_FEATURES = ["f0", "f1", "f2"]
_N = 300  # ids per sparse feature
_D = 16
_DENSE = 4
_BATCH = 128
_STEPS = 300
_WINDOW = 20


@functools.lru_cache(maxsize=1)
def _batches() -> Tuple[Batch, ...]:
    """``_STEPS`` batches from the planted click model (fixed seed; shared by every test)."""
    g = torch.Generator().manual_seed(2026)
    propensity = torch.randn(len(_FEATURES), _N, generator=g) * 1.5
    out = []
    for _ in range(_STEPS):
        ids = torch.randint(0, _N, (len(_FEATURES), _BATCH), generator=g)
        dense = torch.randn(_BATCH, _DENSE, generator=g)
        logit = propensity.gather(1, ids).sum(0) + 1.5 * dense[:, 0] - 0.3
        labels = torch.bernoulli(torch.sigmoid(logit), generator=g)
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=_FEATURES,
            values=ids.reshape(-1),
            lengths=torch.ones(len(_FEATURES) * _BATCH, dtype=torch.int64),
        )
        out.append(Batch(dense_features=dense, sparse_features=kjt, labels=labels))
    return tuple(out)


def _label_entropy() -> float:
    p = float(torch.cat([b.labels for b in _batches()]).mean())
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _tables(make: Callable[..., EmbeddingBagConfig], **kw) -> List[EmbeddingBagConfig]:
    return [make(name=f"t_{f}", num_embeddings=_N, embedding_dim=_D, feature_names=[f], **kw) for f in _FEATURES]


def _memcom() -> EmbeddingBagCollectionInterface:
    return MEmComEmbeddingBagCollection(_tables(MEmComEmbeddingBagConfig, compression_ratio=2.0))


def _hash() -> EmbeddingBagCollectionInterface:
    # milder than the others: colliding ids share one row outright, which at 2x caps the loss near the threshold
    return HashEmbeddingBagCollection(_tables(HashEmbeddingBagConfig, compression_ratio=1.5))


def _qr() -> EmbeddingBagCollectionInterface:
    return QREmbeddingBagCollection(_tables(QREmbeddingBagConfig, compression_ratio=2.0))


def _lma() -> EmbeddingBagCollectionInterface:
    # one memory shared by the three tables (as in the paper), chunks of Z = 4, signatures fitted on a row sample
    module = LMAEmbeddingBagCollection(
        _tables(LMAEmbeddingBagConfig, compression_ratio=2.0, chunk_size=4, signature_bytes=4, memory_group="all")
    )
    coverage = module.fit_signatures((b.sparse_features for b in _batches()), max_rows=40 * _BATCH)
    assert all(c > 0.95 for c in coverage.values()), coverage
    assert bool((module.table_signatures("t_f0") != 255).any())
    return module


def _mixed() -> EmbeddingBagCollectionInterface:
    tables = [
        MEmComEmbeddingBagConfig(
            name="t_f0", num_embeddings=_N, embedding_dim=_D, feature_names=["f0"], compression_ratio=2.0
        ),
        QREmbeddingBagConfig(
            name="t_f1", num_embeddings=_N, embedding_dim=_D, feature_names=["f1"], compression_ratio=2.0
        ),
        EmbeddingBagConfig(name="t_f2", num_embeddings=_N, embedding_dim=_D, feature_names=["f2"]),
    ]
    module = CompressedEmbeddingBagCollection(tables)
    assert set(module.methods()) == {"memcom", "qr", "stock"}
    return module


def _stock() -> EmbeddingBagCollectionInterface:
    return EmbeddingBagCollection(_tables(EmbeddingBagConfig))


_BUILDERS = {"stock": _stock, "memcom": _memcom, "lma": _lma, "hash": _hash, "qr": _qr, "mixed": _mixed}


def _train(ebc: EmbeddingBagCollectionInterface) -> List[float]:
    model = DLRMTrain(
        DLRM(
            embedding_bag_collection=ebc,
            dense_in_features=_DENSE,
            dense_arch_layer_sizes=[16, _D],
            over_arch_layer_sizes=[16, 1],
        )
    )
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    losses = []
    for batch in _batches():
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("method", list(_BUILDERS))
def test_trains_in_dlrm(method: str) -> None:
    torch.manual_seed(0)
    ebc = _BUILDERS[method]()
    if method != "stock":
        assert ebc.memory_report().compression_ratio > 1.4
    losses = _train(ebc)
    first = sum(losses[:_WINDOW]) / _WINDOW
    last = sum(losses[-_WINDOW:]) / _WINDOW
    entropy = _label_entropy()
    assert all(math.isfinite(x) for x in losses)
    assert last < 0.8 * first, (method, first, last)
    assert last < entropy - 0.05, (method, entropy, last)
