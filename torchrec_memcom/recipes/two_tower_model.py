# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Two-tower retrieval model: a user tower and an item tower, each an embedding-bag collection plus an MLP.

``TwoTower`` scores a (user, item) pair by the dot product of the towers' outputs (L2-normalised and divided by a
temperature if asked). ``TwoTowerTrain`` trains it with an in-batch-negative softmax: each row's positive item is
scored against the other rows' items, with duplicates of the positive and the user's other in-batch positives masked
out, and optionally the logQ correction (Yi et al., RecSys 2019) that subtracts each candidate's log sampling
probability, so the in-batch softmax estimates the full one. Both the recipe (``torchrec_memcom.recipes.two_tower``)
and ``scripts/bench_quality.py`` build the model through ``build_two_tower``.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.memory import MemoryReport

__all__ = ["TwoTower", "TwoTowerBatch", "TwoTowerTrain", "build_two_tower", "in_batch_softmax_loss", "tower_mlp"]


@dataclass
class TwoTowerBatch(Batch):
    """A ``Batch`` of positive (user, item) pairs plus their raw ids (for the in-batch masks and logQ).

    ``dense_features`` ``[B, item_dense_dim]`` item dense features; ``sparse_features`` a KJT of the user and item
    features; ``labels`` ``[B]`` (all 1); ``user_ids`` and ``item_ids`` ``[B]`` int64.
    """

    user_ids: torch.Tensor
    item_ids: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "TwoTowerBatch":
        return TwoTowerBatch(
            dense_features=self.dense_features.to(device=device, non_blocking=non_blocking),
            sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            user_ids=self.user_ids.to(device=device, non_blocking=non_blocking),
            item_ids=self.item_ids.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        super().record_stream(stream)
        self.user_ids.record_stream(stream)
        self.item_ids.record_stream(stream)

    def pin_memory(self) -> "TwoTowerBatch":
        return TwoTowerBatch(
            dense_features=self.dense_features.pin_memory(),
            sparse_features=self.sparse_features.pin_memory(),
            labels=self.labels.pin_memory(),
            user_ids=self.user_ids.pin_memory(),
            item_ids=self.item_ids.pin_memory(),
        )


@torch.fx.wrap  # a leaf for the train pipeline's tracing (it branches on the keys)
def _in_order(pooled: KeyedTensor, keys: List[str]) -> torch.Tensor:
    """``pooled``'s values with its features in ``keys``' order (a sharded collection may return them in another)."""
    if pooled.keys() == keys:
        return pooled.values()
    return KeyedTensor.regroup([pooled], [keys])[0]


def tower_mlp(in_features: int, layer_sizes: Sequence[int], device: Optional[torch.device] = None) -> nn.Sequential:
    """Linear layers of ``layer_sizes`` with ReLU between them and none after the last (the tower's output)."""
    layers: List[nn.Module] = []
    for i, size in enumerate(layer_sizes):
        layers.append(nn.Linear(in_features, size, device=device))
        if i < len(layer_sizes) - 1:
            layers.append(nn.ReLU())
        in_features = size
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """User tower and item tower; ``score(u, v) = <u, v> / temperature`` (``u``, ``v`` unit vectors if normalised).

    Args:
        user_ebc (EmbeddingBagCollectionInterface): tables of the user features (e.g. user, gender, age, ...).
        item_ebc (EmbeddingBagCollectionInterface): tables of the item features (e.g. movie, genres).
        item_dense_dim (int): width of the item dense features (0: none), concatenated to the item embeddings.
        layer_sizes (Sequence[int]): each tower's MLP; the last size is the output dim.
        temperature (float): divides the scores.
        normalize (bool): L2-normalise the tower outputs (cosine scores).
        device (Optional[torch.device]): where the MLPs live.
    """

    def __init__(
        self,
        user_ebc: EmbeddingBagCollectionInterface,
        item_ebc: EmbeddingBagCollectionInterface,
        item_dense_dim: int,
        layer_sizes: Sequence[int],
        temperature: float = 1.0,
        normalize: bool = False,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.user_ebc = user_ebc
        self.item_ebc = item_ebc
        self.user_features = [f for t in user_ebc.embedding_bag_configs() for f in t.feature_names]
        self.item_features = [f for t in item_ebc.embedding_bag_configs() for f in t.feature_names]
        user_in = sum(t.embedding_dim * len(t.feature_names) for t in user_ebc.embedding_bag_configs())
        item_in = sum(t.embedding_dim * len(t.feature_names) for t in item_ebc.embedding_bag_configs())
        self.user_mlp = tower_mlp(user_in, layer_sizes, device)
        self.item_mlp = tower_mlp(item_in + item_dense_dim, layer_sizes, device)
        self.item_dense_dim = item_dense_dim
        self.temperature = temperature
        self.normalize = normalize

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1) if self.normalize else x

    def user_embedding(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, out]`` user vectors (already divided by the temperature) from a KJT holding the user features."""
        pooled = _in_order(self.user_ebc(features), self.user_features)
        return self._out(self.user_mlp(pooled)) / self.temperature

    def item_embedding(self, features: KeyedJaggedTensor, dense: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, out]`` item vectors from a KJT holding the item features (and ``[B, item_dense_dim]`` dense)."""
        pooled = _in_order(self.item_ebc(features), self.item_features)
        if self.item_dense_dim:
            if dense is None:
                raise ValueError(f"the item tower takes {self.item_dense_dim} dense features")
            pooled = torch.cat([pooled, dense], dim=1)
        return self._out(self.item_mlp(pooled))

    def forward(
        self, features: KeyedJaggedTensor, dense: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(user vectors, item vectors)``, each ``[B, out]``, of the rows of one KJT holding both towers' features."""
        return self.user_embedding(features), self.item_embedding(features, dense)

    def memory_report(self) -> MemoryReport:
        """Embedding bytes of both towers (the whole embedding layer)."""
        return MemoryReport.merge([_report(self.user_ebc), _report(self.item_ebc)])


def _report(ebc: nn.Module) -> MemoryReport:
    if not hasattr(ebc, "memory_report"):
        raise TypeError(f"{type(ebc).__name__} has no memory_report(); use CompressedEmbeddingBagCollection")
    return ebc.memory_report()


@torch.fx.wrap
def in_batch_softmax_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    user_ids: torch.Tensor,
    item_ids: torch.Tensor,
    item_log_q: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean softmax cross-entropy of each row's positive item against the batch's items.

    ``logits[i, j] = <u_i, v_j> - log q(item_j)`` (without ``item_log_q``: no correction). Column ``j != i`` is masked
    out when it holds row ``i``'s item again or another positive of row ``i``'s user, so no positive is pushed down.

    Returns:
        ``(loss, positive logits [B])``.
    """
    logits = user_vectors @ item_vectors.t()
    if item_log_q is not None:
        logits = logits - item_log_q[item_ids].unsqueeze(0)
    same = (item_ids.unsqueeze(1) == item_ids.unsqueeze(0)) | (user_ids.unsqueeze(1) == user_ids.unsqueeze(0))
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    return nn.functional.cross_entropy(logits, target), logits.diagonal()


class TwoTowerTrain(nn.Module):
    """Training wrapper: ``forward(TwoTowerBatch) -> (loss, (loss, positive logits, labels))`` as ``DLRMTrain``.

    Args:
        model (TwoTower): the towers.
        item_log_q (Optional[torch.Tensor]): ``[num_items]`` log sampling probability of each item (its share of
            the training interactions) for the logQ correction; ``None``: plain in-batch softmax.
    """

    def __init__(self, model: TwoTower, item_log_q: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.model = model
        self.logq_correction = item_log_q is not None
        self.register_buffer("item_log_q", item_log_q if item_log_q is not None else torch.zeros(0), persistent=False)

    def forward(self, batch: TwoTowerBatch) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        features = batch.sparse_features
        users = self.model.user_embedding(features)
        items = self.model.item_embedding(features, batch.dense_features)
        log_q = self.item_log_q if self.logq_correction else None
        loss, positives = in_batch_softmax_loss(users, items, batch.user_ids, batch.item_ids, log_q)
        return loss, (loss.detach(), positives.detach(), batch.labels.detach())


def item_log_frequency(train_items: torch.Tensor, num_items: int) -> torch.Tensor:
    """``[num_items]`` log of each item's share of the training interactions (unseen items: one count)."""
    counts = torch.bincount(train_items.to(torch.int64), minlength=num_items).clamp(min=1).to(torch.float64)
    return (counts / counts.sum()).log().to(torch.float32)


def build_two_tower(
    user_tables: Sequence[EmbeddingBagConfig],
    item_tables: Sequence[EmbeddingBagConfig],
    item_dense_dim: int,
    layer_sizes: Sequence[int],
    temperature: float,
    normalize: bool,
    item_log_q: Optional[torch.Tensor],
    ebc_device: Optional[torch.device | str],
    dense_device: Optional[torch.device],
) -> TwoTowerTrain:
    """``TwoTowerTrain`` with one ``CompressedEmbeddingBagCollection`` per tower (on ``ebc_device``, e.g. ``meta``
    before sharding) and the MLPs on ``dense_device``."""
    model = TwoTower(
        CompressedEmbeddingBagCollection(list(user_tables), device=ebc_device),
        CompressedEmbeddingBagCollection(list(item_tables), device=ebc_device),
        item_dense_dim,
        layer_sizes,
        temperature=temperature,
        normalize=normalize,
        device=dense_device,
    )
    log_q = item_log_q.to(dense_device) if item_log_q is not None and dense_device is not None else item_log_q
    return TwoTowerTrain(model, log_q)
