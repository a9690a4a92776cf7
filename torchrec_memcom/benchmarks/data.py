# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Synthetic batches for the benchmarks, generated on the device up front (no data loading is timed).

Ids are uniform or power-law: ``P(rank k) ~ (k + 1)^-zipf``, with ranks sent through a fixed bijection of
``[0, n)`` so popular ids spread over the table, as after Criteo's hashing. These are speed and memory inputs only.
"""

import math
from typing import List

import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.benchmarks.layouts import Layout, feature_name

__all__ = ["NUM_DENSE", "batch_bytes", "loss_weights", "make_batches", "sample_ids"]

NUM_DENSE = 13
ID_DISTRIBUTIONS = ("powerlaw", "uniform")


def _coprime_multiplier(n: int) -> int:
    a = 2_654_435_761
    while math.gcd(a, n) != 1:
        a += 2
    return a


def sample_ids(
    n: int, count: int, ids: str, zipf: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``count`` int64 ids in ``[0, n)``, ``ids`` = ``"uniform"`` or ``"powerlaw"`` (exponent ``zipf`` > 0).

    Raises:
        ValueError: unknown distribution or a bad exponent.
    """
    if ids == "uniform":
        return torch.randint(0, n, (count,), generator=generator, device=device)
    if ids != "powerlaw":
        raise ValueError(f"ids must be one of {ID_DISTRIBUTIONS}, got {ids!r}")
    if not zipf > 0:
        raise ValueError(f"zipf must be > 0, got {zipf!r}")
    u = torch.rand(count, generator=generator, device=device, dtype=torch.float64)
    if abs(zipf - 1.0) < 1e-9:
        x = torch.exp(u * math.log(n + 1.0))
    else:  # inverse CDF of the continuous power law on [1, n + 1)
        b = 1.0 - zipf
        x = (1.0 + u * ((n + 1.0) ** b - 1.0)) ** (1.0 / b)
    rank = (x.floor().to(torch.int64) - 1).clamp_(0, n - 1)
    return (rank * _coprime_multiplier(n) + n // 3) % n


def make_batches(
    layout: Layout,
    count: int,
    seed: int,
    device: torch.device,
    ids: str = "powerlaw",
    zipf: float = 1.05,
    length_per_key: bool = False,
) -> List[Batch]:
    """``count`` batches of ``layout.batch_size`` rows: dense features, 0/1 labels and one KJT holding every feature
    (``layout.pooling`` ids per bag; the batches share one lengths tensor). ``length_per_key``: each KJT carries its
    per-feature id counts, as a loader that counts them on the host does (the recipes' loaders: no device read of the
    lengths in the step); else the step reads them from the device, as with TorchRec's own loaders."""
    g = torch.Generator(device=device).manual_seed(seed)
    b, p = layout.batch_size, layout.pooling
    keys = [feature_name(i) for i in range(layout.num_tables)]
    lengths = torch.full((len(keys) * b,), p, dtype=torch.int64, device=device)
    out = []
    for _ in range(count):
        values = torch.cat([sample_ids(n, b * p, ids, zipf, g, device) for n in layout.num_embeddings])
        counts = [b * p] * len(keys) if length_per_key else None
        kjt = KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, length_per_key=counts)
        dense = torch.randn(b, NUM_DENSE, generator=g, device=device)
        labels = torch.randint(0, 2, (b,), generator=g, device=device).to(torch.float32)
        out.append(Batch(dense_features=dense, sparse_features=kjt, labels=labels))
    return out


def batch_bytes(layout: Layout) -> int:
    """Device bytes of one ``make_batches`` batch, without the lengths its batches share: int64 ids, float32 dense
    features and labels."""
    b = layout.batch_size
    return b * layout.pooling * layout.num_tables * 8 + b * NUM_DENSE * 4 + b * 4


def loss_weights(layout: Layout, seed: int, device: torch.device) -> torch.Tensor:
    """The fixed ``(batch, tables x dim)`` weights ``R`` of the embedding-layer loss ``sum(pooled * R)``."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(layout.batch_size, layout.embedding_dim * layout.num_tables, generator=g, device=device)
