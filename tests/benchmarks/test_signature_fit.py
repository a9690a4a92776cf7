# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""scripts/bench_signature_fit.py: a small run (every table fitted and timed, JSON written)."""

import json
from pathlib import Path

from tests.scripts import load_script


def test_small_run(tmp_path: Path) -> None:
    module = load_script("bench_signature_fit")
    out = tmp_path / "fit.json"
    results = module.main(["--ids", "5000", "--tables", "3", "--rows", "64", "--pooling", "4", "--out", str(out)])
    assert [r["table"] for r in results] == ["t0", "t1", "t2"]
    for r in results:
        # each of 64 rows pairs its 4 ids with the other 2 features' 4 ids: at most 64 * 4 * 8 distinct pairs
        assert 0 < r["pairs"] <= 64 * 4 * 8 and r["codes_s"] > 0 and 0 < r["coverage"] <= 64 * 4 / 5000
    assert json.loads(out.read_text())["tables"] == results
