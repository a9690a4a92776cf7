# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Train DLRM with compressed embedding tables (stock, hashing trick, QR, MEmCom, LMA per feature) on TorchRec.

Launch (2 CPU processes; the same line runs on GPUs, one process per GPU, with NCCL)::

    torchx run -s local_cwd dist.ddp -j 1x2 --script examples/dlrm/train.py -- \\
        --config examples/dlrm/configs/ml1m_memcom.yaml --set train.max_steps=100
    torchrun --nproc-per-node 2 examples/dlrm/train.py --config examples/dlrm/configs/ml1m_lma.yaml
    python examples/dlrm/train.py --config ...        # one process

What it does, and the config key or flag behind each part:

- Tables: one per sparse feature, of the type ``tables.<feature>`` (or ``tables._default``) names, built by
  ``torchrec_memcom.tables.table_config`` into a ``CompressedEmbeddingBagCollection`` on ``meta``; memory and
  compression come from its ``memory_report()`` before sharding.
- Model: ``torchrec.models.dlrm.DLRM`` + ``DLRMTrain`` (``model.*``).
- Sharding: ``CompressedEmbeddingShardingPlanner`` and ``DistributedModelParallel`` with the same
  ``get_sharders(fused_params)`` list (``sharding.<feature>`` limits a table's sharding types); gloo on CPU, NCCL
  on CUDA (``LOCAL_RANK``'s GPU).
- Optimizers: fused TBE optimizer of every table (``optimizer.sparse``: exact_adagrad, exact_rowwise_adagrad,
  exact_sgd) and ``torch.optim`` for the dense layers (``optimizer.dense``), combined.
- LMA: signatures fitted on ``train.lma_signature_rows`` shuffled training rows (same seeded rows on every rank).
- Training: ``TrainPipelineSparseDist``, ``train.batch_size`` rows per rank, ``train.epochs`` / ``train.max_steps``;
  tqdm on rank 0.
- Evaluation: AUC and logloss over all ranks on ``eval.split`` every ``eval.every_steps`` and on
  ``eval.final_split`` at the end.
- Checkpoints: ``torch.distributed.checkpoint`` of model, optimizers, step and data position under
  ``checkpoint.dir`` every ``checkpoint.every_steps`` and at the end; ``--resume`` continues from the newest one
  and reproduces the uninterrupted run's losses.
- Output: ``<output.dir>/<output.json_name>`` (metrics, embedding bytes, compression, samples/s, per-step losses,
  config) and a one-line summary.

Raises:
    ConfigError: unknown keys or table types, bad values, a checkpoint from another config or world size.
"""

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from collections import deque
from itertools import islice
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.models.dlrm import DLRM, DLRMTrain
from tqdm import tqdm

from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.recipes.config import ConfigError, recipe_arg_parser, to_dict
from torchrec_memcom.recipes.schemas import DLRMConfig, load_recipe_config
from torchrec_memcom.recipes.training import (
    Checkpointer,
    DistContext,
    build_tables,
    combined_optimizer,
    evaluate_binary,
    fit_lma_signatures,
    fused_params,
    init_distributed,
    shard_model,
    sharding_constraints,
    write_json,
)


class DLRMRecipe:
    """DLRM training on one rank of a job: ``setup``, ``train``, ``evaluate``, ``save_checkpoint``, ``cleanup``.

    Args:
        cfg (DLRMConfig): the validated config.
        ctx (DistContext): this process's ranks and device.
    """

    def __init__(self, cfg: DLRMConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.step = 0
        self.position: Tuple[int, int] = (0, 0)  # (epoch, batch in epoch) of the next training batch
        self.losses: List[Tuple[int, torch.Tensor]] = []
        self.evals: List[Dict[str, Any]] = []
        self.train_seconds = 0.0
        self.resumed_from: Optional[str] = None
        self._positions: Deque[Tuple[int, int]] = deque()
        ckpt = cfg.checkpoint
        self.checkpointer = Checkpointer(ckpt.dir, ctx, ckpt.keep) if ckpt.dir else None

    # -- setup ----------------------------------------------------------------------------------------------------

    def setup(self, resume: bool = False) -> None:
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.train.seed)
        data = cfg.data
        self.features = data.feature_names()
        try:
            tables = build_tables(self.features, data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
        except ValueError as e:
            raise ConfigError(f"tables: {e}") from None
        ebc = CompressedEmbeddingBagCollection(tables, device="meta")
        self.memory = ebc.memory_report()  # on meta: sizes only, before sharding
        model = DLRMTrain(
            DLRM(
                embedding_bag_collection=ebc,
                dense_in_features=data.dense_dim,
                dense_arch_layer_sizes=cfg.model.dense_arch_layer_sizes,
                over_arch_layer_sizes=cfg.model.over_arch_layer_sizes,
                dense_device=ctx.device,
            )
        )
        constraints = sharding_constraints(self.features, cfg.sharding)
        self.model = shard_model(model, ctx, fused_params(cfg.optimizer.sparse), cfg.train.batch_size, constraints)
        self.optimizer = combined_optimizer(self.model, cfg.optimizer.dense)
        self.train_data = data.batches(
            "train", cfg.train.batch_size, rank=ctx.rank, world_size=ctx.world_size, train=True, seed=cfg.train.seed
        )
        # Equal step counts on every rank (sharded collectives need them); streams without a length end together.
        self.steps_per_epoch: Optional[int] = None
        if self.train_data.has_len():
            local = torch.tensor([len(self.train_data)])
            self.steps_per_epoch = int(ctx.all_reduce(local, torch.distributed.ReduceOp.MIN)[0])
        if ctx.is_main:
            print(self.memory, flush=True)
        if resume:
            if self.checkpointer is None:
                raise ConfigError("checkpoint.dir: --resume needs a checkpoint directory")
            path = self.checkpointer.latest()
            if path is not None:
                self._load(path)
                return
            self._log(f"--resume: no checkpoint in {cfg.checkpoint.dir} yet, starting from scratch")
        self.lma_coverage = fit_lma_signatures(
            self.model,
            # a seeded shuffled sample (the split itself is sorted by user), the same rows on every rank
            data.batches("train", 4096, rank=0, world_size=1, train=True, seed=cfg.train.seed),
            cfg.train.lma_signature_rows,
            progress=ctx.is_main,
        )

    def _trainer_state(self) -> Dict[str, int]:
        return {
            "step": self.step,
            "epoch": self.position[0],
            "batch_in_epoch": self.position[1],
            "world_size": self.ctx.world_size,
            "config": self._fingerprint(),
        }

    def _fingerprint(self) -> int:
        """A hash of the config sections a checkpoint must agree with."""
        c = to_dict(self.cfg)
        text = json.dumps({k: c[k] for k in ("data", "model", "tables")}, sort_keys=True)
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")

    def _load(self, path: str) -> None:
        assert self.checkpointer is not None
        # the dense optimizer's state may be lazy (Adam): create it so the checkpoint has tensors to load into
        for _, opt in self.optimizer.optimizers[1:]:
            opt.init_state()
        state = self.checkpointer.load(path, self.model, self.optimizer, self._trainer_state())
        if state["world_size"] != self.ctx.world_size:
            raise ConfigError(
                f"--resume: {path} was written by {state['world_size']} ranks, this job has "
                f"{self.ctx.world_size} (the data order depends on it)"
            )
        if state["config"] != self._fingerprint():
            raise ConfigError(f"--resume: {path} was written with other data/model/tables settings")
        self.step = int(state["step"])
        self.position = (int(state["epoch"]), int(state["batch_in_epoch"]))
        self.resumed_from = path
        self.lma_coverage = {}
        self._log(f"resumed from {path} at step {self.step} (epoch {self.position[0]}, batch {self.position[1]})")

    # -- training -------------------------------------------------------------------------------------------------

    def _stream(self) -> Iterator[Batch]:
        """Training batches from ``self.position`` on, across epochs, recording each batch's position."""
        epoch, skip = self.position
        for e in range(epoch, self.cfg.train.epochs):
            self.train_data.set_epoch(e)
            batches = islice(iter(self.train_data), skip, self.steps_per_epoch)
            for i, batch in enumerate(batches, start=skip):
                self._positions.append((e, i))
                yield batch
            skip = 0

    def train(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        pipeline = TrainPipelineSparseDist(self.model, self.optimizer, ctx.device, execute_all_batches=True)
        total = cfg.train.max_steps
        if total is None and self.steps_per_epoch is not None:
            total = cfg.train.epochs * self.steps_per_epoch
        stream = self._stream()
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=not ctx.is_main, mininterval=2)
        self.model.train()
        start = time.perf_counter()
        while total is None or self.step < total:
            try:
                loss = pipeline.progress(stream)[0]
            except StopIteration:
                break
            self.step += 1
            epoch, index = self._positions.popleft()
            self.position = (epoch, index + 1)
            self.losses.append((self.step, loss))
            bar.update()
            if self.step % cfg.train.log_every_steps == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}", epoch=epoch)
            every_eval, every_ckpt = cfg.eval.every_steps, cfg.checkpoint.every_steps
            if (every_eval and self.step % every_eval == 0) or (every_ckpt and self.step % every_ckpt == 0):
                self.train_seconds += time.perf_counter() - start
                if every_eval and self.step % every_eval == 0:
                    self.model = pipeline.detach()  # original forwards; the next progress() re-attaches
                    self.evaluate(cfg.eval.split)
                if every_ckpt and self.step % every_ckpt == 0:
                    self.save_checkpoint()
                start = time.perf_counter()
        self.train_seconds += time.perf_counter() - start
        bar.close()
        self.model = pipeline.detach()
        self.steps_run = len(self.losses)
        if cfg.checkpoint.at_end and self.checkpointer is not None and not self._saved_at(self.step):
            self.save_checkpoint()

    def _saved_at(self, step: int) -> bool:
        assert self.checkpointer is not None
        latest = self.checkpointer.latest()
        return latest is not None and latest.endswith(f"step_{step}")

    def evaluate(self, split: str) -> Dict[str, Any]:
        """AUC and logloss of ``split`` over all ranks (collective)."""
        cfg, ctx = self.cfg, self.ctx
        self.model.eval()
        batches = self.cfg.data.batches(
            split, cfg.eval.batch_size, rank=ctx.rank, world_size=ctx.world_size, train=False, seed=cfg.train.seed
        )
        start = time.perf_counter()
        metrics = evaluate_binary(
            lambda b: self.model(b)[1][1],  # DLRMTrain: (loss, (loss, logits, labels))
            batches,
            ctx,
            cfg.eval.batch_size,
            self.features,
            cfg.data.dense_dim,
            max_batches=cfg.eval.max_batches,
            progress=ctx.is_main,
        )
        self.model.train()
        result = {"step": self.step, "split": split, **metrics, "seconds": time.perf_counter() - start}
        self.evals.append(result)
        self._log(
            f"step {self.step} {split}: AUC {metrics['auc']:.4f} logloss {metrics['logloss']:.4f} "
            f"({metrics['num_samples']} rows)"
        )
        return result

    def save_checkpoint(self) -> Optional[str]:
        if self.checkpointer is None:
            return None
        path = self.checkpointer.save(self.step, self.model, self.optimizer, self._trainer_state())
        self._log(f"saved {path}")
        return path

    # -- results --------------------------------------------------------------------------------------------------

    def finish(self) -> Dict[str, Any]:
        """Final evaluation, the JSON (rank 0 writes it) and the summary line."""
        cfg, ctx = self.cfg, self.ctx
        final = self.evaluate(cfg.eval.final_split) if cfg.eval.final_split else None
        steps = torch.tensor([s for s, _ in self.losses], dtype=torch.int64)
        local = torch.stack([loss.detach().float().cpu() for _, loss in self.losses]) if self.losses else None
        mean_losses = ctx.all_reduce(local) / ctx.world_size if local is not None else torch.zeros(0)
        samples = self.steps_run * cfg.train.batch_size * ctx.world_size
        mem = self.memory
        results = {
            "run_name": cfg.output.run_name,
            "recipe": "dlrm",
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
                "steps_this_run": self.steps_run,
                "samples_this_run": samples,
                "seconds": self.train_seconds,
                "samples_per_s": samples / self.train_seconds if self.train_seconds > 0 else None,
                "data_position": {"epoch": self.position[0], "next_batch": self.position[1]},
                "resumed_from": self.resumed_from,
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
        metrics = (
            f"{final.get('split', '-')} AUC {final.get('auc', float('nan')):.4f} "
            f"logloss {final.get('logloss', float('nan')):.4f}"
        )
        sps = r["train"]["samples_per_s"] or 0.0
        return (
            f"[dlrm {r['run_name']}] {metrics} | embeddings {r['embedding_bytes'] / 2**20:.3f} MiB "
            f"({r['compression']:.2f}x vs stock {r['stock_embedding_bytes'] / 2**20:.3f} MiB) | {sps:,.0f} samples/s | "
            f"{r['train']['steps']} steps, {r['world_size']} x {r['device']}"
        )

    def cleanup(self) -> None:
        self.ctx.close()

    def _log(self, message: str) -> None:
        if self.ctx.is_main:
            print(f"[dlrm] {message}", flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = recipe_arg_parser(__doc__.split("\n")[0], "examples/dlrm/configs")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in checkpoint.dir")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # TorchRec 1.8 deprecation notices, once per rank
    args = parse_args(argv)
    cfg = load_recipe_config(args.config, args.set)  # every rank validates before joining the job
    if not isinstance(cfg, DLRMConfig):
        raise ConfigError(f"{args.config}: recipe: this script trains 'dlrm'")
    recipe = DLRMRecipe(cfg, init_distributed())
    try:
        recipe.setup(resume=args.resume)
        recipe.train()
        recipe.finish()
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        sys.exit(f"config error: {e}")
