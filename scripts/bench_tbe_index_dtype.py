# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""FBGEMM's TBE alone, forward + backward with fused exact row-wise Adagrad, with int64 and with int32 indices.

Three shapes of the ``big`` layout (batch 16384, 20 ids per bag): stock's 8 tables of 4M x 128 and Hash 16x's 8 tables
of 250k x 128, read by power-law ids (``benchmarks.data.sample_ids``, Zipf 1.05, as ``bench_sharded.py``'s
batches), and an LMA-like 16M x 16 memory read by 64 features (8 tables x 8 chunks) at
hashed locations of those ids. Each dtype is timed twice, alternating, and its faster pass reported (ms per call,
``--iters`` calls after 10; CUDA events on the GPU, the wall clock on CPU). Why the compressed tables' lookups use int32
(``distributed.compressed.physical_index_dtype``): docs/PERFORMANCE.md.

Usage::

    python scripts/bench_tbe_index_dtype.py --out tbe_index_dtype.json                # GPU
    python scripts/bench_tbe_index_dtype.py --device cpu --scale 1000 --iters 2       # a CPU smoke run
"""

import json
import time
from typing import Callable, Dict, List, Sequence

import torch

from torchrec_memcom.benchmarks.data import sample_ids
from torchrec_memcom.benchmarks.tbe_alone import parse_tbe_args, training_tbe

BATCH, POOLING, ZIPF = 16384, 20, 1.05


def time_tbe(
    name: str, rows: Sequence[int], dim: int, feature_table_map: List[int], ids: torch.Tensor, batch: int, iters: int
) -> Dict[str, float]:
    """ms per forward + backward call, per index dtype (the faster of two alternating passes)."""
    device = ids.device
    tbe = training_tbe(rows, dim, feature_table_map, device)
    features = len(feature_table_map)
    offsets = torch.arange(0, features * batch + 1, device=device, dtype=torch.int64) * POOLING
    grad = torch.randn(batch, features * dim, device=device)
    best: Dict[str, float] = {}
    for dtype in (torch.int64, torch.int32, torch.int64, torch.int32):
        i, o = ids.to(dtype), offsets.to(dtype)

        def call(i: torch.Tensor = i, o: torch.Tensor = o) -> None:
            tbe(i, o).backward(grad)

        for _ in range(10):
            call()
        ms = _ms_per_call(call, iters, device)
        key = str(dtype).replace("torch.", "")
        best[key] = min(best.get(key, float("inf")), ms)
    print(f"{name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in best.items()), flush=True)
    return best


def _ms_per_call(call: Callable[[], None], iters: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            call()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        call()
    return (time.perf_counter() - t0) * 1e3 / iters


def main(argv: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    args = parse_tbe_args(__doc__.split("\n\n")[0], argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = torch.Generator(device=device).manual_seed(0)
    batch = max(1, BATCH // args.scale)
    stock_rows, hash_rows, lma_rows = (max(16, n // args.scale) for n in (4_000_000, 250_000, 16_000_000))

    def ids(n: int, tables: int = 8) -> torch.Tensor:
        return torch.cat([sample_ids(n, batch * POOLING, "powerlaw", ZIPF, g, device) for _ in range(tables)])

    logical = ids(stock_rows)  # LMA: chunk c of each id at a hashed location of (id, c)
    lma = torch.cat([(logical * 0x9E3779B1 + c * 0x7F4A7C15) % lma_rows for c in range(8)])
    results = {
        "stock 8 x 4M x 128": time_tbe(
            "stock", [stock_rows] * 8, 128, list(range(8)), ids(stock_rows), batch, args.iters
        ),
        "hash 8 x 250k x 128": time_tbe(
            "hash", [hash_rows] * 8, 128, list(range(8)), ids(hash_rows), batch, args.iters
        ),
        "lma 16M x 16, 64 features": time_tbe("lma", [lma_rows], 16, [0] * 64, lma, batch, args.iters),
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": vars(args), "ms_per_call": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
