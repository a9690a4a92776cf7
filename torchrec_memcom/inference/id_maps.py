# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Id maps of the serving form: raw ids of one logical table -> rows of its physical tables, ``(N,) -> (N, k)``.

Each map is the table's id transform with its fixed parameters baked in (plain ints and integer buffers, no
trainable state) and no host synchronisation, so ``torch.export`` traces it into the program. The math is the
project's own (``hashing``, ``lsh``); ``_adapter`` reads the parameters off a trained collection.

- ``HashedRows``: MEmCom and the hashing trick, ``h(s(i))`` of ``hashing.BucketedHash`` (``k = 1``).
- ``QuotientRemainderRows``: QR, ``(i // c, i % c)`` (``k = 2``).
- ``LMAChunkRows``: LMA, the ``d / Z`` chunk locations of ``lsh.chunk_locations`` (``k = d / Z``).
- ``EntityWeights``: MEmCom's per-id weight ``w`` in raw-id order, at fp32, fp16 or int8.
"""

from typing import Tuple

import torch
from torch import nn

from torchrec_memcom.hashing import bucketed_rows, scramble
from torchrec_memcom.lsh import chunk_locations

__all__ = ["EntityWeights", "HashedRows", "LMAChunkRows", "QuotientRemainderRows"]


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
        key_selection (torch.Tensor): ``(d / Z, keys_per_chunk)`` int64, the keys each chunk hashes.
        num_rows (int): rows of the (possibly shared) memory.
        table_salt (int): the table's salt for ids without a signature.
    """

    def __init__(self, signatures: torch.Tensor, key_selection: torch.Tensor, num_rows: int, table_salt: int) -> None:
        super().__init__()
        if signatures.dtype != torch.uint8 or signatures.dim() != 2:
            raise ValueError(f"signatures must be a 2-D uint8 tensor, got {signatures.dtype} {tuple(signatures.shape)}")
        self.register_buffer("signatures", signatures.detach().clone())
        self.register_buffer("key_selection", key_selection.detach().clone().to(torch.int64))
        self.num_rows = int(num_rows)
        self.table_salt = int(table_salt)
        self.num_outputs = int(key_selection.shape[0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` raw ids -> ``(N, d / Z)`` int64 memory rows."""
        return chunk_locations(ids, self.signatures, self.key_selection, self.num_rows, self.table_salt)


class EntityWeights(nn.Module):
    """MEmCom's ``w`` in raw-id order (``w_raw[i] = w[s(i)]``), served at ``fp32``, ``fp16`` or ``int8``.

    ``int8`` stores uint8 codes ``q = round((w - lo) / scale)`` with ``scale = (hi - lo) / 255`` over the table, so
    every weight is off by at most ``scale / 2``.

    Args:
        weights (torch.Tensor): ``(n,)`` fp32 weights in raw-id order.
        dtype (str): ``fp32``, ``fp16`` or ``int8``.
    """

    def __init__(self, weights: torch.Tensor, dtype: str) -> None:
        super().__init__()
        w = weights.detach().to(torch.float32).reshape(-1)
        self.dtype_name = dtype
        self.offset = 0.0
        self.scale = 1.0
        if dtype == "fp32":
            stored = w.clone()
        elif dtype == "fp16":
            stored = w.to(torch.float16)
        elif dtype == "int8":
            lo, hi = (float(w.min()), float(w.max())) if w.numel() else (0.0, 0.0)
            self.offset = lo
            self.scale = (hi - lo) / 255.0 if hi > lo else 1.0
            stored = torch.round((w - lo) / self.scale).clamp(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"entity weight dtype must be fp32, fp16 or int8, got {dtype!r}")
        self.register_buffer("weights", stored)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` raw ids -> ``(N,)`` fp32 weights."""
        w = self.weights[ids].to(torch.float32)
        if self.dtype_name == "int8":
            w = w * self.scale + self.offset
        return w

    def dequantized(self) -> torch.Tensor:
        """All ``n`` weights as served, fp32."""
        return self.forward(torch.arange(self.weights.numel(), device=self.weights.device))
