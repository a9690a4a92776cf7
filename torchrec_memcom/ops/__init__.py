# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Id transforms on the hot path, fused into one GPU kernel each (Triton) with the plain-PyTorch definitions as the
reference and the CPU path.

- ``hash_ids``: scramble + bucketed hash of ``hashing.BucketedHash`` (MEmCom, hashing trick).
- ``lma_locations``: LMA chunk locations of ``lsh.chunk_locations`` (the PyTorch reference on every device for now;
  its former Triton kernel implemented the retired MinHash-key allocation).
- ``memcom_local_rows``: on a rank of sharded MEmCom, local shared rows and entity-weight slots of received ids.

Where a kernel exists, both give bit-identical results on either path (int64 arithmetic below 2**62); set
``TORCHREC_MEMCOM_DISABLE_TRITON=1`` to force the PyTorch path on CUDA.
"""

import functools
import os
from typing import Optional, Tuple

import torch

from torchrec_memcom.hashing import BucketedHash, bucketed_rows
from torchrec_memcom.lsh import chunk_locations

__all__ = ["hash_ids", "lma_locations", "memcom_local_rows", "triton_enabled"]


@functools.cache
def _triton_importable() -> bool:
    if os.environ.get("TORCHREC_MEMCOM_DISABLE_TRITON", "0") == "1":
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means: use the PyTorch path
        return False
    return True


def triton_enabled(t: torch.Tensor) -> bool:
    """Whether ``t``'s transforms run as Triton kernels (CUDA tensor, Triton importable, not disabled)."""
    return t.is_cuda and _triton_importable() and not torch.jit.is_scripting()


def hash_ids(
    ids: torch.Tensor,
    h: BucketedHash,
    scrambled_out: Optional[torch.Tensor] = None,
    rows_out: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(s, h(s))`` of raw ids: the scrambled ids and their shared-table rows (int64), optionally into ``*_out``."""
    if triton_enabled(ids) and ids.numel() > 0:
        from torchrec_memcom.ops._triton import hash_ids_triton

        s = scrambled_out if scrambled_out is not None else torch.empty(ids.shape, dtype=torch.int64, device=ids.device)
        r = rows_out if rows_out is not None else torch.empty(ids.shape, dtype=torch.int64, device=ids.device)
        hash_ids_triton(ids.contiguous(), h, s, r)
        return s, r
    s = h.scramble(ids)
    r = h.rows_of_scrambled(s)
    if scrambled_out is not None:
        scrambled_out.copy_(s)
        s = scrambled_out
    if rows_out is not None:
        rows_out.copy_(r)
        r = rows_out
    return s, r


def lma_locations(
    ids: torch.Tensor,
    signatures: torch.Tensor,
    num_chunks: int,
    bits: int,
    memory_rows: int,
    row_offset: int,
    num_rows: int,
    table_salt: int,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``lsh.chunk_locations`` (``(N, C)`` int64 memory rows), the plain-PyTorch reference on every device.

    ``out``, if given, is a ``(N, C)``-shaped (possibly transposed, i.e. ``(C, N).t()``) int64 tensor to write into.
    """
    loc = chunk_locations(ids, signatures, num_chunks, bits, memory_rows, row_offset, num_rows, table_salt)
    if out is not None:
        out.copy_(loc)
        return out
    return loc


MEMCOM_PARAMS = ("block", "row_offset", "w_offset", "ids_per_bucket", "rows_per_bucket")


def memcom_local_rows(
    local_ids: torch.Tensor, lengths: torch.Tensor, params: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(rows, w_index)`` of the ids a rank received for ``F`` features, values grouped by feature.

    For a value ``j`` of feature ``f`` with ``params[f] = (block, row_offset, w_offset, ids_per_bucket,
    rows_per_bucket)`` (``MEMCOM_PARAMS``): ``s = j + block``, ``rows = bucketed_rows(s) - row_offset`` and
    ``w_index = j + w_offset``. ``lengths`` is the KJT's ``(F * stride,)`` lengths; no host synchronisation.
    """
    num_features = params.shape[0]
    ends = lengths.view(num_features, -1).sum(1).cumsum(0)
    ids = local_ids.to(torch.int64)
    if triton_enabled(ids) and ids.numel() > 0:
        from torchrec_memcom.ops._triton import memcom_rows_triton

        rows = torch.empty_like(ids)
        w_index = torch.empty_like(ids)
        memcom_rows_triton(ids.contiguous(), ends.contiguous(), params.contiguous(), rows, w_index)
        return rows, w_index
    feature = torch.bucketize(torch.arange(ids.numel(), device=ids.device), ends, right=True)
    p = params[feature]
    rows = bucketed_rows(ids + p[:, 0], p[:, 3], p[:, 4]) - p[:, 1]
    return rows, ids + p[:, 2]
