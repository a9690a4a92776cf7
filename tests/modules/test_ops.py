# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The fused id transforms equal their PyTorch definitions bit for bit (Triton on CUDA, the reference on CPU).

LMA locations run the PyTorch reference on every device for now; CUDA must still agree with the CPU bit for bit."""

import pytest
import torch

from torchrec_memcom.hashing import BucketedHash
from torchrec_memcom.lsh import chunk_locations, code_bits, pack_codes
from torchrec_memcom.ops import hash_ids, lma_locations

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


def test_hash_ids_cpu() -> None:
    _check_hash("cpu")


def test_lma_locations_cpu() -> None:
    _check_lma("cpu")


@pytest.mark.gpu
def test_hash_ids_triton_matches_reference() -> None:
    _check_hash("cuda")


@pytest.mark.gpu
def test_lma_locations_cuda_matches_cpu() -> None:
    _check_lma("cuda")  # the PyTorch reference on CUDA (no LMA kernel yet): int64 ops, bit-identical


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
    rows, w_index = memcom_local_rows(
        torch.cat(ids).to(device), torch.cat(lengths).to(device), torch.tensor(params, device=device)
    )
    torch.testing.assert_close(rows.cpu(), torch.cat(want_rows), rtol=0, atol=0)
    torch.testing.assert_close(w_index.cpu(), torch.cat(want_w), rtol=0, atol=0)
    assert int(rows.min()) >= 0


def test_memcom_local_rows_cpu() -> None:
    _check_memcom_rows("cpu")


@pytest.mark.gpu
def test_memcom_local_rows_triton_matches_reference() -> None:
    _check_memcom_rows("cuda")
