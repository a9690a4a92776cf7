# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Experiment (archived; run in the thirtieth session): GPU us of QR's combine kernel (``_gather_mul_kernel``)
compiled unspecialised, with aligned pointers, with aligned pointers and 16-divisible integers (``sys.argv[1]``,
default ``n_cols,a_stride,b_stride``) and with Triton's defaults, at the launches of an unsharded QR collection's
forward and backward on ``big``'s and ``criteo``'s batches (one H200; median of 5 rounds of 100 calls queued behind a
sleep); each variant's output compared with the unspecialised one's. Outcome (PERFORMANCE.md): within 2%, none kept.

Usage (GPU machine, the tree on ``PYTHONPATH``): ``python scripts/experiments/combine_specialised_gpu_time.py``
"""

import statistics
import sys
from typing import Any, Callable, Dict, List

import torch
import triton

import torchrec_memcom.ops._triton as kernels
from torchrec_memcom.benchmarks.data import make_batches
from torchrec_memcom.benchmarks.layouts import LAYOUTS, MethodOptions, embedding_module, table_configs

DEVICE = torch.device("cuda")


def variants(cached: Any, ints: List[str]) -> Dict[str, Any]:
    fn, runtime = cached.jit.fn, cached._names[: cached._runtime]
    ptrs = [runtime[i] for i in cached._pointers]
    return {
        "unspecialised": triton.jit(fn, do_not_specialize=runtime, do_not_specialize_on_alignment=runtime),
        "aligned pointers": triton.jit(
            fn,
            do_not_specialize=[n for n in runtime if n not in ptrs],
            do_not_specialize_on_alignment=[n for n in runtime if n not in ptrs],
        ),
        "ptrs + " + ",".join(ints): triton.jit(
            fn,
            do_not_specialize=[n for n in runtime if n not in ptrs + ints],
            do_not_specialize_on_alignment=[n for n in runtime if n not in ptrs + ints],
        ),
        "Triton's default": triton.jit(fn),
    }


def gpu_us(launch: Callable[[], Any]) -> List[float]:
    for _ in range(20):
        launch()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rounds = []
    for _ in range(5):
        torch.cuda._sleep(40_000_000)
        start.record()
        for _ in range(100):
            launch()
        end.record()
        end.synchronize()
        rounds.append(start.elapsed_time(end) / 100 * 1e3)
    return rounds


def main() -> None:
    cached = kernels._gather_mul_kernel
    ints = sys.argv[1].split(",") if len(sys.argv) > 1 else ["n_cols", "a_stride", "b_stride"]
    for layout in ("big", "criteo"):
        module, _ = embedding_module(table_configs("qr", LAYOUTS[layout], MethodOptions()), DEVICE)
        batch = make_batches(LAYOUTS[layout], 1, 0, DEVICE)[0]
        seen: List[Any] = []
        original = cached.launch
        cached.launch = lambda grid, args, cx, seen=seen, original=original: (
            seen.append((grid, args, cx)),
            original(grid, args, cx),
        )
        try:
            out = module(batch.sparse_features)
            values = out.values() if hasattr(out, "values") else torch.cat([v for v in out.to_dict().values()], 1)
            values.sum().backward()
        finally:
            cached.launch = original
        torch.cuda.synchronize()
        for j, (grid, args, cx) in enumerate(seen):
            shapes = f"{layout} launch {j}: out {tuple(args[3].shape)}, a {tuple(args[0].shape)} grid {grid}"
            ref = None
            for label, jit in variants(cached, ints).items():
                jit[grid](*args, **cx, **cached._options)
                torch.cuda.synchronize()
                res = args[3].clone()
                if ref is None:
                    ref = res
                same = torch.equal(ref, res)
                rounds = gpu_us(lambda jit=jit, grid=grid, args=args, cx=cx: jit[grid](*args, **cx, **cached._options))
                print(
                    f"{shapes:60s} {label:34s} GPU us {statistics.median(rounds):8.1f} "
                    f"(rounds {' / '.join(f'{r:.1f}' for r in rounds)}) same output: {same}",
                    flush=True,
                )
        del module


if __name__ == "__main__":
    main()
