# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Least-squares fits of compressed tables to a trained stock table ``E`` (``n x d``), with optional id counts as
weights (frequent ids matter more). Pure tensor ops, used by the methods' ``warm_start`` hooks."""

from typing import Optional, Tuple

import torch

__all__ = ["fit_memcom", "fit_qr", "fit_shared_rows"]


def _weights(n: int, counts: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if counts is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    if counts.shape != (n,):
        raise ValueError(f"counts must have shape ({n},), got {tuple(counts.shape)}")
    return counts.to(like.dtype).to(like.device).clamp(min=0)


def fit_shared_rows(
    rows: torch.Tensor, vectors: torch.Tensor, num_rows: int, weight: torch.Tensor, init: torch.Tensor
) -> torch.Tensor:
    """``U[b] = sum_{i: rows[i] = b} weight_i * vectors_i / sum weight_i``; rows nothing maps to keep ``init``."""
    total = torch.zeros(num_rows, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    total.index_add_(0, rows, vectors * weight.unsqueeze(1))
    mass = torch.zeros(num_rows, dtype=vectors.dtype, device=vectors.device).index_add_(0, rows, weight)
    out = init.clone()
    hit = mass > 0
    out[hit] = total[hit] / mass[hit].unsqueeze(1)
    return out


def fit_memcom(
    table: torch.Tensor,
    rows: torch.Tensor,
    num_rows: int,
    counts: Optional[torch.Tensor],
    init: torch.Tensor,
    iterations: int = 4,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(U, w)`` minimising ``sum_i c_i |E_i - w_i U[rows_i]|^2`` by alternating least squares from ``w = 1``:
    ``U[b] = sum c w E / sum c w^2`` over the ids of row ``b``, then ``w_i = <E_i, U[rows_i]> / |U[rows_i]|^2``."""
    c = _weights(table.shape[0], counts, table)
    w = torch.ones(table.shape[0], dtype=table.dtype, device=table.device)
    shared = init
    for _ in range(iterations):
        num = torch.zeros(num_rows, table.shape[1], dtype=table.dtype, device=table.device)
        num.index_add_(0, rows, table * (c * w).unsqueeze(1))
        den = torch.zeros(num_rows, dtype=table.dtype, device=table.device).index_add_(0, rows, c * w * w)
        hit = den > 0
        shared = init.clone()
        shared[hit] = num[hit] / den[hit].unsqueeze(1)
        u = shared[rows]
        norm = (u * u).sum(1)
        w = torch.where(norm > 0, (table * u).sum(1) / norm.clamp(min=torch.finfo(table.dtype).tiny), w)
    return shared, w


def fit_qr(
    table: torch.Tensor, c: int, counts: Optional[torch.Tensor], iterations: int = 8
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(Q, R)`` with ``Q[i // c] * R[i % c] ~ E_i`` (elementwise): per dimension, a weighted rank-1 fit of the
    ``ceil(n / c) x c`` matrix ``M[q, r] = E[q c + r]`` by alternating least squares from ``R = 1``."""
    n, d = table.shape
    nq = -(-n // c)
    weight = torch.zeros(nq * c, dtype=table.dtype, device=table.device)
    weight[:n] = _weights(n, counts, table)
    m = torch.zeros(nq * c, d, dtype=table.dtype, device=table.device)
    m[:n] = table
    m, weight = m.view(nq, c, d), weight.view(nq, c, 1)
    r = torch.ones(c, d, dtype=table.dtype, device=table.device)
    q = torch.zeros(nq, d, dtype=table.dtype, device=table.device)
    tiny = torch.finfo(table.dtype).tiny
    for _ in range(iterations):
        q = (weight * m * r).sum(1) / (weight * r * r).sum(1).clamp(min=tiny)
        r = (weight * m * q.unsqueeze(1)).sum(0) / (weight * (q * q).unsqueeze(1)).sum(0).clamp(min=tiny)
    return q, r
