# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""What the benchmarks of FBGEMM's TBE alone share (``scripts/bench_tbe_index_dtype.py``,
``scripts/bench_lma_dedup.py``): their command line and a training TBE with fused exact row-wise Adagrad on the GPU or
the CPU."""

import argparse
from typing import List, Optional, Sequence

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode, EmbeddingLocation
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
)

__all__ = ["parse_tbe_args", "training_tbe"]


def parse_tbe_args(description: str, argv: Sequence[str]) -> argparse.Namespace:
    """``--device``, ``--scale`` (rows and batch divided by it), ``--iters`` (timed calls per pass), ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--scale", type=int, default=1, help="divide every table's rows and the batch by this")
    parser.add_argument("--iters", type=int, default=50, help="timed calls per pass")
    parser.add_argument("--out", default=None, help="JSON of the results")
    return parser.parse_args(list(argv) or None)


def training_tbe(
    rows: Sequence[int],
    dim: int,
    feature_table_map: List[int],
    device: torch.device,
    bounds_check_mode: Optional[BoundsCheckMode] = None,
    learning_rate: float = 0.01,
    eps: float = 1e-8,
) -> SplitTableBatchedEmbeddingBagsCodegen:
    """Tables of ``rows`` x ``dim`` in HBM (or host memory on CPU) with fused exact row-wise Adagrad; FBGEMM's bounds
    check unless ``bounds_check_mode`` is given."""
    cuda = device.type == "cuda"
    location, compute = (
        (EmbeddingLocation.DEVICE, ComputeDevice.CUDA) if cuda else (EmbeddingLocation.HOST, ComputeDevice.CPU)
    )
    kwargs = {} if bounds_check_mode is None else {"bounds_check_mode": bounds_check_mode}
    return SplitTableBatchedEmbeddingBagsCodegen(
        [(r, dim, location, compute) for r in rows],
        feature_table_map=feature_table_map,
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        learning_rate=learning_rate,
        eps=eps,
        **kwargs,
        **({} if cuda else {"device": "cpu"}),
    )
