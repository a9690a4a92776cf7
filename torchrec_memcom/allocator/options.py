# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Table options for the allocator: the tables, the option specs, their bytes (from the configs' memory reports) and
budgets."""

import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.memory import MemoryReport, TableMemory, tensor_bytes
from torchrec_memcom.modules import CompressedEmbeddingBagCollection
from torchrec_memcom.tables import table_config

__all__ = [
    "DEFAULT_RATIOS",
    "METHODS",
    "Spec",
    "TableInfo",
    "build_config",
    "candidate_specs",
    "fp32_projection_bytes",
    "option_bytes",
    "parse_budget",
    "recipe_spec",
]

Spec = Dict[str, Any]
METHODS = ("stock", "hash", "qr", "memcom", "lma")
DEFAULT_RATIOS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def fp32_projection_bytes(small_dim: int, dim: int) -> int:
    """Bytes of an fp32 ``small_dim x dim`` up-projection (built on ``meta``)."""
    return tensor_bytes(torch.empty(small_dim, dim, device="meta"))


@dataclass(eq=False)
class TableInfo:
    """One table to allocate.

    Args:
        name (str): table name (a valid ``nn.ModuleDict`` key).
        num_embeddings (int): logical ids ``n``.
        embedding_dim (int): the model's ``d`` for this table.
        feature_names (List[str]): its features (default ``[name]``); the proposal is keyed by these.
        counts (Optional[np.ndarray]): occurrences of its ids in a data sample: a bincount (length ``n``) or the
            counts of the distinct ids seen (``np.unique``'s counts); zeros are ignored; read once. ``FrequencyModel``
            needs it.
        importance (float): weight of this table's loss under ``FrequencyModel``.
    """

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: List[str] = field(default_factory=list)
    counts: Optional[np.ndarray] = None
    importance: float = 1.0
    _histogram: Optional[Tuple[np.ndarray, np.ndarray]] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_embeddings < 1 or self.embedding_dim < 1:
            raise ValueError(
                f"table '{self.name}': num_embeddings and embedding_dim must be >= 1, got "
                f"{self.num_embeddings} and {self.embedding_dim}"
            )
        self.feature_names = list(self.feature_names or [self.name])
        if self.counts is not None:
            c = np.asarray(self.counts.numpy() if isinstance(self.counts, torch.Tensor) else self.counts)
            if c.ndim != 1 or c.size > self.num_embeddings or (c.size and c.min() < 0):
                raise ValueError(
                    f"table '{self.name}': counts must be a 1-D array of >= 0 counts of at most num_embeddings="
                    f"{self.num_embeddings} ids, got shape {c.shape}" + (f", min {c.min()}" if c.size else "")
                )
            self.counts = c
        if not (self.importance >= 0 and math.isfinite(self.importance)):
            raise ValueError(f"table '{self.name}': importance must be a finite number >= 0, got {self.importance}")

    def count_histogram(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(values, multiplicities)`` of the nonzero counts (cached; empty without counts)."""
        if self._histogram is None:
            c = np.zeros(0, dtype=np.int64) if self.counts is None else self.counts
            self._histogram = np.unique(c[c > 0], return_counts=True)
        return self._histogram


def build_config(table: TableInfo, spec: Mapping[str, Any]) -> EmbeddingBagConfig:
    """The table config of one option (``spec`` may carry ``embedding_dim`` to narrow the table).

    Raises:
        ValueError: from ``table_config`` (unknown type or field, unreachable ratio), or a bad ``embedding_dim``.
    """
    spec = dict(spec)
    dim = spec.pop("embedding_dim", table.embedding_dim)
    if not isinstance(dim, int) or not 1 <= dim <= table.embedding_dim:
        raise ValueError(f"table '{table.name}': embedding_dim must be an int in [1, {table.embedding_dim}], got {dim}")
    return table_config(table.name, table.feature_names, table.num_embeddings, dim, spec)


_SIZE_FIELDS = {"hash": ("num_shared_rows",), "memcom": ("num_shared_rows",), "qr": ("num_remainder_rows",)}


def recipe_spec(table: TableInfo, spec: Mapping[str, Any]) -> Spec:
    """The spec a recipe's ``tables:`` section (``tables.table_config`` at the model's ``d``) takes for an option.

    A full-width option is itself. A narrowed one (``embedding_dim: d'``) becomes the same table stored ``d'`` wide
    with a learned ``d' x d`` output projection (``base_dim: d'``; a stock one is ``lowrank``), sized explicitly as
    the option was, so its bytes are the option's bytes (the projection included).
    """
    dim = spec.get("embedding_dim", table.embedding_dim)
    if dim == table.embedding_dim:
        return {k: v for k, v in spec.items() if k != "embedding_dim"}
    cfg = build_config(table, spec)
    kind = spec.get("type", "stock")
    if kind == "stock":
        return {"type": "lowrank", "base_dim": dim}
    out: Spec = {k: v for k, v in spec.items() if k not in ("embedding_dim", "compression")}
    out["base_dim"] = dim
    if kind in ("hash", "memcom"):
        h = cfg.bucketed_hash()  # type: ignore[attr-defined]
        out.update(num_shared_rows=h.num_rows, num_buckets=h.num_buckets)
    elif kind == "qr":
        out["num_remainder_rows"] = cfg.remainder_rows()  # type: ignore[attr-defined]
    elif kind == "lma":
        out.update(memory_rows=cfg.rows(), chunk_size=cfg.chunk())  # type: ignore[attr-defined]
    else:
        raise ValueError(f"table '{table.name}': no recipe form for a narrowed '{kind}' table")
    return out


@functools.lru_cache(maxsize=1 << 16)
def _table_memory(num_embeddings: int, dim: int, spec_key: str) -> Tuple[str, int, Tuple[Tuple[str, int], ...]]:
    """``(method, stock bytes, components)`` of a one-table collection built on ``meta`` (cached: building takes
    milliseconds, and the bytes depend on the size and spec only, not on the table's name)."""
    cfg = table_config("t", ["t"], num_embeddings, dim, json.loads(spec_key))
    row = CompressedEmbeddingBagCollection([cfg], device="meta").memory_report().tables[0]
    return row.method, row.stock_bytes, tuple(row.components.items())


def option_bytes(
    table: TableInfo,
    spec: Mapping[str, Any],
    projection_bytes: Callable[[int, int], int] = fp32_projection_bytes,
) -> Tuple[int, MemoryReport]:
    """Bytes of one option: the ``memory_report()`` total of a collection built on ``meta`` from the option's config,
    plus the up-projection of a narrowed table. Returns the bytes and the (one-table) report."""
    cfg = build_config(table, spec)
    rest = {k: v for k, v in spec.items() if k != "embedding_dim"}
    method, stock, components = _table_memory(table.num_embeddings, cfg.embedding_dim, json.dumps(rest, sort_keys=True))
    report = MemoryReport([TableMemory(table.name, method, stock, dict(components), [table.name])])
    extra = projection_bytes(cfg.embedding_dim, table.embedding_dim) if cfg.embedding_dim < table.embedding_dim else 0
    return report.total_bytes + extra, report


def _spec(method: str, ratio: Optional[float], dim: int, full_dim: int) -> Spec:
    spec: Spec = {"type": method}
    if ratio is not None:
        spec["compression"] = int(ratio) if float(ratio).is_integer() else float(ratio)
    if dim != full_dim:
        spec["embedding_dim"] = dim
    return spec


def candidate_specs(
    table: TableInfo,
    methods: Sequence[str] = METHODS,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    dims: Optional[Sequence[int]] = None,
    extra: Sequence[Mapping[str, Any]] = (),
) -> List[Spec]:
    """Every valid option of ``table``: each method at each dim (default: ``d`` and its halvings that are multiples
    of 4) and, for the compressed methods, each ratio; options the configs reject (e.g. MEmCom at a ratio >= d, a
    QR ratio beyond ``2 sqrt(n)`` rows) are left out. ``extra`` specs are appended as given (and must be valid).

    Raises:
        ValueError: an unknown method or a bad ratio / dim list.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"table '{table.name}': unknown methods {unknown} (choose from {list(METHODS)})")
    if any(not (r >= 1 and math.isfinite(r)) for r in ratios):
        raise ValueError(f"table '{table.name}': ratios must be finite numbers >= 1, got {list(ratios)}")
    d = table.embedding_dim
    if dims is None:
        dims = [d] + [d >> k for k in range(1, 32) if (d >> k) >= 4 and (d >> k) % 4 == 0 and (d >> k) << k == d]
    if any(not 1 <= x <= d for x in dims):
        raise ValueError(f"table '{table.name}': dims must be in [1, {d}], got {list(dims)}")
    out: List[Spec] = []
    for dim in dict.fromkeys(dims):
        for method in methods:
            for ratio in [None] if method == "stock" else ratios:
                spec = _spec(method, ratio, dim, d)
                try:
                    build_config(table, spec)
                except ValueError:
                    continue
                out.append(spec)
    for spec in extra:
        if "memory_group" in spec:  # a shared memory's bytes do not add up per table
            raise ValueError(f"table '{table.name}': the allocator sizes tables alone; drop memory_group from {spec}")
        build_config(table, spec)
        out.append(dict(spec))
    return out


def parse_budget(budget: Union[int, float, str], stock_bytes: int) -> int:
    """Bytes of a budget: a number of bytes, ``"<x> [B|KB|MB|GB|TB|KiB|MiB|GiB|TiB]"`` or ``"<r>x"`` (the stock fp32
    bytes of all tables divided by ``r``).

    Raises:
        ValueError: an unknown unit, a malformed string, or a budget that is not a positive finite number.
    """
    units = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
    units.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
    if isinstance(budget, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", budget)
        if m is None:
            raise ValueError(f"budget {budget!r}: expected bytes, '<number> <unit>' or '<ratio>x'")
        value, unit = float(m.group(1)), m.group(2).lower()
        if unit == "x":
            if value < 1:
                raise ValueError(f"budget {budget!r}: a compression ratio must be >= 1")
            return int(stock_bytes / value)
        if unit not in units:
            raise ValueError(
                f"budget {budget!r}: unknown unit {m.group(2)!r} (use one of B, KB, MB, GB, TB, KiB, "
                "MiB, GiB, TiB or x)"
            )
        budget = value * units[unit]
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive finite number of bytes, got {budget!r}")
    return int(budget)
