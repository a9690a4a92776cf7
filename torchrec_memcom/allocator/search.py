# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Proposals: the knapsack over every table's options with model losses (``propose``) or measured ones
(``measure_losses``, ``propose_measured``), checked against the budget with one collection's memory report."""

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from torchrec_memcom.allocator.knapsack import solve_knapsack
from torchrec_memcom.allocator.model import FrequencyModel
from torchrec_memcom.allocator.options import (
    DEFAULT_RATIOS,
    METHODS,
    Spec,
    TableInfo,
    build_config,
    candidate_specs,
    fp32_projection_bytes,
    option_bytes,
    parse_budget,
    recipe_spec,
)
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.modules import CompressedEmbeddingBagCollection

__all__ = ["Allocation", "EvaluationCache", "measure_losses", "propose", "propose_measured"]


@dataclass
class Allocation:
    """A proposal: the recipes' ``tables:`` section and what it costs.

    Attributes:
        tables: ``{feature: spec}`` for every feature of every table.
        specs: ``{table: spec}``.
        bytes: bytes of each table (memory report + up-projection).
        total_bytes: bytes of all tables, from one collection built with every chosen config.
        budget_bytes: the budget.
        stock_bytes: stock fp32 bytes of all tables at the model's dims.
        losses: the loss of each table's choice (model or measured).
        exact: whether the knapsack was solved exactly.
        evaluations: ``evaluate`` calls made (measured proposals; cached results not counted).
        verified: measured proposals: the validation metric of every jointly trained contender (``knapsack`` and
            ``uniform <spec>``), the chosen one's included.
    """

    tables: Dict[str, Spec]
    specs: Dict[str, Spec]
    bytes: Dict[str, int]
    total_bytes: int
    budget_bytes: int
    stock_bytes: int
    losses: Dict[str, float]
    exact: bool = True
    evaluations: int = 0
    verified: Optional[Dict[str, float]] = None

    @property
    def predicted_loss(self) -> float:
        return float(sum(self.losses.values()))

    @property
    def compression_ratio(self) -> float:
        return self.stock_bytes / max(self.total_bytes, 1)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "tables": self.tables,
            "specs": self.specs,
            "bytes": self.bytes,
            "total_bytes": self.total_bytes,
            "budget_bytes": self.budget_bytes,
            "stock_bytes": self.stock_bytes,
            "compression_ratio": self.compression_ratio,
            "losses": self.losses,
            "predicted_loss": self.predicted_loss,
            "exact": self.exact,
            "evaluations": self.evaluations,
            "verified": self.verified,
        }

    def __str__(self) -> str:
        lines = [f"{'table':<16} {'bytes':>14} {'loss':>10}  spec"]
        for name, spec in self.specs.items():
            lines.append(f"{name:<16} {self.bytes[name]:>14,} {self.losses[name]:>10.4f}  {json.dumps(spec)}")
        lines.append(
            f"{'TOTAL':<16} {self.total_bytes:>14,} {self.predicted_loss:>10.4f}  budget {self.budget_bytes:,} B, "
            f"{self.compression_ratio:.2f}x vs stock {self.stock_bytes:,} B"
        )
        return "\n".join(lines)


def _check_tables(tables: Sequence[TableInfo]) -> None:
    if not tables:
        raise ValueError("the allocator needs at least one table")
    names = [t.name for t in tables]
    features = [f for t in tables for f in t.feature_names]
    for what, items in (("table names", names), ("feature names", features)):
        dup = sorted({x for x in items if items.count(x) > 1})
        if dup:
            raise ValueError(f"duplicate {what}: {dup}")


def _section(tables: Sequence[TableInfo], specs: Mapping[str, Spec]) -> Dict[str, Spec]:
    """The recipes' ``tables:`` section (keyed by feature) of one spec per table (``recipe_spec``: narrowed tables
    become ``base_dim`` tables with their output projection, runnable by the recipes as they are)."""
    return {f: recipe_spec(t, specs[t.name]) for t in tables for f in t.feature_names}


def _options(
    tables: Sequence[TableInfo],
    methods: Sequence[str],
    ratios: Sequence[float],
    dims: Optional[Mapping[str, Sequence[int]]],
    extra: Optional[Mapping[str, Sequence[Spec]]],
    projection_bytes: Callable[[int, int], int],
    narrow: bool,
) -> Tuple[Dict[str, List[Tuple[Spec, int, MemoryReport]]], int]:
    """Every table's candidate options with their bytes, and the stock fp32 bytes of all tables."""
    unknown = sorted((set(dims or {}) | set(extra or {})) - {t.name for t in tables})
    if unknown:
        raise ValueError(f"dims / extra name unknown tables {unknown}")
    out: Dict[str, List[Tuple[Spec, int, MemoryReport]]] = {}
    stock = 0
    for t in tables:
        table_dims = (dims or {}).get(t.name, None if narrow else [t.embedding_dim])
        specs = candidate_specs(t, methods, ratios, table_dims, (extra or {}).get(t.name, ()))
        rows = []
        for spec in specs:
            b, report = option_bytes(t, spec, projection_bytes)
            rows.append((spec, b, report))
        if not rows:
            raise ValueError(
                f"table '{t.name}': no valid option among methods {list(methods)} and ratios {list(ratios)}"
            )
        out[t.name] = rows
        stock += option_bytes(t, {"type": "stock"})[1].stock_bytes
    return out, stock


def _check_budget(
    tables: Sequence[TableInfo], options: Mapping[str, List[Tuple[Spec, int, MemoryReport]]], budget_bytes: int
) -> None:
    """Raises ``ValueError`` listing every table's cheapest option if even those exceed the budget."""
    cheapest = {t.name: min(options[t.name], key=lambda o: o[1]) for t in tables}
    floor = sum(o[1] for o in cheapest.values())
    if floor > budget_bytes:
        detail = ", ".join(f"{n}: {o[1]:,} B {json.dumps(o[0])}" for n, o in cheapest.items())
        raise ValueError(
            f"budget {budget_bytes:,} bytes is impossible: the cheapest options need {floor:,} bytes ({detail}); "
            "raise the budget or allow higher ratios / smaller dims"
        )


def _finish(
    tables: Sequence[TableInfo],
    options: Mapping[str, List[Tuple[Spec, int, MemoryReport]]],
    losses: Mapping[str, Sequence[float]],
    budget_bytes: int,
    stock_bytes: int,
    max_states: int,
    projection_bytes: Callable[[int, int], int],
) -> Allocation:
    _check_budget(tables, options, budget_bytes)
    groups = [[(b, float(v)) for (_, b, _), v in zip(options[t.name], losses[t.name])] for t in tables]
    chosen, exact = solve_knapsack(groups, budget_bytes, max_states)
    allocation = _allocation(tables, options, losses, chosen, budget_bytes, stock_bytes, projection_bytes)
    if allocation is None:  # per-table bytes add up unless tables share memory; never hand out an over-budget plan
        raise RuntimeError(f"internal error: the knapsack's proposal is over the budget {budget_bytes:,}")
    allocation.exact = exact
    return allocation


def _total_bytes(
    tables: Sequence[TableInfo], specs: Mapping[str, Spec], projection_bytes: Callable[[int, int], int]
) -> int:
    """Bytes of all tables with ``specs``, from one collection's memory report (shared memories counted once)."""
    configs = [build_config(t, specs[t.name]) for t in tables]
    total = CompressedEmbeddingBagCollection(configs, device="meta").memory_report().total_bytes
    return total + sum(
        projection_bytes(c.embedding_dim, t.embedding_dim)
        for c, t in zip(configs, tables)
        if c.embedding_dim < t.embedding_dim
    )


def _allocation(
    tables: Sequence[TableInfo],
    options: Mapping[str, List[Tuple[Spec, int, MemoryReport]]],
    losses: Mapping[str, Sequence[float]],
    chosen: Sequence[int],
    budget_bytes: int,
    stock_bytes: int,
    projection_bytes: Callable[[int, int], int],
) -> Optional[Allocation]:
    """The ``Allocation`` of option ``chosen[i]`` for table ``i``, or ``None`` if it is over the budget."""
    specs = {t.name: options[t.name][i][0] for t, i in zip(tables, chosen)}
    total = _total_bytes(tables, specs, projection_bytes)
    if total > budget_bytes:
        return None
    return Allocation(
        tables=_section(tables, specs),
        specs=specs,
        bytes={t.name: options[t.name][i][1] for t, i in zip(tables, chosen)},
        total_bytes=total,
        budget_bytes=budget_bytes,
        stock_bytes=stock_bytes,
        losses={t.name: float(losses[t.name][i]) for t, i in zip(tables, chosen)},
    )


def propose(
    tables: Sequence[TableInfo],
    budget: Union[int, float, str],
    *,
    model: Optional[FrequencyModel] = None,
    methods: Sequence[str] = METHODS,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    dims: Optional[Mapping[str, Sequence[int]]] = None,
    narrow: bool = True,
    extra: Optional[Mapping[str, Sequence[Spec]]] = None,
    projection_bytes: Callable[[int, int], int] = fp32_projection_bytes,
    max_states: int = 2_000_000,
) -> Allocation:
    """The model-based proposal: the knapsack over every table's options with ``FrequencyModel`` losses.

    Args:
        tables (Sequence[TableInfo]): the tables, each with ``counts``.
        budget (Union[int, float, str]): bytes, ``"64 MiB"`` or ``"16x"`` (see ``parse_budget``).
        model (Optional[FrequencyModel]): the loss model (default ``FrequencyModel()``).
        methods (Sequence[str]): methods to consider (``stock`` covers keep-stock and stock at a smaller dim).
        ratios (Sequence[float]): compression ratios of the compressed methods.
        dims (Optional[Mapping[str, Sequence[int]]]): per table, the dims to consider (default: ``d`` and its
            halvings that are multiples of 4, or only ``d`` without ``narrow``).
        narrow (bool): consider tables narrower than the model's dim (``embedding_dim`` in a spec: needs core
            support, see the package docstring); False keeps every table at its model dim.
        extra (Optional[Mapping[str, Sequence[Spec]]]): per table, further specs (e.g. LMA with other settings).
        projection_bytes (Callable[[int, int], int]): bytes of the up-projection of a table narrowed to ``d' < d``
            (default: an fp32 ``d' x d`` matrix; return 0 if the model takes narrow tables as they are).
        max_states (int): knapsack frontier cap (see ``solve_knapsack``).

    Returns:
        Allocation: the proposal; its ``total_bytes`` never exceeds the budget.

    Raises:
        ValueError: bad tables (duplicates, missing counts), an unknown method or table, a malformed budget, or a
            budget below the cheapest options (the message lists them).
    """
    _check_tables(tables)
    options, stock = _options(tables, methods, ratios, dims, extra, projection_bytes, narrow)
    budget_bytes = parse_budget(budget, stock)
    model = model if model is not None else FrequencyModel()
    losses = {t.name: [model.loss(t, spec, report) for spec, _, report in options[t.name]] for t in tables}
    return _finish(tables, options, losses, budget_bytes, stock, max_states, projection_bytes)


class EvaluationCache:
    """Results of ``evaluate`` by canonical ``tables:`` section, optionally persisted as JSON (rewritten after every
    new result, so an interrupted search keeps what it measured).

    Args:
        path (Optional[str]): JSON file to load from (if it exists) and save to.
    """

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self.results: Dict[str, float] = {}
        if path is not None and os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
                raise ValueError(f"{path}: not an evaluation cache (expected a JSON object of numbers)")
            self.results = {str(k): float(v) for k, v in data.items()}

    @staticmethod
    def key(section: Mapping[str, Spec]) -> str:
        return json.dumps(section, sort_keys=True)

    def get(self, section: Mapping[str, Spec]) -> Optional[float]:
        return self.results.get(self.key(section))

    def put(self, section: Mapping[str, Spec], value: float) -> None:
        self.results[self.key(section)] = value
        if self.path is not None:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.results, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)


def _evaluate_cached(
    section: Dict[str, Spec], evaluate: Callable[[Dict[str, Spec]], float], cache: EvaluationCache
) -> Tuple[float, int]:
    """``(metric of section, 1 if evaluate ran else 0)``: the cached value, else ``evaluate``'s (checked finite)."""
    value = cache.get(section)
    if value is not None:
        return value, 0
    value = float(evaluate(dict(section)))
    if not math.isfinite(value):
        raise ValueError(f"evaluate returned {value} for tables section {json.dumps(section)}")
    cache.put(section, value)
    return value, 1


def measure_losses(
    tables: Sequence[TableInfo],
    candidates: Mapping[str, Sequence[Spec]],
    evaluate: Callable[[Dict[str, Spec]], float],
    *,
    baseline: Optional[Mapping[str, Spec]] = None,
    higher_is_better: bool = True,
    cache: Optional[EvaluationCache] = None,
) -> Tuple[Dict[str, List[float]], int]:
    """Measured loss of every candidate: the metric drop when only that table changes from the baseline.

    ``evaluate(section)`` trains and validates a model whose ``tables:`` section is ``section`` (keyed by feature)
    and returns the validation metric. It runs once for the baseline and once per candidate that differs from it
    (fewer when ``cache`` already holds results). Losses add up across tables in the knapsack: an approximation
    that ignores interactions between tables' choices.

    Args:
        tables (Sequence[TableInfo]): the tables.
        candidates (Mapping[str, Sequence[Spec]]): per table name, the specs to measure.
        evaluate (Callable[[Dict[str, Spec]], float]): section -> validation metric.
        baseline (Optional[Mapping[str, Spec]]): per table name, its baseline spec (default ``{type: stock}``).
        higher_is_better (bool): the metric's direction (AUC, nDCG: True; logloss: False).
        cache (Optional[EvaluationCache]): reuse and record results.

    Returns:
        Tuple[Dict[str, List[float]], int]: losses aligned with ``candidates``, and the number of ``evaluate`` calls.

    Raises:
        ValueError: unknown table names, or ``evaluate`` returning a non-finite value (naming the section).
    """
    _check_tables(tables)
    names = {t.name for t in tables}
    unknown = sorted((set(candidates) | set(baseline or {})) - names)
    if unknown:
        raise ValueError(f"candidates / baseline name unknown tables {unknown} (tables: {sorted(names)})")
    base = {t.name: dict((baseline or {}).get(t.name, {"type": "stock"})) for t in tables}
    cache = cache if cache is not None else EvaluationCache()
    calls = 0

    def run(specs: Mapping[str, Spec]) -> float:
        nonlocal calls
        value, new = _evaluate_cached(_section(tables, specs), evaluate, cache)
        calls += new
        return value

    reference = run(base)
    sign = 1.0 if higher_is_better else -1.0
    losses: Dict[str, List[float]] = {}
    for t in tables:
        row = []
        for spec in candidates.get(t.name, ()):
            value = reference if spec == base[t.name] else run({**base, t.name: dict(spec)})
            row.append(sign * (reference - value))
        losses[t.name] = row
    return losses, calls


def propose_measured(
    tables: Sequence[TableInfo],
    budget: Union[int, float, str],
    evaluate: Callable[[Dict[str, Spec]], float],
    *,
    baseline: Optional[Mapping[str, Spec]] = None,
    higher_is_better: bool = True,
    cache: Union[None, str, EvaluationCache] = None,
    methods: Sequence[str] = METHODS,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    dims: Optional[Mapping[str, Sequence[int]]] = None,
    narrow: bool = True,
    extra: Optional[Mapping[str, Sequence[Spec]]] = None,
    projection_bytes: Callable[[int, int], int] = fp32_projection_bytes,
    max_states: int = 2_000_000,
    verify: int = 3,
) -> Allocation:
    """The measured proposal: the knapsack over losses from ``measure_losses`` (short training runs on the
    validation split, one table varied at a time from ``baseline``), then checked jointly.

    The knapsack adds up per-table losses, which ignores how tables' choices interact. So the proposal is trained
    once as a whole beside the ``verify`` uniform allocations (one spec for every table, within the budget) of least
    predicted loss, and the best of them by the measured metric is returned (``verified`` holds every contender's
    value): the proposal is never worse, on the allocator's own validation runs, than those uniform choices.

    Options that cannot fit beside the other tables' cheapest options are dropped before measuring, so the search
    costs ``1 + sum_t (feasible options of t that differ from its baseline)`` runs plus at most ``1 + verify``;
    restrict ``methods``, ``ratios`` and ``dims`` to what a sweep can afford. ``cache`` (an ``EvaluationCache`` or a
    JSON path) makes reruns free.

    Args: as ``propose`` and ``measure_losses``; ``verify``: uniform contenders trained jointly (0: the knapsack's
    proposal as it is, without the joint run).

    Returns:
        Allocation: with ``evaluations`` = new ``evaluate`` calls; ``total_bytes`` never exceeds the budget.

    Raises:
        ValueError: as ``propose``, and as ``measure_losses``.
    """
    _check_tables(tables)
    options, stock = _options(tables, methods, ratios, dims, extra, projection_bytes, narrow)
    budget_bytes = parse_budget(budget, stock)
    _check_budget(tables, options, budget_bytes)
    mins = {t.name: min(b for _, b, _ in options[t.name]) for t in tables}
    floor = sum(mins.values())
    # an option that cannot fit beside the other tables' cheapest ones is never chosen: do not measure it
    options = {n: [o for o in opts if o[1] + floor - mins[n] <= budget_bytes] for n, opts in options.items()}
    store = cache if isinstance(cache, EvaluationCache) else EvaluationCache(cache)
    candidates = {n: [spec for spec, _, _ in opts] for n, opts in options.items()}
    losses, calls = measure_losses(
        tables, candidates, evaluate, baseline=baseline, higher_is_better=higher_is_better, cache=store
    )
    allocation = _finish(tables, options, losses, budget_bytes, stock, max_states, projection_bytes)
    if verify > 0:
        allocation, more = _verify(
            tables, options, losses, allocation, evaluate, store, verify, higher_is_better, projection_bytes
        )
        calls += more
    allocation.evaluations = calls
    return allocation


def _verify(
    tables: Sequence[TableInfo],
    options: Mapping[str, List[Tuple[Spec, int, MemoryReport]]],
    losses: Mapping[str, Sequence[float]],
    proposal: Allocation,
    evaluate: Callable[[Dict[str, Spec]], float],
    cache: EvaluationCache,
    count: int,
    higher_is_better: bool,
    projection_bytes: Callable[[int, int], int],
) -> Tuple[Allocation, int]:
    """The best by one joint run each of ``proposal`` and the ``count`` uniform allocations of least predicted loss."""
    uniform = []
    for spec, _, _ in options[tables[0].name]:
        idx = [next((i for i, o in enumerate(options[t.name]) if o[0] == spec), None) for t in tables]
        if any(i is None for i in idx):
            continue
        if all(options[t.name][i][0] == proposal.specs[t.name] for t, i in zip(tables, idx)):
            continue  # the proposal itself
        predicted = sum(losses[t.name][i] for t, i in zip(tables, idx))
        uniform.append((predicted, json.dumps(spec, sort_keys=True), idx))
    contenders: List[Tuple[str, Allocation]] = [("knapsack", proposal)]
    for _, label, idx in sorted(uniform):
        if len(contenders) > count:
            break
        candidate = _allocation(
            tables, options, losses, idx, proposal.budget_bytes, proposal.stock_bytes, projection_bytes
        )
        if candidate is not None:
            contenders.append((f"uniform {label}", candidate))
    calls = 0
    measured: Dict[str, float] = {}
    for label, candidate in contenders:
        measured[label], new = _evaluate_cached(candidate.tables, evaluate, cache)
        calls += new
    sign = 1.0 if higher_is_better else -1.0
    _, best = max(contenders, key=lambda c: sign * measured[c[0]])  # ties: the knapsack (first)
    best.verified = measured
    best.exact = proposal.exact
    return best, calls
