# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Makes ``tests.inference.models`` importable however pytest is started (``pytest`` or ``python -m pytest``)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
