# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Triton kernels of ``torchrec_memcom.ops`` (imported only for CUDA tensors). Each mirrors its PyTorch definition
operation for operation; ``tests/modules/test_ops.py`` checks them bit for bit on the GPU and, without one, through
Triton's CPU interpreter."""

import functools
from typing import Any, Sequence, Tuple

import torch
import triton
import triton.language as tl

from torchrec_memcom.hashing import BucketedHash, mix_params
from torchrec_memcom.ops import ONE_SLOTS
from torchrec_memcom.ops._launch import unspecialized_jit

_BLOCK = 1024
_BLOCK_IDS = 128
_COLUMN_ROWS = 16
_COLUMN_BLOCK = 128
_MIX = mix_params(0)  # the mix parameters of every kernel's hash (salt 0)


@triton.jit
def _fold_p(r):
    # r mod P for 0 <= r < 2**32, P = 2**31 - 1 (a Mersenne prime: 2**31 = 1 mod P), in r's own integer type: one fold
    # (<= P + 1) and one subtraction instead of a division
    r = (r & 2147483647) + (r >> 31)
    return tl.where(r >= 2147483647, r - 2147483647, r)


@triton.jit
def _mod_p(v):
    # v mod P for 0 <= v < 2**62: a first fold brings it below 2**32; equal to v % P for every such v
    return _fold_p((v & 2147483647) + (v >> 31))


@triton.jit
def _mulmod_p32(a, b):
    # (a * b) mod P for uint32 a, b < 2**31 in 32-bit arithmetic (GPUs emulate 64-bit products with several 32-bit
    # ones): the product is hi 2**32 + lo with hi < 2**30, and 2**31 = 1 mod P, so it is lo mod 2**31 + lo >> 31 +
    # 2 hi mod P, a sum below 2**32
    lo = a * b
    hi = tl.umulhi(a, b)
    return _fold_p((lo & 2147483647) + (lo >> 31) + (hi << 1))


@triton.jit
def _mix(x, a1, a2, c):
    # hashing.mix: ((x mod 2**30) * a1 + ((x >> 30) mod P) * a2 + c) mod P, P = 2**31 - 1, for x < 2**61 and a1, a2,
    # c < P (mix_params): both products modulo P in 32-bit arithmetic, equal to the 64-bit definition
    lo = (x & 1073741823).to(tl.uint32)
    hi = _mod_p(x >> 30).to(tl.uint32)
    r = _fold_p(_mulmod_p32(lo, a1.to(tl.uint32)) + _mulmod_p32(hi, a2.to(tl.uint32)))
    return _fold_p(r + c.to(tl.uint32)).to(tl.int64)


@unspecialized_jit
def _hash_kernel(
    ids_ptr,
    s_ptr,
    rows_ptr,
    n: tl.int64,
    a: tl.int64,
    c: tl.int64,
    n_pad: tl.int64,
    ipb: tl.int64,
    rpb: tl.int64,
    m1: tl.int64,
    m2: tl.int64,
    mc: tl.int64,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(ids_ptr + offs, mask=mask, other=0).to(tl.int64)
    s = (x * a + c) % n_pad
    row = (s // ipb) * rpb + _mix(s, m1, m2, mc) % rpb
    tl.store(s_ptr + offs, s, mask=mask)
    tl.store(rows_ptr + offs, row, mask=mask)


def hash_ids_triton(ids: torch.Tensor, h: BucketedHash, s_out: torch.Tensor, rows_out: torch.Tensor) -> None:
    a, c = h.scramble_params
    m1, m2, mc = _MIX
    n = ids.numel()
    _hash_kernel[(triton.cdiv(n, _BLOCK),)](
        ids,
        s_out,
        rows_out,
        n,
        a,
        c,
        h.padded_num_embeddings,
        h.ids_per_bucket,
        h.rows_per_bucket,
        m1,
        m2,
        mc,
        BLOCK=_BLOCK,
    )


# ops.lma_locations_grouped (lsh.chunk_locations of BLOCK ids x C chunks per program): per job, static row (sig_bytes,
# bits, C, memory_rows, salt10, max_id, clamp, 0, then lma_chunk_params' 8 values per chunk: the two hash rounds' mix
# params, P_k, base_k; CP2 chunks) and dynamic row (start, n, signatures address, id step in out, dst_0..CP2-1).
@unspecialized_jit
def _lma_grouped_kernel(
    ids_ptr,
    static_ptr,
    dyn_ptr,
    out_ptr,
    n_in: tl.int64,
    n_out: tl.int64,
    CP2: tl.constexpr,
    NARROW: tl.constexpr,
    BLOCK: tl.constexpr,
):
    job = tl.program_id(0)
    drow = dyn_ptr + job * (4 + CP2)
    start = tl.load(drow)
    n = tl.load(drow + 1)
    sig = tl.load(drow + 2).to(tl.pointer_type(tl.uint8))
    step = tl.load(drow + 3)
    srow = static_ptr + job * (8 + 8 * CP2)
    sig_bytes = tl.load(srow)
    bits = tl.load(srow + 1)
    c = tl.load(srow + 2)
    memory_rows = tl.load(srow + 3)
    salt10 = tl.load(srow + 4)
    max_id = tl.load(srow + 5)
    clamp = tl.load(srow + 6)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = (offs < n) & (start + offs < n_in)
    zero = tl.zeros((BLOCK,), dtype=tl.int64)  # scalar conditions as blocks (Triton's interpreter masks need them)
    ids = tl.load(ids_ptr + start + offs, mask=mask, other=0).to(tl.int64)
    ids = tl.where((zero + clamp) != 0, tl.minimum(tl.maximum(ids, 0), max_id), ids)
    ks = tl.arange(0, CP2)
    kmask = ks < c
    both = mask[:, None] & kmask[None, :]
    pk = srow + 8 + ks * 8
    f1 = tl.load(pk + 0, mask=kmask, other=1)[None, :]
    f2 = tl.load(pk + 1, mask=kmask, other=1)[None, :]
    fc = tl.load(pk + 2, mask=kmask, other=0)[None, :]
    g1 = tl.load(pk + 3, mask=kmask, other=1)[None, :]
    g2 = tl.load(pk + 4, mask=kmask, other=1)[None, :]
    gc = tl.load(pk + 5, mask=kmask, other=0)[None, :]
    y = _mix(((ids << 10) | salt10)[:, None], f1, f2, fc)
    y = _mix(y ^ (y >> 15), g1, g2, gc)
    h = y ^ (y >> 13)  # < 2**31
    loc = h % memory_rows
    # code k: bits [k b, (k + 1) b) of the row's bytes, read as a 3-byte little-endian word (zeros past the end)
    first = ks.to(tl.int64) * bits
    byte = (first // 8)[None, :]
    read = both & ((zero + bits) > 0)[:, None]
    at = sig + ids[:, None] * sig_bytes + byte
    b0 = tl.load(at, mask=read & (byte < sig_bytes), other=0).to(tl.int64)
    b1 = tl.load(at + 1, mask=read & (byte + 1 < sig_bytes), other=0).to(tl.int64)
    b2 = tl.load(at + 2, mask=read & (byte + 2 < sig_bytes), other=0).to(tl.int64)
    q = (1 << bits) - 1
    code = ((b0 | (b1 << 8) | (b2 << 16)) >> (first % 8)[None, :]) & q
    p = tl.load(pk + 6, mask=kmask, other=1)[None, :]
    base = tl.load(pk + 7, mask=kmask, other=0)[None, :]
    safe_q = tl.maximum(q, 1)
    if NARROW:  # every value below 2**31 (checked on the host): 32-bit divisions, several times cheaper than 64-bit
        h32 = h.to(tl.int32)
        loc = (h32 % memory_rows.to(tl.int32)).to(tl.int64)
        code32, p32, q32 = code.to(tl.int32), p.to(tl.int32), safe_q.to(tl.int32)
        first_row = code32 * p32 // q32
        width = tl.maximum((code32 + 1) * p32 // q32 - first_row, 1)
        coded = base + first_row.to(tl.int64) + (h32 % width).to(tl.int64)
    else:
        first_row = code * p // safe_q
        width = tl.maximum((code + 1) * p // safe_q - first_row, 1)
        coded = base + first_row + h % width
    loc = tl.where(code == q, loc, coded)  # bits = 0: q = code = 0, the hashed fallback
    dst = tl.load(drow + 4 + ks, mask=kmask, other=-1)[None, :]
    at_out = dst + offs[:, None] * step
    write = both & (dst >= 0) & (at_out < n_out)
    tl.store(out_ptr + at_out, loc, mask=write)


@functools.lru_cache(maxsize=64)
def _lma_static(rows: Tuple[Tuple[int, ...], ...], cp2: int, device: torch.device) -> Tuple[torch.Tensor, bool]:
    """The static rows of ``_lma_grouped_kernel`` for jobs ``(sig_bytes, params..., max_id)`` (cached per plan), and
    whether its 32-bit path applies: every memory below 2**31 rows and every ``(code + 1) * P_k`` below 2**31."""
    from torchrec_memcom.ops import lma_chunk_params

    out, narrow = [], True
    for sig_bytes, num_chunks, bits, memory_rows, row_offset, num_rows, salt, max_id in rows:
        chunk = lma_chunk_params(num_chunks, row_offset, num_rows, torch.device("cpu")).reshape(-1).tolist()
        head = [sig_bytes, bits, num_chunks, memory_rows, salt & 1023, max(max_id, 0), int(max_id >= 0), 0]
        out.append(head + chunk + [0] * (8 * (cp2 - num_chunks)))
        largest_slice = -(-num_rows // num_chunks)
        narrow = narrow and memory_rows < 2**31 and (largest_slice << bits) < 2**31
    return torch.tensor(out, dtype=torch.int64).to(device), narrow


def lma_locations_grouped_triton(ids: torch.Tensor, jobs: Sequence[Any], out: torch.Tensor) -> None:
    """``ops.lma_locations_grouped`` (``jobs``: ``ops.LMAJob`` with ``n > 0``) in one launch."""
    from torchrec_memcom.ops import ints_to_device

    cp2 = triton.next_power_of_2(max(len(j.dst) for j in jobs))
    sigs = [j.signatures.contiguous() for j in jobs]  # rows of sig_bytes; kept alive until the launch is queued
    static, narrow = _lma_static(
        tuple((s.shape[1] if s.dim() == 2 and s.numel() else 0, *j.params, -1 if j.max_id is None else j.max_id)
              for s, j in zip(sigs, jobs)),
        cp2,
        ids.device,
    )  # fmt: skip
    dynamic = [
        [j.start, j.n, s.data_ptr() if s.numel() else ids.data_ptr(), j.step, *j.dst] + [-1] * (cp2 - len(j.dst))
        for s, j in zip(sigs, jobs)
    ]
    dyn = ints_to_device(dynamic, ids.device)
    extent = 1 + sum((size - 1) * stride for size, stride in zip(out.shape, out.stride()))  # out's last element + 1
    grid = (len(jobs), triton.cdiv(max(j.n for j in jobs), _BLOCK_IDS))
    _lma_grouped_kernel[grid](ids, static, dyn, out, ids.numel(), extent, CP2=cp2, NARROW=narrow, BLOCK=_BLOCK_IDS)


@unspecialized_jit
def _memcom_rows_kernel(
    ids_ptr,
    ends_ptr,
    ends_first: tl.int64,
    ends_step: tl.int64,
    params_ptr,
    rows_ptr,
    widx_ptr,
    weight_ptr,
    w_out_ptr,
    n: tl.int64,
    m1: tl.int64,
    m2: tl.int64,
    mc: tl.int64,
    F: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ONE_SLOTS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    j = tl.load(ids_ptr + offs, mask=mask, other=0).to(tl.int64)
    f = tl.zeros((BLOCK,), dtype=tl.int64)
    for i in tl.static_range(F - 1):
        f += (offs >= tl.load(ends_ptr + ends_first + i * ends_step)).to(tl.int64)
    block = tl.load(params_ptr + f * 5 + 0, mask=mask, other=0)
    row_offset = tl.load(params_ptr + f * 5 + 1, mask=mask, other=0)
    w_offset = tl.load(params_ptr + f * 5 + 2, mask=mask, other=0)
    ipb = tl.load(params_ptr + f * 5 + 3, mask=mask, other=1)
    rpb = tl.load(params_ptr + f * 5 + 4, mask=mask, other=1)
    memcom = ipb > 0
    ipb = tl.where(memcom, ipb, 1)
    rpb = tl.where(memcom, rpb, 1)
    s = j + block
    row = (s // ipb) * rpb + _mix(s, m1, m2, mc) % rpb - row_offset  # hashing.bucketed_rows, shifted to local
    widx = tl.where(memcom, j + w_offset, w_offset + offs % ONE_SLOTS)
    tl.store(rows_ptr + offs, tl.where(memcom, row, j), mask=mask)
    tl.store(widx_ptr + offs, widx, mask=mask)
    if HAS_WEIGHT:  # the per-sample weights w[widx] in the same pass
        tl.store(w_out_ptr + offs, tl.load(weight_ptr + widx, mask=mask, other=0.0), mask=mask)


def memcom_rows_triton(
    local_ids: torch.Tensor,
    ends: torch.Tensor,
    ends_first: int,
    ends_step: int,
    params: torch.Tensor,
    rows: torch.Tensor,
    widx: torch.Tensor,
    weight: "torch.Tensor | None" = None,
    w_out: "torch.Tensor | None" = None,
) -> None:
    n = local_ids.numel()
    m1, m2, mc = _MIX
    has_weight = weight is not None and w_out is not None
    _memcom_rows_kernel[(triton.cdiv(n, _BLOCK),)](
        local_ids,
        ends,
        ends_first,
        ends_step,
        params,
        rows,
        widx,
        weight if has_weight else rows,
        w_out if has_weight else rows,
        n,
        m1,
        m2,
        mc,
        F=params.shape[0],
        HAS_WEIGHT=has_weight,
        ONE_SLOTS=ONE_SLOTS,
        BLOCK=_BLOCK,
    )


# ops.transform_segments: static rows (src, op, check, carry, n, p0..p4); where the segments are: dynamic rows (in
# start, out start, len) from the host, or (FROM_OFFSETS) read from the input KJT's offsets (ops.SegmentPlacement).
@unspecialized_jit
def _segments_kernel(
    ids_ptr,
    w_in_ptr,
    static_ptr,
    dyn_ptr,
    out_ptr,
    w_out_ptr,
    stats_ptr,
    lengths_ptr,
    offsets_ptr,
    reset_ptr,
    length_src_ptr,
    lengths_out_ptr,
    slot_rows_ptr,
    slots_ptr,
    n_in: tl.int64,
    n_out: tl.int64,
    n_lengths: tl.int64,
    n_lengths_out: tl.int64,
    length_row: tl.int64,
    stride: tl.int64,
    num_segments: tl.int64,
    m1: tl.int64,
    m2: tl.int64,
    mc: tl.int64,
    HAS_W_IN: tl.constexpr,
    HAS_W_OUT: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_LENGTHS_OUT: tl.constexpr,
    FROM_OFFSETS: tl.constexpr,
    HAS_RESET: tl.constexpr,
    HAS_SLOTS: tl.constexpr,
    ONE_SLOTS: tl.constexpr,
    SEGMENTS_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    seg = tl.program_id(0)
    if HAS_LENGTHS:  # the smallest length into stats[length_row, 0]: every program takes its share of the lengths
        programs = tl.num_programs(0).to(tl.int64) * tl.num_programs(1)
        lane = (seg.to(tl.int64) * tl.num_programs(1) + tl.program_id(1)) * BLOCK + tl.arange(0, BLOCK)
        smallest = tl.full((BLOCK,), 9223372036854775807, dtype=tl.int64)
        for k in range(0, tl.cdiv(n_lengths, programs * BLOCK)):
            at = k * programs * BLOCK + lane
            # the sentinel after the cast: loaded as ``other`` it would wrap to -1 in int32 lengths
            got = tl.load(lengths_ptr + at, mask=at < n_lengths, other=0).to(tl.int64)
            smallest = tl.minimum(smallest, tl.where(at < n_lengths, got, 9223372036854775807))
        least = tl.min(smallest, axis=0)
        if least < 9223372036854775807:
            tl.atomic_min(stats_ptr + length_row * 2, least)
    if HAS_LENGTHS_OUT:  # the output KJT's lengths: output segment q takes those of key length_src[q] (-1: zeros)
        all_programs = tl.num_programs(0).to(tl.int64) * tl.num_programs(1)
        lanes = (seg.to(tl.int64) * tl.num_programs(1) + tl.program_id(1)) * BLOCK + tl.arange(0, BLOCK)
        for kl in range(0, tl.cdiv(n_lengths_out, all_programs * BLOCK)):
            at_out = kl * all_programs * BLOCK + lanes
            in_out = at_out < n_lengths_out
            q = at_out // stride
            src_key = tl.load(length_src_ptr + q, mask=in_out, other=-1)
            at_in = src_key * stride + (at_out - q * stride)
            taken = tl.load(lengths_ptr + at_in, mask=in_out & (src_key >= 0), other=0)
            tl.store(lengths_out_ptr + at_out, taken, mask=in_out)
    if HAS_RESET:  # the other stats buffer back to the (max, min) sentinels, for the next batch
        if seg == 0 and tl.program_id(1) == 0:
            r = tl.arange(0, SEGMENTS_BLOCK)
            big = tl.full((SEGMENTS_BLOCK,), 9223372036854775807, tl.int64)
            for kr in range(0, tl.cdiv(length_row + 1, SEGMENTS_BLOCK)):
                row_r = kr * SEGMENTS_BLOCK + r
                tl.store(reset_ptr + row_r * 2, big, mask=row_r <= length_row)
                tl.store(reset_ptr + row_r * 2 + 1, -big - 1, mask=row_r <= length_row)
    if FROM_OFFSETS:
        # dyn = (source key of each output segment, -1 if sent empty; then the output segment of each static row):
        # a segment's ids are its key's [offsets[key * stride], offsets[(key + 1) * stride]); its output starts after
        # those of the segments before it
        p = tl.load(dyn_ptr + num_segments + seg)
        key = tl.load(dyn_ptr + p)
        start = tl.where(key >= 0, tl.load(offsets_ptr + tl.maximum(key, 0) * stride).to(tl.int64), 0)
        end = tl.where(key >= 0, tl.load(offsets_ptr + (tl.maximum(key, 0) + 1) * stride).to(tl.int64), 0)
        n = end - start
        before = tl.zeros((SEGMENTS_BLOCK,), dtype=tl.int64)
        q = tl.arange(0, SEGMENTS_BLOCK)
        for kp in range(0, tl.cdiv(p, SEGMENTS_BLOCK)):
            seg_q = kp * SEGMENTS_BLOCK + q
            src = tl.load(dyn_ptr + seg_q, mask=seg_q < p, other=-1)
            src_end = tl.load(offsets_ptr + (src + 1) * stride, mask=src >= 0, other=0).to(tl.int64)
            src_start = tl.load(offsets_ptr + src * stride, mask=src >= 0, other=0).to(tl.int64)
            before += src_end - src_start
        out_start = tl.sum(before, axis=0)
    else:
        start = tl.load(dyn_ptr + seg * 3)
        out_start = tl.load(dyn_ptr + seg * 3 + 1)
        n = tl.load(dyn_ptr + seg * 3 + 2)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    # in bounds of both buffers whatever the lengths say (bad lengths are reported by the caller's deferred check)
    mask = (offs < n) & (start + offs < n_in) & (out_start + offs < n_out)
    row = static_ptr + seg * 10
    feature = tl.load(row)
    op = tl.load(row + 1)
    check = tl.load(row + 2)
    carry = tl.load(row + 3)
    n_emb = tl.load(row + 4)
    p0 = tl.load(row + 5)
    p1 = tl.load(row + 6)
    p2 = tl.load(row + 7)
    p3 = tl.load(row + 8)
    p4 = tl.load(row + 9)
    zero = tl.zeros((BLOCK,), dtype=tl.int64)  # scalar conditions as blocks (Triton's interpreter masks need them)
    x_in = tl.load(ids_ptr + start + offs, mask=mask, other=0).to(tl.int64)
    # the op reads the id clamped into [0, num_embeddings) (0: no clamp): every output in range (the statistics keep
    # x_in). ops.IdOp: 1 HASH, 2 SCRAMBLE, 3 DIV, 4 MOD; 0 IDENTITY and 5 CUSTOM keep x. The op is the same for the
    # whole program: one branch runs, and a division whose operands are below 2**31 runs in 32 bits (an emulated
    # 64-bit division costs several times more)
    y = x_in
    if n_emb > 0:
        y = tl.minimum(tl.maximum(x_in, 0), n_emb - 1)
    slot = zero
    slot_kind = 0
    if HAS_SLOTS:  # ops.SlotRequest: kind 0, constant-weight slots by position (kind 1 is set below)
        slot_kind = tl.load(slot_rows_ptr + seg * 2)
        slot_base = tl.load(slot_rows_ptr + seg * 2 + 1)
        slot = slot_base + (out_start + offs) % ONE_SLOTS
    if op == 1 or op == 2:
        s = (y * p0 + p1) % p2  # p0 * n_pad < 2**62
        if HAS_SLOTS:
            if slot_kind == 1:
                slot = s + slot_base
        if op == 1:
            if (p2 <= 2147483647) & (p4 <= 2147483647):  # s, the bucket size p3, the mix and p4 below 2**31
                bucket = (s.to(tl.int32) // p3.to(tl.int32)).to(tl.int64)
                y = bucket * p4 + (_mix(s, m1, m2, mc).to(tl.int32) % p4.to(tl.int32)).to(tl.int64)
            else:
                y = (s // p3) * p4 + _mix(s, m1, m2, mc) % p4
        else:
            y = s
    elif op == 3 or op == 4:
        if (n_emb > 0) & (n_emb <= 2147483648) & (p0 <= 2147483647):
            if op == 3:
                y = (y.to(tl.int32) // p0.to(tl.int32)).to(tl.int64)
            else:
                y = (y.to(tl.int32) % p0.to(tl.int32)).to(tl.int64)
        else:
            if op == 3:
                y = y // p0
            else:
                y = y % p0
    if op != 5:  # CUSTOM segments: the caller writes the ids
        tl.store(out_ptr + out_start + offs, y, mask=mask)
    if HAS_SLOTS:
        tl.store(slots_ptr + out_start + offs, slot, mask=mask)
    if HAS_W_OUT:
        if HAS_W_IN:
            w = tl.load(w_in_ptr + start + offs, mask=mask & ((zero + carry) != 0), other=1.0)
        else:
            w = tl.full((BLOCK,), 1.0, dtype=tl.float32)
        tl.store(w_out_ptr + out_start + offs, w, mask=mask)
    if check != 0:
        if tl.program_id(1).to(tl.int64) * BLOCK < n:
            lo = tl.min(tl.where(mask, x_in, 9223372036854775807), axis=0)
            hi = tl.max(tl.where(mask, x_in, -9223372036854775807 - 1), axis=0)
            tl.atomic_min(stats_ptr + feature * 2, lo)
            tl.atomic_max(stats_ptr + feature * 2 + 1, hi)


def transform_segments_triton(
    ids: torch.Tensor,
    weights: "torch.Tensor | None",
    static: torch.Tensor,
    dynamic: torch.Tensor,
    out: torch.Tensor,
    w_out: "torch.Tensor | None",
    stats: torch.Tensor,
    max_len: int,
    lengths: "torch.Tensor | None" = None,
    placement: Any = None,
    reset: "torch.Tensor | None" = None,
    length_sources: "torch.Tensor | None" = None,
    lengths_out: "torch.Tensor | None" = None,
    slots: Any = None,
) -> None:
    """``ops.transform_segments``' kernel: ``dynamic`` holds the ``(P, 3)`` rows of the segments, or with
    ``placement`` (an ``ops.SegmentPlacement``) is ignored: the segments are read from its offsets; with
    ``lengths_out`` (and ``lengths``, ``length_sources``) it also writes the output KJT's lengths; with ``slots`` (an
    ``ops.SlotRequest``) the entity-weight slots."""
    m1, m2, mc = _MIX
    grid = (static.shape[0], max(1, triton.cdiv(max_len, _BLOCK)))
    from_offsets = placement is not None
    has_lengths_out = lengths_out is not None and lengths_out.numel() > 0
    assert not has_lengths_out or (lengths is not None and length_sources is not None)
    stride = placement.stride if from_offsets else 0  # the input KJT's: the output's lengths take its rows
    if has_lengths_out:
        stride = lengths_out.numel() // length_sources.numel()
        assert not from_offsets or stride == placement.stride
    _segments_kernel[grid](
        ids,
        weights if weights is not None else ids,
        static,
        placement.place if from_offsets else dynamic,
        out,
        w_out if w_out is not None else out,
        stats,
        lengths if lengths is not None else ids,
        placement.offsets if from_offsets else ids,
        reset if reset is not None else stats,
        length_sources if has_lengths_out else ids,
        lengths_out if has_lengths_out else ids,
        slots.rows if slots is not None else ids,
        slots.out if slots is not None else ids,
        ids.numel(),
        out.numel(),
        lengths.numel() if lengths is not None else 0,
        lengths_out.numel() if has_lengths_out else 0,
        stats.shape[0] - 1,
        stride,
        placement.num_segments if from_offsets else 0,
        m1,
        m2,
        mc,
        HAS_W_IN=weights is not None,
        HAS_W_OUT=w_out is not None,
        HAS_LENGTHS=lengths is not None and lengths.numel() > 0,
        HAS_LENGTHS_OUT=has_lengths_out,
        FROM_OFFSETS=from_offsets,
        HAS_RESET=reset is not None,
        HAS_SLOTS=slots is not None,
        ONE_SLOTS=ONE_SLOTS,
        SEGMENTS_BLOCK=128,
        BLOCK=_BLOCK,
    )


# ops.columns: out[r, k] = a[r, src[k]] * b[r, other[k]] / divisors[r, mean[k]] ** power[k] (missing factors 1).
@unspecialized_jit
def _gather_mul_kernel(
    a_ptr,
    b_ptr,
    d_ptr,
    out_ptr,
    src_ptr,
    other_ptr,
    mean_ptr,
    power_ptr,
    n_rows: tl.int64,
    n_cols: tl.int64,
    a_stride: tl.int64,
    b_stride: tl.int64,
    d_stride0: tl.int64,
    d_stride1: tl.int64,
    HAS_MEAN: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    rmask = r < n_rows
    kmask = k < n_cols
    mask = rmask[:, None] & kmask[None, :]
    src = tl.load(src_ptr + k, mask=kmask, other=-1).to(tl.int64)
    other = tl.load(other_ptr + k, mask=kmask, other=-1).to(tl.int64)
    x = tl.load(a_ptr + r[:, None] * a_stride + src[None, :], mask=mask & (src >= 0)[None, :], other=0.0)
    y = tl.load(b_ptr + r[:, None] * b_stride + other[None, :], mask=mask & (other >= 0)[None, :], other=1.0)
    x = x * y
    if HAS_MEAN:
        mean = tl.load(mean_ptr + k, mask=kmask, other=-1).to(tl.int64)
        power = tl.load(power_ptr + k, mask=kmask, other=0)
        d = tl.load(
            d_ptr + r[:, None] * d_stride0 + mean[None, :] * d_stride1, mask=mask & (mean >= 0)[None, :], other=1.0
        ).to(x.dtype)
        d = tl.where((power == 2)[None, :], d * d, d)
        x = tl.where((mean >= 0)[None, :], x / d, x)
    tl.store(out_ptr + r[:, None] * n_cols + k[None, :], x, mask=mask)


def gather_mul_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    divisors: torch.Tensor,
    src: torch.Tensor,
    other: torch.Tensor,
    mean: torch.Tensor,
    power: torch.Tensor,
    out: torch.Tensor,
    has_mean: bool,
) -> None:
    """``ops.columns._gather_mul`` into the contiguous ``out``; ``a`` and ``b`` have unit column stride."""
    rows, cols = out.shape
    grid = (triton.cdiv(rows, _COLUMN_ROWS), triton.cdiv(cols, _COLUMN_BLOCK))
    _gather_mul_kernel[grid](
        a,
        b,
        divisors if has_mean else a,
        out,
        src,
        other,
        mean,
        power,
        rows,
        cols,
        a.stride(0),
        b.stride(0),
        divisors.stride(0) if has_mean else 0,
        divisors.stride(1) if has_mean else 0,
        HAS_MEAN=has_mean,
        ROWS=_COLUMN_ROWS,
        BLOCK=_COLUMN_BLOCK,
    )
