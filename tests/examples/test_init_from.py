# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``train.init_from``: a recipe run starts from a trained stock run's checkpoint, its tables converted by the warm
start. Checked against plain-PyTorch math on the converted checkpoint: stock tables and dense layers are copied
exactly, a hashed table's rows are the (1 + count)-weighted means of the trained rows that hash to them, MEmCom's
weights are the least-squares scalars on its shared rows. Tiny SYNTHETIC DLRM runs in this process."""

from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from torchrec.models.dlrm import DLRM, DLRMTrain

from tests.examples.tiny import TINY, committed, run_in_process
from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.inference.checkpoint import load_checkpoint
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.dlrm import DLRMTask
from torchrec_memcom.recipes.schemas import load_recipe_config
from torchrec_memcom.recipes.training import DistContext, build_tables

STOCK = ["tables={}", "sharding={}"]
CONVERTED = ["train.epochs=0", "train.max_steps=null", "eval.every_steps=null", "eval.final_split=val"]


def _overrides(*extra: str) -> list:
    return [*TINY, *extra]


def _model(cfg: Any, checkpoint: Path) -> torch.nn.Module:
    tables = build_tables(cfg.data.feature_names(), cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
    m = cfg.model
    ebc = CompressedEmbeddingBagCollection(tables, device="cpu")
    model = DLRMTrain(DLRM(ebc, cfg.data.dense_dim, m.dense_arch_layer_sizes, m.over_arch_layer_sizes))
    load_checkpoint(model, checkpoint)
    return model


@pytest.fixture(scope="module")
def stock_run(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    tmp = tmp_path_factory.mktemp("stock")
    mp = pytest.MonkeyPatch()
    try:
        r = run_in_process(mp, [*STOCK, "eval.final_split=val", f"checkpoint.dir={tmp / 'ckpt'}", f"output.dir={tmp}"])
    finally:
        mp.undo()
    (step,) = committed(tmp / "ckpt")
    return {"results": r, "checkpoint": tmp / "ckpt" / step}


def test_stock_to_stock_is_the_trained_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stock_run: Dict[str, Any]
) -> None:
    init = f"train.init_from={stock_run['checkpoint']}"
    r = run_in_process(monkeypatch, [*STOCK, *CONVERTED, init, f"output.dir={tmp_path}"])
    assert r["status"] == "ok" and r["train"]["steps"] == 0
    trained = stock_run["results"]["final"]
    assert (r["final"]["auc"], r["final"]["logloss"]) == (trained["auc"], trained["logloss"])


def test_converted_tables_are_least_squares_fits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stock_run: Dict[str, Any]
) -> None:
    init = f"train.init_from={stock_run['checkpoint']}"
    ckpt = tmp_path / "ckpt"
    r = run_in_process(monkeypatch, [*CONVERTED, init, f"checkpoint.dir={ckpt}", f"output.dir={tmp_path}"])
    assert r["status"] == "ok" and set(r["lma_signature_coverage"]) == {"t_cat_1"}
    (step,) = committed(ckpt)
    cfg = load_recipe_config("synthetic_criteo_stock", _overrides(init, *CONVERTED), recipe="dlrm")
    stock = _model(
        load_recipe_config("synthetic_criteo_stock", _overrides(*STOCK), recipe="dlrm"), stock_run["checkpoint"]
    )
    conv = _model(cfg, ckpt / step)
    sebc = stock.model.sparse_arch.embedding_bag_collection
    cebc = conv.model.sparse_arch.embedding_bag_collection
    trained = {t.name: sebc.physical_weight(t.name).detach() for t in sebc.embedding_bag_configs()}

    # dense layers and the stock tables: as trained
    s_state, c_state = stock.state_dict(), conv.state_dict()
    for key, value in s_state.items():
        if "sparse_arch" not in key:
            torch.testing.assert_close(c_state[key], value, rtol=0, atol=0)
    for t in ("t_cat_4", "t_cat_5"):
        torch.testing.assert_close(cebc.physical_weight(t), trained[t], rtol=0, atol=0)

    # id counts of the sample the recipe reads (train.lma_signature_rows rows of its seeded signature batches)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    counts = torch.zeros(cfg.data.table_sizes()["cat_3"], dtype=torch.float64)
    rows = 0
    for batch in DLRMTask(cfg, ctx).signature_batches():
        ids = batch.sparse_features["cat_3"].values()
        counts += torch.bincount(ids, minlength=counts.numel()).double()
        rows += batch.labels.numel()
        if rows >= cfg.train.lma_signature_rows:
            break

    # hash: U[b] = sum_{h(i)=b} (1 + c_i) E_i / sum (1 + c_i)
    e = trained["t_cat_3"].double()
    n = e.shape[0]
    b = cebc.bucketed_hash("t_cat_3")(torch.arange(n))
    shared = cebc.shared_weight("t_cat_3").detach().double()
    weight = counts + 1
    for bucket in b.unique()[:50].tolist():
        members = b == bucket
        expected = (e[members] * weight[members, None]).sum(0) / weight[members].sum()
        torch.testing.assert_close(shared[bucket], expected, rtol=1e-4, atol=1e-6)

    # MEmCom: w_i = <E_i, U[h(i)]> / |U[h(i)]|^2 on the converted shared rows
    e = trained["t_cat_0"].double()
    ids = torch.arange(e.shape[0])
    u = cebc.shared_weight("t_cat_0").detach().double()[cebc.bucketed_hash("t_cat_0")(ids)]
    w = cebc.entity_weight("t_cat_0", ids).detach().double().reshape(-1)
    torch.testing.assert_close(w, (e * u).sum(1) / (u * u).sum(1), rtol=1e-4, atol=1e-6)


def test_epochs_zero_needs_init_from() -> None:
    with pytest.raises(ConfigError, match="0 \\(evaluate only\\) needs train.init_from"):
        load_recipe_config("ml1m_stock", ["train.epochs=0"], recipe="dlrm")


def test_a_compressed_checkpoint_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run_in_process(monkeypatch, [f"checkpoint.dir={ckpt}", f"output.dir={tmp_path / 'a'}", "eval.every_steps=null"])
    (step,) = committed(ckpt)
    with pytest.raises(ConfigError, match="train.init_from: .* is not a checkpoint of this recipe's model with stock"):
        run_in_process(monkeypatch, [*CONVERTED, f"train.init_from={ckpt / step}", f"output.dir={tmp_path / 'b'}"])
