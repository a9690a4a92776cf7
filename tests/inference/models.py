# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Small trained-looking models and inputs for the serving tests: every table kind, a DLRM and a two-tower model.

"Trained-looking": MEmCom's per-id weights are drawn away from their initial 1 and LMA's signatures are fitted on a
seeded batch, so a transform that dropped either would change the outputs.
"""

from typing import List, Optional, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagCollection,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)

try:  # the two-tower model moves from examples/ into the package's recipes
    from torchrec_memcom.recipes.two_tower_model import TwoTower
except ImportError:
    from examples.two_tower.model import TwoTower

DENSE_IN = 3


def mixed_tables(dim: int = 16, pooling: PoolingType = PoolingType.SUM) -> List[EmbeddingBagConfig]:
    """One table of every kind; the MEmCom table has two features, so features share a physical table."""
    return [
        MEmComEmbeddingBagConfig(
            name="m",
            num_embeddings=240,
            embedding_dim=dim,
            feature_names=["fm", "fm2"],
            num_shared_rows=32,
            num_buckets=8,
            pooling=pooling,
        ),
        LMAEmbeddingBagConfig(
            name="l",
            num_embeddings=200,
            embedding_dim=dim,
            feature_names=["fl"],
            memory_rows=24,
            chunk_size=8,
            signature_bytes=4,
            memory_group="g",
        ),
        EmbeddingBagConfig(name="s", num_embeddings=50, embedding_dim=dim, feature_names=["fs"], pooling=pooling),
        LMAEmbeddingBagConfig(
            name="l2",
            num_embeddings=90,
            embedding_dim=dim,
            feature_names=["fl2"],
            memory_rows=16,
            chunk_size=4,
            signature_bytes=4,
            memory_group="g2",
            pooling=pooling,
        ),
        HashEmbeddingBagConfig(
            name="h", num_embeddings=300, embedding_dim=dim, feature_names=["fh"], num_shared_rows=40
        ),
        QREmbeddingBagConfig(
            name="q",
            num_embeddings=150,
            embedding_dim=dim,
            feature_names=["fq"],
            num_remainder_rows=12,
            pooling=pooling,
        ),
    ]


def make_batch(
    tables: List[EmbeddingBagConfig], batch: int, seed: int, weighted: bool = False, max_len: int = 3
) -> KeyedJaggedTensor:
    """A seeded KJT over every feature of ``tables``: bags of 0 to ``max_len`` ids, empty bags included."""
    g = torch.Generator().manual_seed(seed)
    keys, values, lengths = [], [], []
    for t in tables:
        for f in t.feature_names:
            ln = torch.randint(0, max_len + 1, (batch,), generator=g)
            keys.append(f)
            lengths.append(ln)
            values.append(torch.randint(0, t.num_embeddings, (int(ln.sum()),), generator=g))
    v = torch.cat(values)
    w = torch.rand(v.numel(), generator=g) + 0.5 if weighted else None
    return KeyedJaggedTensor(keys=keys, values=v, lengths=torch.cat(lengths), weights=w)


def trained_collection(
    tables: List[EmbeddingBagConfig], weighted: bool = False, seed: int = 0
) -> CompressedEmbeddingBagCollection:
    """A collection with random MEmCom weights in [0.25, 2] and LMA signatures fitted on a seeded batch."""
    torch.manual_seed(seed)
    ebc = CompressedEmbeddingBagCollection(tables, is_weighted=weighted)
    fit_and_perturb(ebc, tables, seed)
    return ebc


def fit_and_perturb(ebc: nn.Module, tables: List[EmbeddingBagConfig], seed: int) -> None:
    """Draws MEmCom weights away from 1 and fits LMA signatures, through the collections' public API."""
    with torch.no_grad():
        for name, p in ebc.named_parameters():
            if "entity_weights" in name:
                p.uniform_(0.25, 2.0, generator=torch.Generator().manual_seed(seed + 1))
    batch = make_batch(tables, 64, seed=seed + 2)
    for m in ebc.modules():
        if isinstance(m, LMAEmbeddingBagCollection):
            m.fit_signatures([batch])


def make_dlrm(tables: List[EmbeddingBagConfig], seed: int = 0, device: Optional[str] = None) -> nn.Module:
    """``DLRMTrain(DLRM(...))`` over ``tables`` (built on ``device``; CPU by default) with trained-looking tables."""
    from torchrec.models.dlrm import DLRM, DLRMTrain

    torch.manual_seed(seed)
    ebc = CompressedEmbeddingBagCollection(tables, device=device)
    if device != "meta":
        fit_and_perturb(ebc, tables, seed)
    dense_device = torch.device("cpu")
    return DLRMTrain(
        DLRM(
            embedding_bag_collection=ebc,
            dense_in_features=DENSE_IN,
            dense_arch_layer_sizes=[8, tables[0].embedding_dim],
            over_arch_layer_sizes=[8, 1],
            dense_device=dense_device,
        )
    )


def make_two_tower(seed: int = 0, dim: int = 16) -> Tuple[nn.Module, List[EmbeddingBagConfig]]:
    """The project's two-tower model: MEmCom + stock user tables, LMA + stock item tables, one item dense feature."""
    torch.manual_seed(seed)
    user = [
        MEmComEmbeddingBagConfig(
            name="user",
            num_embeddings=120,
            embedding_dim=dim,
            feature_names=["user"],
            num_shared_rows=16,
            num_buckets=4,
        ),
        EmbeddingBagConfig(name="age", num_embeddings=7, embedding_dim=dim, feature_names=["age"]),
    ]
    item = [
        LMAEmbeddingBagConfig(
            name="movie",
            num_embeddings=80,
            embedding_dim=dim,
            feature_names=["movie"],
            memory_rows=12,
            chunk_size=8,
            signature_bytes=4,
        ),
        EmbeddingBagConfig(name="genres", num_embeddings=18, embedding_dim=dim, feature_names=["genres"]),
    ]
    user_ebc = CompressedEmbeddingBagCollection(user)
    item_ebc = CompressedEmbeddingBagCollection(item)
    fit_and_perturb(user_ebc, user + item, seed)
    fit_and_perturb(item_ebc, user + item, seed)
    model = TwoTower(user_ebc, item_ebc, item_dense_dim=1, layer_sizes=[16, 8], temperature=0.1, normalize=True)
    return model.eval(), user + item
