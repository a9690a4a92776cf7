# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Which code produced a result, and where: the git revision of the package's checkout and the libraries and machine
of the run, recorded in every benchmark's and study's JSON next to its numbers."""

import functools
import hashlib
import importlib
import os
import platform
import subprocess
import time
from typing import Any, Dict, List, Optional

__all__ = ["REVISION_ENV", "code_revision", "environment"]

# Names the code when the checkout's git metadata does not (a copy of a working tree sent to another machine with an
# older .git): set to the commit the copy was made from.
REVISION_ENV = "TORCHREC_MEMCOM_REVISION"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _git(args: List[str], cwd: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def code_revision() -> str:
    """``"<short commit>"`` of the git checkout this package is tracked in, with ``"+dirty.<hash>"`` when tracked
    files differ from that commit (``<hash>``: the first 8 hex digits of the SHA-1 of ``git diff HEAD``, so two runs
    with the same changes carry the same name; untracked files do not count); ``"torchrec_memcom <version>"``
    otherwise (an installed wheel, even inside another project's repository, or no git). ``$TORCHREC_MEMCOM_REVISION``
    (``REVISION_ENV``), when set, is returned instead."""
    override = os.environ.get(REVISION_ENV, "").strip()
    if override:
        return override
    tracked = _git(["ls-files", "--error-unmatch", "__init__.py"], _PACKAGE_DIR)
    commit = _git(["rev-parse", "--short=7", "HEAD"], _PACKAGE_DIR) if tracked else None
    if not commit:
        from torchrec_memcom import __version__

        return f"torchrec_memcom {__version__}"
    diff = _git(["diff", "HEAD"], _PACKAGE_DIR)  # tracked files only, staged or not; empty when clean
    return f"{commit}+dirty.{hashlib.sha1(diff.encode()).hexdigest()[:8]}" if diff else commit


def environment() -> Dict[str, Any]:
    """The fields every result's ``environment`` shares: torch, TorchRec and FBGEMM versions (``None``: not
    installed), CUDA's (``None``: a CPU build), Python, the platform, CPU cores and torch's threads, the local time and
    ``code_revision()``. Each caller adds what its run used (device, ranks, command)."""
    import torch

    env: Dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("torchrec", "fbgemm_gpu"):
        try:
            env[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            env[name] = None
    env.update(
        python=platform.python_version(),
        platform=platform.platform(),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        threads=torch.get_num_threads(),
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
        revision=code_revision(),
    )
    return env
