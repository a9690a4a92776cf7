# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""MEmCom's entity-weight update replayed from CUDA graphs, one per bucket of batch sizes.

In an eager step each Triton launch costs 0.10-0.15 ms of host time (Triton's Python with cold caches), and the
block-sorted update is two launches. A replay of both costs the host two copies (the batch into the graph's static
buffers) and the replay. Batches are padded to their bucket with weight index -1, which the block-sorted kernels
skip, so a graph serves every batch size of its bucket.
"""

from typing import Callable, Dict, Tuple

import torch

__all__ = ["EntityUpdateGraphs", "bucket"]

# Bucket sizes: the next number of the form m * 2**k with 8 <= m < 16 (at most 1/8 of padding).
_BUCKET_BITS = 3


def bucket(n: int) -> int:
    """The graph size that holds a batch of ``n`` positions: ``n`` rounded up to 4 significant bits."""
    shift = max(n.bit_length() - _BUCKET_BITS - 1, 0)
    return -(-n >> shift) << shift


class _Graph:
    """One captured update and its static inputs; ``clean``: from there on ``index`` holds -1."""

    def __init__(self, graph: torch.cuda.CUDAGraph, index: torch.Tensor, grad: torch.Tensor) -> None:
        self.graph = graph
        self.index = index
        self.grad = grad
        self.clean = 0


class EntityUpdateGraphs:
    """Runs ``run(index, grad)`` (an in-place update that skips positions whose index is -1) by CUDA graph replays.

    A batch size's bucket is captured the second time a batch of that bucket comes (the first runs eagerly, so its
    kernels are compiled outside a capture); at most ``max_graphs`` buckets are captured, later ones run eagerly.
    ``run`` may read device tensors other than its arguments (weights, optimizer state, learning rates): the graph
    keeps their addresses, so they must be updated in place, never replaced.

    Args:
        run (Callable[[torch.Tensor, torch.Tensor], None]): the update of ``grad`` at weight indices ``index``.
        max_graphs (int): buckets to capture at most.
    """

    def __init__(self, run: Callable[[torch.Tensor, torch.Tensor], None], max_graphs: int = 4) -> None:
        self._run = run
        self.max_graphs = max_graphs
        self.graphs: Dict[Tuple[int, torch.dtype, torch.dtype], _Graph] = {}
        self._seen: Dict[Tuple[int, torch.dtype, torch.dtype], int] = {}

    def __call__(self, index: torch.Tensor, grad: torch.Tensor) -> bool:
        """Applies the update from a graph and returns True, or returns False (nothing done) where the caller should
        run it eagerly: a bucket's first batch, more buckets than ``max_graphs``, CPU tensors, or a CUDA graph
        capture in progress (a step captured whole, ``CudaGraphTrainStep``, captures the eager update)."""
        if not index.is_cuda or torch.cuda.is_current_stream_capturing():
            return False
        n = index.numel()
        key = (bucket(n), index.dtype, grad.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0) + 1
            self._seen[key] = seen
            if seen < 2 or len(self.graphs) >= self.max_graphs:
                return False
            entry = self.graphs[key] = self._capture(key[0], index, grad)
        entry.index[:n].copy_(index)
        if n < entry.clean:  # the previous batch left ids past this one's end
            entry.index[n : entry.clean].fill_(-1)
        entry.clean = n
        entry.grad[:n].copy_(grad)
        entry.graph.replay()
        return True

    def _capture(self, size: int, index: torch.Tensor, grad: torch.Tensor) -> _Graph:
        static_index = torch.full((size,), -1, dtype=index.dtype, device=index.device)
        static_grad = torch.zeros((size,), dtype=grad.dtype, device=grad.device)
        self._run(static_index, static_grad)  # compiles this size's kernels outside the capture; updates nothing
        graph = torch.cuda.CUDAGraph()
        # thread_local: the update runs in backward, on autograd's device thread
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._run(static_index, static_grad)
        return _Graph(graph, static_index, static_grad)
