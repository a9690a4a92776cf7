# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""benchmarks.transform_time: the id transform timed alone, on CPU (the PyTorch path; no GPU columns)."""

import json

import pytest

from torchrec_memcom.benchmarks.transform_time import main, markdown


def test_rows_per_method_and_kjt_kind(tmp_path) -> None:
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    rows = main(
        ["--layout", "tiny", "--methods", "hash,memcom", "--rounds", "2", "--calls", "20", "--device", "cpu",
         "--out", str(out), "--md", str(md)]
    )  # fmt: skip
    assert [(r["method"], r["offsets"]) for r in rows] == [
        ("hash", True),
        ("hash", False),
        ("memcom", True),
        ("memcom", False),
    ]
    for r in rows:
        assert len(r["host_us_round_medians"]) == 2 and r["host_us"] == min(r["host_us_round_medians"]) > 0
        assert r["gpu_us"] is None and r["gpu_ops"] is None  # CPU: no GPU columns
        assert r["ids_per_batch"] == 4 * 64 * 4  # tiny: 4 features x batch 64 x pooling 4
        assert r["index_dtype"] == "int32"  # as the sharded lookup's: tiny's ids fit
    assert json.loads(out.read_text())["rows"] == rows
    text = md.read_text()
    assert "| tiny | hash | offsets | 1,024 | int32 |" in text
    assert "| tiny | memcom | lengths only | 1,024 | int32 |" in text
    assert markdown(rows).count("\n") == 2 + len(rows)


def test_stock_is_refused() -> None:
    with pytest.raises(SystemExit, match="'stock' is not a compressed method"):
        main(["--layout", "tiny", "--methods", "stock", "--device", "cpu"])


@pytest.mark.gpu
def test_gpu_columns() -> None:
    rows = main(["--layout", "tiny", "--methods", "hash", "--rounds", "1", "--calls", "20", "--device", "cuda"])
    for r in rows:  # the fused kernel at least, and the input check's copy
        assert r["gpu_us"] > 0 and r["gpu_ops"] >= 2
