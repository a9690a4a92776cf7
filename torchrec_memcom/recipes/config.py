# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Strict configs for the example recipes: dataclasses filled from YAML, with ``--set key.sub=value`` overrides.

``load_config(DLRMConfig, "ml1m_memcom.yaml", ["train.epochs=2"])`` reads the YAML, applies the overrides and builds
the dataclass tree. Unknown keys, missing required keys, values of the wrong type, non-finite numbers and values a
section rejects raise ``ConfigError`` naming the dotted key (``model.embedding_dim: expected int, got 'big'``); a key
given twice in one mapping (say a second ``train:`` section) raises naming the key and both lines.

The sections shared by every recipe live here (optimizers, training loop, evaluation, checkpoints, output, per-feature
table specs); a recipe's top-level config composes them with its own model section. Data sections are in
``torchrec_memcom.recipes.data``.
"""

import argparse
import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Type, TypeVar, Union

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

import yaml

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DenseOptimizerConfig",
    "EarlyStoppingConfig",
    "EvalConfig",
    "OptimizerConfig",
    "OutputConfig",
    "SparseOptimizerConfig",
    "TrainConfig",
    "apply_overrides",
    "recipe_arg_parser",
    "check_table_specs",
    "tables_override",
    "from_dict",
    "load_config",
    "read_yaml",
    "to_dict",
]

T = TypeVar("T")
ConfigSource = Union[str, os.PathLike, Traversable]
"""A YAML file: a path, or a file inside an installed package (``importlib.resources``)."""

MAX_LR = 1e3
"""Largest learning rate a config accepts: far above any sane value (TorchRec's Criteo DLRM runs SGD at 15), far
below the typos that make training diverge at once (``1e30`` for ``1e-3``)."""


class ConfigError(ValueError):
    """A config value is unknown, missing or invalid; the message starts with the dotted key."""


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def require(cond: bool, key: str, message: str) -> None:
    """Raises ``ConfigError(f"{key}: {message}")`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: {message}")


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        _check_finite(value, key)
        return value
    if isinstance(tp, type) and hasattr(tp, "from_config_dict"):  # tagged sections (e.g. data) pick their own class
        return tp.from_config_dict(value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key)
    if origin is Literal:
        require(value in args, key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, List, Sequence):
        require(isinstance(value, list), key, f"expected a list, got {value!r}")
        return [_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict, Mapping):
        require(isinstance(value, Mapping), key, f"expected a mapping, got {value!r}")
        for k in value:
            require(isinstance(k, str), key, f"keys must be strings, got {k!r}")
        return {k: _convert(args[1], v, _key(key, k)) for k, v in value.items()}
    if tp is bool:
        require(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-8 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected a number, got {value!r}"
        )
        require(math.isfinite(value), key, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        require(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported config type {tp}")


def _check_finite(value: Any, key: str) -> None:
    """Refuses inf / nan anywhere in a free-form value (table specs are ``Any`` to the schema)."""
    if isinstance(value, float):
        require(math.isfinite(value), key, f"must be a finite number, got {value!r}")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, _key(key, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def from_dict(cls: Type[T], data: Any, path: str = "") -> T:
    """Builds dataclass ``cls`` from a mapping, strictly: every key must be a field; fields without defaults are
    required; values are type-checked recursively; ``__post_init__`` checks values.

    Raises:
        ConfigError: naming the dotted key of the first problem found.
    """
    where = path or "<config>"
    require(isinstance(data, Mapping), where, f"expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    require(
        not unknown,
        _key(path, unknown[0]) if unknown else where,
        f"unknown key (allowed in {where}: {', '.join(sorted(fields))})",
    )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _key(path, name))
        else:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            require(not required, _key(path, name), "required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # from __post_init__: its keys are relative to this section
        if path:
            raise ConfigError(f"{path}.{e}") from None
        raise


def to_dict(config: Any) -> Dict[str, Any]:
    """JSON-ready dict of a config tree (tagged sections keep their ``name``)."""
    return dataclasses.asdict(config)


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Applies ``key.sub=value`` overrides (values parsed as YAML: ``2``, ``1.5``, ``null``, ``[64, 1]``, ``{a: 1}``).

    Missing intermediate sections are created; the schema then rejects keys it does not know.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {item!r}: empty key")
        node = data
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(keys[: i + 1])} is not a section")
            node = child
        try:
            node[keys[-1]] = yaml.load(raw, Loader=_StrictLoader)
        except ConfigError as e:
            raise ConfigError(f"override {item!r}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: {_yaml_problem(e)}") from None
    return data


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` merges are overridable by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"line {line}: duplicate key {key!r} (first given at line {seen[key]})")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def read_yaml(source: ConfigSource) -> Dict[str, Any]:
    """Parses a YAML config file into a dict, refusing duplicate keys.

    Raises:
        ConfigError: ``<file>: line <n>: duplicate key 'train' (first given at line <m>)``, a YAML syntax error with
            its line, or a top level that is not a mapping.
    """
    try:
        text = _read(source) if isinstance(source, (str, os.PathLike)) else source.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the config: {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader) or {}
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {_yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    return data


def _read(path: str | os.PathLike) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_config(cls: Type[T], source: ConfigSource, overrides: Sequence[str] = ()) -> T:
    """Reads a YAML config, applies ``overrides`` and validates it into ``cls``.

    Raises:
        ConfigError: unknown or missing keys, bad values, duplicate keys (the message names the key and the file).
    """
    data = read_yaml(source)
    try:
        return from_dict(cls, apply_overrides(data, overrides))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


# --- sections shared by the recipes ------------------------------------------------------------------------------


@dataclass
class SparseOptimizerConfig:
    """Fused (FBGEMM TBE) optimizer of every embedding table, applied inside backward.

    Attributes:
        name: ``exact_adagrad``, ``exact_rowwise_adagrad`` or ``exact_sgd`` (the ones TBE runs on CPU and GPU).
        lr: learning rate.
        eps: Adagrad epsilon (ignored by ``exact_sgd``).
    """

    name: Literal["exact_adagrad", "exact_rowwise_adagrad", "exact_sgd"] = "exact_adagrad"
    lr: float = 0.05
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _check_lr_eps(self.lr, self.eps)


@dataclass
class DenseOptimizerConfig:
    """``torch.optim`` optimizer of the dense layers (and of data-parallel tables).

    Attributes:
        name: ``adagrad``, ``sgd`` or ``adam``.
        lr: learning rate.
        eps: epsilon of Adagrad / Adam.
        weight_decay: L2 penalty.
    """

    name: Literal["adagrad", "sgd", "adam"] = "adagrad"
    lr: float = 0.05
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_lr_eps(self.lr, self.eps)
        require(0 <= self.weight_decay <= 1, "weight_decay", f"must be in [0, 1], got {self.weight_decay}")


def _check_lr_eps(lr: float, eps: float) -> None:
    require(0 < lr <= MAX_LR, "lr", f"must be in (0, {MAX_LR:g}], got {lr}")
    require(0 < eps <= 1, "eps", f"must be in (0, 1], got {eps}")


@dataclass
class OptimizerConfig:
    sparse: SparseOptimizerConfig = field(default_factory=SparseOptimizerConfig)
    dense: DenseOptimizerConfig = field(default_factory=DenseOptimizerConfig)


@dataclass
class EarlyStoppingConfig:
    """Training length by early stopping on the validation split (``train.epochs`` becomes the most epochs).

    The recipe evaluates ``eval.split`` at the end of every epoch (or every ``every_steps`` steps), keeps the best
    model state so far, stops after ``patience`` evaluations in a row that do not beat the best by more than
    ``min_delta``, restores the best state and only then evaluates ``eval.final_split``. ``results.json`` records the
    curve and the best step and epoch (``early_stopping``).

    Attributes:
        metric: a metric the recipe's evaluation reports (DLRM: ``auc``, ``logloss``; two-tower: ``ndcg@<k>``,
            ``recall@<k>``).
        patience: non-improving evaluations in a row before stopping.
        every_steps: evaluate every this many steps (``None``: at the end of every epoch).
        mode: ``max`` or ``min`` (``None``: ``min`` for ``logloss``, else ``max``).
        min_delta: an evaluation improves only if it beats the best by more than this.
        keep_best: where the best state is kept: ``memory`` (every rank copies its own shards to host memory; any
            world size) or ``checkpoint`` (a DCP checkpoint in ``<checkpoint.dir>/best``, for shards that do not fit
            host memory twice).
    """

    metric: str
    patience: int = 2
    every_steps: Optional[int] = None
    mode: Optional[Literal["max", "min"]] = None
    min_delta: float = 0.0
    keep_best: Literal["memory", "checkpoint"] = "memory"

    def __post_init__(self) -> None:
        require(bool(self.metric), "metric", "must name a metric, e.g. auc or ndcg@10")
        require(self.patience >= 1, "patience", f"must be >= 1, got {self.patience}")
        require(self.every_steps is None or self.every_steps >= 1, "every_steps", "must be >= 1 or null")
        require(self.min_delta >= 0, "min_delta", f"must be >= 0, got {self.min_delta}")

    @property
    def maximize(self) -> bool:
        return self.mode == "max" if self.mode is not None else self.metric != "logloss"


@dataclass
class TrainConfig:
    """The training loop.

    Attributes:
        batch_size: rows per rank per step (the global batch is ``batch_size * world_size``); the last short global
            batch of an epoch is dropped, so every rank runs the same steps on equal batches.
        epochs: passes over the training split (0: no training, evaluate the ``init_from`` conversion as it is).
        max_steps: stop after this many steps in all (``None``: run every epoch).
        log_every_steps: progress-bar / log cadence.
        lma_signature_rows: LMA tables fit their signatures on the first this-many training rows (every rank reads
            the same rows) before training.
        seed: seeds model init and the data order.
        init_from: a checkpoint (``<checkpoint.dir>/step_<N>``) of a run of the same recipe, data and model sizes
            with stock tables: this run starts from it, its tables converted to this run's by ``compress_``'s warm
            start (``torchrec_memcom.recipes.init_from``); ``None``: random init.
        early_stopping: stop on the validation metric and restore the best state (``None``: train every epoch).
        cuda_graph: train each step as one CUDA-graph replay (``torchrec_memcom.distributed.CudaGraphTrainStep``)
            instead of through ``TrainPipelineSparseDist``: one GPU (one rank; any sharding types, whose input dists
            are the identity there), batches of one shape with the same number of ids per feature (Criteo's one id
            per feature and row; data with multi-hot features, ML-1M's ``genres``, is refused at start); any dense
            optimizer (on CUDA ``adam`` is built ``capturable=True``, its step count on the GPU, with or without
            graphs). The step then costs the GPU's time only, with no Python per kernel (docs/PERFORMANCE.md).
        allow_tf32: float32 matmuls in TensorFloat-32 on CUDA (``training.enable_tf32``, TorchRec's DLRM example's
            ``--allow_tf32``): the dense layers several times faster, at TF32's precision; embeddings stay float32.
    """

    batch_size: int = 512
    epochs: int = 1
    max_steps: Optional[int] = None
    log_every_steps: int = 50
    lma_signature_rows: int = 200_000
    seed: int = 2026
    init_from: Optional[str] = None
    early_stopping: Optional[EarlyStoppingConfig] = None
    cuda_graph: bool = False
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        require(self.epochs >= 1 or self.init_from is not None, "epochs", "0 (evaluate only) needs train.init_from")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        require(self.log_every_steps >= 1, "log_every_steps", f"must be >= 1, got {self.log_every_steps}")
        require(self.lma_signature_rows >= 1, "lma_signature_rows", f"must be >= 1, got {self.lma_signature_rows}")


@dataclass
class EvalConfig:
    """Evaluation (AUC and logloss, gathered over all ranks).

    Attributes:
        batch_size: rows per rank per evaluation step.
        every_steps: evaluate on ``split`` every this many steps (``None``: only at the end).
        split: split of the periodic evaluations.
        final_split: split evaluated once after training (``None``: skip).
        max_batches: evaluate at most this many batches per rank (``None``: the whole split).
    """

    batch_size: int = 2048
    every_steps: Optional[int] = None
    split: Literal["val", "test"] = "val"
    final_split: Optional[Literal["val", "test"]] = "test"
    max_batches: Optional[int] = None

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.every_steps is None or self.every_steps >= 1, "every_steps", "must be >= 1 or null")
        require(self.max_batches is None or self.max_batches >= 1, "max_batches", "must be >= 1 or null")


@dataclass
class CheckpointConfig:
    """Distributed checkpoints (``torch.distributed.checkpoint``): model, optimizers, RNG, step and data position,
    committed atomically and verified on resume (``torchrec_memcom.recipes.checkpoint``, ``docs/RELIABILITY.md``).

    Attributes:
        dir: where ``step_<N>`` checkpoints go, on storage every node shares (``None``: no checkpoints; ``--resume``
            and resuming after a torchrun restart need one).
        every_steps: save every this many steps (``None``: only at the end if ``at_end``).
        at_end: save after the last step.
        keep: keep the newest this-many checkpoints (``None``: all).
    """

    dir: Optional[str] = None
    every_steps: Optional[int] = None
    at_end: bool = True
    keep: Optional[int] = 2

    def __post_init__(self) -> None:
        require(self.every_steps is None or self.every_steps >= 1, "every_steps", "must be >= 1 or null")
        require(self.keep is None or self.keep >= 1, "keep", "must be >= 1 or null")


@dataclass
class OutputConfig:
    """Where the run's JSON (metrics, memory, throughput, config) goes.

    Attributes:
        dir: output directory (created); the JSON is ``<dir>/<json_name>``.
        json_name: file name of the JSON.
        run_name: label printed in the summary line and stored in the JSON.
    """

    dir: str = "outputs/run"
    json_name: str = "results.json"
    run_name: str = "run"


def check_table_specs(
    specs: Mapping[str, Mapping[str, Any]], features: Sequence[str], embedding_dim: int, key: str = "tables"
) -> None:
    """Checks per-feature table specs (``tables.table_config`` specs keyed by feature, ``_default`` for the rest).

    Builds each config against a large probe table (2**20 ids) so that unknown types, unknown fields and values
    that fail for any table size are caught before any data is loaded; size-dependent checks happen at build time.

    Raises:
        ConfigError: naming ``tables.<feature>``.
    """
    from torchrec_memcom.tables import table_config

    for name, spec in specs.items():
        k = _key(key, name)
        require(name == "_default" or name in features, k, f"unknown feature (the data has: {', '.join(features)})")
        try:
            table_config(f"t_{name}", [name], 1 << 20, embedding_dim, spec)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{k}: {e}") from None


def tables_override(path: str) -> str:
    """The ``tables=<mapping>`` override of a ``--tables`` YAML file (``{tables: {...}}`` or the mapping itself).

    Raises:
        ConfigError: naming the file when it is unreadable or holds no mapping of feature specs.
    """
    data = read_yaml(path)
    if "tables" in data and set(data) != {"tables"}:
        raise ConfigError(f"{path}: --tables expects only a tables: mapping, got keys {sorted(data)}")
    tables = data.get("tables", data)
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{path}: tables: expected a mapping of feature specs, got {tables!r}")
    return "tables=" + json.dumps(tables)


def recipe_arg_parser(description: str, presets: Sequence[str]) -> argparse.ArgumentParser:
    """The recipes' command line: ``--config <preset or yaml>``, ``--set key.sub=value ...``, ``--tables``,
    ``--resume`` and ``--device``."""
    from torchrec_memcom.recipes.training import DEVICES  # training imports this module

    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--config",
        required=True,
        help=f"a packaged preset ({', '.join(presets)}) or the path of a recipe YAML",
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set train.epochs=2 tables.user.compression=32",
    )
    p.add_argument(
        "--tables",
        default=None,
        metavar="YAML",
        help="a YAML file whose tables: mapping replaces the config's tables section (e.g. an allocator proposal: "
        "python -m torchrec_memcom.recipes.allocate); --set overrides apply after it",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest good checkpoint in checkpoint.dir (start fresh if there is none); implied "
        "when torchrun restarts the workers (TORCHELASTIC_RESTART_COUNT > 0)",
    )
    p.add_argument(
        "--device",
        choices=list(DEVICES),
        default="auto",
        help="auto: a GPU per rank (NCCL) where CUDA is, else CPU (gloo); cpu: gloo on CPU even where CUDA is; "
        "cuda-shared: every rank of the host on GPU 0 with gloo between them, planned as one host's GPUs: a "
        "multi-GPU job's sharding and training checked on one GPU (its speed is not a multi-GPU machine's)",
    )
    return p
