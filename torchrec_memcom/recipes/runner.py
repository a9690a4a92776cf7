# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The part every recipe shares: checks before training, sharding, the training loop, checkpoints and resume,
failure handling and the results JSON. A recipe supplies a ``RecipeTask`` (its model, data and metrics) and calls
``cli(Task)``; ``torchrec_memcom.recipes.dlrm`` and ``torchrec_memcom.recipes.two_tower`` are the two tasks.

Guarantees (``docs/RELIABILITY.md`` states them for users):

- Before the first training step: every data file the run will read exists, ``output.dir`` and ``checkpoint.dir``
  are writable (rank 0 writes a ``"status": "running"`` results file at once), and on resume the checkpoint's
  recorded config agrees with this run's (the differing keys are named).
- A non-finite training loss stops the run with ``TrainingDiverged`` naming the first bad step, on every rank alike.
  The check reads the losses the loop keeps anyway, once per ``train.log_every_steps`` steps (where the progress bar
  already syncs), before every evaluation and checkpoint, and at the end: no extra host sync per step on GPU, and no
  checkpoint or result is ever written from a diverged model.
- The results file says ``"status": "ok"`` only after a complete run; a failed run leaves ``"status": "failed"`` with
  the error (or ``"running"`` if the process was killed), never a file that looks like a result.
- Early stopping (``train.early_stopping``): the validation metric at every epoch end (or every N steps), the best
  state kept (``torchrec_memcom.recipes.early_stopping``) and restored before the final evaluation; the curve and the
  best step / epoch go into the results. A resumed run starts the early-stopping bookkeeping afresh.
- Resume (``--resume``, or automatically when torchrun restarts the workers: ``TORCHELASTIC_RESTART_COUNT > 0``)
  continues from the newest checkpoint that loads, at the same training row: the position is saved in rows of the
  current epoch, so a different ``train.batch_size`` is accepted when the dataset's row order does not depend on it
  and the new global batch divides the position, and refused otherwise. The seed, data, model, tables, sharding,
  optimizers and world size must match.
"""

import os
import sys
import time
import warnings
from collections import deque
from itertools import islice
from typing import (
    Any,
    Callable,
    ClassVar,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
)

import torch
import torch.distributed as dist
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from tqdm import tqdm

from torchrec_memcom.datasets._batching import DataError
from torchrec_memcom.distributed.checkpoint import load_unsharded_state_dict
from torchrec_memcom.distributed.cuda_graph_pipeline import CudaGraphTrainPipeline
from torchrec_memcom.distributed.cuda_graph_step import on_capture_stream
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.recipes.checkpoint import Checkpointer, CheckpointError, config_changes
from torchrec_memcom.recipes.config import ConfigError, recipe_arg_parser, tables_override, to_dict
from torchrec_memcom.recipes.data import Epochs
from torchrec_memcom.recipes.early_stopping import EarlyStopper
from torchrec_memcom.recipes.init_from import converted_state
from torchrec_memcom.recipes.schemas import load_recipe_config, preset_names
from torchrec_memcom.recipes.training import (
    DistContext,
    combined_optimizer,
    enable_tf32,
    fit_lma_signatures,
    fused_params,
    init_distributed,
    shard_model,
    sharding_constraints,
    write_json,
)

__all__ = ["RESUME_MUST_MATCH", "RecipeError", "RecipeRunner", "RecipeTask", "TrainingDiverged", "cli", "main"]

RESUME_MUST_MATCH: Tuple[str, ...] = ("data", "model", "tables", "sharding", "optimizer", "train.seed")
"""Config sections a resumed run must share with its checkpoint (the rest, e.g. epochs, eval, output, may change;
``train.batch_size`` follows the data-position rule)."""


class RecipeError(RuntimeError):
    """A run that cannot continue (diverged, no data, no loadable checkpoint); the message says why."""


class TrainingDiverged(RecipeError):
    """A training loss is not finite."""


class RecipeTask(Protocol):
    """What a recipe adds to ``RecipeRunner``: its model, data and metrics (built from ``cfg`` and ``ctx``)."""

    name: ClassVar[str]
    """The recipe, as in the YAML's ``recipe:`` key and ``configs/<name>/``."""

    def __init__(self, cfg: Any, ctx: DistContext) -> None: ...

    def build_model(self, device: str = "meta") -> Tuple[nn.Module, MemoryReport]:
        """The training module (its embedding collections on ``device``: ``meta`` to shard, ``cpu`` to hold a full
        state; dense layers on the run's device) and the memory report of its embeddings."""

    def feature_names(self) -> List[str]:
        """Every sparse feature (the keys of ``sharding``)."""

    def train_data(self) -> Epochs:
        """This rank's training batches."""

    def signature_batches(self) -> Iterable[Batch]:
        """A seeded sample of training rows for LMA signatures, the same on every rank."""

    def evaluate(self, model: nn.Module, split: str) -> Dict[str, Any]:
        """Metrics of ``split`` over all ranks (collective); ``data`` may hold the reader's stats."""

    def metrics_text(self, metrics: Dict[str, Any]) -> str:
        """One line of the main metrics, e.g. ``AUC 0.8012 logloss 0.4501``."""


def _check_cuda_graph(cfg: Any, ctx: DistContext) -> None:
    """``train.cuda_graph``'s needs, checked before anything is built (``ConfigError`` naming the key)."""
    varying = cfg.data.varying_features()
    if varying:
        raise ConfigError(
            f"train.cuda_graph: data.name {cfg.data.name}'s features {varying} have a varying number of ids per row "
            "(multi-hot), so every batch has other shapes, and a CUDA graph holds one; train without train.cuda_graph"
        )
    if ctx.device.type != "cuda" or ctx.world_size != 1:
        raise ConfigError(
            f"train.cuda_graph: needs one rank on one CUDA GPU (this job: {ctx.world_size} rank(s) on "
            f"{ctx.device.type}); across ranks the input dists exchange their splits through the host"
        )


class RecipeRunner:
    """Runs one rank of a recipe: ``setup``, ``train``, ``finish``; ``run`` wraps them with failure handling.

    Args:
        task (RecipeTask): the recipe's model, data and metrics.
        cfg (Any): the validated recipe config (``tables``, ``sharding``, ``optimizer``, ``train``, ``eval``,
            ``checkpoint``, ``output``, ``data`` sections).
        ctx (DistContext): this process's ranks and device.
    """

    def __init__(self, task: RecipeTask, cfg: Any, ctx: DistContext) -> None:
        self.task = task
        self.cfg = cfg
        self.ctx = ctx
        self.step = 0
        self.epoch = 0
        self.next_batch = 0  # index in the epoch of the next training batch
        self.losses: List[Tuple[int, torch.Tensor]] = []
        self.evals: List[Dict[str, Any]] = []
        self.train_seconds = 0.0
        self.resumed_from: Optional[str] = None
        self.lma_coverage: Dict[str, float] = {}
        self.last_saved: Optional[int] = None
        self._checked = 0  # losses checked for finiteness
        self._positions: Deque[Tuple[int, int]] = deque()
        self._pass_stats: List[Dict[str, Any]] = []  # reader stats of the finished training passes
        self._in_pass = False
        self._output_started = False
        out = cfg.output
        self.results_path = os.path.join(out.dir, out.json_name)
        ckpt = cfg.checkpoint
        self.checkpointer = Checkpointer(ckpt.dir, ctx, ckpt.keep) if ckpt.dir else None
        stopping = cfg.train.early_stopping
        self.stopper = EarlyStopper(stopping, ctx, ckpt.dir) if stopping is not None else None

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.ctx.world_size

    # -- setup --------------------------------------------------------------------------------------------------------

    def setup(self, resume: bool) -> None:
        """Checks files and folders, builds and shards the model, then resumes or fits LMA signatures."""
        cfg, ctx = self.cfg, self.ctx
        eval_splits = [cfg.eval.split] if cfg.eval.every_steps or self.stopper is not None else []
        eval_splits += [cfg.eval.final_split] if cfg.eval.final_split else []
        _agree(ctx, self._start_output)  # first: a failed check below then leaves a "failed" record, not an old result
        _agree(ctx, lambda: cfg.data.check_paths(["train", *dict.fromkeys(eval_splits)]), "data.")
        if self.checkpointer is not None:
            _agree(ctx, self.checkpointer.check_writable)
            self.checkpointer.remove_partial()
        elif resume and not _restarted():
            raise ConfigError("checkpoint.dir: --resume needs a checkpoint directory")

        if cfg.train.cuda_graph:
            _check_cuda_graph(cfg, ctx)
        if cfg.train.allow_tf32:
            enable_tf32()
        torch.manual_seed(cfg.train.seed)
        model, self.memory = self.task.build_model()
        constraints = sharding_constraints(self.task.feature_names(), cfg.sharding)
        # with CUDA graphs, on the capture stream: DDP (the dense part) keeps gradient accumulators made on this stream
        with on_capture_stream(ctx.device, enabled=cfg.train.cuda_graph):
            self.model = shard_model(model, ctx, fused_params(cfg.optimizer.sparse), cfg.train.batch_size, constraints)
        # on CUDA, capturable whether or not steps are captured: the same arithmetic and checkpoints either way
        self.optimizer = combined_optimizer(self.model, cfg.optimizer.dense, capturable=ctx.device.type == "cuda")
        self.train_data = self.task.train_data()
        # Equal step counts on every rank (sharded collectives need them); streams without a length end together.
        self.steps_per_epoch: Optional[int] = None
        if self.train_data.has_len():
            local = torch.tensor([len(self.train_data)])
            self.steps_per_epoch = int(ctx.all_reduce(local, dist.ReduceOp.MIN)[0])
        if self.stopper is not None and self.steps_per_epoch is None and not self.stopper.cfg.every_steps:
            raise ConfigError(
                "train.early_stopping.every_steps: this training data has no epoch length, so early stopping cannot "
                "evaluate at epoch ends: give every_steps"
            )
        if ctx.is_main:
            print(self.memory, flush=True)
        if resume and self._resume():
            return
        if cfg.train.init_from is not None:
            self._log(f"converting the stock run {cfg.train.init_from} to this run's tables (warm start)")
            state, self.lma_coverage = converted_state(self.task, cfg.train.init_from)
            load_unsharded_state_dict(self.model, state)
            return
        self.lma_coverage = fit_lma_signatures(
            self.model, self.task.signature_batches(), cfg.train.lma_signature_rows, progress=ctx.is_main
        )

    def _start_output(self) -> None:
        """Rank 0 writes a ``running`` results file (replacing an old result, proving the folder is writable)."""
        if not self.ctx.is_main:
            return
        try:
            write_json(self.results_path, self._header("running"))
        except OSError as e:
            raise ConfigError(f"output.dir: cannot write {self.results_path}: {e.strerror or e}") from None
        self._output_started = True

    def _resume(self) -> bool:
        """Loads the newest checkpoint that fits and loads; ``False`` if there is none."""
        if self.checkpointer is None:
            self._log("restarted, but checkpoint.dir is not set: training from scratch")
            return False
        for _, opt in self.optimizer.optimizers[1:]:  # lazy dense state (Adam): create it so DCP has tensors to fill
            opt.init_state()
        restored = self.checkpointer.restore(self.model, self.optimizer, self._accept)
        if restored is None:
            self._log(f"no checkpoint in {self.cfg.checkpoint.dir} yet: training from scratch")
            return False
        path, record = restored
        trainer = record["trainer"]
        self.step = int(trainer["step"])
        self.epoch = int(trainer["epoch"])
        self.next_batch = int(trainer["samples_in_epoch"]) // self.global_batch
        self.lma_coverage = dict(record.get("lma_signature_coverage") or {})
        self.last_saved = self.step
        self.resumed_from = path
        self._log(
            f"resumed from {path} at step {self.step} (epoch {self.epoch}, row {trainer['samples_in_epoch']} of the "
            f"epoch; restart {os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')})"
        )
        return True

    def _accept(self, path: str, record: Dict[str, Any]) -> None:
        """Raises ``ConfigError`` unless the checkpoint at ``path`` fits this run (see ``RESUME_MUST_MATCH``)."""
        if record.get("recipe") != self.task.name:
            raise ConfigError(f"--resume: {path} was written by the {record.get('recipe')!r} recipe")
        if int(record["world_size"]) != self.ctx.world_size:
            raise ConfigError(
                f"--resume: {path} was written by {record['world_size']} ranks, this job has {self.ctx.world_size}"
            )
        changes = config_changes(record["config"], to_dict(self.cfg), RESUME_MUST_MATCH)
        if changes:
            raise ConfigError(
                f"--resume: {path} was written with another config ({'; '.join(changes)}); these sections must "
                f"match to resume ({', '.join(RESUME_MUST_MATCH)}): restore them or use a new checkpoint.dir"
            )
        trainer = record["trainer"]
        rows, saved_global = int(trainer["samples_in_epoch"]), int(trainer["global_batch"])
        if saved_global == self.global_batch:
            return
        saved = f"{path} stopped after {rows} rows of epoch {trainer['epoch']} with a global batch of {saved_global}"
        if not self.train_data.fixed_row_order:
            raise ConfigError(
                f"train.batch_size: {saved}; this dataset's row order depends on the batch size, so a global batch "
                f"of {self.global_batch} would skip or repeat rows: resume with train.batch_size="
                f"{int(trainer['batch_size'])}"
            )
        if rows % self.global_batch:
            raise ConfigError(
                f"train.batch_size: {saved}, not a multiple of this run's global batch of {self.global_batch}, so "
                f"rows would be skipped or repeated: pick a batch size whose global batch divides {rows}"
            )

    # -- training -----------------------------------------------------------------------------------------------------

    def _stream(self) -> Iterator[Batch]:
        """Training batches from the saved position on, across epochs, recording each batch's position."""
        skip = self.next_batch
        for e in range(self.epoch, self.cfg.train.epochs):
            self.train_data.set_epoch(e)
            self._in_pass = True
            batches = islice(iter(self.train_data), skip, self.steps_per_epoch)
            for i, batch in enumerate(batches, start=skip):
                self._positions.append((e, i))
                yield batch
            self._pass_stats.append(self.train_data.stats())
            self._in_pass = False
            skip = 0

    def train(self) -> None:
        """Trains to ``train.max_steps`` or the last epoch, evaluating and checkpointing on the way."""
        cfg, ctx = self.cfg, self.ctx
        pipeline = (
            CudaGraphTrainPipeline(self.model, self.optimizer, ctx.device)
            if cfg.train.cuda_graph
            else TrainPipelineSparseDist(self.model, self.optimizer, ctx.device, execute_all_batches=True)
        )
        total = cfg.train.max_steps
        if total is None and self.steps_per_epoch is not None:
            total = cfg.train.epochs * self.steps_per_epoch
        stream = self._stream()
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=not ctx.is_main, mininterval=2)
        every_eval, every_ckpt = cfg.eval.every_steps, cfg.checkpoint.every_steps
        self.model.train()
        start = time.perf_counter()
        while total is None or self.step < total:
            try:
                loss = pipeline.progress(stream)[0]
            except StopIteration:
                break
            self.step += 1
            self.epoch, index = self._positions.popleft()
            self.next_batch = index + 1
            self.losses.append((self.step, loss.detach()))
            bar.update()
            if self.step % cfg.train.log_every_steps == 0:
                self.check_losses()
                bar.set_postfix(loss=f"{float(loss):.4f}", epoch=self.epoch)
            eval_now = bool(every_eval) and self.step % every_eval == 0
            ckpt_now = bool(every_ckpt) and self.step % every_ckpt == 0
            stop_now = self.stopper is not None and self.stopper.due(self.step, self.next_batch == self.steps_per_epoch)
            if eval_now or ckpt_now or stop_now:
                self.train_seconds += time.perf_counter() - start
                if isinstance(pipeline, CudaGraphTrainPipeline):
                    pipeline.flush()  # the replays' input checks, before any evaluation or checkpoint
                self.check_losses()
                if eval_now or stop_now:
                    self.model = pipeline.detach()  # original forwards; the next progress() re-attaches
                    metrics = self._evaluate(cfg.eval.split)
                if ckpt_now:
                    self.save_checkpoint()
                if stop_now and self.stopper is not None:
                    if self.stopper.update(self.step, self.epoch, metrics, self.model, self.optimizer):
                        self._log(
                            f"early stopping after step {self.step}: {cfg.eval.split} {self.stopper.cfg.metric} "
                            f"did not improve on {self.stopper.best} (step {self.stopper.best_step}) in "
                            f"{self.stopper.cfg.patience} evaluations"
                        )
                        break
                start = time.perf_counter()
        self.train_seconds += time.perf_counter() - start
        bar.close()
        self.model = pipeline.detach()
        self.check_losses()
        if self.stopper is not None:
            self.stopper.restore(self.model, self.optimizer)
            self._log(
                f"restored the best state: step {self.stopper.best_step}, {cfg.eval.split} "
                f"{self.stopper.cfg.metric} {self.stopper.best}"
            )
        if self.step == 0 and cfg.train.epochs > 0:
            raise RecipeError(
                f"no training step ran: the training split gave no full global batch of {self.global_batch} rows "
                f"(train.batch_size={cfg.train.batch_size} x {ctx.world_size} ranks)"
            )
        if (
            cfg.checkpoint.at_end
            and self.checkpointer is not None
            and self.last_saved != self.step
            and (self.step or not cfg.train.epochs)
        ):
            self.save_checkpoint()

    def check_losses(self) -> None:
        """Raises ``TrainingDiverged`` (on every rank) if a loss since the last check is not finite (collective)."""
        new = self.losses[self._checked :]
        self._checked = len(self.losses)
        bad = 0
        if new:
            finite = torch.stack([loss.float() for _, loss in new]).isfinite()
            if not bool(finite.all()):
                bad = new[int((~finite).nonzero()[0, 0])][0]
        never = torch.iinfo(torch.int64).max
        first = int(self.ctx.all_reduce(torch.tensor([bad or never]), dist.ReduceOp.MIN)[0])
        if first != never:
            value = next((float(v) for s, v in new if s == first), None)
            where = f"rank {self.ctx.rank}: {value}" if bad == first else "on another rank"
            raise TrainingDiverged(
                f"training diverged: the loss is not finite at step {first} ({where}); no checkpoint or result was "
                f"written from it. Lower optimizer.sparse.lr / optimizer.dense.lr or check the data"
            )

    def _evaluate(self, split: str) -> Dict[str, Any]:
        start = time.perf_counter()
        self.model.eval()
        metrics = self.task.evaluate(self.model, split)
        self.model.train()
        result = {"step": self.step, "split": split, **metrics, "seconds": time.perf_counter() - start}
        self.evals.append(result)
        self._log(f"step {self.step} {split}: {self.task.metrics_text(metrics)}")
        self._log_skipped(split, metrics.get("data") or {})
        return result

    def check_state(self) -> None:
        """Raises ``TrainingDiverged`` (on every rank) if a model or optimizer tensor holds inf or nan (collective).

        A finite loss at step N does not prove finite weights after step N's update; checkpoints run this first.
        """
        bad = ""
        for key, value in [*self.model.state_dict().items(), *_flat(self.optimizer.state_dict(), "optimizer.")]:
            if not all(bool(t.isfinite().all()) for t in _local_tensors(value) if t.is_floating_point()):
                bad = key
                break
        flag = int(self.ctx.all_reduce(torch.tensor([1 if bad else 0]), dist.ReduceOp.MAX)[0])
        if flag:
            where = f"rank {self.ctx.rank}: {bad}" if bad else "on another rank"
            raise TrainingDiverged(
                f"training diverged: non-finite weights after step {self.step} ({where}); no checkpoint was written. "
                f"Lower optimizer.sparse.lr / optimizer.dense.lr or check the data"
            )

    def save_checkpoint(self) -> None:
        if self.checkpointer is None:
            return
        self.check_state()
        trainer = {
            "step": self.step,
            "epoch": self.epoch,
            "samples_in_epoch": self.next_batch * self.global_batch,
            "global_batch": self.global_batch,
            "batch_size": self.cfg.train.batch_size,
            "seed": self.cfg.train.seed,
        }
        record = {
            "recipe": self.task.name,
            "trainer": trainer,
            "lma_signature_coverage": self.lma_coverage,
            "config": to_dict(self.cfg),
        }
        path = self.checkpointer.save(self.step, self.model, self.optimizer, record)
        self.last_saved = self.step
        self._log(f"saved {path}")

    # -- results ------------------------------------------------------------------------------------------------------

    def train_data_stats(self) -> Dict[str, Any]:
        """The training reader's stats summed over this run's passes (the current one included)."""
        current = [self.train_data.stats()] if self._in_pass else []
        return _sum_stats(self._pass_stats + current)

    def _header(self, status: str) -> Dict[str, Any]:
        return {
            "status": status,
            "run_name": self.cfg.output.run_name,
            "recipe": self.task.name,
            "world_size": self.ctx.world_size,
            "device": self.ctx.device.type,
            "ranks_per_device": self.ctx.ranks_per_device,
        }

    def _train_section(self, losses: List[List[float]]) -> Dict[str, Any]:
        samples = len(self.losses) * self.global_batch
        return {
            "steps": self.step,
            "steps_this_run": len(self.losses),
            "samples_this_run": samples,
            "seconds": self.train_seconds,
            "samples_per_s": samples / self.train_seconds if self.train_seconds > 0 else None,
            "data_position": {"epoch": self.epoch, "samples_in_epoch": self.next_batch * self.global_batch},
            "resumed_from": self.resumed_from,
            "losses": losses,
        }

    def finish(self) -> Dict[str, Any]:
        """Final evaluation, the results JSON (rank 0 writes it) and the summary line (collective)."""
        cfg, ctx = self.cfg, self.ctx
        final = self._evaluate(cfg.eval.final_split) if cfg.eval.final_split else None
        local = torch.stack([loss.float().cpu() for _, loss in self.losses]) if self.losses else None
        mean = ctx.all_reduce(local) / ctx.world_size if local is not None else torch.zeros(0)
        losses = [[s, float(v)] for (s, _), v in zip(self.losses, mean)]
        stats = self.train_data_stats()
        mem = self.memory
        results = {
            **self._header("ok"),
            "embedding_bytes": mem.total_bytes,
            "stock_embedding_bytes": mem.stock_bytes,
            "compression": mem.compression_ratio,
            "memory": mem.to_dict(),
            "final": final,
            "evals": self.evals,
            "train": self._train_section(losses),
            "data": {"train": stats},
            "lma_signature_coverage": self.lma_coverage,
            "early_stopping": self.stopper.to_dict() if self.stopper is not None else None,
            "plan": str(self.model.plan),
            "config": to_dict(cfg),
        }
        self._log_skipped("train", stats)
        if ctx.is_main:
            write_json(self.results_path, results)
            print(self.summary(results) + f" -> {self.results_path}", flush=True)
        return results

    def fail(self, error: BaseException) -> None:
        """Rank 0 replaces the results file with a ``failed`` record (no collectives: other ranks may be gone)."""
        if not self._output_started:
            return
        losses = [[s, float(v)] for s, v in self.losses]  # this rank's, unreduced
        stats = self.train_data_stats() if hasattr(self, "train_data") else {}
        self._log_skipped("train", stats)
        record = {
            **self._header("failed"),
            "error": f"{type(error).__name__}: {error}",
            "train": self._train_section(losses),
            "data": {"train": stats},
            "evals": self.evals,
            "config": to_dict(self.cfg),
        }
        try:
            write_json(self.results_path, record)
        except OSError:
            pass  # the original error matters more

    def summary(self, r: Dict[str, Any]) -> str:
        final = r["final"]
        metrics = f"{final['split']} {self.task.metrics_text(final)}" if final else "no final evaluation"
        sps = r["train"]["samples_per_s"] or 0.0
        return (
            f"[{self.task.name} {r['run_name']}] {metrics} | embeddings {r['embedding_bytes'] / 2**20:.3f} MiB "
            f"({r['compression']:.2f}x vs stock {r['stock_embedding_bytes'] / 2**20:.3f} MiB) | {sps:,.0f} samples/s | "
            f"{r['train']['steps']} steps, {r['world_size']} x {r['device']}"
            + (f" ({r['ranks_per_device']} ranks sharing each)" if r.get("ranks_per_device", 1) > 1 else "")
        )

    def run(self, resume: bool) -> Dict[str, Any]:
        """``setup``, ``train``, ``finish``; on any error the results file says ``failed`` before it propagates."""
        try:
            self.setup(resume)
            self.train()
            return self.finish()
        except BaseException as e:
            if self.ctx.is_main:
                self.fail(e)
            raise

    def _log(self, message: str) -> None:
        if self.ctx.is_main:
            print(f"[{self.task.name}] {message}", flush=True)

    def _log_skipped(self, split: str, stats: Dict[str, Any]) -> None:
        if stats.get("skipped_total"):
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats["skipped_rows"].items()))
            total, read = stats["skipped_total"], stats.get("rows_read", "?")
            self._log(f"{split} data: skipped {total} malformed rows ({reasons}); {read} good rows read")


def _local_tensors(value: Any) -> List[torch.Tensor]:
    """The tensors of one state-dict value that live on this rank (a ``ShardedTensor``'s local shards, a
    ``DTensor``'s local part)."""
    if hasattr(value, "local_shards"):
        return [shard.tensor for shard in value.local_shards()]
    if hasattr(value, "to_local"):
        return [value.to_local()]
    return [value] if isinstance(value, torch.Tensor) else []


def _flat(state: Any, prefix: str) -> List[Tuple[str, Any]]:
    if isinstance(state, dict):
        return [kv for k, v in state.items() for kv in _flat(v, f"{prefix}{k}.")]
    if isinstance(state, (list, tuple)):
        return [kv for i, v in enumerate(state) for kv in _flat(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), state)]


def _sum_stats(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Sums reader stats (numbers, and dicts of numbers key by key)."""
    out: Dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, dict):
                acc = out.setdefault(k, {})
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv
            elif isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
    return out


def _agree(ctx: DistContext, check: Callable[[], None], prefix: str = "") -> None:
    """Runs ``check`` on every rank and raises the first rank's ``ConfigError`` on all of them (collective), so a
    problem one rank sees stops the whole job at once instead of leaving the others in a collective."""
    error: Optional[str] = None
    try:
        check()
    except ConfigError as e:
        error = f"{prefix}{e}"
    errors: List[Optional[str]] = [error]
    if ctx.world_size > 1:
        errors = [None] * ctx.world_size
        dist.all_gather_object(errors, error)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise ConfigError(first)


def _restarted() -> bool:
    """Whether torchrun restarted this worker after a failure (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def main(task_cls: Type[RecipeTask], argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parses the command line, validates the config (before joining the job) and runs the recipe on this rank."""
    description = (sys.modules[task_cls.__module__].__doc__ or task_cls.name).strip().split("\n")[0]
    args = recipe_arg_parser(description, preset_names(task_cls.name)).parse_args(argv)
    overrides = ([tables_override(args.tables)] if args.tables else []) + args.set
    cfg = load_recipe_config(args.config, overrides, recipe=task_cls.name)
    try:
        ctx = init_distributed(device=args.device)
    except ValueError as e:  # a device this machine lacks
        raise ConfigError(f"--device: {e}") from None
    try:
        return RecipeRunner(task_cls(cfg, ctx), cfg, ctx).run(resume=args.resume or _restarted())
    finally:
        ctx.close()


def cli(task_cls: Type[RecipeTask]) -> None:
    """``main`` with config and run errors printed as one line and exit status 1."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # TorchRec 1.8 deprecation notices, once per rank
    try:
        main(task_cls)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    except (RecipeError, CheckpointError, DataError) as e:
        sys.exit(f"error: {e}")
