# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""LMA's lookup with its ids deduplicated before the 8x expansion, against FBGEMM over all 8 chunks of every id.

LMA (d = 128, Z = 16) reads 8 rows of 16 floats per id, so FBGEMM's TBE sorts and reduces 8 rows per id in its
backward. ``full``: what LMA runs (one TBE over a 16M x 16 memory, 64 features = 8 tables x 8 chunks, bags of 20).
``dedup``: the distinct ids of the batch first (``torch.unique``, which waits for the GPU), one TBE lookup of their
8 chunks each (bags of one id), then ``F.embedding_bag`` pools them into the same bags. Both train the memory with
fused exact row-wise Adagrad and give the same pooled output and update. ``stock``: 8 tables of 4M x 128 read by the
same ids, for scale. Ids: power law (Zipf 1.05, ``benchmarks.data.sample_ids``), batch 16384, `big`'s shapes; chunk
locations hashed from (id, chunk). Each way is timed twice, alternating, and its faster pass reported (median ms per
forward + backward, ``--iters`` calls after 5). Results: docs/PERFORMANCE.md ("Where the time goes").

Usage::

    python scripts/bench_lma_dedup.py --out lma_dedup.json                      # GPU
    python scripts/bench_lma_dedup.py --device cpu --scale 1000 --iters 2       # a CPU smoke run
"""

import json
import statistics
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode

from torchrec_memcom.benchmarks.data import sample_ids
from torchrec_memcom.benchmarks.measure import timed_steps
from torchrec_memcom.benchmarks.tbe_alone import parse_tbe_args, training_tbe

BATCH, POOLING, TABLES, CHUNKS, CHUNK_DIM, ZIPF, LR, EPS = 16384, 20, 8, 8, 16, 1.05, 0.01, 1e-8


def make_tbe(rows: Sequence[int], dim: int, feature_table_map: List[int], device: torch.device) -> torch.nn.Module:
    # no bounds check, as the planner sets for LMA's memory (the transform bounds its locations)
    return training_tbe(rows, dim, feature_table_map, device, BoundsCheckMode.NONE, LR, EPS)


def tbe_weights(tbe: torch.nn.Module) -> torch.Tensor:
    """The TBE's (single table's) flat weights, on the device or the host."""
    return tbe.weights_dev if tbe.weights_dev.numel() else tbe.weights_host


class LMALookups:
    """One batch of ``tables`` x ``batch`` bags of ``POOLING`` ids each (``ids``: table-major, ``< num_ids`` per
    table), looked up in a ``memory_rows`` x 16 memory at hashed chunk locations, two ways (``full``, ``dedup``).

    ``full()`` returns the pooled output as ``[batch, tables * 128]`` (TBE's layout), ``dedup()`` as
    ``[tables * batch, 128]``; ``pooled_grad`` (``[tables * batch, 128]``) is the gradient both backpropagate."""

    def __init__(self, ids: torch.Tensor, num_ids: int, memory_rows: int, batch: int, tables: int) -> None:
        device = ids.device
        self.batch, self.tables, self.num_ids, self.memory_rows = batch, tables, num_ids, memory_rows
        self.ids = ids
        # one key per (table, id): the tables' ids are distinct ids, whose chunks still share the one memory
        self.keys = ids + torch.arange(tables, device=device).repeat_interleave(batch * POOLING) * num_ids
        self.bag_offsets = torch.arange(0, tables * batch, device=device) * POOLING
        self.full_tbe = make_tbe([memory_rows], CHUNK_DIM, [0] * (tables * CHUNKS), device)
        self.dedup_tbe = make_tbe([memory_rows], CHUNK_DIM, [0] * CHUNKS, device)
        per_table = ids.view(tables, batch * POOLING)
        # feature f = table * CHUNKS + chunk, batch-major inside a feature (TBE's input layout)
        self.full_indices = torch.cat([self.locations(per_table[t], c) for t in range(tables) for c in range(CHUNKS)])
        self.full_offsets = (torch.arange(0, tables * CHUNKS * batch + 1, device=device) * POOLING).to(torch.int32)
        self.pooled_grad = torch.randn(tables * batch, CHUNKS * CHUNK_DIM, device=device)

    def locations(self, ids: torch.Tensor, chunk: int) -> torch.Tensor:
        """Memory row of ``chunk`` of each id (a multiplicative hash of (id, chunk), as LMA's are)."""
        return ((ids * 0x9E3779B1 + chunk * 0x7F4A7C15) % self.memory_rows).to(torch.int32)

    def full(self) -> torch.Tensor:
        out = self.full_tbe(self.full_indices, self.full_offsets)
        grad = self.pooled_grad.view(self.tables, self.batch, -1).transpose(0, 1).reshape(self.batch, -1)
        out.backward(grad)
        return out

    def dedup(self) -> torch.Tensor:
        keys, inverse = torch.unique(self.keys, return_inverse=True)
        ids = keys % self.num_ids
        indices = torch.cat([self.locations(ids, c) for c in range(CHUNKS)])
        offsets = torch.arange(0, CHUNKS * keys.numel() + 1, device=keys.device, dtype=torch.int32)
        embeddings = self.dedup_tbe(indices, offsets)  # [distinct ids, 128]: bags of one id
        pooled = F.embedding_bag(inverse, embeddings, self.bag_offsets, mode="sum")
        pooled.backward(self.pooled_grad)
        return pooled

    def full_as_bags(self, out: torch.Tensor) -> torch.Tensor:
        """``full()``'s output in ``dedup()``'s layout."""
        return out.view(self.batch, self.tables, -1).transpose(0, 1).reshape(self.tables * self.batch, -1)


def check(lookups: LMALookups) -> Tuple[float, float]:
    """One step of each way from the same random memory: max |difference| of the pooled outputs and of the updated
    memory."""
    memory = torch.randn_like(tbe_weights(lookups.full_tbe))
    for tbe in (lookups.full_tbe, lookups.dedup_tbe):
        tbe_weights(tbe).data.copy_(memory)
    full = lookups.full_as_bags(lookups.full().detach())
    dedup = lookups.dedup().detach()
    moved = (tbe_weights(lookups.full_tbe) - tbe_weights(lookups.dedup_tbe)).detach()
    return float((full - dedup).abs().max()), float(moved.abs().max())


def main(argv: Sequence[str] = ()) -> Dict[str, object]:
    args = parse_tbe_args(__doc__.split("\n\n")[0], argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = torch.Generator(device=device).manual_seed(0)
    batch = max(1, BATCH // args.scale)
    num_ids, memory_rows = (max(16, n // args.scale) for n in (4_000_000, 16_000_000))
    ids = torch.cat([sample_ids(num_ids, batch * POOLING, "powerlaw", ZIPF, g, device) for _ in range(TABLES)])
    lookups = LMALookups(ids, num_ids, memory_rows, batch, TABLES)
    forward_diff, update_diff = check(lookups)
    distinct = int(lookups.keys.unique().numel())
    print(
        f"{ids.numel():,} ids, {distinct:,} distinct (table, id) pairs ({distinct / ids.numel():.1%}); full vs dedup: "
        f"pooled max |diff| {forward_diff:.3g}, updated memory max |diff| {update_diff:.3g}",
        flush=True,
    )
    stock = make_tbe([num_ids] * TABLES, CHUNKS * CHUNK_DIM, list(range(TABLES)), device)
    stock_ids = ids.to(torch.int32)
    stock_offsets = (torch.arange(0, TABLES * batch + 1, device=device) * POOLING).to(torch.int32)
    stock_grad = torch.randn(batch, TABLES * CHUNKS * CHUNK_DIM, device=device)
    ways: Dict[str, Callable[[], object]] = {
        "full (LMA now)": lookups.full,
        "dedup": lookups.dedup,
        "stock 8 x 4M x 128": lambda: stock(stock_ids, stock_offsets).backward(stock_grad),
    }
    ms: Dict[str, float] = {}
    for name, call in [*ways.items(), *ways.items()]:
        for _ in range(5):
            call()
        times, _ = timed_steps(call, args.iters, device)
        ms[name] = min(ms.get(name, float("inf")), statistics.median(times))
    for name, value in ms.items():
        print(f"{name}: {value:.3f} ms per forward + backward", flush=True)
    results = {
        "ids": ids.numel(),
        "distinct_ids": distinct,
        "forward_max_abs_diff": forward_diff,
        "update_max_abs_diff": update_diff,
        "ms_per_call": ms,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": vars(args), **results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
