# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""scripts/bench_lma_dedup.py: both lookups of LMA's memory against plain PyTorch (the pooled chunks and one row-wise
Adagrad step), and a CPU smoke run at 1/1000 of the shapes."""

import json
from pathlib import Path

import torch

from tests.scripts import load_script


def _reference(module, lookups, memory: torch.Tensor):  # noqa: ANN001, ANN202
    """Pooled output [tables * batch, 128] and the memory after one exact row-wise Adagrad step, in plain PyTorch."""
    chunks = module.CHUNKS
    rows = torch.stack([lookups.locations(lookups.ids, c).long() for c in range(chunks)], 1)  # [ids, chunks]
    per_id = memory[rows].reshape(rows.shape[0], -1)  # [ids, 128]
    bag = torch.arange(lookups.tables * lookups.batch).repeat_interleave(module.POOLING)
    pooled = torch.zeros(lookups.tables * lookups.batch, per_id.shape[1]).index_add_(0, bag, per_id)
    grad_rows = torch.zeros_like(memory).index_add_(
        0, rows.reshape(-1), lookups.pooled_grad[bag].reshape(-1, module.CHUNK_DIM)
    )
    state = (grad_rows * grad_rows).mean(1, keepdim=True)
    return pooled, memory - module.LR * grad_rows / (state.sqrt() + module.EPS)


def test_both_lookups_match_plain_pytorch() -> None:
    module = load_script("bench_lma_dedup")
    torch.manual_seed(0)
    num_ids, rows, batch, tables = 50, 40, 6, 3
    ids = torch.randint(0, num_ids, (tables * batch * module.POOLING,))
    lookups = module.LMALookups(ids, num_ids, rows, batch, tables)
    memory = torch.randn(rows, module.CHUNK_DIM)
    for tbe in (lookups.full_tbe, lookups.dedup_tbe):
        module.tbe_weights(tbe).data.copy_(memory.view(-1))
    pooled, updated = _reference(module, lookups, memory)
    torch.testing.assert_close(lookups.full_as_bags(lookups.full().detach()), pooled)
    torch.testing.assert_close(lookups.dedup().detach(), pooled)
    for tbe in (lookups.full_tbe, lookups.dedup_tbe):
        after = module.tbe_weights(tbe).detach().view(rows, module.CHUNK_DIM)
        assert not torch.equal(after, memory)
        torch.testing.assert_close(after, updated, rtol=1e-5, atol=1e-6)


def test_cpu_smoke_run(tmp_path: Path) -> None:
    module = load_script("bench_lma_dedup")
    out = tmp_path / "dedup.json"
    results = module.main(["--device", "cpu", "--scale", "1000", "--iters", "1", "--out", str(out)])
    assert list(results["ms_per_call"]) == ["full (LMA now)", "dedup", "stock 8 x 4M x 128"]
    assert all(ms > 0 for ms in results["ms_per_call"].values())
    assert 0 < results["distinct_ids"] <= results["ids"]
    assert results["forward_max_abs_diff"] < 1e-5 and results["update_max_abs_diff"] < 1e-5
    assert json.loads(out.read_text())["ms_per_call"] == results["ms_per_call"]
