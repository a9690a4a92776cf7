# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Recipe configs: every YAML under examples/ validates and builds its tables; bad keys and values are rejected
with the dotted key in the message; ``--set`` overrides apply."""

from pathlib import Path
from typing import List

import pytest
import yaml

from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.recipes.config import ConfigError, apply_overrides, from_dict
from torchrec_memcom.recipes.schemas import RECIPE_CONFIGS, DLRMConfig, load_recipe_config
from torchrec_memcom.recipes.training import build_tables

ROOT = Path(__file__).resolve().parents[2]
CONFIGS: List[Path] = sorted((ROOT / "examples").rglob("*.yaml")) + sorted((ROOT / "examples").rglob("*.yml"))
DLRM_ML1M = ROOT / "examples/dlrm/configs/ml1m_memcom.yaml"


def test_found_the_configs() -> None:
    names = {p.name for p in CONFIGS}
    for method in ("stock", "hash", "qr", "memcom", "lma"):
        assert f"ml1m_{method}.yaml" in names and f"criteo_{method}.yaml" in names
    assert {"synthetic_criteo_stock.yaml", "synthetic_criteo_memcom.yaml", "synthetic_criteo_lma.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_config_validates_and_builds(path: Path) -> None:
    cfg = load_recipe_config(path)
    assert type(cfg) is RECIPE_CONFIGS[yaml.safe_load(path.read_text())["recipe"]]
    header = path.read_text().splitlines()[:8]
    assert any("Launch" in line for line in header) and any("Override" in line for line in header), path
    tables = build_tables(cfg.data.feature_names(), cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
    report = CompressedEmbeddingBagCollection(tables, device="meta").memory_report()
    if "stock" not in path.stem:
        assert report.compression_ratio > 12, (path, report.compression_ratio)


def _raw() -> dict:
    return yaml.safe_load(DLRM_ML1M.read_text())


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        from_dict(DLRMConfig, data)
    return str(e.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("bogus=1", "bogus"),
        ("model.bogus=1", "model.bogus"),
        ("train.batchsize=8", "train.batchsize"),
        ("optimizer.sparse.bogus=1", "optimizer.sparse.bogus"),
        ("data.bogus=1", "data.bogus"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=big", "train.batch_size"),
        ("train.batch_size=1.5", "train.batch_size"),
        ("train.epochs=true", "train.epochs"),
        ("optimizer.sparse.name=adam", "optimizer.sparse.name"),
        ("optimizer.dense.lr=-1", "optimizer.dense.lr"),
        ("model.embedding_dim=30", "model.embedding_dim"),
        ("model.dense_arch_layer_sizes=[64, 32]", "model.dense_arch_layer_sizes"),
        ("model.over_arch_layer_sizes=[64, 2]", "model.over_arch_layer_sizes"),
        ("eval.split=train", "eval.split"),
        ("data.name=imagenet", "data.name"),
        ("tables.user.type=bloom", "tables.user"),
        ("tables.user.compresion=16", "tables.user"),
        ("tables.user.compression=0.5", "tables.user"),
        ("tables.user.compression=null", "tables.user"),
        ("tables.gender.compression=4", "tables.gender"),  # stock takes no compression
        ("tables.nope={type: stock}", "tables.nope"),
        ("tables.movie={type: memcom, compression: 80}", "tables.movie"),  # MEmCom stays below d = 64x
        ("sharding.user=[sideways]", "sharding.user[0]"),
        ("sharding.nope=[row_wise]", "sharding.nope"),
        ("checkpoint.keep=0", "checkpoint.keep"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    message = _error(apply_overrides(_raw(), [override]))
    assert message.startswith(f"{key}:"), message


def test_missing_and_unknown_recipe() -> None:
    data = _raw()
    del data["data"]
    assert _error(data).startswith("data: required key is missing")
    data = _raw()
    data["recipe"] = "two_tower_v0"
    assert _error(data).startswith("recipe:")


def test_overrides_and_load(tmp_path: Path) -> None:
    cfg = load_recipe_config(
        DLRM_ML1M,
        [
            "train.epochs=3",
            "optimizer.sparse.eps=1e-6",  # PyYAML reads this as a string; float fields accept it
            "tables.user={type: lma, compression: 8, signature_bytes: 4}",
            "tables._default={type: hash, compression: 2}",
            "sharding={_default: [table_wise]}",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.optimizer.sparse.eps == pytest.approx(1e-6)
    assert cfg.tables["user"]["type"] == "lma" and cfg.tables["movie"]["type"] == "memcom"
    tables = build_tables(cfg.data.feature_names(), cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
    kinds = {t.name: type(t).__name__ for t in tables}
    assert kinds["t_user"] == "LMAEmbeddingBagConfig" and kinds["t_gender"] == "HashEmbeddingBagConfig"
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_recipe_config(DLRM_ML1M, ["train.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: dlrm\ndata: {name: ml1m_ctr}\ntrain: {epochs: 0}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs: must be >= 1"):
        load_recipe_config(bad)


def test_sizes_that_do_not_fit_the_data_fail_at_build_time() -> None:
    cfg = load_recipe_config(DLRM_ML1M, ["tables.gender={type: memcom, compression: 4}"])  # 2 ids: too few rows
    with pytest.raises(ValueError, match="t_gender"):
        build_tables(cfg.data.feature_names(), cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
