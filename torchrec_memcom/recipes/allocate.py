# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A ``tables:`` section for a byte budget, from a recipe config and its training data (``torchrec_memcom.allocator``).

    python -m torchrec_memcom.recipes.allocate --recipe dlrm --config ml1m_stock --budget 16x \\
        --features user,movie,zip --out tables.yaml
    python -m torchrec_memcom.recipes.dlrm --config ml1m_stock --tables tables.yaml      # train the proposal

The budget covers the whole embedding layer; the ``--features`` tables are allocated (default: every feature with
at least ``--min-rows`` ids), the others keep the config's spec and their bytes count against the budget. Two ways:

- ``propose`` (default): ``allocator.propose`` with the ``FrequencyModel`` and id counts from the first
  ``--sample-rows`` training rows (``id_counts``): no training.
- ``--measured``: ``allocator.propose_measured``: one short run per candidate option (``--measure-set`` overrides,
  e.g. one epoch; the validation split as ``eval.final_split``), varied one table at a time from all-stock, then one
  joint run each of the knapsack's proposal and the best uniform allocations (the best by validation is written),
  run in parallel by ``recipes.sweep`` (``--workers``) and cached in ``--work-dir``.

The output YAML is ``{tables: {...}}``: the recipes take it with ``--tables FILE`` (or paste the mapping into a
config). Method settings that do not change bytes (``--method-set memcom.entity_weight_lr_scale=10``) are added to
every spec of that method, in the measured runs too.
"""

import argparse
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

from torchrec_memcom.allocator import Allocation, EvaluationCache, TableInfo, propose, propose_measured
from torchrec_memcom.modules import CompressedEmbeddingBagCollection
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.schemas import load_recipe_config
from torchrec_memcom.recipes.sweep import Pool, Run
from torchrec_memcom.recipes.training import DistContext, build_tables

__all__ = [
    "ProposalSetup",
    "fixed_bytes",
    "id_counts",
    "measured_runs",
    "propose_for_recipe",
    "table_infos",
    "with_method_settings",
    "write_tables_yaml",
]

Spec = Dict[str, Any]


def id_counts(recipe: str, cfg: Any, features: Sequence[str], sample_rows: int) -> Dict[str, np.ndarray]:
    """Occurrences of every id of ``features`` in the first ``sample_rows`` training rows (the recipe's own training
    batches, seed ``train.seed``): per feature a bincount of length ``num_embeddings``."""
    from torchrec_memcom.recipes.sweep import _task

    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    task = _task(recipe)(cfg, ctx)
    sizes = cfg.data.table_sizes()
    counts = {f: np.zeros(sizes[f], dtype=np.int64) for f in features}
    rows = 0
    for batch in task.train_data():
        kjt = batch.sparse_features
        for f in features:
            ids = kjt[f].values().numpy()
            counts[f] += np.bincount(ids, minlength=sizes[f])[: sizes[f]]
        rows += int(batch.labels.shape[0])
        if rows >= sample_rows:
            break
    if rows == 0:
        raise ConfigError("data: the training split gave no rows to count ids on")
    return counts


def table_infos(recipe: str, cfg: Any, features: Sequence[str], sample_rows: int = 200_000) -> List[TableInfo]:
    """The allocator's view of ``features``' tables (``t_<feature>``, the recipe's table names) with id counts."""
    sizes = cfg.data.table_sizes()
    counts = id_counts(recipe, cfg, features, sample_rows)
    d = cfg.model.embedding_dim
    return [TableInfo(f"t_{f}", sizes[f], d, [f], counts=counts[f]) for f in features]


def fixed_bytes(cfg: Any, features: Sequence[str]) -> int:
    """Bytes of the tables of every feature not in ``features``, as the config specifies them (memory report)."""
    rest = [f for f in cfg.data.feature_names() if f not in features]
    if not rest:
        return 0
    tables = build_tables(rest, cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
    return CompressedEmbeddingBagCollection(tables, device="meta").memory_report().total_bytes


def with_method_settings(section: Mapping[str, Spec], settings: Mapping[str, Mapping[str, Any]]) -> Dict[str, Spec]:
    """``section`` with ``settings[method]`` added to every spec of that method (settings that keep the bytes)."""
    return {f: {**spec, **settings.get(spec.get("type", "stock"), {})} for f, spec in section.items()}


class ProposalSetup:
    """What a proposal for one recipe config needs: the tables, the budget left for them and the option grid.

    Args:
        recipe (str): ``dlrm`` or ``two_tower``.
        config (str): preset or YAML path.
        overrides (Sequence[str]): overrides of the config (data path, model dim, ...).
        budget (Any): bytes of the whole embedding layer, ``"<n> MiB"`` or ``"<r>x"`` (of the stock layer).
        features (Optional[Sequence[str]]): features to allocate (default: those with >= ``min_rows`` ids).
        min_rows (int): see ``features``.
        methods, ratios, dims: the allocator's option grid (``dims``: one list for every table, default the model
            dim and its halvings); ``lma_signature_bytes`` sizes the LMA options (default: the config's default).
    """

    def __init__(
        self,
        recipe: str,
        config: str,
        overrides: Sequence[str] = (),
        budget: Any = "16x",
        features: Optional[Sequence[str]] = None,
        min_rows: int = 1000,
        methods: Sequence[str] = ("stock", "hash", "qr", "memcom"),
        ratios: Sequence[float] = (4, 8, 16, 32),
        dims: Optional[Sequence[int]] = None,
        lma_ratios: Sequence[float] = (),
        lma_signature_bytes: Optional[int] = None,
    ) -> None:
        from torchrec_memcom.allocator import parse_budget

        self.recipe, self.config, self.overrides = recipe, config, list(overrides)
        self.cfg = load_recipe_config(config, self.overrides, recipe=recipe)
        sizes = self.cfg.data.table_sizes()
        self.features = list(features) if features else [f for f, n in sizes.items() if n >= min_rows]
        unknown = sorted(set(self.features) - set(sizes))
        if unknown:
            raise ConfigError(f"--features: unknown features {unknown} (the data has: {', '.join(sizes)})")
        d = self.cfg.model.embedding_dim
        stock = sum(n * d * 4 for n in sizes.values())
        self.stock_bytes = stock
        self.budget_bytes = parse_budget(budget, stock)
        self.fixed = fixed_bytes(self.cfg, self.features)
        self.table_budget = self.budget_bytes - self.fixed
        if self.table_budget <= 0:
            raise ConfigError(f"budget {self.budget_bytes:,} B is below the other tables' {self.fixed:,} B")
        self.methods, self.ratios = list(methods), list(ratios)
        self.dims = {f"t_{f}": list(dims) for f in self.features} if dims else None
        self.extra = {
            f"t_{f}": [
                {
                    "type": "lma",
                    "compression": r,
                    **({"signature_bytes": lma_signature_bytes} if lma_signature_bytes else {}),
                }
                for r in lma_ratios
            ]
            for f in self.features
        }
        self._infos: Optional[List[TableInfo]] = None

    def infos(self, sample_rows: int = 200_000) -> List[TableInfo]:
        if self._infos is None:
            self._infos = table_infos(self.recipe, self.cfg, self.features, sample_rows)
        return self._infos

    def grid(self) -> Dict[str, Any]:
        return {"methods": self.methods, "ratios": self.ratios, "dims": self.dims, "extra": self.extra}

    def section(self, allocated: Mapping[str, Spec]) -> Dict[str, Spec]:
        """The whole ``tables:`` section: the config's specs for the other features, ``allocated`` for the rest."""
        return {**{f: s for f, s in self.cfg.tables.items() if f not in self.features}, **allocated}


def measured_runs(
    setup: ProposalSetup,
    measure_overrides: Sequence[str],
    settings: Mapping[str, Mapping[str, Any]],
    prefix: str,
    measured: Optional[Mapping[str, float]] = None,
) -> Tuple[List[Run], Dict[str, str]]:
    """The short runs a measured proposal still needs, and the run name of each section (by ``EvaluationCache.key``).

    Two stages: without ``measured``, the one-table-at-a-time runs of ``measure_losses``; with their results, the
    joint runs of ``propose_measured``'s check (the knapsack's proposal and the best uniform allocations, which
    depend on those results). After both, ``propose_for_recipe`` trains nothing."""
    sections: List[Dict[str, Spec]] = []

    def record(section: Dict[str, Spec]) -> float:
        sections.append(section)
        return 0.0

    cache = EvaluationCache()
    cache.results = dict(measured or {})
    verify = {} if measured is not None else {"verify": 0}
    propose_measured(setup.infos(), setup.table_budget, record, cache=cache, **setup.grid(), **verify)
    runs, names = [], {}
    for i, section in enumerate(sections):
        tables = with_method_settings(setup.section(section), settings)
        name = f"{prefix}-{i:03d}"
        sets = (*setup.overrides, *measure_overrides, f"tables={json.dumps(tables)}")
        runs.append(Run(name, setup.recipe, setup.config, sets, {"phase": "allocator-measure"}))
        names[EvaluationCache.key(section)] = name
    return runs, names


def propose_for_recipe(
    setup: ProposalSetup,
    measured: Optional[Mapping[str, float]] = None,
    sample_rows: int = 200_000,
) -> Allocation:
    """The proposal: model-based (``propose``), or from ``measured`` validation metrics by ``EvaluationCache.key``
    (every section of ``measured_runs``; ``propose_measured`` then trains nothing)."""
    if measured is None:
        allocation = propose(setup.infos(sample_rows), setup.table_budget, **setup.grid())
    else:
        cache = EvaluationCache()
        cache.results = dict(measured)

        def missing(section: Dict[str, Spec]) -> float:
            raise KeyError(f"no measurement of tables section {json.dumps(section)}")

        infos = setup.infos(sample_rows)
        allocation = propose_measured(infos, setup.table_budget, missing, cache=cache, **setup.grid())
    allocation.tables = setup.section(allocation.tables)
    allocation.budget_bytes = setup.budget_bytes
    allocation.total_bytes += setup.fixed
    allocation.stock_bytes = setup.stock_bytes
    return allocation


def write_tables_yaml(tables: Mapping[str, Spec], path: str, comment: str = "") -> None:
    """Writes ``{tables: ...}`` as YAML (what ``--tables FILE`` reads)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for line in comment.splitlines():
            f.write(f"# {line}\n")
        yaml.safe_dump({"tables": {k: dict(v) for k, v in tables.items()}}, f, sort_keys=False)


def _settings(items: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for item in items:
        key, _, raw = item.partition("=")
        method, _, field = key.partition(".")
        if not raw or not field:
            raise ConfigError(f"--method-set {item!r}: expected method.field=value")
        out.setdefault(method, {})[field] = yaml.safe_load(raw)
    return out


def main(argv: Optional[Sequence[str]] = None) -> Allocation:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    p.add_argument("--recipe", choices=["dlrm", "two_tower"], default="dlrm")
    p.add_argument("--config", required=True, help="preset or YAML path")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--budget", required=True, help="bytes of the whole embedding layer: 400000, '2 MiB' or '16x'")
    p.add_argument("--features", default=None, help="features to allocate, comma-separated")
    p.add_argument("--min-rows", type=int, default=1000, help="default features: those with at least this many ids")
    p.add_argument("--methods", default="stock,hash,qr,memcom", help="allocator methods")
    p.add_argument("--ratios", default="4,8,16,32", help="compression ratios")
    p.add_argument("--dims", default=None, help="table widths to consider (default: d and its halvings)")
    p.add_argument("--lma-ratios", default="", help="LMA options at these ratios (4-byte signatures)")
    p.add_argument("--method-set", nargs="+", action="extend", default=[], metavar="METHOD.FIELD=VALUE")
    p.add_argument("--sample-rows", type=int, default=200_000, help="training rows to count ids on")
    p.add_argument("--measured", action="store_true", help="measure every option with a short run (propose_measured)")
    p.add_argument("--measure-set", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--work-dir", default="outputs/allocate", help="measured runs and their cache")
    p.add_argument("--workers", type=int, default=1, help="parallel measured runs")
    p.add_argument("--metric", default=None, help="validation metric of the measured runs (default auc / ndcg@10)")
    p.add_argument("--out", required=True, help="YAML file to write ({tables: ...})")
    args = p.parse_args(argv)
    floats = lambda s: [float(x) for x in s.split(",") if x]  # noqa: E731
    setup = ProposalSetup(
        args.recipe,
        args.config,
        args.set,
        args.budget,
        features=args.features.split(",") if args.features else None,
        min_rows=args.min_rows,
        methods=args.methods.split(","),
        ratios=floats(args.ratios),
        dims=[int(x) for x in args.dims.split(",")] if args.dims else None,
        lma_ratios=floats(args.lma_ratios),
    )
    settings = _settings(args.method_set)
    measured = None
    if args.measured:
        metric = args.metric or ("auc" if args.recipe == "dlrm" else "ndcg@10")
        short = ["eval.final_split=val", "train.early_stopping=null", *args.measure_set]
        measured = {}
        with Pool(args.work_dir, workers=args.workers) as pool:
            for stage in ("measure", "verify"):  # one table at a time, then the joint check of the proposal
                runs, names = measured_runs(setup, short, settings, stage, measured if stage == "verify" else None)
                pool.submit(runs)
                records = pool.join()
                failed = [records[n] for n in names.values() if records[n].status != "ok"]
                if failed:
                    raise SystemExit(
                        f"{len(failed)} measured runs failed, e.g. {failed[0].run.name}: {failed[0].error}"
                    )
                measured.update({key: float(records[name].result["final"][metric]) for key, name in names.items()})
    allocation = propose_for_recipe(setup, measured, args.sample_rows)
    tables = with_method_settings(allocation.tables, settings)
    how = "measured (propose_measured)" if args.measured else "model-based (propose, FrequencyModel)"
    comment = (
        f"{how} proposal for {args.recipe} --config {args.config} {' '.join(args.set)}\n"
        f"budget {allocation.budget_bytes:,} B, proposal {allocation.total_bytes:,} B"
    )
    write_tables_yaml(tables, args.out, comment)
    print(allocation)
    print(f"wrote {args.out}")
    return allocation


if __name__ == "__main__":
    main()
