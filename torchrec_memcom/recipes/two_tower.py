# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Train a two-tower retrieval model with compressed embedding tables (stock, hashing trick, QR, MEmCom, LMA per
feature) on TorchRec, and evaluate it by full ranking.

Launch (``--config`` takes a packaged preset, e.g. ``ml1m_memcom``, or the path of a YAML file; 2 CPU processes
here, one process per GPU with NCCL on GPUs)::

    torchx run -s local_cwd "$(python -m torchrec_memcom.recipes.components)":two_tower --config ml1m_memcom
    torchrun --standalone --nproc-per-node 2 -m torchrec_memcom.recipes.two_tower --config ml1m_lma
    python -m torchrec_memcom.recipes.two_tower --config ml1m_stock --set train.epochs=1
    python examples/two_tower/train.py --config ml1m_stock    # the same recipe from a checkout

What it does, and the config key behind each part:

- Tables: one per sparse feature, of the type ``tables.<feature>`` (or ``tables._default``) names
  (``torchrec_memcom.tables.table_config``); the user tower's (user, gender, age, occupation, zip, and with
  ``data.user_history: H`` the ``history`` bag of the user's earlier movies, MEAN-pooled by default) form one
  ``CompressedEmbeddingBagCollection`` and the item tower's (movie, genres) another, both built on ``meta``; memory
  and compression come from their ``memory_report()`` before sharding. The history table and the movie table are
  separate tables over the same ids (the input embedding and the candidate embedding), each with its own spec.
- Model (``model.*``): each tower is its collection plus an MLP (``tower_layer_sizes``; the item tower also takes
  the movie's scaled release year); score = dot product of the (L2-normalised, ``normalize``) tower outputs divided
  by ``temperature``.
- Loss: softmax over in-batch negatives: each row's positive item against the other rows' items of the same rank's
  batch (duplicates of the positive and the user's other in-batch positives masked), with the logQ correction
  (``model.logq_correction``); see ``torchrec_memcom.recipes.two_tower_model``.
- Sharding: ``CompressedEmbeddingShardingPlanner`` and ``DistributedModelParallel`` with the same
  ``get_sharders(fused_params)`` list (``sharding.<feature>`` limits a table's sharding types); gloo on CPU, NCCL
  on CUDA.
- Optimizers: fused TBE optimizer of every table (``optimizer.sparse``) and ``torch.optim`` for the towers
  (``optimizer.dense``).
- LMA: signatures fitted on ``train.lma_signature_rows`` random training pairs (the same on every rank); a user's
  context is the movies it rated (and their genres), a movie's the users who rated it.
- Training, checkpoints, resume, failure handling: ``torchrec_memcom.recipes.runner`` (``train.batch_size`` pairs
  per rank, ``train.epochs`` / ``train.max_steps``, ``checkpoint.*``, ``--resume``).
- Evaluation (``eval.*``): every rank embeds all movies and its share of the users, the user vectors are gathered,
  and ``MovieLensRanking.evaluate`` ranks each user's held-out movie against all movies (train items excluded):
  nDCG@k and Recall@k on ``eval.split`` every ``eval.every_steps`` and on ``eval.final_split`` at the end.
- Output: ``<output.dir>/<output.json_name>`` (``status``, metrics, embedding bytes, compression, samples/s, losses,
  config) and a one-line summary.

Raises:
    ConfigError: unknown keys or table types, bad values, missing files, a checkpoint from another config.
    RecipeError: diverged training (non-finite loss), no loadable checkpoint.
"""

import functools
from typing import Any, ClassVar, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.modules.embedding_configs import PoolingType

from torchrec_memcom.datasets.movielens import HISTORY_FEATURE
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.recipes import runner
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.data import Epochs
from torchrec_memcom.recipes.schemas import TwoTowerConfig
from torchrec_memcom.recipes.training import DistContext, build_tables
from torchrec_memcom.recipes.two_tower_model import TwoTowerBatch, build_two_tower, item_log_frequency

__all__ = ["PairBatches", "TwoTowerTask", "as_pair_batch", "cli", "main"]


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


class TwoTowerTask:
    """The two-tower part of a run (``RecipeTask``): towers, positive pairs and full-ranking nDCG / Recall.

    Args:
        cfg (TwoTowerConfig): the validated config.
        ctx (DistContext): this process's ranks and device.
    """

    name: ClassVar[str] = "two_tower"

    def __init__(self, cfg: TwoTowerConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    @functools.cached_property
    def ds(self) -> Any:
        """The ``MovieLensRanking`` dataset, loaded on first use (after the runner checked ``data.path``)."""
        return self.cfg.data.dataset()

    def feature_names(self) -> List[str]:
        return self.cfg.data.feature_names()

    def build_model(self, device: str = "meta") -> Tuple[nn.Module, MemoryReport]:
        cfg, data = self.cfg, self.cfg.data
        sizes, dim = dict(self.ds.num_embeddings_per_feature), cfg.model.embedding_dim
        try:
            poolings = {HISTORY_FEATURE: PoolingType.MEAN}  # a bag of up to H ids: its mean, unless the spec says sum
            user_tables = build_tables(data.user_feature_names(), sizes, dim, cfg.tables, poolings)
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
            ebc_device=device,
            dense_device=self.ctx.device,
        )
        return model, model.model.memory_report()  # on meta: sizes only, before sharding

    def train_data(self) -> Epochs:
        cfg, ctx = self.cfg, self.ctx
        pairs = self.ds.train_batches(
            cfg.train.batch_size,
            shuffle=cfg.data.shuffle,
            seed=cfg.train.seed,
            drop_last=True,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        return Epochs(PairBatches(pairs), fixed_row_order=True)  # InMemoryBatches: one order per (seed, epoch)

    def signature_batches(self) -> Iterable[Batch]:
        # every rank reads the same random sample (same seed), so the replicated signatures agree
        return self.ds.train_batches(4096, shuffle=True, seed=self.cfg.train.seed, drop_last=False)

    def _features(self, users: torch.Tensor, movies: torch.Tensor) -> Any:
        """KJT of every feature for (user, movie) rows on the device: a sharded collection keeps the key set (and
        order) of its first input, so evaluation feeds the training layout with a placeholder partner id. The history
        bags are the users' query histories (their train items, never a held-out one)."""
        return self.ds.features(users.numpy(), movies.numpy()).to(self.ctx.device)

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
    def evaluate(self, model: nn.Module, split: str) -> Dict[str, Any]:
        """nDCG@k and Recall@k of ``split`` under full ranking (collective)."""
        towers = model.module.model  # DMP -> TwoTowerTrain -> TwoTower (sharded collections inside)
        items = torch.arange(self.ds.num_items)
        item_vectors = towers.item_embedding(
            self._features(torch.zeros_like(items), items), self.ds.item_dense(items).to(self.ctx.device)
        )
        user_vectors = self._user_vectors(towers)
        device = self.ctx.device
        scores = lambda users: user_vectors[users.to(device)] @ item_vectors.t()  # noqa: E731
        return self.ds.evaluate(scores, split, k=self.cfg.eval.k)

    def metrics_text(self, metrics: Dict[str, Any]) -> str:
        k = self.cfg.eval.k
        return f"nDCG@{k} {metrics[f'ndcg@{k}']:.4f} Recall@{k} {metrics[f'recall@{k}']:.4f}"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the recipe on this rank (``argv``: the arguments after the program name; default ``sys.argv``)."""
    return runner.main(TwoTowerTask, argv)


def cli() -> None:
    """``main`` for the command line: config and run errors become one line on stderr and exit status 1."""
    runner.cli(TwoTowerTask)


if __name__ == "__main__":
    cli()
