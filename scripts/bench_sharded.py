# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Training throughput and memory of sharded stock and compressed embedding tables (TorchRec DMP, one process per GPU).

A thin command line over ``torchrec_memcom.benchmarks`` (layouts, synthetic data, the harness that builds / plans /
shards / times / profiles one method, the reports). Every method (``stock`` first, then MEmCom, LMA, hashing trick,
QR at ``--ratio``) trains the same logical tables in the same process; rank 0 prints a markdown table and writes the
JSON (``--out``, rewritten after every method), markdown (``--md``) and, with ``--chart``, a PNG of each method's
throughput vs stock (``benchmarks.speed_chart``). Layouts: ``big``, ``criteo``, ``terabyte``
(beyond HBM: give ``--hbm-cap-gb``), ``tiny`` (CPU smoke test); see ``torchrec_memcom/benchmarks/layouts.py``.

Usage::

    python scripts/bench_sharded.py --layout tiny --device cpu --iters 3 --warmup 1 --warmup-s 0  # one process
    python -m torch.distributed.run --nproc-per-node 2 scripts/bench_sharded.py --layout tiny --device cpu
    python3 -m torch.distributed.run --nproc-per-node 1 scripts/bench_sharded.py --layout big --out outputs/big_1.json
    python scripts/bench_sharded.py --combine outputs/big_1.json outputs/big_2.json          # weak scaling
    python scripts/bench_sharded.py --layout criteo --model dlrm --pipeline --profile all --repeats 3
    python3 -m torch.distributed.run --nproc-per-node 1 scripts/bench_sharded.py --layout terabyte --model dlrm \\
        --pipeline --hbm-cap-gb 40                                      # stock in host memory behind an HBM cache
    python3 -m torch.distributed.run --nproc-per-node 1 scripts/bench_sharded.py --layout big --model ebc \\
        --cache-recat                      # without TorchRec's per-batch input-dist sync (benchmarks/recat.py)
    python3 -m torch.distributed.run --nproc-per-node 1 scripts/bench_sharded.py --layout big --model ebc \\
        --index-dtype int32                # every method's TBE indices int32, stock's too (default: stock int64)
    python3 -m torch.distributed.run --nproc-per-node 1 scripts/bench_sharded.py --layout big --model ebc \\
        --cuda-graph                       # each step one CUDA graph replay where capturable (one rank)
    python3 -m torch.distributed.run --nproc-per-node 1 scripts/bench_sharded.py --layout criteo --model dlrm \\
        --pipeline --allow-tf32            # the DLRM's dense layers in TF32, as most GPU training runs them
    python scripts/bench_sharded.py --planner-report                    # planning only, 1 / 2 / 4 ranks, no GPU
    python3 -m torch.distributed.run --nproc-per-node 2 scripts/bench_sharded.py --layout criteo --model dlrm \\
        --pipeline --device cuda-shared --profile all  # 2 gloo ranks on one GPU: syncs across ranks, not speed
"""

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from typing import Any, Dict, List, Optional, cast

import torch
from torchrec.distributed.types import ShardingType
from tqdm import tqdm

from torchrec_memcom.benchmarks.harness import BenchOptions, fused_params_for, hbm_budget, run_benchmark
from torchrec_memcom.benchmarks.layouts import LAYOUTS, METHODS, Layout, MethodOptions
from torchrec_memcom.benchmarks.plan_report import planner_caption, planner_markdown, planner_report
from torchrec_memcom.benchmarks.recat import cached_recat
from torchrec_memcom.benchmarks.report import combine, environment, markdown_report, optimizer_label, write_outputs
from torchrec_memcom.benchmarks.speed_chart import draw_run
from torchrec_memcom.recipes.training import DEVICES, enable_tf32, init_distributed

__all__ = ["combine", "main", "parse_args"]

GB = 10**9


def _csv(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add = p.add_argument
    add("--layout", choices=sorted(LAYOUTS), default="big", help="logical tables and batch shape")
    add("--scale", type=float, default=1.0, help="multiply every table's rows (e.g. 4: a layout 4x larger)")
    add("--model", choices=["ebc", "dlrm", "both"], default="both", help="embedding layer alone, DLRM, or both")
    add("--methods", default=",".join(METHODS), help="comma-separated, run in this order (stock first)")
    add("--keep-order", action="store_true", help="run --methods exactly in the order given (stock not moved first)")
    add("--repeats", type=int, default=1, help="run the methods K times interleaved; report the median of medians")
    add("--ratio", type=float, default=16.0, help="compression ratio of every compressed table")
    add("--compress-min-rows", type=int, default=None, help="smaller tables stay stock (layout default)")
    add("--num-buckets", type=int, default=None, help="MEmCom / hash buckets (layout default)")
    add("--batch-size", type=int, default=None, help="rows per rank per step (layout default)")
    add("--pooling", type=int, default=None, help="ids per bag (layout default)")
    add("--ids", choices=["powerlaw", "uniform"], default="powerlaw", help="id distribution")
    add("--zipf", type=float, default=1.05, help="power-law exponent of id popularity")
    add(
        "--num-batches",
        type=int,
        default=None,
        help="distinct batches per rank, cycled (default 4; with fused_uvm_caching on CUDA as many as the steps, so "
        "no timed step finds its ids in FBGEMM's cache from an earlier cycle)",
    )
    add("--optimizer", choices=["rowwise_adagrad", "sgd"], default="rowwise_adagrad", help="fused + dense optimizer")
    add("--lr", type=float, default=0.01, help="learning rate (embeddings and dense)")
    add("--sharding-type", choices=[t.value for t in ShardingType], default=None, help="force one type")
    add("--kernels", default=None, help="compute kernels the planner may use, comma-separated (layout default)")
    add("--hbm-cap-gb", type=float, default=None, help="per-GPU HBM budget in GB (planner and allocator)")
    add("--ddr-cap-gb", type=float, default=None, help="per-rank host budget in GB (default 90%% of free / ranks)")
    add("--cache-load-factor", type=float, default=0.2, help="HBM cache share of fused_uvm_caching tables")
    add("--uvm-memory", choices=["host_mapped", "managed"], default="host_mapped", help="memory of UVM tables")
    add("--pipeline", action="store_true", help="train through TrainPipelineSparseDist")
    add(
        "--cuda-graph",
        action="store_true",
        help="one rank: each step a CUDA graph replay (distributed.CudaGraphTrainStep); what cannot be captured "
        "(stock TorchRec's sharded EBC) runs eagerly (with --pipeline: pipelined) and its row says so",
    )
    add("--allow-tf32", action="store_true", help="dense matmuls in TensorFloat-32 (recipes' train.allow_tf32)")
    add(
        "--known-length-per-key",
        action="store_true",
        help="batches carry their per-feature id counts from the host (as the recipes' loaders do): no device read",
    )
    add(
        "--index-dtype",
        choices=["int32", "int64"],
        default=None,
        help="TBE index type of every method, stock's too (default: stock int64, compressed int32 where ids fit)",
    )
    add(
        "--cache-recat",
        action="store_true",
        help="diagnostic: TorchRec's input-dist permutation built once, not per batch",
    )
    add("--iters", type=int, default=50, help="timed steps per method and repeat")
    add("--warmup", type=int, default=10, help="untimed steps per method and repeat (at least)")
    add("--warmup-s", type=float, default=2.0, help="untimed seconds per method and repeat (at least)")
    add("--lma-chunk-size", type=int, default=16, help="LMA chunk width Z")
    add("--lma-signature-bytes", type=int, default=8, help="LMA signature bytes per id (<= 2 per chunk)")
    add("--lma-shared-memory", action=argparse.BooleanOptionalAction, default=True, help="one LMA memory for all")
    add(
        "--lma-raw-ids",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="LMA ids cross TW/CW dists once (default: with more than one rank)",
    )
    add(
        "--memcom-rows-in-transform",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one rank: MEmCom's rows and weight slots from the id transform (--no-...: rows kernel after the dist)",
    )
    add("--lma-fit-rows", type=int, default=None, help="rows of the LMA signature sample (layout default; 0 = none)")
    add("--profile", default="", help="methods to profile after all timed runs, comma-separated, or 'all' (adds stock)")
    add("--profile-steps", type=int, default=5, help="steps under the profiler")
    add("--profile-dir", default=None, help="where traces and tables go (default: next to --out)")
    add("--fine-host-sites", action="store_true", help="profiled methods' host-time table splits more parts")
    add(
        "--device",
        choices=list(DEVICES),
        default="auto",
        help="cuda-shared: every rank on GPU 0, gloo between them (the all-to-alls between ranks are real but go "
        "through the host: counts a multi-rank step's syncs and ops on a one-GPU machine; its step times are not "
        "a multi-GPU machine's; the plans are a multi-GPU host's, its shards all put on GPU 0); --hbm-cap-gb and "
        "the GPU's memory are split over its ranks",
    )
    add("--seed", type=int, default=0)
    add("--out", default=None, help="JSON output of rank 0 (default outputs/bench_sharded.json)")
    add("--md", default=None, help="markdown output of rank 0 (default outputs/bench_sharded.md)")
    add("--chart", default=None, help="also draw each method's throughput vs stock here (PNG; needs matplotlib)")
    add("--verbose", action="store_true", help="keep TorchRec's planner warnings")
    add("--combine", nargs="+", metavar="JSON", help="print the scaling table of earlier runs and exit")
    add("--planner-report", action="store_true", help="print what the planner chooses per method and rank count")
    add("--planner-layouts", default="big,criteo", help="layouts of --planner-report")
    add("--planner-world-sizes", default="1,2,4", help="rank counts of --planner-report")
    args = p.parse_args(argv)
    args.methods = _csv(args.methods)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if "stock" in args.methods and not args.keep_order:  # stock first, as the tables list it (ratios: any order)
        args.methods = ["stock", *[m for m in args.methods if m != "stock"]]
    args.profile = list(args.methods) if args.profile.strip() == "all" else _csv(args.profile)
    if set(args.profile) - set(args.methods):
        p.error(f"--profile {sorted(set(args.profile) - set(args.methods))}: not among --methods {args.methods}")
    if args.profile and "stock" in args.methods and "stock" not in args.profile:
        args.profile.insert(0, "stock")  # host time is reported relative to stock's
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    stem = "planner_report" if args.planner_report else "bench_sharded"
    args.out = args.out or f"outputs/{stem}.json"
    args.md = args.md or f"outputs/{stem}.md"
    if args.profile_dir is None:
        args.profile_dir = os.path.join(os.path.dirname(args.out), "profiles")
    return args


def resolve_layout(args: argparse.Namespace, name: Optional[str] = None) -> Layout:
    """The layout (``--layout`` or ``name``) scaled by ``--scale`` with the command line's overrides."""
    overrides = {
        "batch_size": args.batch_size,
        "pooling": args.pooling,
        "compress_min_rows": args.compress_min_rows,
        "num_buckets": args.num_buckets,
        "lma_fit_rows": args.lma_fit_rows,
        "kernels": tuple(_csv(args.kernels)) if args.kernels else None,
    }
    layout = LAYOUTS[name or args.layout].scaled(args.scale) if args.scale != 1 else LAYOUTS[name or args.layout]
    return dataclasses.replace(layout, **{k: v for k, v in overrides.items() if v is not None})


def bench_options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        layout_name=args.layout,
        methods=MethodOptions(
            args.ratio,
            args.lma_chunk_size,
            args.lma_signature_bytes,
            args.lma_shared_memory,
            args.lma_raw_ids,
            args.memcom_rows_in_transform,
        ),
        ids=args.ids,
        zipf=args.zipf,
        num_batches=args.num_batches,
        optimizer=args.optimizer,
        lr=args.lr,
        sharding_type=args.sharding_type,
        cache_load_factor=args.cache_load_factor,
        hbm_cap_bytes=int(args.hbm_cap_gb * GB) if args.hbm_cap_gb else None,
        ddr_cap_bytes=int(args.ddr_cap_gb * GB) if args.ddr_cap_gb else None,
        uvm_memory=args.uvm_memory,
        pipeline=args.pipeline,
        cuda_graph=args.cuda_graph,
        known_length_per_key=args.known_length_per_key,
        index_dtype=args.index_dtype,
        iters=args.iters,
        warmup=args.warmup,
        warmup_s=args.warmup_s,
        profile=tuple(args.profile),
        profile_steps=args.profile_steps,
        profile_dir=args.profile_dir,
        fine_host_sites=args.fine_host_sites,
        seed=args.seed,
    )


def run_planner_report(args: argparse.Namespace, opts: BenchOptions) -> None:
    layouts = {name: resolve_layout(args, name) for name in _csv(args.planner_layouts)}
    kernels = _csv(args.kernels) if args.kernels else None
    rows = planner_report(
        layouts,
        args.methods,
        [int(w) for w in _csv(args.planner_world_sizes)],
        opts.methods,
        fused_params_for(opts, [], "cuda"),
        hbm_cap=opts.hbm_cap_bytes,
        ddr_cap=opts.ddr_cap_bytes,
        kernels=kernels,
        cache_load_factor=args.cache_load_factor if kernels and "fused_uvm_caching" in kernels else None,
        sharding_type=args.sharding_type,
    )
    caption = planner_caption(
        opts.hbm_cap_bytes, opts.ddr_cap_bytes, optimizer_label(args.optimizer, args.lr), kernels, args.sharding_type
    )
    text = planner_markdown(rows, caption)
    write_outputs({"config": vars(args), "results": rows}, args.out, args.md, text)
    print(text)
    print(f"wrote {args.out} and {args.md}")


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.combine:
        print(combine(args.combine))
        return
    if not args.verbose:  # per-table "no dense kernel for data_parallel" notes and the Topology constructor warning
        logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    try:
        layout = resolve_layout(args)
        opts = bench_options(args)
    except ValueError as e:  # a bad layout override or option, named by the library
        raise SystemExit(f"bench_sharded.py: {e}") from None
    if args.planner_report:
        run_planner_report(args, opts)
        return
    ctx = init_distributed(timeout_s=1800, device=args.device)
    if opts.cuda_graph and (ctx.device.type != "cuda" or ctx.world_size != 1):
        raise SystemExit(
            f"--cuda-graph needs one rank on a CUDA device (here {ctx.world_size} rank(s) on {ctx.device.type}): "
            "across ranks the input dists exchange their splits through the host"
        )
    if args.allow_tf32:
        enable_tf32()
    if opts.hbm_cap_bytes:  # CUDA only: the allocator refuses to go past the planner's budget
        if ctx.device.type != "cuda":
            raise SystemExit("--hbm-cap-gb needs a CUDA device")
        total = torch.cuda.get_device_properties(ctx.device).total_memory
        share = cast(int, hbm_budget(opts, ctx.device, ctx.ranks_per_device))
        torch.cuda.set_per_process_memory_fraction(min(1.0, share / total), ctx.device)
    config = {**vars(args), "layout_spec": dataclasses.asdict(layout)}
    config["optimizer_label"] = optimizer_label(args.optimizer, args.lr)
    env = environment(ctx.device, ctx.world_size, ctx.backend, ctx.ranks_per_device, ctx.ranks_per_host)
    payload: Dict[str, Any] = {"config": config, "environment": env}

    def on_result(rows: List[Dict[str, Any]]) -> None:
        payload["results"] = rows
        write_outputs(payload, args.out, args.md)

    kinds = ["ebc", "dlrm"] if args.model == "both" else [args.model]
    progress = lambda jobs: tqdm(jobs, desc="runs", unit="run", disable=not ctx.is_main, file=sys.stdout)  # noqa: E731
    with cached_recat() if args.cache_recat else contextlib.nullcontext():
        run_benchmark(layout, opts, kinds, args.methods, args.repeats, ctx, on_result, progress)
    if ctx.is_main:
        print("\n" + markdown_report(payload))
        print(f"wrote {args.out} and {args.md}")
        if args.chart:
            print(draw_run(payload, args.chart, args.out))
    ctx.close()


if __name__ == "__main__":
    main()
