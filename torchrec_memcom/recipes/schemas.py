# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Top-level config schemas of the example recipes, keyed by the ``recipe:`` line every example YAML starts with.

``load_recipe_config(path, overrides)`` reads that key and validates the file against ``RECIPE_CONFIGS[recipe]``; a
new recipe (e.g. the two-tower example) adds its schema to ``RECIPE_CONFIGS``.
"""

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Sequence, Type

import yaml

from torchrec_memcom.recipes.config import (
    CheckpointConfig,
    ConfigError,
    EvalConfig,
    OptimizerConfig,
    OutputConfig,
    TrainConfig,
    check_table_specs,
    load_config,
    require,
)
from torchrec_memcom.recipes.data import DataConfig

__all__ = ["RECIPE_CONFIGS", "DLRMConfig", "DLRMModelConfig", "ShardingTypeName", "load_recipe_config"]

ShardingTypeName = Literal[
    "data_parallel", "table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise", "grid_shard"
]


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
    """Config of ``examples/dlrm/train.py``: DLRM with a table type per feature.

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
        features = self.data.feature_names()
        check_table_specs(self.tables, features, self.model.embedding_dim)
        for name, types in self.sharding.items():
            require(name == "_default" or name in features, f"sharding.{name}", "unknown feature")
            require(bool(types), f"sharding.{name}", "needs at least one sharding type")


RECIPE_CONFIGS: Dict[str, Type[Any]] = {"dlrm": DLRMConfig}


def load_recipe_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Any:
    """Validates a recipe YAML against the schema its ``recipe:`` key names.

    Raises:
        ConfigError: unknown recipe, or any schema error (naming the key).
    """
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    recipe = data.get("recipe") if isinstance(data, dict) else None
    if recipe not in RECIPE_CONFIGS:
        raise ConfigError(f"{path}: recipe: must be one of {sorted(RECIPE_CONFIGS)}, got {recipe!r}")
    return load_config(RECIPE_CONFIGS[recipe], path, overrides)
