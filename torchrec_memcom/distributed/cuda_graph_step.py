# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A whole training step (forward, backward with the fused optimizers, dense optimizer step) replayed from a CUDA
graph: the host launches one graph per step instead of hundreds of kernels from Python.

On one rank the sharded compressed collection runs without any host-device synchronisation (its input dist is the
identity; ids, lengths and MEmCom's weight slots stay on the GPU), so its step can be captured. TorchRec's own sharded
``EmbeddingBagCollection`` cannot be: its input dist copies the batch's splits through the host every step (capture
fails with ``GraphCaptureError``). What a graph fixes at capture, and how this class keeps it right:

- shapes: a graph holds one batch structure (tensor shapes and dtypes, KJT keys, batch size and the number of ids of
  each feature, ``length_per_key``); a new structure gets a graph of its own (warmed up eagerly first). Per-bag
  lengths may change between batches; per-feature totals may not: the graph counts them on the GPU, and a batch whose
  totals differ from the graph's raises ``ValueError`` at the first call after the GPU ran it (a host read in the
  step would stall the GPU).
- learning rates: baked into the captured kernels; after a change of any param group's ``lr`` one step runs eagerly
  (as in eager training, FBGEMM's tables take the new rate from the step after) and the next one captures again.
- the optimizer's step counters kept on the host (``torch.optim.Adagrad``'s ``step``): a graph runs no host code, so
  each replay counts them on the host (one ``_foreach_add_``); other host-side optimizer state that changes in a step
  is refused at capture.
- input checks: ids out of range and negative lengths raise as in eager mode, once the GPU has run the batch (the
  host may run up to ``_RING - 1`` replays ahead; ``flush()`` waits for all of them).

A model with a ``DistributedDataParallel`` inside (``DistributedModelParallel`` wraps the dense part in one, one rank
included) is captured with it, NCCL all-reduce and all, as PyTorch's CUDA-graph notes describe: build the model under
``with on_capture_stream():`` (on ``capture_stream()``: DDP keeps its parameters' gradient accumulators, and the
backward joins the stream they were made on), and the class runs at least ``DDP_WARMUP_STEPS`` eager steps first
(DDP times its first 10 iterations with CUDA events) and turns DDP's periodic runtime sampling off (it would time a
captured iteration).
"""

import contextlib
import dataclasses
import itertools
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.modules.input_check import CapturedCheck, InputCheck, capturing_checks
from torchrec_memcom.modules.transform import IdTransform

__all__ = [
    "DDP_WARMUP_STEPS",
    "DEFAULT_WARMUP_STEPS",
    "CudaGraphTrainStep",
    "GraphCaptureError",
    "capture_stream",
    "on_capture_stream",
    "warmup_steps_for",
]

DEFAULT_WARMUP_STEPS = 3  # eager steps before a batch structure's capture
DDP_WARMUP_STEPS = 11  # with a DistributedDataParallel inside: it records timing events in its first 10 iterations

# Replays whose checks are not read yet: each call reads those the GPU has finished (an event query, no wait) and
# waits only when this many are in flight, so the host may run that far ahead of the GPU.
_RING = 8

# One side stream per device for every instance's warmups and captures. A parameter's gradient accumulator keeps the
# stream it was created on while anything holds it (an earlier graph's outputs do), and a capture on any other stream
# fails at the end of the backward (cudaErrorStreamCaptureIsolation).
_SIDE_STREAMS: Dict[int, torch.cuda.Stream] = {}


class GraphCaptureError(RuntimeError):
    """The step could not be captured in a CUDA graph (it synchronises with the host, or runs an op graphs forbid);
    ``cause``: the first error the capture met."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


def capture_stream(device: Optional[torch.device] = None) -> torch.cuda.Stream:
    """The side stream on which every ``CudaGraphTrainStep`` of ``device`` (default: the current one) warms up and
    captures (build a model that holds a ``DistributedDataParallel`` under ``on_capture_stream``)."""
    index = torch.cuda.current_device() if device is None else torch.device(device).index
    if index is None:
        index = torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(index)
    return _SIDE_STREAMS[index]


@contextlib.contextmanager
def on_capture_stream(device: Optional[torch.device] = None, enabled: bool = True) -> Iterator[None]:
    """Runs the block (building a model for ``CudaGraphTrainStep``) on ``capture_stream(device)``, then makes the
    caller's stream wait for it. A ``DistributedDataParallel`` keeps the gradient accumulators of its parameters from
    its construction, and a backward joins the streams they were made on: that must be the capturing stream.
    ``enabled=False``: the block as it is."""
    if not enabled:
        yield
        return
    stream = capture_stream(device)
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream(stream.device).wait_stream(stream)


def _ddps(model: nn.Module) -> List[DistributedDataParallel]:
    return [m for m in model.modules() if isinstance(m, DistributedDataParallel)]


def warmup_steps_for(model: nn.Module, warmup_steps: int = DEFAULT_WARMUP_STEPS) -> int:
    """The eager steps ``CudaGraphTrainStep(model, warmup_steps=...)`` runs before its first capture."""
    return max(warmup_steps, DDP_WARMUP_STEPS) if _ddps(model) else warmup_steps


def _end_failed_capture(graph: torch.cuda.CUDAGraph, stream: torch.cuda.Stream, caller: torch.cuda.Stream) -> str:
    """Releases a failed capture; returns "" or what could not be restored. When the capture itself was invalidated
    (an op synchronised), ``capture_end`` raised before ``torch.cuda.graph`` restored the caller's stream and before
    it handed the CUDA generator back (later random numbers on the GPU would fail with "Offset increment outside
    graph capture"): the stream is set back, and a one-op capture takes the generator and hands it back."""
    torch.cuda.set_stream(caller)
    graph.reset()
    try:
        probe = torch.cuda.CUDAGraph()
        with torch.cuda.graph(probe, stream=stream):
            torch.zeros(1, device=stream.device).add_(1)
        probe.reset()
    except Exception as e:  # the capture's own error is the one to raise
        torch.cuda.set_stream(caller)
        return f" (the CUDA generator may not work after it: {type(e).__name__}: {e})"
    return ""


def _root_cause(error: BaseException) -> BaseException:
    """The first error of a chain: an op that fails inside a capture raises, then ``capture_end`` raises again
    ("operation failed due to a previous error during capture") with the first one as its context."""
    while error.__context__ is not None and error.__cause__ is None and not error.__suppress_context__:
        error = error.__context__
    return error


def _default_loss(output: Any, *inputs: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _structure(obj: Any, kjts: List[KeyedJaggedTensor]) -> Any:
    """A hashable description of ``obj``'s shapes (tensors, KJTs, dataclasses, sequences, dicts); appends the KJTs it
    meets to ``kjts``, in order."""
    if isinstance(obj, torch.Tensor):
        return ("T", tuple(obj.shape), obj.dtype)
    if isinstance(obj, KeyedJaggedTensor):
        if obj.variable_stride_per_key():
            raise ValueError("CUDA-graph steps need one batch size for every feature (variable_stride_per_key)")
        kjts.append(obj)
        weights = obj.weights_or_none()
        return (
            "KJT",
            tuple(obj.keys()),
            obj.stride(),
            _structure(obj.values(), kjts),
            None if weights is None else _structure(weights, kjts),
        )
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj), tuple(_structure(getattr(obj, f.name), kjts) for f in dataclasses.fields(obj)))
    if isinstance(obj, (tuple, list)):
        return (type(obj), tuple(_structure(x, kjts) for x in obj))
    if isinstance(obj, dict):
        return (dict, tuple((k, _structure(v, kjts)) for k, v in obj.items()))
    return ("C", obj)  # anything else is a constant of the step


class _Static:
    """Device buffers shaped like one batch; ``fill`` copies a batch of the same structure into them."""

    def __init__(self, example: Any, device: torch.device) -> None:
        self.copies: List[Tuple[torch.Tensor, Callable[[Any], torch.Tensor]]] = []
        self.kjts: List[Tuple[KeyedJaggedTensor, List[int]]] = []  # static KJT, its length_per_key
        self.value = self._build(example, device, lambda b: b)

    def _build(self, obj: Any, device: torch.device, get: Callable[[Any], Any]) -> Any:
        if isinstance(obj, torch.Tensor):
            buf = torch.empty(obj.shape, dtype=obj.dtype, device=device)
            self.copies.append((buf, get))
            return buf
        if isinstance(obj, KeyedJaggedTensor):
            values = self._build(obj.values(), device, lambda b: get(b).values())
            lengths = self._build(obj.lengths(), device, lambda b: get(b).lengths())
            weights = obj.weights_or_none()
            if weights is not None:
                weights = self._build(weights, device, lambda b: get(b).weights())
            per_key = list(obj.length_per_key())  # once per capture: the graph's per-feature totals
            kjt = KeyedJaggedTensor(
                keys=obj.keys(),
                values=values,
                lengths=lengths,
                weights=weights,
                stride=obj.stride(),
                length_per_key=per_key,
                offset_per_key=[0, *itertools.accumulate(per_key)],
            )
            self.kjts.append((kjt, per_key))
            return kjt
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {
                f.name: self._build(getattr(obj, f.name), device, lambda b, n=f.name: getattr(get(b), n))
                for f in dataclasses.fields(obj)
            }
            return type(obj)(**fields)
        if isinstance(obj, (tuple, list)):
            return type(obj)(self._build(x, device, lambda b, i=i: get(b)[i]) for i, x in enumerate(obj))
        if isinstance(obj, dict):
            return {k: self._build(v, device, lambda b, k=k: get(b)[k]) for k, v in obj.items()}
        return obj

    def fill(self, batch: Any) -> None:
        for buf, get in self.copies:
            buf.copy_(get(batch), non_blocking=True)


@dataclasses.dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static: _Static
    output: Any
    checks: List[CapturedCheck]
    report: torch.Tensor  # device: every check's statistics, then each static KJT's per-feature id counts
    per_key: List[int]  # the KJTs' captured per-feature counts, concatenated
    hosts: List[torch.Tensor]  # pinned copies of ``report``, one per ring slot
    host_steps: List[torch.Tensor]  # the optimizer's step counters kept on the host, which a replay must count


class CudaGraphTrainStep:
    """``step(*inputs)``: one training step of ``model`` (``loss_fn(model(*inputs), *inputs).backward()``, then
    ``optimizer.step()``), captured in a CUDA graph after ``warmup_steps`` eager steps and replayed from then on.

    Each call trains on its own inputs (on the model's device; copied into the graph's buffers) and returns the model's
    output, whose tensors the next call overwrites. The model must run on one CUDA device and one rank,
    without host-device synchronisations (the sharded compressed collections do; TorchRec's sharded EBC does not:
    ``GraphCaptureError``). Gradients are the graph's: each replay sets them, none accumulates across steps.

    Args:
        model (nn.Module): e.g. a ``DistributedModelParallel`` on one rank.
        optimizer (Optional[torch.optim.Optimizer]): stepped after backward (e.g. TorchRec's ``CombinedOptimizer``;
            dense optimizers must support capture); ``None``: fused optimizers only.
        loss_fn (Callable[..., torch.Tensor]): ``(output, *inputs) -> scalar loss``; default: ``output[0]`` of a
            tuple output, else the output.
        warmup_steps (int): eager steps on a side stream before each new batch structure is captured (lazy
            initialisation and kernel compilation must happen outside the capture); at least ``DDP_WARMUP_STEPS``
            with a ``DistributedDataParallel`` in the model.
        max_graphs (int): distinct batch structures (warming up or captured); one more raises ``ValueError``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        loss_fn: Callable[..., torch.Tensor] = _default_loss,
        warmup_steps: int = DEFAULT_WARMUP_STEPS,
        max_graphs: int = 4,
    ) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError(
                f"CUDA-graph steps run on one rank (world size here: {dist.get_world_size()}): across ranks the input "
                "dists exchange their splits through the host"
            )
        decaying = [i for i, g in enumerate(optimizer.param_groups if optimizer else []) if g.get("lr_decay")]
        if decaying:
            raise ValueError(
                f"param groups {decaying} decay their learning rate inside the optimizer's step (Adagrad's lr_decay): "
                "a CUDA graph would replay the rate of the captured step; set lr_decay=0 and schedule the lr instead "
                "(a change of lr recaptures)"
            )
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1 (kernels compile outside the capture), got {warmup_steps}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.warmup_steps, self.max_graphs = warmup_steps_for(model, warmup_steps), max_graphs
        ddps = _ddps(model)
        self._has_ddp = bool(ddps)
        for ddp in ddps:
            ddp._set_ddp_runtime_logging_sample_rate(2**31 - 1)  # no CUDA-event timing of a later (captured) step
        # (structure, ids per feature) -> its graph, and the eager steps run before capturing it
        self._graphs: Dict[Tuple[Any, Tuple[int, ...]], _Graph] = {}
        self._warm: Dict[Tuple[Any, Tuple[int, ...]], int] = {}
        self._last: Dict[Any, Tuple[int, ...]] = {}  # structure -> ids per feature of its last replay
        self._lrs: Optional[List[float]] = None
        self._pending: List[Tuple[int, _Graph, torch.Tensor, torch.cuda.Event]] = []  # (step, graph, host, event)
        self._events: List[torch.cuda.Event] = []
        self.steps = 0
        self.replays = 0

    # -- public ----------------------------------------------------------------------------------------------------

    def __call__(self, *inputs: Any) -> Any:
        if not torch.cuda.is_available():
            raise ValueError("CudaGraphTrainStep needs CUDA (CUDA graphs)")
        self._check_reports(wait_beyond=_RING - 2)
        kjts: List[KeyedJaggedTensor] = []
        structure = _structure(inputs, kjts)
        lrs = self._learning_rates()
        if self._lrs is not None and lrs != self._lrs:
            # learning rates are constants of the captured kernels: this step runs eagerly (TorchRec hands a new lr
            # to FBGEMM in the optimizer's step, after the backward), the next one captures again
            self.flush()
            self._graphs.clear()
            self._lrs = lrs
            self.steps += 1
            return self._eager(inputs)
        self._lrs = lrs
        per_key = self._per_key(kjts, structure)
        key = (structure, per_key)
        graph = self._graphs.get(key)
        if graph is None:
            self._admit(key)
            if self._warm.get(key, 0) < self.warmup_steps:
                self._warm[key] = self._warm.get(key, 0) + 1
                self.steps += 1
                return self._eager(inputs)
            graph = self._graphs[key] = self._capture(inputs)
        self._last[structure] = per_key
        graph.static.fill(inputs)
        graph.graph.replay()
        if graph.host_steps:
            torch._foreach_add_(graph.host_steps, 1)
        self.steps += 1
        self.replays += 1
        self._queue_report(graph)
        return graph.output

    def flush(self) -> None:
        """Waits for every replay so far and raises for a bad batch among them (``ValueError``)."""
        self._check_reports(wait_beyond=0)

    def reset(self) -> None:
        """Drops the captured graphs (the next calls warm up and capture again)."""
        self.flush()
        self._graphs.clear()
        self._warm.clear()
        self._last.clear()

    # -- internals -------------------------------------------------------------------------------------------------

    def _per_key(self, kjts: List[KeyedJaggedTensor], structure: Any) -> Tuple[int, ...]:
        """The inputs' ids per feature: from their KJTs when they know them, else those of the structure's last
        replay (the graph verifies them on the GPU), else read from the device (before a structure's first graph)."""
        known = [k.length_per_key_or_none() for k in kjts]
        if all(k is not None for k in known):
            return tuple(n for k in known for n in k)  # type: ignore[union-attr]
        last = self._last.get(structure)
        if last is not None:
            return last
        return tuple(n for k in kjts for n in k.length_per_key())

    def _admit(self, key: Tuple[Any, Tuple[int, ...]]) -> None:
        """Raises ``ValueError`` when ``key`` would be the ``max_graphs + 1``-th distinct batch structure, warming up
        or captured (without the warming ones, batches whose counts always differ would run eagerly, silently)."""
        if key in self._warm or key in self._graphs:
            return
        seen = len(self._warm.keys() | self._graphs.keys())
        if seen >= self.max_graphs:
            raise ValueError(
                f"{seen + 1} distinct batch structures (shapes, or ids per feature) for max_graphs={self.max_graphs}: "
                "CUDA-graph steps need batches of fixed shapes and ids per feature (multi-hot features whose ids per "
                "batch vary cannot be captured); train those eagerly (e.g. TrainPipelineSparseDist) or raise max_graphs"
            )

    def _learning_rates(self) -> List[float]:
        if self.optimizer is None:
            return []
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def _step(self, inputs: Tuple[Any, ...]) -> Any:
        output = self.model(*inputs)
        self.loss_fn(output, *inputs).backward()
        if self.optimizer is not None:
            self.optimizer.step()
        return output

    def _eager(self, inputs: Tuple[Any, ...]) -> Any:
        # on a side stream, as CUDA graphs need for their warmup (the autograd engine and the allocator see the stream
        # the capture will use)
        stream = capture_stream()
        current = torch.cuda.current_stream()
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            output = self._step(inputs)
            self._drop_grads()
        current.wait_stream(stream)
        return output

    def _drop_grads(self) -> None:
        # every parameter's, not only the optimizer's (FBGEMM's autograd placeholders have gradients too), so that the
        # captured backward allocates the gradients it sets instead of accumulating into the eager steps' buffers
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        for p in self.model.parameters():
            p.grad = None

    def _capture(self, inputs: Tuple[Any, ...]) -> _Graph:
        self.flush()
        for module in self.model.modules():  # no eager check may be in flight when the capture starts
            if isinstance(module, IdTransform):
                module.input_check.flush()
        device = torch.device("cuda", torch.cuda.current_device())
        static = _Static(inputs, device)
        static.fill(inputs)
        self._drop_grads()
        host_state = self._host_state()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        caller = torch.cuda.current_stream()
        try:
            # on the warmups' stream: the autograd engine ends a backward by joining the streams its leaves' gradient
            # accumulators were created on (in a warmup), which must be the capturing stream
            with capturing_checks() as checks, torch.cuda.graph(graph, stream=capture_stream()):
                for kjt, _ in static.kjts:
                    kjt.offsets()  # computed by the graph from each batch's lengths (per-bag lengths may change)
                output = self._step(static.value)
                parts = [stats.reshape(-1).to(torch.int64) for stats, _ in checks]
                for kjt, per_key in static.kjts:
                    parts.append(kjt.lengths().view(len(per_key), -1).sum(1).to(torch.int64))
                report = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=device)
        except Exception as e:
            restored = _end_failed_capture(graph, capture_stream(), caller)
            cause = _root_cause(e)
            hint = (
                "; with a DistributedDataParallel in the model, build the model under "
                "`with torch.cuda.stream(capture_stream())` (`with on_capture_stream():` does it, then makes the "
                "caller's stream wait)"
                if self._has_ddp
                else ""
            )
            raise GraphCaptureError(
                f"could not capture the training step in a CUDA graph: {type(cause).__name__}: {cause}. A step that "
                "synchronises with the host cannot be captured (TorchRec's sharded EmbeddingBagCollection does: its "
                f"input dist copies the splits through the host); run it eagerly{hint}{restored}",
                cause=f"{type(cause).__name__}: {cause}",
            ) from e
        host_steps = self._host_steps_of_capture(host_state)
        per_key = [n for _, counts in static.kjts for n in counts]
        hosts = [
            torch.empty(report.shape, dtype=torch.int64, pin_memory=True) for _ in range(_RING if report.numel() else 0)
        ]
        return _Graph(graph, static, output, list(checks), report, per_key, hosts, host_steps)

    def _host_state(self) -> List[Tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, tensor, copy) of every optimizer state tensor on the host (e.g. ``torch.optim.Adagrad``'s step).
        Plain tensors only: TorchRec's ShardedTensor views of the fused optimizers' state report device ``cpu`` for
        shards on the GPU, and copying them would copy every table's optimizer state."""
        if self.optimizer is None:
            return []
        return [
            (name, value, value.clone())
            for state in self.optimizer.state.values()
            for name, value in state.items()
            if type(value) is torch.Tensor and value.device.type == "cpu"
        ]

    @staticmethod
    def _host_steps_of_capture(host_state: List[Tuple[str, torch.Tensor, torch.Tensor]]) -> List[torch.Tensor]:
        """The host-side state the captured step changed: step counters, put back (the capture trained nothing) and then
        counted on the host by each replay (a graph runs no host code), so that the optimizer's state and its
        checkpoints match eager training. Any other host state would be frozen at its captured value: refused."""
        changed = [(name, value, before) for name, value, before in host_state if not torch.equal(value, before)]
        for _, value, before in changed:
            value.copy_(before)
        frozen = sorted({name for name, value, _ in changed if name != "step" or value.numel() != 1})
        if frozen:
            raise GraphCaptureError(
                f"the optimizer changes its state {frozen} on the host in each step, which a CUDA graph cannot "
                "replay; keep that state on the GPU (e.g. `capturable=True` or `fused=True`) or run eagerly"
            )
        return [value for _, value, _ in changed]

    def _queue_report(self, graph: _Graph) -> None:
        if not graph.hosts:
            return
        if not self._events:
            self._events = [torch.cuda.Event() for _ in range(_RING)]
        host, event = graph.hosts[self.replays % _RING], self._events[self.replays % _RING]
        host.copy_(graph.report, non_blocking=True)
        event.record()
        self._pending.append((self.steps, graph, host, event))

    def _check_reports(self, wait_beyond: int) -> None:
        """Reads the reports of the pending replays the GPU has finished, in order, waiting for the oldest while more
        than ``wait_beyond`` are pending; raises for the first bad one (and drops the rest)."""
        try:
            while self._pending:
                step, graph, host, event = self._pending[0]
                if len(self._pending) <= wait_beyond and not event.query():
                    return
                event.synchronize()
                self._pending.pop(0)
                self._check(step, graph, host.tolist())
        except ValueError:
            self._pending.clear()
            raise

    @staticmethod
    def _check(step: int, graph: _Graph, values: List[int]) -> None:
        when = f" (the batch of step {step}: CUDA-graph steps check a batch once the GPU has run it)"
        start = 0
        for stats, features in graph.checks:
            n = stats.numel()
            InputCheck.raise_if_bad(values[start : start + n], features, when)
            start += n
        counts = values[start:]
        if counts != graph.per_key:
            keys = [k for kjt, _ in graph.static.kjts for k in kjt.keys()]
            bad = [f"'{k}': {c} ids, the graph's {e}" for k, c, e in zip(keys, counts, graph.per_key) if c != e]
            raise ValueError(
                "a batch's ids per feature differ from the CUDA graph's (a graph holds fixed per-feature totals; "
                f"give such batches their length_per_key, or run eagerly): {', '.join(bad)}{when}"
            )
