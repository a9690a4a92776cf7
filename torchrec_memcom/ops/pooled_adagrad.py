# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The backward of a sum-pooled lookup fused with exact row-wise Adagrad, for narrow rows (LMA's memory: 16 floats).

FBGEMM's TBE backward spends on LMA's 21M lookups of 16-wide rows per ``big`` step several times what the bytes
need (docs/PERFORMANCE.md). ``pooled_rowwise_adagrad_`` does what that backward does with its fused
``EXACT_ROWWISE_ADAGRAD`` (no weight decay): for every row r of the lookup, g_r = the sum of the pooled gradients of
the bags that read it, then m_r += mean(g_r ** 2) and w_r -= lr * g_r / (sqrt(m_r) + eps). One sort of the rows and
three Triton launches on the GPU (``_triton_pooled_adagrad``); plain PyTorch on the CPU.
"""

import torch

from torchrec_memcom.ops import triton_enabled

__all__ = ["MAX_ROW_DIM", "pooled_rowwise_adagrad_"]

# row widths the fused backward takes: powers of two up to this (its tiles are [2048 / D, D])
MAX_ROW_DIM = 64


def pooled_rowwise_adagrad_(
    weights: torch.Tensor,
    momentum: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    grad: torch.Tensor,
    feature_rows: torch.Tensor,
    dim: int,
    lr: float,
    eps: float,
) -> None:
    """Updates ``weights`` (flat, ``rows * dim``) and ``momentum`` (``rows``) in place.

    The lookup, in FBGEMM's TBE layout: ``F = feature_rows.numel()`` features, ``B = grad.shape[0]`` samples; bag
    ``f * B + b`` holds ``indices[offsets[j] : offsets[j + 1]]``, rows ``feature_rows[f] + id`` of the flat table;
    its pooled gradient is ``grad[b, f * dim : (f + 1) * dim]``. Ids must be in range (no bounds check).

    Raises:
        ValueError: ``dim`` not a power of two up to ``MAX_ROW_DIM``, or shapes that do not fit together.
        TypeError: weights, momentum or grad not float32.
    """
    if dim < 1 or dim > MAX_ROW_DIM or dim & (dim - 1):
        raise ValueError(f"pooled_rowwise_adagrad_: row width {dim} is not a power of two <= {MAX_ROW_DIM}")
    if any(t.dtype != torch.float32 for t in (weights, momentum, grad)):
        raise TypeError(
            f"pooled_rowwise_adagrad_: float32 expected, got weights {weights.dtype}, momentum {momentum.dtype}, "
            f"grad {grad.dtype}"
        )
    num_features = feature_rows.numel()
    if weights.numel() != momentum.numel() * dim or grad.dim() != 2 or grad.shape[1] != num_features * dim:
        raise ValueError(
            f"pooled_rowwise_adagrad_: {momentum.numel()} rows of {dim} need {momentum.numel() * dim} weights (got "
            f"{weights.numel()}) and a gradient of [B, {num_features} * {dim}] (got {list(grad.shape)})"
        )
    if offsets.numel() != num_features * grad.shape[0] + 1:
        raise ValueError(
            f"pooled_rowwise_adagrad_: {offsets.numel()} offsets for {num_features} features x {grad.shape[0]} samples"
        )
    if grad.stride(1) != 1:
        grad = grad.contiguous()
    if triton_enabled(weights):
        from torchrec_memcom.ops._triton_pooled_adagrad import pooled_rowwise_adagrad_triton

        pooled_rowwise_adagrad_triton(weights, momentum, indices, offsets, grad, feature_rows, dim, lr, eps)
        return
    lengths = offsets[1:] - offsets[:-1]
    bags = torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths)
    batch = grad.shape[0]
    rows = indices.long() + feature_rows.long()[bags // batch]
    pooled = grad.view(batch, num_features, dim).transpose(0, 1).reshape(-1, dim)
    touched, where = torch.unique(rows, return_inverse=True)
    g = torch.zeros(touched.numel(), dim, dtype=grad.dtype, device=grad.device).index_add_(0, where, pooled[bags])
    m = momentum[touched] + (g * g).sum(1) / dim
    momentum[touched] = m
    w = weights.view(-1, dim)
    w[touched] = w[touched] - (lr / (m.sqrt() + eps))[:, None] * g
