# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``InferenceConfig``: the precision and checks of a model's serving form (what ``to_inference`` builds)."""

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping

import torch

__all__ = ["ENTITY_WEIGHT_DTYPES", "InferenceConfig", "WEIGHT_DTYPES"]

# Physical-table precisions and the torch dtype TorchRec's quant path reads them from (``dtype_to_data_type``):
# fp32/fp16 rows as they are, int8/int4 row-wise with an fp16 scale and bias per row (FBGEMM's IntNBit rows).
WEIGHT_DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "int8": torch.qint8,
    "int4": torch.quint4x2,
}
# MEmCom's per-id weights: fp32, fp16, or uint8 codes with one fp32 scale and offset per table.
ENTITY_WEIGHT_DTYPES = ("fp32", "fp16", "int8")


@dataclass
class InferenceConfig:
    """How ``to_inference`` serves every embedding table of a model.

    Args:
        weight_dtype (str): precision of every physical table (stock tables, MEmCom/hash shared tables, QR's two
            tables, LMA memories): ``fp32``, ``fp16``, ``int8`` or ``int4`` (row-wise, TorchRec's quant path).
        entity_weight_dtype (str): precision of MEmCom's per-id weights ``w``: ``fp32``, ``fp16`` or ``int8``
            (uint8 codes with one scale and offset per table).
        row_alignment (int): byte alignment of each quantized row in FBGEMM's IntNBit tables. 16 is TorchRec's
            default (GPU-friendly); 1 packs rows tightly, as FBGEMM's own CPU default does.
        check_ids (bool): the served module asserts that every id lies in its feature's ``[0, num_embeddings)``
            (a ``RuntimeError`` naming the bounds) instead of reading past a table.
        version (int): schema version of this config.
    """

    weight_dtype: str = "int8"
    entity_weight_dtype: str = "fp16"
    row_alignment: int = 16
    check_ids: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weight_dtype must be one of {sorted(WEIGHT_DTYPES)}, got {self.weight_dtype!r}")
        if self.entity_weight_dtype not in ENTITY_WEIGHT_DTYPES:
            raise ValueError(
                f"entity_weight_dtype must be one of {list(ENTITY_WEIGHT_DTYPES)}, got {self.entity_weight_dtype!r}"
            )
        if self.row_alignment < 1:
            raise ValueError(f"row_alignment must be >= 1, got {self.row_alignment}")
        if self.version != 1:
            raise ValueError(f"unsupported InferenceConfig version {self.version} (this code reads version 1)")

    @property
    def torch_weight_dtype(self) -> torch.dtype:
        """The dtype TorchRec's ``QuantConfig`` takes for ``weight_dtype``."""
        return WEIGHT_DTYPES[self.weight_dtype]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(values: Mapping[str, Any]) -> "InferenceConfig":
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(InferenceConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown InferenceConfig field(s) {unknown}; known: {sorted(known)}")
        return InferenceConfig(**dict(values))
