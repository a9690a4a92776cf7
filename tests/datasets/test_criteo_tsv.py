# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""CriteoTSVReader on small generated files, bad rows included."""

import gzip
import logging
import math
import random
from pathlib import Path
from typing import List, Tuple

import pytest
import torch

from torchrec_memcom.datasets import MISSING_CATEGORY_ID, CriteoTSVReader

_SIZES = [7, 100, 1000, 3] + [50] * 22


def _row(rng: random.Random) -> List[str]:
    label = str(rng.randint(0, 1))
    dense = ["" if rng.random() < 0.2 else str(rng.randint(-3, 5000)) for _ in range(13)]
    cats = ["" if rng.random() < 0.1 else f"{rng.getrandbits(32):08x}" for _ in range(26)]
    return [label, *dense, *cats]


def _expected(row: List[str]) -> Tuple[float, List[float], List[int]]:
    dense = [math.log1p(max(int(x), 0)) if x else 0.0 for x in row[1:14]]
    ids = [int(x, 16) % n if x else MISSING_CATEGORY_ID for x, n in zip(row[14:], _SIZES)]
    return float(row[0]), dense, ids


def _write(path: Path, rows: List[str]) -> None:
    path.write_text("".join(r + "\n" for r in rows))


def _good_rows(n: int, seed: int = 0) -> List[List[str]]:
    rng = random.Random(seed)
    return [_row(rng) for _ in range(n)]


def _flatten(batches: List) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = torch.cat([b.labels for b in batches])
    dense = torch.cat([b.dense_features for b in batches])
    ids = torch.cat([b.sparse_features.values().view(26, -1).T for b in batches])
    return labels, dense, ids


def test_values(tmp_path: Path) -> None:
    rows = _good_rows(23)
    _write(tmp_path / "day.tsv", ["\t".join(r) for r in rows])
    batches = list(CriteoTSVReader(str(tmp_path / "day.tsv"), 5, _SIZES))
    assert [len(b.labels) for b in batches] == [5, 5, 5, 5, 3]
    kjt = batches[0].sparse_features
    assert kjt.keys() == [f"cat_{i}" for i in range(26)] and kjt.stride() == 5
    assert kjt.values().dtype == torch.int64 and bool((kjt.lengths() == 1).all())
    labels, dense, ids = _flatten(batches)
    expected = [_expected(r) for r in rows]
    assert labels.tolist() == [e[0] for e in expected]
    assert torch.allclose(dense, torch.tensor([e[1] for e in expected]))
    assert ids.tolist() == [e[2] for e in expected]
    assert bool((ids < torch.tensor(_SIZES)).all())


@pytest.mark.parametrize("drop_last", [True, False])
def test_sharding_over_files(tmp_path: Path, drop_last: bool) -> None:
    rows = _good_rows(47, seed=1)
    _write(tmp_path / "a.tsv", ["\t".join(r) for r in rows[:20]])
    with gzip.open(tmp_path / "b.tsv.gz", "wt") as f:
        f.write("".join("\t".join(r) + "\n" for r in rows[20:]))
    paths = [str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv.gz")]
    per_rank = [list(CriteoTSVReader(paths, 4, _SIZES, rank=r, world_size=3, drop_last=drop_last)) for r in range(3)]
    sizes = [[len(b.labels) for b in bs] for bs in per_rank]
    if drop_last:
        assert sizes == [[4] * 3] * 3  # 47 // 12 = 3 global batches
    else:
        assert sizes == [[4, 4, 4, 4]] * 2 + [[4, 4, 4, 3]]  # last global batch: 11 rows -> 4, 4, 3
    got = [_flatten(bs)[2] for bs in per_rank]
    # Full global batches: rank r takes rows [12 g + 4 r, 12 g + 4 r + 4); the 11-row tail splits as 4, 4, 3.
    for r in range(3):
        mine = [12 * g + 4 * r + j for g in range(3) for j in range(4)]
        if not drop_last:
            mine += [36 + 4 * r + j for j in range([4, 4, 3][r])]
        assert got[r].tolist() == [_expected(rows[i])[2] for i in mine]


def test_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = ["\t".join(r) for r in _good_rows(30, seed=2)]
    bad = {
        7: "\t".join(_good_rows(1, seed=3)[0][:-1]),  # 39 fields
        12: "\t".join(["1", "x1", *_good_rows(1, seed=4)[0][2:]]),  # unparsable integer
        20: "\t".join([*_good_rows(1, seed=5)[0][:-1], "zz"]),  # unparsable hex
        25: "\t".join(["2", *_good_rows(1, seed=6)[0][1:]]),  # label not 0/1
    }
    for lineno, line in sorted(bad.items()):
        lines.insert(lineno - 1, line)
    path = tmp_path / "bad.tsv"
    _write(path, lines)
    with pytest.raises(ValueError, match=rf"{path}:7: malformed Criteo row \(field_count\): expected 40"):
        list(CriteoTSVReader(str(path), 8, _SIZES))
    reader = CriteoTSVReader(str(path), 8, _SIZES, skip_bad_rows=True)
    with caplog.at_level(logging.WARNING, logger="torchrec_memcom.datasets.criteo"):
        batches = list(reader)
    assert reader.num_bad_rows == 4
    assert reader.stats() == {
        "rows_read": 30,
        "skipped_rows": {"field_count": 1, "integer": 1, "categorical": 1, "label": 1},
        "skipped_total": 4,
    }
    assert "skipped 4 malformed Criteo rows" in caplog.text and "categorical 1, field_count 1" in caplog.text
    assert sum(len(b.labels) for b in batches) == 30
    list(reader)
    assert reader.num_bad_rows == 4  # reset per pass, not accumulated
    for lineno, reason in ((12, "integer"), (20, "categorical"), (25, "label")):
        good = "\t".join(_good_rows(1, seed=7)[0])
        _write(path, [line if i not in bad or i == lineno else good for i, line in enumerate(lines, start=1)])
        with pytest.raises(ValueError, match=rf"bad.tsv:{lineno}: malformed Criteo row \({reason}\)"):
            list(CriteoTSVReader(str(path), 8, _SIZES))


@pytest.mark.parametrize(
    "field, value",
    [
        (14, "-1f"),  # int(x, 16) takes a sign
        (14, "0x1f"),  # ... a prefix
        (20, " 1f "),  # ... surrounding spaces
        (39, "1_f"),  # ... underscores
        (14, "+1f"),
        (14, "１f"),  # a full-width digit
        (3, "1_0"),  # int() takes these in integer fields too
        (3, " 7"),
        (3, "+7"),
        (3, "٣"),  # an Arabic-Indic digit
        (3, "99999999999999999999"),  # beyond int64
        (0, " 1"),
        (0, "01"),
    ],
)
def test_strict_fields(tmp_path: Path, field: int, value: str) -> None:
    """Python's ``int`` accepts all of these; none is a Criteo field, so each line is malformed."""
    row = _good_rows(3, seed=8)
    row[1][field] = value
    path = tmp_path / "day.tsv"
    _write(path, ["\t".join(r) for r in row])
    reason = "label" if field == 0 else "integer" if field <= 13 else "categorical"
    with pytest.raises(ValueError, match=rf"day.tsv:2: malformed Criteo row \({reason}\)"):
        list(CriteoTSVReader(str(path), 2, _SIZES))
    reader = CriteoTSVReader(str(path), 2, _SIZES, skip_bad_rows=True)
    assert sum(len(b.labels) for b in reader) == 2 and reader.stats()["skipped_rows"] == {reason: 1}


def test_truncated_last_line_and_crlf(tmp_path: Path) -> None:
    rows = _good_rows(5, seed=9)
    text = "".join("\t".join(r) + "\r\n" for r in rows)  # Windows line ends are fine
    cut = text[: -len("\r\n") - 3]  # the last line loses its newline and the end of its last hex id
    path = tmp_path / "cut.tsv"
    path.write_bytes(cut.encode())
    with pytest.raises(ValueError, match=r"cut.tsv:5: malformed Criteo row \(truncated_line\)"):
        list(CriteoTSVReader(str(path), 2, _SIZES))
    reader = CriteoTSVReader(str(path), 2, _SIZES, skip_bad_rows=True)
    ids = _flatten(list(reader))[2]
    assert ids.tolist() == [_expected(r)[2] for r in rows[:4]]
    assert reader.stats()["skipped_rows"] == {"truncated_line": 1}


def test_non_utf8_byte_names_file_and_line(tmp_path: Path) -> None:
    lines = ["\t".join(r).encode() + b"\n" for r in _good_rows(4, seed=10)]
    lines[2] = lines[2][:20] + b"\xff" + lines[2][21:]
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"".join(lines))
    with pytest.raises(ValueError, match=r"latin.tsv:3: malformed Criteo row \(not_utf8\): byte 0xff at column 21"):
        list(CriteoTSVReader(str(path), 2, _SIZES))
    reader = CriteoTSVReader(str(path), 2, _SIZES, skip_bad_rows=True)
    assert sum(len(b.labels) for b in reader) == 3 and reader.stats()["skipped_rows"] == {"not_utf8": 1}


def test_truncated_gzip_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "day.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join("\t".join(r) + "\n" for r in _good_rows(2000, seed=11)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for skip in (False, True):  # skipping bad rows never hides a damaged file
        with pytest.raises(ValueError, match=r"day.tsv.gz:\d+: truncated or corrupt gzip data"):
            list(CriteoTSVReader(str(path), 64, _SIZES, skip_bad_rows=skip))


def test_no_valid_rows_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.tsv"
    _write(path, ["not\ta\trow"] * 5)
    with pytest.raises(ValueError, match=r"junk.tsv: no valid Criteo rows \(all 5 lines are malformed"):
        list(CriteoTSVReader(str(path), 2, _SIZES, skip_bad_rows=True))
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ValueError, match="no valid Criteo rows .the files are empty"):
        list(CriteoTSVReader(str(empty), 2, _SIZES))


def test_skipped_rows_are_logged_when_the_consumer_stops_early(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A training loop that stops at ``max_steps`` closes the iterator mid-pass: the count so far is still logged."""
    lines = ["\t".join(r) for r in _good_rows(40, seed=12)]
    lines[1] = "garbage"
    path = tmp_path / "day.tsv"
    _write(path, lines)
    reader = CriteoTSVReader(str(path), 4, _SIZES, skip_bad_rows=True)
    it = iter(reader)
    with caplog.at_level(logging.WARNING, logger="torchrec_memcom.datasets.criteo"):
        next(it)
        it.close()
    assert "skipped 1 malformed Criteo rows" in caplog.text and "field_count 1" in caplog.text
    assert reader.stats() == {"rows_read": 4, "skipped_rows": {"field_count": 1}, "skipped_total": 1}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        CriteoTSVReader("x.tsv", 8, [10] * 25)
    with pytest.raises(ValueError):
        CriteoTSVReader("x.tsv", 8, _SIZES, rank=1, world_size=1)
