# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A diagnostic for the benchmark: TorchRec's input dists without their per-batch host-device synchronisation.

Every batch, each KJT all-to-all of TorchRec's input dists (stock and compressed tables alike) builds its feature
permutation (``torchrec.distributed.dist_data._get_recat``) as ``torch.tensor(list, device=cuda)``: a blocking copy
from pageable host memory, so the host waits for every kernel queued before it. In a step that is not pipelined this
serialises the host and the GPU once per step. The permutation depends only on the sharding (splits, stagger, batch
sizes per rank), so ``cached_recat`` computes it once per distinct argument set; ``bench_sharded.py --cache-recat``
uses it to show what a step costs without that synchronisation. Benchmark-only: it patches a TorchRec private.
"""

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torchrec.distributed.dist_data as dist_data

__all__ = ["cached_recat"]


@contextlib.contextmanager
def cached_recat() -> Iterator[Dict[Tuple[Any, ...], Optional[torch.Tensor]]]:
    """Within the block, TorchRec's ``_get_recat`` returns one cached tensor per distinct argument set (read-only
    permutation indices); yields the cache. The original function is restored on exit."""
    original = dist_data._get_recat
    cache: Dict[Tuple[Any, ...], Optional[torch.Tensor]] = {}

    def recat(
        local_split: int,
        num_splits: int,
        stagger: int = 1,
        device: Optional[torch.device] = None,
        batch_size_per_rank: Optional[List[int]] = None,
    ) -> Optional[torch.Tensor]:
        key = (local_split, num_splits, stagger, str(device), tuple(batch_size_per_rank or ()))
        if key not in cache:
            cache[key] = original(local_split, num_splits, stagger, device, batch_size_per_rank)
        return cache[key]

    dist_data._get_recat = recat
    try:
        yield cache
    finally:
        dist_data._get_recat = original
