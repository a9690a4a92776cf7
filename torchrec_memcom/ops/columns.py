# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Column products: the combine step of ``IdTransform`` (QR's quotient x remainder, LMA's concatenated chunks, MEAN
division) as one gather-multiply over the pooled ``(B, C_in)`` matrix, one kernel forward and one backward.

Output column ``k`` of ``ColumnProducts`` with ``(src, other, mean, power)``::

    out[:, k] = values[:, src] * (values[:, other] if other >= 0 else 1) / (divisors[:, mean] ** power if mean >= 0)

Every input column feeds at most one output column, so the gradient of input column ``j`` is again one such
product: ``grad[:, j] = g[:, k] * (values[:, partner] if partner >= 0 else 1) / divisor ** power`` (0 for a column
that feeds none): no scatter, no atomics, no split / cat copies. On CUDA (and under Triton's interpreter) both
directions are one Triton launch; elsewhere the same arithmetic in PyTorch ops.
"""

from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import torch

from torchrec_memcom.ops import triton_enabled

__all__ = ["ColumnProducts", "column_products"]

# (src, other, mean, power) of one output column; -1 = none. power is 0, 1 or 2.
Column = Tuple[int, int, int, int]


class _Columns(NamedTuple):
    src: torch.Tensor
    other: torch.Tensor
    mean: torch.Tensor
    power: torch.Tensor


class ColumnProducts:
    """The plan of a column product over ``num_inputs`` input columns (built once, tensors cached per device).

    Args:
        columns (Sequence[Column]): per output column, ``(src, other, mean, power)`` (``-1`` for no second factor or
            no divisor; ``power`` in ``{0, 1, 2}``, 0 exactly when ``mean`` is -1).
        num_inputs (int): ``C_in``.

    Raises ``ValueError`` if an input column feeds more than one output column (its gradient would need a sum) or an
    entry is out of range.
    """

    def __init__(self, columns: Sequence[Column], num_inputs: int) -> None:
        self.num_inputs = num_inputs
        self.forward_columns: List[Column] = [tuple(c) for c in columns]  # type: ignore[misc]
        backward: List[Column] = [(-1, -1, -1, 0)] * num_inputs
        for k, (src, other, mean, power) in enumerate(self.forward_columns):
            if not 0 <= src < num_inputs or not -1 <= other < num_inputs:
                raise ValueError(f"output column {k}: input columns ({src}, {other}) not in [0, {num_inputs})")
            if power not in (0, 1, 2) or (power == 0) != (mean < 0):
                raise ValueError(f"output column {k}: power {power} with mean column {mean} (power 1 or 2 iff mean)")
            for j, partner in ((src, other), (other, src)):
                if j < 0:
                    continue
                if backward[j][0] >= 0:
                    raise ValueError(f"input column {j} feeds output columns {backward[j][0]} and {k}")
                backward[j] = (k, partner, mean, power)
        self.backward_columns = backward
        self.has_mean = any(c[2] >= 0 for c in self.forward_columns)
        self._on: Dict[torch.device, Tuple[_Columns, _Columns]] = {}

    def tensors(self, device: torch.device) -> Tuple[_Columns, _Columns]:
        """``(forward, backward)`` column tensors (int32) on ``device``."""
        cached = self._on.get(device)
        if cached is None:

            def pack(cols: List[Column]) -> _Columns:
                t = torch.tensor(cols, dtype=torch.int32).reshape(-1, 4).t().contiguous().to(device)
                return _Columns(t[0], t[1], t[2], t[3])

            cached = self._on[device] = (pack(self.forward_columns), pack(self.backward_columns))
        return cached


def _gather_mul(
    a: torch.Tensor, b: torch.Tensor, divisors: torch.Tensor, cols: _Columns, has_mean: bool
) -> torch.Tensor:
    """``out[:, k] = a[:, src[k]] * b[:, other[k]] / divisors[:, mean[k]] ** power[k]`` (missing factors are 1; a
    column with ``src = -1`` is 0)."""
    out = torch.empty(a.shape[0], cols.src.numel(), dtype=a.dtype, device=a.device)
    if out.numel() == 0:
        return out
    if triton_enabled(a):
        from torchrec_memcom.ops._triton import gather_mul_triton

        gather_mul_triton(a, b, divisors, cols.src, cols.other, cols.mean, cols.power, out, has_mean)
        return out
    src, other = cols.src.long(), cols.other.long()
    x = torch.where(src >= 0, a.index_select(1, src.clamp(min=0)), 0)
    x = torch.where(other >= 0, x * b.index_select(1, other.clamp(min=0)), x)
    if has_mean:
        mean = cols.mean.long()
        d = divisors.index_select(1, mean.clamp(min=0)).to(a.dtype)
        d = torch.where(cols.power == 2, d * d, d)
        x = torch.where(mean >= 0, x / d, x)
    out.copy_(x)
    return out


class _ColumnProductsFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, values: torch.Tensor, divisors: torch.Tensor, plan: ColumnProducts
    ) -> torch.Tensor:
        fwd, bwd = plan.tensors(values.device)
        ctx.save_for_backward(values, divisors)
        ctx.bwd = bwd
        ctx.has_mean = plan.has_mean
        return _gather_mul(values, values, divisors, fwd, plan.has_mean)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor, None, None]:  # type: ignore[override]
        values, divisors = ctx.saved_tensors
        return _gather_mul(grad.contiguous(), values, divisors, ctx.bwd, ctx.has_mean), None, None


def column_products(values: torch.Tensor, divisors: torch.Tensor, plan: ColumnProducts) -> torch.Tensor:
    """The ``(B, len(plan.forward_columns))`` column products of ``values`` (``(B, plan.num_inputs)``), differentiable
    in ``values``; ``divisors`` is ``(B, M)`` (the MEAN bag sizes, as floats), not differentiated."""
    if values.dim() != 2 or values.shape[1] != plan.num_inputs:
        raise ValueError(f"values of shape {tuple(values.shape)}, expected (B, {plan.num_inputs})")
    return _ColumnProductsFunction.apply(values.contiguous(), divisors, plan)
