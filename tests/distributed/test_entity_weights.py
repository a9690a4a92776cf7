# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom's sparse in-backward optimizer: per-table rules and learning rates against dense torch.optim, duplicates
included; both fused CUDA updates (one lane per position, one per weight) equal it too."""

from typing import Dict

import pytest
import torch

from tests.interpreted import run_interpreted
from torchrec_memcom.distributed import entity_weights
from torchrec_memcom.distributed.entity_weights import EntityWeightOptimizer, table_slices
from torchrec_memcom.ops import ONE_SLOTS

SIZES = [("a", 40), ("b", 25), ("c", 0), ("d", 30)]  # "c": a table-wise table another rank holds
RULES = {"a": ("adagrad", 1.0), "b": ("sgd", 10.0), "c": ("sgd", 1.0), "d": ("adagrad", 3.0)}
LRS = {"a": 0.1, "b": 0.05, "c": 0.0, "d": 0.2}


class _FakeSharded:
    """Stands in for ShardedTensor views: the optimizer only keys its state by them."""

    def __init__(self, name: str) -> None:
        self.name = name


def _optimizer(weight: torch.Tensor, scale: float) -> EntityWeightOptimizer:
    params = {f"entity_weights.{n}": _FakeSharded(n) for n, _ in SIZES}
    return EntityWeightOptimizer(
        weight=weight,
        params=params,  # type: ignore[arg-type]
        table_slices=table_slices(SIZES),
        rules=RULES,
        lrs=LRS,
        eps=1e-8,
        grad_scale=scale,
        make_sharded=lambda table, flat: _FakeSharded(table),  # type: ignore[arg-type,return-value]
    )


def _run(device: str, steps: int = 3) -> torch.Tensor:
    total = sum(n for _, n in SIZES)
    weight = torch.linspace(0.5, 1.5, total + ONE_SLOTS, device=device)
    weight[total:] = 1.0
    opt = _optimizer(weight, scale=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, total + 3, (200,), generator=g)  # duplicates, and some constant slots
        grad = torch.randn(200, generator=g)
        opt.update(index.to(device), grad.to(device))
    return weight.cpu()


def _reference(steps: int = 3) -> torch.Tensor:
    """Dense torch.optim per table (each table its own rule and lr * scale), on the summed gradients."""
    total = sum(n for _, n in SIZES)
    weight = torch.linspace(0.5, 1.5, total + ONE_SLOTS)
    weight[total:] = 1.0
    slices = table_slices(SIZES)
    params: Dict[str, torch.Tensor] = {n: weight[slices[n]].clone().requires_grad_(True) for n, _ in SIZES}
    opts = {
        n: (torch.optim.Adagrad if RULES[n][0] == "adagrad" else torch.optim.SGD)([params[n]], lr=LRS[n] * RULES[n][1])
        for n, size in SIZES
        if size
    }
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, total + 3, (200,), generator=g)
        grad = torch.randn(200, generator=g) * 0.5
        dense = torch.zeros(total + ONE_SLOTS).index_add_(0, index, grad)
        for n, opt in opts.items():
            opt.zero_grad()
            params[n].grad = dense[slices[n]].clone()
            # torch.optim.Adagrad accumulates state for every element; ours only for touched ids: equal, since an
            # untouched id has a zero gradient and a zero step
            opt.step()
    out = torch.cat([params[n].detach() for n, _ in SIZES] + [torch.ones(ONE_SLOTS)])
    return out


def test_sparse_update_matches_dense_torch_optim() -> None:
    torch.testing.assert_close(_run("cpu"), _reference(), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dense_factor", [0, 10**6], ids=["per_position", "dense"])
def test_fused_cuda_update_matches_reference(monkeypatch: pytest.MonkeyPatch, dense_factor: int) -> None:
    monkeypatch.setattr(entity_weights, "DENSE_UPDATE_FACTOR", dense_factor)
    torch.testing.assert_close(_run("cuda"), _reference(), rtol=1e-6, atol=1e-6)


def check_dense_update_kernel_on_cpu() -> None:
    """The one-lane-per-weight update kernel on CPU tensors (under ``TRITON_INTERPRET=1``) against dense
    ``torch.optim`` (the per-position kernel's float ``atomic_xchg`` has no interpreter: GPU test only)."""
    from torchrec_memcom.ops import triton_enabled

    assert triton_enabled(torch.zeros(1)), "run under TRITON_INTERPRET=1 with triton installed"
    entity_weights.DENSE_UPDATE_FACTOR = 10**6
    torch.testing.assert_close(_run("cpu"), _reference(), rtol=1e-6, atol=1e-6)


def test_dense_update_kernel_interpreted_matches_reference() -> None:
    run_interpreted("tests.distributed.test_entity_weights", "check_dense_update_kernel_on_cpu")
