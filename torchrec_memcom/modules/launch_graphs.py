# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Per-batch GPU work replayed from CUDA graphs, one graph per bucket of batch shapes.

Inside a training step a Triton launch costs the host 0.10-0.15 ms (its Python and driver call with cold caches),
several times a torch copy. A replay costs the host a copy of each input into the graph's static buffers, the
replay, and one copy of the outputs out of the graph's buffer: TorchRec's pipeline runs batch ``i + 1``'s input
dist (the id transform) before batch ``i``'s lookup and backward, on another stream, so a batch's outputs must not
be the ones the next replay rewrites. Inputs are padded to their bucket's capacity; the work must read each batch's
true extent on the device (the id transform reads its segments from the offsets of the lengths it is given).
"""

from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch

__all__ = ["LaunchGraphs", "bucket"]

# Bucket sizes: the next number of the form m * 2**k with 8 <= m < 16 (at most 1/8 of padding).
_BUCKET_BITS = 3
# Output parts start at multiples of this many bytes in the graph's output buffer.
_ALIGN = 256

Launch = Callable[[List[Optional[torch.Tensor]], List[torch.Tensor]], None]


def bucket(n: int) -> int:
    """The graph size that holds a batch of ``n`` positions: ``n`` rounded up to 4 significant bits."""
    shift = max(n.bit_length() - _BUCKET_BITS - 1, 0)
    return -(-n >> shift) << shift


class _Graph:
    def __init__(
        self,
        graph: torch.cuda.CUDAGraph,
        inputs: List[Optional[torch.Tensor]],
        flat: torch.Tensor,
        parts: List[Tuple[int, int, torch.dtype]],
    ) -> None:
        self.graph = graph
        self.inputs = inputs
        self.flat = flat
        self.parts = parts  # (byte offset, elements, dtype) of each output in ``flat``
        self.stream: Optional[torch.cuda.Stream] = None  # of the last replay


class LaunchGraphs:
    """Runs ``launch(static_inputs, static_outputs)`` by CUDA graph replays, one graph per ``key``.

    ``key`` names everything the launch depends on other than its inputs' contents: the capacities of the inputs
    (``bucket`` of a batch's size, or a fixed size), the outputs' dtypes and capacities, and the launch's constants.
    A key is captured the second time it comes (the first call returns ``None`` and the caller runs eagerly, so its
    kernels are compiled outside a capture); at most ``max_graphs`` keys are captured, later ones run eagerly.
    ``launch`` may read device tensors other than its arguments (tables of constants): the graph keeps their
    addresses, so they must outlive it and be changed only in place.

    Args:
        max_graphs (int): keys to capture at most.
    """

    def __init__(self, max_graphs: int = 8) -> None:
        self.max_graphs = max_graphs
        self.graphs: Dict[Hashable, _Graph] = {}
        self._seen: Dict[Hashable, int] = {}

    def __getstate__(self) -> Dict[str, int]:  # a copy (deepcopy, pickle) starts without graphs
        return {"max_graphs": self.max_graphs}

    def __setstate__(self, state: Dict[str, int]) -> None:
        self.__init__(state["max_graphs"])  # type: ignore[misc]

    def __call__(
        self,
        key: Hashable,
        inputs: Sequence[Optional[torch.Tensor]],
        capacities: Sequence[int],
        outputs: Sequence[Tuple[torch.dtype, int]],
        launch: Launch,
    ) -> Optional[List[torch.Tensor]]:
        """Copies ``inputs`` into the graph's buffers of ``capacities`` elements (``None``: no input), replays
        ``launch`` and returns new tensors holding its ``outputs`` (``(dtype, elements)`` each, the buffers it was
        given, whole); or returns ``None`` (nothing done) where the caller should run eagerly: the key's first call,
        more keys than ``max_graphs``, CPU tensors, or a CUDA graph capture in progress."""
        device = next((x.device for x in inputs if x is not None), None)
        if device is None or device.type != "cuda" or torch.cuda.is_current_stream_capturing():
            return None
        entry = self.graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0) + 1
            self._seen[key] = seen
            if seen < 2 or len(self.graphs) >= self.max_graphs:
                return None
            entry = self.graphs[key] = _capture(inputs, capacities, outputs, launch, device)
        stream = torch.cuda.current_stream(device)
        if entry.stream is not None and entry.stream != stream:  # its last replay may still read the buffers
            stream.wait_stream(entry.stream)
        entry.stream = stream
        for buffer, x in zip(entry.inputs, inputs):
            if buffer is not None and x is not None and x.numel():
                buffer[: x.numel()].copy_(x.reshape(-1))
        entry.graph.replay()
        flat = entry.flat.clone()
        return [flat[at : at + n * dtype.itemsize].view(dtype) for at, n, dtype in entry.parts]


def _capture(
    inputs: Sequence[Optional[torch.Tensor]],
    capacities: Sequence[int],
    outputs: Sequence[Tuple[torch.dtype, int]],
    launch: Launch,
    device: torch.device,
) -> _Graph:
    if len(capacities) != len(inputs):
        raise ValueError(f"LaunchGraphs: {len(inputs)} inputs but {len(capacities)} capacities")
    for x, cap in zip(inputs, capacities):
        if x is not None and x.numel() > cap:
            raise ValueError(f"LaunchGraphs: an input of {x.numel()} elements exceeds its capacity {cap}")
    static_in = [
        None if x is None else torch.zeros(cap, dtype=x.dtype, device=device) for x, cap in zip(inputs, capacities)
    ]
    parts, size = [], 0
    for dtype, n in outputs:
        parts.append((size, n, dtype))
        size += -(-n * dtype.itemsize // _ALIGN) * _ALIGN
    flat = torch.zeros(max(size, 1), dtype=torch.uint8, device=device)
    static_out = [flat[at : at + n * dtype.itemsize].view(dtype) for at, n, dtype in parts]
    launch(static_in, static_out)  # compiles the kernels outside the capture (on zeroed inputs)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        launch(static_in, static_out)
    return _Graph(graph, static_in, flat, parts)
