# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Rank-sharded batching of in-memory rows, KJT assembly and the data error shared by the loaders."""

from typing import Callable, Iterable, Iterator, List, Sequence

import numpy as np
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

__all__ = ["DataError", "HostCounted", "InMemoryBatches", "check_rank", "rank_slice", "single_id_kjt"]


class DataError(ValueError):
    """The data itself is unusable (a malformed row, a damaged file, no rows at all); the message names the file and
    line where it can."""


def check_rank(batch_size: int, rank: int, world_size: int) -> None:
    """Raises ``ValueError`` unless ``batch_size >= 1`` and ``0 <= rank < world_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def rank_slice(num_rows: int, batch_size: int, rank: int, world_size: int) -> slice:
    """Rows of one global batch of ``num_rows`` rows that belong to ``rank``.

    A full global batch (``num_rows == batch_size * world_size``) gives rank ``r`` the rows
    ``[r * batch_size, (r + 1) * batch_size)``. A short last batch is cut with ``np.array_split`` semantics: the first
    ``num_rows % world_size`` ranks get one row more, and a rank's slice may be empty.
    """
    if num_rows == batch_size * world_size:
        return slice(rank * batch_size, (rank + 1) * batch_size)
    base, extra = divmod(num_rows, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def single_id_kjt(keys: Sequence[str], ids: Sequence[np.ndarray]) -> KeyedJaggedTensor:
    """KJT with exactly one id per bag: ``ids[f]`` (shape ``[B]``) are feature ``keys[f]``'s ids, in order.

    It carries its ``length_per_key`` (``B`` per feature), which ``KeyedJaggedTensor.to`` keeps: on the GPU the
    input dists and the id transform then read the per-feature counts from the host instead of copying them from the
    device (a host-device synchronisation per batch)."""
    batch = len(ids[0]) if len(ids) else 0
    values = np.concatenate([np.asarray(v, dtype=np.int64) for v in ids]) if len(ids) else np.zeros(0, np.int64)
    return KeyedJaggedTensor(
        keys=list(keys),
        values=torch.from_numpy(values),
        lengths=torch.ones(len(keys) * batch, dtype=torch.int32),
        stride=batch,
        length_per_key=[batch] * len(keys),
    )


class InMemoryBatches:
    """Re-iterable batches over ``num_rows`` in-memory rows, sharded over ranks.

    Each epoch orders the rows (a permutation drawn from ``(seed, epoch)`` if ``shuffle``, else ``0..num_rows-1``),
    cuts them into *global* batches of ``batch_size * world_size`` rows, and gives rank ``r`` the contiguous slice
    ``[r * batch_size, (r + 1) * batch_size)`` of every global batch, so ranks see disjoint rows and (with the same
    seed on every rank) the same number of batches. ``batch_size`` is the per-rank batch size.

    With ``drop_last=True`` the short last global batch is dropped: every rank gets ``len(self)`` batches of exactly
    ``batch_size`` rows (what gloo's row-wise sharding needs). With ``drop_last=False`` the short last global batch is
    split as evenly as ``np.array_split`` does; a rank whose share is empty gets no batch for it, so batch counts can
    then differ by one across ranks: use ``drop_last=True`` for multi-rank training.

    Args:
        num_rows (int): number of rows to batch.
        make_batch (Callable[[np.ndarray], Batch]): builds a ``Batch`` from an int64 array of row indices.
        batch_size (int): rows per rank per batch.
        shuffle (bool): draw a fresh permutation per epoch (see ``set_epoch``).
        seed (int): seed of the permutation; must be equal on all ranks.
        drop_last (bool): drop the short last global batch.
        rank (int): this rank.
        world_size (int): number of ranks.
    """

    def __init__(
        self,
        num_rows: int,
        make_batch: Callable[[np.ndarray], Batch],
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_rank(batch_size, rank, world_size)
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._make_batch = make_batch

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of the next iteration (as ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def _global_batches(self) -> List[slice]:
        step = self.batch_size * self.world_size
        full = self.num_rows // step
        batches = [slice(i * step, (i + 1) * step) for i in range(full)]
        if not self.drop_last and self.num_rows % step:
            batches.append(slice(full * step, self.num_rows))
        return batches

    def _local(self, global_batch: slice) -> slice:
        start = global_batch.start
        local = rank_slice(global_batch.stop - start, self.batch_size, self.rank, self.world_size)
        return slice(start + local.start, start + local.stop)

    def __len__(self) -> int:
        """Number of batches this rank yields per epoch."""
        return sum(1 for g in self._global_batches() if self._local(g).stop > self._local(g).start)

    def __iter__(self) -> Iterator[Batch]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_rows)
        else:
            order = np.arange(self.num_rows, dtype=np.int64)
        for g in self._global_batches():
            local = self._local(g)
            if local.stop > local.start:
                yield self._make_batch(order[local])


class HostCounted:
    """``source``'s batches, each KJT's ``length_per_key`` counted on the host as it passes (``length_per_key()``
    caches it on the KJT and ``KeyedJaggedTensor.to`` keeps it, so no step reads it back from the GPU): for loaders
    that leave it uncounted, such as TorchRec's Criteo datapipe. ``len()`` is the source's."""

    def __init__(self, source: Iterable[Batch]) -> None:
        self.source = source

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.source:
            batch.sparse_features.length_per_key()
            yield batch

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]
