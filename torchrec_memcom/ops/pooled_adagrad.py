# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The backward of a sum-pooled lookup fused with exact row-wise Adagrad, for narrow rows (LMA's memory: 16 floats).

FBGEMM's TBE backward spends on LMA's 21M lookups of 16-wide rows per ``big`` step several times what the bytes
need (docs/PERFORMANCE.md). ``pooled_rowwise_adagrad_`` does what that backward does with its fused
``EXACT_ROWWISE_ADAGRAD`` (no weight decay): for every row r of the lookup, g_r = the sum of the pooled gradients of
the bags that read it, then m_r += mean(g_r ** 2) and w_r -= lr * g_r / (sqrt(m_r) + eps). FBGEMM's sort of the rows and
two Triton launches on the GPU (``_triton_pooled_adagrad``); plain PyTorch on the CPU.
"""

import math
from typing import Tuple

import torch

from torchrec_memcom.ops import triton_enabled

__all__ = ["MAX_ROW_DIM", "pooled_rowwise_adagrad_", "sorted_rows"]

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
    if not triton_enabled(weights):
        _pooled_rowwise_adagrad_reference(weights, momentum, indices, offsets, grad, feature_rows, dim, lr, eps)
        return
    from torchrec_memcom.ops._triton_pooled_adagrad import pooled_rowwise_adagrad_triton

    rows, infos, bits, mask = sorted_rows(indices, offsets, feature_rows, momentum.numel(), grad.shape[0])
    pooled_rowwise_adagrad_triton(weights, momentum, rows, infos, bits, mask, grad, dim, lr, eps)


def _sample_bits(batch: int, num_features: int) -> Tuple[int, int]:
    """FBGEMM's split of a 32-bit bag info into feature and sample bits (``get_infos_metadata``)."""
    op = getattr(torch.ops.fbgemm, "get_infos_metadata", None) if hasattr(torch.ops, "fbgemm") else None
    if op is not None:
        return tuple(op(torch.empty(0), batch, num_features))  # type: ignore[return-value]
    bits = 32 - max(1, (num_features - 1).bit_length())
    if batch > 1 << bits:
        raise ValueError(f"pooled_rowwise_adagrad_: {num_features} features x {batch} samples do not fit 32 bits")
    return bits, (1 << bits) - 1


def sorted_rows(
    indices: torch.Tensor, offsets: torch.Tensor, feature_rows: torch.Tensor, num_rows: int, batch: int
) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """The lookup's rows (``feature_rows[f] + id``) sorted, and for each the bag that read it as FBGEMM's info
    ``feature << bits | sample``; returns ``(rows, infos, bits, mask)``. On the GPU FBGEMM's own sort of its TBE
    backward (``transpose_embedding_input``: a radix sort over the rows' bits only), else PyTorch's."""
    num_features = feature_rows.numel()
    bits, mask = _sample_bits(batch, num_features)
    transpose = getattr(torch.ops.fbgemm, "transpose_embedding_input", None) if indices.is_cuda else None
    if transpose is not None:
        cumsum = torch.cat([feature_rows, feature_rows.new_tensor([num_rows])])
        out = transpose(
            cumsum,
            int(math.log2(max(num_rows, 1)) + 1),
            indices,
            offsets.to(indices.dtype),
            info_B_num_bits=bits,
            info_B_mask=mask,
        )
        return out[1], out[2], bits, mask
    lengths = offsets[1:] - offsets[:-1]
    bags = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=offsets.device), lengths, output_size=indices.numel()
    )
    feature = bags // batch
    rows, order = (indices.long() + feature_rows.long()[feature]).sort()
    infos = ((feature << bits) | (bags - feature * batch)).to(torch.int64)[order]
    return rows, (infos - (infos >= 2**31).long() * 2**32).to(torch.int32), bits, mask


def _pooled_rowwise_adagrad_reference(
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
    num_features = feature_rows.numel()
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
