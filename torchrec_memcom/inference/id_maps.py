# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Id maps of the serving form: raw ids of one logical table -> rows of its physical tables, ``(N,) -> (N, k)``.

Each map is the table's id transform with its fixed parameters baked in (plain ints and integer buffers, no
trainable state) and no host synchronisation, so ``torch.export`` traces it into the program. The math is the
project's own (``hashing``, ``lsh``); ``_adapter`` reads the parameters off a trained collection.

- ``HashedRows``: MEmCom and the hashing trick, ``h(s(i))`` of ``hashing.BucketedHash`` (``k = 1``).
- ``QuotientRemainderRows``: QR, ``(i // c, i % c)`` (``k = 2``).
- ``LMAChunkRows``: LMA, the ``d / Z`` chunk locations of ``lsh.chunk_locations`` (``k = d / Z``).
- ``FeatureHashedRows``, ``FeatureEntityWeights``: the hash and MEmCom's per-id weight ``w`` (fp32, fp16 or int8)
  of every feature at once, over a KJT's whole values vector (per-feature parameters gathered per value).
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from torchrec_memcom.hashing import bucketed_rows, scramble
from torchrec_memcom.lsh import chunk_locations

__all__ = [
    "FeatureEntityWeights",
    "FeatureHashedRows",
    "HashedRows",
    "LMAChunkRows",
    "QuotientRemainderRows",
]


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


class FeatureHashedRows(nn.Module):
    """``HashedRows`` of every feature at once, for a KJT's whole values vector: per-feature parameters gathered by
    each value's feature index, rows of unhashed features left as the ids themselves.

    Args:
        maps (Sequence[Optional[HashedRows]]): per feature (in KJT order) its table's hash, ``None`` if unhashed.
    """

    def __init__(self, maps: Sequence[Optional[HashedRows]]) -> None:
        super().__init__()
        # neutral parameters for unhashed features keep the (discarded) arithmetic in range
        params = [
            (m.scramble_params[0], m.scramble_params[1], m.padded_num_embeddings, m.ids_per_bucket, m.rows_per_bucket)
            if m is not None
            else (1, 0, 1 << 40, 1 << 40, 1)
            for m in maps
        ]
        self.register_buffer("params", torch.tensor(params, dtype=torch.int64).t().contiguous())
        self.register_buffer("hashed", torch.tensor([m is not None for m in maps], dtype=torch.bool))

    def forward(self, values: torch.Tensor, feature_index: torch.Tensor) -> torch.Tensor:
        """``(N,)`` ids and their ``(N,)`` feature indices -> ``(N,)`` int64 rows."""
        a, c, n_pad, ids_per_bucket, rows_per_bucket = (p[feature_index] for p in self.params)
        rows = bucketed_rows(scramble(values, a, c, n_pad), ids_per_bucket, rows_per_bucket)
        return torch.where(self.hashed[feature_index], rows, values.to(torch.int64))


class FeatureEntityWeights(nn.Module):
    """MEmCom's ``w`` of every MEmCom table in raw-id order (``w_raw[i] = w[s(i)]``), looked up for a KJT's whole
    values vector by each value's feature index; values of other features get weight 1.

    ``int8`` stores uint8 codes ``q = round((w - lo) / scale)`` with ``scale = (hi - lo) / 255`` per table, so every
    weight is off by at most ``scale / 2``.

    Args:
        weights (Dict[str, torch.Tensor]): per MEmCom table, its ``(n,)`` fp32 weights in raw-id order.
        feature_tables (Sequence[str]): the table of each feature, in KJT order.
        dtype (str): ``fp32``, ``fp16`` or ``int8``.
    """

    def __init__(self, weights: Dict[str, torch.Tensor], feature_tables: Sequence[str], dtype: str) -> None:
        super().__init__()
        if dtype not in ("fp32", "fp16", "int8"):
            raise ValueError(f"entity weight dtype must be fp32, fp16 or int8, got {dtype!r}")
        self.dtype_name = dtype
        stored, start, scale, shift = [], {}, {}, {}
        offset = 0
        for name, w in weights.items():
            w = w.detach().to(torch.float32).reshape(-1)
            start[name], scale[name], shift[name] = offset, 1.0, 0.0
            if dtype == "fp32":
                stored.append(w.clone())
            elif dtype == "fp16":
                stored.append(w.to(torch.float16))
            else:
                lo, hi = (float(w.min()), float(w.max())) if w.numel() else (0.0, 0.0)
                scale[name] = (hi - lo) / 255.0 if hi > lo else 1.0
                shift[name] = lo
                stored.append(torch.round((w - lo) / scale[name]).clamp(0, 255).to(torch.uint8))
            offset += w.numel()
        self.register_buffer("weights", torch.cat(stored))
        has = [t in weights for t in feature_tables]
        self.register_buffer("has_weights", torch.tensor(has, dtype=torch.bool))
        self.register_buffer("start", torch.tensor([start.get(t, 0) for t in feature_tables], dtype=torch.int64))
        self.register_buffer("scale", torch.tensor([scale.get(t, 1.0) for t in feature_tables], dtype=torch.float32))
        self.register_buffer("shift", torch.tensor([shift.get(t, 0.0) for t in feature_tables], dtype=torch.float32))

    def forward(self, values: torch.Tensor, feature_index: torch.Tensor) -> torch.Tensor:
        """``(N,)`` ids and their feature indices -> ``(N,)`` fp32 weights (1 for features without ``w``)."""
        has = self.has_weights[feature_index]
        slot = torch.where(has, self.start[feature_index] + values, torch.zeros_like(feature_index))
        w = self.weights[slot].to(torch.float32)
        if self.dtype_name == "int8":
            w = w * self.scale[feature_index] + self.shift[feature_index]
        return torch.where(has, w, torch.ones_like(w))
