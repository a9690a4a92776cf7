# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom's per-id weights on a rank: a flat local vector, a lookup whose backward updates it in place (fused, like
TBE's optimizers), and the ``FusedOptimizer`` that exposes it to ``DistributedModelParallel``.

The flat vector ends with ``ops.ONE_SLOTS`` constant slots fixed at 1: every feature of the physical lookup that is not
MEmCom reads its per-sample weights there, so one gather gives the weights of a whole mixed batch.
"""

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.optim.fused import FusedOptimizer

from torchrec_memcom.distributed.entity_update_graphs import EntityUpdateGraphs
from torchrec_memcom.ops import ONE_SLOTS, memcom_local_rows, triton_enabled

__all__ = [
    "EntityWeightOptimizer",
    "TableRule",
    "UPDATE_MODES",
    "entity_weights_at",
    "memcom_rows_and_weights",
    "rule_for",
    "update_mode",
]

_SGD = "sgd"
_ADAGRAD = "adagrad"
_KINDS = {
    EmbOptimType.EXACT_SGD: _SGD,
    EmbOptimType.EXACT_ADAGRAD: _ADAGRAD,
    # One weight per id is a row of width 1, so row-wise Adagrad is element-wise Adagrad.
    EmbOptimType.EXACT_ROWWISE_ADAGRAD: _ADAGRAD,
}

# How the CUDA update sums duplicate ids (GPU and host time per update on an H200, `scripts/bench_entity_update.py`,
# docs/perf/HISTORY.md, eighth session): below LARGE_BATCH_POSITIONS positions, index_add_ into a scratch, then one lane
# per position swaps its id's sum out (atomics are cheap at that size); from there on, the block-sorted update: each
# block of positions sorts its ids in registers and adds each id's sum with one atomic (one atomic per position contends
# on Zipf-hot ids), then one lane per id and block swaps it out. Both are two launches. From 655k positions on, the
# block-sorted update was the fastest way or within 17% of it in every measured case (32M weights: 0.09 / 0.19 / 0.40 ms
# at 655k / 1.3M / 2.6M positions, the global sort 0.16 / 0.22 / 0.38; 800k weights in 8 tables: 0.14 / 0.29 ms at 1.3M
# / 2.6M, "dense" 0.12 / 0.31; 800k weights in one table: 0.19 / 0.37, "dense" 0.30 / 0.60). "dense" (one lane per
# weight) and "sorted" (a global sort, a gather, a float64 cumulative sum, one lane per run of equal ids: 19 GPU ops and
# 2-3x the host time) stay available as modes.
LARGE_BATCH_POSITIONS = 2**19


UPDATE_MODES = ("per_position", "dense", "sorted", "block_sorted")


def update_mode(positions: int) -> str:
    """How the CUDA update sums the duplicate ids of ``positions`` gradients: one of ``UPDATE_MODES`` (see
    ``LARGE_BATCH_POSITIONS``; the weight vector's size did not change the best choice on an H200)."""
    return "per_position" if positions < LARGE_BATCH_POSITIONS else "block_sorted"


# (rule, learning-rate scale): how one table's weights train; the learning rate is its param group's times the scale.
TableRule = Tuple[str, float]


def rule_for(table: str, configured: Optional[str], shared_table_optim: Optional[EmbOptimType]) -> str:
    """The update rule of ``table``'s weights: the configured one, else the one matching its shared table's."""
    if configured is not None:
        return configured
    if shared_table_optim not in _KINDS:
        raise NotImplementedError(
            f"MEmCom table '{table}': its entity weights follow the shared table's fused optimizer unless "
            f"entity_weight_optimizer is set; supported: {sorted(o.name for o in _KINDS)}, got {shared_table_optim}"
        )
    return _KINDS[shared_table_optim]


class _LocalRowsAndWeights(torch.autograd.Function):
    """``ops.memcom_local_rows`` with its ``weight[w_index]`` differentiable: the backward hands ``(w_index, grad)`` to
    ``update`` instead of producing ``weight.grad`` (the rows take no gradient)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        local_ids: torch.Tensor,
        lengths: torch.Tensor,
        params: torch.Tensor,
        weight: torch.Tensor,
        update: Callable[[torch.Tensor, torch.Tensor], None],
        offsets: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        rows, w_index, weights = memcom_local_rows(local_ids, lengths, params, weight.detach(), offsets)
        assert weights is not None
        ctx.save_for_backward(w_index)
        ctx.update = update
        ctx.mark_non_differentiable(rows)
        ctx.set_materialize_grads(False)  # else autograd fills a zero gradient for the (integer) rows every step
        return rows, weights

    @staticmethod
    def backward(ctx: Any, _rows_grad: Any, grad: Optional[torch.Tensor]) -> Tuple[None, ...]:  # type: ignore[override]
        if grad is not None:
            (w_index,) = ctx.saved_tensors
            ctx.update(w_index, grad)
        return None, None, None, None, None, None


def memcom_rows_and_weights(
    local_ids: torch.Tensor,
    lengths: torch.Tensor,
    params: torch.Tensor,
    weight: torch.Tensor,
    update: Callable[[torch.Tensor, torch.Tensor], None],
    offsets: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(rows, weight[w_index])`` of ``ops.memcom_local_rows`` (one kernel on CUDA), with a backward that applies
    ``update(w_index, grad)`` in place."""
    return _LocalRowsAndWeights.apply(local_ids, lengths, params, weight, update, offsets)


class _WeightsAt(torch.autograd.Function):
    """``weight[slots]``, whose backward hands ``(slots, grad)`` to ``update`` instead of producing ``weight.grad``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, weight: torch.Tensor, slots: torch.Tensor, update: Callable[[torch.Tensor, torch.Tensor], None]
    ) -> torch.Tensor:
        ctx.save_for_backward(slots)
        ctx.update = update
        return weight.detach().index_select(0, slots)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, ...]:  # type: ignore[override]
        (slots,) = ctx.saved_tensors
        ctx.update(slots, grad)
        return None, None, None


def entity_weights_at(
    weight: torch.Tensor, slots: torch.Tensor, update: Callable[[torch.Tensor, torch.Tensor], None]
) -> torch.Tensor:
    """``weight[slots]`` (slots that ``IdTransform.transform_with_slots`` wrote), with a backward that applies
    ``update(slots, grad)`` in place."""
    return _WeightsAt.apply(weight, slots, update)


class EntityWeightOptimizer(FusedOptimizer):
    """Sparse SGD / Adagrad on a rank's flat entity-weight vector, applied during backward, per-table rules.

    Only the ids of the batch are touched: gradients of duplicate ids are summed first, then ``w -= lr * g`` (SGD) or
    ``G += g**2; w -= lr * g / (sqrt(G) + eps)`` (Adagrad), exactly the dense ``torch.optim`` update restricted to
    the ids with a gradient. ``lr`` is the table's param-group learning rate (``entity_weights.<table>``) times its
    scale; ``grad_scale`` matches TorchRec's gradient semantics (see ``ShardedCompressedEmbeddingBagCollection``).
    The last ``ops.ONE_SLOTS`` slots of ``weight`` are the constant 1 of non-MEmCom features: never updated.

    Args:
        weight (torch.Tensor): the flat local vector (all tables' local shards, then the constant slots).
        params (Mapping[str, ShardedTensor]): per-table sharded views of ``weight``, keyed ``entity_weights.<t>``.
        table_slices (Mapping[str, slice]): where each table lives in ``weight`` (in order).
        rules (Mapping[str, TableRule]): per table, ``(rule, lr scale)``.
        lrs (Mapping[str, float]): per table, the base learning rate (its shared table's).
        eps (float): Adagrad's epsilon.
        grad_scale (float): factor applied to incoming gradients.
        make_sharded (Callable[[str, torch.Tensor], ShardedTensor]): wraps a table's slice of a flat local vector
            laid out like ``weight`` (its optimizer state) as a ShardedTensor.
        mode (Optional[str]): one of ``UPDATE_MODES`` for every CUDA update (tests, benchmarks); ``None``: the one
            ``update_mode`` picks per batch. Also settable later as ``optimizer.mode``.
        graphs (Optional[bool]): with ``mode=None`` on CUDA, replay the block-sorted update from CUDA graphs
            (``EntityUpdateGraphs``: one replay and two copies of host work instead of two Triton launches); ``None``:
            on unless the environment sets ``TORCHREC_MEMCOM_UPDATE_GRAPHS=0``.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        params: Mapping[str, ShardedTensor],
        table_slices: Mapping[str, slice],
        rules: Mapping[str, TableRule],
        lrs: Mapping[str, float],
        eps: float,
        grad_scale: float,
        make_sharded: Callable[[str, torch.Tensor], ShardedTensor],
        mode: Optional[str] = None,
        graphs: Optional[bool] = None,
    ) -> None:
        if mode is not None and mode not in UPDATE_MODES:
            raise ValueError(f"entity-weight update mode {mode!r}: expected one of {UPDATE_MODES} or None")
        self.mode = mode
        self._weight = weight
        self._scale = grad_scale
        self._eps = eps
        self._tables: List[str] = list(table_slices)
        self._slices = dict(table_slices)
        self._rules = dict(rules)
        any_adagrad = any(r == _ADAGRAD for r, _ in self._rules.values())
        self._sum = torch.zeros_like(weight) if any_adagrad else None
        self._scratch = torch.zeros_like(weight)
        device = weight.device
        starts = [self._slices[t].start for t in self._tables]
        self._ones_start = weight.numel() - ONE_SLOTS
        self._bounds = torch.tensor(starts[1:] + [self._ones_start], dtype=torch.int64, device=device)
        self._adagrad = torch.tensor(
            [self._rules[t][0] == _ADAGRAD for t in self._tables] + [False], dtype=torch.bool, device=device
        )
        if graphs is None:
            graphs = os.environ.get("TORCHREC_MEMCOM_UPDATE_GRAPHS", "1") != "0"
        self.graphs = EntityUpdateGraphs(self._block_sorted_update) if graphs and weight.is_cuda else None
        state: Dict[Any, Any] = {}
        groups: List[Dict[str, Any]] = []
        for t in self._tables:
            key = f"entity_weights.{t}"
            if self._sum is not None and self._rules[t][0] == _ADAGRAD:
                state[params[key]] = {"sum": make_sharded(t, self._sum)}
            groups.append({"params": [params[key]], "lr": lrs[t], "eps": eps})
        super().__init__(dict(params), state, groups)
        self._lrs = self._group_lrs()
        lr = torch.tensor([*self._lrs, 0.0], dtype=weight.dtype, device=device)
        # the CUDA kernels' rule arguments: fixed tensors (a captured update reads them at their addresses)
        self._rule = (self._bounds, lr, self._adagrad, eps, grad_scale)

    def _group_lrs(self) -> Tuple[float, ...]:
        """Per table, its param group's lr times its scale."""
        return tuple(float(g["lr"]) * self._rules[t][1] for g, t in zip(self.param_groups, self._tables))

    def _refresh_lr(self) -> None:
        """Writes the per-table learning rates (plus 0 for the constant slots) into the rule's vector, in place, when a
        group's lr has changed."""
        lrs = self._group_lrs()
        if lrs != self._lrs:
            self._lrs = lrs
            self._rule[1].copy_(torch.tensor([*lrs, 0.0], dtype=self._weight.dtype))

    def _block_sorted_update(self, index: torch.Tensor, grad: torch.Tensor) -> None:
        """The block-sorted CUDA update (two launches); positions whose ``index`` is -1 are skipped."""
        from torchrec_memcom.ops._triton_entity_update import entity_aggregate_triton, entity_update_triton

        leaders = entity_aggregate_triton(index, grad, self._scratch)
        entity_update_triton(leaders, self._scratch, self._weight, self._sum, *self._rule)

    @torch.no_grad()
    def update(self, index: torch.Tensor, grad: torch.Tensor) -> None:
        """Applies the update for ``grad`` of ``weight[index]`` (duplicates summed).

        No host-device synchronisation: gathers, ``index_add_`` / ``index_copy_`` / ``index_fill_`` scatters and
        elementwise ops (an ``index_put_`` of a Python scalar would copy it to the device and wait). On CUDA, the
        gradient sum per id (an ``index_add_``, per-block sums with one atomic per id and block, or a sort and a
        cumulative sum) then one fused update kernel, by the position that swaps the sum out (each id's first
        position in its block), one lane per weight, or the last position of each id's run (see
        ``LARGE_BATCH_POSITIONS``). With ``mode=None`` and ``graphs`` on, the block-sorted way replayed from a CUDA
        graph per bucket of batch sizes once a bucket comes a second time (``EntityUpdateGraphs``).
        """
        if index.numel() == 0:
            return
        grad = grad.to(self._weight.dtype)
        self._refresh_lr()
        mode = (self.mode or update_mode(index.numel())) if triton_enabled(index) else None
        if mode is not None:
            from torchrec_memcom.ops._triton_entity_update import entity_update_sorted_triton, entity_update_triton

            rule = self._rule
            if self.mode is None and self.graphs is not None and self.graphs(index, grad):
                return  # the block-sorted update, replayed
            if mode == "sorted":
                entity_update_sorted_triton(index, grad, self._weight, self._sum, *rule)
                return
            if mode == "block_sorted":
                self._block_sorted_update(index, grad)
                return
            self._scratch.index_add_(0, index, grad)  # scaled once per id in the kernel, not per position
            entity_update_triton(index, self._scratch, self._weight, self._sum, *rule, dense=mode == "dense")
            return
        index = index.to(torch.int64)  # index_fill_ / index_copy_ take int64 only
        scratch = self._scratch
        scratch.index_add_(0, index, grad)  # scaled once per id below, not per position
        g = scratch.index_select(0, index) * self._scale  # each id's summed gradient, at every one of its positions
        scratch.index_fill_(0, index, 0.0)
        table = torch.bucketize(index, self._bounds, right=True)
        lr = self._rule[1].index_select(0, table)
        if self._sum is not None:
            ada = self._adagrad.index_select(0, table)
            total = self._sum.index_select(0, index) + torch.where(ada, g * g, torch.zeros_like(g))
            self._sum.index_copy_(0, index, total)  # duplicates write the same value
            g = torch.where(ada, g / (total.sqrt() + self._eps), g)
        self._weight.index_copy_(0, index, self._weight.index_select(0, index) - lr * g)
        self._weight.narrow(0, self._ones_start, ONE_SLOTS).fill_(1.0)  # the constant slots

    def step(self, closure: Any = None) -> None:
        pass

    def zero_grad(self, set_to_none: bool = False) -> None:
        pass


def table_slices(sizes: Sequence[Tuple[str, int]]) -> Dict[str, slice]:
    """Consecutive slices of a flat vector for ``(table, size)`` pairs."""
    out, offset = {}, 0
    for name, size in sizes:
        out[name] = slice(offset, offset + size)
        offset += size
    return out
