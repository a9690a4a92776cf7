# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The id transform's input check: ids outside their table or negative lengths raise, on CUDA one batch later (the
statistics come from the transform kernel and cross to the host asynchronously)."""

import collections
import contextlib
import os
from typing import Deque, Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["CapturedCheck", "InputCheck", "capturing_checks", "default_depth"]

# (the statistics buffer the graph's transform fills, its features): what a check saw while a CUDA graph was captured
CapturedCheck = Tuple[torch.Tensor, List[Tuple[str, str, int]]]
_captured: Optional[List[CapturedCheck]] = None
_DEFERRED = " (in an earlier batch: on CUDA inputs are checked asynchronously, up to InputCheck.depth batches later)"


@contextlib.contextmanager
def capturing_checks() -> Iterator[List[CapturedCheck]]:
    """While a CUDA graph is captured in the block, every ``InputCheck`` call records its statistics buffer and
    features in the yielded list instead of copying them; the graph's owner copies and reads them after each replay
    (``distributed.cuda_graph_step``)."""
    global _captured
    previous, _captured = _captured, []
    try:
        yield _captured
    finally:
        _captured = previous


def default_depth() -> int:
    """Batches an ``InputCheck`` keeps in flight on CUDA: ``TORCHREC_MEMCOM_CHECK_DEPTH`` if set, else 2."""
    return max(1, int(os.environ.get("TORCHREC_MEMCOM_CHECK_DEPTH", "2")))


class InputCheck:
    """Raises ``ValueError`` for ids outside ``[0, n)`` or negative lengths, without stalling the GPU.

    On CPU the check is immediate. On CUDA the statistics of a batch (per feature id min / max, the smallest length,
    all computed by the transform kernel) are copied to pinned host memory asynchronously and inspected once
    ``depth`` later batches have been checked (or at ``flush()``), so a bad batch raises ``depth`` steps later,
    never silently; a ``bool(tensor)`` per step would serialise the host with the device. Reading a batch's
    statistics waits for the GPU to reach that batch's transform: with ``depth`` batches in flight the host may run
    that many steps ahead of the GPU before it waits.

    Args:
        depth (Optional[int]): batches in flight on CUDA (default ``default_depth()``).
    """

    def __init__(self, depth: Optional[int] = None) -> None:
        self.depth = depth or default_depth()
        self._pending: Deque[Tuple[torch.Tensor, torch.cuda.Event, List[Tuple[str, str, int]]]] = collections.deque()
        # per stats shape, ``depth`` pinned buffers and events used in turn: a call first reads the oldest batch in
        # flight when ``depth`` are, so the buffer it reuses has been read
        self._buffers: Dict[Tuple[int, ...], List[torch.Tensor]] = {}
        self._events: List[torch.cuda.Event] = []
        self._turn = 0
        self._stream: Optional[torch.cuda.Stream] = None  # where the batches in flight were copied

    def __call__(self, stats: torch.Tensor, features: List[Tuple[str, str, int]]) -> None:
        """``stats``: ``(F + 1, 2)``: the id (min, max) of each feature, then (smallest length, unused);
        ``features``: (feature, table, num_embeddings) per row."""
        if not stats.is_cuda:
            self.raise_if_bad(stats.reshape(-1).tolist(), features)
            return
        if torch.cuda.is_current_stream_capturing():
            if _captured is None:
                raise RuntimeError(
                    "the id transform's input check ran in a CUDA graph capture outside capturing_checks(): "
                    "capture training steps with torchrec_memcom.distributed.CudaGraphTrainStep"
                )
            _captured.append((stats, features))
            return
        while len(self._pending) >= self.depth:  # the oldest batch's copy is done and read: its buffer may be reused
            self._read_oldest()
        ring = self._buffers.get(tuple(stats.shape))
        if ring is None:
            ring = self._buffers[tuple(stats.shape)] = [
                torch.empty(stats.shape, dtype=torch.int64, pin_memory=True) for _ in range(self.depth)
            ]
        if not self._events:
            self._events = [torch.cuda.Event() for _ in range(self.depth)]
        turn = self._turn
        self._turn = (turn + 1) % self.depth
        host, event = ring[turn], self._events[turn]
        host.copy_(stats, non_blocking=True)
        event.record()
        self._stream = torch.cuda.current_stream(stats.device)
        self._pending.append((host.reshape(-1), event, features))

    def flush_if_stream_changed(self, device: torch.device) -> None:
        """``flush()`` if batches in flight were copied on another stream than ``device``'s current one (a caller
        about to rewrite their statistics on this stream would not be ordered after their copies)."""
        if self._pending and self._stream != torch.cuda.current_stream(device):
            self.flush()

    def flush(self) -> None:
        """Raises for the earliest bad CUDA batch still in flight, if any (every one is read)."""
        while self._pending:
            self._read_oldest()

    def _read_oldest(self) -> None:
        host, event, features = self._pending.popleft()
        event.synchronize()
        self.raise_if_bad(host.tolist(), features, _DEFERRED)

    @staticmethod
    def raise_if_bad(values: List[int], features: List[Tuple[str, str, int]], when: str = "") -> None:
        """Raises ``ValueError`` for statistics ``values`` (``stats`` flattened) over ``features``; ``when`` ends the
        message (which batch)."""
        if values[-2] < 0:
            raise ValueError(f"KJT lengths must be >= 0, got {values[-2]}{when}")
        for i, (feature, table, n) in enumerate(features):
            lo, hi = values[2 * i], values[2 * i + 1]
            if lo > hi:  # no ids
                continue
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"table '{table}', feature '{feature}': ids must lie in [0, {n}), got values in [{lo}, {hi}]{when}"
                )
