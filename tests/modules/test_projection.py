# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Tables narrower than their output (``base_dim``, and the low-rank stock table): ``pool(rows) @ P`` against plain
PyTorch, bytes, and the warm start's principal basis."""

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

from tests.reference import random_kjt
from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    QREmbeddingBagConfig,
    compress_,
)
from torchrec_memcom.configs import LowRankEmbeddingBagConfig, projection_bytes
from torchrec_memcom.tables import table_config

D = 16


def _tables() -> list:
    return [
        LowRankEmbeddingBagConfig(name="low", num_embeddings=300, embedding_dim=D, feature_names=["a"], base_dim=4),
        HashEmbeddingBagConfig(
            name="hsh", num_embeddings=500, embedding_dim=D, feature_names=["b"], num_shared_rows=40, base_dim=8,
            pooling=PoolingType.MEAN,
        ),
        QREmbeddingBagConfig(
            name="qr", num_embeddings=200, embedding_dim=D, feature_names=["c"], num_remainder_rows=10, base_dim=8
        ),
        LMAEmbeddingBagConfig(
            name="lma", num_embeddings=200, embedding_dim=D, feature_names=["e"], memory_rows=30, chunk_size=4,
            base_dim=8,
        ),
        EmbeddingBagConfig(name="full", num_embeddings=50, embedding_dim=D, feature_names=["f"]),
    ]  # fmt: skip


def _reference(module: CompressedEmbeddingBagCollection, kjt: KeyedJaggedTensor, feature: str) -> torch.Tensor:
    """The feature's pooled narrow embedding (an unprojected twin collection) times its table's P."""
    table = next(t for t in module.embedding_bag_configs() if feature in t.feature_names)
    out = []
    lengths = kjt.to_dict()[feature].lengths()
    values = kjt.to_dict()[feature].values()
    start = 0
    p = module.projections[table.name].detach()
    for n in lengths.tolist():
        ids = values[start : start + n]
        start += n
        rows = _narrow_rows(module, table, ids)
        pooled = rows.sum(0) if table.pooling == PoolingType.SUM or n == 0 else rows.mean(0)
        out.append(pooled @ p)
    return torch.stack(out)


def _narrow_rows(
    module: CompressedEmbeddingBagCollection, table: EmbeddingBagConfig, ids: torch.Tensor
) -> torch.Tensor:
    kind = module.method_of(table.name).name
    if kind == "lowrank":
        return module.physical_weight(table.name).detach()[ids]
    if kind == "hash":
        return module.shared_weight(table.name).detach()[module.bucketed_hash(table.name)(ids)]
    if kind == "qr":
        c = module.num_remainder_rows(table.name)
        q = module.physical_weight(table.name + "__q").detach()[ids // c]
        r = module.physical_weight(table.name + "__r").detach()[ids % c]
        return q * r  # one-hot bags only in this test for QR
    loc = module.locations(table.name, ids)  # lma: (n, K) rows of width Z
    return module.memory_weight(table.name).detach()[loc].reshape(len(ids), 8)


def test_narrow_tables_match_reference_and_bytes() -> None:
    torch.manual_seed(0)
    module = CompressedEmbeddingBagCollection(_tables())
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    ranges = {f: t.num_embeddings for t in _tables() for f in t.feature_names}
    kjt = random_kjt(ranges, 6, torch.Generator().manual_seed(1), max_len=1)  # one-hot or empty (QR's product)
    out = module(kjt)
    assert out.length_per_key() == [D] * 5
    for f in ("a", "b", "c", "e"):
        torch.testing.assert_close(out.to_dict()[f], _reference(module, kjt, f), rtol=1e-5, atol=1e-5)
    report = {r.name: r for r in module.memory_report().tables}
    assert report["low"].components == {"table": 300 * 4 * 4, "projection": 4 * D * 4}
    assert report["hsh"].components["projection"] == 8 * D * 4 == projection_bytes(_tables()[1])
    assert "projection" not in report["full"].components
    out.values().sum().backward()
    assert float(module.projections["hsh"].grad.abs().sum()) > 0


def test_low_rank_ratio_solves_the_rank() -> None:
    cfg = LowRankEmbeddingBagConfig(name="t", num_embeddings=1000, embedding_dim=64, compression_ratio=16)
    k = cfg.rank()
    assert k == 3 and 1000 * 64 / ((1000 + 64) * k) >= 16
    report = CompressedEmbeddingBagCollection([cfg]).memory_report()
    assert report.compression_ratio >= 16
    assert table_config("t", ["t"], 1000, 64, {"type": "lowrank", "base_dim": 8}).rank() == 8
    with pytest.raises(ValueError, match=r"table 't': base_dim must be an integer in \[1, embedding_dim=64\)"):
        HashEmbeddingBagConfig(name="t", num_embeddings=1000, embedding_dim=64, compression_ratio=4, base_dim=64)


def test_warm_start_projects_on_the_principal_basis() -> None:
    # a trained table of rank 4 in d = 16: a low-rank table of rank 4 reproduces it exactly
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(400, 4, generator=g) @ torch.randn(4, D, generator=g)
    ebc = EmbeddingBagCollection(
        [EmbeddingBagConfig(name="t", num_embeddings=400, embedding_dim=D, feature_names=["f"])]
    )
    with torch.no_grad():
        ebc.embedding_bags["t"].weight.copy_(weight)
    holder = torch.nn.Module()
    holder.ebc = ebc
    compress_(holder, {"t": {"type": "lowrank", "base_dim": 4}})
    ids = torch.arange(400)
    out = holder.ebc(KeyedJaggedTensor.from_lengths_sync(["f"], ids, torch.ones_like(ids))).values()
    torch.testing.assert_close(out.detach(), weight, atol=1e-4, rtol=1e-4)
