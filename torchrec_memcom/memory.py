# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Memory reports: bytes per table and component, against stock fp32 tables of the same logical n x d."""

from dataclasses import dataclass, field
from typing import Dict, Iterable, List

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.configs import stock_bytes

__all__ = ["MemoryReport", "TableMemory", "tensor_bytes"]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor's elements take (valid on ``meta`` too)."""
    return t.numel() * t.element_size()


@dataclass
class TableMemory:
    """One row of a memory report: a table (or a memory group shared by several tables).

    Args:
        name (str): table name, or ``group:<name>`` for a shared LMA memory.
        method (str): ``stock``, ``memcom``, ``hash``, ``qr`` or ``lma``.
        stock_bytes (int): bytes of stock fp32 tables with the same logical shape(s).
        components (Dict[str, int]): bytes by component (shared table, entity weights, signatures, ...).
        tables (List[str]): the tables this row covers.
    """

    name: str
    method: str
    stock_bytes: int
    components: Dict[str, int]
    tables: List[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.components.values())

    @property
    def compression_ratio(self) -> float:
        return self.stock_bytes / max(self.total_bytes, 1)


@dataclass
class MemoryReport:
    """Bytes of every table of a module, by component, and the compression against stock fp32 tables.

    ``str(report)`` renders a table; ``to_dict()`` gives JSON-ready numbers.
    """

    tables: List[TableMemory]

    @staticmethod
    def merge(reports: Iterable["MemoryReport"]) -> "MemoryReport":
        return MemoryReport([t for r in reports for t in r.tables])

    @staticmethod
    def stock(tables: Iterable[EmbeddingBagConfig], weights: Dict[str, torch.Tensor]) -> "MemoryReport":
        """Report of stock tables given their weight tensors by table name."""
        return MemoryReport(
            [
                TableMemory(t.name, "stock", stock_bytes(t), {"table": tensor_bytes(weights[t.name])}, [t.name])
                for t in tables
            ]
        )

    @property
    def total_bytes(self) -> int:
        return sum(t.total_bytes for t in self.tables)

    @property
    def stock_bytes(self) -> int:
        return sum(t.stock_bytes for t in self.tables)

    @property
    def compression_ratio(self) -> float:
        return self.stock_bytes / max(self.total_bytes, 1)

    def to_dict(self) -> Dict[str, object]:
        return {
            "tables": [
                {
                    "name": t.name,
                    "method": t.method,
                    "tables": t.tables,
                    "components": dict(t.components),
                    "total_bytes": t.total_bytes,
                    "stock_bytes": t.stock_bytes,
                    "compression_ratio": t.compression_ratio,
                }
                for t in self.tables
            ],
            "total_bytes": self.total_bytes,
            "stock_bytes": self.stock_bytes,
            "compression_ratio": self.compression_ratio,
        }

    def __str__(self) -> str:
        header = ("table", "method", "components (bytes)", "total", "stock fp32", "ratio")
        rows = [
            (
                t.name,
                t.method,
                ", ".join(f"{k}={_fmt(v)}" for k, v in t.components.items()),
                _fmt(t.total_bytes),
                _fmt(t.stock_bytes),
                f"{t.compression_ratio:.2f}x",
            )
            for t in self.tables
        ]
        rows.append(("TOTAL", "", "", _fmt(self.total_bytes), _fmt(self.stock_bytes), f"{self.compression_ratio:.2f}x"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = "  ".join
        out = [line(h.ljust(w) for h, w in zip(header, widths))]
        out.append(line("-" * w for w in widths))
        out += [line(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        return "\n".join(out)


def _fmt(num_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes} B"
