# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""TorchX: every project component passes TorchX's validation and builds the expected ``dist.ddp`` app; the
registered component and ``dist.ddp --script`` both train end to end on 2 local CPU processes."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from torchx import specs
from torchx.components.component_test_base import ComponentTestCase

from torchrec_memcom.recipes import components

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS: List[str] = sorted(
    name for name, fn in inspect.getmembers(components, inspect.isfunction) if fn.__module__ == components.__name__
)
PRESETS = [name for name in COMPONENTS if name.startswith("dlrm_")]  # two_tower*: tests/examples/test_two_tower.py


class ComponentValidationTest(ComponentTestCase):
    def test_every_component_validates(self) -> None:
        assert len(COMPONENTS) == 20, COMPONENTS  # 14 DLRM + 6 two-tower
        for name in COMPONENTS:
            with self.subTest(component=name):
                self.validate(components, name)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_apps(name: str) -> None:
    app = getattr(components, name)("--set", "train.epochs=3", image="registry/img:1", h="aws_t3.medium", j="2x4")
    (role,) = app.roles
    config = f"examples/dlrm/configs/{name.removeprefix('dlrm_')}.yaml"
    assert (ROOT / config).is_file()
    assert role.image == "registry/img:1" and role.num_replicas == 2
    assert role.resource == specs.resource(h="aws_t3.medium")
    assert role.entrypoint == "bash"
    assert role.args[1].endswith(
        f"--nproc_per_node 4 --tee 3 --role '' -m examples.dlrm.train --config {config} --set train.epochs=3"
    )


def test_generic_component() -> None:
    app = components.dlrm(config="examples/dlrm/configs/criteo_lma.yaml", gpu=8, j="1x8")
    (role,) = app.roles
    assert (
        role.resource.gpu == 8
        and "-m examples.dlrm.train --config examples/dlrm/configs/criteo_lma.yaml" in (role.args[1])
    )


def _env() -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # local_cwd runs torchrun
    return env


def _torchx(tmp_path: Path, *args: str) -> str:
    torchx = os.path.join(os.path.dirname(sys.executable), "torchx")
    cmd = [torchx, "run", "-s", "local_cwd", "-cfg", f"log_dir={tmp_path / 'logs'}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "SUCCEEDED" in out, f"{' '.join(cmd)}:\n{out[-6000:]}"
    return out


def test_registered_component_end_to_end(tmp_path: Path) -> None:
    """``memcom.dlrm_ml1m_memcom`` on real MovieLens-1M for a few steps; evaluation covers every row of val and
    test, including a last global batch that leaves rank 1 without rows (val: 73,901 = 10 x 2 x 3,695 + 1)."""
    _torchx(
        tmp_path,
        "memcom.dlrm_ml1m_memcom",
        "-j",
        "1x2",
        "--",
        "--set",
        "train.max_steps=6",
        "eval.every_steps=6",
        "eval.batch_size=3695",
        f"output.dir={tmp_path}",
    )
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["world_size"] == 2 and r["train"]["steps"] == 6
    assert [(e["split"], e["num_samples"]) for e in r["evals"]] == [("val", 73901), ("test", 73902)]
    assert r["compression"] > 15 and 0 < r["final"]["auc"] < 1


def test_dist_ddp_script_end_to_end(tmp_path: Path) -> None:
    out = _torchx(
        tmp_path,
        "dist.ddp",
        "-j",
        "1x2",
        "--script",
        "examples/dlrm/train.py",
        "--",
        "--config",
        "examples/dlrm/configs/synthetic_criteo_lma.yaml",
        "--set",
        "data.num_features=4",
        "data.num_embeddings=1000",
        "data.train_rows=2048",
        "data.eval_rows=256",
        "train.batch_size=64",
        "train.max_steps=4",
        "train.lma_signature_rows=1000",
        f"output.dir={tmp_path}",
    )
    assert "[dlrm synthetic_criteo_lma] test AUC" in out
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["world_size"] == 2 and r["train"]["steps"] == 4 and r["memory"]["tables"][0]["method"] == "lma"
