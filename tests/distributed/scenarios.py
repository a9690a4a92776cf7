# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Per-rank bodies of the multi-process tests (run in ``tests.distributed.world.World`` workers).

Each compares a sharded module against an unsharded copy of itself used as plain-PyTorch reference: same initial
weights, the global batch split evenly over ranks, TorchRec's gradient semantics (mean over ranks: the reference
loss is the global loss / W), and one optimizer step: the fused one for sharded tables, ``torch.optim`` on the
reference.
"""

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv, ShardingType
from torchrec.modules.embedding_configs import PoolingType
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)
from torchrec_memcom.distributed import get_sharders
from torchrec_memcom.distributed.checkpoint import load_unsharded_state_dict
from torchrec_memcom.distributed.planner import CompressedEmbeddingShardingPlanner

LR = 0.1
EPS = 1e-8
BATCH_PER_RANK = 3


def device_for(rank: int) -> torch.device:
    return torch.device(f"cuda:{rank}") if dist.get_backend() == "nccl" else torch.device("cpu")


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
    def __init__(self, ebc: nn.Module) -> None:
        super().__init__()
        self.ebc = ebc

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.ebc(kjt).values()


def fused_params(optimizer: str) -> Dict[str, Any]:
    if optimizer == "sgd":
        return {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": LR}
    return {"optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": LR, "eps": EPS}


def reference_optimizer(params: Any, optimizer: str) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=LR)
    return torch.optim.Adagrad(params, lr=LR, eps=EPS)


def shard(
    model: nn.Module,
    world_size: int,
    device: torch.device,
    sharding_type: Optional[str],
    optimizer: str = "sgd",
    constraints: Optional[Dict[str, ParameterConstraints]] = None,
    batch_size: int = BATCH_PER_RANK,
) -> DistributedModelParallel:
    """Plans (with our planner and sharders) and wraps ``model`` in DMP; ``sharding_type`` forces one type."""
    fp = fused_params(optimizer)
    sharders = get_sharders(fused_params=fp)
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
        topology=Topology(world_size=world_size, compute_device=device.type, local_world_size=world_size),
        batch_size=batch_size,
        constraints=constraints,
        fused_params=fp,
    )
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
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
) -> Dict[str, Any]:
    """Forward, backward and ``steps`` optimizer steps of a sharded module equal the unsharded reference."""
    device = device_for(rank)
    tables = make_tables(method, PoolingType[pooling])
    model, reference = build_pair(tables, weighted)
    dmp = shard(model, world_size, device, sharding_type, optimizer)
    load_unsharded_state_dict(dmp, reference.state_dict())
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
    return {"checked": checked, "plan": str(dmp.plan)}
