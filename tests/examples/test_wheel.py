# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The wheel works on its own: it holds every module and preset, declares what its code imports, and a preset runs
through ``torchx run`` from a fresh virtualenv in a directory outside the repository.

The fresh virtualenv borrows the heavy, separately installed stack (torch, fbgemm, torchrec, TorchX, ...) from this
environment through a ``.pth`` line, which Python adds to ``sys.path`` without processing the ``.pth`` files found
there, so this checkout's editable install cannot leak in: ``torchrec_memcom`` can only come from the wheel.
"""

import ast
import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "torchrec_memcom"
NOT_DECLARED = {
    "torch": "ABI-coupled stack installed by scripts/setup.sh (see setup.cfg)",
    "torchrec": "ABI-coupled stack installed by scripts/setup.sh",
    "fbgemm_gpu": "ABI-coupled stack installed by scripts/setup.sh",
    "triton": "ships with CUDA builds of torch; imported only on CUDA",
    "matplotlib": "optional: recipes.report draws its plot only when it is installed",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a clean copy of the sources (a checkout's ``build/`` or ``*.egg-info`` could otherwise
    smuggle in files the package declaration misses)."""
    src = tmp_path_factory.mktemp("src") / "torchrec-memcom"
    skip = shutil.ignore_patterns(".*", "build", "dist", "outputs", "shared", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, src, ignore=skip)
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (path,) = out.glob("torchrec_memcom-*.whl")
    return path


def test_wheel_holds_every_module_and_preset(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    presets = {p.relative_to(ROOT).as_posix() for p in (PACKAGE / "recipes/configs").glob("*/*.yaml")}
    assert len(presets) >= 18 and "torchrec_memcom/recipes/configs/dlrm/ml1m_memcom.yaml" in presets
    assert sources - names == set() and presets - names == set()
    assert not [n for n in names if n.startswith(("examples/", "tests/", "scripts/"))]
    entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert not entry_points, "no torchx.components entry point: it would hide TorchX's builtins"


def _third_party_imports() -> Dict[str, List[str]]:
    """Top-level modules the package imports that are neither the standard library nor the package itself."""
    found: Dict[str, List[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for m in modules:
                top = m.split(".")[0]
                if top not in sys.stdlib_module_names and top != "torchrec_memcom":
                    found.setdefault(top, []).append(path.relative_to(ROOT).as_posix())
    return found


def test_declared_dependencies_cover_the_imports(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        requires = email.message_from_bytes(z.read(meta)).get_all("Requires-Dist") or []
    declared: Set[str] = {re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requires}
    dists = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "torchrec", "yaml", "torchx", "torchmetrics"} <= set(imports)  # the scan sees them
    missing = {}
    for module, files in sorted(imports.items()):
        if module in NOT_DECLARED:
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = files[:3]
    assert not missing, f"imported but not declared in setup.cfg: {missing}"
    assert any('extra == "recipes"' in r and r.startswith("torchx") for r in requires)


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A virtualenv with only the wheel installed; the heavy stack comes from this environment's site-packages."""
    venv.EnvBuilder(with_pip=False).create(root)
    py = root / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([py, "-c", purelib], text=True).strip())
    (site / "_borrowed_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    launcher = "import sys\nfrom torch.distributed.run import main\nsys.exit(main())\n"
    (root / "bin" / "torchrun").write_text(f"#!{py}\n{launcher}")
    (root / "bin" / "torchrun").chmod(0o755)
    return py


@pytest.mark.slow
def test_preset_runs_through_torchx_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    py = _fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "elsewhere"  # not the repository: no .torchxconfig, no examples/, no checkout on sys.path
    work.mkdir()
    here = os.path.dirname(sys.executable)
    path = [str(py.parent)] + [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != here]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=os.pathsep.join(path), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{out[-6000:]}"
        return out

    where = run(str(py), "-c", "import torchrec_memcom.recipes.dlrm as m, torchx; print(m.__file__)").strip()
    assert where.startswith(str(tmp_path / "venv")), where  # the wheel's copy, not the checkout
    components = run(str(py), "-m", "torchrec_memcom.recipes.components").strip()
    assert components.startswith(str(tmp_path / "venv"))
    out = run(
        str(py), "-m", "torchx.cli.main", "run", "-s", "local_cwd", "-cfg", f"log_dir={work / 'logs'}",
        f"{components}:dlrm", "--config", "synthetic_criteo_memcom", "-j", "1x1", "--",
        "--set", "data.num_features=3", "data.num_embeddings=500", "data.train_rows=512", "data.eval_rows=128",
        "model.embedding_dim=8", "model.dense_arch_layer_sizes=[8, 8]", "model.over_arch_layer_sizes=[8, 1]",
        "tables._default={type: memcom, compression: 2}", "train.batch_size=32", "train.max_steps=3",
        "eval.batch_size=64", "output.dir=out",
    )  # fmt: skip
    assert "SUCCEEDED" in out and "[dlrm synthetic_criteo_memcom] test AUC" in out, out[-4000:]
    results = (work / "out" / "results.json").read_text()
    assert '"status": "ok"' in results and '"steps": 3' in results
