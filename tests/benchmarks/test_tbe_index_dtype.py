# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""scripts/bench_tbe_index_dtype.py: a CPU smoke run at 1/1000 of the shapes (both dtypes timed, JSON written)."""

import json
from pathlib import Path

from tests.scripts import load_script


def test_cpu_smoke_run(tmp_path: Path) -> None:
    module = load_script("bench_tbe_index_dtype")
    out = tmp_path / "tbe.json"
    results = module.main(["--device", "cpu", "--scale", "1000", "--iters", "1", "--out", str(out)])
    assert list(results) == ["stock 8 x 4M x 128", "hash 8 x 250k x 128", "lma 16M x 16, 64 features"]
    for times in results.values():
        assert set(times) == {"int64", "int32"} and all(ms > 0 for ms in times.values())
    assert json.loads(out.read_text())["ms_per_call"] == results
