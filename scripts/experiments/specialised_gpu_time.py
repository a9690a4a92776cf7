# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Experiment (archived; run in the thirtieth session): the GPU cost of compiling the per-step kernels unspecialised.

The twenty-ninth session's profiles showed MEmCom's update block sums at 0.180 ms per ``big`` step at 802cb6a against
0.152 at dbc430d, and the transform's segments kernel at 0.056 against 0.052 (one profile each, two machines).
``ops._launch.unspecialized_jit`` turns off Triton's specialisation of integers (divisibility by 16, equality to 1)
and of pointers (16-byte alignment). This times, at ``big``'s shapes on one GPU, each per-step kernel (the id
transform's segments kernel for MEmCom, Hash and QR, LMA's locations, MEmCom's update block sums and update) compiled
three ways from the same source: unspecialised, pointers aligned only (integers still unspecialised: what
``unspecialized_jit(aligned_pointers=True)`` gives), and Triton's default; GPU us per call, 200 calls queued behind a
sleep, 5 rounds. Outcome (thirtieth session, PERFORMANCE.md): only the block sums gain (183 -> 158 us).

Usage (GPU machine, the tree under test on ``PYTHONPATH``): ``python scripts/experiments/specialised_gpu_time.py``
"""

import itertools
import statistics
from typing import Any, Callable, Dict, List

import torch
import triton

import torchrec_memcom.ops._triton as kernels
import torchrec_memcom.ops._triton_entity_update as update_kernels
from torchrec_memcom.benchmarks.data import make_batches
from torchrec_memcom.benchmarks.layouts import LAYOUTS, MethodOptions, embedding_module, table_configs
from torchrec_memcom.benchmarks.transform_time import _features
from torchrec_memcom.distributed.compressed import physical_index_dtype

DEVICE = torch.device("cuda")


def _variants(cached: Any) -> Dict[str, Any]:
    """The kernel's source compiled unspecialised, with aligned pointers only, and with Triton's defaults."""
    fn, runtime = cached.jit.fn, cached._names[: cached._runtime]
    scalars = [n for i, n in enumerate(runtime) if i not in cached._pointers]
    options = cached._options
    return {
        "unspecialised": (triton.jit(fn, do_not_specialize=runtime, do_not_specialize_on_alignment=runtime), options),
        "aligned pointers": (triton.jit(fn, do_not_specialize=scalars, do_not_specialize_on_alignment=[]), options),
        "Triton's default": (triton.jit(fn), options),
    }


def _gpu_us(launch: Callable[[], Any]) -> List[float]:
    for _ in range(20):
        launch()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rounds = []
    for _ in range(5):
        torch.cuda._sleep(40_000_000)
        start.record()
        for _ in range(200):
            launch()
        end.record()
        end.synchronize()
        rounds.append(start.elapsed_time(end) / 200 * 1e3)
    return rounds


def _captured_launch(cached: Any, call: Callable[[], Any]) -> Any:
    """The (grid, runtime args, constexprs) of ``cached``'s launch inside ``call``."""
    seen: Dict[str, Any] = {}
    original = cached.launch

    def spy(grid: Any, args: Any, constexprs: Any) -> None:
        seen["launch"] = (grid, args, constexprs)
        original(grid, args, constexprs)

    cached.launch = spy
    try:
        call()
    finally:
        cached.launch = original
    return seen["launch"]


def _report(name: str, cached: Any, grid: Any, args: Any, constexprs: Any) -> None:
    for label, (jit, options) in _variants(cached).items():
        rounds = _gpu_us(lambda jit=jit, options=options: jit[grid](*args, **constexprs, **options))
        print(f"{name:32s} {label:18s} GPU us per call: {statistics.median(rounds):7.1f} "
              f"(rounds {' / '.join(f'{r:.1f}' for r in rounds)})", flush=True)  # fmt: skip


def _segments_launch(method: str, batches: List[Any], cached: Any = kernels._segments_kernel) -> Any:
    """``cached``'s launch in one id transform of ``method`` on ``big``'s batches."""
    module, _ = embedding_module(table_configs(method, LAYOUTS["big"], MethodOptions()), DEVICE)
    kjts = itertools.cycle([_features(b.sparse_features, True) for b in batches])
    index_dtype = physical_index_dtype(module, None)
    return _captured_launch(cached, lambda: module.id_transform(next(kjts), index_dtype=index_dtype))


def main() -> None:
    batches = make_batches(LAYOUTS["big"], 4, 0, DEVICE)
    for method in ("memcom", "hash", "qr"):
        _report(f"segments kernel ({method})", kernels._segments_kernel, *_segments_launch(method, batches))
    # MEmCom's update at big's positions: the batch's ids (Zipf) as weight indices, one gradient each
    ids = batches[0].sparse_features.values()
    index = (ids % 4_000_000).to(torch.int64)  # a table's local weight slots
    grad = torch.randn(index.numel(), device=DEVICE)
    scratch = torch.zeros(4_000_000 + 1024, device=DEVICE)
    launch = _captured_launch(
        update_kernels._entity_aggregate_kernel, lambda: update_kernels.entity_aggregate_triton(index, grad, scratch)
    )
    _report("entity aggregate (block sums)", update_kernels._entity_aggregate_kernel, *launch)
    try:
        _report(
            "lma grouped locations",
            kernels._lma_grouped_kernel,
            *_segments_launch("lma", batches, kernels._lma_grouped_kernel),
        )
    except KeyError:
        print("lma: no grouped-locations launch in its transform")
    # the update kernel after the block sums (it zeroes the scratch: refill it before each call, and time the refill)
    filled = scratch.clone()
    update_kernels.entity_aggregate_triton(index, grad, filled)
    leaders = update_kernels.entity_aggregate_triton(index, grad, torch.zeros_like(scratch))
    weight = torch.randn(4_000_000 + 1024, device=DEVICE)
    state = torch.zeros_like(weight)
    bounds = torch.tensor([4_000_000], device=DEVICE, dtype=torch.int64)
    lr = torch.tensor([0.01, 0.0], device=DEVICE)
    ada = torch.tensor([True, False], device=DEVICE)
    rounds = _gpu_us(lambda: scratch.copy_(filled))
    print(f"{'scratch refill':32s} {'':18s} GPU us per call: {statistics.median(rounds):7.1f}", flush=True)
    cached = update_kernels._entity_update_kernel
    launch = _captured_launch(
        cached, lambda: update_kernels.entity_update_triton(leaders, scratch, weight, state, bounds, lr, ada, 1e-8)
    )
    grid, args, constexprs = launch
    for label, (jit, options) in _variants(cached).items():
        rounds = _gpu_us(
            lambda jit=jit, options=options: (scratch.copy_(filled), jit[grid](*args, **constexprs, **options))
        )
        print(f"{'refill + entity update':32s} {label:18s} GPU us per call: {statistics.median(rounds):7.1f} "
              f"(rounds {' / '.join(f'{r:.1f}' for r in rounds)})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
