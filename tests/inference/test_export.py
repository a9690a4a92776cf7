# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Whole-model artifacts: the exported program equals the eager serving module (DLRM and the two-tower model, every
table kind, batch 1 to 64, empty bags), the int8 model stays within a stated tolerance of the fp32 trained model,
and the saved file runs in a fresh process that imports only torch and fbgemm_gpu."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest
import torch
from torchrec import KeyedJaggedTensor

from tests.inference.models import DENSE_IN, make_batch, make_dlrm, make_two_tower, mixed_tables, trained_collection
from torchrec_memcom.inference import (
    InferenceConfig,
    compile_aoti,
    export_model,
    load_aoti,
    load_program,
    program_inputs,
    to_inference,
)

# int8 tables, fp16 MEmCom weights: the logits of this small DLRM stay this close to the fp32 trained model's
# (measured: 1.3e-4 at most over the test batches).
INT8_LOGIT_TOLERANCE = 1e-3


def _dlrm(dtype: str = "int8") -> Tuple[torch.nn.Module, torch.nn.Module, list]:
    tables = mixed_tables()
    trained = make_dlrm(tables, seed=3).model.eval()
    return trained, to_inference(trained, InferenceConfig(weight_dtype=dtype)), tables


def _dense(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, DENSE_IN, generator=torch.Generator().manual_seed(seed))


def test_exported_dlrm_equals_the_eager_serving_module(tmp_path: Path) -> None:
    trained, served, tables = _dlrm()
    keys = [f for t in tables for f in t.feature_names]
    export_model(served, keys, DENSE_IN, tmp_path / "dlrm.pt2", metadata={"config": InferenceConfig().to_dict()})
    program, meta = load_program(tmp_path / "dlrm.pt2")
    assert meta["keys"] == keys and meta["inputs"] == ["values", "lengths", "dense"]
    assert meta["config"]["weight_dtype"] == "int8"
    for batch, seed in [(1, 1), (5, 2), (64, 3)]:
        kjt, dense = make_batch(tables, batch, seed=seed), _dense(batch, seed)
        with torch.no_grad():
            expected = served(dense, kjt)
            got = program(*program_inputs(kjt, keys, dense))
            reference = trained(dense, kjt)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        assert float((got - reference).abs().max()) < INT8_LOGIT_TOLERANCE
    no_ids = torch.zeros(0, dtype=torch.int64)
    empty = KeyedJaggedTensor(keys=keys, values=no_ids, lengths=torch.zeros(3 * len(keys), dtype=torch.int64))
    with torch.no_grad():
        torch.testing.assert_close(program(*program_inputs(empty, keys, _dense(3, 4))), served(_dense(3, 4), empty))


def test_exported_program_checks_ids_and_lengths(tmp_path: Path) -> None:
    _, served, tables = _dlrm()
    keys = [f for t in tables for f in t.feature_names]
    program = export_model(served, keys, DENSE_IN).module()
    kjt, dense = make_batch(tables, 4, seed=5), _dense(4, 5)
    values, lengths, _ = program_inputs(kjt, keys, dense)
    bad = values.clone()
    bad[-1] = 10_000
    with pytest.raises(RuntimeError, match="ids out of range"):
        program(bad, lengths, dense)
    with pytest.raises(RuntimeError):
        program(values[:-1], lengths, dense)  # lengths sum to more ids than given


def test_exported_two_tower_equals_the_eager_serving_module(tmp_path: Path) -> None:
    trained, tables = make_two_tower(seed=2)
    served = to_inference(trained, InferenceConfig(weight_dtype="int8"))
    keys = [f for t in tables for f in t.feature_names]
    export_model(served, keys, 1, tmp_path / "two_tower.pt2", dense_first=False)
    program, _ = load_program(tmp_path / "two_tower.pt2")
    for batch, seed in [(1, 6), (33, 7)]:
        kjt, dense = make_batch(tables, batch, seed=seed), torch.rand(batch, 1)
        with torch.no_grad():
            users, items = program(*program_inputs(kjt, keys, dense))
            eager_users, eager_items = served(kjt, dense)
            ref_users, ref_items = trained(kjt, dense)
        torch.testing.assert_close(users, eager_users, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(items, eager_items, atol=1e-6, rtol=1e-6)
        # unit vectors / temperature 0.1 (entries up to 10): int8 moves them by 0.013 at most (measured)
        assert float((users - ref_users).abs().max()) < 0.05 and float((items - ref_items).abs().max()) < 0.05


def test_exported_weighted_model_takes_the_weights(tmp_path: Path) -> None:
    tables = mixed_tables()
    ebc = trained_collection(tables, weighted=True)
    served = to_inference(ebc, InferenceConfig(weight_dtype="fp32"))

    class Pooled(torch.nn.Module):
        def __init__(self, ebc: torch.nn.Module) -> None:
            super().__init__()
            self.ebc = ebc

        def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
            return self.ebc(kjt).values() + dense.sum(1, keepdim=True)

    keys = [f for t in tables for f in t.feature_names]
    program = export_model(Pooled(served), keys, 2, weighted=True).module()
    kjt, dense = make_batch(tables, 6, seed=9, weighted=True), _dense(6, 9)[:, :2]
    with torch.no_grad():
        got = program(*program_inputs(kjt, keys, dense, weighted=True))
        torch.testing.assert_close(got, ebc(kjt).values() + dense.sum(1, keepdim=True), atol=1e-5, rtol=1e-5)


_FRESH = r"""
import json, sys
import torch
import fbgemm_gpu  # noqa: F401  registers torch.ops.fbgemm
path, inputs_path, aoti = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
runner = torch._inductor.aoti_load_package(path) if aoti else torch.export.load(path).module()
inputs = torch.load(inputs_path)
with torch.no_grad():
    out = runner(*inputs["args"])
torch.testing.assert_close(out, inputs["expected"], atol=1e-6, rtol=1e-6)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _run_fresh(artifact: Path, inputs: Path, aoti: bool) -> set:
    # -I: isolated mode, so neither the repo nor PYTHONPATH is importable; only the venv's installed packages are
    result = subprocess.run(
        [sys.executable, "-I", "-c", _FRESH, str(artifact), str(inputs), "1" if aoti else "0"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def _saved_dlrm(tmp_path: Path) -> Tuple[torch.export.ExportedProgram, Path]:
    _, served, tables = _dlrm()
    keys = [f for t in tables for f in t.feature_names]
    program = export_model(served, keys, DENSE_IN, tmp_path / "dlrm.pt2")
    kjt, dense = make_batch(tables, 7, seed=12), _dense(7, 12)
    args = program_inputs(kjt, keys, dense)
    with torch.no_grad():
        torch.save({"args": args, "expected": served(dense, kjt)}, tmp_path / "inputs.pt")
    return program, tmp_path / "inputs.pt"


def test_artifact_runs_in_a_fresh_process_with_only_torch_and_fbgemm(tmp_path: Path) -> None:
    _, inputs = _saved_dlrm(tmp_path)
    imported = _run_fresh(tmp_path / "dlrm.pt2", inputs, aoti=False)
    assert "torch" in imported and "fbgemm_gpu" in imported
    assert not {"torchrec", "torchrec_memcom", "tests", "examples"} & imported


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None, reason="AOTInductor needs a C++ compiler")
def test_aoti_package_runs_in_a_fresh_process(tmp_path: Path) -> None:
    program, inputs = _saved_dlrm(tmp_path)
    compile_aoti(program, tmp_path / "dlrm_aoti.pt2")
    args = torch.load(inputs)
    with torch.no_grad():
        torch.testing.assert_close(load_aoti(tmp_path / "dlrm_aoti.pt2")(*args["args"]), args["expected"])
    imported = _run_fresh(tmp_path / "dlrm_aoti.pt2", inputs, aoti=True)
    assert not {"torchrec", "torchrec_memcom", "tests", "examples"} & imported


def test_artifact_stores_each_table_once(tmp_path: Path) -> None:
    from torchrec import EmbeddingBagConfig

    tables = [EmbeddingBagConfig(name="big", num_embeddings=20_000, embedding_dim=64, feature_names=["big"])]
    trained = make_dlrm(tables, seed=1).model.eval()
    for dtype, row_bytes in [("fp32", 256), ("int8", 80)]:  # int8: 64 + 4 bytes of scale/bias, aligned to 16
        served = to_inference(trained, InferenceConfig(weight_dtype=dtype))
        export_model(served, ["big"], DENSE_IN, tmp_path / f"{dtype}.pt2")
        table = 20_000 * row_bytes
        # the rest (dense layers, graph, metadata) is far below one copy of the table
        assert table < os.path.getsize(tmp_path / f"{dtype}.pt2") < table + 1_000_000, dtype
