# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

import torchrec_memcom
from torchrec_memcom import provenance

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torchrec_memcom.__file__)))


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(provenance.REVISION_ENV, raising=False)
    provenance.code_revision.cache_clear()
    yield
    provenance.code_revision.cache_clear()


def _git_here(*args: str) -> Optional[str]:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_revision_is_the_checkouts_commit_and_says_when_tracked_files_changed() -> None:
    commit = _git_here("rev-parse", "--short=7", "HEAD")
    if not commit or _git_here("ls-files", "torchrec_memcom/__init__.py") != "torchrec_memcom/__init__.py":
        pytest.skip("the package is not tracked in a git checkout here")
    if _git_here("status", "--porcelain", "--untracked-files=no"):
        diff = hashlib.sha1((_git_here("diff", "HEAD") or "").encode()).hexdigest()[:8]
        assert provenance.code_revision() == f"{commit}+dirty.{diff}"
    else:
        assert provenance.code_revision() == commit


def _fake_git(answers: Dict[str, Optional[str]]) -> Callable[[List[str], str], Optional[str]]:
    def run(args: List[str], cwd: str) -> Optional[str]:
        assert cwd == provenance._PACKAGE_DIR
        return answers.get(args[0])

    return run


def test_dirty_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = {"ls-files": "__init__.py", "rev-parse": "1a2b3c4", "diff": ""}
    monkeypatch.setattr(provenance, "_git", _fake_git(clean))
    assert provenance.code_revision() == "1a2b3c4"
    provenance.code_revision.cache_clear()
    monkeypatch.setattr(provenance, "_git", _fake_git({**clean, "diff": "-a\n+b"}))
    assert provenance.code_revision() == "1a2b3c4+dirty." + hashlib.sha1(b"-a\n+b").hexdigest()[:8]
    provenance.code_revision.cache_clear()
    monkeypatch.setenv(provenance.REVISION_ENV, " 9f8e7d6 ")  # a copy whose .git is older than its files
    assert provenance.code_revision() == "9f8e7d6"
    monkeypatch.delenv(provenance.REVISION_ENV)
    # an installed wheel (not tracked, e.g. in a virtual environment inside another project's repository), or no git
    untracked: Dict[str, Optional[str]] = {"ls-files": None, "rev-parse": "ffffff0", "diff": ""}
    for answers in (untracked, {}):
        provenance.code_revision.cache_clear()
        monkeypatch.setattr(provenance, "_git", _fake_git(answers))
        assert provenance.code_revision() == f"torchrec_memcom {torchrec_memcom.__version__}"


def test_git_failures_are_no_answer(tmp_path: Path) -> None:
    assert provenance._git(["rev-parse", "HEAD"], str(tmp_path)) is None  # not a repository
    assert provenance._git(["no-such-command"], provenance._PACKAGE_DIR) is None


def test_environment_records_versions_machine_time_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime
    import platform

    import fbgemm_gpu
    import torch
    import torchrec

    monkeypatch.setenv(provenance.REVISION_ENV, "abc1234")
    env = provenance.environment()
    assert env["torch"] == torch.__version__ and env["cuda"] == torch.version.cuda
    assert env["torchrec"] == torchrec.__version__ and env["fbgemm_gpu"] == getattr(fbgemm_gpu, "__version__", "?")
    assert env["python"] == platform.python_version() and env["machine"] == platform.machine()
    assert env["cpu_count"] == os.cpu_count() and env["threads"] == torch.get_num_threads()
    assert env["revision"] == "abc1234"
    age = datetime.datetime.now() - datetime.datetime.strptime(env["time"], "%Y-%m-%d %H:%M:%S")
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=1)


def test_environment_names_a_missing_library_none(monkeypatch: pytest.MonkeyPatch) -> None:
    real = provenance.importlib.import_module

    def no_fbgemm(name: str) -> object:
        if name == "fbgemm_gpu":
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(provenance.importlib, "import_module", no_fbgemm)
    env = provenance.environment()
    assert env["fbgemm_gpu"] is None and env["torchrec"] is not None
