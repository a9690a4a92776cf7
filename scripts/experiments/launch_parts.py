# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The twenty-eighth session's loop measurements (docs/PERFORMANCE.md), archived: not a shipped benchmark.

- ``parts``: host us per call of the id transform's parts on ``big``'s batches, each the median of ``--calls`` calls
  synchronised every 20: the whole transform, its launch function, the segments kernel's launch through Triton's path
  and (code with ``ops._launch``) from the cache, or (code before it) the compiled kernel's launcher alone, the input
  check, and an event record with and without a cached stream.
- ``gather_mul``: GPU us per call of QR's gather-multiply at ``big``'s shape (200 calls queued behind a sleep).
- ``python``: host us per call of the transform with its kernel call and input check stubbed out (any device).

Usage: ``python scripts/experiments/launch_parts.py parts --methods hash,qr,memcom`` (GPU; run with the tree under
test on ``PYTHONPATH``).
"""

import argparse
import dataclasses
import itertools
import statistics
import time
from typing import Any, Callable, Dict

import torch

import torchrec_memcom.modules.transform as transform_module
import torchrec_memcom.ops._triton as kernels
from torchrec_memcom.benchmarks.data import make_batches
from torchrec_memcom.benchmarks.layouts import LAYOUTS, MethodOptions, embedding_module, table_configs
from torchrec_memcom.benchmarks.transform_time import _features
from torchrec_memcom.distributed.compressed import physical_index_dtype
from torchrec_memcom.modules.input_check import InputCheck


def _us(fn: Callable[[], Any], device: torch.device, calls: int) -> float:
    times = []
    for _ in range(calls // 20):
        if device.type == "cuda":
            torch.cuda.synchronize()
        for _ in range(20):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return statistics.median(times) * 1e6


def _transform(method: str, device: torch.device, offsets: bool, batch_size: int) -> Any:
    layout = LAYOUTS["big"] if batch_size <= 0 else dataclasses.replace(LAYOUTS["big"], batch_size=batch_size)
    module, _ = embedding_module(table_configs(method, layout, MethodOptions()), device)
    kjts = itertools.cycle([_features(b.sparse_features, offsets) for b in make_batches(layout, 4, 0, device)])
    index_dtype = physical_index_dtype(module, None)
    return module.id_transform, lambda: module.id_transform(next(kjts), index_dtype=index_dtype)


def _segments_launches(call: Callable[[], Any], device: torch.device) -> Dict[str, Callable[[], Any]]:
    """The segments kernel's launch of one call, replayable through Triton's path and the cached / compiled one."""
    kernel, seen = kernels._segments_kernel, {}
    cached = hasattr(kernel, "launch")  # ops._launch.CachedKernel (dd06237 and later) or Triton's JITFunction
    name = "launch" if cached else "run"
    original = getattr(kernel, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen["args"], seen["kwargs"] = args, kwargs
        seen["compiled"] = original(*args, **kwargs)
        return seen["compiled"]

    setattr(kernel, name, spy)
    try:
        call()
    finally:
        setattr(kernel, name, original)
    args, kwargs = seen["args"], seen["kwargs"]
    if cached:
        grid, runtime, constexprs = args
        return {
            "segments launch, Triton's path": lambda: kernel.jit[grid](*runtime, **constexprs),
            "segments launch, cached": lambda: kernel.launch(grid, runtime, constexprs),
        }
    compiled, grid = seen["compiled"], kwargs["grid"]
    names = list(kernel.arg_names)
    constexprs = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
    every = list(args) + [constexprs[n] for n in names[len(args) :]]
    g = (grid[0], grid[1] if len(grid) > 1 else 1, 1)
    stream = torch.cuda.current_stream(device).cuda_stream
    return {
        "segments launch, Triton's path": lambda: original(*args, **kwargs),
        "segments launch, compiled kernel's launcher": lambda: compiled.run(
            *g, stream, compiled.function, compiled.packed_metadata, None, None, None, *every
        ),
    }


def _parts_row(method: str, offsets: bool, args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    transform, call = _transform(method, device, offsets, args.batch_size)
    for _ in range(50):
        call()
    row = {"transform": _us(call, device, args.calls)}
    for label, fn in _segments_launches(call, device).items():
        row[label] = _us(fn, device, args.calls)
    stats = torch.zeros(len(transform.feature_names()) + 1, 2, dtype=torch.int64, device=device)
    check = InputCheck()
    row["input check"] = _us(lambda: check(stats, transform._check_meta), device, args.calls)
    if device.type == "cuda":
        event = torch.cuda.Event()
        row["event record"] = _us(lambda: event.record(), device, args.calls)
        if hasattr(check, "_current_stream"):  # the cached stream object (dd06237 and later)
            row["event record, cached stream"] = _us(
                lambda: event.record(check._current_stream(device)), device, args.calls
            )
    return row


def parts(args: argparse.Namespace, device: torch.device) -> None:
    for method in args.methods.split(","):
        for offsets in (True, False):
            row = _parts_row(method, offsets, args, device)
            kjt = "offsets" if offsets else "lengths"
            print(f"{method}, KJT with {kjt}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)


def gather_mul(args: argparse.Namespace, device: torch.device) -> None:
    from torchrec_memcom.ops.columns import _Columns, _gather_mul

    b, f, d = 16384, 8, 128  # big: QR's 16 physical columns of 128 in, 8 logical out
    a = torch.randn(b, 2 * f * d, device=device)
    k = torch.arange(f * d, device=device)
    src = ((k // d) * 2 * d + k % d).int()
    cols = _Columns(src, (src + d).int(), torch.full_like(src, -1), torch.zeros_like(src))
    divisors = torch.empty(b, 0, device=device)
    for _ in range(20):
        _gather_mul(a, a, divisors, cols, False)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rounds = []
    for _ in range(5):
        torch.cuda._sleep(40_000_000)  # ~20 ms: the launches queue behind it and run back to back
        start.record()
        for _ in range(200):
            _gather_mul(a, a, divisors, cols, False)
        end.record()
        end.synchronize()
        rounds.append(start.elapsed_time(end) / 200 * 1e3)
    print("gather_mul GPU us per call, 5 rounds: " + " / ".join(f"{x:.1f}" for x in rounds))


def python(args: argparse.Namespace, device: torch.device) -> None:
    def no_kernel(ids: Any, weights: Any, static: Any, static_host: Any, run: Any, stats: Any, total: int, *a: Any,
                  **k: Any) -> Any:  # fmt: skip
        return torch.empty(total, dtype=torch.int32, device=device), None

    class NoCheck:
        def __call__(self, *a: Any) -> None:
            pass

        def flush(self) -> None:
            pass

    original = transform_module.transform_segments
    transform_module.transform_segments = no_kernel
    try:
        for method in args.methods.split(","):
            transform, call = _transform(method, device, True, args.batch_size)
            transform.input_check = NoCheck()
            for _ in range(200):
                call()
            print(f"{method}: the transform's Python {_us(call, device, args.calls):.1f} us per call")
    finally:
        transform_module.transform_segments = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["parts", "gather_mul", "python"])
    parser.add_argument("--methods", default="hash,qr,memcom")
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=0, help="replace big's batch size")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    {"parts": parts, "gather_mul": gather_mul, "python": python}[args.what](args, torch.device(args.device))


if __name__ == "__main__":
    main()
