# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The fused id transforms equal their PyTorch definitions bit for bit (Triton on CUDA, the reference on CPU).

LMA locations: one Triton launch per table (``lma_locations``) or for many features of any tables
(``lma_locations_grouped``) on CUDA, bit-identical to ``lsh.chunk_locations``."""

import pytest
import torch

from tests.interpreted import run_interpreted
from torchrec_memcom.hashing import BucketedHash
from torchrec_memcom.lsh import chunk_locations, code_bits, pack_codes
from torchrec_memcom.ops import LMAJob, hash_ids, lma_locations, lma_locations_grouped

try:  # a probe of the kernels' helper, run by check_kernels_on_cpu under Triton's interpreter
    import triton
    import triton.language as tl

    from torchrec_memcom.ops._triton import _mix, _mod_p

    @triton.jit
    def _mod_p_kernel(v_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, _mod_p(tl.load(v_ptr + offs, mask=offs < n, other=0)), mask=offs < n)

    @triton.jit
    def _mix_kernel(x_ptr, p_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0)
        a1 = tl.load(p_ptr + 3 * offs, mask=mask, other=1)
        a2 = tl.load(p_ptr + 3 * offs + 1, mask=mask, other=1)
        c = tl.load(p_ptr + 3 * offs + 2, mask=mask, other=0)
        tl.store(out_ptr + offs, _mix(x, a1, a2, c), mask=mask)

except ImportError:  # no triton: the interpreted test is skipped
    _mod_p_kernel = _mix_kernel = None


HASHES = [
    BucketedHash(num_embeddings=1_000, num_rows=64, num_buckets=8),
    BucketedHash(num_embeddings=4_000_000, num_rows=250_880, num_buckets=1024),
    BucketedHash(num_embeddings=2**40 - 5, num_rows=2**20, num_buckets=1024),
]


def _ids(n: int, count: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(n % 1000)
    return torch.randint(0, n, (count,), generator=g).to(device)


def _signatures(n: int, num_chunks: int, nbytes: int, missing_share: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(nbytes)
    bits = code_bits(nbytes, num_chunks)
    codes = torch.randint(0, (1 << bits) - 1, (n, num_chunks), generator=g)
    codes[torch.rand(n, generator=g) < missing_share] = (1 << bits) - 1  # no signature
    return pack_codes(codes, bits, nbytes)


def _check_hash(device: str) -> None:
    for h in HASHES:
        ids = _ids(h.num_embeddings, 50_000, device)
        s, r = hash_ids(ids, h)
        s_ref = h.scramble(ids.cpu())
        torch.testing.assert_close(s.cpu(), s_ref, rtol=0, atol=0)
        torch.testing.assert_close(r.cpu(), h.rows_of_scrambled(s_ref), rtol=0, atol=0)


def _check_lma(device: str) -> None:
    n = 5_000
    for num_chunks, nbytes in ((1, 1), (4, 4), (8, 3), (32, 8), (3, 4), (4, 0)):
        sig = _signatures(n, num_chunks, nbytes) if nbytes else torch.zeros(n, 0, dtype=torch.uint8)
        bits = code_bits(nbytes, num_chunks)
        ids = _ids(n, 20_000, "cpu")
        want = chunk_locations(ids, sig, num_chunks, bits, 20_000, row_offset=77, num_rows=12_345, table_salt=3)
        got = lma_locations(ids.to(device), sig.to(device), num_chunks, bits, 20_000, 77, 12_345, 3)
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
        # writing through a transposed view, as LMAIds does
        out = torch.empty(num_chunks, ids.numel(), dtype=torch.int64, device=device)
        lma_locations(ids.to(device), sig.to(device), num_chunks, bits, 20_000, 77, 12_345, 3, out=out.t())
        torch.testing.assert_close(out.t().cpu(), want, rtol=0, atol=0)
    # a large shared memory (> 2**32 rows, the table's slice far in): int64 addresses and offsets
    sig = _signatures(n, 8, 4)
    ids = _ids(n, 20_000, "cpu")
    want = chunk_locations(ids, sig, 8, 4, 2**33 + 7, row_offset=10**9, num_rows=10**8 + 3, table_salt=1023)
    got = lma_locations(ids.to(device), sig.to(device), 8, 4, 2**33 + 7, 10**9, 10**8 + 3, 1023)
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)


def _check_lma_grouped(device: str = "cpu") -> None:
    """Features of several tables (chunks 1 to 32, signature bits 0 to 8, ids int32 or int64, with and without the
    clamp) in one call: every column where its ``dst`` says, nothing else written, equal to ``chunk_locations``."""
    g = torch.Generator().manual_seed(7)
    tables = [  # (rows, num_chunks, signature bytes, memory rows, row offset, table rows, salt)
        (3_000, 8, 4, 40_000, 0, 20_000, 1),
        (700, 4, 0, 40_000, 20_000, 20_000, 2),
        (5_000, 3, 4, 2**33 + 7, 10**9, 10**8 + 3, 1023),
        (900, 1, 1, 500, 0, 500, 5),
        (1_200, 32, 8, 9_000, 100, 8_000, 9),
    ]
    counts = [1_500, 0, 2_000, 37, 600]
    ids = torch.cat([torch.randint(0, rows, (c,), generator=g) for (rows, *_), c in zip(tables, counts)])
    starts = torch.tensor([0] + counts).cumsum(0).tolist()
    total = sum(c * t[1] for c, t in zip(counts, tables)) + 50
    out = torch.full((total,), -7, dtype=torch.int64)
    want = out.clone()
    jobs, sigs, at = [], [], total - 1  # columns written back to front, every other table's chunk 0 skipped
    for j, ((rows, num_chunks, nbytes, memory_rows, offset, num_rows, salt), c) in enumerate(zip(tables, counts)):
        sig = _signatures(rows, num_chunks, nbytes) if nbytes else torch.zeros(rows, 0, dtype=torch.uint8)
        bits = code_bits(nbytes, num_chunks) if nbytes else 0
        x = ids[starts[j] : starts[j] + c]
        loc = chunk_locations(x, sig, num_chunks, bits, memory_rows, offset, num_rows, salt)
        dst = []
        for k in range(num_chunks):
            if k == 0 and j % 2:
                dst.append(-1)
                continue
            at -= c
            dst.append(at)
            want[at : at + c] = loc[:, k]
        sigs.append(sig.to(device))
        params = (num_chunks, bits, memory_rows, offset, num_rows, salt)
        jobs.append(LMAJob(starts[j], c, tuple(dst), sigs[-1], params, rows - 1 if j % 2 else None))
    for dtype in (torch.int64, torch.int32):
        got = out.clone().to(device)
        lma_locations_grouped(ids.to(dtype).to(device), jobs, got)
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
    # without the 2**33-row memory every value fits 32 bits: the kernel's 32-bit path
    narrow = [job for job in jobs if job.params[2] < 2**31]
    got = out.clone().to(device)
    lma_locations_grouped(ids.to(device), narrow, got)
    wide = jobs[2].dst
    keep = torch.ones(total, dtype=torch.bool)
    for at in wide:
        keep[at : at + counts[2]] = False
    torch.testing.assert_close(got.cpu()[keep], want[keep], rtol=0, atol=0)


def test_lma_grouped_cpu() -> None:
    _check_lma_grouped()


@pytest.mark.gpu
def test_lma_grouped_cuda() -> None:
    _check_lma_grouped("cuda")


def _check_lma_clamp(device: str = "cpu") -> None:
    """``max_id``: ids outside ``[0, n)`` (not yet range-checked) take the locations of the nearest valid id."""
    n = 1_000
    sig = _signatures(n, 4, 4)
    ids = torch.tensor([-(2**40), -1, 0, 5, n - 1, n, 10**12])
    want = chunk_locations(ids.clamp(0, n - 1), sig, 4, code_bits(4, 4), 5_000, 10, 900, 7)
    got = lma_locations(ids.to(device), sig.to(device), 4, code_bits(4, 4), 5_000, 10, 900, 7, max_id=n - 1).cpu()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert int(got.min()) >= 0 and int(got.max()) < 5_000


def test_lma_clamp_cpu() -> None:
    _check_lma_clamp()


@pytest.mark.gpu
def test_lma_clamp_cuda() -> None:
    _check_lma_clamp("cuda")


def test_hash_ids_cpu() -> None:
    _check_hash("cpu")


def test_lma_locations_cpu() -> None:
    _check_lma("cpu")


def check_kernels_on_cpu() -> None:
    """Every Triton kernel on CPU tensors (only under ``TRITON_INTERPRET=1``: ``ops`` then takes the kernels) against
    the independent references of the CPU tests, plus ``_mix``'s largest inputs (the Mersenne folds of ``_mod_p``)."""
    from torchrec_memcom.ops import triton_enabled

    assert triton_enabled(torch.zeros(1)), "run under TRITON_INTERPRET=1 with triton installed"
    _check_hash("cpu")
    _check_lma("cpu")
    _check_memcom_rows("cpu")
    _check_segments("cpu")
    _check_segments_placement("cpu")
    _check_segment_slots("cpu")
    _check_memcom_passthrough("cpu")
    _check_mod_p()
    _check_mix("cpu")
    _check_lma_clamp()
    _check_lma_grouped()
    # ids up to 2**51: the mixed key (id << 10 | salt) reaches 2**61 and its high part (key >> 30) the prime itself
    p = 2**31 - 1
    ids = torch.tensor([0, 1, p << 20, (p << 20) + 12_345, 2**51 - 1, 2**50 + 3, (1 << 41) - 1], dtype=torch.int64)
    empty = torch.zeros(0, 0, dtype=torch.uint8)
    want = chunk_locations(ids, empty, 4, 0, 2**33 + 7, 0, 2**33 + 7, 1023)
    torch.testing.assert_close(lma_locations(ids, empty, 4, 0, 2**33 + 7, 0, 2**33 + 7, 1023), want, rtol=0, atol=0)


def _check_mod_p() -> None:
    """``_mod_p`` (reduction mod 2**31 - 1) against ``%`` at its edges: multiples of P, P +- 1, 2**62 - 1."""
    p = 2**31 - 1
    edges = [0, 1, p - 1, p, p + 1, 2 * p, 2 * p + 1, 2**31, 2**32 - 1, 2**32, p * p, p * (p + 2), 2**62 - 1]
    v = torch.tensor(edges + torch.randint(0, 2**62, (200,), generator=torch.Generator().manual_seed(0)).tolist())
    out = torch.empty_like(v)
    _mod_p_kernel[(1,)](v, out, v.numel(), BLOCK=256)
    torch.testing.assert_close(out, v % p, rtol=0, atol=0)


def _check_mix(device: str) -> None:
    """The kernels' ``_mix`` (32-bit products modulo P) against Python integers: keys up to 2**61 - 1, parameters at
    their edges (1 and P - 1, c = 0 and P - 1) and random."""
    p = 2**31 - 1
    g = torch.Generator().manual_seed(1)
    keys = [0, 1, 2**30 - 1, 2**30, p, 2**31, 2**32 - 1, p << 30, (p << 30) - 1, 2**61 - 1, 2**60 + 2**30 - 1]
    edges = [(1, 1, 0), (p - 1, p - 1, p - 1), (p - 1, 1, 0), (1, p - 1, p - 1)]
    pairs = [(x, q) for x in keys for q in edges]  # every edge key with every edge parameter set
    randoms = zip(torch.randint(0, 2**61, (200,), generator=g).tolist(), torch.randint(1, p, (200, 3), generator=g))
    pairs += [(x, tuple(q.tolist())) for x, q in randoms]
    x = torch.tensor([k for k, _ in pairs], dtype=torch.int64)
    flat = torch.tensor([q for _, q in pairs], dtype=torch.int64)
    want = [((k % 2**30) * a1 + ((k >> 30) % p) * a2 + c) % p for k, (a1, a2, c) in pairs]
    out = torch.empty(len(pairs), dtype=torch.int64, device=device)
    _mix_kernel[(1,)](x.to(device), flat.to(device), out, len(pairs), BLOCK=256)
    assert out.cpu().tolist() == want


@pytest.mark.gpu
def test_mix_cuda() -> None:
    _check_mix("cuda")


def test_kernels_interpreted_match_references() -> None:
    """The kernels' arithmetic, bit for bit, through Triton's CPU interpreter."""
    run_interpreted("tests.modules.test_ops", "check_kernels_on_cpu")


@pytest.mark.gpu
def test_hash_ids_triton_matches_reference() -> None:
    _check_hash("cuda")


@pytest.mark.gpu
def test_lma_locations_cuda_matches_cpu() -> None:
    _check_lma("cuda")  # the Triton kernel (int64 arithmetic below 2**62): bit-identical


def _check_memcom_rows(device: str) -> None:
    from torchrec_memcom.ops import memcom_local_rows

    hashes = [HASHES[0], HASHES[1], BucketedHash(num_embeddings=777, num_rows=128, num_buckets=16)]
    world, rank, stride = 4, 2, 5
    g = torch.Generator().manual_seed(0)
    params, ids, lengths, want_rows, want_w = [], [], [], [], []
    w_offset = 0
    for h in hashes:
        block = h.padded_num_embeddings // world
        ln = torch.randint(0, 4, (stride,), generator=g)
        local = torch.randint(0, block, (int(ln.sum()),), generator=g)
        params.append([block * rank, h.num_rows // world * rank, w_offset, h.ids_per_bucket, h.rows_per_bucket])
        ids.append(local)
        lengths.append(ln)
        # reference: the global scrambled id's bucketed row, minus this rank's first row
        want_rows.append(h.rows_of_scrambled(local + block * rank) - h.num_rows // world * rank)
        want_w.append(local + w_offset)
        w_offset += block
    rows, w_index, none = memcom_local_rows(
        torch.cat(ids).to(device), torch.cat(lengths).to(device), torch.tensor(params, device=device)
    )
    torch.testing.assert_close(rows.cpu(), torch.cat(want_rows), rtol=0, atol=0)
    torch.testing.assert_close(w_index.cpu(), torch.cat(want_w), rtol=0, atol=0)
    assert int(rows.min()) >= 0 and none is None
    # with the weight vector: the same rows and slots, and each value's weight read at its slot
    weight = torch.randn(w_offset, generator=g)
    got = memcom_local_rows(
        torch.cat(ids).to(device), torch.cat(lengths).to(device), torch.tensor(params, device=device), weight.to(device)
    )
    torch.testing.assert_close(got.rows.cpu(), rows.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(got.w_index.cpu().long(), torch.cat(want_w), rtol=0, atol=0)
    from torchrec_memcom.ops import triton_enabled

    assert got.w_index.dtype == (torch.int32 if triton_enabled(rows) else torch.int64)  # 32-bit keys for the sort
    assert got.weights is not None
    torch.testing.assert_close(got.weights.cpu(), weight[torch.cat(want_w)], rtol=0, atol=0)
    # the features' ends read from the KJT's offsets (as the sharded lookup passes them): the same result
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(lengths).cumsum(0)])
    host = memcom_local_rows(
        torch.cat(ids).to(device),
        torch.cat(lengths).to(device),
        torch.tensor(params, device=device),
        weight.to(device),
        offsets=offsets.to(device, torch.int32),
    )
    torch.testing.assert_close(host.rows.cpu(), torch.cat(want_rows), rtol=0, atol=0)
    torch.testing.assert_close(host.w_index.cpu().long(), torch.cat(want_w), rtol=0, atol=0)
    assert host.weights is not None
    torch.testing.assert_close(host.weights.cpu(), weight[torch.cat(want_w)], rtol=0, atol=0)
    # int32 ids and offsets (the sharded lookup's index dtype): int32 rows, the same values
    narrow = memcom_local_rows(
        torch.cat(ids).to(device, torch.int32),
        torch.cat(lengths).to(device, torch.int32),
        torch.tensor(params, device=device),
        weight.to(device),
        offsets=offsets.to(device, torch.int32),
    )
    assert narrow.rows.dtype == torch.int32
    torch.testing.assert_close(narrow.rows.cpu().long(), torch.cat(want_rows), rtol=0, atol=0)
    torch.testing.assert_close(narrow.w_index.cpu().long(), torch.cat(want_w), rtol=0, atol=0)
    assert narrow.weights is not None
    torch.testing.assert_close(narrow.weights.cpu(), weight[torch.cat(want_w)], rtol=0, atol=0)


def test_memcom_local_rows_cpu() -> None:
    _check_memcom_rows("cpu")


@pytest.mark.gpu
def test_memcom_local_rows_triton_matches_reference() -> None:
    _check_memcom_rows("cuda")


def _segment_case(device: str):
    """Three logical features and one segment of every op (two on feature 0), with weights and an empty feature."""
    from torchrec_memcom.ops import NUM_OP_PARAMS, IdOp

    h = HASHES[1]
    a, c = h.scramble_params
    hp = [a, c, h.padded_num_embeddings, h.ids_per_bucket, h.rows_per_bucket]
    n = [h.num_embeddings, 5_000, 300]
    g = torch.Generator().manual_seed(7)
    lengths = [40_000, 0, 3_000]
    values = torch.cat([torch.randint(0, n[f], (lengths[f],), generator=g) for f in range(3)])
    weights = torch.rand(values.shape, generator=g)
    # (feature, op, check, carry, params)
    segs = [
        (0, IdOp.HASH, 1, 1, hp),
        (0, IdOp.SCRAMBLE, 0, 0, hp),
        (1, IdOp.IDENTITY, 1, 1, []),
        (2, IdOp.DIV, 1, 1, [7]),
        (2, IdOp.MOD, 0, 0, [7]),
        (2, IdOp.CUSTOM, 0, 1, []),
    ]
    rows = [[f, int(op), chk, car, n[f], *(p + [0] * (NUM_OP_PARAMS - len(p)))] for f, op, chk, car, p in segs]
    starts = [0, lengths[0], lengths[0] + lengths[1]]
    dyn, out = [], 0
    for f, *_ in segs:
        dyn.append((starts[f], out, lengths[f]))
        out += lengths[f]
    static = torch.tensor(rows, dtype=torch.int64, device=device)
    return values.to(device), weights.to(device), static, rows, dyn, out, (h, starts, lengths)


def _check_segments(device: str) -> None:
    from torchrec_memcom.ops import IdOp, transform_segments

    values, weights, static, rows, dyn, total, (h, starts, lengths) = _segment_case(device)
    stats = torch.tensor([[2**63 - 1, -(2**63)]] * 3, device=device)
    out, w = transform_segments(values, weights, static, rows, dyn, stats, total, True)
    out, w, stats, v, x = out.cpu(), w.cpu(), stats.cpu(), values.cpu(), weights.cpu()
    f0 = v[: lengths[0]]
    f2 = v[starts[2] :]
    # independent reference: the hashing module and plain integer arithmetic, segment by segment
    want = torch.cat([h(f0), h.scramble(f0), torch.div(f2, 7, rounding_mode="floor"), f2 % 7])
    torch.testing.assert_close(out[: want.numel()], want, rtol=0, atol=0)  # the CUSTOM segment is the caller's
    ones = torch.ones(lengths[0])
    torch.testing.assert_close(
        w, torch.cat([x[: lengths[0]], ones, x[starts[2] :], torch.ones(lengths[2]), x[starts[2] :]])
    )
    assert stats[0].tolist() == [int(f0.min()), int(f0.max())]
    assert stats[1].tolist() == [2**63 - 1, -(2**63)]  # no ids: (max, min) sentinels
    assert stats[2].tolist() == [int(f2.min()), int(f2.max())]
    # without output weights: the same ids and statistics
    stats2 = torch.tensor([[2**63 - 1, -(2**63)]] * 3, device=device)
    out2, w2 = transform_segments(values, weights, static, rows, dyn, stats2, total, False)
    assert w2 is None and stats2.cpu().tolist() == stats.tolist()
    torch.testing.assert_close(out2.cpu()[: want.numel()], want, rtol=0, atol=0)
    # int32 output (the sharded lookup's index dtype): the same ids; the statistics keep the int64 input's
    stats5 = torch.tensor([[2**63 - 1, -(2**63)]] * 3, device=device)
    out5, _ = transform_segments(values, weights, static, rows, dyn, stats5, total, False, out_dtype=torch.int32)
    assert out5.dtype == torch.int32 and stats5.cpu().tolist() == stats.tolist()
    torch.testing.assert_close(out5.cpu()[: want.numel()].long(), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out_dtype"):
        transform_segments(values, weights, static, rows, dyn, stats5, total, False, out_dtype=torch.float32)
    # ... but a checked CUSTOM segment (LMA's first chunk) still reports its ids' range
    custom = [[2, int(IdOp.CUSTOM), 1, 0, 300, 0, 0, 0, 0, 0]]
    stats3 = torch.tensor([[2**63 - 1, -(2**63)]] * 3, device=device)
    length = len(f2)
    transform_segments(
        values, None, torch.tensor(custom, device=device), custom, [(starts[2], 0, length)], stats3, length, False
    )
    assert stats3.cpu()[2].tolist() == [int(f2.min()), int(f2.max())]
    # ids outside [0, n): every op reads them clamped (outputs in range), the statistics report them as given
    bad = values.cpu().clone()
    bad[[5, 17]] = torch.tensor([-3, h.num_embeddings + 10])
    bad[[starts[2] + 1, starts[2] + 2]] = torch.tensor([2**40, -(2**40)])
    stats4 = torch.tensor([[2**63 - 1, -(2**63)]] * 3, device=device)
    out4, _ = transform_segments(bad.to(device), weights, static, rows, dyn, stats4, total, True)
    c0, c2 = bad[: lengths[0]].clamp(0, h.num_embeddings - 1), bad[starts[2] :].clamp(0, 299)
    want4 = torch.cat([h(c0), h.scramble(c0), torch.div(c2, 7, rounding_mode="floor"), c2 % 7])
    torch.testing.assert_close(out4.cpu()[: want4.numel()], want4, rtol=0, atol=0)
    assert stats4.cpu()[0].tolist() == [-3, h.num_embeddings + 10]
    assert stats4.cpu()[2].tolist() == [-(2**40), 2**40]
    # num_embeddings = 0: the ids pass unclamped (copies of ids transformed before a dist)
    copy = [[0, int(IdOp.IDENTITY), 0, 1, 0, 0, 0, 0, 0, 0]]
    out5, _ = transform_segments(
        bad.to(device), None, torch.tensor(copy, device=device), copy, [(0, 0, bad.numel())], stats4, bad.numel(), False
    )
    torch.testing.assert_close(out5.cpu(), bad, rtol=0, atol=0)
    # the KJT's lengths: their minimum goes into the last stats row in the same pass; 5,000 lengths over one program
    # of a one-segment launch (1,024 lanes) take several rounds, the smallest far from the first
    for dtype in (torch.int64, torch.int32):
        lens = torch.arange(5_000, dtype=dtype) % 7 + 1
        lens[4_321] = -4
        stats6 = torch.tensor([[2**63 - 1, -(2**63)]] * 4, device=device)
        short = [(0, 0, 100)]
        transform_segments(values, None, static[:1], rows[:1], short, stats6, 100, False, None, lens.to(device))
        assert stats6.cpu()[3, 0].item() == -4 and stats6.cpu()[0].tolist() == [
            int(f0[:100].min()),
            int(f0[:100].max()),
        ]
        stats7 = torch.tensor([[2**63 - 1, -(2**63)]] * 4, device=device)  # nothing to transform: still checked
        transform_segments(values, None, static[:1], rows[:1], [(0, 0, 0)], stats7, 0, False, None, lens.to(device))
        assert stats7.cpu()[3, 0].item() == -4
        # no negative length, 5,000 not a multiple of the lanes: the lanes past the end must not count (their
        # INT64_MAX sentinel once wrapped to -1 in int32 lengths, and every batch of the recipes' data raised)
        good = lens.abs()
        stats8 = torch.tensor([[2**63 - 1, -(2**63)]] * 4, device=device)
        transform_segments(values, None, static[:1], rows[:1], short, stats8, 100, False, None, good.to(device))
        assert stats8.cpu()[3, 0].item() == 1, dtype


def _check_segments_placement(device: str) -> None:
    """The segments read from a KJT's offsets on the device (``SegmentPlacement``) against the host rows: a KJT of
    4 keys x stride 3 in another order than the segments, a segment sent empty, a subset of rows, the 64-bit paths
    (a hash over 2**40 ids, a divisor of ids beyond 2**31), and the statistics buffer reset in the same launch."""
    from torchrec_memcom.ops import NUM_OP_PARAMS, IdOp, SegmentPlacement, transform_segments

    g = torch.Generator().manual_seed(3)
    big = HASHES[2]
    a, c = big.scramble_params
    n = [1_000, 2**40, 50, 2**36]
    stride = 3
    lengths = torch.randint(0, 900, (4 * stride,), generator=g)
    lengths[stride : 2 * stride] = torch.tensor([0, 2_500, 7])  # a bag longer than a kernel block
    per_key = lengths.view(4, stride).sum(1).tolist()
    values = torch.cat([torch.randint(0, n[k], (per_key[k],), generator=g) for k in range(4)])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    starts = offsets[::stride].tolist()
    # output segments: (key, op, params); the third is sent empty; rows run for all but the second
    segs = [
        (3, IdOp.DIV, [7]),
        (1, IdOp.HASH, [a, c, big.padded_num_embeddings, big.ids_per_bucket, big.rows_per_bucket]),
        (2, IdOp.MOD, [9]),
        (1, IdOp.MOD, [2**33 + 1]),
        (0, IdOp.IDENTITY, []),
    ]
    keys = [k for k, _, _ in segs]
    keys[2] = -1
    live = [0, 2, 3, 4]
    rows = [[k, int(op), 1, 0, n[k], *(p + [0] * (NUM_OP_PARAMS - len(p)))] for k, op, p in segs]
    rows = [rows[p] for p in live]
    sizes = [0 if k < 0 else per_key[k] for k in keys]
    out_starts = [sum(sizes[:p]) for p in range(len(segs))]
    want_dyn = [(starts[keys[p]] if keys[p] >= 0 else 0, out_starts[p], sizes[p]) for p in live]
    place = SegmentPlacement(offsets.to(device), stride, torch.tensor(keys + live, device=device), len(segs))
    assert place.dynamic() == want_dyn
    total = sum(sizes)
    fresh = [[2**63 - 1, -(2**63)]] * 5
    stats, reset = torch.tensor(fresh, device=device), torch.zeros(5, 2, dtype=torch.int64, device=device)
    static = torch.tensor(rows, device=device)
    v = values.to(device)
    out, _ = transform_segments(v, None, static, rows, None, stats, total, False, max(sizes), None, place, reset)
    out, stats = out.cpu(), stats.cpu()
    # independent reference: plain integer arithmetic on each key's ids
    ids = [values[starts[k] : starts[k] + per_key[k]] for k in range(4)]
    want = {
        0: torch.div(ids[3], 7, rounding_mode="floor"),
        2: torch.zeros(0, dtype=torch.int64),
        3: ids[1] % (2**33 + 1),
        4: ids[0],
    }
    for p, w in want.items():
        torch.testing.assert_close(out[out_starts[p] : out_starts[p] + sizes[p]], w, rtol=0, atol=0)
    assert reset.cpu().tolist() == fresh
    # the output KJT's lengths in the same launch: each output segment takes its key's row, zeros if sent empty
    # (from the offsets and from host rows; int64 and int32 lengths; once with nothing to transform)
    length_sources = torch.tensor(keys, device=device)
    for dtype in (torch.int64, torch.int32):
        by_key = lengths.to(dtype).view(4, stride).tolist()
        want_lengths = [x for k in keys for x in (by_key[k] if k >= 0 else [0] * stride)]
        for how, dyn, n_out in ((place, None, total), (None, want_dyn, total), (None, [(0, 0, 0)] * len(rows), 0)):
            got_lengths = torch.full((len(keys) * stride,), -7, dtype=dtype, device=device)
            transform_segments(v, None, static, rows, dyn, torch.tensor(fresh, device=device), n_out, False,
                               max(sizes), lengths.to(dtype).to(device), how, None, length_sources,
                               got_lengths)  # fmt: skip
            assert got_lengths.cpu().tolist() == want_lengths, (dtype, how is None, n_out)
    assert stats[3].tolist() == [int(ids[3].min()), int(ids[3].max())]
    assert stats[0].tolist() == [int(ids[0].min()), int(ids[0].max())]
    # every row: the hash over 2**40 ids (its 64-bit path) as hashing computes it, and the same ids as the host rows
    every = [[k, int(op), 1, 0, n[k], *(p + [0] * (NUM_OP_PARAMS - len(p)))] for k, op, p in segs]
    place_all = SegmentPlacement(place.offsets, stride, torch.tensor(keys + list(range(5)), device=device), 5)
    s1 = torch.tensor(fresh, device=device)
    got, _ = transform_segments(v, None, torch.tensor(every, device=device), every, None, s1, total, False,
                                max(sizes), None, place_all)  # fmt: skip
    host, _ = transform_segments(v, None, torch.tensor(every, device=device), every, place_all.dynamic(),
                                 torch.tensor(fresh, device=device), total, False)  # fmt: skip
    torch.testing.assert_close(got.cpu(), host.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(got.cpu()[out_starts[1] : out_starts[2]], big(ids[1]), rtol=0, atol=0)


def test_transform_segments_placement_cpu() -> None:
    _check_segments_placement("cpu")


@pytest.mark.gpu
def test_transform_segments_placement_triton() -> None:
    _check_segments_placement("cuda")


def _check_segment_slots(device: str) -> None:
    """``SlotRequest``: MEmCom's entity-weight slots written with the ids, in the same launch: ``s + base`` of a
    HASH or SCRAMBLE row (``s`` the scrambled id, as ``BucketedHash.scramble`` computes it, of the clamped id), the
    constant slots ``base + position % ONE_SLOTS`` of every other row (a CUSTOM one too); int32 and int64 slots; host
    rows and a placement read from the KJT's offsets."""
    from torchrec_memcom.ops import ONE_SLOTS, SegmentPlacement, SlotRequest, transform_segments

    values, weights, static, rows, dyn, total, (h, starts, lengths) = _segment_case(device)
    fresh = [[2**63 - 1, -(2**63)]] * 3
    plain, _ = transform_segments(values, weights, static, rows, dyn, torch.tensor(fresh, device=device), total, False)
    kinds = [(1, 100), (1, 7), (0, 5_000), (0, 5_000), (0, 5_000), (0, 5_000)]
    bad = values.cpu().clone()
    bad[[3, 11]] = torch.tensor([-5, h.num_embeddings + 3])  # read clamped, as the ids
    s0 = h.scramble(bad[: lengths[0]].clamp(0, h.num_embeddings - 1))
    tail = 5_000 + torch.arange(2 * lengths[0], total) % ONE_SLOTS
    want = torch.cat([s0 + 100, s0 + 7, tail])
    for dtype in (torch.int32, torch.int64):
        got = torch.full((total,), -1, dtype=dtype, device=device)
        request = SlotRequest(torch.tensor(kinds, device=device), kinds, got)
        ids, _ = transform_segments(
            bad.to(device), weights, static, rows, dyn, torch.tensor(fresh, device=device), total, False, slots=request
        )
        torch.testing.assert_close(got.cpu().long(), want, rtol=0, atol=0)
        written = slice(2 * lengths[0], 2 * lengths[0] + 2 * lengths[2])  # the ids after the two hashed segments
        torch.testing.assert_close(ids.cpu()[written], plain.cpu()[written], rtol=0, atol=0)  # (CUSTOM: the caller's)
    # the segments read from the KJT's offsets (how IdTransform launches): one key per feature, stride 1
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=device)
    place = SegmentPlacement(offsets, 1, torch.tensor([0, 0, 1, 2, 2, 2, 0, 1, 2, 3, 4, 5], device=device), 6)
    got = torch.full((total,), -1, dtype=torch.int32, device=device)
    request = SlotRequest(torch.tensor(kinds, device=device), kinds, got)
    transform_segments(bad.to(device), None, static, rows, None, torch.tensor(fresh, device=device), total, False,
                       max(lengths), None, place, slots=request)  # fmt: skip
    torch.testing.assert_close(got.cpu().long(), want, rtol=0, atol=0)


def test_transform_segment_slots_cpu() -> None:
    _check_segment_slots("cpu")


@pytest.mark.gpu
def test_transform_segment_slots_triton() -> None:
    _check_segment_slots("cuda")


def test_transform_segments_cpu() -> None:
    _check_segments("cpu")


@pytest.mark.gpu
def test_transform_segments_triton_matches_reference() -> None:
    _check_segments("cuda")


def _check_memcom_passthrough(device: str) -> None:
    from torchrec_memcom.ops import memcom_local_rows

    h = HASHES[0]
    lengths = torch.tensor([2, 1, 0, 3])  # 2 features x stride 2: a MEmCom feature, then a pass-through one
    ids = torch.tensor([3, 9, 1, 7, 8, 4])
    params = torch.tensor([[0, 0, 10, h.ids_per_bucket, h.rows_per_bucket], [0, 0, 99, 0, 0]])
    weight = torch.arange(2_000, dtype=torch.float32) / 4
    rows, w_index, w = memcom_local_rows(ids.to(device), lengths.to(device), params.to(device), weight.to(device))
    torch.testing.assert_close(rows.cpu(), torch.cat([h.rows_of_scrambled(ids[:3]), ids[3:]]), rtol=0, atol=0)
    assert w_index.cpu().tolist() == [13, 19, 11, 99 + 3, 99 + 4, 99 + 5]  # constant slots spread by position
    assert w is not None and (w.cpu() * 4).tolist() == [13, 19, 11, 99 + 3, 99 + 4, 99 + 5]


def test_memcom_passthrough_cpu() -> None:
    _check_memcom_passthrough("cpu")


@pytest.mark.gpu
def test_memcom_passthrough_triton() -> None:
    _check_memcom_passthrough("cuda")


def test_ints_to_device_keeps_shape_and_int64() -> None:
    from torchrec_memcom.ops import ints_to_device

    rows = ints_to_device([[0, 5, 2**40], [3, -1, 7]], torch.device("cpu"))
    assert rows.dtype == torch.int64 and rows.tolist() == [[0, 5, 2**40], [3, -1, 7]]
    assert ints_to_device([1, 2, 3], torch.device("cpu")).shape == (3,)
