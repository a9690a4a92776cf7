# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""TorchX: the two components pass TorchX's own validation and build the expected ``dist.ddp`` app (resources that
fit a GPU node, restarts, retries); installing the package leaves TorchX's builtins alone; a component named by file
and the builtin ``dist.ddp -m`` both train end to end on 2 local CPU processes."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
from torchx import specs
from torchx.components.component_test_base import ComponentTestCase
from torchx.specs import finder

from torchrec_memcom.recipes import components

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS_FILE = "torchrec_memcom/recipes/components.py"


class ComponentValidationTest(ComponentTestCase):
    def test_components_validate(self) -> None:
        for name in ("dlrm", "two_tower"):
            with self.subTest(component=name):
                self.validate(components, name)  # TorchX's linter (typed primitives, docstring) + a dryrun


@pytest.mark.parametrize("recipe", ["dlrm", "two_tower"])
def test_app(recipe: str) -> None:
    app = getattr(components, recipe)("--set", "train.epochs=3", config="ml1m_lma", j="2x4", image="registry/img:1")
    (role,) = app.roles
    assert role.image == "registry/img:1" and role.num_replicas == 2 and role.entrypoint == "bash"
    assert role.args[1].endswith(
        f"--nproc_per_node 4 --tee 3 --role '' -m torchrec_memcom.recipes.{recipe} --config ml1m_lma "
        "--set train.epochs=3"
    )
    assert role.resource == specs.Resource(cpu=16, gpu=0, memMB=4 * 16384)  # per node: 4 processes
    assert role.env["PET_MAX_RESTARTS"] == "0" and role.max_retries == 0
    assert app.name == f"{recipe}_ml1m_lma"


def test_gpu_resources_scale_with_the_node() -> None:
    """``-j 2x8 --gpu 8`` used to ask the scheduler for 2 CPUs and 8 GB per 8-GPU node."""
    (role,) = components.dlrm(config="criteo_memcom", j="2x8", gpu=8).roles
    assert role.resource.gpu == 8 and role.resource.cpu == 32 and role.resource.memMB == 8 * 16384
    (role,) = components.dlrm(config="criteo_memcom", j="2x8", gpu=8, cpu=96, memMB=1_000_000).roles
    assert (role.resource.cpu, role.resource.memMB) == (96, 1_000_000)
    (role,) = components.dlrm(config="criteo_memcom", j="1x8", gpu=8, h="aws_p4d.24xlarge").roles
    assert role.resource == specs.named_resources["aws_p4d.24xlarge"]
    with pytest.raises(ValueError, match="at most one process per GPU"):
        components.dlrm(j="1x8", gpu=4)


def test_command_line_values_are_typed(tmp_path: Path) -> None:
    """What ``torchx run`` builds from its command line (TorchX passes an ``Optional[int]`` through as a string)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchx"), "run", "--dryrun", "-s", "local_cwd"]
    cmd += [f"{ROOT / COMPONENTS_FILE}:dlrm", "--config", "ml1m_lma", "-j", "1x8", "--gpu", "8", "--cpu", "64"]
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120).stdout
    assert "'cpu': 64," in out and "'gpu': 8," in out and f"'memMB': {8 * 16384}" in out, out


def test_restarts_and_retries() -> None:
    (role,) = components.dlrm("--set", "checkpoint.dir=/ckpt", config="x.yaml", max_restarts=3).roles
    assert role.env["PET_MAX_RESTARTS"] == "3"  # torchrun --max-restarts; the recipe resumes by itself on restart
    assert "--resume" not in role.args[1]
    (role,) = components.two_tower(config="ml1m_stock", max_retries=2, env={"LOGLEVEL": "INFO"}).roles
    assert role.max_retries == 2 and role.env["LOGLEVEL"] == "INFO"
    assert role.args[1].endswith("-m torchrec_memcom.recipes.two_tower --config ml1m_stock --resume")
    with pytest.raises(ValueError, match="max_restarts"):
        components.dlrm(max_restarts=-1)


def test_builtins_are_left_alone() -> None:
    """No ``torchx.components`` entry point: TorchX 0.7 would list it *instead of* ``dist.ddp``, ``utils.echo``..."""
    assert not [ep for ep in importlib.metadata.entry_points(group="torchx.components")]
    finder._components = None  # TorchX caches what it found
    found = finder.get_components()
    assert {"dist.ddp", "dist.spmd", "utils.echo", "utils.python"} <= set(found)
    by_file = finder.get_component(f"{ROOT / COMPONENTS_FILE}:dlrm")
    assert by_file.fn(config="ml1m_stock").roles[0].args[1].endswith("--config ml1m_stock")


def test_prints_its_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "torchrec_memcom.recipes.components"], capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()) == ROOT / COMPONENTS_FILE


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


def test_component_end_to_end(tmp_path: Path) -> None:
    """The ``dlrm`` component on real MovieLens-1M for a few steps; evaluation covers every row of val and test,
    including a last global batch that leaves rank 1 without rows (val: 73,901 = 10 x 2 x 3,695 + 1)."""
    _torchx(
        tmp_path,
        f"{COMPONENTS_FILE}:dlrm",
        "--config",
        "ml1m_memcom",
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
    assert r["status"] == "ok" and r["world_size"] == 2 and r["train"]["steps"] == 6
    assert [(e["split"], e["num_samples"]) for e in r["evals"]] == [("val", 73901), ("test", 73902)]
    assert r["compression"] > 15 and 0 < r["final"]["auc"] < 1


def test_builtin_dist_ddp_runs_the_packaged_recipe(tmp_path: Path) -> None:
    out = _torchx(
        tmp_path,
        "dist.ddp",
        "-j",
        "1x2",
        "-m",
        "torchrec_memcom.recipes.dlrm",
        "--",
        "--config",
        "synthetic_criteo_lma",
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
