# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Tiny DLRM runs for the recipe tests: overrides of the ``synthetic_criteo_stock`` preset (every table type, two of
them row-wise), small Criteo TSV files, and an in-process single-rank launcher (no process start-up cost)."""

import os
import random
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest
import torch
from torchrec.test_utils import get_free_port

from torchrec_memcom.recipes import dlrm

CONFIG = "synthetic_criteo_stock"
STEPS = 8

TINY: List[str] = [
    "data.num_features=6",
    "data.num_embeddings=2000",
    "data.train_rows=4096",
    "data.eval_rows=512",
    "model.embedding_dim=16",
    "model.dense_arch_layer_sizes=[16, 16]",
    "model.over_arch_layer_sizes=[16, 1]",
    "tables={cat_0: {type: memcom, compression: 4}, cat_1: {type: lma, compression: 4, chunk_size: 8},"
    " cat_2: {type: qr, compression: 4}, cat_3: {type: hash, compression: 4}}",
    "sharding={cat_0: [row_wise], cat_1: [row_wise]}",
    "train.batch_size=64",
    f"train.max_steps={STEPS}",
    "train.log_every_steps=2",
    "train.lma_signature_rows=2000",
    "eval.batch_size=100",
    "eval.every_steps=4",
    "output.run_name=tiny",
]
"""Six synthetic features (one table of each type, stock for the rest), 8 steps of 64 rows per rank."""


def criteo_lines(n: int, seed: int = 0) -> List[str]:
    """``n`` well-formed Criteo TSV lines (with their newline)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        dense = ["" if rng.random() < 0.2 else str(rng.randint(-3, 500)) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{rng.getrandbits(32):08x}" for _ in range(26)]
        lines.append("\t".join([str(rng.randint(0, 1)), *dense, *cats]) + "\n")
    return lines


def criteo_tsv_config(train: Path, test: Path, *extra: str) -> List[str]:
    """Overrides that turn the tiny run into a stock DLRM on two TSV files (26 tables of 100 rows)."""
    return [
        f"data={{name: criteo_tsv, train_paths: [{train}], test_paths: [{test}], num_embeddings: 100}}",
        "tables={}",
        "sharding={}",
        "model.embedding_dim=8",
        "model.dense_arch_layer_sizes=[8, 8]",
        "model.over_arch_layer_sizes=[8, 1]",
        "eval.every_steps=null",
        "eval.batch_size=64",
        *extra,
    ]


def run_in_process(monkeypatch: pytest.MonkeyPatch, overrides: Sequence[str], *flags: str) -> Dict[str, Any]:
    """``python -m torchrec_memcom.recipes.dlrm --config synthetic_criteo_stock --set TINY overrides`` as rank 0 of
    a one-process job, in this process; returns the results (or raises what the recipe raises)."""
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="localhost")
    for k, v in {**env, "MASTER_PORT": str(get_free_port())}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU and gloo even on a GPU machine
    return dlrm.main(["--config", CONFIG, *flags, "--set", *TINY, *overrides])


def committed(directory: Path) -> List[str]:
    """Names of the committed checkpoints in ``directory``."""
    return sorted(p.name for p in directory.glob("step_*") if (p / "checkpoint.json").is_file())


def files_of(path: Path) -> List[str]:
    return sorted(os.listdir(path))
