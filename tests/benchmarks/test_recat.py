# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``cached_recat``: TorchRec's input-dist permutation, computed once per argument set, equal to TorchRec's own."""

import torch
import torchrec.distributed.dist_data as dist_data

from torchrec_memcom.benchmarks.recat import cached_recat


def _expected(local_split: int, num_splits: int, stagger: int) -> torch.Tensor:
    """The permutation by its definition: feature-major blocks of ``local_split``, ranks reordered by ``stagger``."""
    order = [x + num_splits // stagger * y for x in range(num_splits // stagger) for y in range(stagger)]
    return torch.tensor([i + j * local_split for i in range(local_split) for j in order], dtype=torch.int32)


def test_cached_recat_returns_torchrecs_permutation_once_per_arguments_and_restores() -> None:
    original = dist_data._get_recat
    cpu = torch.device("cpu")
    with cached_recat() as cache:
        assert dist_data._get_recat is not original
        first = dist_data._get_recat(2, 4, 1, cpu)
        assert torch.equal(first, _expected(2, 4, 1)) and torch.equal(first, original(2, 4, 1, cpu))
        assert dist_data._get_recat(2, 4, 1, cpu) is first  # built once
        staggered = dist_data._get_recat(2, 4, 2, cpu)
        assert staggered.tolist() == [0, 4, 2, 6, 1, 5, 3, 7] == _expected(2, 4, 2).tolist()
        variable = dist_data._get_recat(1, 2, 1, cpu, [3, 2])  # variable batch per rank: expanded per sample
        assert torch.equal(variable, original(1, 2, 1, cpu, [3, 2]))
        assert dist_data._get_recat(0, 4, 1, cpu) is None  # no local features
        assert len(cache) == 4
    assert dist_data._get_recat is original
