# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Train DLRM with compressed embedding tables (stock, hashing trick, QR, MEmCom, LMA per feature) on TorchRec.

Launch (``--config`` takes a packaged preset, e.g. ``ml1m_memcom``, or the path of a YAML file; 2 CPU processes
here, one process per GPU with NCCL on GPUs)::

    python -m torchrec_memcom.recipes.dlrm --config synthetic_criteo_memcom --set train.max_steps=100
    torchrun --standalone --nproc-per-node 2 -m torchrec_memcom.recipes.dlrm --config ml1m_lma
    torchx run -s local_cwd "$(python -m torchrec_memcom.recipes.components)":dlrm --config ml1m_memcom -j 1x2 \\
        -- --set train.epochs=1           # see torchrec_memcom.recipes.components
    python examples/dlrm/train.py --config ml1m_stock    # the same recipe from a checkout

What it does, and the config key or flag behind each part:

- Tables: one per sparse feature, of the type ``tables.<feature>`` (or ``tables._default``) names, built by
  ``torchrec_memcom.tables.table_config`` into a ``CompressedEmbeddingBagCollection`` on ``meta``; memory and
  compression come from its ``memory_report()`` before sharding. Any field a table config accepts can be set in a
  spec (e.g. a MEmCom table's entity-weight optimizer settings).
- Model: ``torchrec.models.dlrm.DLRM`` + ``DLRMTrain`` (``model.*``).
- Sharding: ``CompressedEmbeddingShardingPlanner`` and ``DistributedModelParallel`` with the same
  ``get_sharders(fused_params)`` list (``sharding.<feature>`` limits a table's sharding types); gloo on CPU, NCCL
  on CUDA (``LOCAL_RANK``'s GPU).
- Optimizers: fused TBE optimizer of every table (``optimizer.sparse``: exact_adagrad, exact_rowwise_adagrad,
  exact_sgd) and ``torch.optim`` for the dense layers (``optimizer.dense``), combined.
- LMA: signatures fitted on ``train.lma_signature_rows`` shuffled training rows (same seeded rows on every rank).
- Training, checkpoints, resume, failure handling: ``torchrec_memcom.recipes.runner`` (``train.*``,
  ``checkpoint.*``, ``--resume``; automatic resume when torchrun restarts the workers).
- Evaluation: AUC and logloss over all ranks on ``eval.split`` every ``eval.every_steps`` and on
  ``eval.final_split`` at the end.
- Output: ``<output.dir>/<output.json_name>`` (``status``, metrics, embedding bytes, compression, samples/s,
  per-step losses, skipped data rows, config) and a one-line summary.

Raises:
    ConfigError: unknown keys or table types, bad values, missing files, a checkpoint from another config.
    RecipeError: diverged training (non-finite loss), no training data, no loadable checkpoint.
"""

from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple

from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.models.dlrm import DLRM, DLRMTrain

from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.recipes import runner
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.data import Epochs
from torchrec_memcom.recipes.schemas import DLRMConfig
from torchrec_memcom.recipes.training import DistContext, build_tables, evaluate_binary

__all__ = ["DLRMTask", "cli", "main"]


class DLRMTask:
    """DLRM's part of a run (``RecipeTask``): the model, the CTR data and AUC / logloss.

    Args:
        cfg (DLRMConfig): the validated config.
        ctx (DistContext): this process's ranks and device.
    """

    name: ClassVar[str] = "dlrm"

    def __init__(self, cfg: DLRMConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    def feature_names(self) -> List[str]:
        return self.cfg.data.feature_names()

    def build_model(self, device: str = "meta") -> Tuple[nn.Module, MemoryReport]:
        cfg = self.cfg
        try:
            tables = build_tables(self.feature_names(), cfg.data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
        except ValueError as e:
            raise ConfigError(f"tables: {e}") from None
        ebc = CompressedEmbeddingBagCollection(tables, device=device)
        model = DLRMTrain(
            DLRM(
                embedding_bag_collection=ebc,
                dense_in_features=cfg.data.dense_dim,
                dense_arch_layer_sizes=cfg.model.dense_arch_layer_sizes,
                over_arch_layer_sizes=cfg.model.over_arch_layer_sizes,
                dense_device=self.ctx.device,
            )
        )
        return model, ebc.memory_report()  # on meta: sizes only, before sharding

    def train_data(self) -> Epochs:
        cfg, ctx = self.cfg, self.ctx
        return cfg.data.batches(
            "train", cfg.train.batch_size, rank=ctx.rank, world_size=ctx.world_size, train=True, seed=cfg.train.seed
        )

    def signature_batches(self) -> Iterable[Batch]:
        # a seeded shuffled sample (ML-1M's split is sorted by user), the same rows on every rank
        return self.cfg.data.batches("train", 4096, rank=0, world_size=1, train=True, seed=self.cfg.train.seed)

    def evaluate(self, model: nn.Module, split: str) -> Dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        batches = cfg.data.batches(
            split, cfg.eval.batch_size, rank=ctx.rank, world_size=ctx.world_size, train=False, seed=cfg.train.seed
        )
        metrics = evaluate_binary(
            lambda b: model(b)[1][1],  # DLRMTrain: (loss, (loss, logits, labels))
            batches,
            ctx,
            cfg.eval.batch_size,
            self.feature_names(),
            cfg.data.dense_dim,
            max_batches=cfg.eval.max_batches,
            progress=ctx.is_main,
        )
        stats = batches.stats()
        return {**metrics, "data": stats} if stats else metrics

    def metrics_text(self, metrics: Dict[str, Any]) -> str:
        return f"AUC {metrics['auc']:.4f} logloss {metrics['logloss']:.4f} ({metrics['num_samples']} rows)"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the recipe on this rank (``argv``: the arguments after the program name; default ``sys.argv``)."""
    return runner.main(DLRMTask, argv)


def cli() -> None:
    """``main`` for the command line: config and run errors become one line on stderr and exit status 1."""
    runner.cli(DLRMTask)


if __name__ == "__main__":
    cli()
