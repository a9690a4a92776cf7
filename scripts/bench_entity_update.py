# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""GPU time of MEmCom's fused entity-weight update, per way of summing duplicate ids, on Zipf-distributed batches.

``EntityWeightOptimizer.update`` on CUDA sums each id's gradients and applies SGD / Adagrad in one of four ways:
``per_position`` (``index_add_`` into a scratch, then one lane per position swaps its id's sum out), ``dense``
(``index_add_``, then one lane per weight of the whole vector), ``sorted`` (sort the positions by id, a float64
cumulative sum, one lane per run of equal ids) and ``block_sorted`` (each block of 512 positions sorts its ids in
registers and adds each id's sum into the scratch with one atomic, then one lane per id and block swaps it out).
This script times each on the same batches (row-wise Adagrad, one table per ``--rows`` block, ids Zipf(``--zipf``)
per table), and shows which one the library picks (``entity_weights.update_mode``). Times are GPU time: a GPU sleep
is queued first so that the host has queued every timed update before the first runs; the host's own time per
update call (its launches) is timed meanwhile. All ways give the same weights (checked after timing).

Usage (GPU machine)::

    python3 scripts/bench_entity_update.py --out update.json
    python3 scripts/bench_entity_update.py --tables 20 --rows 1600000 --positions 327680
"""

import argparse
import json
import time
from typing import Any, Dict, List

import torch

from torchrec_memcom.distributed.entity_weights import UPDATE_MODES, EntityWeightOptimizer, table_slices, update_mode
from torchrec_memcom.ops import ONE_SLOTS


class _Param:
    """The optimizer keys its state by its parameters; no ShardedTensor is needed to time the update."""


def _optimizer(weight: torch.Tensor, tables: int, rows: int, mode: str) -> EntityWeightOptimizer:
    """Row-wise Adagrad on ``weight``: ``tables x rows`` weights, then the constant slots."""
    names = [f"t{i}" for i in range(tables)]
    return EntityWeightOptimizer(
        weight=weight,
        params={f"entity_weights.{n}": _Param() for n in names},  # type: ignore[misc]
        table_slices=table_slices([(n, rows) for n in names]),
        rules={n: ("adagrad", 1.0) for n in names},
        lrs={n: 0.01 for n in names},
        eps=1e-8,
        grad_scale=1.0,
        make_sharded=lambda table, flat: _Param(),  # type: ignore[arg-type,return-value]
        mode=mode,
    )


def measure(tables: int, rows: int, positions: int, zipf: float, iters: int, seed: int = 0) -> Dict[str, Any]:
    """One batch size: ms per update for every way, the library's choice, and the ways' largest disagreement (one
    update from the same start)."""
    torch.manual_seed(seed)
    probs = torch.arange(1, rows + 1, dtype=torch.float64, device="cuda").pow(-zipf)
    per = positions // tables
    index = torch.cat([torch.multinomial(probs, per, replacement=True) + t * rows for t in range(tables)])
    grad = torch.randn(index.numel(), device="cuda")
    weights = tables * rows + ONE_SLOTS
    row: Dict[str, Any] = {"positions": index.numel(), "unique": index.unique().numel(), "weights": weights}
    results: List[torch.Tensor] = []
    for mode in UPDATE_MODES:
        once = torch.ones(weights, device="cuda")
        _optimizer(once, tables, rows, mode).update(index, grad)
        results.append(once)
        opt = _optimizer(torch.ones(weights, device="cuda"), tables, rows, mode)
        for _ in range(3):
            opt.update(index, grad)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        torch.cuda._sleep(200_000_000)
        start.record()
        host = time.perf_counter()
        for _ in range(iters):
            opt.update(index, grad)
        host = time.perf_counter() - host  # the GPU sleeps meanwhile: the host's own time, launches included
        end.record()
        torch.cuda.synchronize()
        row[mode] = start.elapsed_time(end) / iters
        row[f"{mode}_host_us"] = host * 1e6 / iters
    row["chosen"] = update_mode(index.numel())
    row["fastest"] = min(UPDATE_MODES, key=lambda m: row[m])
    row["max_disagreement"] = max(float((r - results[0]).abs().max()) for r in results)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=8)
    parser.add_argument("--rows", type=int, default=4_000_000, help="weights per table")
    parser.add_argument(
        "--positions", type=int, nargs="+", default=[16384 * 20 * k for k in (1, 2, 4, 8)], help="ids per update"
    )
    parser.add_argument("--zipf", type=float, default=1.05)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_entity_update.py times CUDA kernels: run it on a GPU machine")
    rows = [measure(args.tables, args.rows, n, args.zipf, args.iters) for n in args.positions]
    print(f"{args.tables} tables x {args.rows:,} weights, Zipf {args.zipf}, row-wise Adagrad; GPU ms per update")
    print("(host us per update call in parentheses)")
    print(f"| positions | unique ids | {' | '.join(UPDATE_MODES)} | library picks | fastest | max diff |")
    print("|---:|---:|" + "---:|" * len(UPDATE_MODES) + "---|---|---:|")
    for r in rows:
        times = " | ".join(f"{r[m]:.3f} ({r[m + '_host_us']:.0f})" for m in UPDATE_MODES)
        print(
            f"| {r['positions']:,} | {r['unique']:,} | {times} | {r['chosen']} | {r['fastest']} "
            f"| {r['max_disagreement']:.1e} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
