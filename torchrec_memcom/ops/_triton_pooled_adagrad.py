# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Triton kernels of ``ops.pooled_rowwise_adagrad_``: the backward of a sum-pooled lookup of narrow rows fused with
exact row-wise Adagrad (imported only for CUDA tensors, or under Triton's interpreter).

Three launches after one sort: ``_bag_rows_kernel`` writes each position's row (the key the sort orders by) and bag;
``_row_sums_kernel`` takes blocks of ``P`` sorted positions, sums every run of equal rows in the block and updates
the rows whose whole run lies in it; ``_spanning_rows_kernel`` finishes the runs that cross blocks (a Zipf-hot row
spans many) from the blocks' partial sums. No atomics: every row is updated once, by one program.
"""

import torch
import triton
import triton.language as tl

from torchrec_memcom.ops._launch import unspecialized_jit

# sorted positions per program of _row_sums_kernel (times the row width: 2048 floats at 16-wide rows)
_ROW_ELEMENTS = 2048
_BAGS = 128  # bags per program of _bag_rows_kernel
_SPAN_BLOCKS = 16  # blocks per step of a spanning run's walk


@unspecialized_jit
def _bag_rows_kernel(
    indices_ptr,
    offsets_ptr,
    feature_rows_ptr,
    rows_ptr,
    bags_ptr,
    num_bags: tl.int64,
    batch: tl.int64,
    BAGS: tl.constexpr,
):
    # bag j = feature * batch + sample holds positions offsets[j] .. offsets[j + 1]; its rows are its ids plus its
    # feature's table's first row
    j = tl.program_id(0).to(tl.int64) * BAGS + tl.arange(0, BAGS)
    mask = j < num_bags
    lo = tl.load(offsets_ptr + j, mask=mask, other=0).to(tl.int64)
    hi = tl.load(offsets_ptr + j + 1, mask=mask, other=0).to(tl.int64)
    base = tl.load(feature_rows_ptr + j // batch, mask=mask, other=0)
    for k in range(0, tl.max(hi - lo, axis=0)):
        p = lo + k
        live = mask & (p < hi)
        ids = tl.load(indices_ptr + p, mask=live, other=0).to(tl.int64)
        tl.store(rows_ptr + p, (ids + base).to(rows_ptr.dtype.element_ty), mask=live)
        tl.store(bags_ptr + p, j.to(tl.int32), mask=live)


@triton.jit
def _keyed_sum(k1, v1, k2, v2):
    # segmented sum over keys in sorted order: a run's partial sums restart where the key changes
    return k2, v2 + tl.where(k1 == k2, v1, 0.0)


@triton.jit
def _rowwise_adagrad(weights_ptr, momentum_ptr, row, g, own, lr, eps, D: tl.constexpr):
    # FBGEMM's EXACT_ROWWISE_ADAGRAD (no weight decay) for rows[own] with summed gradients g [R, D]:
    # m += mean(g^2); w -= lr / (sqrt(m) + eps) * g
    cols = tl.arange(0, D)
    m = tl.load(momentum_ptr + row, mask=own, other=0.0) + tl.sum(g * g, axis=1) / D
    tl.store(momentum_ptr + row, m, mask=own)
    step = lr / (tl.sqrt_rn(m) + eps)
    at = weights_ptr + row[:, None] * D + cols[None, :]
    w = tl.load(at, mask=own[:, None], other=0.0)
    tl.store(at, w - step[:, None] * g, mask=own[:, None])


@unspecialized_jit(specialize=("grad_ptr", "weights_ptr", "row_stride"))
def _row_sums_kernel(
    rows_ptr,
    order_ptr,
    bags_ptr,
    grad_ptr,
    weights_ptr,
    momentum_ptr,
    head_ptr,
    tail_ptr,
    flags_ptr,
    n: tl.int64,
    batch: tl.int64,
    row_stride: tl.int64,
    lr: tl.float32,
    eps: tl.float32,
    D: tl.constexpr,
    P: tl.constexpr,
):
    # Block of sorted positions e = start .. last (rows[e] sorted, order[e] the unsorted position). The gradient of
    # position p is grad[sample, feature * D : (feature + 1) * D] of its bag. Runs that start and end in the block
    # are applied here. Of the others: the run the block starts in, if it began earlier, leaves its partial sum in
    # head[block]; the run the block ends in, if it began here and goes on, leaves its partial in tail[block]; flags
    # bit 0: this block owns such a tail run, bit 1: the whole block lies inside one run that began before it and
    # goes on after it.
    blk = tl.program_id(0).to(tl.int64)
    start = blk * P
    e = start + tl.arange(0, P)
    valid = e < n
    last = tl.minimum(start + P, n) - 1
    row = tl.load(rows_ptr + e, mask=valid, other=-1).to(tl.int64)
    nxt = tl.load(rows_ptr + e + 1, mask=e + 1 < n, other=-1).to(tl.int64)
    bag = tl.load(bags_ptr + tl.load(order_ptr + e, mask=valid, other=0), mask=valid, other=0).to(tl.int64)
    feature = bag // batch
    cols = tl.arange(0, D)
    at = (bag - feature * batch) * row_stride + feature * D
    g = tl.load(grad_ptr + at[:, None] + cols[None, :], mask=valid[:, None], other=0.0)
    _, sums = tl.associative_scan((tl.broadcast_to(row[:, None], (P, D)), g), 0, _keyed_sum)
    first = tl.load(rows_ptr + start).to(tl.int64)
    final = tl.load(rows_ptr + last).to(tl.int64)
    before = tl.load(rows_ptr + start - 1, mask=start > 0, other=-1).to(tl.int64)
    after = tl.load(rows_ptr + last + 1, mask=last + 1 < n, other=-1).to(tl.int64)
    zero = row * 0  # scalars broadcast to lanes (Triton's interpreter keeps scalar comparisons as ints)
    run_end = valid & ((row != nxt) | (e == last))
    began_here = (row != first) | (zero + before != first)
    _rowwise_adagrad(weights_ptr, momentum_ptr, row, sums, run_end & began_here & (row != nxt), lr, eps, D)
    head = run_end & (row == first) & (zero + before == first)
    tail = (e == last) & (zero + after == final) & began_here
    spot = blk * D + zero[:, None] + cols[None, :]
    tl.store(head_ptr + spot, sums, mask=head[:, None])
    tl.store(tail_ptr + spot, sums, mask=tail[:, None])
    owns = (after == final) & ((first != final) | (before != first))
    through = (first == final) & (before == first) & (after == final)
    tl.store(flags_ptr + blk, owns.to(tl.int8) + 2 * through.to(tl.int8))


@unspecialized_jit(num_warps=1)
def _spanning_rows_kernel(
    rows_ptr,
    head_ptr,
    tail_ptr,
    flags_ptr,
    weights_ptr,
    momentum_ptr,
    n: tl.int64,
    num_blocks: tl.int64,
    lr: tl.float32,
    eps: tl.float32,
    D: tl.constexpr,
    P: tl.constexpr,
    J: tl.constexpr,
):
    # A block that owns a tail run sums its tail partial with the head partials of the blocks after it, J at a time,
    # up to and including the first block the run ends in (flags bit 1 clear), and applies the run's row.
    blk = tl.program_id(0).to(tl.int64)
    if (tl.load(flags_ptr + blk) & 1) != 0:
        cols = tl.arange(0, D)
        lanes = tl.arange(0, J)
        total = tl.load(tail_ptr + blk * D + cols)
        j0 = blk + 1
        going = True
        while going:
            js = j0 + lanes
            inside = js < num_blocks
            through = (tl.load(flags_ptr + js, mask=inside, other=0) & 2) != 0
            stop = tl.min(tl.where(through, J, lanes), axis=0)
            take = inside & (lanes <= stop)
            total += tl.sum(tl.load(head_ptr + js[:, None] * D + cols[None, :], mask=take[:, None], other=0.0), 0)
            going = stop >= J
            j0 += J
        last = tl.minimum(blk * P + P, n) - 1
        row = tl.load(rows_ptr + last + tl.zeros((1,), tl.int64)).to(tl.int64)
        _rowwise_adagrad(weights_ptr, momentum_ptr, row, total[None, :], row >= 0, lr, eps, D)


def pooled_rowwise_adagrad_triton(
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
    """``ops.pooled_rowwise_adagrad_`` on the GPU (or under Triton's interpreter)."""
    n = indices.numel()
    batch = grad.shape[0]
    num_bags = offsets.numel() - 1
    if n == 0 or batch == 0:
        return
    row_dtype = torch.int32 if momentum.numel() < 2**31 else torch.int64
    rows = torch.empty(n, dtype=row_dtype, device=indices.device)
    bags = torch.empty(n, dtype=torch.int32, device=indices.device)
    _bag_rows_kernel[(triton.cdiv(num_bags, _BAGS),)](
        indices, offsets, feature_rows, rows, bags, num_bags, batch, BAGS=_BAGS
    )
    rows, order = rows.sort()
    p = _ROW_ELEMENTS // dim
    num_blocks = triton.cdiv(n, p)
    head = torch.empty(num_blocks, dim, dtype=torch.float32, device=grad.device)
    tail = torch.empty_like(head)
    flags = torch.empty(num_blocks, dtype=torch.int8, device=grad.device)
    _row_sums_kernel[(num_blocks,)](
        rows, order, bags, grad, weights, momentum, head, tail, flags, n, batch, grad.stride(0), lr, eps, D=dim, P=p
    )
    _spanning_rows_kernel[(num_blocks,)](
        rows, head, tail, flags, weights, momentum, n, num_blocks, lr, eps, D=dim, P=p, J=_SPAN_BLOCKS
    )
