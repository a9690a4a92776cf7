# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``CudaGraphTrainPipeline``: TorchRec's ``TrainPipeline`` interface over ``CudaGraphTrainStep``, so that a one-GPU
training loop written for ``TrainPipelineSparseDist`` (``pipeline.progress(dataloader_iter)`` per step) replays its
steps from CUDA graphs by changing one line.

Like TorchRec's pipelines it takes host batches from the iterator and copies each to the GPU on a side stream while
the previous step runs (launch the replay, then read and copy the next batch), and each step's output is a copy that
later replays leave alone (the graph's own outputs are overwritten by the next replay).
"""

import dataclasses
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn
from torchrec.distributed.train_pipeline import TrainPipeline

from torchrec_memcom.distributed.cuda_graph_step import DEFAULT_WARMUP_STEPS, CudaGraphTrainStep, _default_loss

__all__ = ["CudaGraphTrainPipeline"]


def _to(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor (and TorchRec batch / KJT) copied to ``device``, asynchronously where the host
    memory is pinned."""
    if hasattr(obj, "to") and not isinstance(obj, nn.Module):
        return obj.to(device=device, non_blocking=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return type(obj)(**{f.name: _to(getattr(obj, f.name), device) for f in dataclasses.fields(obj)})
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _record_stream(obj: Any, stream: torch.cuda.Stream) -> None:
    """Marks every tensor of ``obj`` as used on ``stream`` (the allocator keeps its memory until ``stream`` is done)."""
    if hasattr(obj, "record_stream"):
        obj.record_stream(stream)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _record_stream(getattr(obj, f.name), stream)
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            _record_stream(x, stream)
    elif isinstance(obj, dict):
        for x in obj.values():
            _record_stream(x, stream)


def detached_copy(obj: Any) -> Any:
    """``obj`` with every tensor replaced by a detached copy (other values kept)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (tuple, list)):
        return type(obj)(detached_copy(x) for x in obj)
    if isinstance(obj, dict):
        return {k: detached_copy(v) for k, v in obj.items()}
    return obj


class CudaGraphTrainPipeline(TrainPipeline[Any, Any]):
    """``progress(dataloader_iter)``: one training step of ``model`` on the iterator's next batch, replayed from a
    CUDA graph (``CudaGraphTrainStep``: the same requirements, one rank and batches of fixed shapes); raises
    ``StopIteration`` once the iterator is exhausted. Returns a detached copy of the model's output.

    Args:
        model (nn.Module): e.g. a ``DistributedModelParallel`` on one rank built under ``on_capture_stream()``.
        optimizer (Optional[torch.optim.Optimizer]): stepped after backward (``None``: fused optimizers only).
        device (torch.device): the model's CUDA device; batches are copied there.
        loss_fn, warmup_steps, max_graphs: as ``CudaGraphTrainStep``'s (default loss: the output's first element).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        device: torch.device,
        loss_fn: Callable[..., torch.Tensor] = _default_loss,
        warmup_steps: int = DEFAULT_WARMUP_STEPS,
        max_graphs: int = 4,
    ) -> None:
        if device.type != "cuda":
            raise ValueError(f"CudaGraphTrainPipeline needs a CUDA device (CUDA graphs), got {device}")
        super().__init__()
        self.model = model
        self.step = CudaGraphTrainStep(model, optimizer, loss_fn, warmup_steps, max_graphs)
        self._device = device
        self._memcpy = torch.cuda.Stream(device)
        self._next: Optional[Any] = None  # the next batch, on the device (copied on ``_memcpy``)

    def progress(self, dataloader_iter: Iterator[Any]) -> Any:
        if self._next is None:
            self._next = self._copy(next(dataloader_iter))  # StopIteration: no batch left
        batch, self._next = self._next, None
        current = torch.cuda.current_stream(self._device)
        current.wait_stream(self._memcpy)
        _record_stream(batch, current)
        output = detached_copy(self.step(batch))  # before the next replay overwrites the graph's output
        upcoming = next(dataloader_iter, None)  # read and copied while the GPU runs this step
        if upcoming is not None:
            self._next = self._copy(upcoming)
        return output

    def flush(self) -> None:
        """Waits for the replays so far and raises for a bad batch among them (``CudaGraphTrainStep.flush``)."""
        self.step.flush()

    def detach(self) -> nn.Module:
        """The model, after ``flush()`` (as ``TrainPipelineSparseDist.detach``, for evaluation between steps)."""
        self.flush()
        return self.model

    def _copy(self, batch: Any) -> Any:
        with torch.cuda.stream(self._memcpy):
            return _to(batch, self._device)
