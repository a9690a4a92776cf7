# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Property-based input tests (hypothesis): random valid KJTs give the plain-PyTorch reference for every method;
random malformed ones give a ValueError naming what is wrong, never an output."""

from typing import Dict, List, Tuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

from tests.reference import reference_values
from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)

D = 8
SIZES = {"s": 30, "h": 120, "m": 150, "q": 90, "l": 100}


def _tables(pooling: PoolingType) -> List[EmbeddingBagConfig]:
    common = dict(embedding_dim=D, pooling=pooling)
    return [
        EmbeddingBagConfig(name="s", num_embeddings=30, feature_names=["s1"], **common),
        HashEmbeddingBagConfig(name="h", num_embeddings=120, feature_names=["h1", "h2"], num_shared_rows=16, **common),
        MEmComEmbeddingBagConfig(name="m", num_embeddings=150, feature_names=["m1"], num_shared_rows=16, **common),
        QREmbeddingBagConfig(name="q", num_embeddings=90, feature_names=["q1"], num_remainder_rows=10, **common),
        LMAEmbeddingBagConfig(
            name="l",
            num_embeddings=100,
            feature_names=["l1"],
            memory_rows=20,
            chunk_size=4,
            signature_bytes=4,
            **common,
        ),
    ]


_MODULES: Dict[Tuple[PoolingType, bool], CompressedEmbeddingBagCollection] = {}


def _module(pooling: PoolingType, weighted: bool) -> CompressedEmbeddingBagCollection:
    key = (pooling, weighted)
    if key not in _MODULES:
        torch.manual_seed(0)
        m = CompressedEmbeddingBagCollection(_tables(pooling), is_weighted=weighted)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(torch.rand(p.shape) + 0.5 if "entity_weights" in name else torch.randn(p.shape))
        m.eval()
        _MODULES[key] = m
    return _MODULES[key]


FEATURES = {"s1": 30, "h1": 120, "h2": 120, "m1": 150, "q1": 90, "l1": 100}


@st.composite
def _kjts(draw: st.DrawFn, weighted: bool) -> KeyedJaggedTensor:
    batch = draw(st.integers(1, 4))
    keys = draw(st.permutations(list(FEATURES) + ["extra"]))
    lengths, values = [], []
    for k in keys:
        ls = draw(st.lists(st.integers(0, 3), min_size=batch, max_size=batch))
        n = FEATURES.get(k, 10**6)
        lengths += ls
        values += draw(st.lists(st.integers(0, n - 1), min_size=sum(ls), max_size=sum(ls)))
    weights = None
    if weighted:
        weights = torch.tensor(draw(st.lists(st.floats(0.1, 2.0), min_size=len(values), max_size=len(values))))
    return KeyedJaggedTensor(
        keys=list(keys),
        values=torch.tensor(values, dtype=torch.int64),
        lengths=torch.tensor(lengths, dtype=torch.int64),
        weights=weights,
    )


def _lma_reference(module: CompressedEmbeddingBagCollection, kjt: KeyedJaggedTensor, pooling: PoolingType):
    jt = kjt.to_dict()["l1"]
    memory = module.memory_weight("l").detach()
    out, start = [], 0
    for n in jt.lengths().tolist():
        ids = jt.values()[start : start + n]
        x = jt.weights()[start : start + n] if module.is_weighted() else torch.ones(n)
        start += n
        rows = memory[module.locations("l", ids)].reshape(n, D) * x.unsqueeze(1)
        pooled = rows.sum(0)
        out.append(pooled / max(n, 1) if pooling == PoolingType.MEAN else pooled)
    return torch.stack(out)


@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN])
@pytest.mark.parametrize("weighted", [False, True])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_valid_kjts_give_the_reference(pooling: PoolingType, weighted: bool, data: st.DataObject) -> None:
    module = _module(pooling, weighted)
    kjt = data.draw(_kjts(weighted))
    out = module(kjt).to_dict()
    # every method but LMA from tests.reference (QR: pooled sides multiplied), LMA from its locations
    reference = {t.name: t for t in module.embedding_bag_configs() if t.name != "l"}
    sub = CompressedEmbeddingBagCollection(list(reference.values()), is_weighted=weighted)
    sub.load_state_dict(
        {k: v for k, v in module.state_dict().items() if "__memory" not in k and "signatures" not in k}
        | {"_extra_state": sub.get_extra_state()}
    )
    want = reference_values(sub, kjt)
    got = torch.cat([out[f] for t in reference.values() for f in t.feature_names], dim=1)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["l1"], _lma_reference(module, kjt, pooling), rtol=1e-5, atol=1e-5)


def _bad(kind: str, data: st.DataObject) -> Tuple[KeyedJaggedTensor, str]:
    """A malformed KJT of one kind and the message it must raise."""
    keys = list(FEATURES)
    batch = 2
    lengths = torch.ones(len(keys) * batch, dtype=torch.int64)
    values = torch.zeros(len(keys) * batch, dtype=torch.int64)
    weights = torch.ones(len(keys) * batch)
    if kind == "more lengths than values":
        extra = data.draw(st.integers(1, 3))
        lengths[data.draw(st.integers(0, len(lengths) - 1))] += extra
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights), "lengths add up to"
    if kind == "surplus values":
        extra = data.draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=3))
        values = torch.cat([values, torch.tensor(extra)])
        weights = torch.cat([weights, torch.ones(len(extra))])
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights), "lengths add up to"
    if kind == "surplus weights":
        weights = torch.ones(len(values) + data.draw(st.integers(1, 3)))
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights), "weights for"
    if kind == "too few weights":  # e.g. one weight broadcast over several ids
        weights = torch.ones(data.draw(st.integers(1, len(values) - 1)))
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights), "weights for"
    if kind == "id out of range":
        f = data.draw(st.sampled_from(keys))
        bad = data.draw(st.sampled_from([-1, FEATURES[f], FEATURES[f] + 1000]))
        values[keys.index(f) * batch] = bad
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights), rf"feature '{f}'.*\[0, "
    if kind == "negative length":
        i = data.draw(st.integers(0, len(lengths) - 2))
        lengths[i], lengths[i + 1] = -1, 3  # still adds up to the number of values
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights), "lengths must be >= 0"
    if kind == "float64 weights":
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=weights.double()), "float32"
    if kind == "missing feature":
        f = data.draw(st.sampled_from(keys))
        rest = [k for k in keys if k != f]
        n = len(rest) * batch
        kjt = KeyedJaggedTensor(keys=rest, values=values[:n], lengths=lengths[:n], weights=weights[:n])
        return kjt, f"feature '{f}'.*missing"
    raise ValueError(kind)


KINDS = [
    "more lengths than values",
    "surplus values",
    "surplus weights",
    "too few weights",
    "id out of range",
    "negative length",
    "float64 weights",
    "missing feature",
]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_random_malformed_kjts_raise(kind: str, data: st.DataObject) -> None:
    module = _module(PoolingType.SUM, weighted=True)
    kjt, match = _bad(kind, data)
    with pytest.raises(ValueError, match=match):
        module(kjt)


def test_issue_examples_of_malformed_kjts() -> None:
    lma = CompressedEmbeddingBagCollection(
        [LMAEmbeddingBagConfig(name="l", num_embeddings=100, embedding_dim=D, feature_names=["f"], memory_rows=20,
                               chunk_size=4, signature_bytes=4)]
    )  # fmt: skip
    # lengths promising more ids than values used to repeat the last value
    with pytest.raises(ValueError, match="lengths add up to 3 ids but it holds 1 values"):
        lma(KeyedJaggedTensor(keys=["f"], values=torch.tensor([7]), lengths=torch.tensor([1, 2])))
    # surplus values (even out of range) used to be ignored
    with pytest.raises(ValueError, match="lengths add up to 1 ids but it holds 2 values"):
        lma(KeyedJaggedTensor(keys=["f"], values=torch.tensor([7, 5000]), lengths=torch.tensor([1, 0])))
    memcom = CompressedEmbeddingBagCollection(
        [MEmComEmbeddingBagConfig(name="m", num_embeddings=100, embedding_dim=D, feature_names=["f"],
                                  num_shared_rows=8)], is_weighted=True,
    )  # fmt: skip
    # one weight used to be broadcast over several ids
    with pytest.raises(ValueError, match="has 1 weights for 3 values"):
        memcom(KeyedJaggedTensor(keys=["f"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([3]),
                                 weights=torch.tensor([0.5])))  # fmt: skip
