# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Host and GPU time of the id transform alone (``IdTransform.forward``), per method, on a layout's batches.

Every compressed method runs the transform on every batch, before its input dist: it checks the ids and maps the
logical KJT to the physical tables' KJT in one fused kernel. ``bench_sharded.py``'s host-time table gives its share
of a step on a noisy host; this times it alone, so that a change to it can be compared call for call.

- Host time: the median time of one call, in rounds of calls (``measure.host_step_ms``: synchronised every 20 calls,
  so the GPU's queue never fills). The table shows each round's median: the spread between rounds is the host's
  noise.
- GPU time and ops: the kernels, copies and memsets one call puts on the GPU (``measure.profile_steps``, 40 calls).
- The transform writes the index dtype the sharded module would give it (int32 where the ids fit:
  ``distributed.compressed.physical_index_dtype``).
- KJTs either carry their offsets (as from a loader that builds them from offsets, or once
  anything has read ``kjt.offsets()``) or only lengths. The transform reads the segments from the offsets on the
  device in the first case and copies them from the host in the second.

Usage (GPU machine; on CPU the PyTorch path runs and the GPU columns are empty)::

    python -m torchrec_memcom.benchmarks.transform_time --layout big --methods hash,qr,memcom,lma --out t.json
"""

import argparse
import dataclasses
import itertools
import json
import statistics
from typing import Any, Dict, List, Sequence

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.benchmarks.data import make_batches
from torchrec_memcom.benchmarks.layouts import LAYOUTS, METHODS, MethodOptions, embedding_module, table_configs
from torchrec_memcom.benchmarks.measure import host_step_ms, profile_steps, sync
from torchrec_memcom.distributed.compressed import physical_index_dtype

__all__ = ["markdown", "transform_times"]


def _features(kjt: KeyedJaggedTensor, offsets: bool) -> KeyedJaggedTensor:
    """``kjt``'s ids in a KJT with its offsets, or with lengths only (``length_per_key`` known either way, as after
    TorchRec's input pipeline)."""
    return KeyedJaggedTensor(
        keys=kjt.keys(),
        values=kjt.values(),
        lengths=kjt.lengths(),
        offsets=kjt.offsets() if offsets else None,
        length_per_key=kjt.length_per_key(),
    )


def transform_times(
    method: str,
    layout_name: str,
    device: torch.device,
    offsets: bool,
    rounds: int = 5,
    calls: int = 200,
    batch_size: int = 0,
) -> Dict[str, Any]:
    """Times ``method``'s id transform on 4 cycled batches of ``layout_name`` (``batch_size`` > 0 replaces the
    layout's); returns the row of ``markdown``."""
    layout = LAYOUTS[layout_name]
    if batch_size > 0:
        layout = dataclasses.replace(layout, batch_size=batch_size)
    module, _ = embedding_module(table_configs(method, layout, MethodOptions()), device)
    transform = getattr(module, "id_transform", None)
    if transform is None:
        raise ValueError(f"method '{method}' builds stock tables only: no id transform")
    kjts = [_features(b.sparse_features, offsets) for b in make_batches(layout, 4, 0, device)]
    cycle = itertools.cycle(kjts)
    index_dtype = physical_index_dtype(module, None)  # the sharded lookup's (int32 where the ids fit)

    def call() -> None:
        transform(next(cycle), index_dtype=index_dtype)

    host_step_ms(call, device, rounds=2, per_round=25)  # compile the kernels, build the cached plans
    per_round = max(1, calls // 20)
    medians = [statistics.median(host_step_ms(call, device, per_round, 20)) * 1e3 for _ in range(rounds)]
    row: Dict[str, Any] = {
        "method": method,
        "layout": layout_name,
        "device": str(device),
        "offsets": offsets,
        "index_dtype": str(index_dtype).replace("torch.", ""),
        "ids_per_batch": int(kjts[0].values().numel()),
        "features": len(kjts[0].keys()),
        "host_us_round_medians": medians,
        "host_us": min(medians),
        "gpu_us": None,
        "gpu_ops": None,
    }
    if device.type == "cuda":
        profiled = profile_steps(call, 40, device, "", write=False)
        row["gpu_us"] = profiled["total_ms_per_step"] * 1e3
        row["gpu_ops"] = profiled["gpu_ops_per_step"]
    sync(device)
    if not offsets and any(k.offsets_or_none() is not None for k in kjts):
        raise RuntimeError("the transform computed the offsets of a KJT that had none")  # it must copy the rows
    return row


def markdown(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as a markdown table (host us: the smallest round median, then every round's)."""
    lines = [
        "| layout | method | KJT | ids per batch | ids out | host us per call | host us, round medians | "
        "GPU us per call | GPU ops per call |",
        "|---|---|---|---:|---|---:|---|---:|---:|",
    ]
    for r in rows:
        gpu = "-" if r["gpu_us"] is None else f"{r['gpu_us']:.1f}"
        ops = "-" if r["gpu_ops"] is None else f"{r['gpu_ops']:.1f}"
        rounds = " / ".join(f"{x:.0f}" for x in r["host_us_round_medians"])
        kjt = "offsets" if r["offsets"] else "lengths only"
        lines.append(
            f"| {r['layout']} | {r['method']} | {kjt} | {r['ids_per_batch']:,} | {r.get('index_dtype', 'int64')} | "
            f"{r['host_us']:.1f} | {rounds} | {gpu} | {ops} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] = ()) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", default="big", choices=sorted(LAYOUTS))
    parser.add_argument("--methods", default="hash,qr,memcom,lma", help="comma-separated compressed methods")
    parser.add_argument("--kjt", default="both", choices=["offsets", "lengths", "both"], help="what the KJTs carry")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--batch-size", type=int, default=0, help="replace the layout's batch size")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--out", default="", help="JSON output")
    parser.add_argument("--md", default="", help="markdown output")
    args = parser.parse_args(list(argv) or None)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS or m == "stock":
            raise SystemExit(f"--methods: '{m}' is not a compressed method (choose from {list(METHODS)[1:]})")
    kinds = {"offsets": [True], "lengths": [False], "both": [True, False]}[args.kjt]
    rows = []
    for method in methods:
        for offsets in kinds:
            rows.append(transform_times(method, args.layout, device, offsets, args.rounds, args.calls, args.batch_size))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    table = markdown(rows)
    print("\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows}, f, indent=1)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"# Id transform alone: layout `{args.layout}`, {device}\n\n" + table)
    return rows


if __name__ == "__main__":
    main()
