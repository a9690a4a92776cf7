# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Train a two-tower retrieval model with compressed embedding tables (stock, hashing trick, QR, MEmCom, LMA per
feature) on TorchRec, and evaluate it by full ranking.

Launch (2 CPU processes; the same line runs on GPUs, one process per GPU, with NCCL)::

    torchx run -s local_cwd memcom.two_tower_ml1m_memcom
    torchrun --nproc-per-node 2 examples/two_tower/train.py --config examples/two_tower/configs/ml1m_lma.yaml
    python examples/two_tower/train.py --config examples/two_tower/configs/ml1m_stock.yaml --set train.epochs=1

What it does, and the config key behind each part:

- Tables: one per sparse feature, of the type ``tables.<feature>`` (or ``tables._default``) names
  (``torchrec_memcom.tables.table_config``); the user tower's (user, gender, age, occupation, zip) form one
  ``CompressedEmbeddingBagCollection`` and the item tower's (movie, genres) another, both built on ``meta``; memory
  and compression come from their ``memory_report()`` before sharding.
- Model (``model.*``): each tower is its collection plus an MLP (``tower_layer_sizes``; the item tower also takes
  the movie's scaled release year); score = dot product of the (L2-normalised, ``normalize``) tower outputs divided
  by ``temperature``.
- Loss: softmax over in-batch negatives: each row's positive item against the other rows' items of the same rank's
  batch (duplicates of the positive and the user's other in-batch positives masked), with the logQ correction
  (``model.logq_correction``); see ``examples/two_tower/model.py``.
- Sharding: ``CompressedEmbeddingShardingPlanner`` and ``DistributedModelParallel`` with the same
  ``get_sharders(fused_params)`` list (``sharding.<feature>`` limits a table's sharding types); gloo on CPU, NCCL
  on CUDA.
- Optimizers: fused TBE optimizer of every table (``optimizer.sparse``) and ``torch.optim`` for the towers
  (``optimizer.dense``).
- LMA: signatures fitted on ``train.lma_signature_rows`` random training pairs (the same on every rank); a user's
  context is the movies it rated (and their genres), a movie's the users who rated it.
- Training: ``TrainPipelineSparseDist``, ``train.batch_size`` pairs per rank, ``train.epochs`` / ``train.max_steps``.
- Evaluation (``eval.*``): every rank embeds all movies and its share of the users, the user vectors are gathered,
  and ``MovieLensRanking.evaluate`` ranks each user's held-out movie against all movies (train items excluded):
  nDCG@k and Recall@k on ``eval.split`` every ``eval.every_steps`` and on ``eval.final_split`` at the end.
- Output: ``<output.dir>/<output.json_name>`` (metrics, embedding bytes, compression, samples/s, losses, config) and
  a one-line summary. No checkpoints (see the DLRM recipe for DCP checkpoints and resume).

Raises:
    ConfigError: unknown keys or table types, bad values.
"""

import argparse
import os
import sys
import time
import warnings
from itertools import islice
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script (torchrun examples/two_tower/train.py): make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.two_tower.model import TwoTowerBatch, build_two_tower, item_log_frequency  # noqa: E402
from torchrec_memcom.recipes.config import ConfigError, recipe_arg_parser, to_dict  # noqa: E402
from torchrec_memcom.recipes.schemas import TwoTowerConfig, load_recipe_config  # noqa: E402
from torchrec_memcom.recipes.training import (  # noqa: E402
    DistContext,
    build_tables,
    combined_optimizer,
    fit_lma_signatures,
    fused_params,
    init_distributed,
    shard_model,
    sharding_constraints,
    write_json,
)


class PairBatches:
    """The dataset's positive (user, movie) ``Batch`` es as ``TwoTowerBatch`` es (raw ids pulled from the KJT)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[TwoTowerBatch]:
        for b in self.source:
            yield as_pair_batch(b)


def as_pair_batch(b: Batch) -> TwoTowerBatch:
    kjt = b.sparse_features
    return TwoTowerBatch(
        dense_features=b.dense_features,
        sparse_features=kjt,
        labels=b.labels,
        user_ids=kjt["user"].values().to(torch.int64),
        item_ids=kjt["movie"].values().to(torch.int64),
    )


class TwoTowerRecipe:
    """Two-tower training on one rank of a job: ``setup``, ``train``, ``evaluate``, ``finish``, ``cleanup``.

    Args:
        cfg (TwoTowerConfig): the validated config.
        ctx (DistContext): this process's ranks and device.
    """

    def __init__(self, cfg: TwoTowerConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.step = 0
        self.losses: List[Tuple[int, torch.Tensor]] = []
        self.evals: List[Dict[str, Any]] = []
        self.train_seconds = 0.0

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.train.seed)
        data = cfg.data
        self.ds = data.dataset()
        sizes, dim = data.table_sizes(), cfg.model.embedding_dim
        try:
            user_tables = build_tables(data.user_feature_names(), sizes, dim, cfg.tables)
            item_tables = build_tables(data.item_feature_names(), sizes, dim, cfg.tables)
        except ValueError as e:
            raise ConfigError(f"tables: {e}") from None
        log_q = item_log_frequency(self.ds.train_items, self.ds.num_items) if cfg.model.logq_correction else None
        model = build_two_tower(
            user_tables,
            item_tables,
            item_dense_dim=data.dense_dim,
            layer_sizes=cfg.model.tower_layer_sizes,
            temperature=cfg.model.temperature,
            normalize=cfg.model.normalize,
            item_log_q=log_q,
            ebc_device="meta",
            dense_device=ctx.device,
        )
        self.memory = model.model.memory_report()  # on meta: sizes only, before sharding
        constraints = sharding_constraints(data.feature_names(), cfg.sharding)
        self.model = shard_model(model, ctx, fused_params(cfg.optimizer.sparse), cfg.train.batch_size, constraints)
        self.optimizer = combined_optimizer(self.model, cfg.optimizer.dense)
        self.train_data = PairBatches(
            self.ds.train_batches(
                cfg.train.batch_size,
                shuffle=data.shuffle,
                seed=cfg.train.seed,
                drop_last=True,
                rank=ctx.rank,
                world_size=ctx.world_size,
            )
        )
        local = torch.tensor([len(self.train_data)])
        self.steps_per_epoch = int(ctx.all_reduce(local, dist.ReduceOp.MIN)[0])
        if ctx.is_main:
            print(self.memory, flush=True)
        # every rank reads the same random sample (same seed), so the replicated signatures agree
        sample = self.ds.train_batches(4096, shuffle=True, seed=cfg.train.seed, drop_last=False)
        self.lma_coverage = fit_lma_signatures(self.model, sample, cfg.train.lma_signature_rows, ctx.is_main)

    def _stream(self) -> Iterator[TwoTowerBatch]:
        for epoch in range(self.cfg.train.epochs):
            self.train_data.set_epoch(epoch)
            yield from islice(iter(self.train_data), self.steps_per_epoch)

    def train(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        pipeline = TrainPipelineSparseDist(self.model, self.optimizer, ctx.device, execute_all_batches=True)
        total = cfg.train.epochs * self.steps_per_epoch
        if cfg.train.max_steps is not None:
            total = min(total, cfg.train.max_steps)
        stream = self._stream()
        bar = tqdm(total=total, desc="train", unit="step", disable=not ctx.is_main, mininterval=2)
        self.model.train()
        start = time.perf_counter()
        while self.step < total:
            try:
                loss = pipeline.progress(stream)[0]
            except StopIteration:
                break
            self.step += 1
            self.losses.append((self.step, loss))
            bar.update()
            if self.step % cfg.train.log_every_steps == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
            if cfg.eval.every_steps and self.step % cfg.eval.every_steps == 0 and self.step < total:
                self.train_seconds += time.perf_counter() - start
                self.model = pipeline.detach()  # original forwards; the next progress() re-attaches
                self.evaluate(cfg.eval.split)
                start = time.perf_counter()
        self.train_seconds += time.perf_counter() - start
        bar.close()
        self.model = pipeline.detach()

    def _features(self, users: torch.Tensor, movies: torch.Tensor) -> Any:
        """KJT of every feature for (user, movie) rows on the device: a sharded collection keeps the key set (and
        order) of its first input, so evaluation feeds the training layout with a placeholder partner id."""
        kjt = self.ds.data.features(self.cfg.data.feature_names(), users=users.numpy(), movies=movies.numpy())
        return kjt.to(self.ctx.device)

    @torch.no_grad()
    def _user_vectors(self, towers: Any) -> torch.Tensor:
        """``[num_users, out]`` on every rank: each rank embeds its share in equal padded steps, then all-gather."""
        ctx, ubs = self.ctx, self.cfg.eval.user_batch_size
        shares = torch.arange(self.ds.num_users).tensor_split(ctx.world_size)
        mine = shares[ctx.rank]
        steps = -(-max(len(s) for s in shares) // ubs)
        parts = []
        for i in range(steps):
            ids = mine[i * ubs : (i + 1) * ubs]
            padded = torch.cat([ids, ids.new_zeros(ubs - len(ids))])  # user 0 fills the step; dropped below
            vectors = towers.user_embedding(self._features(padded, torch.zeros_like(padded)))
            parts.append(vectors[: len(ids)])
        local = torch.cat(parts)
        if ctx.world_size == 1:
            return local
        longest = max(len(s) for s in shares)
        buffer = local.new_zeros(longest, local.shape[1])
        buffer[: len(local)] = local
        gathered = [torch.empty_like(buffer) for _ in range(ctx.world_size)]
        dist.all_gather(gathered, buffer)
        return torch.cat([g[: len(s)] for g, s in zip(gathered, shares)])

    @torch.no_grad()
    def evaluate(self, split: str) -> Dict[str, Any]:
        """nDCG@k and Recall@k of ``split`` under full ranking (collective)."""
        cfg, ctx = self.cfg, self.ctx
        self.model.eval()
        start = time.perf_counter()
        towers = self.model.module.model  # DMP -> TwoTowerTrain -> TwoTower (sharded collections inside)
        items = torch.arange(self.ds.num_items)
        item_vectors = towers.item_embedding(
            self._features(torch.zeros_like(items), items), self.ds.item_dense(items).to(ctx.device)
        )
        user_vectors = self._user_vectors(towers)
        metrics = self.ds.evaluate(
            lambda users: user_vectors[users.to(ctx.device)] @ item_vectors.t(), split, k=cfg.eval.k
        )
        self.model.train()
        result = {"step": self.step, "split": split, **metrics, "seconds": time.perf_counter() - start}
        self.evals.append(result)
        k = cfg.eval.k
        ndcg, recall = metrics[f"ndcg@{k}"], metrics[f"recall@{k}"]
        self._log(f"step {self.step} {split}: nDCG@{k} {ndcg:.4f} Recall@{k} {recall:.4f}")
        return result

    def finish(self) -> Dict[str, Any]:
        """Final evaluation, the JSON (rank 0 writes it) and the summary line."""
        cfg, ctx = self.cfg, self.ctx
        final = self.evaluate(cfg.eval.final_split) if cfg.eval.final_split else None
        steps = [s for s, _ in self.losses]
        local = torch.stack([loss.detach().float().cpu() for _, loss in self.losses]) if self.losses else None
        mean_losses = ctx.all_reduce(local) / ctx.world_size if local is not None else torch.zeros(0)
        samples = self.step * cfg.train.batch_size * ctx.world_size
        mem = self.memory
        results = {
            "run_name": cfg.output.run_name,
            "recipe": "two_tower",
            "world_size": ctx.world_size,
            "device": ctx.device.type,
            "embedding_bytes": mem.total_bytes,
            "stock_embedding_bytes": mem.stock_bytes,
            "compression": mem.compression_ratio,
            "memory": mem.to_dict(),
            "final": final,
            "evals": self.evals,
            "train": {
                "steps": self.step,
                "samples": samples,
                "seconds": self.train_seconds,
                "samples_per_s": samples / self.train_seconds if self.train_seconds > 0 else None,
                "losses": [[int(s), float(v)] for s, v in zip(steps, mean_losses)],
            },
            "lma_signature_coverage": self.lma_coverage,
            "plan": str(self.model.plan),
            "config": to_dict(cfg),
        }
        if ctx.is_main:
            path = os.path.join(cfg.output.dir, cfg.output.json_name)
            write_json(path, results)
            print(self.summary(results) + f" -> {path}", flush=True)
        return results

    @staticmethod
    def summary(r: Dict[str, Any]) -> str:
        final = r["final"] or {}
        k = r["config"]["eval"]["k"]
        metrics = (
            f"{final.get('split', '-')} nDCG@{k} {final.get(f'ndcg@{k}', float('nan')):.4f} "
            f"Recall@{k} {final.get(f'recall@{k}', float('nan')):.4f}"
        )
        sps = r["train"]["samples_per_s"] or 0.0
        return (
            f"[two_tower {r['run_name']}] {metrics} | embeddings {r['embedding_bytes'] / 2**20:.3f} MiB "
            f"({r['compression']:.2f}x vs stock {r['stock_embedding_bytes'] / 2**20:.3f} MiB) | {sps:,.0f} samples/s | "
            f"{r['train']['steps']} steps, {r['world_size']} x {r['device']}"
        )

    def cleanup(self) -> None:
        self.ctx.close()

    def _log(self, message: str) -> None:
        if self.ctx.is_main:
            print(f"[two_tower] {message}", flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = recipe_arg_parser(__doc__.split("\n")[0], "examples/two_tower/configs")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # TorchRec 1.8 deprecation notices, once per rank
    args = parse_args(argv)
    cfg = load_recipe_config(args.config, args.set)  # every rank validates before joining the job
    if not isinstance(cfg, TwoTowerConfig):
        raise ConfigError(f"{args.config}: recipe: this script trains 'two_tower'")
    recipe = TwoTowerRecipe(cfg, init_distributed())
    try:
        recipe.setup()
        recipe.train()
        recipe.finish()
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        sys.exit(f"config error: {e}")
