# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Per-rank body of the checkpoint test (runs in ``tests.distributed.world.World`` workers): train a sharded DLRM a
step and save it with DCP in both checkpoint layouts."""

from typing import Any, Dict

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torchrec import KeyedJaggedTensor
from torchrec.datasets.utils import Batch

from tests.inference.models import DENSE_IN, make_batch, make_dlrm, mixed_tables

GLOBAL_BATCH = 8


def global_batch(seed: int) -> Batch:
    tables = mixed_tables()
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(GLOBAL_BATCH, DENSE_IN, generator=g)
    return Batch(
        dense_features=dense,
        sparse_features=make_batch(tables, GLOBAL_BATCH, seed=seed),
        labels=(dense[:, 0] > 0).float(),
    )


def rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows ``[start, stop)`` of a batch."""
    keys, values, lengths = [], [], []
    for key, jt in batch.sparse_features.to_dict().items():
        offsets = jt.offsets()
        keys.append(key)
        values.append(jt.values()[int(offsets[start]) : int(offsets[stop])])
        lengths.append(jt.lengths()[start:stop])
    kjt = KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))
    return Batch(dense_features=batch.dense_features[start:stop], sparse_features=kjt, labels=batch.labels[start:stop])


def train_and_save(rank: int, world_size: int, top_level: str, nested: str, seed: int) -> Dict[str, Any]:
    """Shards a trained-looking DLRM (MEmCom row-wise), trains one fused-SGD step, saves DCP checkpoints with the
    model state at the top level (``torchrec_memcom.distributed.checkpoint.save``) and under ``"model"`` (the
    recipes' layout); returns the gathered full state (rank 0) and this rank's logits on an evaluation batch."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingEnv

    from torchrec_memcom.distributed import get_sharders
    from torchrec_memcom.distributed.checkpoint import load_unsharded_state_dict, save, unsharded_state_dict
    from torchrec_memcom.distributed.planner import CompressedEmbeddingShardingPlanner

    tables = mixed_tables()
    reference = make_dlrm(tables, seed=seed)
    model = make_dlrm(tables, seed=seed, device="meta")
    fused = {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": 0.5}
    sharders = get_sharders(fused_params=fused)
    planner = CompressedEmbeddingShardingPlanner(
        topology=Topology(world_size=world_size, compute_device="cpu", local_world_size=world_size),
        batch_size=GLOBAL_BATCH // world_size,
        constraints={"m": ParameterConstraints(sharding_types=["row_wise"], compute_kernels=["fused"])},
        fused_params=fused,
    )
    group = dist.GroupMember.WORLD
    plan = planner.collective_plan(model, sharders, group)
    env = ShardingEnv.from_process_group(group)
    dmp = DistributedModelParallel(module=model, env=env, device=torch.device("cpu"), plan=plan, sharders=sharders)
    load_unsharded_state_dict(dmp, reference.state_dict())
    per_rank = GLOBAL_BATCH // world_size
    loss, _ = dmp(rows(global_batch(seed=31), rank * per_rank, (rank + 1) * per_rank))
    loss.backward()  # the fused optimizer updates the sharded tables in backward
    save(dmp, top_level)
    dcp.save({"model": dmp.state_dict(), "trainer": {"step": torch.tensor(1)}}, checkpoint_id=nested)
    full = unsharded_state_dict(dmp)
    with torch.no_grad():
        _, (_, logits, _) = dmp(rows(global_batch(seed=32), rank * per_rank, (rank + 1) * per_rank))
    return {"state": full, "logits": logits.detach().cpu()}
