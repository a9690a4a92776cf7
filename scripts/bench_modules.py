# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Time per training batch of a stock ``EmbeddingBagCollection`` and of each compressed collection, side by side.

Every method gets the same logical tables (``--tables`` x ``--n`` x ``--d``) and the same batches (``--batch`` rows,
``--pooling`` ids per bag, uniform ids), and one step is forward + backward (loss = mean of the squared pooled
embeddings) + an SGD step. After ``--warmup`` untimed steps, ``--iters`` timed steps give the median and mean ms per
batch; the ratio to stock is taken from the same run. Bytes come from each module's ``memory_report()`` and from its
parameters and buffers (persistent or not). LMA signatures are fitted on the benchmark batches first (contexts: the
other tables' features).

Unsharded stock tables on CPU use ``nn.EmbeddingBag`` with dense gradients, so the stock step updates every row of
every table; CPU times are for comparing methods in one run, not absolute numbers (those come from the GPU machine).

Usage::

    python scripts/bench_modules.py                       # 4 x 200k x 64, batch 2048, pooling 8, 16x
    python scripts/bench_modules.py --n 1000000 --ratio 32 --iters 50 --out outputs/bench_1m.json
"""

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from tqdm import tqdm

from torchrec_memcom import (
    HashEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagCollection,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagCollection,
    MEmComEmbeddingBagConfig,
    MemoryReport,
    QREmbeddingBagCollection,
    QREmbeddingBagConfig,
)
from torchrec_memcom.configs import stock_bytes
from torchrec_memcom.provenance import environment

METHODS = ["stock", "memcom", "lma", "hash", "qr"]


@dataclass
class Setup:
    """One benchmarked configuration: how to build the module, and a label for the table."""

    method: str
    label: str
    build: Callable[[], nn.Module]


def _feature(t: int) -> str:
    return f"f{t}"


def _largest_chunk(d: int) -> int:
    return next((z for z in (16, 8, 4) if d % z == 0), 1)


def make_setups(args: argparse.Namespace, device: torch.device) -> List[Setup]:
    def tables(cls, **kw) -> List[EmbeddingBagConfig]:
        return [
            cls(name=f"t{t}", num_embeddings=args.n, embedding_dim=args.d, feature_names=[_feature(t)], **kw)
            for t in range(args.tables)
        ]

    z = _largest_chunk(args.d)
    group = "all" if args.lma_shared_memory else None
    builders: Dict[str, Setup] = {
        "stock": Setup("stock", "stock EBC", lambda: EmbeddingBagCollection(tables(EmbeddingBagConfig), device=device)),
        "memcom": Setup(
            "memcom",
            f"MEmCom {args.ratio:g}x",
            lambda: MEmComEmbeddingBagCollection(
                tables(MEmComEmbeddingBagConfig, compression_ratio=args.ratio), device=device
            ),
        ),
        "lma": Setup(
            "lma",
            f"LMA Z={z} {args.ratio:g}x",
            lambda: LMAEmbeddingBagCollection(
                tables(
                    LMAEmbeddingBagConfig,
                    compression_ratio=args.ratio,
                    chunk_size=z,
                    signature_bytes=args.signature_bytes,
                    memory_group=group,
                ),
                device=device,
            ),
        ),
        "hash": Setup(
            "hash",
            f"Hash {args.ratio:g}x",
            lambda: HashEmbeddingBagCollection(
                tables(HashEmbeddingBagConfig, compression_ratio=args.ratio), device=device
            ),
        ),
        "qr": Setup(
            "qr",
            f"QR {args.ratio:g}x",
            lambda: QREmbeddingBagCollection(tables(QREmbeddingBagConfig, compression_ratio=args.ratio), device=device),
        ),
    }
    return [builders[m] for m in args.methods]


def make_batches(args: argparse.Namespace, device: torch.device) -> List[KeyedJaggedTensor]:
    g = torch.Generator().manual_seed(args.seed)
    keys = [_feature(t) for t in range(args.tables)]
    out = []
    for _ in range(args.num_batches):
        values = torch.randint(0, args.n, (args.tables * args.batch * args.pooling,), generator=g)
        lengths = torch.full((args.tables * args.batch,), args.pooling, dtype=torch.int64)
        out.append(KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values, lengths=lengths).to(device))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_bytes(module: nn.Module) -> Dict[str, int]:
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return {"parameter_bytes": params, "buffer_bytes": buffers}


def memory_report(module: nn.Module) -> MemoryReport:
    if isinstance(module, EmbeddingBagCollection):
        configs = module.embedding_bag_configs()
        return MemoryReport.stock(configs, {c.name: module.embedding_bags[c.name].weight for c in configs})
    return module.memory_report()  # type: ignore[operator]


def run_one(
    setup: Setup, batches: List[KeyedJaggedTensor], args: argparse.Namespace, device: torch.device
) -> Dict[str, object]:
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    module = setup.build()
    build_s = time.perf_counter() - t0
    extra: Dict[str, object] = {}
    if isinstance(module, LMAEmbeddingBagCollection):
        t0 = time.perf_counter()
        extra["signature_coverage"] = module.fit_signatures(batches)
        extra["fit_signatures_s"] = time.perf_counter() - t0
    opt = torch.optim.SGD(module.parameters(), lr=args.lr)

    def step(kjt: KeyedJaggedTensor) -> None:
        loss = module(kjt).values().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    _sync(device)
    times = []
    for i in range(args.iters):
        kjt = batches[i % len(batches)]
        t0 = time.perf_counter()
        step(kjt)
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    report = memory_report(module)
    result: Dict[str, object] = {
        "method": setup.method,
        "label": setup.label,
        "ms_median": statistics.median(times),
        "ms_mean": statistics.fmean(times),
        "ms_min": min(times),
        "ms_all": times,
        "build_s": build_s,
        "report_bytes": report.total_bytes,
        "stock_bytes": report.stock_bytes,
        "compression_ratio": report.compression_ratio,
        "memory_report": report.to_dict(),
        **tensor_bytes(module),
        **extra,
    }
    if device.type == "cuda":
        result["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated(device)
    return result


def _mib(b: int) -> str:
    return f"{b / 2**20:.2f}"


def format_table(results: List[Dict[str, object]]) -> str:
    stock = next((r for r in results if r["method"] == "stock"), None)
    header = ("method", "ms/batch med", "ms/batch mean", "x stock", "report MiB", "params+bufs MiB", "compression")
    rows = []
    for r in results:
        ratio = f"{r['ms_median'] / stock['ms_median']:.2f}" if stock is not None else "-"
        rows.append(
            (
                str(r["label"]),
                f"{r['ms_median']:.2f}",
                f"{r['ms_mean']:.2f}",
                ratio,
                _mib(int(r["report_bytes"])),
                _mib(int(r["parameter_bytes"]) + int(r["buffer_bytes"])),
                f"{r['compression_ratio']:.2f}x",
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="logical rows per table")
    p.add_argument("--d", type=int, default=64, help="embedding dim")
    p.add_argument("--tables", type=int, default=4, help="tables (one feature each)")
    p.add_argument("--batch", type=int, default=2048, help="rows per batch")
    p.add_argument("--pooling", type=int, default=8, help="ids per bag")
    p.add_argument("--ratio", type=float, default=16.0, help="requested compression ratio of every compressed method")
    p.add_argument("--signature-bytes", type=int, default=8, help="LMA signature bytes per id (<= 2 per chunk)")
    p.add_argument(
        "--lma-shared-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="LMA: one memory shared by all tables (as in the paper); --no-lma-shared-memory for one per table",
    )
    p.add_argument("--iters", type=int, default=50, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per method")
    p.add_argument("--num-batches", type=int, default=4, help="distinct batches cycled through")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS, help="methods to run, in order")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/bench_modules.json", help="JSON output path")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = make_batches(args, device)
    setups = make_setups(args, device)
    results: List[Dict[str, object]] = []
    skipped: Dict[str, str] = {}
    for setup in tqdm(setups, desc="configurations", unit="method"):
        try:
            results.append(run_one(setup, batches, args, device))
        except ValueError as e:  # e.g. a compression ratio the method cannot reach at this n and d
            skipped[setup.label] = str(e)
    stock = next((r for r in results if r["method"] == "stock"), None)
    for r in results:
        r["ratio_to_stock"] = r["ms_median"] / stock["ms_median"] if stock is not None else None

    logical = args.tables * stock_bytes(EmbeddingBagConfig(name="t", num_embeddings=args.n, embedding_dim=args.d))
    print(
        f"\n{args.tables} tables x n={args.n:,} x d={args.d} (stock fp32 {logical / 2**20:.1f} MiB), "
        f"batch {args.batch}, pooling {args.pooling}, requested {args.ratio:g}x, SGD; "
        f"{args.iters} timed steps after {args.warmup} warmup; "
        f"device {device}, {torch.get_num_threads()} threads"
    )
    print(format_table(results))
    for r in results:
        if "signature_coverage" in r:
            cov = ", ".join(f"{k} {v:.1%}" for k, v in r["signature_coverage"].items())  # type: ignore[union-attr]
            print(f"{r['label']}: ids with a signature (fitted on the {args.num_batches} batches): {cov}")
    for label, why in skipped.items():
        print(f"skipped {label}: {why}")

    payload = {
        "config": vars(args),
        "environment": {
            **environment(),
            "processor": platform.processor(),
            "device": str(device),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "results": results,
        "skipped": skipped,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
