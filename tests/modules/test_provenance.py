# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
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
def _fresh_cache() -> Iterator[None]:
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
    dirty = bool(_git_here("status", "--porcelain", "--untracked-files=no"))
    assert provenance.code_revision() == commit + ("+dirty" if dirty else "")


def _fake_git(answers: Dict[str, Optional[str]]) -> Callable[[List[str], str], Optional[str]]:
    def run(args: List[str], cwd: str) -> Optional[str]:
        assert cwd == provenance._PACKAGE_DIR
        return answers.get(args[0])

    return run


def test_dirty_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = {"ls-files": "__init__.py", "rev-parse": "1a2b3c4", "status": ""}
    monkeypatch.setattr(provenance, "_git", _fake_git(clean))
    assert provenance.code_revision() == "1a2b3c4"
    provenance.code_revision.cache_clear()
    monkeypatch.setattr(provenance, "_git", _fake_git({**clean, "status": " M x.py"}))
    assert provenance.code_revision() == "1a2b3c4+dirty"
    # an installed wheel (not tracked, e.g. in a virtual environment inside another project's repository), or no git
    untracked: Dict[str, Optional[str]] = {"ls-files": None, "rev-parse": "ffffff0", "status": ""}
    for answers in (untracked, {}):
        provenance.code_revision.cache_clear()
        monkeypatch.setattr(provenance, "_git", _fake_git(answers))
        assert provenance.code_revision() == f"torchrec_memcom {torchrec_memcom.__version__}"


def test_git_failures_are_no_answer(tmp_path: Path) -> None:
    assert provenance._git(["rev-parse", "HEAD"], str(tmp_path)) is None  # not a repository
    assert provenance._git(["no-such-command"], provenance._PACKAGE_DIR) is None
