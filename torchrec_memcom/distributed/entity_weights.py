# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom's per-id weights on a rank: a flat local vector, a lookup whose backward updates it in place (fused, like
TBE's optimizers), and the ``FusedOptimizer`` that exposes it to ``DistributedModelParallel``."""

from typing import Any, Callable, Dict, List, Mapping, Tuple

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.optim.fused import FusedOptimizer

__all__ = ["EntityWeightOptimizer", "fused_entity_weight_lookup", "optimizer_kind"]

_SGD = "sgd"
_ADAGRAD = "adagrad"
_KINDS = {
    EmbOptimType.EXACT_SGD: _SGD,
    EmbOptimType.EXACT_ADAGRAD: _ADAGRAD,
    # One weight per id is a row of width 1, so row-wise Adagrad is element-wise Adagrad.
    EmbOptimType.EXACT_ROWWISE_ADAGRAD: _ADAGRAD,
}


def optimizer_kind(optim: EmbOptimType) -> str:
    """The update rule applied to the entity weights when their shared table is trained with ``optim``."""
    if optim not in _KINDS:
        raise NotImplementedError(
            f"MEmCom entity weights follow their shared table's fused optimizer; supported: "
            f"{sorted(o.name for o in _KINDS)}, got {optim}"
        )
    return _KINDS[optim]


class _FusedLookup(torch.autograd.Function):
    """``weight[index]`` whose backward hands ``(index, grad)`` to ``update`` instead of producing ``weight.grad``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, index: torch.Tensor, weight: torch.Tensor, update: Callable[[torch.Tensor, torch.Tensor], None]
    ) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.update = update
        return weight.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, None, None]:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        ctx.update(index, grad)
        return None, None, None


def fused_entity_weight_lookup(
    index: torch.Tensor, weight: torch.Tensor, update: Callable[[torch.Tensor, torch.Tensor], None]
) -> torch.Tensor:
    """``weight[index]`` with a backward that applies ``update(index, grad)`` in place."""
    return _FusedLookup.apply(index, weight, update)


class EntityWeightOptimizer(FusedOptimizer):
    """Sparse SGD / Adagrad on a rank's flat entity-weight vector, applied during backward.

    Only the ids of the batch are touched: gradients of duplicate ids are summed first (a scratch vector, cleared
    at the touched positions after use), then ``w -= lr * g`` (SGD) or ``G += g**2; w -= lr * g / (sqrt(G) + eps)``
    (Adagrad), exactly the dense ``torch.optim`` update restricted to the ids with a gradient. ``grad_scale``
    matches TorchRec's gradient semantics (see ``ShardedMEmComEmbeddingBagCollection``).

    Args:
        weight (torch.Tensor): the flat local vector (all tables' local shards).
        params (Mapping[str, ShardedTensor]): per-table sharded views of ``weight``, keyed by FQN.
        table_slices (Mapping[str, slice]): where each table lives in ``weight``.
        kinds (Mapping[str, str]): per table, ``"sgd"`` or ``"adagrad"``.
        lrs (Mapping[str, float]): per-table learning rates.
        eps (float): Adagrad's epsilon.
        grad_scale (float): factor applied to incoming gradients.
        make_sharded (Callable[[str, torch.Tensor], ShardedTensor]): wraps a table's slice of a flat local vector
            laid out like ``weight`` (its optimizer state) as a ShardedTensor.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        params: Mapping[str, ShardedTensor],
        table_slices: Mapping[str, slice],
        kinds: Mapping[str, str],
        lrs: Mapping[str, float],
        eps: float,
        grad_scale: float,
        make_sharded: Callable[[str, torch.Tensor], ShardedTensor],
    ) -> None:
        self._weight = weight
        self._scale = grad_scale
        self._eps = eps
        self._slices = dict(table_slices)
        kind_set = set(kinds.values())
        if len(kind_set) > 1 or len(set(lrs.values())) > 1:
            raise ValueError(
                f"MEmCom tables of one module must share one optimizer and learning rate, got {dict(kinds)} "
                f"and {dict(lrs)}"
            )
        self._kind = kind_set.pop() if kind_set else _SGD
        self._sum = torch.zeros_like(weight) if self._kind == _ADAGRAD else None
        self._scratch = torch.zeros_like(weight) if self._kind == _ADAGRAD else None
        state: Dict[Any, Any] = {}
        if self._sum is not None:
            for name, st in params.items():
                table = name.split(".")[-1]
                state[st] = {"sum": make_sharded(table, self._sum)}
        lr = next(iter(lrs.values()), 0.0)
        param_groups: List[Dict[str, Any]] = [{"params": list(params.values()), "lr": lr, "eps": eps}]
        super().__init__(dict(params), state, param_groups)

    @property
    def lr(self) -> float:
        return float(next(iter(self.param_groups))["lr"])

    @torch.no_grad()
    def update(self, index: torch.Tensor, grad: torch.Tensor) -> None:
        """Applies the update for ``grad`` of ``weight[index]`` (duplicates summed)."""
        if index.numel() == 0:
            return
        if self._sum is None:  # SGD: w[i] -= lr * (sum of i's gradients), duplicates accumulated by index_add
            self._weight.index_add_(0, index, grad.to(self._weight.dtype), alpha=-self.lr * self._scale)
            return
        scratch = self._scratch
        scratch.index_add_(0, index, grad.to(scratch.dtype) * self._scale)
        g = scratch[index]
        scratch[index] = 0
        total = self._sum[index] + g * g
        self._sum[index] = total
        self._weight[index] = self._weight[index] - self.lr * g / (total.sqrt() + self._eps)

    def step(self, closure: Any = None) -> None:
        pass

    def zero_grad(self, set_to_none: bool = False) -> None:
        pass
