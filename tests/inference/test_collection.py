# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Serving form of a collection against the trained collection itself (the numerical reference): fp32 serving
reproduces it, quantized serving stays within the row-wise quantization bound, bytes follow FBGEMM's row layout,
and bad input fails early."""

from typing import List

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

from tests.inference.models import fit_and_perturb, make_batch, make_dlrm, mixed_tables, trained_collection
from torchrec_memcom import (
    HashEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagCollection,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagCollection,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagCollection,
    QREmbeddingBagConfig,
)
from torchrec_memcom.inference import InferenceConfig, lower_collection, serve_collection, to_inference
from torchrec_memcom.inference.id_maps import HashedRows, PointwiseFeatures
from torchrec_memcom.inference.quantize import storage_bytes

FP32 = InferenceConfig(weight_dtype="fp32", entity_weight_dtype="fp32")


def _features(tables: List[EmbeddingBagConfig]) -> List[str]:
    return [f for t in tables for f in t.feature_names]


# (torch's EmbeddingBag, the stock reference, has no weighted MEAN)
@pytest.mark.parametrize(
    "pooling,weighted", [(PoolingType.SUM, False), (PoolingType.SUM, True), (PoolingType.MEAN, False)]
)
def test_fp32_serving_reproduces_the_mixed_collection(pooling: PoolingType, weighted: bool) -> None:
    tables = mixed_tables(pooling=pooling)
    ebc = trained_collection(tables, weighted=weighted)
    served = serve_collection(ebc, FP32)
    for batch, seed in [(1, 3), (7, 4), (32, 5)]:
        kjt = make_batch(tables, batch, seed=seed, weighted=weighted)
        with torch.no_grad():
            expected, got = ebc(kjt), served(kjt)
        assert got.keys() == expected.keys() == _features(tables)
        assert got.length_per_key() == expected.length_per_key()
        torch.testing.assert_close(got.values(), expected.values(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "cls,config_cls",
    [
        (MEmComEmbeddingBagCollection, MEmComEmbeddingBagConfig),
        (HashEmbeddingBagCollection, HashEmbeddingBagConfig),
        (QREmbeddingBagCollection, QREmbeddingBagConfig),
        (LMAEmbeddingBagCollection, LMAEmbeddingBagConfig),
    ],
)
def test_fp32_serving_reproduces_each_method_collection(cls: type, config_cls: type) -> None:
    tables = [t for t in mixed_tables() if type(t) is config_cls]
    torch.manual_seed(0)
    ebc = cls(tables)
    fit_and_perturb(ebc, tables, seed=0)
    served = serve_collection(ebc, FP32)
    kjt = make_batch(tables, 9, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(served(kjt).values(), ebc(kjt).values(), atol=1e-6, rtol=1e-6)


def test_stock_collection_is_served_like_torchrec_quantizes_it() -> None:
    tables = [t for t in mixed_tables() if type(t) is EmbeddingBagConfig]
    torch.manual_seed(1)
    ebc = EmbeddingBagCollection(tables=tables)
    served = serve_collection(ebc, FP32)
    kjt = make_batch(tables, 6, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(served(kjt).values(), ebc(kjt).values(), atol=1e-6, rtol=1e-6)


def test_key_order_and_extra_keys_of_the_input_do_not_matter() -> None:
    tables = mixed_tables()
    ebc = trained_collection(tables)
    served = serve_collection(ebc, FP32)
    kjt = make_batch(tables, 5, seed=11)
    extra = KeyedJaggedTensor.from_lengths_sync(["zz"], torch.tensor([1, 2, 3, 4, 5]), torch.ones(5, dtype=torch.int64))
    d = {**kjt.to_dict(), **extra.to_dict()}
    shuffled = KeyedJaggedTensor.from_jt_dict({k: d[k] for k in reversed(list(d))})
    with torch.no_grad():
        torch.testing.assert_close(served(shuffled).values(), ebc(kjt).values(), atol=1e-6, rtol=1e-6)


def _max_row_range(served: torch.nn.Module) -> float:
    """Largest ``max - min`` over the rows of the fp32 physical tables the collection was built from."""
    lowered = lower_collection(served)
    return max(float((w.max(1).values - w.min(1).values).max()) for w in lowered.physical.values())


@pytest.mark.parametrize("dtype,levels", [("int8", 255), ("int4", 15)])
def test_rowwise_quantized_serving_is_within_the_quantization_bound(dtype: str, levels: int) -> None:
    # Row-wise int-N stores q = round((x - min) / s), s = (max - min) / levels, with s and min in fp16: each element
    # is off by at most s / 2 plus fp16 rounding, so a SUM bag of L ids weighted by c_i is off by at most
    # sum_i |c_i| * s (QR multiplies two quantized pools, so it is left out here).
    tables = [t for t in mixed_tables() if t.name != "q"]
    ebc = trained_collection(tables)
    cfg = InferenceConfig(weight_dtype=dtype, entity_weight_dtype="fp32")
    exact, quantized = serve_collection(ebc, FP32), serve_collection(ebc, cfg)
    step = _max_row_range(ebc) / levels
    kjt = make_batch(tables, 16, seed=21, max_len=3)
    with torch.no_grad():
        err = (quantized(kjt).values() - exact(kjt).values()).abs()
    max_coefficient = 2.0  # MEmCom weights lie in [0.25, 2]; other ids have weight 1
    bound = 3 * max_coefficient * step  # at most 3 ids per bag
    assert float(err.max()) <= bound
    assert float(err.max()) > 0  # the tables really were quantized


def test_int8_is_closer_than_int4_and_fp16_closer_still() -> None:
    tables = mixed_tables()
    ebc = trained_collection(tables)
    kjt = make_batch(tables, 16, seed=5)
    with torch.no_grad():
        ref = serve_collection(ebc, FP32)(kjt).values()
        errors = {
            d: float((serve_collection(ebc, InferenceConfig(weight_dtype=d))(kjt).values() - ref).abs().max())
            for d in ("fp16", "int8", "int4")
        }
    assert errors["fp16"] < errors["int8"] < errors["int4"] < 0.05


@pytest.mark.parametrize("dtype,tol", [("fp32", 0.0), ("fp16", 2.0**-11), ("int8", 1.0 / 510)])
def test_entity_weights_at_serving_precision(dtype: str, tol: float) -> None:
    w = {"a": torch.linspace(0.2, 3.0, 50), "b": torch.linspace(-1.0, 1.0, 30)}
    lookup = PointwiseFeatures([None, None, None], w, ["a", "s", "b"], dtype)
    for fi, (table, n) in enumerate([("a", 50), ("s", 7), ("b", 30)]):
        ids = torch.arange(n)
        rows, got = lookup(ids, torch.full_like(ids, fi))
        assert torch.equal(rows, ids)  # no hash: rows are the ids
        if table == "s":
            assert torch.equal(got, torch.ones(n))
            continue
        ref = w[table]
        span = float(ref.max() - ref.min())
        # fp16: relative rounding; int8: half a step of the table's range
        limit = tol * ref.abs().max() if dtype == "fp16" else tol * span
        assert float((got - ref).abs().max()) <= float(limit) + 1e-7
    assert lookup.table_bytes() == {"fp32": 4, "fp16": 2, "int8": 1}[dtype] * 80


def test_pointwise_hash_matches_the_table_hash() -> None:
    tables = [t for t in mixed_tables() if isinstance(t, (MEmComEmbeddingBagConfig, HashEmbeddingBagConfig))]
    hashes = {t.name: t.bucketed_hash() for t in tables}
    maps = [
        HashedRows(h.scramble_params, h.padded_num_embeddings, h.ids_per_bucket, h.rows_per_bucket)
        for h in hashes.values()
    ]
    lookup = PointwiseFeatures([maps[0], None, maps[1]], {}, ["m", "s", "h"], "fp16")
    ids = torch.cat([torch.arange(240), torch.arange(50), torch.arange(300)])
    features = torch.cat([torch.zeros(240), torch.ones(50), torch.full((300,), 2)]).to(torch.int64)
    rows, weights = lookup(ids, features)
    assert weights is None
    expected = torch.cat([hashes["m"](torch.arange(240)), torch.arange(50), hashes["h"](torch.arange(300))])
    assert torch.equal(rows, expected)


@pytest.mark.parametrize(
    "dtype,row_bytes",
    [("fp32", lambda d: 4 * d), ("fp16", lambda d: 2 * d), ("int8", lambda d: d + 4), ("int4", lambda d: d // 2 + 4)],
)
@pytest.mark.parametrize("alignment", [1, 16])
def test_embedding_bytes_follow_fbgemm_rows(dtype: str, row_bytes, alignment: int) -> None:
    tables = mixed_tables()
    ebc = trained_collection(tables)
    served = serve_collection(ebc, InferenceConfig(weight_dtype=dtype, row_alignment=alignment))
    lowered = lower_collection(ebc)
    per_table = storage_bytes(served.ebc)
    for name, w in lowered.physical.items():
        rows, dim = w.shape
        aligned = -(-row_bytes(dim) // alignment) * alignment
        assert per_table[name] == rows * aligned, name
    tables_total = sum(per_table[name] for name in lowered.physical)
    assert tables_total <= per_table["total"] <= tables_total + 64 * len(lowered.physical)
    report = served.embedding_bytes()
    mem = tables[0]
    assert report["entity_weights"] == mem.num_embeddings * 2  # fp16 by default
    lma = [t for t in tables if isinstance(t, LMAEmbeddingBagConfig)]
    assert report["signatures"] == sum(t.num_embeddings * t.signature_bytes for t in lma)
    assert report["projections"] == 0
    assert report["total"] == report["tables"] + report["entity_weights"] + report["signatures"]
    assert report["stock_fp32"] == sum(t.num_embeddings * t.embedding_dim * 4 for t in tables)


def test_to_inference_swaps_collections_in_a_copy() -> None:
    tables = mixed_tables()
    model = make_dlrm(tables).model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    served = to_inference(model, FP32)
    assert type(model.sparse_arch.embedding_bag_collection).__name__ == "CompressedEmbeddingBagCollection"
    assert type(served.sparse_arch.embedding_bag_collection).__name__ == "InferenceEmbeddingBagCollection"
    assert not served.training
    dense_params = {id(p) for p in model.dense_arch.parameters()}
    assert dense_params.isdisjoint(id(p) for p in served.dense_arch.parameters())
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k
    kjt = make_batch(tables, 4, seed=1)
    dense = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(served(dense, kjt), model(dense, kjt), atol=1e-5, rtol=1e-5)


def test_bad_ids_fail_with_the_feature_bounds() -> None:
    tables = mixed_tables()
    served = serve_collection(trained_collection(tables))
    kjt = make_batch(tables, 4, seed=1)
    for bad in (10_000, -1):
        values = kjt.values().clone()
        values[0] = bad
        broken = KeyedJaggedTensor(keys=kjt.keys(), values=values, lengths=kjt.lengths())
        with pytest.raises(RuntimeError, match=r"ids out of range.*fm < 240"):
            served(broken)


def test_bad_inputs_and_unservable_modules_fail_early() -> None:
    tables = mixed_tables()
    ebc = trained_collection(tables)
    served = serve_collection(ebc)
    kjt = make_batch(tables, 4, seed=1)
    partial = KeyedJaggedTensor.from_jt_dict({k: v for k, v in kjt.to_dict().items() if k != "fh"})
    with pytest.raises(ValueError, match="'fh'"):
        served(partial)
    weighted = serve_collection(trained_collection(tables, weighted=True))
    with pytest.raises(ValueError, match="is_weighted"):
        weighted(kjt)
    with pytest.raises(TypeError, match="cannot serve a Linear"):
        lower_collection(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="holds no embedding-bag collection"):
        to_inference(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    elementwise = LMAEmbeddingBagCollection(
        [
            LMAEmbeddingBagConfig(
                name="z",
                num_embeddings=20,
                embedding_dim=8,
                feature_names=["z"],
                memory_rows=30,
                chunk_size=1,
                signature_bytes=4,
            )
        ]
    )
    with pytest.raises(ValueError, match="table 'z'.*chunk_size=1"):
        serve_collection(elementwise)
    on_meta = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name="s", num_embeddings=5, embedding_dim=4)], device=torch.device("meta")
    )
    with pytest.raises(ValueError, match="meta"):
        serve_collection(on_meta)


def test_inference_config_validates_and_round_trips() -> None:
    cfg = InferenceConfig(weight_dtype="int4", entity_weight_dtype="int8", row_alignment=1, check_ids=False)
    assert InferenceConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="weight_dtype"):
        InferenceConfig(weight_dtype="int3")
    with pytest.raises(ValueError, match="entity_weight_dtype"):
        InferenceConfig(entity_weight_dtype="bf16")
    with pytest.raises(ValueError, match="row_alignment"):
        InferenceConfig(row_alignment=0)
    with pytest.raises(ValueError, match="unknown InferenceConfig field"):
        InferenceConfig.from_dict({"weight_dtype": "int8", "dtype": "int8"})


def test_fp32_serving_reproduces_narrow_tables_with_output_projections() -> None:
    import torchrec_memcom.configs as configs

    low_rank = getattr(configs, "LowRankEmbeddingBagConfig", None)
    if low_rank is None:
        pytest.skip("this generation of the modules has no base_dim / low-rank tables")
    tables = [
        low_rank(name="r", num_embeddings=120, embedding_dim=16, feature_names=["fr"], base_dim=8),
        MEmComEmbeddingBagConfig(
            name="m",
            num_embeddings=240,
            embedding_dim=16,
            feature_names=["fm"],
            num_shared_rows=32,
            num_buckets=8,
            base_dim=8,
            pooling=PoolingType.MEAN,
        ),
        QREmbeddingBagConfig(
            name="q", num_embeddings=150, embedding_dim=16, feature_names=["fq"], num_remainder_rows=12, base_dim=8
        ),
        EmbeddingBagConfig(name="s", num_embeddings=50, embedding_dim=16, feature_names=["fs"]),
    ]
    ebc = trained_collection(tables)
    served = serve_collection(ebc, FP32)
    assert served.embedding_bytes()["projections"] == 3 * 8 * 16 * 4
    kjt = make_batch(tables, 9, seed=13)
    with torch.no_grad():
        torch.testing.assert_close(served(kjt).values(), ebc(kjt).values(), atol=1e-5, rtol=1e-5)
