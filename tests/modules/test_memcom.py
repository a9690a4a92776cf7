# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Unsharded MEmCom: ``sum_i x_i * w[s(i)] * U[h(i)]`` against plain-PyTorch reference math."""

import pytest
import torch
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tests.reference import (
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
from torchrec_memcom import (
    HashEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    MEmComEmbeddingBagCollection,
    MEmComEmbeddingBagConfig,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _module(pooling: str = "sum", weighted: bool = False, seed: int = 0) -> MEmComEmbeddingBagCollection:
    torch.manual_seed(seed)
    module = MEmComEmbeddingBagCollection(make_tables("memcom", pooling), is_weighted=weighted)
    randomize_(module, _gen(seed))
    return module


def _kjt(module: MEmComEmbeddingBagCollection, weighted: bool, seed: int = 1, batch_size: int = 6) -> KeyedJaggedTensor:
    ranges = id_ranges(module.embedding_bag_configs())
    return random_kjt(ranges, batch_size, _gen(seed), weighted=weighted, extra_keys=["unused"])


@pytest.mark.parametrize("pooling", ["sum", "mean", "mixed"])
@pytest.mark.parametrize("weighted", [False, True])
def test_forward_matches_reference(pooling: str, weighted: bool) -> None:
    module = _module(pooling, weighted)
    check_forward(module, _kjt(module, weighted))


def test_reference_sees_the_entity_weights() -> None:
    """Guards the reference itself: scaling ``w`` scales the output, and ``w`` is indexed by scrambled id."""
    module = _module()
    kjt = _kjt(module, False)
    before = module(kjt).values()
    with torch.no_grad():
        for w in module.entity_weights.values():
            w.mul_(3.0)
    torch.testing.assert_close(module(kjt).values(), 3.0 * before)
    ids = torch.arange(200)
    h = module.bucketed_hash("t0")
    torch.testing.assert_close(module.entity_weight("t0", ids), module.entity_weights["t0"][h.scramble(ids)])


def test_one_hot_bag_is_w_times_u() -> None:
    module = _module()
    ids = torch.arange(200)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b", "f1"], values=torch.cat([ids, ids, ids]), lengths=torch.ones(600, dtype=torch.int64)
    )
    out = module(kjt).to_dict()
    h = module.bucketed_hash("t0")
    expected = module.entity_weights["t0"][h.scramble(ids)].unsqueeze(1) * module.shared_weight("t0")[h(ids)]
    torch.testing.assert_close(out["f0"], expected)
    torch.testing.assert_close(out["f0b"], expected)


def test_empty_batch_gives_zeros() -> None:
    module = _module(pooling="mean")
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b", "f1"], values=torch.empty(0, dtype=torch.int64), lengths=torch.zeros(9, dtype=torch.int64)
    )
    out = module(kjt)
    assert out.values().shape == (3, 20)
    assert torch.equal(out.values(), torch.zeros(3, 20))


@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradients_match_reference(pooling: str, weighted: bool) -> None:
    module = _module(pooling, weighted)
    check_gradients(module, _kjt(module, weighted), _gen(2))


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adagrad])
@pytest.mark.parametrize("weighted", [False, True])
def test_optimizer_steps_match_reference(optimizer: type, weighted: bool) -> None:
    module = _module("mixed", weighted)
    check_optimizer_steps(module, _kjt(module, weighted), optimizer, _gen(3))


def _colliding_pair(module: MEmComEmbeddingBagCollection, table: str) -> tuple:
    rows = module.bucketed_hash(table)(torch.arange(200)).tolist()
    first = {}
    for i, r in enumerate(rows):
        if r in first:
            return first[r], i
        first[r] = i
    raise AssertionError("no collision")


def test_colliding_ids_separate_after_training() -> None:
    """Two ids on one shared row start identical (w = 1) and differ after a few steps; they stay on that row."""
    torch.manual_seed(0)
    module = MEmComEmbeddingBagCollection(make_tables("memcom"))
    a, b = _colliding_pair(module, "t0")
    h = module.bucketed_hash("t0")
    assert int(h(torch.tensor([a]))) == int(h(torch.tensor([b])))

    def embed() -> torch.Tensor:
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["f0", "f0b", "f1"], values=torch.tensor([a, b, a, b, 0, 0]), lengths=torch.ones(6, dtype=torch.int64)
        )
        return module(kjt).to_dict()["f0"]

    e = embed()
    assert torch.equal(e[0], e[1])
    # Targets on one line but of different lengths: only the per-id weights can tell a and b apart.
    target = torch.stack([torch.full((8,), 0.2), torch.full((8,), 0.6)])
    opt = torch.optim.SGD(module.parameters(), lr=0.2)
    for _ in range(10):
        opt.zero_grad()
        ((embed() - target) ** 2).sum().backward()
        opt.step()
    e = embed().detach()
    assert float((e[0] - e[1]).norm()) > 0.2 * float(e[1].norm())
    # Still one shared row, now scaled by two different weights.
    w = module.entity_weight("t0", torch.tensor([a, b])).detach()
    assert float(w[1] - w[0]) > 0.1
    u = module.shared_weight("t0")[h(torch.tensor([a]))].detach()[0]
    torch.testing.assert_close(e, w.unsqueeze(1) * u)


def _pair(init: float, pooling: PoolingType) -> tuple:
    shape = dict(name="t", num_embeddings=300, embedding_dim=8, feature_names=["f", "g"], pooling=pooling)
    memcom = MEmComEmbeddingBagCollection(
        [MEmComEmbeddingBagConfig(**shape, num_shared_rows=64, num_buckets=4, entity_weight_init=init)],
        is_weighted=True,
    )
    hashed = HashEmbeddingBagCollection(
        [HashEmbeddingBagConfig(**shape, num_shared_rows=64, num_buckets=4)], is_weighted=True
    )
    with torch.no_grad():
        hashed.shared_weight("t").copy_(memcom.shared_weight("t"))
    return memcom, hashed


@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN])
@pytest.mark.parametrize("init", [1.0, 0.25])
def test_memcom_with_constant_w_is_the_hashing_trick(pooling: PoolingType, init: float) -> None:
    memcom, hashed = _pair(init, pooling)
    assert torch.equal(memcom.entity_weights["t"], torch.full((300,), init))
    kjt = random_kjt({"f": 300, "g": 300}, 5, _gen(4), weighted=True)
    torch.testing.assert_close(memcom(kjt).values(), init * hashed(kjt).values())


def test_memory_report_counts_the_allocated_tensors() -> None:
    module = _module()
    report = module.memory_report()
    assert report.total_bytes == tensor_bytes_allocated(module)
    assert [t.name for t in report.tables] == ["t0", "t1"]
    for t in report.tables:
        assert t.method == "memcom"
        assert t.components["shared_table"] == module.shared_weight(t.name).numel() * 4
        assert t.components["entity_weights"] == module.entity_weights[t.name].numel() * 4
    assert report.tables[0].stock_bytes == 200 * 8 * 4
    assert report.tables[1].stock_bytes == 500 * 4 * 4
    assert report.stock_bytes == 200 * 8 * 4 + 500 * 4 * 4
    assert report.compression_ratio == pytest.approx(report.stock_bytes / report.total_bytes)
    # t0: 32 x 8 shared rows + 200 weights; t1 asked for 2x.
    assert report.tables[0].total_bytes == (32 * 8 + 200) * 4
    assert 2.0 <= report.tables[1].compression_ratio <= 2.0 * 1.05


@pytest.mark.parametrize("n,d,ratio", [(1000, 16, 4.0), (1000, 16, 1.0), (997, 8, 2.5), (4000, 32, 20.0)])
def test_memory_report_reaches_the_requested_ratio(n: int, d: int, ratio: float) -> None:
    cfg = MEmComEmbeddingBagConfig(name="t", num_embeddings=n, embedding_dim=d, compression_ratio=ratio)
    module = MEmComEmbeddingBagCollection([cfg])
    report = module.memory_report()
    assert report.total_bytes == tensor_bytes_allocated(module)
    assert report.stock_bytes == n * d * 4
    assert 1.0 <= ratio <= report.compression_ratio <= 1.05 * ratio
    assert "memcom" in str(report) and report.to_dict()["total_bytes"] == report.total_bytes


@pytest.mark.parametrize(
    "values,match",
    [
        (
            [3, 500],
            r"table 't1', feature 'f1': ids must lie in \[0, 500\), got values in \[3, 500\]",
        ),
        ([-1, 3], r"table 't1', feature 'f1': ids must lie in \[0, 500\), got values in \[-1, 3\]"),
        ([10**12, 3], r"table 't1', feature 'f1': ids must lie in \[0, 500\)"),
        # a float KJT: one values tensor for every feature
        ([3.0, 4.0], r"KJT values must be int32 or int64 ids, got torch.float32"),
    ],
)
def test_bad_ids_raise(values: list, match: str) -> None:
    module = _module()
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b", "f1"], values=torch.tensor([0, 1] + values), lengths=torch.tensor([1, 1, 2])
    )
    with pytest.raises(ValueError, match=match):
        module(kjt)


def test_ids_at_the_edges_are_accepted() -> None:
    module = _module()
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f0b", "f1"],
        values=torch.tensor([0, 199, 0, 499], dtype=torch.int32),
        lengths=torch.tensor([1, 1, 2]),
    )
    check_forward(module, kjt)


def test_missing_feature_raises() -> None:
    module = _module()
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f1"], values=torch.tensor([0, 1]), lengths=torch.tensor([1, 1])
    )
    with pytest.raises(ValueError, match=r"feature 'f0b' of table 't0' is missing from the input KJT"):
        module(kjt)


def test_weighted_module_without_weights_raises() -> None:
    module = _module(weighted=True)
    with pytest.raises(ValueError, match=r"is_weighted=True.*no weights"):
        module(_kjt(module, weighted=False))


def test_duplicate_tables_and_features_raise() -> None:
    t0, t1 = make_tables("memcom")
    with pytest.raises(ValueError, match=r"Duplicate table name t0"):
        MEmComEmbeddingBagCollection([t0, t0])
    t1.feature_names = ["f1", "f0"]
    with pytest.raises(ValueError, match=r"feature 'f0' is used by tables 't0' and 't1'"):
        MEmComEmbeddingBagCollection([t0, t1])
    with pytest.raises(TypeError, match=r"takes MEmComEmbeddingBagConfig"):
        MEmComEmbeddingBagCollection(make_tables("hash"))


FQNS = [
    "_embedding_bag_collection.embedding_bags.t0.weight",
    "_embedding_bag_collection.embedding_bags.t1.weight",
    "_extra_state",
    "entity_weights.t0",
    "entity_weights.t1",
]


def test_state_dict_round_trip_and_fqns() -> None:
    source = _module(seed=5)
    assert sorted(source.state_dict()) == FQNS
    assert source.state_dict()["entity_weights.t0"].shape == (200,)
    assert source.state_dict()["_embedding_bag_collection.embedding_bags.t0.weight"].shape == (32, 8)
    target = MEmComEmbeddingBagCollection(make_tables("memcom"))
    kjt = _kjt(source, False)
    assert not torch.equal(source(kjt).values(), target(kjt).values())
    target.load_state_dict(source.state_dict())
    assert torch.equal(source(kjt).values(), target(kjt).values())


@pytest.mark.parametrize("init", [1.0, 0.5])
def test_meta_construction_then_reset(init: float) -> None:
    tables = make_tables("memcom", "mixed")
    for t in tables:
        t.entity_weight_init = init
    module = MEmComEmbeddingBagCollection(tables, device="meta")
    assert all(p.is_meta for p in module.parameters())
    assert module.memory_report().total_bytes == tensor_bytes_allocated(module)  # valid on meta too
    module.to_empty(device="cpu")
    module.reset_parameters()
    for t in tables:
        assert torch.equal(module.entity_weights[t.name], torch.full_like(module.entity_weights[t.name], init))
        u = module.shared_weight(t.name)
        assert not u.is_meta and float(u.abs().max()) <= init_bound(t.num_embeddings) and float(u.std()) > 0
    kjt = _kjt(module, False)
    torch.testing.assert_close(module(kjt).values(), reference_values(module, kjt))
