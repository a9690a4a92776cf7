# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The mixed collection: stock, MEmCom, hashing-trick and QR tables behind one ``EmbeddingBagCollection`` interface."""

from typing import List

import pytest
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tests.interpreted import run_interpreted
from tests.reference import (
    check_forward,
    check_gradients,
    check_optimizer_steps,
    id_ranges,
    init_bound,
    random_kjt,
    randomize_,
    reference_values,
    tensor_bytes_allocated,
)
from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    MEmComEmbeddingBagCollection,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)

SUM, MEAN = PoolingType.SUM, PoolingType.MEAN

I32 = torch.int32


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tables(weighted: bool = False) -> List[EmbeddingBagConfig]:
    """Methods interleaved, so that the output must be regrouped into table order (stock MEAN only unweighted)."""
    stock_pooling = SUM if weighted else MEAN
    return [
        MEmComEmbeddingBagConfig(
            name="m0",
            num_embeddings=200,
            embedding_dim=8,
            feature_names=["m0a", "m0b"],
            num_shared_rows=32,
            num_buckets=4,
        ),
        EmbeddingBagConfig(name="s0", num_embeddings=50, embedding_dim=4, feature_names=["s0"]),
        QREmbeddingBagConfig(
            name="q0", num_embeddings=300, embedding_dim=8, feature_names=["q0"], num_remainder_rows=20, pooling=MEAN
        ),
        HashEmbeddingBagConfig(
            name="h0", num_embeddings=400, embedding_dim=4, feature_names=["h0a", "h0b"], compression_ratio=4.0
        ),
        MEmComEmbeddingBagConfig(
            name="m1", num_embeddings=100, embedding_dim=4, feature_names=["m1"], compression_ratio=2.0, pooling=MEAN
        ),
        EmbeddingBagConfig(name="s1", num_embeddings=30, embedding_dim=8, feature_names=["s1"], pooling=stock_pooling),
    ]


def _module(weighted: bool = False, seed: int = 0) -> CompressedEmbeddingBagCollection:
    torch.manual_seed(seed)
    module = CompressedEmbeddingBagCollection(_tables(weighted), is_weighted=weighted)
    randomize_(module, _gen(seed))
    return module


def _kjt(module: CompressedEmbeddingBagCollection, weighted: bool, seed: int = 1) -> KeyedJaggedTensor:
    return random_kjt(id_ranges(module.embedding_bag_configs()), 5, _gen(seed), weighted=weighted, extra_keys=["x"])


def test_one_physical_collection_for_every_method() -> None:
    module = _module()
    assert list(module.methods()) == ["memcom", "stock", "qr", "hash"]
    assert [t.name for t in module.methods()["memcom"].tables] == ["m0", "m1"]
    assert [t.name for t in module.methods()["stock"].tables] == ["s0", "s1"]
    assert module.method_of("q0").name == "qr"
    # One stock EBC holds every physical table, in the order of the logical tables they serve.
    inner = module._embedding_bag_collection
    assert isinstance(inner, EmbeddingBagCollection) and inner.is_weighted()  # MEmCom weights every lookup
    assert [c.name for c in module.physical_table_configs()] == ["m0", "s0", "q0__q", "q0__r", "h0", "m1", "s1"]
    assert all(c.pooling == SUM for c in module.physical_table_configs())  # MEAN is applied when combining


@pytest.mark.parametrize("weighted", [False, True])
def test_forward_is_each_tables_reference_in_table_order(weighted: bool) -> None:
    module = _module(weighted)
    kjt = _kjt(module, weighted)
    check_forward(module, kjt)
    out = module(kjt)
    assert out.keys() == ["m0a", "m0b", "s0", "q0", "h0a", "h0b", "m1", "s1"]
    assert out.offset_per_key() == [0, 8, 16, 20, 28, 32, 36, 40, 48]
    # A table's slice is what a collection of that table alone gives with the same weights.
    pooled = out.to_dict()
    alone = MEmComEmbeddingBagCollection([t for t in _tables(weighted) if t.name == "m1"], is_weighted=weighted)
    alone.load_state_dict(
        {
            "_embedding_bag_collection.embedding_bags.m1.weight": module.physical_weight("m1"),
            "entity_weights.m1": module.entity_weights["m1"],
            "_extra_state": alone.get_extra_state(),
        }
    )
    torch.testing.assert_close(alone(kjt).to_dict()["m1"], pooled["m1"])


def test_single_method_collection_keeps_config_order() -> None:
    tables = [t for t in _tables() if isinstance(t, MEmComEmbeddingBagConfig)]
    module = CompressedEmbeddingBagCollection(tables)
    randomize_(module, _gen(0))
    check_forward(module, _kjt(module, False))


@pytest.mark.parametrize("weighted", [False, True])
def test_gradients_reach_every_child(weighted: bool) -> None:
    module = _module(weighted)
    check_gradients(module, _kjt(module, weighted), _gen(2))
    for name, p in module.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adagrad])
def test_optimizer_steps_match_reference(optimizer: type) -> None:
    module = _module()
    check_optimizer_steps(module, _kjt(module, False), optimizer, _gen(3))


def test_memory_report_covers_every_table() -> None:
    module = _module()
    report = module.memory_report()
    assert report.total_bytes == tensor_bytes_allocated(module)
    by_name = {t.name: t for t in report.tables}
    assert sorted(by_name) == sorted(t.name for t in _tables())
    assert {name: t.method for name, t in by_name.items()} == {
        "m0": "memcom",
        "m1": "memcom",
        "s0": "stock",
        "s1": "stock",
        "q0": "qr",
        "h0": "hash",
    }
    for t in _tables():
        assert by_name[t.name].stock_bytes == t.num_embeddings * t.embedding_dim * 4
    assert by_name["s0"].components == {"table": 50 * 4 * 4} and by_name["s0"].compression_ratio == 1.0
    assert by_name["m0"].components == {"shared_table": 32 * 8 * 4, "entity_weights": 200 * 4}
    assert by_name["q0"].components == {"quotient_table": 15 * 8 * 4, "remainder_table": 20 * 8 * 4}
    assert report.stock_bytes == sum(t.num_embeddings * t.embedding_dim * 4 for t in _tables())
    assert report.compression_ratio == pytest.approx(report.stock_bytes / report.total_bytes)
    assert report.compression_ratio > 1.0


FQNS = [
    "_embedding_bag_collection.embedding_bags.h0.weight",
    "_embedding_bag_collection.embedding_bags.m0.weight",
    "_embedding_bag_collection.embedding_bags.m1.weight",
    "_embedding_bag_collection.embedding_bags.q0__q.weight",
    "_embedding_bag_collection.embedding_bags.q0__r.weight",
    "_embedding_bag_collection.embedding_bags.s0.weight",
    "_embedding_bag_collection.embedding_bags.s1.weight",
    "_extra_state",
    "entity_weights.m0",
    "entity_weights.m1",
]


def test_state_dict_round_trip_and_fqns() -> None:
    source = _module(seed=5)
    assert sorted(source.state_dict()) == FQNS
    target = CompressedEmbeddingBagCollection(_tables())
    kjt = _kjt(source, False)
    assert not torch.equal(source(kjt).values(), target(kjt).values())
    target.load_state_dict(source.state_dict())
    assert torch.equal(source(kjt).values(), target(kjt).values())


def test_meta_construction_then_reset() -> None:
    tables = _tables()
    module = CompressedEmbeddingBagCollection(tables, device="meta")
    assert all(p.is_meta for p in module.parameters())
    module.to_empty(device="cpu")
    module.reset_parameters()
    params = dict(module.named_parameters())
    for t in tables:
        for name, p in params.items():
            if name.endswith(f".{t.name}.weight") or name.endswith(f".{t.name}__q.weight"):
                assert float(p.abs().max()) <= init_bound(t.num_embeddings) and float(p.std()) > 0, name
    assert torch.equal(params["entity_weights.m0"], torch.ones(200))
    r = params["_embedding_bag_collection.embedding_bags.q0__r.weight"]
    assert torch.equal(r, torch.ones_like(r))
    kjt = _kjt(module, False)
    torch.testing.assert_close(module(kjt).values(), reference_values(module, kjt))


@pytest.mark.parametrize(
    "feature,bad_id,match",
    [
        ("m1", 100, r"table 'm1', feature 'm1': ids must lie in \[0, 100\)"),
        ("h0b", -3, r"table 'h0', feature 'h0b': ids must lie in \[0, 400\)"),
        ("q0", 300, r"table 'q0', feature 'q0': ids must lie in \[0, 300\)"),
    ],
)
def test_bad_ids_of_compressed_tables_raise(feature: str, bad_id: int, match: str) -> None:
    module = _module()
    features = id_ranges(_tables())
    values = torch.tensor([bad_id if f == feature else 0 for f in features])
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=list(features), values=values, lengths=torch.ones(len(features), dtype=torch.int64)
    )
    with pytest.raises(ValueError, match=match):
        module(kjt)


def test_configuration_errors() -> None:
    tables = _tables()
    with pytest.raises(ValueError, match=r"Duplicate table name"):
        CompressedEmbeddingBagCollection([tables[0], tables[1], tables[0]])
    clash = HashEmbeddingBagConfig(
        name="h9", num_embeddings=10, embedding_dim=4, feature_names=["m0a"], num_shared_rows=2
    )
    with pytest.raises(ValueError, match=r"feature 'm0a' is used by tables 'm0' and 'h9'"):
        CompressedEmbeddingBagCollection([tables[0], clash])
    with pytest.raises(ValueError, match=r"needs at least one table"):
        CompressedEmbeddingBagCollection([])


def test_stock_tables_are_checked_too() -> None:
    from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

    from torchrec_memcom import CompressedEmbeddingBagCollection, HashEmbeddingBagConfig

    ebc = CompressedEmbeddingBagCollection(
        [
            EmbeddingBagConfig(name="s", num_embeddings=10, embedding_dim=4, feature_names=["fs"]),
            HashEmbeddingBagConfig(
                name="h", num_embeddings=100, embedding_dim=4, feature_names=["fh"], compression_ratio=2
            ),
        ]
    )
    bad = KeyedJaggedTensor.from_lengths_sync(["fs", "fh"], torch.tensor([10, 3]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"table 's', feature 'fs'.*\[0, 10\).*\[10, 10\]"):
        ebc(bad)
    missing = KeyedJaggedTensor.from_lengths_sync(["fh"], torch.tensor([3]), torch.tensor([1]))
    with pytest.raises(ValueError, match="feature 'fs' of table 's' is missing"):
        ebc(missing)


def _offsets_or_not(kjt: KeyedJaggedTensor, offsets: bool) -> KeyedJaggedTensor:
    """``kjt`` as a new KJT that carries its offsets, or only its lengths."""
    return KeyedJaggedTensor(
        keys=kjt.keys(),
        values=kjt.values(),
        lengths=kjt.lengths(),
        offsets=kjt.offsets() if offsets else None,
        weights=kjt.weights_or_none(),
    )


def check_transform_paths_on_cpu() -> None:
    """Under Triton's interpreter: the id transform's kernel, with the segments read from the KJT's offsets and
    from rows copied from the host, gives the PyTorch path's physical KJT (keys in another order, an extra key,
    empty bags, LMA's chunks, weights), batch after batch (its two statistics buffers alternate); LMA's raw ids
    expanded (``expand``, on either path) give that KJT too; and with ``index_dtype=torch.int32`` (the sharded
    lookup's), the same ids and lengths as int32, on either path."""
    import os

    from torchrec_memcom import LMAEmbeddingBagConfig
    from torchrec_memcom.ops import _triton_importable, triton_enabled

    assert triton_enabled(torch.zeros(1)), "run under TRITON_INTERPRET=1 with triton installed"
    for weighted in (False, True):
        tables = _tables(weighted) + [
            LMAEmbeddingBagConfig(
                name="l0", num_embeddings=300, embedding_dim=8, feature_names=["l0"], memory_rows=40, chunk_size=4
            )
        ]
        module = CompressedEmbeddingBagCollection(tables, is_weighted=weighted)
        module.fit_signatures([random_kjt(id_ranges(tables), 64, _gen(4))])
        transform = module.id_transform
        raw = frozenset({"l0"})
        for seed in range(3):
            kjt = random_kjt(id_ranges(tables), 32, _gen(seed), weighted=weighted, extra_keys=["x"])
            os.environ["TORCHREC_MEMCOM_DISABLE_TRITON"] = "1"
            _triton_importable.cache_clear()  # read once per process otherwise
            try:
                assert not triton_enabled(kjt.values())
                want, want_divisors = transform(_offsets_or_not(kjt, False))
                want_expanded = transform.expand(transform(kjt, raw=raw)[0], raw)
                narrow = [transform(kjt, index_dtype=I32)[0]]
                narrow.append(transform.expand(transform(kjt, raw=raw, index_dtype=I32)[0], raw, I32))
            finally:
                del os.environ["TORCHREC_MEMCOM_DISABLE_TRITON"]
                _triton_importable.cache_clear()
            assert triton_enabled(kjt.values())
            # LMA's raw ids, expanded after the (here absent) input dist: the KJT the transform gives without them
            got_expanded = transform.expand(transform(kjt, raw=raw)[0], raw)
            narrow.append(transform.expand(transform(kjt, raw=raw, index_dtype=I32)[0], raw, I32))
            narrow += [transform(_offsets_or_not(kjt, o), index_dtype=I32)[0] for o in (True, False)]
            for n in narrow:
                assert n.keys() == want.keys() and n.length_per_key() == want.length_per_key()
                assert n.values().dtype == I32 and n.lengths().dtype == I32
                torch.testing.assert_close(n.values().long(), want.values(), rtol=0, atol=0)
                torch.testing.assert_close(n.lengths().long(), want.lengths().long(), rtol=0, atol=0)
                if weighted:
                    torch.testing.assert_close(n.weights(), want.weights(), rtol=0, atol=0)
            for expanded in (want_expanded, got_expanded):
                assert expanded.keys() == want.keys() and expanded.length_per_key() == want.length_per_key()
                torch.testing.assert_close(expanded.values(), want.values(), rtol=0, atol=0)
                torch.testing.assert_close(expanded.lengths(), want.lengths(), rtol=0, atol=0)
                if weighted:
                    torch.testing.assert_close(expanded.weights(), want.weights(), rtol=0, atol=0)
            for offsets in (True, False):
                features = _offsets_or_not(kjt, offsets)
                assert (features.offsets_or_none() is not None) == offsets
                got, divisors = transform(features)
                assert got.keys() == want.keys() and got.length_per_key() == want.length_per_key()
                torch.testing.assert_close(got.values(), want.values(), rtol=0, atol=0)
                torch.testing.assert_close(got.lengths(), want.lengths(), rtol=0, atol=0)
                torch.testing.assert_close(divisors, want_divisors, rtol=0, atol=0)
                if weighted:
                    torch.testing.assert_close(got.weights(), want.weights(), rtol=0, atol=0)
                check_transform_with_slots(module, features)  # the kernel writes MEmCom's rows and slots


def check_transform_with_slots(module: CompressedEmbeddingBagCollection, kjt: KeyedJaggedTensor) -> None:
    """``IdTransform.transform_with_slots``: MEmCom's segments hold the shared rows ``h(s)`` of the scrambled ids ``s``
    that ``forward`` gives (``BucketedHash.rows_of_scrambled``) and their slots ``s + base``; every other value is
    ``forward``'s, its slot ``ones + position % ONE_SLOTS``; requests naming other segments raise."""
    from torchrec_memcom.modules.transform import EntitySlots
    from torchrec_memcom.ops import ONE_SLOTS

    transform = module.id_transform
    bases = {"m0a": 1_000, "m0b": 1_000, "m1": 5_000}
    request = EntitySlots(bases=tuple(bases.items()), ones=9_000)
    want, want_divisors = transform(kjt)
    for dtype in (torch.int64, I32):
        got, divisors, slots = transform.transform_with_slots(kjt, request, index_dtype=dtype)
        assert got.keys() == want.keys() and got.length_per_key() == want.length_per_key()
        assert got.values().dtype == dtype and slots.dtype == request.dtype and slots.numel() == got.values().numel()
        torch.testing.assert_close(divisors, want_divisors, rtol=0, atol=0)
        torch.testing.assert_close(got.lengths().long(), want.lengths().long(), rtol=0, atol=0)
        want_slots = 9_000 + torch.arange(slots.numel()) % ONE_SLOTS
        want_values = want.values().clone()
        for key, start, n in zip(want.keys(), want.offset_per_key(), want.length_per_key()):
            if key in bases:
                s = want.values()[start : start + n]
                table = "m0" if key.startswith("m0") else "m1"
                want_values[start : start + n] = module.bucketed_hash(table).rows_of_scrambled(s)
                want_slots[start : start + n] = s + bases[key]
        torch.testing.assert_close(got.values().cpu().long(), want_values.cpu(), rtol=0, atol=0)
        torch.testing.assert_close(slots.cpu().long(), want_slots, rtol=0, atol=0)
    with pytest.raises(ValueError, match="'h0a' is not a SCRAMBLE segment"):
        transform.transform_with_slots(kjt, EntitySlots(bases=(("h0a", 0),), ones=0))
    with pytest.raises(ValueError, match="not in the order"):
        transform.transform_with_slots(kjt, EntitySlots(bases=(("nope", 0),), ones=0))


@pytest.mark.parametrize("weighted", [False, True])
def test_transform_with_slots(weighted: bool) -> None:
    module = _module(weighted)
    check_transform_with_slots(module, _kjt(module, weighted))


def test_transform_kernel_paths_interpreted() -> None:
    run_interpreted("tests.modules.test_compressed", "check_transform_paths_on_cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("weighted", [False, True])
def test_cuda_matches_cpu(weighted: bool) -> None:
    """The fused CUDA transform (Triton) gives the CPU reference's outputs and gradients."""
    from torchrec_memcom import LMAEmbeddingBagConfig

    tables = _tables(weighted) + [
        LMAEmbeddingBagConfig(
            name="l0", num_embeddings=300, embedding_dim=8, feature_names=["l0"], memory_rows=40, chunk_size=4
        )
    ]
    torch.manual_seed(0)
    cpu = CompressedEmbeddingBagCollection(tables, is_weighted=weighted)
    randomize_(cpu, _gen(0))
    cpu.fit_signatures([random_kjt(id_ranges(tables), 64, _gen(4))])
    gpu = CompressedEmbeddingBagCollection(tables, is_weighted=weighted, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    kjt = random_kjt(id_ranges(tables), 32, _gen(1), weighted=weighted, extra_keys=["x"])
    out_cpu, out_gpu = cpu(kjt), gpu(kjt.to("cuda"))
    assert out_gpu.keys() == out_cpu.keys()
    for offsets in (True, False):  # the segments read from the KJT's offsets on the GPU, or rows from the host
        again = gpu(_offsets_or_not(kjt.to("cuda"), offsets)).values().detach().cpu()
        torch.testing.assert_close(again, out_cpu.values().detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_gpu.values().cpu(), out_cpu.values(), rtol=1e-5, atol=1e-6)
    upstream = torch.randn(out_cpu.values().shape, generator=_gen(2))
    (out_cpu.values() * upstream).sum().backward()
    (out_gpu.values() * upstream.cuda()).sum().backward()
    grads = dict(gpu.named_parameters())
    for name, p in cpu.named_parameters():
        torch.testing.assert_close(grads[name].grad.cpu(), p.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.gpu
def test_cuda_bad_ids_raise_one_batch_later() -> None:
    module = CompressedEmbeddingBagCollection(_tables(), device="cuda")
    features = id_ranges(_tables())
    bad = torch.tensor([100 if f == "m1" else 0 for f in features])
    kjt = KeyedJaggedTensor.from_lengths_sync(list(features), bad, torch.ones(len(features), dtype=torch.int64))
    module(kjt.to("cuda"))  # no host sync: checked at the next call
    good = KeyedJaggedTensor.from_lengths_sync(list(features), bad * 0, torch.ones(len(features), dtype=torch.int64))
    with pytest.raises(ValueError, match=r"table 'm1', feature 'm1'.*\[0, 100\).*previous batch"):
        module(good.to("cuda"))
    # the statistics' pinned buffer is reused: later batches are judged on their own ids
    for _ in range(3):
        module(good.to("cuda"))
    worse = torch.tensor([-3 if f == "h0b" else 0 for f in features])
    ones = torch.ones(len(features), dtype=torch.int64)
    module(KeyedJaggedTensor.from_lengths_sync(list(features), worse, ones).to("cuda"))
    with pytest.raises(ValueError, match=r"table 'h0', feature 'h0b'.*got values in \[-3, -3\].*previous batch"):
        module(good.to("cuda"))
    module(good.to("cuda"))
    module.id_transform.input_check.flush()
