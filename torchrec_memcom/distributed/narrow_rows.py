# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A faster backward for the fused TBEs of narrow rows in a sharded collection (LMA's memory: rows of 16 floats).

FBGEMM's TBE backward with fused ``EXACT_ROWWISE_ADAGRAD`` is the bulk of LMA's step: at ``big``'s shapes it spends
2 ms per step on 21M lookups of 16-wide rows (docs/PERFORMANCE.md). ``use_narrow_row_backward`` keeps FBGEMM's TBE,
its weights, optimizer state, forward kernel, state dict and checkpoints, and replaces only its backward, for each
TBE that qualifies (``narrow_row_plan``), by ``ops.pooled_rowwise_adagrad_``, which updates the same weights and
momentum in place. Any call the fused backward does not cover (per-sample weights, variable batch sizes per feature,
extra FBGEMM arguments) goes to FBGEMM as before. ``TORCHREC_MEMCOM_NARROW_ROWS=0`` leaves every TBE to FBGEMM.
"""

import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode

from torchrec_memcom.distributed import _compat
from torchrec_memcom.ops import triton_enabled
from torchrec_memcom.ops.pooled_adagrad import pooled_rowwise_adagrad_

__all__ = [
    "NARROW_ROW_MAX_DIM",
    "NarrowRowPlan",
    "narrow_row_backward_enabled",
    "narrow_row_plan",
    "use_narrow_row_backward",
]

# the widest rows whose TBEs take the fused backward
NARROW_ROW_MAX_DIM = 32


def narrow_row_backward_enabled() -> bool:
    """``TORCHREC_MEMCOM_NARROW_ROWS``: ``1`` (default) or ``0`` (FBGEMM's backward for every TBE)."""
    value = os.environ.get("TORCHREC_MEMCOM_NARROW_ROWS", "1")
    if value not in ("0", "1"):
        raise ValueError(f"TORCHREC_MEMCOM_NARROW_ROWS={value!r}: expected 0 or 1")
    return value == "1"


@dataclass
class NarrowRowPlan:
    """What the fused backward needs of one TBE: its flat weights and momentum (the tensors FBGEMM updates), the row
    width, each feature's first row in the flat table, and the TBE (for its current learning rate and eps)."""

    tbe: Any
    weights: torch.Tensor
    momentum: torch.Tensor
    dim: int
    feature_rows: torch.Tensor


def _only_tensor(*tensors: torch.Tensor) -> Optional[torch.Tensor]:
    """The one non-empty tensor of ``tensors`` (a TBE's weights or state live in one placement), else None."""
    full = [t for t in tensors if t.numel() > 0]
    return full[0] if len(full) == 1 else None


def narrow_row_plan(tbe: Any) -> Optional[NarrowRowPlan]:
    """The fused backward's plan for an FBGEMM training TBE, or None where it does not apply: every table's rows of
    one width up to ``NARROW_ROW_MAX_DIM`` (a power of two), float32 weights and output, sum pooling, fused exact
    row-wise Adagrad without weight decay or clipping, all tables in one placement (HBM, or host memory for a CPU
    TBE) with no cache, and tables laid out one after the other (FBGEMM's layout; checked)."""
    args = getattr(tbe, "optimizer_args", None)
    specs = getattr(tbe, "embedding_specs", None)
    if args is None or not specs or getattr(tbe, "optimizer", None) != EmbOptimType.EXACT_ROWWISE_ADAGRAD:
        return None
    dims = {s[1] for s in specs}
    dim = next(iter(dims))
    if len(dims) != 1 or dim > NARROW_ROW_MAX_DIM or dim & (dim - 1):
        return None
    if (
        tbe.pooling_mode != PoolingMode.SUM
        or tbe.weights_precision != SparseType.FP32
        or tbe.output_dtype != SparseType.FP32.as_int()
        or args.weight_decay != 0.0
        or args.weight_decay_mode != WeightDecayMode.NONE.value
        or args.gradient_clipping
        or args.max_norm != 0.0
        or getattr(args, "use_rowwise_bias_correction", False)
        or getattr(tbe, "lxu_cache_weights", torch.empty(0)).numel() > 0
    ):
        return None
    weights = _only_tensor(tbe.weights_dev, tbe.weights_host, tbe.weights_uvm)
    momentum = _only_tensor(tbe.momentum1_dev, tbe.momentum1_host, tbe.momentum1_uvm)
    if weights is None or momentum is None or momentum.dtype != torch.float32:
        return None
    rows = [s[0] for s in specs]
    starts = [sum(rows[:t]) for t in range(len(rows))]
    if (
        weights.numel() != sum(rows) * dim
        or momentum.numel() != sum(rows)
        or tbe.weights_offsets.tolist() != [starts[t] * dim for t in tbe.feature_table_map]
        or tbe.momentum1_offsets.tolist() != [starts[t] for t in tbe.feature_table_map]
    ):
        return None
    feature_rows = torch.tensor([starts[t] for t in tbe.feature_table_map], dtype=torch.int64, device=weights.device)
    return NarrowRowPlan(tbe, weights.detach(), momentum, dim, feature_rows)


class _NarrowRowLookup(torch.autograd.Function):
    """FBGEMM's forward (run without autograd) and ``pooled_rowwise_adagrad_`` as the backward; ``anchor`` (FBGEMM's
    own placeholder parameter) puts the output on the autograd graph."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        anchor: torch.Tensor,
        plan: NarrowRowPlan,
        forward: Callable[..., torch.Tensor],
        indices: torch.Tensor,
        offsets: torch.Tensor,
    ) -> torch.Tensor:
        ctx.plan = plan
        ctx.save_for_backward(indices, offsets)
        return forward(indices, offsets)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, ...]:  # type: ignore[override]
        indices, offsets = ctx.saved_tensors
        plan: NarrowRowPlan = ctx.plan
        pooled_rowwise_adagrad_(
            plan.weights,
            plan.momentum,
            indices,
            offsets,
            grad,
            plan.feature_rows,
            plan.dim,
            float(plan.tbe.get_learning_rate()),
            float(plan.tbe.optimizer_args.eps),
        )
        return (None,) * 5


def _narrow_forward(plan: NarrowRowPlan, original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def forward(
        indices: torch.Tensor,
        offsets: torch.Tensor,
        per_sample_weights: Optional[torch.Tensor] = None,
        feature_requires_grad: Optional[torch.Tensor] = None,  # concerns per-sample weights only
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if per_sample_weights is not None or any(a is not None for a in (*args, *kwargs.values())):
            return original(indices, offsets, per_sample_weights, feature_requires_grad, *args, **kwargs)
        if not (torch.is_grad_enabled() and plan.tbe.training):
            return original(indices, offsets)
        return _NarrowRowLookup.apply(plan.tbe.placeholder_autograd_tensor, plan, original, indices, offsets)

    return forward


def use_narrow_row_backward(module: torch.nn.Module) -> List[str]:
    """Gives every qualifying fused TBE of a sharded collection (``module._lookups``) the fused backward (see the
    module docstring), on the GPU or under Triton's interpreter and unless ``TORCHREC_MEMCOM_NARROW_ROWS=0``; returns
    the tables of those TBEs."""
    if not narrow_row_backward_enabled():
        return []
    tables: List[str] = []
    for emb, tbe in _compat.fused_tbes(module):
        plan = narrow_row_plan(tbe)
        if plan is None or not triton_enabled(plan.weights) or "forward" in vars(tbe):
            continue
        tbe.forward = _narrow_forward(plan, tbe.forward)
        tables.extend(c.name for c in emb._config.embedding_tables)
    return tables
