# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The id transform's input check: ids outside their table or negative lengths raise, on CUDA one batch later (the
statistics come from the transform kernel and cross to the host asynchronously)."""

import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["CapturedCheck", "InputCheck", "capturing_checks"]

# (the statistics buffer the graph's transform fills, its features): what a check saw while a CUDA graph was captured
CapturedCheck = Tuple[torch.Tensor, List[Tuple[str, str, int]]]
_captured: Optional[List[CapturedCheck]] = None
_DEFERRED = " (in the previous batch: on CUDA inputs are checked asynchronously)"


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


class InputCheck:
    """Raises ``ValueError`` for ids outside ``[0, n)`` or negative lengths, without stalling the GPU.

    On CPU the check is immediate. On CUDA the statistics of a batch (per feature id min / max, the smallest length,
    all computed by the transform kernel) are copied to pinned host memory asynchronously and inspected at the next
    call (or ``flush()``), so a bad batch raises one step later, never silently; a ``bool(tensor)`` per step would
    serialise the host with the device.
    """

    def __init__(self) -> None:
        self._pending: Optional[Tuple[torch.Tensor, torch.cuda.Event, List[Tuple[str, str, int]]]] = None
        # one pinned buffer per stats shape and one event: a call first flushes (waits for and reads) the previous
        # batch's copy, so at most one copy is ever in flight
        self._buffers: Dict[Tuple[int, ...], torch.Tensor] = {}
        self._event: Optional[torch.cuda.Event] = None
        self._streams: Dict[Tuple[int, int], torch.cuda.Stream] = {}

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
        self.flush()  # the previous batch's copy is done and read: its buffer may be reused
        host = self._buffers.get(stats.shape)
        if host is None:
            host = self._buffers[stats.shape] = torch.empty(stats.shape, dtype=torch.int64, pin_memory=True)
        host.copy_(stats, non_blocking=True)
        if self._event is None:
            self._event = torch.cuda.Event()
        self._event.record(self._current_stream(stats.device))
        self._pending = (host, self._event, features)

    def _current_stream(self, device: torch.device) -> torch.cuda.Stream:
        """``torch.cuda.current_stream(device)``, its Python object cached by raw stream (building one costs ~8 us of
        host time per batch; the raw handle is what Triton's launches read too)."""
        key = (device.index, torch._C._cuda_getCurrentRawStream(device.index))  # a CUDA tensor's device has an index
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = torch.cuda.current_stream(device.index)
        return stream

    def flush(self) -> None:
        """Raises for the previous CUDA batch if it was bad."""
        if self._pending is None:
            return
        host, event, features = self._pending
        self._pending = None
        event.synchronize()
        self.raise_if_bad(host.view(-1).tolist(), features, _DEFERRED)

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
