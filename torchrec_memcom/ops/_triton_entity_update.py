# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Triton kernels of MEmCom's entity-weight update (``distributed.entity_weights.EntityWeightOptimizer``; imported only
for CUDA tensors, or under Triton's interpreter): sum each id's gradients (an ``index_add_``, per-block sums, or a
sort and a cumulative sum) and apply its table's SGD / Adagrad rule in one fused pass.
``tests/distributed/test_entity_weights.py`` checks every way against dense ``torch.optim`` on the GPU and through the
interpreter."""

import torch
import triton
import triton.language as tl

from torchrec_memcom.ops._launch import unspecialized_jit
from torchrec_memcom.ops._triton import _BLOCK

# The block-sorted entity update's per-program sort: 512 positions on 8 warps was the fastest aggregate plus update at
# big's 2.6M Zipf positions on an H200 (0.40 ms; 256 to 2048 positions on 4 to 16 warps: 0.40-0.74 ms).
_AGGREGATE_LOG_BLOCK = 9
_AGGREGATE_WARPS = 8


@triton.jit
def _apply_entity_update(
    i,
    g,
    own,
    weight_ptr,
    sum_ptr,
    bounds_ptr,
    lr_ptr,
    ada_ptr,
    eps,
    T: tl.constexpr,
    HAS_SUM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # EntityWeightOptimizer's rule for weights i (lanes where own) with summed, scaled gradients g: the table of i
    # (bounds: each table's end; the constant slots last, lr 0), then SGD or Adagrad by that table's rule.
    table = tl.zeros((BLOCK,), dtype=tl.int64)
    for t in tl.static_range(T):
        table += (i >= tl.load(bounds_ptr + t)).to(tl.int64)
    lr = tl.load(lr_ptr + table, mask=own, other=0.0)
    step = g
    if HAS_SUM:
        ada = tl.load(ada_ptr + table, mask=own, other=0) != 0
        total = tl.load(sum_ptr + i, mask=own, other=0.0) + tl.where(ada, g * g, 0.0)
        tl.store(sum_ptr + i, total, mask=own & ada)
        step = tl.where(ada, g / (tl.sqrt(total) + eps), g)
    w = tl.load(weight_ptr + i, mask=own, other=0.0)
    tl.store(weight_ptr + i, w - lr * step, mask=own)


@unspecialized_jit
def _entity_update_kernel(
    index_ptr,
    scratch_ptr,
    weight_ptr,
    sum_ptr,
    bounds_ptr,
    lr_ptr,
    ada_ptr,
    n: tl.int64,
    eps: tl.float32,
    scale: tl.float32,
    T: tl.constexpr,
    HAS_SUM: tl.constexpr,
    DENSE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # After scratch.index_add_(index, grad), SGD or Adagrad (per table) of each weight with a nonzero summed gradient,
    # which is left zero in the scratch. DENSE: one lane per weight, a stream over the scratch (no atomics). Else one
    # lane per position of index: each swaps its id's sum out; the first swap gets it (and leaves 0), every later
    # position of the same id gets 0 and does nothing, so one position per id applies the update without a race.
    # (An id whose summed gradient is exactly 0 is not updated: SGD and Adagrad would leave it unchanged anyway.)
    j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = j < n
    zeros = tl.zeros((BLOCK,), dtype=tl.float32)
    if DENSE:
        i = j
        g = tl.load(scratch_ptr + i, mask=mask, other=0.0)
        tl.store(scratch_ptr + i, zeros, mask=mask & (g != 0.0))
    else:
        i = tl.load(index_ptr + j, mask=mask, other=-1)
        mask &= i >= 0  # entity_aggregate_triton marks the positions that are not their block's first of an id -1
        # the swap on the float's bits (an int32 exchange: the same on the GPU, and Triton's interpreter has it)
        bits = tl.atomic_xchg(scratch_ptr.to(tl.pointer_type(tl.int32)) + i, zeros.to(tl.int32), mask=mask)
        g = bits.to(tl.float32, bitcast=True)
    own = mask & (g != 0.0)
    _apply_entity_update(i, g * scale, own, weight_ptr, sum_ptr, bounds_ptr, lr_ptr, ada_ptr, eps, T, HAS_SUM, BLOCK)


def entity_update_triton(
    index: torch.Tensor,
    scratch: torch.Tensor,
    weight: torch.Tensor,
    state_sum: "torch.Tensor | None",
    bounds: torch.Tensor,
    lr: torch.Tensor,
    adagrad: torch.Tensor,
    eps: float,
    scale: float = 1.0,
    dense: bool = False,
) -> None:
    """``EntityWeightOptimizer``'s update after ``scratch.index_add_(0, index, grad)``, for gradients ``scale`` times
    the sums; leaves the scratch zero. ``dense``: one lane per weight (a pass over the whole vector) instead of one
    per position of ``index``."""
    if scratch.dtype != torch.float32 or weight.dtype != torch.float32:
        raise TypeError(
            f"entity-weight update: float32 weights and scratch expected, got {weight.dtype} / {scratch.dtype}"
        )
    n = weight.numel() if dense else index.numel()
    _entity_update_kernel[(triton.cdiv(n, _BLOCK),)](
        index,
        scratch,
        weight,
        state_sum if state_sum is not None else scratch,
        bounds,
        lr,
        adagrad,
        n,
        eps,
        scale,
        T=bounds.numel(),
        HAS_SUM=state_sum is not None,
        DENSE=dense,
        BLOCK=_BLOCK,
    )


@unspecialized_jit
def _entity_update_sorted_kernel(
    keys_ptr,
    csum_ptr,
    weight_ptr,
    sum_ptr,
    bounds_ptr,
    lr_ptr,
    ada_ptr,
    n: tl.int64,
    eps: tl.float32,
    scale: tl.float32,
    T: tl.constexpr,
    HAS_SUM: tl.constexpr,
    SEARCH: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # keys: the batch's weight indices sorted; csum: the inclusive float64 cumulative sum of their gradients in that
    # order. The last position of each run of equal keys applies the update with the run's sum, cs[last] - cs[first-1],
    # finding the run's first position by binary search (SEARCH >= log2(n) + 1 halvings): no atomics, no race.
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    key = tl.load(keys_ptr + i, mask=mask, other=0).to(tl.int64)
    nxt = tl.load(keys_ptr + i + 1, mask=mask & (i + 1 < n), other=-1).to(tl.int64)
    own = mask & (key != nxt)
    lo = tl.zeros((BLOCK,), dtype=tl.int64)
    hi = i
    for _ in tl.static_range(SEARCH):
        mid = (lo + hi) // 2
        active = own & (lo < hi)
        below = tl.load(keys_ptr + mid, mask=active, other=0).to(tl.int64) < key
        lo, hi = tl.where(active & below, mid + 1, lo), tl.where(active & ~below, mid, hi)
    before = tl.load(csum_ptr + lo - 1, mask=own & (lo > 0), other=0.0)
    g = (tl.load(csum_ptr + i, mask=own, other=0.0) - before).to(tl.float32) * scale
    _apply_entity_update(key, g, own, weight_ptr, sum_ptr, bounds_ptr, lr_ptr, ada_ptr, eps, T, HAS_SUM, BLOCK)


def entity_update_sorted_triton(
    index: torch.Tensor,
    grad: torch.Tensor,
    weight: torch.Tensor,
    state_sum: "torch.Tensor | None",
    bounds: torch.Tensor,
    lr: torch.Tensor,
    adagrad: torch.Tensor,
    eps: float,
    scale: float = 1.0,
) -> None:
    """``EntityWeightOptimizer``'s update of ``weight[index]`` by ``scale`` times the summed ``grad`` per id: sort the
    positions by id, a float64 cumulative sum of the gradients in that order, then one lane per run of equal ids."""
    n = index.numel()
    keys, order = (index.to(torch.int32) if weight.numel() < 2**31 else index).sort()
    csum = grad.index_select(0, order).cumsum(0, dtype=torch.float64)
    _entity_update_sorted_kernel[(triton.cdiv(n, _BLOCK),)](
        keys,
        csum,
        weight,
        state_sum if state_sum is not None else weight,
        bounds,
        lr,
        adagrad,
        n,
        eps,
        scale,
        T=bounds.numel(),
        HAS_SUM=state_sum is not None,
        SEARCH=max(1, n.bit_length() + 1),
        BLOCK=_BLOCK,
    )


@triton.jit
def _keyed_sum(k1, v1, k2, v2):
    # segmented sum over keys in sorted order (either direction): a run's partial sums restart where the key changes;
    # v of any dtype (the literal 0 takes v's)
    return k2, v2 + tl.where(k1 == k2, v1, 0)


# its pointers aligned (vectorised loads): 158 us per big step on an H200 against 183 unspecialised
@unspecialized_jit(num_warps=_AGGREGATE_WARPS, specialize=("index_ptr", "grad_ptr", "scratch_ptr", "leaders_ptr"))
def _entity_aggregate_kernel(
    index_ptr,
    grad_ptr,
    scratch_ptr,
    leaders_ptr,
    n: tl.int64,
    LOG_BLOCK: tl.constexpr,
):
    # Each program sorts its BLOCK positions by weight index (index << LOG_BLOCK | lane, one int64 sort in registers),
    # sums every run of equal indices, and the run's first position adds the sum into scratch[index] with one atomic:
    # a Zipf-hot id costs one atomic per block instead of one per position. leaders[j] = index[j] at those positions,
    # -1 elsewhere, so the update kernel swaps each (block, id) sum out once. Positions whose index is -1 (padding of a
    # replayed update, distributed.entity_update_graphs) sort first and add nothing.
    BLOCK: tl.constexpr = 1 << LOG_BLOCK
    base = tl.program_id(0).to(tl.int64) * BLOCK
    lane = tl.arange(0, BLOCK).to(tl.int64)
    mask = base + lane < n
    index = tl.load(index_ptr + base + lane, mask=mask, other=0).to(tl.int64)
    packed = tl.sort(tl.where(mask, (index << LOG_BLOCK) | lane, -1))  # padding sorts first, as key -1
    key = packed >> LOG_BLOCK
    src = packed & (BLOCK - 1)
    valid = key >= 0
    g = tl.load(grad_ptr + base + src, mask=valid, other=0.0)
    _, rank = tl.associative_scan((key, tl.full((BLOCK,), 1, tl.int32)), 0, _keyed_sum)  # position in its run
    _, rest = tl.associative_scan((tl.flip(key, 0), tl.flip(g, 0)), 0, _keyed_sum)
    rest = tl.flip(rest, 0)  # per position, the sum over its run from it to the run's end
    first = valid & (rank == 1)
    tl.atomic_add(scratch_ptr + key, rest, mask=first)
    # every position of the batch, index -1 included (padding lanes past n sort as src BLOCK - 1, which is past n too)
    tl.store(leaders_ptr + base + src, tl.where(first, key, -1), mask=base + src < n)


def entity_aggregate_triton(index: torch.Tensor, grad: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``scratch.index_add_(0, index, grad)`` with duplicates summed per block of ``2**_AGGREGATE_LOG_BLOCK``
    positions first (one atomic per id and block); returns ``leaders``: ``index`` at each id's first position in its
    block, else -1, for ``entity_update_triton(leaders, scratch, ...)``. Positions whose ``index`` is -1 are skipped."""
    leaders = torch.empty_like(index)
    _entity_aggregate_kernel[(triton.cdiv(index.numel(), 1 << _AGGREGATE_LOG_BLOCK),)](
        index, grad, scratch, leaders, index.numel(), LOG_BLOCK=_AGGREGATE_LOG_BLOCK
    )
    return leaders
