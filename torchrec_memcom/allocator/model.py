# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``FrequencyModel``: the expected quality loss of a table option from its id frequencies, without training."""

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torchrec.modules.embedding_configs import data_type_to_dtype

from torchrec_memcom.allocator.options import TableInfo, build_config
from torchrec_memcom.memory import MemoryReport

__all__ = ["FrequencyModel"]


def _component(report: MemoryReport, name: str, table: str) -> int:
    components = report.tables[0].components
    if name not in components:
        raise RuntimeError(f"table '{table}': its memory report has no '{name}' component (got {sorted(components)})")
    return components[name]


@dataclass(frozen=True)
class FrequencyModel:
    """Expected quality loss of a table option from its id frequencies, without training (a model, not a
    measurement: calibrate it against ``measure_losses`` where it matters).

    Id ``i`` has traffic share ``p_i`` (its count over the sample's total) and ``o_i = count_i * count_scale``
    training occurrences; ``N = sum_i o_i``. An option keeps a share ``R_i`` of the id's signal, and the table's loss
    is ``importance * (1 - sum_i p_i R_i)``. An id's signal spreads over the model's ``d`` dimensions with energy
    ``e_k ~ k ** -spectrum_decay`` (``sum e_k = 1``), and a row learns dimension ``k`` from ``o`` occurrences as a
    ridge estimate does, keeping ``o e_k / (o e_k + noise)`` of it; a row of width ``d'`` thus keeps
    ``G(o, d') = sum_{k <= d'} e_k o e_k / (o e_k + noise)``: frequent ids use many dimensions, rare ids few. A
    shared row (a random hash into ``m`` rows) also carries other ids' traffic ``O_i = (1 - p_i) / m``: id ``i``
    owns ``a_i = p_i / (p_i + O_i)`` of it, and it learns from ``o_row = N (p_i + O_i)`` occurrences.

    - stock at ``d'``: ``R = G(o_i, d')``;
    - hashing (``m`` rows): ``R = a_i G(o_row, d')``;
    - QR (``q`` quotient and ``c`` remainder rows): ``R = 1 - (1 - R_q)(1 - R_c)`` with each factor hashing's ``R``
      for its rows (the two shared rows identify an id jointly);
    - MEmCom: hashing's ``R_h`` plus a per-id scalar learning a direction with ``scalar_share`` of the signal from
      ``o_i``: ``R = R_h + (1 - R_h) s o_i s / (o_i s + noise)`` with ``s = scalar_share``;
    - LMA (``M`` rows of width ``Z``): hashing with as many elements, ``m = M Z / d'``, whose signatures recover
      ``semantic_gain`` of the collision loss: ``R = (a_i + semantic_gain (1 - a_i)) G(o_row, d')``.

    Ids missing from the sample carry no traffic. The defaults are priors, not fits: ``noise`` ~ the label noise of
    a click (about 5 logit units at a 25% click rate) over the variance of a table's per-id signal; ``scalar_share``
    is large where per-id biases dominate (on ML-1M CTR, MEmCom with one shared row kept ~90% of stock's lift over a
    no-id model, issue 8); ``semantic_gain`` is 0 as LMA's signatures have not beaten no signatures (issue 8).

    Args:
        noise (float): occurrences that learn half of a direction carrying all of an id's signal (> 0).
        spectrum_decay (float): exponent of the per-dimension signal energy (0: flat).
        scalar_share (float): share of an id's signal a per-id scalar can carry (MEmCom's weight).
        count_scale (float): training occurrences per counted one (epochs x training rows / sample rows).
        semantic_gain (float): share of LMA's collision loss its signatures recover.
    """

    noise: float = 10.0
    spectrum_decay: float = 1.0
    scalar_share: float = 0.3
    count_scale: float = 1.0
    semantic_gain: float = 0.0

    def __post_init__(self) -> None:
        for k in ("noise", "spectrum_decay", "count_scale"):
            if not (getattr(self, k) >= 0 and math.isfinite(getattr(self, k))):
                raise ValueError(f"FrequencyModel.{k} must be a finite number >= 0, got {getattr(self, k)}")
        if self.noise <= 0 or self.count_scale <= 0:
            raise ValueError(f"FrequencyModel: noise and count_scale must be > 0, got {self.noise}, {self.count_scale}")
        for k in ("scalar_share", "semantic_gain"):
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"FrequencyModel.{k} must be in [0, 1], got {getattr(self, k)}")

    def _gain(self, occurrences: np.ndarray, dim: int, full_dim: int) -> np.ndarray:
        """``G(o, d')``: the share of the signal a row of width ``dim`` learns from ``occurrences``."""
        e = np.arange(1, full_dim + 1, dtype=np.float64) ** -self.spectrum_decay
        e = (e / e.sum())[:dim]
        oe = occurrences[:, None] * e[None, :]
        return (e[None, :] * oe / (oe + self.noise)).sum(axis=1)

    def retained(self, table: TableInfo, spec: Mapping[str, Any], report: MemoryReport) -> float:
        """Traffic-weighted share of the table's signal that option ``spec`` keeps (``report``: its memory report).

        Raises:
            ValueError: the table has no counts (or only zeros), or ``spec`` has a type without a formula.
        """
        if table.counts is None or not np.any(table.counts):
            raise ValueError(f"table '{table.name}': the frequency model needs id counts from a data sample")
        vals, mult = table.count_histogram()
        total = float(np.sum(vals * mult))
        p, occ, n_occ = vals / total, vals * self.count_scale, total * self.count_scale
        cfg = build_config(table, spec)
        dim, full = cfg.embedding_dim, table.embedding_dim
        row_bytes = dim * torch.empty((), dtype=data_type_to_dtype(cfg.data_type)).element_size()

        def shared(rows: float, semantic_gain: float = 0.0) -> np.ndarray:
            others = (1.0 - p) / max(rows, 1e-12)
            own = p / (p + others)
            return (own + semantic_gain * (1.0 - own)) * self._gain(n_occ * (p + others), dim, full)

        method = spec.get("type", "stock")
        if method == "stock":
            r = self._gain(occ, dim, full)
        elif method in ("hash", "memcom"):
            r = shared(_component(report, "shared_table", table.name) / row_bytes)
            if method == "memcom":
                s = self.scalar_share
                r = r + (1.0 - r) * s * occ * s / (occ * s + self.noise)
        elif method == "qr":
            rq = shared(_component(report, "quotient_table", table.name) / row_bytes)
            rc = shared(_component(report, "remainder_table", table.name) / row_bytes)
            r = 1.0 - (1.0 - rq) * (1.0 - rc)
        elif method == "lma":
            r = shared(_component(report, "memory", table.name) / row_bytes, self.semantic_gain)
        else:
            raise ValueError(f"table '{table.name}': the frequency model has no formula for type {method!r}")
        return float(np.sum(mult * p * r))

    def loss(self, table: TableInfo, spec: Mapping[str, Any], report: MemoryReport) -> float:
        """``importance * (1 - retained)``."""
        return table.importance * (1.0 - self.retained(table, spec, report))
