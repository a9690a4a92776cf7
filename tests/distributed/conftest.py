# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Session-wide process worlds: pools of 1, 2 and 4 gloo ranks (CPU), an NCCL pool on GPUs, and 2 and 4 gloo ranks
on GPUs."""

from typing import Iterator

import pytest
import torch

from tests.distributed.world import World


def _world(size: int, backend: str, cuda: bool = False) -> Iterator[World]:
    world = World(size, backend, cuda)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="session")
def world1() -> Iterator[World]:
    yield from _world(1, "gloo")


@pytest.fixture(scope="session")
def world2() -> Iterator[World]:
    yield from _world(2, "gloo")


@pytest.fixture(scope="session")
def world4() -> Iterator[World]:
    yield from _world(4, "gloo")


@pytest.fixture(scope="session")
def gpu_world() -> Iterator[World]:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    yield from _world(min(2, torch.cuda.device_count()), "nccl")


@pytest.fixture(scope="session")
def gpu_world1() -> Iterator[World]:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    yield from _world(1, "nccl")


@pytest.fixture(scope="session")
def gpu_gloo_world2() -> Iterator[World]:
    """Two ranks on CUDA over gloo, sharing GPU 0 where there are fewer GPUs than ranks: the GPU's kernels (FBGEMM's,
    ours) behind real input and output dists between ranks, on a machine NCCL would need more GPUs for."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    yield from _world(2, "gloo", cuda=True)


@pytest.fixture(scope="session")
def gpu_gloo_world4() -> Iterator[World]:
    """Four ranks on CUDA over gloo (see ``gpu_gloo_world2``)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    yield from _world(4, "gloo", cuda=True)
