# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Per-rank bodies of the CUDA-graph step tests (one NCCL rank): replays against the unsharded reference, the
deferred checks, learning-rate changes, and TorchRec's own sharded EBC (not capturable)."""

import copy
from typing import Any, Dict, List, Tuple

import pytest
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from tests.distributed import scenarios
from torchrec_memcom.distributed import CudaGraphTrainPipeline, CudaGraphTrainStep, GraphCaptureError, cuda_graph_step
from torchrec_memcom.distributed.checkpoint import load_unsharded_state_dict
from torchrec_memcom.distributed.cuda_graph_step import DDP_WARMUP_STEPS

BATCH = 8


def fixed_batch(tables: List[Any], seed: int, bad_id: bool = False, shift: bool = False) -> KeyedJaggedTensor:
    """Every feature has 2 * BATCH ids in bags of 0-4 ids, the bag sizes shuffled per batch (fixed per-feature totals,
    changing offsets); ``bad_id``: one id of the first feature is its table's size; ``shift``: the first feature
    gives one id to the second (same total, other per-feature counts)."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.tensor([0, 1, 2, 3, 4, 2, 2, 2])  # 16 ids in 8 bags
    keys, values, lengths = [], [], []
    for t in tables:
        for f in t.feature_names:
            ln = pattern[torch.randperm(BATCH, generator=g)]
            keys.append(f)
            lengths.append(ln)
            values.append(torch.randint(0, t.num_embeddings, (int(ln.sum()),), generator=g))
    if bad_id:
        values[0][0] = tables[0].num_embeddings
    if shift:
        i = int(torch.nonzero(lengths[0])[0])
        lengths[0][i] -= 1
        lengths[1][0] += 1
    return KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))


class FixedTrain(nn.Module):
    """``kjt -> (loss, pooled)`` with ``loss = sum(pooled * R)`` for a fixed ``R`` (as the benchmark's model)."""

    def __init__(self, dmp: nn.Module, weights: torch.Tensor) -> None:
        super().__init__()
        self.dmp = dmp
        self._weights = weights

    def forward(self, kjt: KeyedJaggedTensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.dmp(kjt)
        return _loss(out, self._weights), out


class Train(nn.Module):
    """``(kjt, grad) -> (loss, pooled)`` with ``loss = sum(pooled * grad)`` around a sharded ``Wrap``."""

    def __init__(self, dmp: nn.Module) -> None:
        super().__init__()
        self.dmp = dmp

    def forward(self, kjt: KeyedJaggedTensor, grad: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.dmp(kjt)
        return _loss(out, grad), out


def _loss(out: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return (out * grad).sum()


def _grad(tables: List[Any], seed: int) -> torch.Tensor:
    width = sum(t.embedding_dim * t.num_features() for t in tables)
    return torch.randn(BATCH, width, generator=torch.Generator().manual_seed(seed))


def graph_step_matches_unsharded(
    rank: int, world_size: int, method: str, optimizer: str = "sgd", steps: int = 7, fixed: bool = False
) -> Dict[str, Any]:
    """Training through ``CudaGraphTrainStep`` (2 eager steps, then replays) equals the unsharded reference:
    outputs of every step, then every table, weight and optimizer state (row-wise ... exact Adagrad)."""
    device = scenarios.device_for(rank)
    tables = scenarios.make_tables(method)
    model, reference = scenarios.build_pair(tables, weighted=False)
    dmp = scenarios.shard(model, world_size, device, "table_wise", optimizer, batch_size=BATCH)
    load_unsharded_state_dict(dmp, reference.state_dict())
    fixed_grad = _grad(tables, 20)
    train = FixedTrain(dmp, fixed_grad.to(device)) if fixed else Train(dmp)
    step = CudaGraphTrainStep(train, scenarios.sharded_optimizer(dmp, optimizer), warmup_steps=2)
    ref_opt = scenarios.reference_optimizer(reference.parameters(), optimizer)
    for s in range(steps):
        kjt, grad = fixed_batch(tables, seed=10 + s), fixed_grad if fixed else _grad(tables, 20 + s)
        _, out = step(kjt.to(device)) if fixed else step(kjt.to(device), grad.to(device))
        ref_out = reference(kjt)
        torch.testing.assert_close(out.detach().cpu(), ref_out.detach(), atol=1e-5, rtol=1e-5, msg=f"step {s}")
        _loss(ref_out, grad).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    step.flush()
    checked = scenarios.assert_state_matches(dmp.state_dict(), reference.state_dict(), tol=1e-4)
    return {"checked": checked, "replays": step.replays, "graphs": len(step._graphs)}


def graph_step_follows_lr_change(rank: int, world_size: int, method: str, steps: int = 8) -> Dict[str, Any]:
    """A learning-rate change mid-run: the graph-stepped model stays equal to the same sharded model trained eagerly
    (one eager step at the change, then a new capture)."""
    device = scenarios.device_for(rank)
    tables = scenarios.make_tables(method)
    model, reference = scenarios.build_pair(tables, weighted=False)
    twin = copy.deepcopy(model)
    dmps = [scenarios.shard(m, world_size, device, "table_wise", "adagrad", batch_size=BATCH) for m in (model, twin)]
    for d in dmps:
        load_unsharded_state_dict(d, reference.state_dict())
    opts = [scenarios.sharded_optimizer(d, "adagrad") for d in dmps]
    step = CudaGraphTrainStep(Train(dmps[0]), opts[0], warmup_steps=1)
    for s in range(steps):
        if s == 4:
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = group["lr"] * 0.25
        kjt, grad = fixed_batch(tables, seed=30 + s).to(device), _grad(tables, 40 + s).to(device)
        _, out = step(kjt, grad)
        eager = dmps[1](kjt)
        torch.testing.assert_close(out.detach(), eager.detach(), atol=1e-5, rtol=1e-5, msg=f"step {s}")
        _loss(eager, grad).backward()
        opts[1].step()
        opts[1].zero_grad()
    step.flush()
    checked = scenarios.assert_state_matches(dmps[0].state_dict(), _full(dmps[1]), tol=1e-5)
    return {"checked": checked, "replays": step.replays}


def _full(dmp: Any) -> Dict[str, Any]:
    """One rank's state dict as plain tensors (its shards are whole)."""
    out = {}
    for k, v in dmp.state_dict().items():
        out[k] = v.local_shards()[0].tensor if hasattr(v, "local_shards") else v
    return out


def graph_step_deferred_errors(rank: int, world_size: int) -> Dict[str, Any]:
    """An id out of range, and per-feature id counts other than the graph's, raise once the GPU has run the batch."""
    device = scenarios.device_for(rank)
    tables = scenarios.make_tables("hash")
    model, _ = scenarios.build_pair(tables, weighted=False)
    dmp = scenarios.shard(model, world_size, device, "table_wise", "adagrad", batch_size=BATCH)
    opt = scenarios.sharded_optimizer(dmp, "adagrad")
    messages = {}
    for case in ("bad_id", "shift"):
        step = CudaGraphTrainStep(Train(dmp), opt, warmup_steps=1)
        grad = _grad(tables, 0).to(device)
        for s in range(3):  # eager, capture + replay, replay
            step(fixed_batch(tables, seed=s).to(device), grad)
        step.flush()  # good batches pass
        step(fixed_batch(tables, seed=5, **{case: True}).to(device), grad)  # step 4
        with pytest.raises(ValueError) as e:
            step.flush()
        messages[case] = str(e.value)
        assert "step 4" in messages[case], messages[case]
        step.reset()
    assert "table 't0', feature 'f0'" in messages["bad_id"] and "[0, 240)" in messages["bad_id"], messages
    assert "'f0': 15 ids, the graph's 16" in messages["shift"], messages
    return messages


def torchrec_ebc_not_capturable(rank: int, world_size: int) -> str:
    """TorchRec's own sharded EBC synchronises in its input dist: ``GraphCaptureError`` at the capture."""
    device = scenarios.device_for(rank)
    tables = scenarios.make_tables("stock")
    model = scenarios.Wrap(EmbeddingBagCollection(tables, device=torch.device("meta")))
    dmp = scenarios.shard(model, world_size, device, "table_wise", "adagrad", batch_size=BATCH)
    step = CudaGraphTrainStep(Train(dmp), scenarios.sharded_optimizer(dmp, "adagrad"), warmup_steps=1)
    grad = _grad(tables, 0).to(device)
    step(fixed_batch(tables, seed=0).to(device), grad)
    with pytest.raises(GraphCaptureError) as e:
        step(fixed_batch(tables, seed=1).to(device), grad)
    torch.cuda.synchronize()
    torch.rand(4, device=device)  # the CUDA generator works after the failed capture
    dmp(fixed_batch(tables, seed=2).to(device))  # and the model still runs eagerly
    torch.cuda.synchronize()
    return str(e.value)


def _dlrm_batch(tables: List[Any], seed: int) -> Any:
    from torchrec.datasets.utils import Batch

    dense = torch.randn(BATCH, scenarios.DENSE_IN, generator=torch.Generator().manual_seed(seed))
    return Batch(dense_features=dense, sparse_features=fixed_batch(tables, seed), labels=(dense[:, 0] > 0).float())


def dlrm_graph_step_matches_reference(
    rank: int, world_size: int, on_capture_stream: bool = True, pipeline: bool = False
) -> Dict[str, Any]:
    """A DLRM with every table kind (DMP wraps its dense part in DDP, NCCL all-reduce inside the graph) trained
    through ``CudaGraphTrainStep`` with Adagrad: every step's loss and the final state equal the unsharded reference
    (``torch.optim.Adagrad`` over all of its parameters). ``on_capture_stream=False`` builds the DMP on the default
    stream instead: ``GraphCaptureError`` naming the fix, and the model still trains eagerly after it.
    ``pipeline=True`` trains through ``CudaGraphTrainPipeline`` from an iterator of host batches until it raises
    ``StopIteration``, keeping every returned loss tensor (each must keep its own step's value)."""
    device = scenarios.device_for(rank)
    tables = scenarios.make_mixed_tables()
    reference = scenarios.make_dlrm(tables, torch.device("cpu"), seed=0)
    steps = DDP_WARMUP_STEPS + 3
    batches = [_dlrm_batch(tables, seed=60 + s) for s in range(steps)]
    reference.model.sparse_arch.embedding_bag_collection.fit_signatures([b.sparse_features for b in batches])
    with cuda_graph_step.on_capture_stream(enabled=on_capture_stream):
        # MIXED_CONSTRAINTS: MEmCom and LMA row-wise, hash column-wise, QR and stock table-wise (one rank: every
        # input dist the identity)
        dmp, opt = scenarios.sharded_dlrm(rank, world_size, reference.state_dict(), tables, {}, "adagrad")
    ref_opt = scenarios.reference_optimizer(reference.parameters(), "adagrad")
    losses: Dict[str, List[float]] = {"graph": [], "reference": []}
    for batch in batches:
        ref_loss, _ = reference(batch)
        ref_loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        losses["reference"].append(float(ref_loss))
    if pipeline:
        pipe = CudaGraphTrainPipeline(dmp, opt, device)
        step, it, kept = pipe.step, iter(batches), []
        while True:
            try:
                kept.append(pipe.progress(it)[0])
            except StopIteration:
                break
        pipe.flush()
        losses["graph"] = [float(loss) for loss in kept]
    else:
        step = CudaGraphTrainStep(dmp, opt)
        for s, batch in enumerate(batches):
            if not on_capture_stream and s == DDP_WARMUP_STEPS:
                with pytest.raises(GraphCaptureError) as e:
                    step(batch.to(device))
                torch.rand(4, device=device)  # the CUDA generator works after the failed capture
                loss, _ = dmp(batch.to(device))  # and the model trains eagerly
                loss.backward()
                opt.step()
                opt.zero_grad()
                return {"message": str(e.value), "cause": e.value.cause}
            loss, _ = step(batch.to(device))
            losses["graph"].append(float(loss))
        step.flush()
    torch.testing.assert_close(torch.tensor(losses["graph"]), torch.tensor(losses["reference"]), atol=1e-5, rtol=1e-5)
    checked = scenarios.assert_state_matches(dmp.state_dict(), reference.state_dict(), tol=1e-4)
    # the dense Adagrad's step counters live on the host: the replays count them like eager steps
    ref_steps = {float(s["step"]) for s in ref_opt.state.values()}
    host_steps = {float(s["step"]) for s in opt.state.values() if getattr(s.get("step"), "is_cpu", False)}
    assert ref_steps == {float(steps)} and host_steps == ref_steps, (host_steps, ref_steps)
    return {"checked": checked, "replays": step.replays, "losses": losses}
