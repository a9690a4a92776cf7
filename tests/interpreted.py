# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Runs a check through Triton's CPU interpreter: a fresh process with ``TRITON_INTERPRET=1`` (the interpreter is
chosen when the kernels are defined), where ``ops.triton_enabled`` holds for CPU tensors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_interpreted(module: str, function: str) -> None:
    """Calls ``module.function()`` under the interpreter; fails with its stderr if it raises."""
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[1]
    code = f"from {module} import {function} as f; f()"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
