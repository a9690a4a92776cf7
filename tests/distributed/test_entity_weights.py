# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom's sparse in-backward optimizer: per-table rules and learning rates against dense torch.optim, duplicates
included; the three fused CUDA updates (one lane per position, one per weight, one per run of sorted ids) equal it
too."""

from typing import Dict, Optional, Sequence, Tuple

import pytest
import torch

from tests.interpreted import run_interpreted
from torchrec_memcom.distributed.entity_update_graphs import bucket
from torchrec_memcom.distributed.entity_weights import UPDATE_MODES, EntityWeightOptimizer, table_slices, update_mode
from torchrec_memcom.ops import ONE_SLOTS

SIZES = [("a", 40), ("b", 25), ("c", 0), ("d", 30)]  # "c": a table-wise table another rank holds
RULES = {"a": ("adagrad", 1.0), "b": ("sgd", 10.0), "c": ("sgd", 1.0), "d": ("adagrad", 3.0)}
LRS = {"a": 0.1, "b": 0.05, "c": 0.0, "d": 0.2}


class _FakeSharded:
    """Stands in for ShardedTensor views: the optimizer only keys its state by them."""

    def __init__(self, name: str) -> None:
        self.name = name


def _optimizer(
    weight: torch.Tensor, scale: float, mode: Optional[str] = None, graphs: bool = False
) -> EntityWeightOptimizer:
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
        mode=mode,
        graphs=graphs,
    )


def _batch(g: torch.Generator, total: int, hot: bool, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` positions: ids with duplicates and some constant slots; ``hot``: 3 ids hold 3/4 of them."""
    index = torch.randint(0, total + 3, (n,), generator=g)
    if hot:
        index[: n // 4 * 3] = torch.tensor([7, 41, 90]).repeat_interleave(n // 4)
        index = index[torch.randperm(n, generator=g)]
    return index, torch.randn(n, generator=g)


def _run(
    device: str,
    steps: int = 3,
    hot: bool = False,
    mode: Optional[str] = None,
    positions: int = 200,
    index_dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """``steps`` updates of ``_batch``es; ``index_dtype``: int32 as the MEmCom rows kernel writes it, or int64."""
    total = sum(n for _, n in SIZES)
    weight = torch.linspace(0.5, 1.5, total + ONE_SLOTS, device=device)
    weight[total:] = 1.0
    opt = _optimizer(weight, scale=0.5, mode=mode)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index, grad = _batch(g, total, hot, positions)
        opt.update(index.to(device, index_dtype), grad.to(device))
    return weight.cpu()


def _reference(
    steps: int = 3, hot: bool = False, positions: int = 200, sizes: Sequence[int] = (), lr_a: Sequence[float] = ()
) -> torch.Tensor:
    """Dense torch.optim per table (each table its own rule and lr * scale), on the summed gradients; ``sizes``: each
    step's positions instead; ``lr_a``: table ``a``'s learning rate at each step instead of ``LRS``'s."""
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
    for step, size in enumerate(sizes or [positions] * steps):
        index, grad = _batch(g, total, hot, size)
        grad = grad * 0.5
        dense = torch.zeros(total + ONE_SLOTS).index_add_(0, index, grad)
        if lr_a:
            opts["a"].param_groups[0]["lr"] = lr_a[step] * RULES["a"][1]
        for n, opt in opts.items():
            opt.zero_grad()
            params[n].grad = dense[slices[n]].clone()
            # torch.optim.Adagrad accumulates state for every element; ours only for touched ids: equal, since an
            # untouched id has a zero gradient and a zero step
            opt.step()
    out = torch.cat([params[n].detach() for n, _ in SIZES] + [torch.ones(ONE_SLOTS)])
    return out


@pytest.mark.parametrize("hot", [False, True], ids=["spread", "hot"])
def test_sparse_update_matches_dense_torch_optim(hot: bool) -> None:
    torch.testing.assert_close(_run("cpu", hot=hot), _reference(hot=hot), rtol=1e-5, atol=1e-5)


def test_learning_rate_change_reaches_the_update() -> None:
    """A param group's new learning rate applies from the next update on (the rule's vector is rewritten in place)."""
    total = sum(n for _, n in SIZES)
    weight = torch.linspace(0.5, 1.5, total + ONE_SLOTS)
    weight[total:] = 1.0
    opt = _optimizer(weight, scale=0.5)
    sizes, lr_a = [200, 200, 200], [0.1, 0.03, 0.3]
    g = torch.Generator().manual_seed(0)
    for size, lr in zip(sizes, lr_a):
        opt.param_groups[0]["lr"] = lr
        opt.update(*_batch(g, total, True, size))
    torch.testing.assert_close(weight, _reference(hot=True, sizes=sizes, lr_a=lr_a), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", UPDATE_MODES)
def test_fused_cuda_update_matches_reference(mode: str) -> None:
    torch.testing.assert_close(_run("cuda", mode=mode), _reference(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(_run("cuda", hot=True, mode=mode), _reference(hot=True), rtol=1e-5, atol=1e-5)
    # several kernel blocks (512 positions each for the block-sorted way), the hot ids in each of them
    for dtype in (torch.int64, torch.int32):
        hot = _run("cuda", hot=True, mode=mode, positions=5000, index_dtype=dtype)
        torch.testing.assert_close(hot, _reference(hot=True, positions=5000), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32], ids=["int64", "int32"])
def test_update_replayed_from_cuda_graphs_matches_reference(index_dtype: torch.dtype) -> None:
    """Batches of one bucket (5120): the first runs eagerly, the second is captured and replayed, the rest replay,
    larger and smaller (the padding's ids reset to -1); table a's learning rate changes between replays."""
    total = sum(n for _, n in SIZES)
    weight = torch.linspace(0.5, 1.5, total + ONE_SLOTS, device="cuda")
    weight[total:] = 1.0
    opt = _optimizer(weight, scale=0.5, graphs=True)
    assert opt.graphs is not None
    sizes, lr_a = [5000, 4700, 5100, 4650, 5000], [0.1, 0.1, 0.1, 0.03, 0.03]
    g = torch.Generator().manual_seed(0)
    for size, lr in zip(sizes, lr_a):
        opt.param_groups[0]["lr"] = lr
        index, grad = _batch(g, total, True, size)
        opt.update(index.to("cuda", index_dtype), grad.to("cuda"))
    assert list(opt.graphs.graphs) == [(5120, index_dtype, torch.float32)]
    expected = _reference(hot=True, sizes=sizes, lr_a=lr_a)
    torch.testing.assert_close(weight.cpu(), expected, rtol=1e-4, atol=1e-4)


def test_graph_buckets() -> None:
    """A batch of n positions replays the graph of ``bucket(n)``: n rounded up to 4 significant bits."""
    assert [bucket(n) for n in (1, 9, 15, 16, 17, 1000, 4650, 5120, 5121)] == [1, 9, 15, 16, 18, 1024, 5120, 5120, 5632]
    assert bucket(2_621_440) == 2_621_440  # big's batch: 10 * 2**18
    for n in range(1, 5000):
        assert n <= bucket(n) <= n * 9 // 8 + 1 and bucket(bucket(n)) == bucket(n)


def test_update_mode_by_batch_and_vector_size() -> None:
    assert update_mode(327_680) == "per_position"
    assert update_mode(655_360) == "block_sorted"
    assert update_mode(2**21) == "block_sorted"
    with pytest.raises(ValueError, match="update mode 'fast'"):
        _optimizer(torch.ones(ONE_SLOTS + 95), 1.0, mode="fast")


def check_update_kernels_on_cpu() -> None:
    """Every way of the CUDA update, its Triton kernels on CPU tensors (under ``TRITON_INTERPRET=1``), against dense
    ``torch.optim``: with long runs of one id (the sorted kernel's binary search for the run's first position), and
    over several kernel blocks (the block-sorted kernel's per-block sums, one atomic per id and block)."""
    from torchrec_memcom.ops import triton_enabled

    assert triton_enabled(torch.zeros(1)), "run under TRITON_INTERPRET=1 with triton installed"
    for mode in UPDATE_MODES:
        torch.testing.assert_close(_run("cpu", mode=mode), _reference(), rtol=1e-6, atol=1e-6, msg=mode)
        hot = _run("cpu", hot=True, mode=mode)
        torch.testing.assert_close(hot, _reference(hot=True), rtol=1e-5, atol=1e-5, msg=mode)
        for dtype in (torch.int64, torch.int32):
            hot = _run("cpu", hot=True, mode=mode, positions=3000, index_dtype=dtype)
            torch.testing.assert_close(hot, _reference(hot=True, positions=3000), rtol=1e-4, atol=1e-4, msg=mode)
    check_padded_block_sorted_update()


def check_padded_block_sorted_update() -> None:
    """The block-sorted way skips positions whose index is -1 (the padding of a replayed update), wherever they are
    and whatever their gradient: the aggregate marks them -1 in its leaders and the weights equal the unpadded
    reference."""
    from torchrec_memcom.ops._triton_entity_update import entity_aggregate_triton

    total = sum(n for _, n in SIZES)
    weight = torch.linspace(0.5, 1.5, total + ONE_SLOTS)
    weight[total:] = 1.0
    opt = _optimizer(weight, scale=0.5, mode="block_sorted")
    g, pad = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)  # g: the reference's batches
    for _ in range(2):
        index, grad = _batch(g, total, True, 800)
        keep = torch.zeros(1300, dtype=torch.bool)
        keep[torch.randperm(1300, generator=pad)[:800]] = True  # 800 real positions anywhere among 1300 (3 blocks)
        padded = torch.full((1300,), -1, dtype=torch.int64)
        padded[keep] = index
        noise = torch.randn(1300, generator=pad) * 1e3
        noise[keep] = grad
        scratch = torch.zeros_like(weight)
        leaders = entity_aggregate_triton(padded, noise, scratch)
        assert (leaders[~keep] == -1).all()
        for block in range(0, 1300, 512):  # each block's leaders: its distinct real ids, once each
            real, marked = padded[block : block + 512], leaders[block : block + 512]
            ids = marked[marked >= 0]
            assert ids.numel() == ids.unique().numel() and set(ids.tolist()) == set(real[real >= 0].tolist())
        opt.update(padded, noise)
    torch.testing.assert_close(weight, _reference(steps=2, hot=True, positions=800), rtol=1e-4, atol=1e-4)


def test_update_kernels_interpreted_match_reference() -> None:
    run_interpreted("tests.distributed.test_entity_weights", "check_update_kernels_on_cpu")
