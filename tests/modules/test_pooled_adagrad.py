# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``ops.pooled_rowwise_adagrad_`` (the fused backward of narrow-row TBEs) against FBGEMM's own TBE backward with
fused exact row-wise Adagrad and against the update written out in plain PyTorch, on the CPU path, through Triton's
interpreter and on the GPU."""

import itertools
from typing import List, Sequence, Tuple

import pytest
import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode

from tests.interpreted import run_interpreted
from torchrec_memcom.benchmarks.tbe_alone import training_tbe
from torchrec_memcom.ops.pooled_adagrad import pooled_rowwise_adagrad_

LR, EPS = 0.05, 1e-8


def _lookup(
    rows: Sequence[int], feature_tables: Sequence[int], batch: int, max_len: int, seed: int, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bags of 0 .. max_len - 1 ids each (feature-major, TBE's layout), skewed so that a few rows recur often."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len, (len(feature_tables) * batch,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    table_rows = torch.tensor([rows[t] for t in feature_tables])
    limit = table_rows[torch.repeat_interleave(torch.arange(lengths.numel()) // batch, lengths)]
    ids = (torch.rand(int(offsets[-1]), generator=g) ** 4 * limit).long()
    return ids.to(device), offsets.to(device)


def _plain_update(
    weights: torch.Tensor,
    momentum: torch.Tensor,
    rows: Sequence[int],
    feature_tables: Sequence[int],
    ids: torch.Tensor,
    offsets: torch.Tensor,
    grad: torch.Tensor,
    dim: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row-wise Adagrad written out: each row's gradient summed over every (bag, position) that reads it, one loop."""
    w, m = weights.double().clone().view(-1, dim), momentum.double().clone()
    first = list(itertools.accumulate([0, *rows]))
    batch = grad.shape[0]
    sums = {}
    for bag in range(offsets.numel() - 1):
        f, b = divmod(bag, batch)
        for p in range(int(offsets[bag]), int(offsets[bag + 1])):
            row = first[feature_tables[f]] + int(ids[p])
            sums[row] = sums.get(row, 0) + grad[b, f * dim : (f + 1) * dim].double()
    for row, g in sums.items():
        m[row] += (g * g).mean()
        w[row] -= LR / (m[row].sqrt() + EPS) * g
    return w.view(-1).float(), m.float()


def _fbgemm_update(
    weights: torch.Tensor,
    momentum: torch.Tensor,
    rows: Sequence[int],
    feature_tables: Sequence[int],
    ids: torch.Tensor,
    offsets: torch.Tensor,
    grad: torch.Tensor,
    dim: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """FBGEMM's TBE (CPU or GPU) from the same weights and momentum, one forward and backward."""
    tbe = training_tbe(rows, dim, list(feature_tables), ids.device, BoundsCheckMode.NONE, LR, EPS)
    w = tbe.weights_dev if ids.is_cuda else tbe.weights_host
    m = tbe.momentum1_dev if ids.is_cuda else tbe.momentum1_host
    w.data.copy_(weights)
    m.data.copy_(momentum)
    tbe(ids, offsets).backward(grad)
    return w.detach().clone(), m.detach().clone()


def _ours(
    weights: torch.Tensor,
    momentum: torch.Tensor,
    rows: Sequence[int],
    feature_tables: Sequence[int],
    ids: torch.Tensor,
    offsets: torch.Tensor,
    grad: torch.Tensor,
    dim: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    first = list(itertools.accumulate([0, *rows]))
    feature_rows = torch.tensor([first[t] for t in feature_tables], device=ids.device)
    w, m = weights.clone(), momentum.clone()
    pooled_rowwise_adagrad_(w, m, ids, offsets, grad, feature_rows, dim, LR, EPS)
    return w, m


# (rows per table, feature -> table (contiguous per table, as TorchRec's TBEs have it), batch, max bag length, dim)
CASES: List[Tuple[List[int], List[int], int, int, int]] = [
    ([40], [0], 6, 30, 16),  # duplicates within and across bags; hot rows run across blocks
    ([40, 9], [0, 1, 1], 5, 20, 16),  # two features share a table
    ([7, 300, 3], [0, 0, 1, 2], 4, 12, 4),
    ([50, 20], [0, 1], 8, 40, 32),
    ([25], [0, 0], 3, 90, 64),  # long runs: 32 positions per block at 64-wide rows
    ([10], [0], 3, 1, 16),  # empty bags only
]


def _check_cases(device: torch.device) -> None:
    for i, (rows, tables, batch, max_len, dim) in enumerate(CASES):
        ids, offsets = _lookup(rows, tables, batch, max_len, seed=i, device=device)
        g = torch.Generator().manual_seed(100 + i)
        weights = torch.randn(sum(rows) * dim, generator=g).to(device)
        momentum = torch.rand(sum(rows), generator=g).to(device)
        grad = torch.randn(batch, len(tables) * dim, generator=g).to(device)
        args = (weights, momentum, rows, tables, ids, offsets, grad, dim)
        w, m = _ours(*args)
        for name, (w_ref, m_ref) in (("plain", _plain_update(*args)), ("fbgemm", _fbgemm_update(*args))):
            msg = f"case {i} vs {name}"
            torch.testing.assert_close(w.cpu(), w_ref.cpu(), atol=2e-6, rtol=2e-5, msg=msg)
            torch.testing.assert_close(m.cpu(), m_ref.cpu(), atol=1e-5, rtol=2e-5, msg=msg)
        if ids.numel():
            assert not torch.equal(w, weights), f"case {i}: nothing moved"


def test_pytorch_path_matches_references() -> None:
    _check_cases(torch.device("cpu"))


def check_kernels_on_cpu() -> None:
    _check_cases(torch.device("cpu"))


def test_kernels_interpreted_match_references() -> None:
    """The Triton kernels, run by Triton's interpreter."""
    run_interpreted("tests.modules.test_pooled_adagrad", "check_kernels_on_cpu")


@pytest.mark.gpu
def test_kernels_cuda_match_references() -> None:
    _check_cases(torch.device("cuda"))


@pytest.mark.gpu
def test_kernels_cuda_match_fbgemm_at_scale() -> None:
    """200k power-law lookups of 16-wide rows in 8 features over 2 tables: Zipf-hot rows run over many blocks."""
    device = torch.device("cuda")
    rows, tables, batch, dim = [100_000, 50_000], [0, 0, 0, 0, 1, 1, 1, 1], 1024, 16
    g = torch.Generator(device=device).manual_seed(0)
    offsets = torch.arange(0, len(tables) * batch + 1, device=device) * 25
    ranks = torch.rand(int(offsets[-1]), device=device, generator=g) ** 8
    ids = (ranks * torch.tensor([rows[t] for t in tables], device=device).repeat_interleave(batch * 25)).long()
    weights = torch.randn(sum(rows) * dim, device=device, generator=g)
    momentum = torch.rand(sum(rows), device=device, generator=g)
    grad = torch.randn(batch, len(tables) * dim, device=device, generator=g)
    args = (weights, momentum, rows, tables, ids, offsets, grad, dim)
    w, m = _ours(*args)
    w_ref, m_ref = _fbgemm_update(*args)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m, m_ref, atol=1e-3, rtol=1e-4)


def test_rejects_what_it_does_not_cover() -> None:
    w, m = torch.zeros(12 * 8), torch.zeros(8)
    ids, offsets, rows = torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 3]), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="row width 12"):
        pooled_rowwise_adagrad_(w, m, ids, offsets, torch.zeros(2, 12), rows, 12, LR, EPS)
    with pytest.raises(TypeError, match="float32"):
        pooled_rowwise_adagrad_(w[:64].double(), m, ids, offsets, torch.zeros(2, 8), rows, 8, LR, EPS)
    with pytest.raises(ValueError, match="gradient of"):
        pooled_rowwise_adagrad_(w[:64], m, ids, offsets, torch.zeros(2, 16), rows, 8, LR, EPS)
    with pytest.raises(ValueError, match="offsets for 1 features x 3 samples"):
        pooled_rowwise_adagrad_(w[:64], m, ids, offsets, torch.zeros(3, 8), rows, 8, LR, EPS)
