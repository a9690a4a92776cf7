# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""LMAEmbeddingBagCollection against a plain-PyTorch reference.

The reference embedding of id ``i`` of a table is ``concat_k M[loc_k(i)]`` with ``loc`` from ``module.locations``
(checked against brute force in ``test_lsh.py``) and ``M`` from ``module.memory_weight``; bags are pooled by explicit
Python loops. Gradients and optimizer steps are checked against autograd on a detached copy of ``M`` and against
the SGD / Adagrad update rules written out by hand.
"""

import copy
import random
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom import LMAEmbeddingBagCollection, LMAEmbeddingBagConfig
from torchrec_memcom.configs import stock_bytes

Rows = Dict[str, List[List[int]]]


def _kjt(rows: Rows, weights: Optional[Dict[str, List[List[float]]]] = None) -> KeyedJaggedTensor:
    keys = list(rows)
    values = torch.tensor([v for k in keys for bag in rows[k] for v in bag], dtype=torch.int64)
    lengths = torch.tensor([len(bag) for k in keys for bag in rows[k]], dtype=torch.int64)
    w = None
    if weights is not None:
        w = torch.tensor([x for k in keys for bag in weights[k] for x in bag], dtype=torch.float32)
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values, lengths=lengths, weights=w)


# Three tables: "t1" (two features) and "t2" share the memory group "shared"; "t3" has its own memory.
_SIZES = {"t1": 50, "t2": 30, "t3": 40}
_FEATURES = {"t1": ["f1", "f2"], "t2": ["f3"], "t3": ["f4"]}
_GROUPS = {"t1": "shared", "t2": "shared", "t3": None}
_ROWS = {"t1": 23, "t2": 17, "t3": 19}
_D = 16


def _tables(chunk: int, pooling: PoolingType = PoolingType.SUM) -> List[LMAEmbeddingBagConfig]:
    return [
        LMAEmbeddingBagConfig(
            name=t,
            num_embeddings=_SIZES[t],
            embedding_dim=_D,
            feature_names=list(_FEATURES[t]),
            memory_rows=_ROWS[t],
            chunk_size=chunk,
            memory_group=_GROUPS[t],
            signature_bytes=4,
            pooling=pooling,
        )
        for t in _SIZES
    ]


def _table_of(feature: str) -> str:
    return next(t for t, fs in _FEATURES.items() if feature in fs)


def _group(table: str) -> str:
    return _GROUPS[table] or table


def _batch(seed: int, batch_size: int = 6, weighted: bool = False) -> Tuple[Rows, Optional[Dict]]:
    """Random multi-hot rows (with empty bags and repeated ids) for every feature."""
    rng = random.Random(seed)
    rows: Rows = {}
    for t, fs in _FEATURES.items():
        for f in fs:
            rows[f] = [[rng.randrange(_SIZES[t]) for _ in range(rng.randint(0, 4))] for _ in range(batch_size)]
            rows[f][1] = []  # always one empty bag
    weights = None
    if weighted:
        weights = {f: [[rng.uniform(-1.0, 2.0) for _ in bag] for bag in bags] for f, bags in rows.items()}
    return rows, weights


def _fitted(chunk: int, pooling: PoolingType = PoolingType.SUM, weighted: bool = False) -> LMAEmbeddingBagCollection:
    torch.manual_seed(0)
    module = LMAEmbeddingBagCollection(_tables(chunk, pooling), is_weighted=weighted)
    # fit on rows that cover only part of each id space, so both signature and fallback locations occur
    rng = random.Random(123)
    fit_rows: Rows = {
        f: [[rng.randrange(_SIZES[_table_of(f)] * 2 // 3) for _ in range(2)] for _ in range(40)]
        for fs in _FEATURES.values()
        for f in fs
    }
    coverage = module.fit_signatures([_kjt(fit_rows)])
    assert all(0.3 < c < 1.0 for c in coverage.values()), coverage
    return module


def _reference(
    module: LMAEmbeddingBagCollection,
    rows: Rows,
    weights: Optional[Dict],
    memories: Dict[str, torch.Tensor],
    pooling: PoolingType,
) -> torch.Tensor:
    """``(B, F * d)``: per feature, per bag, ``sum_i x_i * concat_k M[loc_k(i)]`` (MEAN: divided by bag size)."""
    out = []
    for f in (f for fs in _FEATURES.values() for f in fs):
        t = _table_of(f)
        mem = memories[_group(t)]
        pooled = []
        for b, bag in enumerate(rows[f]):
            acc = torch.zeros(_D)
            if bag:
                loc = module.locations(t, torch.tensor(bag))  # (L, d / Z)
                for j in range(len(bag)):
                    emb = mem[loc[j]].reshape(-1)  # Z = 1: (d,) directly; Z > 1: (d/Z, Z) -> (d,)
                    x = weights[f][b][j] if weights is not None else 1.0
                    acc = acc + x * emb
                if pooling == PoolingType.MEAN:
                    acc = acc / len(bag)
            pooled.append(acc)
        out.append(torch.stack(pooled))
    return torch.cat(out, dim=1)


_CHUNKS = [1, 4, 8]


@pytest.mark.parametrize("chunk", _CHUNKS)
@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN])
@pytest.mark.parametrize("weighted", [False, True])
def test_forward_matches_reference(chunk: int, pooling: PoolingType, weighted: bool) -> None:
    module = _fitted(chunk, pooling, weighted)
    rows, weights = _batch(1, weighted=weighted)
    kt = module(_kjt(rows, weights))
    assert kt.keys() == ["f1", "f2", "f3", "f4"]
    assert kt.length_per_key() == [_D] * 4
    assert kt.values().shape == (6, 4 * _D)
    memories = {g: module.memory_weight(g).detach() for g in ("shared", "t3")}
    ref = _reference(module, rows, weights, memories, pooling)
    torch.testing.assert_close(kt.values(), ref, rtol=1e-5, atol=1e-6)
    assert bool((kt.values()[1] == 0).all())  # the empty bags


@pytest.mark.parametrize("chunk", _CHUNKS)
def test_memory_layout(chunk: int) -> None:
    module = _fitted(chunk)
    for g, rows in (("shared", _ROWS["t1"] + _ROWS["t2"]), ("t3", _ROWS["t3"])):
        assert module.memory_rows(g) == rows
        assert tuple(module.memory_weight(g).shape) == (rows, chunk)  # Z = 1: a (rows, 1) table, unsharded only
    params = dict(module.named_parameters())
    # one memory per group, nothing else trainable
    assert set(params) == {f"_embedding_bag_collection.embedding_bags.{g}__memory.weight" for g in ("shared", "t3")}


def test_extra_features_ignored_and_missing_feature_raises() -> None:
    module = _fitted(4)
    rows, _ = _batch(2)
    with_extra = dict(rows, unrelated=[[0]] * 6)
    torch.testing.assert_close(module(_kjt(with_extra)).values(), module(_kjt(rows)).values())
    del rows["f3"]
    with pytest.raises(ValueError, match="f3"):
        module(_kjt(rows))
    rows, _ = _batch(2)
    rows["f4"][0] = [40]  # t3 has 40 ids
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        module(_kjt(rows))


@pytest.mark.parametrize("chunk", _CHUNKS)
@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN])
def test_gradients_match_reference(chunk: int, pooling: PoolingType) -> None:
    module = _fitted(chunk, pooling, weighted=True)
    rows, weights = _batch(3, batch_size=8, weighted=True)
    coef = torch.randn(8, 4 * _D, generator=torch.Generator().manual_seed(5))
    (module(_kjt(rows, weights)).values() * coef).sum().backward()
    memories = {g: module.memory_weight(g).detach().clone().requires_grad_(True) for g in ("shared", "t3")}
    (_reference(module, rows, weights, memories, pooling) * coef).sum().backward()
    for g, ref in memories.items():
        got = module.memory_weight(g).grad
        assert got is not None and ref.grad is not None
        torch.testing.assert_close(got, ref.grad, rtol=1e-5, atol=1e-6)
        assert bool((ref.grad != 0).any())


def _step_and_compare(chunk: int, make_opt, update) -> None:
    """One optimizer step on the module equals ``update(M, grad, state)`` applied to the reference gradient."""
    module = _fitted(chunk, weighted=True)
    opt = make_opt(module.parameters())
    state: Dict[str, torch.Tensor] = {}
    for step in range(2):
        rows, weights = _batch(10 + step, batch_size=8, weighted=True)
        coef = torch.randn(8, 4 * _D, generator=torch.Generator().manual_seed(step))
        memories = {g: module.memory_weight(g).detach().clone().requires_grad_(True) for g in ("shared", "t3")}
        (_reference(module, rows, weights, memories, PoolingType.SUM) * coef).sum().backward()
        expected = {g: update(m.detach(), m.grad, state, g) for g, m in memories.items()}
        opt.zero_grad()
        (module(_kjt(rows, weights)).values() * coef).sum().backward()
        opt.step()
        for g, want in expected.items():
            torch.testing.assert_close(module.memory_weight(g).detach(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", _CHUNKS)
def test_sgd_step_matches_reference(chunk: int) -> None:
    lr = 0.1

    def update(m, grad, state, g):
        return m - lr * grad

    _step_and_compare(chunk, lambda p: torch.optim.SGD(p, lr=lr), update)


@pytest.mark.parametrize("chunk", _CHUNKS)
def test_adagrad_step_matches_reference(chunk: int) -> None:
    lr, eps = 0.05, 1e-10

    def update(m, grad, state, g):
        state[g] = state.get(g, torch.zeros_like(m)) + grad * grad
        return m - lr * grad / (state[g].sqrt() + eps)

    _step_and_compare(chunk, lambda p: torch.optim.Adagrad(p, lr=lr, eps=eps), update)


# ----------------------------------------------------------------------------------------------------------------
# state dict and memory


def _persistent_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and persistent buffer, each tensor counted once."""
    seen, total = set(), 0
    for sub in module.modules():
        tensors = list(sub._parameters.values()) + [
            b for name, b in sub._buffers.items() if name not in sub._non_persistent_buffers_set
        ]
        for t in tensors:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("chunk", _CHUNKS)
def test_signatures_in_state_dict_and_round_trip(chunk: int) -> None:
    module = _fitted(chunk)
    sd = module.state_dict()
    for t, n in _SIZES.items():
        keys = [k for k in sd if k == f"signatures.{t}" or k.endswith(f".signatures.{t}")]
        assert len(keys) == 1, list(sd)
        sig = sd[keys[0]]
        assert sig.dtype == torch.uint8 and tuple(sig.shape) == (n, 4)
        torch.testing.assert_close(sig, module.table_signatures(t), rtol=0, atol=0)
    torch.manual_seed(99)
    fresh = LMAEmbeddingBagCollection(_tables(chunk))
    rows, _ = _batch(4)
    assert not torch.allclose(fresh(_kjt(rows)).values(), module(_kjt(rows)).values())
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh(_kjt(rows)).values(), module(_kjt(rows)).values(), rtol=0, atol=0)
    for t in _SIZES:
        torch.testing.assert_close(fresh.table_signatures(t), module.table_signatures(t), rtol=0, atol=0)


@pytest.mark.parametrize("chunk", _CHUNKS)
def test_memory_report_counts_memory_and_signatures(chunk: int) -> None:
    module = _fitted(chunk)
    report = module.memory_report()
    by_name = {row.name: row for row in report.tables}
    assert set(by_name) == {"group:shared", "t3"}
    shared, own = by_name["group:shared"], by_name["t3"]
    assert shared.tables == ["t1", "t2"] and own.tables == ["t3"]
    assert shared.components["signatures"] == (_SIZES["t1"] + _SIZES["t2"]) * 4
    assert own.components["signatures"] == _SIZES["t3"] * 4
    assert shared.components["memory"] == (_ROWS["t1"] + _ROWS["t2"]) * chunk * 4
    assert own.components["memory"] == _ROWS["t3"] * chunk * 4
    assert shared.stock_bytes == (_SIZES["t1"] + _SIZES["t2"]) * _D * 4
    assert report.total_bytes == _persistent_bytes(module)
    assert report.compression_ratio == pytest.approx(report.stock_bytes / report.total_bytes)


@pytest.mark.parametrize("ratio", [2.0, 4.0, 7.0, 10.0])
@pytest.mark.parametrize("chunk,signature_bytes", [(4, 4), (8, 8), (16, 4), (1, 8), (8, 0)])
def test_compression_ratio_close_to_requested(ratio: float, chunk: int, signature_bytes: int) -> None:
    n, d = 1000, 32
    t = LMAEmbeddingBagConfig(
        name="big",
        num_embeddings=n,
        embedding_dim=d,
        feature_names=["f"],
        compression_ratio=ratio,
        chunk_size=chunk,
        signature_bytes=signature_bytes,
    )
    module = LMAEmbeddingBagCollection([t])
    report = module.memory_report()
    budget = n * d * 4 / ratio
    assert report.total_bytes <= budget  # never above the budget ...
    assert report.total_bytes > budget - chunk * 4  # ... and within one memory row of it
    assert report.compression_ratio >= ratio
    assert report.compression_ratio == pytest.approx(ratio, rel=0.01)
    assert report.total_bytes == _persistent_bytes(module)
    assert report.tables[0].components["signatures"] == n * signature_bytes


def test_unreachable_ratio_names_table() -> None:
    # n * d * 4 / (n * 8 + 64) = 31.75x is the most 8-byte signatures leave room for at d = 64, Z = 16
    kw = dict(num_embeddings=1000, embedding_dim=64, feature_names=["f"], chunk_size=16, signature_bytes=8)
    LMAEmbeddingBagConfig(name="ok", compression_ratio=31.0, **kw)
    with pytest.raises(ValueError, match="'too_small'.*31.75"):
        LMAEmbeddingBagConfig(name="too_small", compression_ratio=32.0, **kw)
    # fewer signature bytes reach further
    t = LMAEmbeddingBagConfig(name="smaller_sigs", compression_ratio=48.0, **dict(kw, signature_bytes=4))
    assert stock_bytes(t) / (t.rows() * 16 * 4 + 1000 * 4) >= 48.0


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(embedding_dim=12, chunk_size=6, memory_rows=10), "multiple of 4"),
        (dict(embedding_dim=12, chunk_size=8, memory_rows=10), "divide"),
        (dict(embedding_dim=16, chunk_size=0, memory_rows=10), "chunk_size"),
        (dict(embedding_dim=16, compression_ratio=2.0, memory_rows=10), "exactly one"),
        (dict(embedding_dim=16), "exactly one"),
        (dict(embedding_dim=16, memory_rows=10, signature_bytes=3), r"signature_bytes must be 0 or in \[1, 2\]"),
        (dict(embedding_dim=16, memory_rows=20, chunk_size=1, signature_bytes=3), r"in \[4, 32\] for 16 chunks"),
        (dict(embedding_dim=16, memory_rows=10, signature_bytes=-1), "signature_bytes"),
        (dict(embedding_dim=16, memory_rows=10, allocation="lsh"), "allocation"),
        (dict(embedding_dim=16, memory_rows=10, signature_rank=0), "signature_rank"),
        (dict(embedding_dim=16, memory_rows=3, chunk_size=4, signature_bytes=1), "3 memory rows cannot hold 4"),
        (dict(embedding_dim=16, compression_ratio=0.5), "compression_ratio"),
    ],
)
def test_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LMAEmbeddingBagConfig(name="bad", num_embeddings=100, feature_names=["f"], **kw)


def test_default_chunk_size() -> None:
    def z(d: int) -> int:
        return LMAEmbeddingBagConfig(name="t", num_embeddings=10, embedding_dim=d, memory_rows=d).chunk()

    assert (z(64), z(24), z(12), z(6)) == (16, 8, 4, 1)


def test_default_signature_bytes_is_four_or_nearest_valid() -> None:
    def sig(d: int, z: int) -> int:
        t = LMAEmbeddingBagConfig(name="t", num_embeddings=10, embedding_dim=d, chunk_size=z, memory_rows=d)
        assert t.signature_bytes is not None
        return t.signature_bytes

    # 1 chunk: 16-bit codes at most (2 bytes); 4 chunks: 4 bytes = 8 bits each; 32 chunks: 2 bits need 8 bytes
    assert (sig(16, 16), sig(64, 16), sig(32, 1)) == (2, 4, 8)


def test_memory_group_must_agree_on_chunk() -> None:
    a = LMAEmbeddingBagConfig(
        name="a", num_embeddings=10, embedding_dim=16, memory_rows=4, chunk_size=4, memory_group="g"
    )
    b = LMAEmbeddingBagConfig(
        name="b", num_embeddings=10, embedding_dim=16, memory_rows=4, chunk_size=8, memory_group="g"
    )
    with pytest.raises(ValueError, match="chunk"):
        LMAEmbeddingBagCollection([a, b])


def test_duplicate_table_name_raises() -> None:
    tables = _tables(4)
    tables[1] = copy.deepcopy(tables[0])
    with pytest.raises(ValueError, match="Duplicate"):
        LMAEmbeddingBagCollection(tables)


def test_set_signatures_checks_shape() -> None:
    module = LMAEmbeddingBagCollection(_tables(4))
    with pytest.raises(ValueError, match="uint8"):
        module.set_signatures("t1", torch.zeros(_SIZES["t1"], 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        module.set_signatures("t1", torch.zeros(_SIZES["t1"], 4, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------------------------
# meta device


@pytest.mark.parametrize("chunk", _CHUNKS)
def test_meta_construction_to_empty_reset(chunk: int) -> None:
    meta = LMAEmbeddingBagCollection(_tables(chunk), device="meta")
    assert all(p.is_meta for p in meta.parameters())
    reference = _fitted(chunk)
    assert meta.memory_report().total_bytes == reference.memory_report().total_bytes  # bytes are known on meta
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    for g in ("shared", "t3"):
        w = meta.memory_weight(g)
        assert not w.is_meta and bool(torch.isfinite(w).all())
        bound = (1.0 / _SIZES["t1"]) ** 0.5 if g == "shared" else (1.0 / _SIZES["t3"]) ** 0.5
        assert float(w.detach().abs().max()) <= bound + 1e-6  # TorchRec's default init: U(+-sqrt(1/n))
        assert float(w.detach().std()) > 0
    # reset_parameters clears the signatures (to_empty left them uninitialised): no id has one until fit or loaded
    for t in _SIZES:
        assert bool((meta.table_signatures(t) == 255).all())
    meta.load_state_dict(reference.state_dict())
    rows, _ = _batch(5)
    torch.testing.assert_close(meta(_kjt(rows)).values(), reference(_kjt(rows)).values(), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# allocation switches


def _one_table(**kw) -> LMAEmbeddingBagCollection:
    t = LMAEmbeddingBagConfig(
        name="items", num_embeddings=60, embedding_dim=16, feature_names=["item"], chunk_size=4, memory_rows=40, **kw
    )
    return LMAEmbeddingBagCollection([t])


def _fit_rows() -> Rows:
    rng = random.Random(7)
    return {"item": [[rng.randrange(60)] for _ in range(300)], "user": [[rng.randrange(30)] for _ in range(300)]}


def test_hashed_allocation_ignores_signatures_and_skips_fit() -> None:
    semantic, hashed = _one_table(signature_bytes=2), _one_table(signature_bytes=2, allocation="hashed")
    ids = torch.arange(60)
    unfitted = semantic.locations("items", ids)
    assert semantic.fit_signatures([_kjt(_fit_rows())])["items"] > 0.9
    assert hashed.fit_signatures([_kjt(_fit_rows())]) == {"items": 0.0}
    assert bool((hashed.table_signatures("items") == 255).all())  # nothing fitted ...
    hashed.set_signatures("items", semantic.table_signatures("items"))  # ... and loaded signatures are ignored
    torch.testing.assert_close(hashed.locations("items", ids), unfitted, rtol=0, atol=0)
    assert not torch.equal(semantic.locations("items", ids), unfitted)
    # both count the same bytes: the control differs only in the allocation
    assert hashed.memory_report().total_bytes == semantic.memory_report().total_bytes


def test_zero_signature_bytes_spend_everything_on_memory() -> None:
    with_sigs = LMAEmbeddingBagConfig(
        name="a", num_embeddings=1000, embedding_dim=16, chunk_size=4, compression_ratio=4.0, signature_bytes=2
    )
    without = LMAEmbeddingBagConfig(
        name="a", num_embeddings=1000, embedding_dim=16, chunk_size=4, compression_ratio=4.0, signature_bytes=0
    )
    assert without.code_bits() == 0 and with_sigs.code_bits() == 4
    assert without.rows() == 1000 and with_sigs.rows() == 1000 - 1000 * 2 // 16  # 16 bytes per row of Z = 4
    module = LMAEmbeddingBagCollection([without])
    assert module.fit_signatures([_kjt({"a": [[1], [2]], "b": [[3], [4]]})]) == {"a": 0.0}
    assert tuple(module.table_signatures("a").shape) == (1000, 0)
    assert module.memory_report().tables[0].components["signatures"] == 0
    out = module(_kjt({"a": [[1, 2], [], [999]]}))
    assert out.values().shape == (3, 16)


@pytest.mark.parametrize("weighted", [False, True])
def test_raw_ids_expand_to_the_chunk_locations(weighted: bool) -> None:
    """Raw ids out of the transform (each id once), expanded after the input dist, equal the locations sent whole."""
    ebc = LMAEmbeddingBagCollection(_tables(4), is_weighted=weighted)
    g = torch.Generator().manual_seed(3)
    rows = {
        f: [
            torch.randint(0, _SIZES[t], (int(n),), generator=g).tolist() for n in torch.randint(0, 4, (5,), generator=g)
        ]
        for t, fs in _FEATURES.items()
        for f in fs
    }
    weights = {f: [[float(x) + 0.5 for x in bag] for bag in bags] for f, bags in rows.items()} if weighted else None
    kjt = _kjt(rows, weights)
    ebc.fit_signatures([kjt])
    transform = ebc.id_transform
    raw = frozenset(["f1", "f3", "f4"])  # f2 (a feature of t1) keeps its locations
    whole, _ = transform(kjt)
    sent, _ = transform(kjt, raw=raw)
    chunks = _D // 4
    ids_once = sum(len(v) for bags in rows.values() for v in bags) + (chunks - 1) * sum(len(v) for v in rows["f2"])
    assert sent.values().numel() == ids_once  # raw features: each id once, not once per chunk
    per_key = dict(zip(sent.keys(), sent.length_per_key()))
    assert per_key["f1__c1"] == 0 and per_key["f1__c0"] == sum(len(v) for v in rows["f1"])
    expanded = transform.expand(sent, raw)
    assert expanded.keys() == whole.keys() and expanded.length_per_key() == whole.length_per_key()
    torch.testing.assert_close(expanded.values(), whole.values(), rtol=0, atol=0)
    torch.testing.assert_close(expanded.lengths(), whole.lengths(), rtol=0, atol=0)
    if weighted:
        torch.testing.assert_close(expanded.weights(), whole.weights(), rtol=0, atol=0)
    assert transform.expand(whole, frozenset()) is whole  # nothing raw: unchanged
    with pytest.raises(ValueError, match="no CUSTOM segments"):
        transform(kjt, raw=frozenset(["nope"]))


def test_repeated_and_interleaved_chunk_keys_get_their_locations() -> None:
    """Chunk features in any order, some listed twice (as column-wise shardings list them), out of the transform and
    out of ``expand``: each key holds ``lsh.chunk_locations`` of its feature's ids, column by column."""
    from torchrec_memcom.lsh import chunk_locations
    from torchrec_memcom.modules.lma import chunk_feature_name

    ebc = LMAEmbeddingBagCollection(_tables(4))
    rows, _ = _batch(seed=5)
    kjt = _kjt(rows)
    ebc.fit_signatures([kjt])
    transform, method = ebc.id_transform, ebc.methods()["lma"]
    chunks = _D // 4
    want = {}
    for f, bags in rows.items():
        table = _table_of(f)
        ids = torch.tensor([x for bag in bags for x in bag], dtype=torch.int64)
        loc = chunk_locations(ids, ebc.table_signatures(table), *method.location_params(table))
        want.update({chunk_feature_name(f, k): loc[:, k] for k in range(chunks)})
    keys = list(transform.default_order)
    random.Random(0).shuffle(keys)  # chunks of one feature apart, the column holding raw ids anywhere
    order = tuple(keys + [chunk_feature_name("f1", 2), chunk_feature_name("f3", 0)])
    raw = frozenset(["f1", "f4"])
    out, _ = transform(kjt, order=order)
    _assert_keys_hold(out, want)
    holder_first = tuple(sorted(order, key=lambda k: not k.endswith("__c0")))  # expand needs the ids' key first
    sent, _ = transform(kjt, order=holder_first, raw=raw)
    expanded = transform.expand(sent, raw)
    assert expanded.keys() == list(holder_first)
    _assert_keys_hold(expanded, want)


def _assert_keys_hold(kjt: KeyedJaggedTensor, want: Dict[str, torch.Tensor]) -> None:
    """Every key (repeated ones too) holds ``want[key]``."""
    assert len(kjt.keys()) > len(set(kjt.keys()))  # the repeats are there
    for key, values in zip(kjt.keys(), kjt.values().split(kjt.length_per_key())):
        torch.testing.assert_close(values, want[key], rtol=0, atol=0)
