# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Criteo click logs: a streaming reader of the raw TSV and a wrapper of TorchRec's preprocessed npy reader.

Both yield ``torchrec.datasets.utils.Batch``: ``dense_features`` ``[B, 13]`` float32, ``sparse_features`` a KJT with
keys ``cat_0 .. cat_25`` (TorchRec's ``DEFAULT_CAT_NAMES``) and one id per bag, ``labels`` ``[B]``.
"""

import glob
import gzip
import logging
import os
import re
import zlib
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchrec.datasets.criteo import (
    CAT_FEATURE_COUNT,
    DEFAULT_CAT_NAMES,
    INT_FEATURE_COUNT,
    InMemoryBinaryCriteoIterDataPipe,
)
from torchrec.datasets.utils import Batch

from torchrec_memcom.datasets._batching import DataError, check_rank, rank_slice, single_id_kjt

__all__ = ["CriteoTSVReader", "MISSING_CATEGORY_ID", "SKIP_REASONS", "criteo_npy_datapipe", "criteo_npy_files"]

logger: logging.Logger = logging.getLogger(__name__)

MISSING_CATEGORY_ID = 0
"""Id of an empty categorical field in the TSV reader (as in TorchRec's preprocessing, where ``""`` reads as hex 0)."""

_NUM_FIELDS = 1 + INT_FEATURE_COUNT + CAT_FEATURE_COUNT


_ROW = re.compile(
    rb"([01])" + rb"\t(-?[0-9]{1,18}|)" * INT_FEATURE_COUNT + rb"\t([0-9a-fA-F]*)" * CAT_FEATURE_COUNT + rb"\r?\n"
)
"""A good line, strictly: label 0/1, 13 decimal integers (optionally negative, at most 18 digits: int64), 26 hex ids
(digits and a-f only: no sign, ``0x``, spaces or ``_``, which ``int(x, 16)`` would take), each field may be empty,
and the line ends with a newline (a last line without one was cut off mid-write)."""

SKIP_REASONS = ("truncated_line", "not_utf8", "field_count", "label", "integer", "categorical")
"""Why ``CriteoTSVReader`` calls a line malformed (the keys of ``skipped_rows``)."""


def _diagnose(line: bytes) -> Tuple[str, str]:
    """``(reason, detail)`` of a line ``_ROW`` rejected."""
    if not line.endswith(b"\n"):
        return "truncated_line", "no newline at the end of the file: the last line is cut off"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return "not_utf8", f"byte {line[e.start]:#04x} at column {e.start + 1} is not UTF-8"
    fields = text.rstrip("\r\n").split("\t")
    if len(fields) != _NUM_FIELDS:
        return "field_count", f"expected {_NUM_FIELDS} tab-separated fields, got {len(fields)}"
    if fields[0] not in ("0", "1"):
        return "label", f"label must be 0 or 1, got {fields[0]!r}"
    for i, x in enumerate(fields[1 : 1 + INT_FEATURE_COUNT]):
        if not re.fullmatch(r"(-?[0-9]{1,18}|)", x):
            return "integer", f"integer feature {i} must be a decimal integer (int64) or empty, got {x!r}"
    for i, x in enumerate(fields[1 + INT_FEATURE_COUNT :]):
        if not re.fullmatch(r"[0-9a-fA-F]*", x):
            return "categorical", f"categorical feature {i} must be hex digits or empty, got {x!r}"
    return "field_count", "malformed line"  # unreachable when _ROW and the checks above agree


class CriteoTSVReader:
    """Streams raw Criteo TSV files (label, 13 integer, 26 hex categorical fields per line) as ``Batch`` es.

    Each line becomes ``label`` (0 or 1, float32), dense ``log(1 + max(x, 0))`` of the 13 integers (an empty field
    counts as 0), and for categorical ``i`` the id ``int(hex, 16) % num_embeddings_per_feature[i]``; an empty field
    maps to ``MISSING_CATEGORY_ID`` (0). That id is shared with the values that hash to 0: this matches TorchRec's
    npy preprocessing, so both readers give the same ids. Files may be gzip-compressed (``.gz``).

    Sharding: the good rows of all files, in order, are cut into global batches of ``batch_size * world_size``;
    rank ``r`` takes rows ``[r * batch_size, (r + 1) * batch_size)`` of each (so row ``i`` goes to rank
    ``(i mod (batch_size * world_size)) // batch_size``). With ``drop_last=True`` the short last global batch is
    dropped and every rank yields the same number of batches of exactly ``batch_size`` rows; otherwise it is split
    as evenly as ``np.array_split`` does (an empty share yields no batch). Every rank parses every line (so all ranks
    agree on which rows are bad); for large-scale runs preprocess to npy and use ``criteo_npy_datapipe``.

    Parsing is strict (see ``_ROW``): a line is malformed when it is cut off (the last line of a file without a
    newline), is not UTF-8, has other than 40 tab-separated fields, a label other than ``0``/``1``, an integer field
    that is not a plain decimal int64, or a categorical field with anything but hex digits (``-1f``, ``0x1f``,
    `` 1f ``, ``1_f`` are refused). A malformed line raises ``DataError`` naming ``file:line`` and the reason; with
    ``skip_bad_rows=True`` it is skipped and counted by reason in ``skipped_rows`` (reset at the start of every
    pass), and the counts are logged at WARNING whenever a pass ends, also when the consumer stops early. A pass that
    finds no good row raises ``DataError`` (a ``ValueError``: nothing to train or evaluate on), as does a truncated or
    corrupt ``.gz`` stream (naming the line where reading stopped), skipping or not.

    Args:
        paths (str | Sequence[str]): TSV file(s), read in order.
        batch_size (int): rows per rank per batch.
        num_embeddings_per_feature (Sequence[int]): 26 table sizes (hash moduli).
        rank (int): this rank.
        world_size (int): number of ranks.
        drop_last (bool): drop the short last global batch.
        skip_bad_rows (bool): skip and count malformed lines instead of raising.
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        batch_size: int,
        num_embeddings_per_feature: Sequence[int],
        *,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        skip_bad_rows: bool = False,
    ) -> None:
        check_rank(batch_size, rank, world_size)
        if len(num_embeddings_per_feature) != CAT_FEATURE_COUNT or min(num_embeddings_per_feature) < 1:
            raise ValueError(
                f"num_embeddings_per_feature needs {CAT_FEATURE_COUNT} sizes >= 1, "
                f"got {list(num_embeddings_per_feature)}"
            )
        self.paths: List[str] = [paths] if isinstance(paths, str) else list(paths)
        self.batch_size = batch_size
        self.num_embeddings_per_feature: List[int] = list(num_embeddings_per_feature)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.skip_bad_rows = skip_bad_rows
        self.skipped_rows: Dict[str, int] = {}
        self.rows_read = 0

    @property
    def num_bad_rows(self) -> int:
        """Malformed lines skipped in the current (or last) pass."""
        return sum(self.skipped_rows.values())

    def stats(self) -> Dict[str, Any]:
        """Rows of the current (or last) pass: ``rows_read`` (good rows parsed, every rank's share included),
        ``skipped_rows`` (count by reason) and ``skipped_total``."""
        skipped = dict(self.skipped_rows)
        return {"rows_read": self.rows_read, "skipped_rows": skipped, "skipped_total": sum(skipped.values())}

    def _parse(self, line: bytes) -> Optional[Tuple[int, List[int], List[int]]]:
        m = _ROW.fullmatch(line)
        if m is None:
            return None
        fields = m.groups()
        dense = [int(x) if x else 0 for x in fields[1 : 1 + INT_FEATURE_COUNT]]
        sparse = [
            int(x, 16) % n if x else MISSING_CATEGORY_ID
            for x, n in zip(fields[1 + INT_FEATURE_COUNT :], self.num_embeddings_per_feature)
        ]
        return int(fields[0]), dense, sparse

    def _rows(self) -> Iterator[Tuple[int, List[int], List[int]]]:
        for path in self.paths:
            with _open_binary(path) as f:
                lineno = 0
                lines = iter(f)
                while True:
                    try:
                        line = next(lines)
                    except StopIteration:
                        break
                    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
                        raise DataError(f"{path}:{lineno + 1}: truncated or corrupt gzip data ({e})") from None
                    lineno += 1
                    row = self._parse(line)
                    if row is not None:
                        self.rows_read += 1
                        yield row
                        continue
                    reason, detail = _diagnose(line)
                    if not self.skip_bad_rows:
                        raise DataError(f"{path}:{lineno}: malformed Criteo row ({reason}): {detail}")
                    self.skipped_rows[reason] = self.skipped_rows.get(reason, 0) + 1

    def _to_batch(self, rows: List[Tuple[int, List[int], List[int]]]) -> Batch:
        labels = np.array([r[0] for r in rows], dtype=np.float32)
        dense = np.array([r[1] for r in rows], dtype=np.int64).reshape(len(rows), INT_FEATURE_COUNT)
        sparse = np.array([r[2] for r in rows], dtype=np.int64).reshape(len(rows), CAT_FEATURE_COUNT)
        return Batch(
            dense_features=torch.from_numpy(np.log1p(np.maximum(dense, 0)).astype(np.float32)),
            sparse_features=single_id_kjt(DEFAULT_CAT_NAMES, list(sparse.T)),
            labels=torch.from_numpy(labels),
        )

    def _local(self, rows: List[Tuple[int, List[int], List[int]]]) -> Optional[Batch]:
        local = rows[rank_slice(len(rows), self.batch_size, self.rank, self.world_size)]
        return self._to_batch(local) if local else None

    def __iter__(self) -> Iterator[Batch]:
        self.skipped_rows = {}
        self.rows_read = 0
        step = self.batch_size * self.world_size
        buffer: List[Tuple[int, List[int], List[int]]] = []
        try:
            for row in self._rows():
                buffer.append(row)
                if len(buffer) == step:
                    batch = self._local(buffer)
                    buffer = []
                    if batch is not None:
                        yield batch
            if self.rows_read == 0:
                what = f"all {self.num_bad_rows} lines are malformed {self.skipped_rows}" if self.skipped_rows else ""
                raise DataError(f"{', '.join(self.paths)}: no valid Criteo rows ({what or 'the files are empty'})")
            if buffer and not self.drop_last:
                batch = self._local(buffer)
                if batch is not None:
                    yield batch
        finally:  # also when the consumer stops early (max_steps), so the skipped rows are never silent
            if self.skipped_rows:
                logger.warning(
                    "skipped %d malformed Criteo rows in %s (by reason: %s; %d good rows read)",
                    self.num_bad_rows,
                    ", ".join(self.paths),
                    ", ".join(f"{k} {v}" for k, v in sorted(self.skipped_rows.items())),
                    self.rows_read,
                )


def _open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _npy_triplet(directory: str, prefix: str) -> Tuple[str, str, str]:
    paths = tuple(os.path.join(directory, f"{prefix}_{kind}.npy") for kind in ("dense", "sparse", "labels"))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"missing Criteo npy files: {missing}")
    return paths  # type: ignore[return-value]  # three items by construction


def criteo_npy_files(
    directory: str, stage: str, prefixes: Optional[Sequence[str]] = None
) -> Tuple[str, List[Tuple[str, str, str]]]:
    """The files ``criteo_npy_datapipe`` reads for ``stage``: ``(TorchRec stage, [(dense, sparse, labels) paths])``.

    Raises:
        FileNotFoundError: if no layout matches or a file of the layout is missing (naming it).
        ValueError: on an unknown stage.
    """
    if stage not in ("train", "val", "test"):
        raise ValueError(f"stage must be 'train', 'val' or 'test', got {stage!r}")
    pipe_stage = "train"  # read whole files unless TorchRec's day layout halves the last day
    if prefixes is None:
        days = sorted(
            int(m.group(1))
            for p in glob.glob(os.path.join(directory, "day_*_dense.npy"))
            if (m := re.fullmatch(r"day_(\d+)_dense\.npy", os.path.basename(p)))
        )
        if len(days) >= 2:
            prefixes = [f"day_{d}" for d in days[:-1]] if stage == "train" else [f"day_{days[-1]}"]
            pipe_stage = stage
        elif os.path.isfile(os.path.join(directory, f"{stage}_dense.npy")):
            prefixes = [stage]
        else:
            raise FileNotFoundError(
                f"{directory}: no Criteo npy layout for stage {stage!r} (need >= 2 day_X_*.npy or {stage}_*.npy)"
            )
    return pipe_stage, [_npy_triplet(directory, p) for p in prefixes]


def criteo_npy_datapipe(
    directory: str,
    stage: str,
    batch_size: int,
    *,
    num_embeddings_per_feature: Optional[Sequence[int]] = None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    shuffle_batches: bool = False,
    mmap_mode: bool = False,
    prefixes: Optional[Sequence[str]] = None,
) -> InMemoryBinaryCriteoIterDataPipe:
    """TorchRec's ``InMemoryBinaryCriteoIterDataPipe`` over the npy files of ``directory``.

    File layouts (``{prefix}_dense.npy`` float32 ``[N, 13]``, ``_sparse.npy`` int ``[N, 26]``, ``_labels.npy``
    ``[N, 1]``, as written by ``torchrec/datasets/scripts/npy_preproc_criteo.py``; note that its dense values are
    already ``log(x - min + 2)``-transformed, unlike ``CriteoTSVReader``'s ``log(1 + max(x, 0))``):

    - ``day_0 .. day_K``: TorchRec's convention; ``"train"`` reads every day but the last, ``"val"`` / ``"test"``
      the first / second half of the last day.
    - ``train_*`` (and optionally ``val_*``, ``test_*``): each stage reads its own whole file.
    - ``prefixes``: explicit list of file prefixes, read whole for any stage.

    Labels come back as TorchRec stores them (int), ids modulo ``num_embeddings_per_feature`` when given. Sharding
    and ``drop_last`` are TorchRec's: each rank reads a contiguous block of rows. TorchRec's constructor calls
    ``np.random.seed(0)`` (global NumPy state); our loaders use their own generators and are unaffected.

    Raises:
        FileNotFoundError: if no layout matches.
        ValueError: on an unknown stage.
    """
    check_rank(batch_size, rank, world_size)
    pipe_stage, triplets = criteo_npy_files(directory, stage, prefixes)
    return InMemoryBinaryCriteoIterDataPipe(
        stage=pipe_stage,
        dense_paths=[t[0] for t in triplets],
        sparse_paths=[t[1] for t in triplets],
        labels_paths=[t[2] for t in triplets],
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        shuffle_batches=shuffle_batches,
        mmap_mode=mmap_mode,
        hashes=list(num_embeddings_per_feature) if num_embeddings_per_feature is not None else None,
    )
