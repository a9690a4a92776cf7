# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Id transforms on the hot path: one fused GPU kernel (Triton) per stage, the plain-PyTorch definitions as the
reference and the CPU path.

- ``transform_segments``: every table's id transform of a batch in one launch. The input is a KJT's values grouped
  by logical feature; the output is the values of the *physical* features, each a ``Segment``: an ``IdOp`` applied to
  the ids of one logical feature (identity for stock tables, the bucketed hash, the scramble, QR's quotient and
  remainder, ...). It also range-checks the ids (per feature min / max, read later without stalling the GPU) and
  carries or fills the per-id weights.
- ``memcom_local_rows``: on a rank of sharded MEmCom, local shared rows and entity-weight slots of received ids.
- ``hash_ids`` / ``lma_locations``: single-table helpers (hash of one table; LMA chunk locations of every chunk of a
  table's ids, a one-job ``lma_locations_grouped``).
- ``lma_locations_grouped``: LMA chunk locations of many features (of any tables) in one launch, each column written
  where its physical feature sits in a KJT's values.

Every op gives bit-identical results on either path (int64 arithmetic below 2**62); set
``TORCHREC_MEMCOM_DISABLE_TRITON=1`` to force the PyTorch path on CUDA.
"""

import enum
import functools
import os
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import torch

from torchrec_memcom.hashing import BucketedHash, bucketed_rows, mix, mix_params, scramble
from torchrec_memcom.lsh import FALLBACK_SALT, chunk_locations

__all__ = [
    "IdOp",
    "LMAJob",
    "NUM_OP_PARAMS",
    "ONE_SLOTS",
    "STATS_INIT",
    "SegmentPlacement",
    "SlotRequest",
    "hash_ids",
    "ints_to_device",
    "lma_chunk_params",
    "lma_locations",
    "lma_locations_grouped",
    "LocalRows",
    "memcom_local_rows",
    "transform_segments",
    "triton_enabled",
]

NUM_OP_PARAMS = 5
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
# a statistics row of transform_segments (id min, id max) before its ids lower / raise it
STATS_INIT = (_INT64_MAX, _INT64_MIN)


class IdOp(enum.IntEnum):
    """What a segment does to its source ids ``x`` (``p0 .. p4`` = the segment's op parameters).

    - ``IDENTITY``: ``x``.
    - ``HASH``: ``bucketed_rows(scramble(x; a=p0, c=p1, n_pad=p2); ids_per_bucket=p3, rows_per_bucket=p4)``.
    - ``SCRAMBLE``: ``scramble(x; a=p0, c=p1, n_pad=p2)`` (MEmCom: the rows are computed after the input dist).
    - ``DIV``: ``x // p0``; ``MOD``: ``x % p0`` (QR).
    - ``CUSTOM``: written by the caller (e.g. LMA's chunk locations); the fused kernel only checks and weights it.
    """

    IDENTITY = 0
    HASH = 1
    SCRAMBLE = 2
    DIV = 3
    MOD = 4
    CUSTOM = 5


@functools.cache
def _triton_importable() -> bool:
    if os.environ.get("TORCHREC_MEMCOM_DISABLE_TRITON", "0") == "1":
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means: use the PyTorch path
        return False
    return True


@functools.cache
def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_enabled(t: torch.Tensor) -> bool:
    """Whether ``t``'s transforms run as Triton kernels (CUDA tensor, Triton importable, not disabled; CPU tensors
    too under Triton's interpreter, ``TRITON_INTERPRET=1``, which the tests use to check the kernels without a GPU)."""
    return (t.is_cuda or _interpreted()) and _triton_importable() and not torch.jit.is_scripting()


def ints_to_device(values: Sequence[Any], device: torch.device) -> torch.Tensor:
    """Per-batch host integers (a kernel's offsets and lengths; ints, or rows of ints) as an int64 tensor on
    ``device``, copied asynchronously from pinned memory (no host wait)."""
    return torch.tensor(values, dtype=torch.int64, pin_memory=device.type == "cuda").to(device, non_blocking=True)


def apply_id_op(op: int, x: torch.Tensor, params: Sequence[int]) -> torch.Tensor:
    """The reference definition of one ``IdOp`` on int64 ids ``x`` (``CUSTOM`` returns ``x``)."""
    if op == IdOp.HASH:
        return bucketed_rows(scramble(x, params[0], params[1], params[2]), params[3], params[4])
    if op == IdOp.SCRAMBLE:
        return scramble(x, params[0], params[1], params[2])
    if op == IdOp.DIV:
        return torch.div(x, params[0], rounding_mode="floor")
    if op == IdOp.MOD:
        return x % params[0]
    return x


class SegmentPlacement(NamedTuple):
    """Where ``transform_segments``' segments lie, read on the device from the input KJT (no per-batch host copy).

    ``offsets``: the input KJT's ``(K * stride + 1,)`` offsets; ``place``: int64 on the same device, ``(P + R,)``:
    for each of the ``P = num_segments`` output segments in output order the index of its key in the KJT (``-1``: the
    segment is sent empty), then for each of the ``R`` static rows the output segment it writes. A segment's ids are
    its key's values; its output follows those of the segments before it.
    """

    offsets: torch.Tensor
    stride: int
    place: torch.Tensor
    num_segments: int

    def dynamic(self) -> List[Tuple[int, int, int]]:
        """The static rows' ``(input start, output start, length)`` (host reads: the reference path)."""
        place, offsets, b = self.place.tolist(), self.offsets.tolist(), self.stride
        keys, rows = place[: self.num_segments], place[self.num_segments :]
        lengths = [0 if k < 0 else offsets[(k + 1) * b] - offsets[k * b] for k in keys]
        out_starts = [sum(lengths[:p]) for p in range(len(keys))]
        return [(offsets[keys[p] * b] if keys[p] >= 0 else 0, out_starts[p], lengths[p]) for p in rows]


class SlotRequest(NamedTuple):
    """What ``transform_segments`` also writes, for a caller that wants MEmCom's entity-weight slots with the rows.

    ``rows``: ``(R, 2)`` int64 on the device, one ``(kind, base)`` per static row, and ``rows_host`` the same as
    Python ints; ``out``: ``(total,)`` int32 or int64, written at every output position of a row: kind 1 (a ``HASH``
    or ``SCRAMBLE`` row) ``s + base``, with ``s`` the scrambled id; kind 0 ``base + position % ONE_SLOTS`` (slots of
    the constant weight 1, by position).
    """

    rows: torch.Tensor
    rows_host: List[Tuple[int, int]]
    out: torch.Tensor


def transform_segments(
    values: torch.Tensor,
    weights: Optional[torch.Tensor],
    static: torch.Tensor,
    static_host: List[List[int]],
    dynamic: Optional[List[Tuple[int, int, int]]],
    stats: torch.Tensor,
    total: int,
    out_weighted: bool,
    max_len: Optional[int] = None,
    lengths: Optional[torch.Tensor] = None,
    placement: Optional[SegmentPlacement] = None,
    reset: Optional[torch.Tensor] = None,
    length_sources: Optional[torch.Tensor] = None,
    lengths_out: Optional[torch.Tensor] = None,
    out_dtype: torch.dtype = torch.int64,
    slots: Optional[SlotRequest] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Applies every segment's ``IdOp`` in one pass; returns ``(physical values, physical weights)``.

    Args:
        values (torch.Tensor): ``(N,)`` int32/int64 ids (of any number of features, in any order).
        weights (Optional[torch.Tensor]): ``(N,)`` input weights, or ``None``.
        static (torch.Tensor): ``(P, 5 + NUM_OP_PARAMS)`` int64 on ``values``' device, one row per segment:
            ``(feature, op, check, carry_weight, num_embeddings, p0..p4)``; ``check`` = 1 on one segment per
            feature (range statistics of its ids go to ``stats[feature]``), ``carry_weight`` = 1 if the segment
            carries the input weight (else weight 1).
        static_host (List[List[int]]): the same rows as Python ints (the CPU path reads them without a sync).
        dynamic (Optional[List[Tuple[int, int, int]]]): per segment ``(input start, output start, length)`` (on CUDA
            they cross in one copy), or ``None`` with a ``placement``.
        stats (torch.Tensor): ``(F', 2)`` int64, rows of features initialised to ``(INT64_MAX, INT64_MIN)``; updated
            in place to each checked feature's ``(min, max)`` id.
        total (int): output length.
        out_weighted (bool): produce weights (input weights where carried, else 1).
        max_len (Optional[int]): the longest segment, if the caller knows it (default: from ``dynamic``); it sizes the
            launch grid. Required with a ``placement``.
        lengths (Optional[torch.Tensor]): the input KJT's lengths; their minimum goes into ``stats[-1, 0]`` (which
            starts at ``INT64_MAX``) in the same launch, for the caller's check of negative lengths.
        placement (Optional[SegmentPlacement]): instead of ``dynamic`` (then ignored), where the segments lie, read
            from the input KJT's offsets on the device; ``max_len`` is then required.
        reset (Optional[torch.Tensor]): a buffer shaped like ``stats`` set to the ``(INT64_MAX, INT64_MIN)`` sentinels
            in the same launch (the next batch's statistics: a caller alternating two buffers copies no template).
        length_sources (Optional[torch.Tensor]): with ``lengths_out``, ``(Q,)`` int64 on the device: for each of the
            output KJT's ``Q`` keys the input key whose lengths it takes (``-1``: zeros, a segment sent empty).
        lengths_out (Optional[torch.Tensor]): ``(Q * stride,)``, shaped and typed like the output KJT's lengths:
            written with key ``q``'s row ``lengths.view(-1, stride)[length_sources[q]]`` (needs ``lengths``), in the
            same launch (no gather of the lengths by torch ops).
        out_dtype (torch.dtype): the physical values' dtype, int64 or int32 (the caller's physical ids must fit it:
            ``IdTransform.index_dtype``).
        slots (Optional[SlotRequest]): also write each output position's entity-weight slot (see ``SlotRequest``),
            in the same launch.

    Each op reads its ids clamped into ``[0, num_embeddings)``, so every output lies in its physical table whatever
    the input (FBGEMM's bounds check of the lookup is then redundant); the statistics keep the ids as given, for the
    caller's range check to report. A row with ``num_embeddings = 0`` passes its ids unclamped (the receiving side's
    copies of ids that were transformed, and clamped, before the dist). ``CUSTOM`` segments are left unwritten: the
    caller writes them.
    """
    device = values.device
    if out_dtype not in (torch.int32, torch.int64):
        raise ValueError(f"transform_segments: out_dtype must be torch.int32 or torch.int64, got {out_dtype}")
    out = torch.empty(total, dtype=out_dtype, device=device)
    w_dtype = weights.dtype if weights is not None else torch.float32
    w_out = torch.empty(total, dtype=w_dtype, device=device) if out_weighted else None
    kernel = total > 0 and bool(static_host) and triton_enabled(values)
    if lengths_out is not None and (lengths is None or length_sources is None):
        raise ValueError("transform_segments: lengths_out needs lengths and length_sources")
    if not kernel:  # the kernel does these in its own launch
        if reset is not None:
            reset[:, 0], reset[:, 1] = STATS_INIT
        if lengths is not None and lengths.numel():
            stats[-1, 0] = torch.minimum(stats[-1, 0], lengths.min().to(stats.dtype))
        if lengths_out is not None and lengths_out.numel():
            assert lengths is not None and length_sources is not None
            by_key = lengths.view(-1, lengths_out.numel() // length_sources.numel())
            taken = by_key.index_select(0, length_sources.clamp(min=0))
            lengths_out.view_as(taken).copy_(torch.where(length_sources[:, None] >= 0, taken, 0))
    if total == 0 or not static_host:
        return out, w_out
    if kernel:
        from torchrec_memcom.ops._triton import transform_segments_triton

        if placement is not None:
            if max_len is None:
                raise ValueError("transform_segments: max_len is required with a placement")
            dyn = placement.place
        else:
            assert dynamic is not None, "transform_segments: dynamic rows or a placement"
            dyn = ints_to_device(dynamic, device)
            max_len = max(d[2] for d in dynamic) if max_len is None else max_len
        transform_segments_triton(
            values.contiguous(),
            weights,
            static,
            dyn,
            out,
            w_out,
            stats,
            max_len,
            None if lengths is None else lengths.contiguous(),
            placement,
            reset,
            length_sources,
            lengths_out,
            slots,
        )
        return out, w_out
    if placement is not None:
        dynamic = placement.dynamic()
    assert dynamic is not None, "transform_segments: dynamic rows or a placement"
    x_all = values.to(torch.int64)
    for r, (row, (start, out_start, n)) in enumerate(zip(static_host, dynamic)):
        feature, op, check, carry = row[0], row[1], row[2], row[3]
        # as the kernel's masks: never read or write out of bounds (bad lengths are reported by the caller's check)
        n = max(0, min(n, values.numel() - start, total - out_start))
        x = x_all[start : start + n]
        y = x.clamp(0, row[4] - 1) if row[4] > 0 else x
        if op != IdOp.CUSTOM:  # the caller writes CUSTOM segments (as on CUDA)
            out[out_start : out_start + n] = apply_id_op(op, y, row[5:])
        if slots is not None:
            kind, base = slots.rows_host[r]
            if kind == 1:
                slot = scramble(y, row[5], row[6], row[7]) + base
            else:
                slot = base + torch.arange(out_start, out_start + n, device=device) % ONE_SLOTS
            slots.out[out_start : out_start + n] = slot
        if w_out is not None:
            if carry and weights is not None:
                w_out[out_start : out_start + n] = weights[start : start + n]
            else:
                w_out[out_start : out_start + n] = 1.0
        if check and n > 0:
            lo, hi = torch.aminmax(x)
            stats[feature, 0] = lo
            stats[feature, 1] = hi
    return out, w_out


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
    max_id: Optional[int] = None,
) -> torch.Tensor:
    """``lsh.chunk_locations`` (``(N, C)`` int64 memory rows): one Triton launch on CUDA (``lma_locations_grouped``),
    the reference on CPU.

    ``out``, if given, is a ``(N, C)``-shaped (possibly transposed, i.e. ``(C, N).t()``) int64 tensor to write into.
    ``max_id``, if given, clamps the ids to ``[0, max_id]`` first (inside the kernel on CUDA): ids not yet
    range-checked then never read outside the signatures, and their locations stay inside the memory.
    """
    if triton_enabled(ids) and ids.numel() > 0:
        if out is None:
            out = torch.empty(ids.numel(), num_chunks, dtype=torch.int64, device=ids.device)
        params = (num_chunks, bits, memory_rows, row_offset, num_rows, table_salt)
        dst = tuple(k * out.stride(1) for k in range(num_chunks))
        lma_locations_grouped(ids, [LMAJob(0, ids.numel(), dst, signatures, params, max_id, out.stride(0))], out)
        return out
    if max_id is not None:
        ids = ids.clamp(0, max_id)
    loc = chunk_locations(ids, signatures, num_chunks, bits, memory_rows, row_offset, num_rows, table_salt)
    if out is not None:
        out.copy_(loc)
        return out
    return loc


class LMAJob(NamedTuple):
    """One feature's part of ``lma_locations_grouped``: the ids ``ids[start : start + n]``; chunk ``k``'s location of
    id ``i`` goes to element ``dst[k] + i * step`` of ``out`` (from ``out``'s first element; ``dst[k] < 0``: not
    written). ``params`` = ``LMAMethod.location_params`` of the feature's table, ``max_id`` as in ``lma_locations``."""

    start: int
    n: int
    dst: Tuple[int, ...]
    signatures: torch.Tensor
    params: Tuple[int, int, int, int, int, int]
    max_id: Optional[int] = None
    step: int = 1


def lma_locations_grouped(ids: torch.Tensor, jobs: Sequence[LMAJob], out: torch.Tensor) -> None:
    """Every job's chunk locations (``lsh.chunk_locations``) written into the int64 ``out`` (a KJT's flat values, or
    any strided tensor: see ``LMAJob``): one Triton launch on CUDA for all jobs, whatever their tables; the reference,
    job by job, on CPU."""
    jobs = [j for j in jobs if j.n > 0]
    if not jobs:
        return
    if triton_enabled(ids):
        from torchrec_memcom.ops._triton import lma_locations_grouped_triton

        lma_locations_grouped_triton(ids.contiguous(), jobs, out)
        return
    for j in jobs:
        x = ids[j.start : j.start + j.n].to(torch.int64)
        loc = chunk_locations(x if j.max_id is None else x.clamp(0, j.max_id), j.signatures, *j.params)
        for k, d in enumerate(j.dst):
            if d >= 0:
                out.as_strided((j.n,), (j.step,), out.storage_offset() + d).copy_(loc[:, k])


@functools.lru_cache(maxsize=1024)
def lma_chunk_params(num_chunks: int, row_offset: int, num_rows: int, device: torch.device) -> torch.Tensor:
    """``(C, 8)`` int64 per-chunk constants of ``lsh.chunk_locations`` for the fused kernel: ``mix_params`` of the
    two hash rounds' salts ``mix(k + S)`` and ``mix(k + 2 S)``, the slice size ``P_k`` and first row ``base_k``."""
    k = torch.arange(num_chunks, dtype=torch.int64)
    first = mix_params(mix(k + FALLBACK_SALT))
    second = mix_params(mix(k + 2 * FALLBACK_SALT))
    size = num_rows // num_chunks + (k < num_rows % num_chunks).to(torch.int64)
    base = row_offset + k * (num_rows // num_chunks) + torch.clamp(k, max=num_rows % num_chunks)
    return torch.stack([*first, *second, size, base], dim=1).to(device)


MEMCOM_PARAMS = ("block", "row_offset", "w_offset", "ids_per_bucket", "rows_per_bucket")
# Pass-through positions read a constant weight from ONE_SLOTS slots (by position), not one: the gradients that flow
# back to them would otherwise all add into one address.
ONE_SLOTS = 1024


class LocalRows(NamedTuple):
    """``memcom_local_rows``' result: shared-table rows, entity-weight slots, and ``weight[w_index]`` if asked."""

    rows: torch.Tensor
    w_index: torch.Tensor
    weights: Optional[torch.Tensor] = None


def memcom_local_rows(
    local_ids: torch.Tensor,
    lengths: torch.Tensor,
    params: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    offsets: Optional[torch.Tensor] = None,
) -> LocalRows:
    """``(rows, w_index, weights)`` of the ids a rank received for ``F`` features, values grouped by feature.

    For a value ``j`` of feature ``f`` with ``params[f] = (block, row_offset, w_offset, ids_per_bucket,
    rows_per_bucket)`` (``MEMCOM_PARAMS``): ``s = j + block``, ``rows = bucketed_rows(s) - row_offset`` and
    ``w_index = j + w_offset`` (int32 from the Triton kernel when ``weight`` has fewer than 2**31 slots, else
    int64); ``rows`` has ``local_ids``' dtype (int32 or int64). A feature with ``ids_per_bucket = 0`` passes
    through: ``rows = j`` and ``w_index = w_offset + position % ONE_SLOTS`` (slots of a constant weight). With
    ``weight`` (the rank's flat entity-weight vector), also ``weights = weight[w_index]``, gathered in the same pass
    on CUDA. ``lengths`` is the KJT's ``(F * stride,)`` lengths; ``offsets``, if given, its ``(F * stride + 1,)``
    offsets (``kjt.offsets()``, which TorchRec's lookup reads too): the features' ends are read there instead of
    being summed from ``lengths``. No host synchronisation.
    """
    num_features = params.shape[0]
    ids = local_ids
    if num_features == 0 or ids.numel() == 0:
        return LocalRows(ids, ids.clone(), None if weight is None else weight.new_empty(ids.shape))
    stride = lengths.numel() // num_features
    if offsets is not None:  # feature f ends at offsets[(f + 1) * stride]
        ends, first, step = offsets, stride, stride
    else:
        ends, first, step = lengths.view(num_features, -1).sum(1).cumsum(0), 0, 1
    if triton_enabled(ids):
        from torchrec_memcom.ops._triton import memcom_rows_triton

        rows = torch.empty_like(ids)  # the received ids' dtype (the lookup's index dtype): no conversion launch
        # int32 slots when they fit: half the bytes for the weight update to read (the sorted way sorts 32-bit keys)
        narrow = weight is not None and weight.numel() < 2**31
        w_index = torch.empty_like(ids, dtype=torch.int32 if narrow else torch.int64)
        w_out = None if weight is None else weight.new_empty(ids.shape)
        args = (weight.contiguous(), w_out) if weight is not None else ()
        memcom_rows_triton(ids.contiguous(), ends.contiguous(), first, step, params.contiguous(), rows, w_index, *args)
        return LocalRows(rows, w_index, w_out)
    ids = local_ids.to(torch.int64)
    ends = ends[first::step][:num_features]
    feature = torch.bucketize(torch.arange(ids.numel(), device=ids.device), ends, right=True)
    p = params[feature]
    memcom = p[:, 3] > 0
    ipb = torch.where(memcom, p[:, 3], 1)
    rpb = torch.where(memcom, p[:, 4], 1)
    rows = torch.where(memcom, bucketed_rows(ids + p[:, 0], ipb, rpb) - p[:, 1], ids).to(local_ids.dtype)
    spread = torch.arange(ids.numel(), device=ids.device) % ONE_SLOTS
    w_index = torch.where(memcom, ids + p[:, 2], p[:, 2] + spread)
    return LocalRows(rows, w_index, None if weight is None else weight.index_select(0, w_index))
