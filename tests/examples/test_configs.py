# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Recipe configs: every packaged YAML validates and builds its tables; presets resolve by name; bad keys and
values (non-finite or absurd numbers included) are rejected with the dotted key in the message; a key given twice is
refused with its line; ``--set`` overrides apply."""

import math
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import yaml
from torchrec.datasets.utils import Batch

from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.datasets._batching import single_id_kjt
from torchrec_memcom.recipes.config import ConfigError, apply_overrides, from_dict, read_yaml
from torchrec_memcom.recipes.schemas import RECIPE_CONFIGS, DLRMConfig, load_recipe_config, preset_names
from torchrec_memcom.recipes.training import build_tables, empty_batch, pad_batch

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_CONFIGS = ROOT / "torchrec_memcom/recipes/configs"
CONFIGS: List[Path] = sorted(ROOT.glob("torchrec_memcom/**/*.yaml")) + sorted(ROOT.glob("examples/**/*.y*ml"))
DLRM_ML1M = PACKAGE_CONFIGS / "dlrm/ml1m_memcom.yaml"


def test_found_the_configs() -> None:
    names = {p.relative_to(PACKAGE_CONFIGS).as_posix() for p in CONFIGS}
    for method in ("stock", "hash", "qr", "memcom", "lma"):
        assert {f"dlrm/ml1m_{method}.yaml", f"dlrm/criteo_{method}.yaml", f"two_tower/ml1m_{method}.yaml"} <= names
    assert {f"dlrm/synthetic_criteo_{m}.yaml" for m in ("stock", "memcom", "lma")} <= names
    assert not list(ROOT.glob("examples/**/*.y*ml")), "recipe YAMLs ship in the package, not in examples/"
    for recipe in RECIPE_CONFIGS:
        assert preset_names(recipe) == sorted(p.stem for p in (PACKAGE_CONFIGS / recipe).glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_validates_and_builds(path: Path) -> None:
    recipe = path.parent.name
    cfg = load_recipe_config(path.stem, recipe=recipe)  # by preset name, as --config takes it
    assert type(cfg) is RECIPE_CONFIGS[recipe] and type(load_recipe_config(path)) is RECIPE_CONFIGS[recipe]
    header = path.read_text().splitlines()[:8]
    assert any("Launch" in line for line in header) and any("Override" in line for line in header), path
    assert any(f"--config {path.stem}" in line for line in header), path  # the launch line names this preset
    tables = build_tables(cfg.data.feature_names(), cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
    report = CompressedEmbeddingBagCollection(tables, device="meta").memory_report()
    if "stock" not in path.stem:
        compressed = [t for t in report.tables if t.method != "stock"]
        ratio = sum(t.stock_bytes for t in compressed) / sum(t.total_bytes for t in compressed)
        assert ratio > 12, (path, ratio)
        if not any(spec.get("type") == "stock" for spec in cfg.tables.values()):  # else a large table stays stock
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
        # non-finite or absurd numbers (PyYAML reads .inf / .nan as floats, and 'inf' is a string float() takes)
        ("optimizer.dense.lr=.inf", "optimizer.dense.lr"),
        ("optimizer.dense.lr=inf", "optimizer.dense.lr"),
        ("optimizer.dense.lr=1e30", "optimizer.dense.lr"),
        ("optimizer.sparse.lr=1e30", "optimizer.sparse.lr"),
        ("optimizer.sparse.eps=.inf", "optimizer.sparse.eps"),
        ("optimizer.dense.eps=10", "optimizer.dense.eps"),
        ("optimizer.dense.weight_decay=.inf", "optimizer.dense.weight_decay"),
        # free-form table specs are checked too (the core takes a nan entity-weight init)
        ("tables.user={type: memcom, compression: 16, entity_weight_init: .nan}", "tables.user.entity_weight_init"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    message = _error(apply_overrides(_raw(), [override]))
    assert message.startswith(f"{key}:"), message


def test_sane_extremes_pass() -> None:
    data = apply_overrides(_raw(), ["optimizer.dense.name=sgd", "optimizer.dense.lr=15", "optimizer.sparse.lr=1e-6"])
    cfg = from_dict(DLRMConfig, data)
    assert cfg.optimizer.dense.lr == 15 and math.isclose(cfg.optimizer.sparse.lr, 1e-6)


def test_duplicate_keys_are_refused_with_their_lines(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: a second ``train:`` section would silently replace the first."""
    text = DLRM_ML1M.read_text()
    assert yaml.safe_load(text + "train:\n  epochs: 9\n")["train"] == {"epochs": 9}  # what plain PyYAML does
    first = 1 + text.splitlines().index("train:")
    last = 1 + len(text.splitlines())
    path = tmp_path / "twice.yaml"
    path.write_text(text + "train:\n  epochs: 9\n")
    message = rf"twice.yaml: line {last}: duplicate key 'train' \(first given at line {first}\)"
    with pytest.raises(ConfigError, match=message):
        load_recipe_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("recipe: dlrm\ndata: {name: ml1m_ctr}\ntrain:\n  epochs: 1\n  seed: 1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"nested.yaml: line 6: duplicate key 'epochs' \(first given at line 4\)"):
        read_yaml(nested)
    with pytest.raises(ConfigError, match=r"override .*duplicate key 'type'"):
        apply_overrides({}, ["tables.user={type: memcom, type: hash}"])
    anchors = tmp_path / "anchors.yaml"  # a merge key may be overridden: that is what it is for
    anchors.write_text("base: &b {lr: 1, eps: 2}\nsparse:\n  <<: *b\n  lr: 3\n")
    assert read_yaml(anchors)["sparse"] == {"lr": 3, "eps": 2}


def test_preset_names_and_paths(tmp_path: Path) -> None:
    assert "ml1m_memcom" in preset_names("dlrm") and "synthetic_criteo_lma" in preset_names("dlrm")
    plain = [f"ml1m_{m}" for m in ("hash", "lma", "memcom", "qr", "stock")]
    history = [f"ml1m_history_{m}" for m in ("hash", "lma", "memcom", "memcom_all", "stock")]
    assert preset_names("two_tower") == sorted(plain + history)
    assert load_recipe_config("ml1m_memcom", recipe="two_tower").recipe == "two_tower"
    with pytest.raises(ConfigError, match=r"--config 'ml1m_memcm': no such file; dlrm presets: criteo_hash, "):
        load_recipe_config("ml1m_memcm", recipe="dlrm")
    with pytest.raises(ConfigError, match=r"recipe: this is a 'two_tower' config, the 'dlrm' recipe cannot train"):
        load_recipe_config(PACKAGE_CONFIGS / "two_tower/ml1m_memcom.yaml", recipe="dlrm")
    local = tmp_path / "ml1m_memcom"  # an existing file wins over a preset of the same name
    local.write_text(DLRM_ML1M.read_text().replace("epochs: 2", "epochs: 5"))
    assert load_recipe_config(str(local), recipe="dlrm").train.epochs == 5


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
    bad.write_text("recipe: dlrm\ndata: {name: ml1m_ctr}\ntrain: {epochs: -1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs: must be >= 0"):
        load_recipe_config(bad)
    bad.write_text("recipe: dlrm\ndata: {name: ml1m_ctr}\ntrain: {epochs: 0}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs: 0 \(evaluate only\) needs train.init_from"):
        load_recipe_config(bad)


def test_sizes_that_do_not_fit_the_data_fail_at_build_time() -> None:
    cfg = load_recipe_config(DLRM_ML1M, ["tables.gender={type: memcom, compression: 4}"])  # 2 ids: too few rows
    with pytest.raises(ValueError, match="t_gender"):
        build_tables(cfg.data.feature_names(), cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)


def test_padded_and_empty_batches_keep_their_per_feature_counts() -> None:
    kjt = single_id_kjt(["a", "b"], [np.array([3, 1]), np.array([0, 5])])
    batch = Batch(dense_features=torch.ones(2, 3), sparse_features=kjt, labels=torch.ones(2))
    padded = pad_batch(batch, 4).sparse_features
    assert padded.stride() == 4 and padded.lengths().tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert padded.length_per_key_or_none() == [2, 2] == padded.lengths().view(2, -1).sum(1).tolist()
    empty = empty_batch(["a", "b"], 3, 5).sparse_features
    assert empty.length_per_key_or_none() == [0, 0] and empty.lengths().sum() == 0
