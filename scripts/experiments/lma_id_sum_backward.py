# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Experiment (thirty-third session, archived): LMA's memory update with each id's gradient summed once before the 8x
expansion, against FBGEMM's TBE backward over all 8 chunk lookups of every id, at big's LMA shapes (one 16M x 16
memory, 8 tables x 8 chunks, 16384 bags of 20 power-law ids each). Results: docs/PERFORMANCE.md, thirty-third session.

Ours: sort the 2.6M (table, id) keys; a Triton kernel sums each run of equal keys' pooled gradient rows (128 wide; a
keyed scan per tile, ``seq=0``, or a sequential walk per program, ``seq=1``) and adds the run's 8 chunk sums into a
scratch as large as the memory with atomics, marking the rows; then exact row-wise Adagrad on the marked rows, by one
lane per run end and chunk claiming the row (``dense=0``), one lane per memory row reading the marks (``dense=1``) or
every row (``dense=2``: a row without gradient does not change). Each is checked against the rule in plain PyTorch.

``--configs``: ``;``-separated ``P_sum,P_upd,warps_sum,warps_upd[,mode,dense,seq]``; ``mode`` (scan kernel): 0 scan
and atomics, 1 scan and plain stores, 3 loads only (1 and 3 time parts only, their updates are wrong), 2 no scan and
one atomic per position.

Usage (GPU; ``--device cpu --scale 2000 --iters 1`` under ``TRITON_INTERPRET=1`` checks it on the CPU)::

    python3 scripts/experiments/lma_id_sum_backward.py --out idsum.json --configs "32,2048,2,8,0,1,1"
"""

import argparse
import json
import statistics
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, "scripts")
from bench_lma_dedup import CHUNKS, POOLING, TABLES, ZIPF, LMALookups  # noqa: E402

from torchrec_memcom.benchmarks.data import sample_ids  # noqa: E402
from torchrec_memcom.benchmarks.measure import timed_steps  # noqa: E402

LR, EPS, DC = 0.01, 1e-8, 16


@triton.jit
def _keyed_sum(k1, v1, k2, v2):
    return k2, v2 + tl.where(k1 == k2, v1, 0)


@triton.jit
def _sum_scatter_kernel(
    keys_ptr,
    perm_ptr,
    grad_ptr,
    loc_ptr,
    scratch_ptr,
    flag_ptr,
    n,
    per_table,
    pool,
    total_D,
    P: tl.constexpr,
    C: tl.constexpr,
    DC: tl.constexpr,
    MODE: tl.constexpr = 0,
):
    # MODE 0: scan + atomics; 1: scan + plain stores (timing only); 2: no scan, atomics per position (exact too);
    # 3: loads only, plain stores (timing only)
    start = tl.program_id(0).to(tl.int64) * P
    e = start + tl.arange(0, P)
    valid = e < n
    last = tl.minimum(start + P, n) - 1
    key = tl.load(keys_ptr + e, mask=valid, other=-1).to(tl.int64)
    nxt = tl.load(keys_ptr + e + 1, mask=valid & (e + 1 < n), other=-2).to(tl.int64)
    end = valid & ((key != nxt) | (e == last))
    q = tl.load(perm_ptr + e, mask=valid, other=0).to(tl.int64)
    t = q // per_table
    p = q - t * per_table
    sample = p // pool
    D: tl.constexpr = C * DC
    cols = tl.arange(0, D)
    g = tl.load(grad_ptr + (sample * total_D + t * D)[:, None] + cols[None, :], mask=valid[:, None], other=0.0)
    if MODE == 0 or MODE == 1:
        _, s = tl.associative_scan((tl.broadcast_to(key[:, None], (P, D)), g), 0, _keyed_sum)
    else:
        s = g
    if MODE == 2:
        end = valid
    chunk = cols // DC
    loc = tl.load(loc_ptr + (t[:, None] * C + chunk[None, :]) * per_table + p[:, None], mask=end[:, None], other=0)
    loc = loc.to(tl.int64)
    if MODE == 0 or MODE == 2:
        tl.atomic_add(scratch_ptr + loc * DC + (cols % DC)[None, :], s, mask=end[:, None], sem="relaxed")
    else:
        tl.store(scratch_ptr + loc * DC + (cols % DC)[None, :], s, mask=end[:, None])
    tl.store(
        flag_ptr + loc, tl.full((P, D), 1, flag_ptr.dtype.element_ty), mask=end[:, None] & ((cols % DC) == 0)[None, :]
    )


@triton.jit
def _seq_sum_kernel(
    keys_ptr,
    perm_ptr,
    grad_ptr,
    loc_ptr,
    scratch_ptr,
    flag_ptr,
    n,
    per_table,
    pool,
    total_D,
    P: tl.constexpr,
    C: tl.constexpr,
    DC: tl.constexpr,
):
    # one program walks P sorted positions in order, summing a 128-wide row; flushes with atomics at each run's end
    start = tl.program_id(0).to(tl.int64) * P
    D: tl.constexpr = C * DC
    cols = tl.arange(0, D)
    chunk = cols // DC
    acc = tl.zeros((D,), tl.float32)
    stop = tl.minimum(start + P, n)
    key = tl.load(keys_ptr + start).to(tl.int64)
    for e in range(start, stop):
        q = tl.load(perm_ptr + e).to(tl.int64)
        t = q // per_table
        p = q - t * per_table
        sample = p // pool
        acc += tl.load(grad_ptr + sample * total_D + t * D + cols)
        nk = tl.load(keys_ptr + e + 1, mask=e + 1 < stop, other=-2).to(tl.int64)
        if nk != key:
            loc = tl.load(loc_ptr + (t * C + chunk) * per_table + p).to(tl.int64)
            tl.atomic_add(scratch_ptr + loc * DC + cols % DC, acc, sem="relaxed")
            tl.store(flag_ptr + loc, tl.full((D,), 1, flag_ptr.dtype.element_ty), mask=(cols % DC) == 0)
            acc = tl.zeros((D,), tl.float32)
            key = nk


@triton.jit
def _dense_update_kernel(scratch_ptr, flag_ptr, w_ptr, m_ptr, rows, lr, eps, R: tl.constexpr, DC: tl.constexpr):
    # one lane per memory row: rows whose flag is set take row-wise Adagrad with the scratch's sum, then reset both
    r = tl.program_id(0) * R + tl.arange(0, R)
    inb = r < rows
    won = (tl.load(flag_ptr + r, mask=inb, other=0) != 0) & inb
    tl.store(flag_ptr + r, tl.zeros((R,), flag_ptr.dtype.element_ty), mask=won)
    cols = tl.arange(0, DC)
    ptrs = r[:, None] * DC + cols[None, :]
    g = tl.load(scratch_ptr + ptrs, mask=won[:, None], other=0.0)
    tl.store(scratch_ptr + ptrs, tl.zeros((R, DC), tl.float32), mask=won[:, None])
    m = tl.load(m_ptr + r, mask=won, other=0.0) + tl.sum(g * g, axis=1) / DC
    tl.store(m_ptr + r, m, mask=won)
    mult = lr / (tl.sqrt_rn(m) + eps)
    w = tl.load(w_ptr + ptrs, mask=won[:, None], other=0.0)
    tl.store(w_ptr + ptrs, w - mult[:, None] * g, mask=won[:, None])


@triton.jit
def _update_kernel(
    keys_ptr,
    perm_ptr,
    loc_ptr,
    scratch_ptr,
    flag_ptr,
    w_ptr,
    m_ptr,
    n,
    per_table,
    lr,
    eps,
    P: tl.constexpr,
    C: tl.constexpr,
    DC: tl.constexpr,
):
    start = tl.program_id(0).to(tl.int64) * P
    i = tl.arange(0, P * C)
    e = start + i // C
    chunk = i % C
    valid = e < n
    last = tl.minimum(start + P, n) - 1
    key = tl.load(keys_ptr + e, mask=valid, other=-1).to(tl.int64)
    nxt = tl.load(keys_ptr + e + 1, mask=valid & (e + 1 < n), other=-2).to(tl.int64)
    end = valid & ((key != nxt) | (e == last))
    q = tl.load(perm_ptr + e, mask=end, other=0).to(tl.int64)
    t = q // per_table
    p = q - t * per_table
    row = tl.load(loc_ptr + (t * C + chunk) * per_table + p, mask=end, other=0).to(tl.int64)
    won = tl.atomic_xchg(flag_ptr + row, tl.zeros((P * C,), tl.int32), mask=end, sem="relaxed") == 1
    won = won & end
    cols = tl.arange(0, DC)
    ptrs = row[:, None] * DC + cols[None, :]
    g = tl.load(scratch_ptr + ptrs, mask=won[:, None], other=0.0)
    tl.store(scratch_ptr + ptrs, tl.zeros((P * C, DC), tl.float32), mask=won[:, None])
    m = tl.load(m_ptr + row, mask=won, other=0.0) + tl.sum(g * g, axis=1) / DC
    tl.store(m_ptr + row, m, mask=won)
    mult = lr / (tl.sqrt_rn(m) + eps)
    w = tl.load(w_ptr + ptrs, mask=won[:, None], other=0.0)
    tl.store(w_ptr + ptrs, w - mult[:, None] * g, mask=won[:, None])


@triton.jit
def _full_update_kernel(scratch_ptr, w_ptr, m_ptr, rows, lr, eps, R: tl.constexpr, DC: tl.constexpr):
    # every memory row: row-wise Adagrad with the scratch's sum (0 for rows not in the batch: no change), scratch reset
    r = tl.program_id(0) * R + tl.arange(0, R)
    inb = r < rows
    cols = tl.arange(0, DC)
    ptrs = r[:, None] * DC + cols[None, :]
    g = tl.load(scratch_ptr + ptrs, mask=inb[:, None], other=0.0)
    tl.store(scratch_ptr + ptrs, tl.zeros((R, DC), tl.float32), mask=inb[:, None])
    m = tl.load(m_ptr + r, mask=inb, other=0.0) + tl.sum(g * g, axis=1) / DC
    tl.store(m_ptr + r, m, mask=inb)
    mult = lr / (tl.sqrt_rn(m) + eps)
    w = tl.load(w_ptr + ptrs, mask=inb[:, None], other=0.0)
    tl.store(w_ptr + ptrs, w - mult[:, None] * g, mask=inb[:, None])


class IdSum:
    def __init__(self, L, P_sum, P_upd, warps_sum, warps_upd, mode=0, dense=0, seq=0):
        dev = L.ids.device
        self.L = L
        self.mode, self.dense, self.seq = mode, dense, seq
        self.scratch = torch.zeros(L.memory_rows * DC, device=dev)
        self.flags = torch.zeros(L.memory_rows, dtype=torch.int8 if dense else torch.int32, device=dev)
        self.grad = L.pooled_grad.view(L.tables, L.batch, -1).transpose(0, 1).reshape(L.batch, -1).contiguous()
        self.keys32 = L.keys.to(torch.int32)
        self.P_sum, self.P_upd, self.ws, self.wu = P_sum, P_upd, warps_sum, warps_upd

    def sort(self):
        return self.keys32.sort()

    def backward(self, weights, momentum, sorted_=None):
        L = self.L
        keys, perm = sorted_ if sorted_ is not None else self.sort()
        n = keys.numel()
        per_table = L.batch * POOLING
        args = (
            keys,
            perm,
            self.grad,
            L.full_indices,
            self.scratch,
            self.flags,
            n,
            per_table,
            POOLING,
            self.grad.shape[1],
        )
        if self.seq:
            _seq_sum_kernel[(triton.cdiv(n, self.P_sum),)](*args, P=self.P_sum, C=CHUNKS, DC=DC, num_warps=self.ws)
        else:
            _sum_scatter_kernel[(triton.cdiv(n, self.P_sum),)](
                *args, P=self.P_sum, C=CHUNKS, DC=DC, MODE=self.mode, num_warps=self.ws
            )
        if self.dense == 2:
            rows = L.memory_rows
            _full_update_kernel[(triton.cdiv(rows, self.P_upd),)](
                self.scratch, weights, momentum, rows, LR, EPS, R=self.P_upd, DC=DC, num_warps=self.wu
            )
            return
        if self.dense:
            rows = L.memory_rows
            _dense_update_kernel[(triton.cdiv(rows, self.P_upd),)](
                self.scratch, self.flags, weights, momentum, rows, LR, EPS, R=self.P_upd, DC=DC, num_warps=self.wu
            )
            return
        _update_kernel[(triton.cdiv(n, self.P_upd),)](
            keys,
            perm,
            L.full_indices,
            self.scratch,
            self.flags,
            weights,
            momentum,
            n,
            per_table,
            LR,
            EPS,
            P=self.P_upd,
            C=CHUNKS,
            DC=DC,
            num_warps=self.wu,
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default="/tmp/idsum.json")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--configs", default="32,32,4,4")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0)
    batch = max(1, 16384 // a.scale)
    num_ids, memory_rows = (max(16, n // a.scale) for n in (4_000_000, 16_000_000))
    ids = torch.cat([sample_ids(num_ids, batch * POOLING, "powerlaw", ZIPF, gen, device) for _ in range(TABLES)])
    L = LMALookups(ids, num_ids, memory_rows, batch, TABLES)
    tbe = L.full_tbe
    w_dev = tbe.weights_dev if tbe.weights_dev.numel() else tbe.weights_host
    mom = tbe.momentum1_dev if tbe.momentum1_dev.numel() else tbe.momentum1_host
    configs = [tuple(int(x) for x in c.split(",")) for c in a.configs.split(";")]
    ours = [IdSum(L, *c) for c in configs]
    F = TABLES * CHUNKS
    lengths = L.full_offsets.diff()
    bag_of_pos = torch.repeat_interleave(torch.arange(F * batch, device=device), lengths.long())

    def fbgemm():
        L.full()

    def fwd_only():
        with torch.no_grad():
            tbe(L.full_indices, L.full_offsets)

    def make_ours(o):
        def run():
            fwd_only()
            o.backward(w_dev.detach(), mom.detach())

        return run

    # correctness: one step from the same start, against plain torch and FBGEMM
    w0, m0 = torch.randn_like(w_dev), torch.rand_like(mom)
    res = {"ids": ids.numel(), "distinct": int(L.keys.unique().numel())}

    def reset():
        with torch.no_grad():
            w_dev.data.copy_(w0)
            mom.data.copy_(m0)

    reset()
    fbgemm()
    w_f, m_f = w_dev.detach().clone(), mom.detach().clone()
    rows = L.full_indices.long()
    gpos = ours[0].grad.view(batch, F, DC).transpose(0, 1).reshape(F * batch, DC)[bag_of_pos]
    gsum = torch.zeros(memory_rows, DC, device=device).index_add_(0, rows, gpos)
    touched = torch.zeros(memory_rows, dtype=torch.bool, device=device)
    touched[rows] = True
    m_r = m0 + torch.where(touched, (gsum * gsum).sum(1) / DC, 0.0)
    w_r = w0.view(-1, DC) - torch.where(touched[:, None], LR * gsum / (m_r.sqrt() + EPS)[:, None], 0.0)
    res["fbgemm_vs_ref_w"] = float((w_f.view(-1, DC) - w_r).abs().max())
    res["fbgemm_vs_ref_m"] = float(((m_f - m_r).abs() / m_r.abs().clamp_min(1e-6)).max())
    for c, o in zip(configs, ours):
        reset()
        make_ours(o)()
        res[f"ours{c}_vs_ref_w"] = float((w_dev.detach().view(-1, DC) - w_r).abs().max())
        res[f"ours{c}_vs_ref_m"] = float(((mom.detach() - m_r).abs() / m_r.abs().clamp_min(1e-6)).max())
        res[f"ours{c}_scratch_left"] = float(o.scratch.abs().max())
        res[f"ours{c}_flags_left"] = int(o.flags.sum())
    print(res, flush=True)
    ways = {"fbgemm fwd+bwd": fbgemm, "fwd only": fwd_only, "sort 2.6M int32": ours[0].sort}
    for c, o in zip(configs, ours):
        ways[f"ours {c} fwd+bwd"] = make_ours(o)
        s = o.sort()
        ways[f"ours {c} kernels only"] = lambda o=o, s=s: o.backward(w_dev.detach(), mom.detach(), s)
    ms = {}
    for name, call in [*ways.items(), *ways.items()]:
        for _ in range(3):
            call()
        times, _ = timed_steps(call, a.iters, device)
        ms[name] = min(ms.get(name, 1e9), statistics.median(times))
    for k, v in ms.items():
        print(f"{k}: {v:.3f} ms", flush=True)
    res["ms"] = ms
    json.dump(res, open(a.out, "w"), indent=1)
    if a.profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fbgemm()
                make_ours(ours[0])()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20))


if __name__ == "__main__":
    main()
