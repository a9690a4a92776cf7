# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Baselines: hashing trick ``U[h(i)]`` and QR ``pool(x * Q[i // c]) * pool(R[i % c])`` against reference math."""

import pytest
import torch
from torch import nn
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tests.reference import (
    MODULE_TYPES,
    check_forward,
    check_gradients,
    check_optimizer_steps,
    id_ranges,
    init_bound,
    make_tables,
    random_kjt,
    randomize_,
    reference_values,
    tensor_bytes_allocated,
)
from torchrec_memcom import HashEmbeddingBagCollection, QREmbeddingBagCollection, QREmbeddingBagConfig

METHODS = ["hash", "qr"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _module(method: str, pooling: str = "sum", weighted: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = MODULE_TYPES[method](make_tables(method, pooling), is_weighted=weighted)
    randomize_(module, _gen(seed))
    return module


def _kjt(module: nn.Module, weighted: bool, seed: int = 1, batch_size: int = 6) -> KeyedJaggedTensor:
    ranges = id_ranges(module.embedding_bag_configs())
    return random_kjt(ranges, batch_size, _gen(seed), weighted=weighted, extra_keys=["unused"])


def _one_hot(ids: torch.Tensor, weights: torch.Tensor = None) -> KeyedJaggedTensor:
    """Every feature of ``make_tables`` gets the bags ``[ids[0]], [ids[1]], ...`` (ids < 200)."""
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b", "f1"],
        values=ids.repeat(3),
        lengths=torch.ones(3 * ids.numel(), dtype=torch.int64),
        weights=None if weights is None else weights.repeat(3),
    )


def _qr_tables(module: QREmbeddingBagCollection, table: str) -> tuple:
    bags = module._embedding_bag_collection.embedding_bags
    return bags[table + "__q"].weight, bags[table + "__r"].weight


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pooling", ["sum", "mean", "mixed"])
@pytest.mark.parametrize("weighted", [False, True])
def test_forward_matches_reference(method: str, pooling: str, weighted: bool) -> None:
    module = _module(method, pooling, weighted)
    check_forward(module, _kjt(module, weighted))


@pytest.mark.parametrize("method", METHODS)
def test_unweighted_module_ignores_input_weights(method: str) -> None:
    module = _module(method)
    weighted_kjt = _kjt(module, weighted=True)
    unweighted_kjt = _kjt(module, weighted=False)
    assert torch.equal(module(weighted_kjt).values(), module(unweighted_kjt).values())
    check_forward(module, weighted_kjt)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradients_match_reference(method: str, pooling: str, weighted: bool) -> None:
    module = _module(method, pooling, weighted)
    check_gradients(module, _kjt(module, weighted), _gen(2))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adagrad])
@pytest.mark.parametrize("weighted", [False, True])
def test_optimizer_steps_match_reference(method: str, optimizer: type, weighted: bool) -> None:
    module = _module(method, "mixed", weighted)
    check_optimizer_steps(module, _kjt(module, weighted), optimizer, _gen(3))


# ------------------------------------------------------------------------------------------------------- hashing trick


def test_hash_one_hot_bag_is_the_shared_row() -> None:
    module = _module("hash")
    ids = torch.arange(200)
    out = module(_one_hot(ids)).to_dict()
    h = module.bucketed_hash("t0")
    torch.testing.assert_close(out["f0"], module.shared_weight("t0")[h(ids)])
    assert h.num_rows == 32 and h.num_buckets == 4


def test_hash_colliding_ids_stay_identical_through_training() -> None:
    """The hashing trick cannot tell colliding ids apart (the gap MEmCom's per-id weights close)."""
    module = _module("hash")
    rows = module.bucketed_hash("t0")(torch.arange(200))
    a = 0
    b = int(torch.nonzero(rows == rows[a])[1])
    kjt = _one_hot(torch.tensor([a, b]))
    opt = torch.optim.SGD(module.parameters(), lr=0.2)
    target = torch.stack([torch.full((8,), 0.2), torch.full((8,), 0.6)])
    for _ in range(5):
        opt.zero_grad()
        ((module(kjt).to_dict()["f0"] - target) ** 2).sum().backward()
        opt.step()
    e = module(kjt).to_dict()["f0"]
    assert torch.equal(e[0], e[1])


# ------------------------------------------------------------------------------------------------------------------ QR


def test_qr_one_hot_bag_is_the_elementwise_product() -> None:
    module = _module("qr")
    ids = torch.arange(200)
    x = torch.rand(200, generator=_gen(7)) + 0.5
    q, r = _qr_tables(module, "t0")
    c = 16
    assert module.num_remainder_rows("t0") == c and q.shape == (13, 8) and r.shape == (c, 8)
    expected = q[ids // c] * r[ids % c]
    torch.testing.assert_close(_module("qr")(_one_hot(ids)).to_dict()["f0"], expected)
    # Input weights scale the Q side once, not once per side.
    weighted = _module("qr", weighted=True)
    torch.testing.assert_close(weighted(_one_hot(ids, x)).to_dict()["f0"], x.unsqueeze(1) * expected)


def test_qr_multi_hot_bag_pools_each_side_first() -> None:
    module = _module("qr", pooling="mean")
    ids = torch.tensor([3, 17, 150])
    q, r = _qr_tables(module, "t0")
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b", "f1"], values=torch.cat([ids, ids, ids]), lengths=torch.tensor([3, 3, 3])
    )
    expected = q[ids // 16].mean(0) * r[ids % 16].mean(0)
    torch.testing.assert_close(module(kjt).to_dict()["f0"][0], expected)


def test_qr_starts_from_q_alone() -> None:
    """R is initialised to ones, so at init a one-hot bag is ``Q[i // c]``."""
    torch.manual_seed(0)
    module = QREmbeddingBagCollection(make_tables("qr"))
    q, r = _qr_tables(module, "t0")
    assert torch.equal(r, torch.ones_like(r))
    ids = torch.arange(200)
    torch.testing.assert_close(module(_one_hot(ids)).to_dict()["f0"], q[ids // 16])


# ---------------------------------------------------------------------------------------------------- memory reports


def test_hash_memory_report() -> None:
    module = _module("hash")
    report = module.memory_report()
    assert report.total_bytes == tensor_bytes_allocated(module)
    assert [(t.name, t.method) for t in report.tables] == [("t0", "hash"), ("t1", "hash")]
    assert report.tables[0].components == {"shared_table": 32 * 8 * 4}
    assert report.tables[0].stock_bytes == 200 * 8 * 4
    assert 4.0 <= report.tables[1].compression_ratio <= 4.0 * 1.05


def test_qr_memory_report() -> None:
    module = _module("qr")
    report = module.memory_report()
    assert report.total_bytes == tensor_bytes_allocated(module)
    assert [(t.name, t.method) for t in report.tables] == [("t0", "qr"), ("t1", "qr")]
    assert report.tables[0].components == {"quotient_table": 13 * 8 * 4, "remainder_table": 16 * 8 * 4}
    assert report.tables[1].compression_ratio >= 3.0


@pytest.mark.parametrize("n,ratio", [(1000, 4.0), (10_000, 10.0), (100_000, 100.0), (5000, 2.5)])
def test_qr_memory_report_reaches_the_requested_ratio(n: int, ratio: float) -> None:
    cfg = QREmbeddingBagConfig(name="q", num_embeddings=n, embedding_dim=4, compression_ratio=ratio)
    module = QREmbeddingBagCollection([cfg])
    report = module.memory_report()
    assert report.total_bytes == tensor_bytes_allocated(module)
    assert report.stock_bytes == n * 4 * 4
    assert 1.0 <= ratio <= report.compression_ratio
    # QR's integer c makes the ratio coarse, but never more than the next c's worth off on these shapes.
    assert report.compression_ratio <= 1.25 * ratio


# ------------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "values,match",
    [
        (
            [3, 500],
            r"table 't1', feature 'f1': ids must lie in \[0, 500\), got values in \[3, 500\]",
        ),
        ([-1, 3], r"table 't1', feature 'f1': ids must lie in \[0, 500\), got values in \[-1, 3\]"),
        ([3.0, 4.0], r"KJT values must be int32 or int64 ids, got torch.float32"),
    ],
)
def test_bad_ids_raise(method: str, values: list, match: str) -> None:
    module = _module(method)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b", "f1"], values=torch.tensor([0, 1] + values), lengths=torch.tensor([1, 1, 2])
    )
    with pytest.raises(ValueError, match=match):
        module(kjt)


@pytest.mark.parametrize("method", METHODS)
def test_ids_at_the_edges_are_accepted(method: str) -> None:
    module = _module(method, pooling="mean")
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f1", "f0", "f0b"],
        values=torch.tensor([0, 499, 199, 0], dtype=torch.int32),
        lengths=torch.tensor([2, 1, 1]),
    )
    check_forward(module, kjt)


@pytest.mark.parametrize("method", METHODS)
def test_missing_feature_and_weights_raise(method: str) -> None:
    module = _module(method)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b"], values=torch.tensor([0, 1]), lengths=torch.tensor([1, 1])
    )
    with pytest.raises(ValueError, match=r"feature 'f1' of table 't1' is missing from the input KJT"):
        module(kjt)
    weighted = _module(method, weighted=True)
    with pytest.raises(ValueError, match=r"is_weighted=True.*no weights"):
        weighted(_kjt(weighted, weighted=False))


@pytest.mark.parametrize("method", METHODS)
def test_duplicate_tables_raise(method: str) -> None:
    t0, _ = make_tables(method)
    with pytest.raises(ValueError, match=r"Duplicate table name t0"):
        MODULE_TYPES[method]([t0, t0])


# ---------------------------------------------------------------------------------------------- state dict and meta

FQNS = {
    "hash": [
        "_embedding_bag_collection.embedding_bags.t0.weight",
        "_embedding_bag_collection.embedding_bags.t1.weight",
    ],
    "qr": [
        "_embedding_bag_collection.embedding_bags.t0__q.weight",
        "_embedding_bag_collection.embedding_bags.t0__r.weight",
        "_embedding_bag_collection.embedding_bags.t1__q.weight",
        "_embedding_bag_collection.embedding_bags.t1__r.weight",
    ],
}


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_and_fqns(method: str) -> None:
    source = _module(method, seed=5)
    assert sorted(source.state_dict()) == sorted(FQNS[method] + ["_extra_state"])
    target = MODULE_TYPES[method](make_tables(method))
    kjt = _kjt(source, False)
    assert not torch.equal(source(kjt).values(), target(kjt).values())
    target.load_state_dict(source.state_dict())
    assert torch.equal(source(kjt).values(), target(kjt).values())


@pytest.mark.parametrize("method", METHODS)
def test_meta_construction_then_reset(method: str) -> None:
    tables = make_tables(method, "mixed")
    module = MODULE_TYPES[method](tables, device="meta")
    assert all(p.is_meta for p in module.parameters())
    assert module.memory_report().total_bytes == tensor_bytes_allocated(module)
    module.to_empty(device="cpu")
    module.reset_parameters()
    for t in tables:
        if isinstance(module, HashEmbeddingBagCollection):
            initialised = [module.shared_weight(t.name)]
        else:
            q, r = _qr_tables(module, t.name)
            assert torch.equal(r, torch.ones_like(r))
            initialised = [q]
        for u in initialised:
            assert not u.is_meta and float(u.abs().max()) <= init_bound(t.num_embeddings) and float(u.std()) > 0
    kjt = _kjt(module, False)
    torch.testing.assert_close(module(kjt).values(), reference_values(module, kjt))


def test_qr_pooling_enum_is_respected() -> None:
    """MEAN divides each side by the bag size (so a one-hot MEAN bag equals the SUM bag)."""
    ids = torch.arange(200)
    summed = _module("qr", "sum")(_one_hot(ids)).values()
    meaned = _module("qr", "mean")(_one_hot(ids)).values()
    torch.testing.assert_close(summed, meaned)
    assert make_tables("qr", "mean")[0].pooling == PoolingType.MEAN
