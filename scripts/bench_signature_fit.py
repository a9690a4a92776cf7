# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Time of LMA's signature fit (``fit_signatures``: co-occurrence pairs, spectral embedding, balanced trees, packing)
on ``bench_sharded.py``'s ``big`` layout: 8 features of 4M ids each, power-law ids (Zipf 1.05, ``sample_ids``),
20 ids per bag, a sample of 1,024 rows, every other feature as context, ``d / Z = 8`` chunks, 8 signature bytes.

Prints a table (seconds per table for the pairs and for the codes) and writes JSON.

Usage::

    python scripts/bench_signature_fit.py --out signature_fit_big.json
    python scripts/bench_signature_fit.py --ids 20000 --tables 2 --rows 64   # a quick run
"""

import argparse
import json
import platform
import time
from typing import Dict, List, Optional

import torch
from torchrec import KeyedJaggedTensor
from tqdm import tqdm

from torchrec_memcom import lsh
from torchrec_memcom.benchmarks.data import sample_ids


def main(argv: Optional[List[str]] = None) -> List[Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=4_000_000, help="ids per table")
    parser.add_argument("--tables", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1024, help="rows of the fitting sample")
    parser.add_argument("--pooling", type=int, default=20, help="ids per bag")
    parser.add_argument("--chunks", type=int, default=8, help="d / Z")
    parser.add_argument("--signature-bytes", type=int, default=8)
    parser.add_argument("--zipf", type=float, default=1.05)
    parser.add_argument("--out", default=None, help="JSON path")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    keys = [f"t{i}" for i in range(args.tables)]
    count = args.rows * args.pooling
    values = torch.cat([sample_ids(args.ids, count, "powerlaw", args.zipf, g, torch.device("cpu")) for _ in keys])
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys, values, torch.full((args.tables * args.rows,), args.pooling, dtype=torch.int32)
    )
    results = []
    for key in tqdm(keys, desc="signature fit", unit="table"):
        builder = lsh.SignatureBuilder(args.ids, args.chunks, args.signature_bytes)
        start = time.perf_counter()
        lsh.build_signatures([kjt], [(key, args.ids, [key], None, False)], [builder])
        pairs_s = time.perf_counter() - start
        start = time.perf_counter()
        builder.signatures()
        codes_s = time.perf_counter() - start
        coverage = builder.coverage()
        results.append(
            {"table": key, "pairs": builder.num_pairs, "pairs_s": pairs_s, "codes_s": codes_s, "coverage": coverage}
        )

    print(
        f"\n{args.tables} tables of {args.ids:,} ids, {args.rows:,} rows x {args.pooling} ids per feature, "
        f"{args.chunks} chunks, {args.signature_bytes} signature bytes, {torch.get_num_threads()} threads"
    )
    print("| table | id-token pairs | pairs s | codes s | coverage |\n| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['table']} | {r['pairs']:,} | {r['pairs_s']:.2f} | {r['codes_s']:.2f} | {r['coverage']:.4%} |")
    total = sum(r["pairs_s"] + r["codes_s"] for r in results)
    print(f"total {total:.1f} s, {total / len(results):.1f} s per table")
    if args.out:
        with open(args.out, "w") as f:
            meta = {"config": vars(args), "threads": torch.get_num_threads(), "machine": platform.processor()}
            json.dump({**meta, "torch": torch.__version__, "tables": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
