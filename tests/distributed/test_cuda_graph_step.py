# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``CudaGraphTrainStep``: on the GPU (one NCCL rank) replays equal the unsharded reference, follow learning-rate
changes like eager steps, raise for bad batches once the GPU has run them, and TorchRec's own sharded EBC fails to
capture with a clear error; on CPU the refusals and the batch-structure helpers."""

import contextlib
from dataclasses import dataclass
from typing import List

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel
from torchrec import KeyedJaggedTensor

from tests.distributed import cuda_graph_scenarios as graphs
from tests.distributed.world import World
from torchrec_memcom.distributed import CudaGraphTrainStep
from torchrec_memcom.distributed.cuda_graph_step import (
    DDP_WARMUP_STEPS,
    DEFAULT_WARMUP_STEPS,
    GraphCaptureError,
    _root_cause,
    _Static,
    _structure,
    warmup_steps_for,
)

METHODS = ["hash", "memcom", "qr", "lma", "stock"]  # stock: plain tables inside the compressed collection


@pytest.mark.gpu
@pytest.mark.parametrize("method, optimizer", [(m, "adagrad") for m in METHODS] + [("memcom", "sgd")])
def test_graph_step_matches_unsharded(gpu_world1: World, method: str, optimizer: str) -> None:
    (r,) = gpu_world1.run(graphs.graph_step_matches_unsharded, method=method, optimizer=optimizer)
    assert r["replays"] == 5 and r["graphs"] == 1 and r["checked"] > 0, r


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["hash", "memcom"])
def test_graph_step_follows_lr_change(gpu_world1: World, method: str) -> None:
    (r,) = gpu_world1.run(graphs.graph_step_follows_lr_change, method=method)
    assert r["replays"] == 6, r  # 8 steps: 1 eager, capture + 3 replays, 1 eager at the change, capture + 3 replays


@pytest.mark.gpu
def test_graph_step_deferred_errors(gpu_world1: World) -> None:
    gpu_world1.run(graphs.graph_step_deferred_errors)


@pytest.mark.gpu
def test_torchrec_ebc_not_capturable(gpu_world1: World) -> None:
    (message,) = gpu_world1.run(graphs.torchrec_ebc_not_capturable)
    assert "could not capture the training step in a CUDA graph" in message, message


@pytest.mark.gpu
def test_dlrm_with_ddp_graph_step_matches_reference(gpu_world1: World) -> None:
    (r,) = gpu_world1.run(graphs.dlrm_graph_step_matches_reference)
    assert r["replays"] == 3 and r["checked"] > 0, r  # 11 eager steps (DDP), then capture + 2 replays


@pytest.mark.gpu
def test_dlrm_through_the_graph_pipeline_matches_reference(gpu_world1: World) -> None:
    """``CudaGraphTrainPipeline`` over host batches: each returned loss keeps its step's value, then StopIteration."""
    (r,) = gpu_world1.run(graphs.dlrm_graph_step_matches_reference, pipeline=True)
    assert r["replays"] == 3 and len(r["losses"]["graph"]) == DDP_WARMUP_STEPS + 3 and r["checked"] > 0, r


@pytest.mark.gpu
def test_dlrm_built_off_the_capture_stream_is_refused(gpu_world1: World) -> None:
    (r,) = gpu_world1.run(graphs.dlrm_graph_step_matches_reference, on_capture_stream=False)
    assert "build the model under `with torch.cuda.stream(capture_stream())`" in r["message"], r


def _refuses_world(rank: int, world_size: int) -> str:
    with pytest.raises(ValueError) as e:
        CudaGraphTrainStep(torch.nn.Linear(2, 2))
    return str(e.value)


def test_refuses_more_than_one_rank(world2: World) -> None:
    for message in world2.run(_refuses_world):
        assert "one rank (world size here: 2)" in message, message


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only refusal")
def test_refuses_without_cuda() -> None:
    with pytest.raises(ValueError, match="needs CUDA"):
        CudaGraphTrainStep(torch.nn.Linear(2, 2))(torch.zeros(2))


def test_refuses_no_warmup() -> None:
    with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
        CudaGraphTrainStep(torch.nn.Linear(2, 2), warmup_steps=0)


def test_refuses_lr_decay() -> None:
    linear = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"param groups \[0\] decay their learning rate"):
        CudaGraphTrainStep(linear, torch.optim.Adagrad(linear.parameters(), lr_decay=0.1))
    CudaGraphTrainStep(linear, torch.optim.Adagrad(linear.parameters()))  # lr_decay 0: accepted


def _ddp_warmups(rank: int, world_size: int) -> List[int]:
    linear = torch.nn.Linear(2, 2)
    return [warmup_steps_for(linear), warmup_steps_for(torch.nn.Sequential(DistributedDataParallel(linear)), 5)]


def test_ddp_warms_up_longer(world1: World) -> None:
    (r,) = world1.run(_ddp_warmups)
    assert r == [DEFAULT_WARMUP_STEPS, DDP_WARMUP_STEPS], r


@dataclass
class _Batch:
    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    label: str


def _kjt(lengths: list, values: list) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=["a", "b"], values=torch.tensor(values), lengths=torch.tensor(lengths))


def _shape(obj: object) -> object:
    return _structure(obj, [])


def test_structure_and_static_buffers() -> None:
    one = _Batch(torch.zeros(2, 3), _kjt([1, 2, 0, 1], [5, 6, 7, 8]), "x")
    same_shapes = _Batch(torch.ones(2, 3), _kjt([0, 3, 1, 0], [1, 2, 3, 4]), "x")
    assert _shape((one,)) == _shape((same_shapes,))  # per-bag lengths and values may change
    assert _shape((one,)) != _shape((_Batch(torch.zeros(2, 4), one.sparse, "x"),))
    assert _shape((one,)) != _shape((_Batch(one.dense, _kjt([1, 2, 0, 2], [5, 6, 7, 8, 9]), "x"),))
    assert _shape((one,)) != _shape((_Batch(one.dense, one.sparse, "y"),))
    found: list = []
    _structure((one, {"k": one.sparse}), found)  # the KJTs met, in order
    assert found == [one.sparse, one.sparse]
    static = _Static((one,), torch.device("cpu"))
    (batch,) = static.value
    kjt = static.kjts[0][0]
    assert kjt.length_per_key() == [3, 1] and kjt.keys() == ["a", "b"] and batch.label == "x"
    static.fill((same_shapes,))
    assert torch.equal(batch.dense, same_shapes.dense)
    assert torch.equal(kjt.values(), same_shapes.sparse.values())
    assert torch.equal(kjt.lengths(), same_shapes.sparse.lengths())
    # the static KJT keeps the captured per-key totals: the graph's device check compares each batch's with them
    assert static.kjts[0][1] == [3, 1]


def test_root_cause_is_the_first_error_of_the_chain() -> None:
    """An op failing inside a capture, then ``capture_end`` failing while that error propagates: the report names
    the op's error; an explicit ``raise ... from`` ends the walk."""
    try:
        try:
            raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture")
        except RuntimeError:
            raise RuntimeError("operation failed due to a previous error during capture") from None
    except RuntimeError as e:
        assert str(_root_cause(e)) == "operation failed due to a previous error during capture"
    try:
        try:
            raise ValueError("the op")
        except ValueError:
            raise RuntimeError("capture_end")  # noqa: B904 (raised inside __exit__, as torch.cuda.graph does)
    except RuntimeError as e:
        assert str(_root_cause(e)) == "the op"


def test_host_step_counters_are_put_back_and_counted_by_replays() -> None:
    """A capture runs the optimizer's host code once without training: ``torch.optim.Adagrad``'s host-side ``step``
    goes back to its value before the capture, and is returned for the replays to count; other host state that the
    step changes (here Adagrad's ``sum`` of a CPU parameter) is refused, since a replay would freeze it."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adagrad([p], lr=0.1)
    step = CudaGraphTrainStep(torch.nn.Linear(1, 1), opt)
    p.grad = torch.ones(3)
    opt.step()  # an eager warmup: step 1
    before = {name: value.clone() for name, value in opt.state[p].items()}
    state = opt.state[p]
    for name in ("sum",):  # pretend it lives on the GPU: only the host step is in the snapshot
        state[name] = state[name].to("meta")
    host = step._host_state()
    assert [name for name, _, _ in host] == ["step"]
    opt.state[p]["step"] += 1  # what the captured optimizer step did on the host
    counted = step._host_steps_of_capture(host)
    assert len(counted) == 1 and counted[0] is opt.state[p]["step"]
    assert float(opt.state[p]["step"]) == float(before["step"]) == 1.0
    assert step._host_steps_of_capture(step._host_state()) == []  # nothing changed: nothing to count

    state["sum"] = before["sum"].clone()
    host = step._host_state()
    state["sum"] += 1
    with pytest.raises(GraphCaptureError, match=r"state \['sum'\] on the host in each step"):
        step._host_steps_of_capture(host)
    assert torch.equal(state["sum"], before["sum"])  # put back before the refusal


def _host_state_names(rank: int, world_size: int) -> List[str]:
    import torch.distributed as dist

    from torchrec_memcom.distributed.local_entity_weights import sharded_vector

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adagrad([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    opt.state[p]["sum"] = opt.state[p]["sum"].to("meta")  # as on the GPU
    opt.state[p]["momentum"] = sharded_vector(torch.ones(8), 8, ["rank:0/cpu"], dist.group.WORLD)
    return [name for name, _, _ in CudaGraphTrainStep(torch.nn.Linear(1, 1), opt)._host_state()]


def test_host_state_skips_sharded_views(world1: World) -> None:
    """TorchRec's ShardedTensor views of fused optimizer state report device ``cpu`` whatever their shards' device:
    they are not snapshotted (that would copy every table's optimizer state at each capture)."""
    assert world1.run(_host_state_names) == [["step"]]


def test_graph_pipeline_needs_cuda_and_copies_outputs() -> None:
    """On CPU: refused, naming the device; its helpers copy batches (nested, KJTs, TorchRec batches) to a device and
    detach-copy outputs (later replays overwrite the graph's own)."""
    from torchrec.datasets.utils import Batch

    from torchrec_memcom.distributed import CudaGraphTrainPipeline
    from torchrec_memcom.distributed.cuda_graph_pipeline import _record_stream, _to, detached_copy

    with pytest.raises(ValueError, match="needs a CUDA device .* got cpu"):
        CudaGraphTrainPipeline(torch.nn.Linear(2, 2), None, torch.device("cpu"))
    kjt = KeyedJaggedTensor.from_lengths_sync(["a"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
    batch = Batch(dense_features=torch.ones(2, 3), sparse_features=kjt, labels=torch.zeros(2))
    moved = _to({"x": (batch, [torch.arange(3)]), "n": 4}, torch.device("cpu"))
    assert moved["n"] == 4 and torch.equal(moved["x"][1][0], torch.arange(3))
    assert torch.equal(moved["x"][0].sparse_features.values(), kjt.values())
    # on CPU the copy to the CPU keeps the tensors: the meta device shows that every tensor, nested ones too, moves
    meta = _to({"x": (batch, [torch.arange(3)]), "n": 4}, torch.device("meta"))
    b = meta["x"][0]
    kjt_meta = b.sparse_features
    moved_tensors = [b.dense_features, b.labels, kjt_meta.values(), kjt_meta.lengths(), meta["x"][1][0]]
    assert meta["n"] == 4 and all(t.device.type == "meta" for t in moved_tensors)

    @dataclass
    class _Pair:  # a dataclass without record_stream: its fields are visited
        first: object
        second: object

    class _Marked:
        def __init__(self) -> None:
            self.streams: List[object] = []

        def record_stream(self, stream: object) -> None:
            self.streams.append(stream)

    marks = [_Marked() for _ in range(4)]
    _record_stream({"a": (marks[0], [marks[1]]), "b": _Pair(marks[2], {"c": marks[3]}), "n": 4}, "s")
    assert all(m.streams == ["s"] for m in marks)
    w = torch.ones(3, requires_grad=True)
    out = (w * 2, {"logits": w.sum()}, "tag")
    copy = detached_copy(out)
    assert copy[2] == "tag" and not copy[0].requires_grad and torch.equal(copy[0], out[0])
    assert copy[0].data_ptr() != out[0].data_ptr() and float(copy[1]["logits"]) == 3.0


def test_structures_beyond_max_graphs_are_refused_while_warming_up() -> None:
    """Batches whose ids per feature always differ never finish a warmup: the ``max_graphs + 1``-th distinct
    structure raises instead of every step running eagerly, silently; structures already seen pass."""
    step = CudaGraphTrainStep(torch.nn.Linear(1, 1), max_graphs=2)
    for n in (10, 11):
        step._admit(("s", (n,)))
        step._warm[("s", (n,))] = 1  # what a warmup step records
    step._admit(("s", (10,)))
    with pytest.raises(ValueError, match=r"3 distinct batch structures .* max_graphs=2: .*multi-hot"):
        step._admit(("s", (12,)))


def test_graph_pipeline_order_and_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's bookkeeping on CPU (streams stubbed, the graph step faked by one that overwrites its output
    buffer each call, as a replay does): every batch is trained once and in order, the iterator is read one batch
    ahead (the next batch is copied while a step runs), each returned output keeps its own step's value, and the end
    of the data raises StopIteration."""
    from torchrec_memcom.distributed import cuda_graph_pipeline

    class _Stream:
        def wait_stream(self, other: object) -> None:
            pass

    class _FakeStep:
        def __init__(self, *args: object) -> None:
            self.buffer = torch.zeros(1)
            self.seen: List[float] = []
            self.flushed = 0

        def __call__(self, batch: torch.Tensor) -> tuple:
            self.seen.append(float(batch))
            self.buffer.fill_(float(batch) * 10)  # the graph's output, overwritten by the next replay
            return (self.buffer, "aux")

        def flush(self) -> None:
            self.flushed += 1

    monkeypatch.setattr(cuda_graph_pipeline, "CudaGraphTrainStep", _FakeStep)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: _Stream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(cuda_graph_pipeline, "_record_stream", lambda obj, stream: None)
    monkeypatch.setattr(cuda_graph_pipeline, "_to", lambda obj, device: obj.clone())  # (no GPU to copy to)
    read: List[int] = []

    def batches():
        for i in range(4):
            read.append(i)
            yield torch.tensor(float(i))

    pipe = cuda_graph_pipeline.CudaGraphTrainPipeline(torch.nn.Linear(1, 1), None, torch.device("cuda"))
    it, outputs = batches(), []
    outputs.append(pipe.progress(it))
    assert read == [0, 1]  # the next batch was read (and copied) during the first step
    while True:
        try:
            outputs.append(pipe.progress(it))
        except StopIteration:
            break
    assert pipe.step.seen == [0.0, 1.0, 2.0, 3.0]
    assert [float(out[0]) for out in outputs] == [0.0, 10.0, 20.0, 30.0] and outputs[0][1] == "aux"
    assert pipe.detach() is pipe.model and pipe.step.flushed == 1
