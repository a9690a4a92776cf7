# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Per-rank bodies of the multi-process tests (run in ``tests.distributed.world.World`` workers).

Each compares a sharded module against an unsharded copy of itself used as plain-PyTorch reference: same initial
weights, the global batch split evenly over ranks, TorchRec's gradient semantics (mean over ranks: the reference
loss is the global loss / W), and one optimizer step: the fused one for sharded tables, ``torch.optim`` on the
reference.
"""

import contextlib
import copy
import inspect
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed.comm import get_local_size
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv, ShardingType
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse import jagged_tensor

from tests.distributed.world import CUDA_WORLD_ENV
from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)
from torchrec_memcom.benchmarks.measure import host_syncs
from torchrec_memcom.configs import LowRankEmbeddingBagConfig
from torchrec_memcom.distributed import _compat, get_sharders
from torchrec_memcom.distributed.checkpoint import load_unsharded_state_dict
from torchrec_memcom.distributed.planner import CompressedEmbeddingShardingPlanner, place_on_device
from torchrec_memcom.ops import ONE_SLOTS

LR = 0.1
EPS = 1e-8
BATCH_PER_RANK = 3


def device_for(rank: int) -> torch.device:
    """The rank's device: the GPU ``World`` made current in a CUDA world (NCCL, or gloo ranks sharing GPUs), else the
    CPU."""
    if os.environ.get(CUDA_WORLD_ENV) == "1":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_device(rank: int, world_size: int) -> Tuple[str, int]:
    """``(device_for(rank), the number of GPUs the rank sees)`` (checks where a world's ranks run)."""
    return str(torch.ones(1, device=device_for(rank)).device), torch.cuda.device_count()


def make_tables(method: str, pooling: PoolingType = PoolingType.SUM, dim: int = 16) -> List[EmbeddingBagConfig]:
    """Two tables (three features) of one method, sized so every sharding type divides evenly on 2 and 4 ranks."""
    common = [
        dict(name="t0", num_embeddings=240, embedding_dim=dim, feature_names=["f0", "f1"], pooling=pooling),
        dict(name="t1", num_embeddings=130, embedding_dim=dim, feature_names=["f2"], pooling=PoolingType.SUM),
    ]
    if method == "memcom":
        return [MEmComEmbeddingBagConfig(**c, num_shared_rows=32, num_buckets=8) for c in common]
    if method == "hash":
        return [HashEmbeddingBagConfig(**c, num_shared_rows=40, num_buckets=4) for c in common]
    if method == "qr":
        return [QREmbeddingBagConfig(**c, num_remainder_rows=12) for c in common]
    if method == "lma":
        return [LMAEmbeddingBagConfig(**c, memory_rows=24, chunk_size=8, memory_group="g") for c in common]
    if method == "lma_mixed":  # a stock table between two tables of one LMA memory, whose features come out together
        stock = dict(name="s", num_embeddings=50, embedding_dim=dim, feature_names=["fs"], pooling=PoolingType.SUM)
        lma = dict(memory_rows=24, chunk_size=8, memory_group="g")
        return [
            LMAEmbeddingBagConfig(**common[0], **lma),
            EmbeddingBagConfig(**stock),
            LMAEmbeddingBagConfig(**common[1], **lma),
        ]
    if method == "lowrank":  # narrow tables: a data-parallel output projection beside the sharded rows
        return [LowRankEmbeddingBagConfig(**c, base_dim=8) for c in common]
    if method == "hash_narrow":
        return [HashEmbeddingBagConfig(**c, num_shared_rows=40, num_buckets=4, base_dim=8) for c in common]
    if method == "stock":
        return [EmbeddingBagConfig(**c) for c in common]
    raise ValueError(method)


def make_batch(tables: List[EmbeddingBagConfig], batch: int, weighted: bool, seed: int) -> KeyedJaggedTensor:
    """A seeded KJT (pooling 0-3, empty bags included) over every feature of ``tables``."""
    g = torch.Generator().manual_seed(seed)
    keys, values, lengths = [], [], []
    for t in tables:
        for f in t.feature_names:
            ln = torch.randint(0, 4, (batch,), generator=g)
            keys.append(f)
            lengths.append(ln)
            values.append(torch.randint(0, t.num_embeddings, (int(ln.sum()),), generator=g))
    v = torch.cat(values)
    w = torch.rand(v.numel(), generator=g) + 0.5 if weighted else None
    return KeyedJaggedTensor(keys=keys, values=v, lengths=torch.cat(lengths), weights=w)


def slice_batch(kjt: KeyedJaggedTensor, start: int, stop: int) -> KeyedJaggedTensor:
    """Rows ``[start, stop)`` of every feature."""
    keys, values, lengths, weights = [], [], [], []
    for k, jt in kjt.to_dict().items():
        offsets = jt.offsets()
        lo, hi = int(offsets[start]), int(offsets[stop])
        keys.append(k)
        values.append(jt.values()[lo:hi])
        lengths.append(jt.lengths()[start:stop])
        if kjt.weights_or_none() is not None:
            weights.append(jt.weights()[lo:hi])
    return KeyedJaggedTensor(
        keys=keys,
        values=torch.cat(values),
        lengths=torch.cat(lengths),
        weights=torch.cat(weights) if weights else None,
    )


class Wrap(nn.Module):
    """The collection's pooled features in its tables' order, read by name (a sharded collection's keys may come in
    another order)."""

    def __init__(self, ebc: nn.Module) -> None:
        super().__init__()
        self.ebc = ebc
        self.keys = [f for t in ebc.embedding_bag_configs() for f in t.feature_names]
        self.last_keys: List[str] = []  # the keys of the collection's last output, in the order it gave them

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        out = self.ebc(kjt)
        self.last_keys = out.keys()
        pooled = out.to_dict()
        return torch.cat([pooled[k] for k in self.keys], dim=1)


def fused_params(optimizer: str) -> Dict[str, Any]:
    if optimizer == "sgd":
        return {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": LR}
    if optimizer == "rowwise_adagrad":
        return {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": LR, "eps": EPS}
    return {"optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": LR, "eps": EPS}


class RowwiseAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad written out (FBGEMM's EXACT_ROWWISE_ADAGRAD): per row of a 2-D parameter (per element of a
    1-D one) s += mean(g ** 2) over the row, p -= lr * g / (sqrt(s) + eps). Rows whose gradient is zero do not move,
    as in FBGEMM, which updates only the rows a batch reads. TorchRec's ``RowWiseAdagrad`` is this rule for 2-D
    parameters only (MEmCom's ``w`` is 1-D, which Adagrad covers): ``test_sharding`` checks this one against both."""

    def __init__(self, params: Any, lr: float, eps: float) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.view(p.shape[0], -1)
                state = self.state[p].setdefault("sum", torch.zeros(p.shape[0], dtype=p.dtype, device=p.device))
                state += (g * g).mean(dim=1)
                p -= (group["lr"] / (state.sqrt() + group["eps"])).view(-1, *[1] * (p.dim() - 1)) * p.grad


def reference_optimizer(params: Any, optimizer: str) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=LR)
    if optimizer == "rowwise_adagrad":
        return RowwiseAdagrad(params, lr=LR, eps=EPS)
    return torch.optim.Adagrad(params, lr=LR, eps=EPS)


def shard(
    model: nn.Module,
    world_size: int,
    device: torch.device,
    sharding_type: Optional[str],
    optimizer: str = "sgd",
    constraints: Optional[Dict[str, ParameterConstraints]] = None,
    batch_size: int = BATCH_PER_RANK,
    lma_raw_ids: Optional[bool] = None,
    memcom_rows_in_transform: bool = True,
) -> DistributedModelParallel:
    """Plans (with our planner and sharders) and wraps ``model`` in DMP; ``sharding_type`` forces one type."""
    fp = fused_params(optimizer)
    sharders = get_sharders(fused_params=fp, lma_raw_ids=lma_raw_ids, memcom_rows_in_transform=memcom_rows_in_transform)
    if constraints is None and sharding_type is not None:
        kernel = "dense" if sharding_type == ShardingType.DATA_PARALLEL.value else "fused"
        constraints = {
            t.name: ParameterConstraints(
                sharding_types=[sharding_type],
                compute_kernels=[kernel],
                min_partition=4 if sharding_type in ("column_wise", "table_column_wise") else None,
            )
            for t in model.ebc.embedding_bag_configs()
        }
    planner = CompressedEmbeddingShardingPlanner(
        topology=Topology(
            world_size=world_size,
            compute_device=device.type,
            local_world_size=get_local_size(world_size),
        ),
        batch_size=batch_size,
        constraints=constraints,
        fused_params=fp,
    )
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    if device.type == "cuda" and world_size > torch.cuda.device_count():  # gloo ranks sharing GPU 0 (``World``)
        plan = place_on_device(plan, device)
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=device,
        plan=plan,
        sharders=sharders,
    )


def sharded_optimizer(dmp: DistributedModelParallel, optimizer: str) -> CombinedOptimizer:
    """The fused optimizers plus ``torch.optim`` over the rest (data-parallel tables, dense layers)."""
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    optimizers: List[Any] = [dmp.fused_optimizer]
    if dense_params:
        optimizers.append(KeyedOptimizerWrapper(dense_params, lambda ps: reference_optimizer(ps, optimizer)))
    return CombinedOptimizer(optimizers)


def assert_state_matches(sharded: Dict[str, Any], reference: Dict[str, torch.Tensor], tol: float = 1e-5) -> int:
    """Every local shard of ``sharded`` equals the matching slice of the full ``reference`` tensor."""
    checked = 0
    for key, dst in sharded.items():
        if not isinstance(dst, torch.Tensor):  # the tables' description (extra state)
            assert dst == reference[key], key
            continue
        ref = reference[key]
        pieces = (
            [(s.tensor, s.metadata.shard_offsets) for s in dst.local_shards()]
            if isinstance(dst, ShardedTensor)
            else [(dst, [0] * ref.dim())]
        )
        for local, offsets in pieces:
            index = tuple(slice(o, o + n) for o, n in zip(offsets, local.shape))
            torch.testing.assert_close(local.detach().cpu(), ref[index].detach().cpu(), atol=tol, rtol=tol, msg=key)
            checked += 1
    return checked


def graph_nodes(t: torch.Tensor) -> List[str]:
    """The type names of every node in ``t``'s autograd graph."""
    names, seen, todo = [], set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names


def build_pair(tables: List[EmbeddingBagConfig], weighted: bool, seed: int = 0) -> Tuple[Wrap, Wrap]:
    """(model to shard, reference copy) built on CPU with the same seeded weights."""
    torch.manual_seed(seed)
    reference = Wrap(CompressedEmbeddingBagCollection(tables, is_weighted=weighted))
    with torch.no_grad():  # make entity weights non-trivial so their gradients and updates show
        for name, p in reference.named_parameters():
            if "entity_weights" in name:
                p.uniform_(0.5, 1.5)
    return copy.deepcopy(reference), reference


def sharded_matches_unsharded(
    rank: int,
    world_size: int,
    method: str,
    sharding_type: str,
    weighted: bool = False,
    pooling: str = "SUM",
    optimizer: str = "sgd",
    steps: int = 2,
    lma_raw_ids: Optional[bool] = None,
    memcom_rows_in_transform: bool = True,
) -> Dict[str, Any]:
    """Forward, backward and ``steps`` optimizer steps of a sharded module equal the unsharded reference."""
    device = device_for(rank)
    tables = make_tables(method, PoolingType[pooling])
    model, reference = build_pair(tables, weighted)
    dmp = shard(
        model,
        world_size,
        device,
        sharding_type,
        optimizer,
        lma_raw_ids=lma_raw_ids,
        memcom_rows_in_transform=memcom_rows_in_transform,
    )
    raw = getattr(dmp.module.ebc, "_raw", frozenset())
    raw_ids = world_size > 1 if lma_raw_ids is None else lma_raw_ids  # the sharder's default: across ranks only
    expect_raw = method.startswith("lma") and raw_ids and sharding_type in ("table_wise", "column_wise")
    assert bool(raw) == expect_raw, (raw, method, sharding_type)
    # one rank (every input dist the identity): the transform computes MEmCom's rows and entity-weight slots (nothing
    # to do after the dist), unless the sharder is told to compute them after the dist
    slots_in_transform = getattr(dmp.module.ebc, "_entity_slots", None) is not None
    assert slots_in_transform == (method == "memcom" and world_size == 1 and memcom_rows_in_transform)
    # these small tables take the int32 lookup: the transform writes int32 ids, TorchRec's kernels read them as such
    assert dmp.module.ebc._index_dtype == torch.int32
    if sharding_type != ShardingType.DATA_PARALLEL.value:  # (TorchRec's dense kernels convert to their own type)
        kernels = [k for k, _ in _compat.fused_tbes(dmp.module.ebc._embedding_bag_collection)]
        assert all(k._embedding_table_index_type == torch.int32 for k in kernels), sharding_type  # (or none here)
    load_unsharded_state_dict(dmp, reference.state_dict())
    # the fused optimizer's keys name the model's parameters (its tables' state, and w's for MEmCom)
    keys = set(dmp.fused_optimizer.params)
    assert keys <= set(dmp.state_dict()), (sorted(keys), sorted(dmp.state_dict()))
    assert any(".entity_weights." in k for k in keys) == (method == "memcom"), sorted(keys)
    opt = sharded_optimizer(dmp, optimizer)
    ref_opt = reference_optimizer(reference.parameters(), optimizer)
    lo, hi = rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK
    for step in range(steps):
        batch = make_batch(tables, BATCH_PER_RANK * world_size, weighted, seed=100 + step)
        grad = torch.randn(
            BATCH_PER_RANK * world_size,
            sum(t.embedding_dim * t.num_features() for t in tables),
            generator=torch.Generator().manual_seed(200 + step),
        )
        out = dmp(slice_batch(batch, lo, hi).to(device))
        ref_out = reference(batch)
        torch.testing.assert_close(out.detach().cpu(), ref_out.detach()[lo:hi], atol=1e-5, rtol=1e-5)
        (out * grad[lo:hi].to(device)).sum().backward()
        opt.step()
        opt.zero_grad()
        ((ref_out * grad).sum() / world_size).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    checked = assert_state_matches(dmp.state_dict(), reference.state_dict(), tol=1e-4)
    out = dmp(slice_batch(batch, lo, hi).to(device))
    torch.testing.assert_close(out.detach().cpu(), reference(batch).detach()[lo:hi], atol=1e-4, rtol=1e-4)
    inner = dmp.module.ebc._embedding_bag_collection
    return {
        "gradient_scaling_nodes": graph_nodes(out).count("CommOpGradientScalingBackward"),
        "keys": dmp.module.last_keys,
        "checked": checked,
        "plan": str(dmp.plan),
        "input_dists": [type(d).__name__ for d in inner._input_dists],
        "slots_in_transform": slots_in_transform,
    }


# -- mixed DLRM, pipelining, checkpoints ---------------------------------------------------------------------------

DENSE_IN = 4


def make_mixed_tables(dim: int = 16) -> List[EmbeddingBagConfig]:
    """One table of every kind (same dim, as DLRM needs)."""
    return [
        MEmComEmbeddingBagConfig(
            name="m", num_embeddings=240, embedding_dim=dim, feature_names=["fm"], num_shared_rows=32, num_buckets=8
        ),
        LMAEmbeddingBagConfig(
            name="l", num_embeddings=200, embedding_dim=dim, feature_names=["fl"], memory_rows=24, chunk_size=8
        ),
        HashEmbeddingBagConfig(
            name="h", num_embeddings=300, embedding_dim=dim, feature_names=["fh"], num_shared_rows=40
        ),
        QREmbeddingBagConfig(
            name="q", num_embeddings=150, embedding_dim=dim, feature_names=["fq"], num_remainder_rows=12
        ),
        EmbeddingBagConfig(name="s", num_embeddings=50, embedding_dim=dim, feature_names=["fs"]),
    ]


MIXED_CONSTRAINTS = {
    "m": ("row_wise", "fused"),
    "l": ("row_wise", "fused"),
    "h": ("column_wise", "fused"),
    "q": ("table_wise", "fused"),
    "s": ("table_wise", "fused"),
}


def mixed_constraints(**sharding_types: str) -> Dict[str, ParameterConstraints]:
    """``MIXED_CONSTRAINTS``, with the sharding types given by table name instead (``m="table_wise"``)."""
    return {
        name: ParameterConstraints(sharding_types=[sharding_types.get(name, st)], compute_kernels=[k], min_partition=8)
        for name, (st, k) in MIXED_CONSTRAINTS.items()
    }


def make_dlrm(tables: List[EmbeddingBagConfig], device: torch.device, seed: int) -> nn.Module:
    from torchrec.models.dlrm import DLRM, DLRMTrain

    torch.manual_seed(seed)
    ebc = CompressedEmbeddingBagCollection(tables, device=device)
    dense_device = torch.device("cpu") if device.type == "meta" else device
    return DLRMTrain(
        DLRM(
            embedding_bag_collection=ebc,
            dense_in_features=DENSE_IN,
            dense_arch_layer_sizes=[8, tables[0].embedding_dim],
            over_arch_layer_sizes=[8, 1],
            dense_device=dense_device,
        )
    )


def make_dlrm_batches(tables: List[EmbeddingBagConfig], global_batch: int, steps: int, seed: int) -> List[Any]:
    """Global batches (torchrec ``Batch``) with a learnable label."""
    from torchrec.datasets.utils import Batch

    out = []
    for step in range(steps):
        sparse = make_batch(tables, global_batch, weighted=False, seed=seed + step)
        g = torch.Generator().manual_seed(seed + 1000 + step)
        dense = torch.randn(global_batch, DENSE_IN, generator=g)
        labels = (dense[:, 0] > 0).float()
        out.append(Batch(dense_features=dense, sparse_features=sparse, labels=labels))
    return out


def local_batch(batch: Any, rank: int, per_rank: int, device: torch.device) -> Any:
    from torchrec.datasets.utils import Batch

    lo, hi = rank * per_rank, (rank + 1) * per_rank
    return Batch(
        dense_features=batch.dense_features[lo:hi],
        sparse_features=slice_batch(batch.sparse_features, lo, hi),
        labels=batch.labels[lo:hi],
    ).to(device)


def sharded_dlrm(
    rank: int,
    world_size: int,
    reference_state: Dict[str, torch.Tensor],
    tables: List[EmbeddingBagConfig],
    sharding_types: Dict[str, str],
    optimizer: str = "sgd",
) -> Tuple[DistributedModelParallel, CombinedOptimizer]:
    device = device_for(rank)
    model = make_dlrm(tables, torch.device("meta"), seed=1)
    dmp = shard(model, world_size, device, None, optimizer, constraints=mixed_constraints(**sharding_types))
    load_unsharded_state_dict(dmp, reference_state)
    return dmp, sharded_optimizer(dmp, optimizer)


def dlrm_pipeline_matches_reference(
    rank: int, world_size: int, steps: int = 4, memcom_sharding: str = "row_wise"
) -> Dict[str, Any]:
    """DLRM with every table kind, built on meta: the TrainPipelineSparseDist losses, the plain DMP loop's losses
    and the unsharded reference's (torch.optim SGD on the global batch) agree step by step."""
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    device = device_for(rank)
    tables = make_mixed_tables()
    reference = make_dlrm(tables, torch.device("cpu"), seed=0)
    batches = make_dlrm_batches(tables, BATCH_PER_RANK * world_size, steps, seed=7)
    lma = reference.model.sparse_arch.embedding_bag_collection
    lma.fit_signatures([b.sparse_features for b in batches])
    state = reference.state_dict()

    plain, plain_opt = sharded_dlrm(rank, world_size, state, tables, {"m": memcom_sharding})
    piped, piped_opt = sharded_dlrm(rank, world_size, state, tables, {"m": memcom_sharding})
    pipeline = TrainPipelineSparseDist(piped, piped_opt, device)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=LR)

    def mean_over_ranks(x: torch.Tensor) -> float:
        x = x.detach().clone().to(device)
        dist.all_reduce(x)
        return float(x) / world_size

    local = [local_batch(b, rank, BATCH_PER_RANK, device) for b in batches]
    it = iter(local)
    losses: Dict[str, List[float]] = {"reference": [], "plain": [], "pipeline": []}
    for step in range(steps):
        loss, _ = plain(local[step])
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad()
        losses["plain"].append(mean_over_ranks(loss))
        piped_loss = pipeline.progress(it)[0]  # progress returns DLRMTrain's (loss, logits, labels)
        losses["pipeline"].append(mean_over_ranks(piped_loss))
        ref_loss, _ = reference(batches[step])
        ref_loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        losses["reference"].append(float(ref_loss))
    for name in ("plain", "pipeline"):
        torch.testing.assert_close(
            torch.tensor(losses[name]), torch.tensor(losses["reference"]), atol=1e-5, rtol=1e-5, msg=name
        )
    assert_state_matches(plain.state_dict(), reference.state_dict(), tol=1e-4)
    # whether the pipelined model's transform computed MEmCom's rows and slots (one rank) or its ranks did
    sharded = [m for m in piped.modules() if hasattr(m, "_entity_slots")]
    return {**losses, "slots_in_transform": [m._entity_slots is not None for m in sharded]}


def mixed_wrap(device: torch.device, seed: int) -> Wrap:
    torch.manual_seed(seed)
    return Wrap(CompressedEmbeddingBagCollection(make_mixed_tables(), device=device))


def eval_batch(global_batch: int) -> KeyedJaggedTensor:
    return make_batch(make_mixed_tables(), global_batch, weighted=False, seed=999)


def checkpoint_roundtrip(
    rank: int, world_size: int, path: str, action: str, seed: int = 0, train_steps: int = 2
) -> torch.Tensor:
    """``save``: shard, load the seeded unsharded state, train a little, save with DCP; ``load``: shard a model with
    other weights and load the checkpoint. Either way, return this rank's outputs on a fixed evaluation batch."""
    from torchrec_memcom.distributed import checkpoint

    device = device_for(rank)
    dmp = shard(mixed_wrap(torch.device("meta"), seed), world_size, device, None, constraints=mixed_constraints())
    per_rank = 8 // world_size
    if action == "save":
        reference = mixed_wrap(torch.device("cpu"), seed)
        lma = reference.ebc
        lma.fit_signatures([eval_batch(16)])
        load_unsharded_state_dict(dmp, reference.state_dict())
        opt = sharded_optimizer(dmp, "sgd")
        for step in range(train_steps):
            batch = make_batch(make_mixed_tables(), per_rank * world_size, False, seed=50 + step)
            out = dmp(slice_batch(batch, rank * per_rank, (rank + 1) * per_rank).to(device))
            out.square().sum().backward()
            opt.step()
            opt.zero_grad()
        checkpoint.save(dmp, path)
    elif action == "load":
        checkpoint.load(dmp, path)
    else:
        raise ValueError(action)
    with torch.no_grad():
        out = dmp(slice_batch(eval_batch(8), rank * per_rank, (rank + 1) * per_rank).to(device))
    return out.cpu()


def memcom_weight_grads_only(rank: int, world_size: int) -> Dict[str, Any]:
    """The per-sample-weight gradients FBGEMM hands to MEmCom's weight update are 0 at the other features'
    positions (their constant-1 slots; FBGEMM's ``feature_requires_grad``) and not at MEmCom's."""
    from torchrec_memcom.distributed.entity_weights import EntityWeightOptimizer

    device = device_for(rank)
    model, _ = build_pair(make_mixed_tables(), weighted=False)
    dmp = shard(model, world_size, device, None, constraints=mixed_constraints())
    seen: List[Tuple[torch.Tensor, torch.Tensor]] = []
    original = EntityWeightOptimizer.update

    def record(self: EntityWeightOptimizer, index: torch.Tensor, grad: torch.Tensor) -> None:
        seen.append((index.cpu().long(), grad.detach().cpu()))
        original(self, index, grad)

    EntityWeightOptimizer.update = record  # type: ignore[method-assign]
    try:
        batch = make_batch(make_mixed_tables(), BATCH_PER_RANK * world_size, False, seed=7)
        lo, hi = rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK
        dmp(slice_batch(batch, lo, hi).to(device)).square().sum().backward()
    finally:
        EntityWeightOptimizer.update = original  # type: ignore[method-assign]
    ones_start = dmp.module.ebc.entity_weights_local.numel() - ONE_SLOTS
    index = torch.cat([i for i, _ in seen])
    grad = torch.cat([g for _, g in seen])
    constant = index >= ones_start
    return {
        "constant": int(constant.sum()),
        "constant_nonzero": int((grad[constant] != 0).sum()),
        "memcom": int((~constant).sum()),
        "memcom_nonzero": int((grad[~constant] != 0).sum()),
    }


@contextlib.contextmanager
def counting_length_reads() -> Iterator[List[int]]:
    """Counts, in ``[0]``, the KJTs' lengths-per-key computations in the block: TorchRec's
    ``_maybe_compute_length_per_key`` without a cached value, a host read of the lengths (on CUDA a synchronisation)."""
    original = jagged_tensor._maybe_compute_length_per_key
    signature = inspect.signature(original)
    count = [0]

    def counted(*args: Any, **kwargs: Any) -> List[int]:
        bound = signature.bind(*args, **kwargs).arguments
        if bound["length_per_key"] is None and len(bound["keys"]) > 0:
            count[0] += 1
        return original(*args, **kwargs)

    jagged_tensor._maybe_compute_length_per_key = counted
    try:
        yield count
    finally:
        jagged_tensor._maybe_compute_length_per_key = original


def _training_counts(ebc: nn.Module, rank: int, world_size: int, sharding_type: str, steps: int = 4) -> Dict[str, Any]:
    """Over ``steps`` training steps (forward, backward, fused row-wise Adagrad; a new batch each step) of ``ebc``
    sharded with ``sharding_type``, after 2 uncounted ones (which compile and cache), per step: ``syncs`` (host-device
    synchronisations) and their ``sync_sites`` (``measure.host_syncs``; ``None`` on the CPU), and ``length_reads``
    (KJT lengths-per-key computations, ``counting_length_reads``)."""
    device = device_for(rank)
    tables = ebc.embedding_bag_configs()
    dmp = shard(Wrap(ebc), world_size, device, sharding_type, "rowwise_adagrad")
    opt = sharded_optimizer(dmp, "rowwise_adagrad")
    lo, hi = rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK
    global_batches = [make_batch(tables, BATCH_PER_RANK * world_size, False, seed=s) for s in range(2 + steps)]
    batches = iter([slice_batch(b, lo, hi).to(device) for b in global_batches])

    def step() -> None:
        dmp(next(batches)).square().sum().backward()
        opt.step()
        opt.zero_grad()

    step()
    step()
    with counting_length_reads() as reads:
        syncs = host_syncs(step, steps, device)
        if syncs is None:  # (not CUDA: nothing ran)
            for _ in range(steps):
                step()
    return {
        "syncs": None if syncs is None else syncs["per_step"],
        "sync_sites": None if syncs is None else syncs["sites"],
        "length_reads": reads[0] / steps,
    }


def step_counts_against_stock(rank: int, world_size: int, method: str, sharding_type: str) -> Dict[str, Any]:
    """``_training_counts`` of the sharded compressed collection and of TorchRec's own EBC over tables of the same
    shapes, both with ``sharding_type``: ``{"stock": ..., method: ...}``."""
    torch.manual_seed(0)
    stock = _training_counts(EmbeddingBagCollection(make_tables("stock")), rank, world_size, sharding_type)
    compressed = CompressedEmbeddingBagCollection(make_tables(method))
    return {"stock": stock, method: _training_counts(compressed, rank, world_size, sharding_type)}


def assert_busiest_rank_no_more_than_stock(results: List[Dict[str, Any]], method: str, count: str) -> None:
    """``count`` per step (``"syncs"`` or ``"length_reads"``) of ``step_counts_against_stock``'s per-rank
    ``results``, on the busiest rank: stock's at least 1 (the counter sees TorchRec's own), ``method``'s no
    larger. The busiest rank, not rank by rank: a rank that owns no table of a table-wise plan (stock's 2 tables on 4
    ranks, where QR's 4 physical tables fill every rank) skips TorchRec's read of what it received."""
    stock, ours = (max(r[kind][count] for r in results) for kind in ("stock", method))
    assert stock >= 1, results
    assert ours <= stock, results
