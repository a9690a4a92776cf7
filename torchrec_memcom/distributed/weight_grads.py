# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom's per-id weights' gradient from the gradient of a rank's pooled lookup output, in one kernel.

FBGEMM's weighted TBE computes the gradient of every per-sample weight it gets (one warp per bag, also for the
features whose weights are the constant 1), TorchRec scales it in a Python autograd node, and MEmCom's weight update
consumes it. Here the lookup gets detached weights instead, so FBGEMM computes no such gradient, and a forward hook on
the lookup puts ``PooledWeightGrads``' node on its output: its backward runs before the TBE's (which consumes its
gradient), while ``U`` still holds the rows of the forward, and computes ``<d loss / d out[s, c_f : c_f + D_f],
U_f[row_j]>`` for MEmCom's positions only (``ops.pooled_weight_grads``), then applies the weight update.

It applies to a lookup whose MEmCom tables all sit in one FBGEMM TBE in HBM (or host memory, on CPU), in fp32 / fp16
/ bf16; any other lookup keeps FBGEMM's gradient (``for_lookup`` returns ``None``).
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
from fbgemm_gpu.split_embedding_configs import SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.distributed import _compat
from torchrec_memcom.ops import pooled_weight_grads, triton_enabled

__all__ = ["PooledWeightGrads"]

_PLACEMENTS = {EmbeddingLocation.DEVICE.value: "weights_dev", EmbeddingLocation.HOST.value: "weights_host"}
_PRECISIONS = (SparseType.FP32, SparseType.FP16, SparseType.BF16)

# update(w_index, grad, scale): MEmCom's fused weight update (``EntityWeightOptimizer.update``).
Update = Callable[[torch.Tensor, torch.Tensor, float], None]


class _WeightGradNode(torch.autograd.Function):
    """Identity on the pooled output; its backward computes the per-sample weights' gradient and updates ``w``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pooled: torch.Tensor,
        rows: torch.Tensor,
        w_index: torch.Tensor,
        offsets: torch.Tensor,
        owner: "PooledWeightGrads",
        params: Tuple[torch.Tensor, int],
        update: Update,
    ) -> torch.Tensor:
        ctx.save_for_backward(rows, w_index, offsets)
        ctx.owner, ctx.params, ctx.update = owner, params, update
        return pooled

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Any, ...]:  # type: ignore[override]
        rows, w_index, offsets = ctx.saved_tensors
        table, max_dim = ctx.params
        g = pooled_weight_grads(grad, ctx.owner.weights(), rows, offsets, table, max_dim)
        ctx.update(w_index, g, ctx.owner.scale)
        return grad, None, None, None, None, None, None


class PooledWeightGrads:
    """For one sharding's lookup on this rank: where each MEmCom feature's rows live in its TBE, and the hook that
    puts the weight-gradient node on the lookup's output for the batch ``expect`` announced.

    Args:
        tbe (nn.Module): the FBGEMM TBE holding every MEmCom table of the lookup.
        tables (Dict[str, Tuple[int, int]]): per physical table of the lookup, ``(element offset in the TBE's weights
            or -1 if its weights need no gradient, dim)``.
        features (Dict[str, str]): feature -> physical table, every feature of the lookup.
        scale (float): factor TorchRec applies to per-sample weight gradients (``CommOpGradientScaling``), kept so
            the update sees the gradient it saw through FBGEMM.
    """

    def __init__(
        self, tbe: nn.Module, tables: Dict[str, Tuple[int, int]], features: Dict[str, str], scale: float
    ) -> None:
        self._tbe = tbe
        self._attr = _PLACEMENTS[int(tbe.weights_physical_placements[0])]
        self._tables = tables
        self._features = features
        self.scale = scale
        self._params: Dict[Tuple[str, ...], Tuple[torch.Tensor, int, int]] = {}
        self._pending: Optional[Tuple[KeyedJaggedTensor, torch.Tensor, torch.Tensor, Update]] = None

    @classmethod
    def for_lookup(cls, lookup: nn.Module, memcom_tables: Set[str]) -> Optional["PooledWeightGrads"]:
        """The weight gradients of ``lookup``'s MEmCom tables, or ``None`` when they are not all in one TBE with
        rows this kernel reads (HBM or host memory, float weights) or Triton cannot run on its device."""
        kernels = _compat.lookup_kernels(lookup)
        holding = [(e, t) for e, t in kernels if any(c.name in memcom_tables for c in e._config.embedding_tables)]
        if len(holding) != 1 or holding[0][1] is None:
            return None
        emb, tbe = holding[0]
        specs = emb._config.embedding_tables
        placements = [int(p) for p in tbe.weights_physical_placements]
        memcom = [i for i, t in enumerate(specs) if t.name in memcom_tables]
        if len(set(placements)) != 1 or placements[0] not in _PLACEMENTS or tbe.weights_precision not in _PRECISIONS:
            return None
        if placements[0] == EmbeddingLocation.DEVICE.value and not triton_enabled(tbe.weights_dev):
            return None  # CUDA without Triton: FBGEMM's gradient, no per-position gather of rows in PyTorch
        tables: Dict[str, Tuple[int, int]] = {}
        features: Dict[str, str] = {}
        for e, _ in kernels:
            for t in e._config.embedding_tables:
                tables[t.name] = (-1, t.local_cols)
                features.update({f: t.name for f in t.feature_names})
        for i in memcom:
            tables[specs[i].name] = (int(tbe.weights_physical_offsets[i]), specs[i].local_cols)
        return cls(tbe, tables, features, _compat.lookup_weight_grad_scale(lookup))

    def weights(self) -> torch.Tensor:
        """The TBE's flat rows now (read at backward, before the TBE's own backward updates them)."""
        return getattr(self._tbe, self._attr)

    def _table(self, keys: Sequence[str]) -> Tuple[torch.Tensor, int, int]:
        """``(params, max dim, total dim)`` of ``ops.pooled_weight_grads`` for a KJT of ``keys`` (cached)."""
        key = tuple(keys)
        if key not in self._params:
            rows, col = [], 0
            for f in keys:
                base, dim = self._tables[self._features[f]]
                rows.append([base, dim, col])
                col += dim
            device = self.weights().device
            params = torch.tensor(rows, dtype=torch.int64, device=device).reshape(-1, 3)
            self._params[key] = (params, max((r[1] for r in rows), default=1), col)
        return self._params[key]

    def expect(self, kjt: KeyedJaggedTensor, rows: torch.Tensor, w_index: torch.Tensor, update: Update) -> None:
        """Announces the lookup's next input (``kjt``, weights detached) and its MEmCom rows and weight slots."""
        self._pending = (kjt, rows, w_index, update)

    def hook(self, _: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> Optional[torch.Tensor]:
        """Forward hook of the lookup: the weight-gradient node on ``output`` for the announced batch."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        kjt, rows, w_index, update = pending
        if not args or args[0] is not kjt:
            raise RuntimeError("MEmCom weight gradients: the lookup ran on another input than the one announced")
        params, max_dim, total = self._table(kjt.keys())
        if output.dim() != 2 or output.shape[1] != total:
            raise RuntimeError(
                f"MEmCom weight gradients: lookup output {tuple(output.shape)}, expected {total} columns"
            )
        return _WeightGradNode.apply(output, rows, w_index, kjt.offsets(), self, (params, max_dim), update)


def attach(
    lookups: List[nn.Module], has_memcom: List[bool], memcom_tables: Set[str]
) -> List[Optional[PooledWeightGrads]]:
    """A ``PooledWeightGrads`` hooked on every lookup with MEmCom features that allows it (else ``None``)."""
    out: List[Optional[PooledWeightGrads]] = []
    for lookup, has in zip(lookups, has_memcom):
        grads = PooledWeightGrads.for_lookup(lookup, memcom_tables) if has else None
        if grads is not None:
            lookup.register_forward_hook(grads.hook)
        out.append(grads)
    return out
