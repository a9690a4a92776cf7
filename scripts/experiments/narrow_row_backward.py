"""Experiment (thirty-second session, archived): LMA's narrow-row backward with exact row-wise Adagrad in Triton
against FBGEMM's TBE backward at big's shapes. Runs against the library of 2752d23 (``ops.pooled_adagrad``, since
reverted); results in docs/PERFORMANCE.md. Usage: ``python3 narrow_row_backward.py out.json [--profile]``."""

import json
import statistics
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, "scripts")
from bench_lma_dedup import BATCH, POOLING, TABLES, ZIPF, LMALookups

from torchrec_memcom.benchmarks.data import sample_ids
from torchrec_memcom.benchmarks.measure import timed_steps


@triton.jit
def _keyed_sum(k1, v1, k2, v2):
    return k2, v2 + tl.where(k1 == k2, v1, 0)


@triton.jit
def _adagrad(w_ptr, m_ptr, row, g, own, lr, eps, D: tl.constexpr):
    cols = tl.arange(0, D)
    m = tl.load(m_ptr + row, mask=own, other=0.0) + tl.sum(g * g, axis=1) / D
    tl.store(m_ptr + row, m, mask=own)
    mult = lr / (tl.sqrt_rn(m) + eps)
    wp = w_ptr + row[:, None] * D + cols[None, :]
    w = tl.load(wp, mask=own[:, None], other=0.0)
    tl.store(wp, w - mult[:, None] * g, mask=own[:, None])


@triton.jit
def _reduce_kernel(
    keys_ptr,
    perm_ptr,
    bag_ptr,
    grad_ptr,
    doff_ptr,
    w_ptr,
    m_ptr,
    head_ptr,
    tail_ptr,
    flag_ptr,
    n,
    B,
    total_D,
    lr,
    eps,
    D: tl.constexpr,
    P: tl.constexpr,
):
    blk = tl.program_id(0).to(tl.int64)
    start = blk * P
    e = start + tl.arange(0, P)
    valid = e < n
    last = tl.minimum(start + P, n) - 1
    key = tl.load(keys_ptr + e, mask=valid, other=-1).to(tl.int64)
    nxt = tl.load(keys_ptr + e + 1, mask=(e + 1) < n, other=-1).to(tl.int64)
    pos = tl.load(perm_ptr + e, mask=valid, other=0)
    bag = tl.load(bag_ptr + pos, mask=valid, other=0).to(tl.int64)
    f = bag // B
    b = bag - f * B
    col0 = tl.load(doff_ptr + f, mask=valid, other=0).to(tl.int64)
    cols = tl.arange(0, D)
    g = tl.load(grad_ptr + (b * total_D + col0)[:, None] + cols[None, :], mask=valid[:, None], other=0.0)
    _, s = tl.associative_scan((tl.broadcast_to(key[:, None], (P, D)), g), 0, _keyed_sum)
    first_key = tl.load(keys_ptr + start).to(tl.int64)
    last_key = tl.load(keys_ptr + last).to(tl.int64)
    prev_key = tl.load(keys_ptr + start - 1, mask=start > 0, other=-1).to(tl.int64)
    after_key = tl.load(keys_ptr + last + 1, mask=last + 1 < n, other=-1).to(tl.int64)
    head_cont = prev_key == first_key
    tail_cont = after_key == last_key
    is_end = valid & ((key != nxt) | (e == last))
    starts_in = (key != first_key) | ((key * 0 + prev_key) != first_key)
    ends_glob = valid & (key != nxt)
    _adagrad(w_ptr, m_ptr, key, s, is_end & starts_in & ends_glob, lr, eps, D)
    head_lane = is_end & (key == first_key) & ((key * 0 + prev_key) == first_key)
    tl.store(head_ptr + blk * D + tl.zeros((P,), tl.int64)[:, None] + cols[None, :], s, mask=head_lane[:, None])
    tail_lane = (e == last) & ((key * 0 + after_key) == last_key) & starts_in
    tl.store(tail_ptr + blk * D + tl.zeros((P,), tl.int64)[:, None] + cols[None, :], s, mask=tail_lane[:, None])
    # bit 0: the tail run started here and continues (this block applies it); bit 1: the whole block is one run that
    # started before and continues after
    own = tail_cont & ((first_key != last_key) | (prev_key != first_key))
    through = (first_key == last_key) & head_cont & tail_cont
    tl.store(flag_ptr + blk, own.to(tl.int8) + 2 * through.to(tl.int8))


@triton.jit
def _span_kernel(
    keys_ptr,
    head_ptr,
    tail_ptr,
    flag_ptr,
    w_ptr,
    m_ptr,
    n,
    nblocks,
    lr,
    eps,
    D: tl.constexpr,
    P: tl.constexpr,
    J: tl.constexpr,
):
    blk = tl.program_id(0).to(tl.int64)
    if (tl.load(flag_ptr + blk) & 1) != 0:
        cols = tl.arange(0, D)
        acc = tl.load(tail_ptr + blk * D + cols)
        j0 = blk + 1
        going = True
        while going:
            js = j0 + tl.arange(0, J)
            inb = js < nblocks
            through = (tl.load(flag_ptr + js, mask=inb, other=0) & 2) != 0
            stop = tl.min(tl.where(through, J, tl.arange(0, J)), axis=0)
            take = inb & (tl.arange(0, J) <= stop)
            acc += tl.sum(tl.load(head_ptr + js[:, None] * D + cols[None, :], mask=take[:, None], other=0.0), axis=0)
            going = stop >= J
            j0 += J
        last = tl.minimum(blk * P + P, n) - 1
        row = tl.load(keys_ptr + last + tl.zeros((1,), tl.int64)).to(tl.int64)
        _adagrad(w_ptr, m_ptr, row, acc[None, :], row >= 0, lr, eps, D)


P, J = 128, 16


def our_backward(indices, offsets, bag_of_pos, grad, doff, weights, momentum, lr, eps, D, B, sort_dtype):
    keys, perm = indices.to(sort_dtype).sort()
    n = keys.numel()
    nblocks = triton.cdiv(n, P)
    head = torch.empty(nblocks, D, device=grad.device)
    tail = torch.empty(nblocks, D, device=grad.device)
    flags = torch.empty(nblocks, dtype=torch.int8, device=grad.device)
    _reduce_kernel[(nblocks,)](
        keys,
        perm,
        bag_of_pos,
        grad,
        doff,
        weights,
        momentum,
        head,
        tail,
        flags,
        n,
        B,
        grad.shape[1],
        lr,
        eps,
        D=D,
        P=P,
        num_warps=4,
    )
    _span_kernel[(nblocks,)](
        keys, head, tail, flags, weights, momentum, n, nblocks, lr, eps, D=D, P=P, J=J, num_warps=1
    )


def main():
    device = torch.device("cuda")
    torch.manual_seed(0)
    g = torch.Generator(device=device).manual_seed(0)
    num_ids, memory_rows = 4_000_000, 16_000_000
    ids = torch.cat([sample_ids(num_ids, BATCH * POOLING, "powerlaw", ZIPF, g, device) for _ in range(TABLES)])
    L = LMALookups(ids, num_ids, memory_rows, BATCH, TABLES)
    tbe = L.full_tbe
    F = TABLES * 8
    grad = L.pooled_grad.view(TABLES, BATCH, -1).transpose(0, 1).reshape(BATCH, -1).contiguous()
    lengths = L.full_offsets.diff()
    bag_of_pos = torch.repeat_interleave(
        torch.arange(F * BATCH, device=device, dtype=torch.int32), lengths, output_size=L.full_indices.numel()
    )
    doff = torch.arange(F, device=device, dtype=torch.int32) * 16
    mom = tbe.momentum1_dev
    print("tbe", tbe.weights_dev.shape, mom.shape, "indices", L.full_indices.numel(), flush=True)

    def fbgemm():
        out = tbe(L.full_indices, L.full_offsets)
        out.backward(grad)

    def ours(sort_dtype=torch.int32):
        with torch.no_grad():
            out = tbe(L.full_indices, L.full_offsets)
        our_backward(
            L.full_indices,
            L.full_offsets,
            bag_of_pos,
            grad,
            doff,
            tbe.weights_dev,
            mom,
            0.01,
            1e-8,
            16,
            BATCH,
            sort_dtype,
        )
        return out

    from torchrec_memcom.ops.pooled_adagrad import pooled_rowwise_adagrad_

    frows = torch.zeros(F, dtype=torch.int64, device=device)

    def lib():
        with torch.no_grad():
            out = tbe(L.full_indices, L.full_offsets)
        pooled_rowwise_adagrad_(tbe.weights_dev, mom, L.full_indices, L.full_offsets, grad, frows, 16, 0.01, 1e-8)

    def lib_bwd_only():
        pooled_rowwise_adagrad_(tbe.weights_dev, mom, L.full_indices, L.full_offsets, grad, frows, 16, 0.01, 1e-8)

    def fwd_only():
        with torch.no_grad():
            tbe(L.full_indices, L.full_offsets)

    def sort_only():
        L.full_indices.sort()

    # correctness: same start, one step each
    w0 = torch.randn_like(tbe.weights_dev)
    m0 = torch.rand_like(mom)
    tbe.weights_dev.data.copy_(w0)
    mom.copy_(m0)
    fbgemm()
    w_f, m_f = tbe.weights_dev.detach().clone(), mom.clone()
    tbe.weights_dev.data.copy_(w0)
    mom.copy_(m0)
    ours()
    w_o, m_o = tbe.weights_dev.detach().clone(), mom.clone()
    tbe.weights_dev.data.copy_(w0)
    mom.copy_(m0)
    lib()
    w_l, m_l = tbe.weights_dev.detach().clone(), mom.clone()
    # reference in plain torch
    rows = L.full_indices.long()
    gpos = grad.view(BATCH, F, 16).transpose(0, 1).reshape(F * BATCH, 16)[bag_of_pos.long()]
    gsum = torch.zeros(memory_rows, 16, device=device).index_add_(0, rows, gpos)
    touched = torch.zeros(memory_rows, dtype=torch.bool, device=device)
    touched[rows] = True
    m_r = m0 + torch.where(touched, (gsum * gsum).sum(1) / 16, 0.0)
    w_r = w0.view(-1, 16) - torch.where(touched[:, None], 0.01 * gsum / (m_r.sqrt() + 1e-8)[:, None], 0.0)
    res = {
        "fbgemm_vs_ref_w": float((w_f.view(-1, 16) - w_r).abs().max()),
        "ours_vs_ref_w": float((w_o.view(-1, 16) - w_r).abs().max()),
        "ours_vs_fbgemm_w": float((w_o - w_f).abs().max()),
        "lib_vs_ref_w": float((w_l.view(-1, 16) - w_r).abs().max()),
        "lib_vs_ref_m": float(((m_l - m_r).abs() / m_r.abs().clamp_min(1e-6)).max()),
        "fbgemm_vs_ref_m": float(((m_f - m_r).abs() / m_r.abs().clamp_min(1e-6)).max()),
        "ours_vs_ref_m": float(((m_o - m_r).abs() / m_r.abs().clamp_min(1e-6)).max()),
        "touched": int(touched.sum()),
    }
    print(res, flush=True)
    from torchrec_memcom.ops.pooled_adagrad import sorted_rows

    ways = {
        "fbgemm fwd+bwd": fbgemm,
        "fbgemm fwd only": fwd_only,
        "library fwd+bwd": lib,
        "library bwd only": lib_bwd_only,
        "sorted_rows (fbgemm transpose)": lambda: sorted_rows(
            L.full_indices, L.full_offsets, frows, memory_rows, BATCH
        ),
    }
    ms = {}
    for name, call in [*ways.items(), *ways.items()]:
        for _ in range(5):
            call()
        times, _ = timed_steps(call, 50, device)
        ms[name] = min(ms.get(name, 1e9), statistics.median(times))
    for k, v in ms.items():
        print(f"{k}: {v:.3f} ms", flush=True)
    res["ms"] = ms
    json.dump(res, open(sys.argv[1] if len(sys.argv) > 1 else "/tmp/narrow.json", "w"), indent=1)
    if "--profile" in sys.argv:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(5):
                fbgemm()
                lib()
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=25))


if __name__ == "__main__":
    main()
