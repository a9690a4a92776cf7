# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Id maps of the serving form: raw ids of one logical table -> rows of its physical tables, ``(N,) -> (N, k)``.

Each map is the table's id transform with its fixed parameters baked in (plain ints and integer buffers, no
trainable state) and no host synchronisation, so ``torch.export`` traces it into the program. The math is the
project's own (``hashing``, ``lsh``); ``_adapter`` reads the parameters off a trained collection.

- ``HashedRows``: MEmCom and the hashing trick, ``h(s(i))`` of ``hashing.BucketedHash`` (``k = 1``).
- ``QuotientRemainderRows``: QR, ``(i // c, i % c)`` (``k = 2``).
- ``LMAChunkRows``: LMA, the ``d / Z`` chunk locations of ``lsh.chunk_locations`` (``k = d / Z``).
- ``PointwiseFeatures``: the hash and MEmCom's per-id weight ``w`` (fp32, fp16 or int8) of every one-row-per-id
  feature at once, over a KJT's whole values vector (per-feature parameters gathered per value).
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from torchrec_memcom.hashing import bucketed_rows, scramble
from torchrec_memcom.lsh import chunk_locations

__all__ = ["HashedRows", "LMAChunkRows", "PointwiseFeatures", "QuotientRemainderRows"]


class HashedRows(nn.Module):
    """``h(s(i))``: the scramble ``s(i) = (a * i + c) mod n_pad``, then the bucketed row of ``s`` (``hashing``).

    Args:
        scramble_params (Tuple[int, int]): ``(a, c)`` of the scramble.
        padded_num_embeddings (int): ``n_pad``.
        ids_per_bucket (int): ``n_pad / B``.
        rows_per_bucket (int): ``m / B``.
    """

    num_outputs: int = 1

    def __init__(
        self, scramble_params: Tuple[int, int], padded_num_embeddings: int, ids_per_bucket: int, rows_per_bucket: int
    ) -> None:
        super().__init__()
        self.scramble_params = tuple(int(p) for p in scramble_params)
        self.padded_num_embeddings = int(padded_num_embeddings)
        self.ids_per_bucket = int(ids_per_bucket)
        self.rows_per_bucket = int(rows_per_bucket)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` raw ids -> ``(N, 1)`` int64 shared-table rows."""
        a, c = self.scramble_params
        s = scramble(ids, a, c, self.padded_num_embeddings)
        return bucketed_rows(s, self.ids_per_bucket, self.rows_per_bucket).unsqueeze(1)


class QuotientRemainderRows(nn.Module):
    """``(i // c, i % c)``: the rows of QR's quotient and remainder tables.

    Args:
        num_remainder_rows (int): ``c``.
    """

    num_outputs: int = 2

    def __init__(self, num_remainder_rows: int) -> None:
        super().__init__()
        if num_remainder_rows < 1:
            raise ValueError(f"num_remainder_rows must be >= 1, got {num_remainder_rows}")
        self.num_remainder_rows = int(num_remainder_rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` raw ids -> ``(N, 2)`` int64 (quotient row, remainder row)."""
        ids = ids.to(torch.int64)
        c = self.num_remainder_rows
        return torch.stack([torch.div(ids, c, rounding_mode="floor"), ids % c], dim=1)


class LMAChunkRows(nn.Module):
    """LMA's chunk locations ``loc_k(i)``, ``k < d / Z``, from the table's signatures (``lsh.chunk_locations``).

    Args:
        signatures (torch.Tensor): ``(n, S)`` uint8 packed signatures of the table (kept as a buffer).
        location_params (Sequence[int]): ``(num_chunks, bits, memory_rows, row_offset, num_rows, table_salt)`` of
            ``lsh.chunk_locations`` (``LMAMethod.location_params``).
    """

    def __init__(self, signatures: torch.Tensor, location_params: Sequence[int]) -> None:
        super().__init__()
        if signatures.dtype != torch.uint8 or signatures.dim() != 2:
            raise ValueError(f"signatures must be a 2-D uint8 tensor, got {signatures.dtype} {tuple(signatures.shape)}")
        if len(location_params) != 6:
            raise ValueError(f"location_params must hold 6 integers, got {tuple(location_params)}")
        self.register_buffer("signatures", signatures.detach().clone())
        num_chunks, bits, memory_rows, row_offset, num_rows, table_salt = (int(p) for p in location_params)
        self.num_chunks, self.bits, self.memory_rows = num_chunks, bits, memory_rows
        self.row_offset, self.num_rows, self.table_salt = row_offset, num_rows, table_salt
        self.num_outputs = num_chunks

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` raw ids -> ``(N, d / Z)`` int64 memory rows."""
        return chunk_locations(
            ids,
            self.signatures,
            self.num_chunks,
            self.bits,
            self.memory_rows,
            self.row_offset,
            self.num_rows,
            self.table_salt,
        )


class PointwiseFeatures(nn.Module):
    """Rows and MEmCom weights of every one-row-per-id feature at once (stock, hash, MEmCom), over a KJT's whole
    values vector: per-feature parameters are gathered by each value's feature index in one lookup.

    Rows: ``HashedRows`` of hashed features, the ids themselves otherwise. Weights: MEmCom's ``w`` in raw-id order
    (``w_raw[i] = w[s(i)]``), 1 for other features. ``int8`` weights are uint8 codes ``q = round((w - lo) / scale)``
    with ``scale = (hi - lo) / 255`` per table, so each is off by at most ``scale / 2``.

    Args:
        hashes (Sequence[Optional[HashedRows]]): per feature (KJT order) its table's hash, ``None`` if unhashed.
        weights (Dict[str, torch.Tensor]): per MEmCom table, its ``(n,)`` fp32 weights in raw-id order.
        feature_tables (Sequence[str]): the table of each feature.
        dtype (str): precision of the weights: ``fp32``, ``fp16`` or ``int8``.
    """

    def __init__(
        self,
        hashes: Sequence[Optional[HashedRows]],
        weights: Dict[str, torch.Tensor],
        feature_tables: Sequence[str],
        dtype: str,
    ) -> None:
        super().__init__()
        if dtype not in ("fp32", "fp16", "int8"):
            raise ValueError(f"entity weight dtype must be fp32, fp16 or int8, got {dtype!r}")
        self.dtype_name = dtype
        self.any_hashed = any(h is not None for h in hashes)
        self.any_weights = bool(weights)
        # Weights of all tables back to back, then one sentinel entry that every other feature reads (weight 1).
        stored, start, scale, shift = [], {}, {}, {}
        offset = 0
        for name, w in weights.items():
            w = w.detach().to(torch.float32).reshape(-1)
            start[name], scale[name], shift[name] = offset, 1.0, 0.0
            if dtype == "int8":
                lo, hi = (float(w.min()), float(w.max())) if w.numel() else (0.0, 0.0)
                scale[name] = (hi - lo) / 255.0 if hi > lo else 1.0
                shift[name] = lo
                w = torch.round((w - lo) / scale[name]).clamp(0, 255)
            stored.append(w)
            offset += w.numel()
        stored.append(torch.zeros(1) if dtype == "int8" else torch.ones(1))
        storage = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.uint8}[dtype]
        self.register_buffer("weights", torch.cat(stored).to(storage))
        ints = []
        for h, table in zip(hashes, feature_tables):
            a, c, n_pad, per_bucket, rows_per_bucket = (
                (*h.scramble_params, h.padded_num_embeddings, h.ids_per_bucket, h.rows_per_bucket)
                if h is not None
                else (1, 0, 1 << 40, 1 << 40, 1 << 31)  # neutral: in range, and every quotient is 0 (cheap divisions)
            )
            hashed, first, has_w = int(h is not None), start.get(table, offset), int(table in weights)
            ints.append((a, c, n_pad, per_bucket, rows_per_bucket, hashed, first, has_w))
        self.register_buffer("params", torch.tensor(ints, dtype=torch.int64).t().contiguous())
        # int8 dequantisation per feature; features without w read the sentinel code 0 -> 0 * 0 + 1
        floats = [(scale.get(t, 0.0), shift.get(t, 1.0)) if dtype == "int8" else (1.0, 0.0) for t in feature_tables]
        self.register_buffer("dequant", torch.tensor(floats, dtype=torch.float32).t().contiguous())

    def forward(self, values: torch.Tensor, feature_index: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(N,)`` ids and their feature indices -> ``(N,)`` int64 rows, ``(N,)`` fp32 weights (``None`` if no
        feature has MEmCom weights)."""
        a, c, n_pad, per_bucket, rows_per_bucket, hashed, start, has_w = self.params[:, feature_index].unbind(0)
        rows = values
        if self.any_hashed:
            hashed_rows = bucketed_rows(scramble(values, a, c, n_pad), per_bucket, rows_per_bucket)
            rows = torch.where(hashed.bool(), hashed_rows, values)
        if not self.any_weights:
            return rows, None
        w = self.weights[start + values * has_w].to(torch.float32)
        if self.dtype_name == "int8":
            scale, shift = self.dequant[:, feature_index].unbind(0)
            w = w * scale + shift
        return rows, w

    def table_bytes(self) -> int:
        """Bytes of the stored weights (the sentinel entry excluded)."""
        return (self.weights.numel() - 1) * self.weights.element_size() if self.any_weights else 0
