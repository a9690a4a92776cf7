# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Which code produced a result: the git revision of the package's checkout, recorded in every benchmark's and
study's JSON next to its numbers."""

import functools
import os
import subprocess
from typing import List, Optional

__all__ = ["code_revision"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _git(args: List[str], cwd: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def code_revision() -> str:
    """``"<short commit>"`` of the git checkout this package is tracked in, with ``"+dirty"`` when tracked files
    differ from that commit (untracked files do not count); ``"torchrec_memcom <version>"`` otherwise (an installed
    wheel, even inside another project's repository, or no git)."""
    tracked = _git(["ls-files", "--error-unmatch", "__init__.py"], _PACKAGE_DIR)
    commit = _git(["rev-parse", "--short=7", "HEAD"], _PACKAGE_DIR) if tracked else None
    if not commit:
        from torchrec_memcom import __version__

        return f"torchrec_memcom {__version__}"
    changed = _git(["status", "--porcelain", "--untracked-files=no"], _PACKAGE_DIR)
    return commit + ("+dirty" if changed else "")
