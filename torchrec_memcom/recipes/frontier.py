# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The quality-vs-bytes frontier (issue 8): every configuration is a packaged recipe preset plus overrides, run by
``recipes.sweep`` at world size 1, so the numbers are what a user gets from the recipes.

Per protocol (``PROTOCOLS``: ``ctr`` = DLRM on MovieLens-1M CTR, ``ranking`` = two-tower on MovieLens-1M
leave-one-out, ``planted`` = DLRM on SYNTHETIC large-vocabulary data):

- **Byte points** ``B(t)``: the bytes of stock tables of width ``t`` (``stock_dims``).
- **Lines** (one curve per method on the plot): ``stock`` (every table at the model width ``d = t``); ``lowrank``
  (stock stored ``t`` wide with a learned ``t x d0`` projection in a ``d0``-wide model); ``hash``, ``qr``, ``memcom``,
  ``lma`` at model width ``d`` in ``comp_dims`` on the ``large`` features with ratio ``d / t`` for each byte point
  ``t`` in ``comp_targets`` (ratio >= 2); ``hash-narrow`` / ``memcom-narrow``: hashed tables stored ``b`` wide
  (``base_dim``) in a ``d0``-wide model; ``no-id``: every table one shared row (no id information at all: the
  floor that "lift" is measured from). Points a method cannot reach are listed with the reason.
- **Tuning** (the same budget for every line): the learning-rate grid (sparse x dense) at one representative point
  of the line, seed 0, chosen by the early-stopped VALIDATION metric; reused at every point of the line.
- **Training length**: early stopping on the validation metric (``train.early_stopping``), up to ``max_epochs``.
- **Seeds**: every point runs seed 0; per line and byte point the best point by validation gets ``seeds - 1`` more.
- **Allocator** (``allocator=True``): at the byte point ``alloc_target``, the model-based and the measured proposals
  (``recipes.allocate``) for the ``large`` tables of a ``d0``-wide model are tuned like a line and run with every
  seed, beside the best uniform point (by validation) at the same budget.

The runs of dependent stages start as soon as their inputs finish (``Pool.submit(..., then=...)``).
"""

import json
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torchrec_memcom.recipes.sweep import Pool, Record, Run

__all__ = ["PROTOCOLS", "Point", "Protocol", "Study", "protocol"]

Spec = Dict[str, Any]
METHOD_SETTINGS: Dict[str, Spec] = {
    "memcom": {"entity_weight_lr_scale": 10},  # 10x the table's lr won MEmCom's tuning on both protocols (issue 8)
    "lma": {"memory_group": "large"},  # one memory, as the presets; default signature bytes (4, or 2 at one chunk)
}
"""Method fields added to every spec of the method (they do not change its bytes, except LMA's signatures)."""


@dataclass(frozen=True)
class Protocol:
    """One task of the study and its grid (see the module docstring)."""

    name: str
    recipe: str
    config: str
    metric: str
    label: str
    large: Tuple[str, ...]
    base: Tuple[str, ...]
    sparse_lrs: Tuple[float, ...]
    dense_lrs: Tuple[float, ...]
    stock_dims: Tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    comp_dims: Tuple[int, ...] = (16, 32, 64, 128)
    comp_targets: Tuple[int, ...] = (4, 8, 16)
    methods: Tuple[str, ...] = ("hash", "qr", "memcom", "lma")
    d0: int = 64
    lowrank_targets: Tuple[int, ...] = (4, 8, 16, 32)
    narrow: Tuple[Tuple[str, int], ...] = (("hash", 16), ("memcom", 16))
    rep_dim: int = 64
    rep_target: int = 8
    alloc_target: int = 8
    alloc_methods: Tuple[str, ...] = ("stock", "hash", "qr", "memcom")
    alloc_ratios: Tuple[int, ...] = (8, 16)  # at the byte point 8 of a 64-wide model: 1/8 of its stock bytes
    alloc_dims: Tuple[int, ...] = (64, 16, 8)  # 8: narrow stock at the byte point (lowrank-b8 won it uniformly)
    alloc_lma_ratios: Tuple[int, ...] = (8, 16)
    synthetic: bool = False
    all_features: bool = False  # compress every feature (``_default``) instead of ``large`` ones

    def model(self, d: int) -> List[str]:
        """Overrides of a ``d``-wide model (DLRM's bottom MLP must end at ``d``)."""
        if self.recipe == "dlrm":
            return [f"model.embedding_dim={d}", f"model.dense_arch_layer_sizes=[64, {d}]"]
        return [f"model.embedding_dim={d}"]

    def tables(self, spec: Optional[Spec]) -> Dict[str, Spec]:
        """The ``tables:`` section that gives the compressed features ``spec`` (``None``: all stock)."""
        if spec is None:
            return {}
        spec = {**spec, **METHOD_SETTINGS.get(spec["type"], {})}
        return {"_default": spec} if self.all_features else {f: dict(spec) for f in self.large}


PROTOCOLS: Dict[str, Protocol] = {
    "ctr": Protocol(
        name="ctr",
        recipe="dlrm",
        config="ml1m_stock",
        metric="auc",
        label="ML-1M CTR with DLRM",
        large=("user", "movie", "zip"),
        # batch 4096 (the presets: 2 x 512): GPU steps of these tiny models are overhead, so 4x fewer steps; the
        # learning-rate grid covers the larger batch (Adagrad; the grid's x3 is the sqrt(4) scaling and more)
        base=("train.batch_size=4096", "eval.batch_size=16384", "train.log_every_steps=1000"),
        sparse_lrs=(0.05, 0.15),
        dense_lrs=(0.05, 0.15),
    ),
    "ranking": Protocol(
        name="ranking",
        recipe="two_tower",
        config="ml1m_stock",
        metric="ndcg@10",
        label="ML-1M ranking with the two-tower model",
        large=("user", "movie", "zip"),
        # batch 8192 (the presets: 2 x 2048): more in-batch negatives and 4x fewer steps
        base=("train.batch_size=8192", "eval.user_batch_size=2048", "train.log_every_steps=1000"),
        sparse_lrs=(0.05, 0.15),
        dense_lrs=(0.001, 0.003),
    ),
    "planted": Protocol(
        name="planted",
        recipe="dlrm",
        config="planted_stock",
        metric="auc",
        label="SYNTHETIC large vocabulary (planted rank-32 click model)",
        large=(),
        all_features=True,
        # the preset's 21M ids and rank-32 model; 2M training rows per epoch (not 20M) to fit the sweep's budget
        base=(
            "data.train_rows=2000000",
            "data.eval_rows=200000",
            "train.batch_size=8192",
            "eval.batch_size=65536",
            "train.log_every_steps=1000",
        ),
        sparse_lrs=(0.05,),
        dense_lrs=(0.05,),
        stock_dims=(4, 8, 16, 32),
        comp_dims=(32,),
        comp_targets=(1, 2, 4, 8, 16),
        d0=32,
        lowrank_targets=(),
        narrow=(),
        rep_dim=32,
        rep_target=4,
        alloc_target=4,
        synthetic=True,
    ),
}


def protocol(name: str, **changes: Any) -> Protocol:
    """A protocol of ``PROTOCOLS`` with fields replaced (e.g. a smaller grid for a CPU run)."""
    import dataclasses

    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r} (choose from {sorted(PROTOCOLS)})")
    return dataclasses.replace(PROTOCOLS[name], **changes)


@dataclass(frozen=True)
class Point:
    """One configuration: a line's model width ``d``, table ``spec`` of the compressed features (``None``: all stock)
    and the byte point ``target`` it stands for."""

    line: str
    d: int
    target: int
    spec: Optional[Spec] = None

    @property
    def label(self) -> str:
        s = self.spec or {}
        parts = [self.line, f"d{self.d}"]
        if "base_dim" in s:
            parts.append(f"b{s['base_dim']}")
        if "compression" in s:
            parts.append(f"r{s['compression']:g}")
        return "-".join(parts)

    def describe(self) -> str:
        s = {k: v for k, v in (self.spec or {}).items() if k != "type"}
        return f"{self.line} d={self.d}" + (f" {json.dumps(s)}" if s else "")


def points(p: Protocol) -> Dict[str, List[Point]]:
    """Every line's points (before the feasibility check)."""
    out: Dict[str, List[Point]] = {"stock": [Point("stock", t, t) for t in p.stock_dims]}
    if p.lowrank_targets:
        out["lowrank"] = [Point("lowrank", p.d0, t, {"type": "lowrank", "base_dim": t}) for t in p.lowrank_targets]
    for m in p.methods:
        out[m] = [
            Point(m, d, t, {"type": m, "compression": d // t})
            for d in p.comp_dims
            for t in p.comp_targets
            if d % t == 0 and d // t >= 2
        ]
    for m, b in p.narrow:
        line = f"{m}-narrow"
        ts = [t for t in p.comp_targets if 2 * t <= b]
        out.setdefault(line, []).extend(
            Point(line, p.d0, t, {"type": m, "base_dim": b, "compression": p.d0 // t}) for t in ts
        )
    out["no-id"] = [Point("no-id", 16, 0, {"type": "hash", "num_shared_rows": 1, "num_buckets": 1})]
    return out


TUNED_BY = {"hash-narrow": "hash", "memcom-narrow": "memcom", "no-id": "stock"}
"""Lines that reuse another line's tuned learning rates (the same method)."""


@dataclass
class Study:
    """Builds and schedules one protocol's runs on a ``Pool``; ``summary()`` gives the plan's decisions.

    Args:
        p (Protocol): the protocol and its grid.
        seeds (int): seeds of the selected points (seed 0 runs everywhere).
        max_epochs (int): epochs early stopping may use.
        patience (int): early stopping's patience (evaluations at epoch ends).
        data_path (Optional[str]): ``data.path`` (e.g. a ``MovieLens1M.save_npz`` file).
        extra (Sequence[str]): overrides applied to every run after the protocol's (e.g. ``train.max_steps=4``).
        allocator (bool): add the allocator comparison.
    """

    p: Protocol
    seeds: int = 3
    max_epochs: int = 8
    patience: int = 2
    data_path: Optional[str] = None
    extra: Sequence[str] = ()
    allocator: bool = True
    tuned: Dict[str, Dict[str, float]] = field(default_factory=dict)
    infeasible: List[Dict[str, Any]] = field(default_factory=list)
    selected: Dict[str, Dict[int, str]] = field(default_factory=dict)
    proposals: Dict[str, Any] = field(default_factory=dict)
    uniform_at_budget: Optional[str] = None
    _lines: Dict[str, List[Point]] = field(default_factory=dict)
    _pending_lines: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self._lines = {}
        for line, pts in points(self.p).items():
            ok = []
            for pt in pts:
                problem = self._check(pt)
                if problem:
                    self.infeasible.append({"line": line, "point": pt.describe(), "target": pt.target, "why": problem})
                else:
                    ok.append(pt)
            if ok:
                self._lines[line] = ok

    # -- runs ---------------------------------------------------------------------------------------------------------

    def _common(self) -> List[str]:
        p = self.p
        stop = f"{{metric: {p.metric}, patience: {self.patience}}}"
        common = [*p.base, f"train.epochs={self.max_epochs}", f"train.early_stopping={stop}", "eval.split=val"]
        common += ["eval.final_split=test", "checkpoint.dir=null"]
        if self.data_path:
            common.append(f"data.path={self.data_path}")
        return common

    def overrides(
        self, pt: Point, seed: int, lr: Tuple[float, float], tables: Optional[Dict[str, Spec]] = None
    ) -> Tuple[str, ...]:
        p = self.p
        section = tables if tables is not None else self.p.tables(pt.spec)
        sets = [*self._common(), *p.model(pt.d), f"tables={json.dumps(section)}", f"train.seed={seed}"]
        sets += [f"optimizer.sparse.lr={lr[0]}", f"optimizer.dense.lr={lr[1]}", *self.extra]
        return tuple(sets)

    def run(self, pt: Point, seed: int, lr: Tuple[float, float], phase: str) -> Run:
        name = f"{self.p.name}-{pt.label}-s{seed}-lr{lr[0]:g}x{lr[1]:g}"
        tags = {
            "protocol": self.p.name,
            "line": pt.line,
            "d": pt.d,
            "target": pt.target,
            "spec": pt.spec,
            "point": pt.label,
            "seed": seed,
            "sparse_lr": lr[0],
            "dense_lr": lr[1],
            "phase": phase,
        }
        return Run(name, self.p.recipe, self.p.config, self.overrides(pt, seed, lr), tags)

    def _check(self, pt: Point) -> Optional[str]:
        """Why ``pt`` cannot be built (e.g. MEmCom at a ratio >= d, QR beyond its reach), or ``None``."""
        if pt.spec is None:
            return None
        from torchrec_memcom.tables import table_config

        sizes = self._sizes()
        feats = list(sizes) if self.p.all_features else list(self.p.large)
        spec = {k: v for k, v in {**pt.spec, **METHOD_SETTINGS.get(pt.spec["type"], {})}.items() if k != "memory_group"}
        try:
            for f in feats:
                table_config(f"t_{f}", [f], sizes[f], pt.d, spec)
        except ValueError as e:
            return str(e)
        return None

    def _sizes(self) -> Dict[str, int]:
        from torchrec_memcom.recipes.schemas import load_recipe_config

        if not hasattr(self, "_sizes_cache"):
            cfg = load_recipe_config(self.p.config, self._common(), recipe=self.p.recipe)
            self._sizes_cache = cfg.data.table_sizes()
        return self._sizes_cache

    def lr_grid(self) -> List[Tuple[float, float]]:
        return [(s, d) for s in self.p.sparse_lrs for d in self.p.dense_lrs]

    def rep_point(self, line: str) -> Point:
        """The line's tuning point: the one nearest ``rep_dim`` / ``rep_target``."""
        pts = self._lines[line]
        return min(
            pts,
            key=lambda q: (abs(math.log2(q.d / self.p.rep_dim)), abs(math.log2(max(q.target, 1) / self.p.rep_target))),
        )

    # -- scheduling ---------------------------------------------------------------------------------------------------

    def schedule(self, pool: Pool) -> None:
        """Submits the tuning runs; the callbacks submit the rest as their inputs finish."""
        tuned_lines = [line for line in self._lines if line not in TUNED_BY]
        self._pending_lines = set(self._lines)
        for line in tuned_lines:
            rep = self.rep_point(line)
            runs = [self.run(rep, 0, lr, "tune") for lr in self.lr_grid()]
            pool.submit(runs, then=partial(self._on_tuned, pool, line))

    def _value(self, record: Record) -> float:
        """The early-stopped validation metric of a run (-inf for a failed run)."""
        if record.status != "ok":
            return -math.inf
        es = record.result.get("early_stopping") or {}
        v = es.get("best_value")
        if v is None:
            evals = [e for e in record.result.get("evals") or [] if e.get("split") == "val"]
            v = evals[-1].get(self.p.metric) if evals else None
        return float(v) if v is not None and math.isfinite(v) else -math.inf

    def _on_tuned(self, pool: Pool, line: str, records: List[Record]) -> None:
        best = max(records, key=self._value)
        lr = (best.run.tags["sparse_lr"], best.run.tags["dense_lr"])
        self.tuned[line] = {
            "sparse_lr": lr[0],
            "dense_lr": lr[1],
            "trials": {r.run.name: self._value(r) for r in records},
        }
        for dep in [line, *[d for d, src in TUNED_BY.items() if src == line and d in self._lines]]:
            if dep != line:
                self.tuned[dep] = {"sparse_lr": lr[0], "dense_lr": lr[1], "from": line}
            runs = [self.run(pt, 0, lr, "frontier") for pt in self._lines[dep]]
            pool.submit(runs, then=partial(self._on_seed0, pool, dep, lr))
        if line == "stock" and self.allocator:
            self._allocate(pool, lr)

    def _on_seed0(self, pool: Pool, line: str, lr: Tuple[float, float], records: List[Record]) -> None:
        by_target: Dict[int, List[Record]] = {}
        for r in records:
            by_target.setdefault(r.run.tags["target"], []).append(r)
        self.selected[line] = {}
        more = []
        for target, recs in sorted(by_target.items()):
            best = max(recs, key=self._value)
            if self._value(best) == -math.inf:
                continue
            self.selected[line][target] = best.run.tags["point"]
            pt = next(q for q in self._lines[line] if q.label == best.run.tags["point"])
            more += [self.run(pt, s, lr, "seeds") for s in range(1, self.seeds)]
        self._pending_lines.discard(line)
        pool.submit(more)
        if not self._pending_lines and self.allocator:
            self._uniform_at_budget(pool)

    # -- allocator ----------------------------------------------------------------------------------------------------

    def _alloc_setup(self) -> Any:
        from torchrec_memcom.recipes.allocate import ProposalSetup

        p = self.p
        return ProposalSetup(
            p.recipe,
            p.config,
            [*self._common(), *p.model(p.d0)],
            budget=self.alloc_budget(),
            features=list(self._sizes()) if p.all_features else list(p.large),
            methods=p.alloc_methods,
            ratios=p.alloc_ratios,
            dims=p.alloc_dims,
            lma_ratios=p.alloc_lma_ratios,
        )

    def alloc_budget(self) -> int:
        """Bytes of the allocator's byte point: the largest uniform point of ``alloc_target`` (so each of them fits)."""
        if not hasattr(self, "_budget"):
            sizes = self._sizes()
            nominal = sum(sizes.values()) * self.p.alloc_target * 4
            at = [
                self.point_bytes(pt) for pts in self._lines.values() for pt in pts if pt.target == self.p.alloc_target
            ]
            self._budget = max([nominal, *at])
        return self._budget

    def point_bytes(self, pt: Point, tables: Optional[Dict[str, Spec]] = None) -> int:
        """Embedding bytes of a point (its tables built on ``meta``; the memory report the recipes print)."""
        from torchrec_memcom.modules import CompressedEmbeddingBagCollection
        from torchrec_memcom.recipes.training import build_tables

        sizes = self._sizes()
        section = tables if tables is not None else self.p.tables(pt.spec)
        built = build_tables(list(sizes), sizes, pt.d, section)
        return CompressedEmbeddingBagCollection(built, device="meta").memory_report().total_bytes

    def _allocate(self, pool: Pool, lr: Tuple[float, float]) -> None:
        from torchrec_memcom.recipes.allocate import measured_runs, propose_for_recipe, with_method_settings

        setup = self._alloc_setup()
        self.proposals["budget_bytes"] = setup.budget_bytes
        settings = {k: v for k, v in METHOD_SETTINGS.items() if k != "lma"}  # the allocator sizes LMA's signatures
        model = propose_for_recipe(setup)
        self._propose_line(pool, "alloc-model", with_method_settings(model.tables, settings), model.to_dict())
        # after the extra overrides: a short fixed-length run, validated on val (no early stopping)
        short = [*self.extra, "train.early_stopping=null", "train.epochs=2", "eval.final_split=val"]
        short += [f"optimizer.sparse.lr={lr[0]}", f"optimizer.dense.lr={lr[1]}"]
        results: Dict[str, float] = {}

        def stage(name: str, then: Callable[[], None]) -> None:
            """Submits the measured runs still needed (``measured_runs``' stages), then calls ``then``."""
            known = results if name == "verify" else None
            runs, names = measured_runs(setup, short, settings, f"{self.p.name}-{name}", known)

            def done(records: List[Record]) -> None:
                values = {r.run.name: r.result["final"][self.p.metric] for r in records if r.status == "ok"}
                missing = [n for n in names.values() if n not in values]
                if missing:
                    error = f"{len(missing)} measured runs failed, e.g. {missing[0]}"
                    self.proposals["alloc-measured"] = {"error": error}
                    return
                results.update({key: values[n] for key, n in names.items()})
                then()

            pool.submit(runs, then=done)

        def propose_line() -> None:
            alloc = propose_for_recipe(setup, results)
            self._propose_line(pool, "alloc-measured", with_method_settings(alloc.tables, settings), alloc.to_dict())

        stage("measure", lambda: stage("verify", propose_line))

    def _propose_line(self, pool: Pool, line: str, tables: Dict[str, Spec], info: Dict[str, Any]) -> None:
        pt = Point(line, self.p.d0, self.p.alloc_target, {"type": line})
        bytes_ = self.point_bytes(pt, tables)
        self.proposals[line] = {**info, "tables": tables, "embedding_bytes": bytes_}

        def run(seed: int, lr: Tuple[float, float], phase: str) -> Run:
            r = self.run(pt, seed, lr, phase)
            sets = self.overrides(pt, seed, lr, tables)
            return Run(r.name, r.recipe, r.config, sets, {**r.tags, "spec": tables})

        def tuned(records: List[Record]) -> None:
            best = max(records, key=self._value)
            lr = (best.run.tags["sparse_lr"], best.run.tags["dense_lr"])
            self.tuned[line] = {
                "sparse_lr": lr[0],
                "dense_lr": lr[1],
                "trials": {r.run.name: self._value(r) for r in records},
            }
            pool.submit([run(s, lr, "seeds") for s in range(1, self.seeds)])

        pool.submit([run(0, lr, "tune") for lr in self.lr_grid()], then=tuned)

    def _uniform_at_budget(self, pool: Pool) -> None:
        """The best uniform point (by validation, seed 0) within the allocator's budget gets every seed."""
        budget = self.alloc_budget()
        best: Optional[Tuple[float, Record]] = None
        for r in pool.records.values():
            tags = r.run.tags
            line = tags.get("line", "")
            if tags.get("protocol") != self.p.name or tags.get("seed") != 0 or r.status != "ok":
                continue
            if line.startswith("alloc") or line == "no-id" or line not in self.tuned:
                continue
            tuned = self.tuned[line]
            if (tags["sparse_lr"], tags["dense_lr"]) != (tuned["sparse_lr"], tuned["dense_lr"]):
                continue  # a tuning trial at another learning rate (the chosen one is the line's seed-0 run)
            if r.result["embedding_bytes"] <= budget and (best is None or self._value(r) > best[0]):
                best = (self._value(r), r)
        if best is None:
            return
        r = best[1]
        self.uniform_at_budget = r.run.tags["point"]
        line = r.run.tags["line"]
        pt = next(q for q in self._lines[line] if q.label == r.run.tags["point"])
        lr = (r.run.tags["sparse_lr"], r.run.tags["dense_lr"])
        pool.submit([self.run(pt, s, lr, "seeds") for s in range(1, self.seeds)])

    def summary(self) -> Dict[str, Any]:
        """The plan's decisions for the report."""
        return {
            "protocol": self.p.name,
            "label": self.p.label,
            "metric": self.p.metric,
            "recipe": self.p.recipe,
            "config": self.p.config,
            "synthetic": self.p.synthetic,
            "common_overrides": self._common(),
            "extra_overrides": list(self.extra),
            "table_sizes": self._sizes(),
            "large": list(self.p.large) or ["every table"],
            "lr_grid": self.lr_grid(),
            "seeds": self.seeds,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "lines": {k: [pt.label for pt in v] for k, v in self._lines.items()},
            "infeasible": self.infeasible,
            "tuned": self.tuned,
            "selected": self.selected,
            "stock_dims": list(self.p.stock_dims),
            "byte_points": {
                t: sum(self._sizes().values()) * t * 4 for t in sorted({*self.p.stock_dims, *self.p.comp_targets})
            },
            "allocator": {**self.proposals, "uniform_at_budget": self.uniform_at_budget} if self.allocator else None,
            "alloc_budget": self.alloc_budget() if self.allocator else None,
        }
