# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The README's Python snippets run as written: each ```python block is saved to a file and run (with ``python``, or
with ``torchrun`` on 2 gloo processes when its first line is a ``# torchrun ...`` comment); it must exit 0 and print
what its ``# ->`` comments promise."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> List[Tuple[int, str]]:
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def test_the_readme_has_snippets() -> None:
    assert len(_blocks()) >= 2


@pytest.mark.parametrize(("line", "code"), _blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_snippet_runs(tmp_path: Path, line: int, code: str) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(code)
    if code.startswith("# torchrun"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    else:
        cmd = [sys.executable, str(script)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"README.md:{line}: the snippet failed\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    for expected in re.findall(r"# -> (.+)$", code, re.M):
        want = expected.strip()
        assert want in r.stdout, f"README.md:{line}: expected {want!r} in the output\n{r.stdout}"
