# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Early stopping for the recipes (``train.early_stopping``): the validation curve, the best state, and its restore.

``RecipeRunner`` asks ``EarlyStopper.due`` after every step, evaluates ``eval.split`` when it says so, hands the
metrics to ``update`` (which keeps the best state and says when to stop) and calls ``restore`` once training ends, so
the final evaluation sees the best state. Every rank gets the same (all-reduced) metrics, so every rank decides alike.

Where the best state lives (``keep_best``):

- ``memory``: each rank copies the local part of every model state tensor (its table shards, the replicated dense
  layers, MEmCom's weights, LMA's signatures) to host memory; ``restore`` copies them back in place. Works at any
  world size; costs one copy of the rank's shards in host memory.
- ``checkpoint``: a DCP checkpoint of model and optimizers in ``<checkpoint.dir>/best`` (the recipes' checkpointer,
  keeping one), loaded back by ``restore``; for shards too large to hold twice.
"""

import math
import os
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torchrec.optim.keyed import KeyedOptimizer

from torchrec_memcom.recipes.checkpoint import Checkpointer
from torchrec_memcom.recipes.config import ConfigError, EarlyStoppingConfig
from torchrec_memcom.recipes.training import DistContext

__all__ = ["EarlyStopper", "local_tensors"]


def local_tensors(value: Any) -> List[torch.Tensor]:
    """The tensors of one state-dict value that live on this rank (a ``ShardedTensor``'s local shards, a
    ``DTensor``'s local part, a plain tensor)."""
    if hasattr(value, "local_shards"):
        return [shard.tensor for shard in value.local_shards()]
    if hasattr(value, "to_local"):
        return [value.to_local()]
    return [value] if isinstance(value, torch.Tensor) else []


class EarlyStopper:
    """Follows ``cfg.metric`` on the validation split, keeps the best state, and says when to stop.

    Args:
        cfg (EarlyStoppingConfig): the ``train.early_stopping`` section.
        ctx (DistContext): ranks and device.
        checkpoint_dir (Optional[str]): ``checkpoint.dir`` (needed by ``keep_best: checkpoint``).

    Raises:
        ConfigError: ``keep_best: checkpoint`` without a ``checkpoint.dir``.
    """

    def __init__(self, cfg: EarlyStoppingConfig, ctx: DistContext, checkpoint_dir: Optional[str] = None) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None
        self.best_epoch: Optional[int] = None
        self.bad = 0  # evaluations in a row that did not improve
        self.stopped_early = False
        self.restored = False
        self.curve: List[Dict[str, Any]] = []
        self._snapshot: Optional[Dict[str, List[torch.Tensor]]] = None
        self._checkpointer: Optional[Checkpointer] = None
        if cfg.keep_best == "checkpoint":
            if not checkpoint_dir:
                raise ConfigError("train.early_stopping.keep_best: 'checkpoint' needs a checkpoint.dir")
            self._checkpointer = Checkpointer(os.path.join(checkpoint_dir, "best"), ctx, keep=1)

    def due(self, step: int, epoch_ended: bool) -> bool:
        """Whether to evaluate after ``step`` (every ``every_steps`` steps, else at the end of every epoch)."""
        every = self.cfg.every_steps
        return step % every == 0 if every else epoch_ended

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        delta = self.cfg.min_delta
        return value > self.best + delta if self.cfg.maximize else value < self.best - delta

    def update(
        self, step: int, epoch: int, metrics: Dict[str, Any], model: nn.Module, optimizer: KeyedOptimizer
    ) -> bool:
        """Records one validation result (collective when it improves); returns True when training should stop.

        Raises:
            ConfigError: the metrics have no ``cfg.metric`` (naming the ones they have).
        """
        name = self.cfg.metric
        if name not in metrics:
            have = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise ConfigError(f"train.early_stopping.metric: {name!r} is not a metric of this recipe (have: {have})")
        value = float(metrics[name])
        improved = self._improves(value)
        self.curve.append({"step": step, "epoch": epoch, "value": value, "improved": improved})
        if improved:
            self.best, self.best_step, self.best_epoch, self.bad = value, step, epoch, 0
            self._save(step, model, optimizer)
        else:
            self.bad += 1
        self.stopped_early = self.bad >= self.cfg.patience
        return self.stopped_early

    def _save(self, step: int, model: nn.Module, optimizer: KeyedOptimizer) -> None:
        if self._checkpointer is not None:
            self._checkpointer.save(step, model, optimizer, {"early_stopping": "best", "step": step})
            return
        self._snapshot = {
            key: [t.detach().to("cpu", copy=True) for t in local_tensors(value)]
            for key, value in model.state_dict().items()
        }

    def restore(self, model: nn.Module, optimizer: KeyedOptimizer) -> None:
        """Puts the best state back into ``model`` in place (collective); a no-op before any evaluation."""
        if self.best_step is None:
            return
        if self._checkpointer is not None:
            found = self._checkpointer.restore(model, optimizer, accept=lambda path, record: None)
            if found is None:
                raise RuntimeError(f"early stopping: the best checkpoint in {self._checkpointer.directory} is gone")
        else:
            assert self._snapshot is not None
            state = model.state_dict()
            missing = sorted(set(state) ^ set(self._snapshot))
            if missing:
                raise RuntimeError(f"early stopping: the model's state keys changed since the best state: {missing}")
            with torch.no_grad():
                for key, value in state.items():
                    for dst, src in zip(local_tensors(value), self._snapshot[key], strict=True):
                        dst.copy_(src)
            model.load_state_dict(state)  # for values that are copies rather than views of the module's state
        self.restored = True

    def to_dict(self) -> Dict[str, Any]:
        """What ``results.json`` records under ``early_stopping``."""
        return {
            "metric": self.cfg.metric,
            "mode": "max" if self.cfg.maximize else "min",
            "patience": self.cfg.patience,
            "best_value": self.best,
            "best_step": self.best_step,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "restored": self.restored,
            "curve": self.curve,
        }
