# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""compress_: stock EmbeddingBagCollections of any model become compressed ones, rules pick each table's method,
and warm starts reproduce trained tables as well as their structure allows (checked against plain-PyTorch math)."""

from typing import Dict

import pytest
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.models.dlrm import DLRM

from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    CompressionConfig,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
    compress_,
    warm_start_,
)

D = 8


def _stock_tables() -> list:
    sizes = {"t_user": 4000, "t_item": 3000, "t_user_zip": 2000, "t_age": 7}
    return [
        EmbeddingBagConfig(name=n, num_embeddings=s, embedding_dim=D, feature_names=[n[2:]]) for n, s in sizes.items()
    ]


def _one_hot(table: EmbeddingBagConfig, ids: torch.Tensor) -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths_sync(table.feature_names, ids, torch.ones_like(ids))


def _per_id(module: nn.Module, table: EmbeddingBagConfig) -> torch.Tensor:
    """The module's embedding of every id of ``table`` (``n x d``), one-hot bags."""
    n = table.num_embeddings
    keys = [f for t in module.embedding_bag_configs() for f in t.feature_names]
    lengths = torch.cat(
        [
            torch.ones(n, dtype=torch.int64) if k == table.feature_names[0] else torch.zeros(n, dtype=torch.int64)
            for k in keys
        ]
    )
    kjt = KeyedJaggedTensor.from_lengths_sync(keys, torch.arange(n), lengths)
    return module(kjt).to_dict()[table.feature_names[0]].detach()


def test_rules_pick_methods_in_a_dlrm_on_meta() -> None:
    ebc = EmbeddingBagCollection(_stock_tables(), device=torch.device("meta"))
    model = DLRM(
        embedding_bag_collection=ebc, dense_in_features=3, dense_arch_layer_sizes=[D], over_arch_layer_sizes=[4, 1]
    )
    config = CompressionConfig(
        {
            "t_item": {"type": "memcom", "compression": 4},
            "re:t_user.*": {"type": "hash", "compression": 4},
            "t_user_zip": {"type": "qr", "compression": 4},  # an exact name wins over a pattern
            "_default": {"type": "lma", "compression": 2, "signature_bytes": 4},
        },
        min_rows=100,  # t_age stays stock though _default would compress it
    )
    replaced = compress_(model, config)
    new = model.sparse_arch.embedding_bag_collection
    assert list(replaced) == ["sparse_arch.embedding_bag_collection"] and replaced[list(replaced)[0]] is new
    assert isinstance(new, CompressedEmbeddingBagCollection)
    types = {t.name: type(t) for t in new.embedding_bag_configs()}
    assert types == {
        "t_user": HashEmbeddingBagConfig,
        "t_item": MEmComEmbeddingBagConfig,
        "t_user_zip": QREmbeddingBagConfig,
        "t_age": EmbeddingBagConfig,
    }
    assert all(p.is_meta for p in new.parameters())
    # same logical tables: DLRM's view (dims, features) is unchanged
    assert [(t.name, t.num_embeddings, t.feature_names) for t in new.embedding_bag_configs()] == [
        (t.name, t.num_embeddings, t.feature_names) for t in _stock_tables()
    ]
    assert new.memory_report().compression_ratio > 3


def test_filter_fn_and_plain_mapping() -> None:
    class TwoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = EmbeddingBagCollection(_stock_tables()[:2])
            self.candidate = EmbeddingBagCollection(_stock_tables()[2:])

    model = TwoTower()
    replaced = compress_(
        model, {"_default": {"type": "hash", "compression": 2}}, filter_fn=lambda m, fqn: fqn == "query"
    )
    assert list(replaced) == ["query"]
    assert isinstance(model.query, CompressedEmbeddingBagCollection)
    assert type(model.candidate) is EmbeddingBagCollection


def test_bad_rules_raise() -> None:
    with pytest.raises(ValueError, match=r"bad pattern 're:\('"):
        CompressionConfig({"re:(": {"type": "hash", "compression": 2}})
    with pytest.raises(ValueError, match=r"table 't_user': unknown table type 'hashh'"):
        compress_(EmbeddingBagCollection(_stock_tables()), {"t_user": {"type": "hashh", "compression": 2}})


def _trained(table: EmbeddingBagConfig, seed: int) -> torch.Tensor:
    return torch.randn(table.num_embeddings, table.embedding_dim, generator=torch.Generator().manual_seed(seed))


def _compressed(spec: Dict, n: int = 3000, is_ebc_weight: torch.Tensor = None):
    stock = EmbeddingBagConfig(name="t", num_embeddings=n, embedding_dim=D, feature_names=["f"])
    ebc = EmbeddingBagCollection([stock])
    weight = _trained(stock, 1) if is_ebc_weight is None else is_ebc_weight
    with torch.no_grad():
        ebc.embedding_bags["t"].weight.copy_(weight)
    holder = nn.Module()
    holder.ebc = ebc
    compress_(holder, {"t": spec})
    return holder.ebc, stock, weight


def test_warm_start_stock_tables_are_copied() -> None:
    module, stock, weight = _compressed({"type": "stock"})
    assert type(module) is EmbeddingBagCollection  # nothing to compress: left as it was
    tables = _stock_tables()
    ebc = EmbeddingBagCollection(tables)
    holder = nn.Module()
    holder.ebc = ebc
    compress_(holder, {"t_user": {"type": "hash", "compression": 2}})
    for t in tables[1:]:  # the tables kept stock hold the trained rows
        torch.testing.assert_close(_per_id(holder.ebc, t), ebc.embedding_bags[t.name].weight.detach())


def test_warm_start_hash_rows_are_means_of_their_ids() -> None:
    module, stock, weight = _compressed({"type": "hash", "compression": 16})
    h = module.bucketed_hash("t")
    rows = h(torch.arange(stock.num_embeddings))
    u = module.shared_weight("t").detach()
    for b in torch.unique(rows)[:50].tolist():
        torch.testing.assert_close(u[b], weight[rows == b].mean(0))


def test_warm_start_counts_weight_the_mean() -> None:
    stock = EmbeddingBagConfig(name="t", num_embeddings=3000, embedding_dim=D, feature_names=["f"])
    hashed = HashEmbeddingBagConfig(
        name="t", num_embeddings=3000, embedding_dim=D, feature_names=["f"], compression_ratio=16
    )
    module = CompressedEmbeddingBagCollection([hashed])
    weight = _trained(stock, 2)
    counts = torch.ones(3000)
    counts[7] = 1e6  # a very frequent id owns its row
    warm_start_(module, {"t": weight}, {"t": counts})
    row = module.bucketed_hash("t")(torch.tensor([7]))
    torch.testing.assert_close(module.shared_weight("t").detach()[row][0], weight[7], atol=1e-3, rtol=0)


def test_warm_start_memcom_recovers_a_memcom_shaped_table() -> None:
    # E_i = a_i * V[h(i)]: the least-squares fit must reproduce every id exactly (up to float error)
    cfg = MEmComEmbeddingBagConfig(
        name="t", num_embeddings=3000, embedding_dim=D, feature_names=["f"], compression_ratio=4
    )
    module = CompressedEmbeddingBagCollection([cfg])
    h = module.bucketed_hash("t")
    g = torch.Generator().manual_seed(3)
    v = torch.randn(h.num_rows, D, generator=g)
    a = torch.rand(3000, generator=g) + 0.5
    weight = a.unsqueeze(1) * v[h(torch.arange(3000))]
    warm_start_(module, {"t": weight})
    torch.testing.assert_close(_per_id(module, cfg), weight, atol=1e-4, rtol=1e-4)


def test_warm_start_memcom_beats_hash_on_a_random_table() -> None:
    weight = _trained(EmbeddingBagConfig(name="t", num_embeddings=3000, embedding_dim=D, feature_names=["f"]), 4)
    errors = {}
    for kind in ("hash", "memcom"):
        module, stock, _ = _compressed({"type": kind, "compression": 4}, is_ebc_weight=weight)
        errors[kind] = float((_per_id(module, stock) - weight).pow(2).sum())
    random = CompressedEmbeddingBagCollection(
        [
            MEmComEmbeddingBagConfig(
                name="t", num_embeddings=3000, embedding_dim=D, feature_names=["f"], compression_ratio=4
            )
        ]
    )
    errors["random init"] = float((_per_id(random, stock) - weight).pow(2).sum())
    # per-id scalars can only help the fit; both are far better than no warm start
    assert errors["memcom"] < errors["hash"] < 0.8 * errors["random init"], errors


def test_warm_start_qr_recovers_a_qr_shaped_table() -> None:
    cfg = QREmbeddingBagConfig(
        name="t", num_embeddings=3000, embedding_dim=D, feature_names=["f"], num_remainder_rows=60
    )
    module = CompressedEmbeddingBagCollection([cfg])
    g = torch.Generator().manual_seed(5)
    q, r = torch.rand(50, D, generator=g) + 0.5, torch.rand(60, D, generator=g) + 0.5
    ids = torch.arange(3000)
    weight = q[ids // 60] * r[ids % 60]
    warm_start_(module, {"t": weight})
    torch.testing.assert_close(_per_id(module, cfg), weight, atol=1e-4, rtol=1e-4)


def test_warm_start_lma_memory_rows_are_means_of_their_chunks() -> None:
    cfg = LMAEmbeddingBagConfig(
        name="t", num_embeddings=3000, embedding_dim=D, feature_names=["f"], memory_rows=500, chunk_size=4,
        signature_bytes=4,
    )  # fmt: skip
    module = CompressedEmbeddingBagCollection([cfg])
    weight = _trained(cfg, 6)
    warm_start_(module, {"t": weight})
    loc = module.locations("t", torch.arange(3000))  # (n, 2)
    chunks = weight.view(3000, 2, 4)
    memory = module.memory_weight("t").detach()
    for row in torch.unique(loc)[:40].tolist():
        torch.testing.assert_close(memory[row], chunks[loc == row].mean(0))


def test_warm_start_shape_mismatch_raises() -> None:
    module = CompressedEmbeddingBagCollection(
        [
            HashEmbeddingBagConfig(
                name="t", num_embeddings=300, embedding_dim=D, feature_names=["f"], compression_ratio=2
            )
        ]
    )
    with pytest.raises(ValueError, match=r"table 't': trained weight has shape \(30, 8\), the table is 300 x 8"):
        warm_start_(module, {"t": torch.zeros(30, D)})


def test_config_round_trips_as_a_dict() -> None:
    config = CompressionConfig({"re:t_.*": {"type": "memcom", "compression": 16}, "_default": None}, min_rows=10)
    again = CompressionConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="version 7"):
        CompressionConfig.from_dict({**config.to_dict(), "version": 7})


def test_fit_signatures_takes_the_labels_of_torchrec_batches() -> None:
    from torchrec.datasets.utils import Batch

    from torchrec_memcom import fit_signatures

    g = torch.Generator().manual_seed(0)
    n_items, n_users, rows = 60, 40, 400
    items, users = torch.randint(0, n_items, (rows,), generator=g), torch.randint(0, n_users, (rows,), generator=g)
    # an item's label depends on the user's parity: only labelled contexts tell items apart by who liked them
    labels = ((users % 2) == (items % 2)).float()
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["item", "user"], torch.cat([items, users]), torch.ones(2 * rows, dtype=torch.int64)
    )

    def model() -> nn.Module:
        tables = [
            LMAEmbeddingBagConfig(name="t", num_embeddings=n_items, embedding_dim=16, feature_names=["item"],
                                  memory_rows=64, chunk_size=4, context_features=["user"]),
            EmbeddingBagConfig(name="u", num_embeddings=n_users, embedding_dim=16, feature_names=["user"]),
        ]  # fmt: skip
        return nn.ModuleDict({"ebc": CompressedEmbeddingBagCollection(tables)})

    batch = Batch(dense_features=torch.zeros(rows, 1), sparse_features=kjt, labels=labels)
    from_batches, from_pairs, unlabelled = model(), model(), model()
    fit_signatures(from_batches, [batch])
    fit_signatures(from_pairs, [(kjt, labels)])
    fit_signatures(unlabelled, [kjt])
    sig = {k: m["ebc"].table_signatures("t") for k, m in [("b", from_batches), ("p", from_pairs), ("u", unlabelled)]}
    assert torch.equal(sig["b"], sig["p"])
    assert not torch.equal(sig["b"], sig["u"])
