# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A rank's share of MEmCom's per-id weights ``w`` in a sharded collection.

Which block of each table's ``w`` the rank owns (row-wise: block ``r`` of ``W``; table-wise: all of it on the table's
rank), the flat local vector that holds those blocks followed by ``ops.ONE_SLOTS`` constant-1 slots, its
ShardedTensor views (state dict, checkpoints, optimizer state), its fused optimizer, and the per-sample weights of
the ids the rank received: after the input dist (the rows kernel, ``ops.memcom_local_rows``) or, where the transform
already wrote the rows and slots (``IdTransform.transform_with_slots``), one gather.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.metadata import ShardMetadata
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardedTensorMetadata, TensorProperties
from torch.distributed._shard.sharding_spec import EnumerableShardingSpec
from torchrec.distributed.types import ParameterSharding, ShardingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.configs import MEmComEmbeddingBagConfig
from torchrec_memcom.distributed import _compat
from torchrec_memcom.distributed.entity_weights import (
    EntityWeightOptimizer,
    entity_weights_at,
    memcom_rows_and_weights,
    rule_for,
    table_slices,
)
from torchrec_memcom.modules.transform import EntitySlots
from torchrec_memcom.ops import ONE_SLOTS

__all__ = ["LocalEntityWeights", "sharded_vector"]


def sharded_vector(
    local: Optional[torch.Tensor], global_size: int, placements: List[str], pg: dist.ProcessGroup
) -> ShardedTensor:
    """A 1-D ShardedTensor of ``global_size`` whose shards are ``global_size / len(placements)`` contiguous blocks,
    block ``i`` at ``placements[i]`` (``"rank:<r>/<device>"``)."""
    block = global_size // len(placements)
    metas = [
        ShardMetadata(shard_offsets=[i * block], shard_sizes=[block], placement=p) for i, p in enumerate(placements)
    ]
    dtype = local.dtype if local is not None else torch.float32
    md = ShardedTensorMetadata(
        shards_metadata=metas, size=torch.Size([global_size]), tensor_properties=TensorProperties(dtype=dtype)
    )
    rank = dist.get_rank(pg)
    shards = [Shard(tensor=local, metadata=m) for m in metas if local is not None and m.placement.rank() == rank]
    return _compat.sharded_tensor(shards, md, pg)


def _owner_placements(ps: ParameterSharding, owners: List[int]) -> List[str]:
    """Where each owner rank keeps its block of a table's ``w``: where the plan put the rank's shard of the table
    (on a GPU that ranks share too, ``planner.place_on_device``)."""
    spec = ps.sharding_spec
    assert isinstance(spec, EnumerableShardingSpec), ps  # row- or table-wise: a shard on every owner
    planned = {s.placement.rank(): str(s.placement) for s in spec.shards if s.placement is not None}
    return [planned[r] for r in owners]


class LocalEntityWeights:
    """MEmCom's ``w`` on one rank (see the module docstring).

    Args:
        tables (Mapping[str, MEmComEmbeddingBagConfig]): the MEmCom tables, by name.
        feature_tables (Mapping[str, str]): each MEmCom physical feature's table.
        plan (Mapping[str, ParameterSharding]): the tables' placement (row-wise or table-wise).
        sources (Mapping[str, torch.Tensor]): each table's unsharded ``w`` (on ``meta``: initialised from the config).
        optimizer_settings (Mapping[str, Tuple[Any, float, float]]): ``_compat.table_optimizer_settings`` of the
            physical tables (``w`` follows its shared table's optimizer and learning rate).
        rank (int), world_size (int), pg (dist.ProcessGroup), device (torch.device): the rank's.
    """

    def __init__(
        self,
        tables: Mapping[str, MEmComEmbeddingBagConfig],
        feature_tables: Mapping[str, str],
        plan: Mapping[str, ParameterSharding],
        sources: Mapping[str, torch.Tensor],
        optimizer_settings: Mapping[str, Tuple[Any, float, float]],
        rank: int,
        world_size: int,
        pg: dist.ProcessGroup,
        device: torch.device,
    ) -> None:
        self.tables = dict(tables)
        self._feature_tables = dict(feature_tables)
        self._rank, self._world_size, self._pg, self._device = rank, world_size, pg, device
        self.owned: Dict[str, range] = {}
        self._owners: Dict[str, List[int]] = {}
        self._placements: Dict[str, List[str]] = {}
        sizes = []
        for name, table in self.tables.items():
            ps = plan[name]
            n_pad = table.bucketed_hash().padded_num_embeddings
            if ps.sharding_type == ShardingType.ROW_WISE.value:
                block = n_pad // world_size
                self._owners[name] = list(range(world_size))
                owned = range(rank * block, (rank + 1) * block)
            else:
                assert ps.ranks is not None
                self._owners[name] = list(ps.ranks)
                owned = range(0, n_pad) if ps.ranks[0] == rank else range(0)
            self._placements[name] = _owner_placements(ps, self._owners[name])
            self.owned[name] = owned
            sizes.append((name, len(owned)))
        self.slices = table_slices(sizes)
        self.ones_slot = sum(n for _, n in sizes)  # first of ONE_SLOTS constant-1 weights of the other features
        self.weight = nn.Parameter(torch.empty(self.ones_slot + ONE_SLOTS, device=device))
        with torch.no_grad():
            self.weight[self.ones_slot :] = 1.0
            for name, owned in self.owned.items():
                local = self.weight[self.slices[name]]
                if sources[name].is_meta:
                    local.fill_(self.tables[name].entity_weight_init)
                else:
                    local.copy_(sources[name][owned.start : owned.stop])
        self.optimizer = self._build_optimizer(optimizer_settings)
        self.weight._in_backward_optimizers = [self.optimizer]  # keep DDP/dense optimizers off
        self._row_params: Dict[Tuple[str, ...], torch.Tensor] = {}

    def _build_optimizer(self, settings: Mapping[str, Tuple[Any, float, float]]) -> EntityWeightOptimizer:
        rules, lrs, eps = {}, {}, 1e-8
        for name, table in self.tables.items():
            if name not in settings:  # table-wise on another rank: no local weights to update
                rules[name], lrs[name] = (table.entity_weight_optimizer or "sgd", 1.0), 0.0
                continue
            optim, lrs[name], eps = settings[name]
            rules[name] = (rule_for(name, table.entity_weight_optimizer, optim), table.entity_weight_lr_scale)
        return EntityWeightOptimizer(
            weight=self.weight,
            params={f"entity_weights.{name}": self.sharded(name, self.weight) for name in self.tables},
            table_slices=self.slices,
            rules=rules,
            lrs=lrs,
            eps=eps,
            grad_scale=1.0 / self._world_size,
            make_sharded=self.sharded,
        )

    def sharded(self, table: str, flat: torch.Tensor) -> ShardedTensor:
        """``table``'s slice of a flat local vector (weights or optimizer state) as a 1-D ShardedTensor."""
        owned = self.owned[table]
        local = flat.detach()[self.slices[table]] if len(owned) else None
        n_pad = self.tables[table].bucketed_hash().padded_num_embeddings
        return sharded_vector(local, n_pad, self._placements[table], self._pg)

    @torch.no_grad()
    def reset(self) -> None:
        """Every table's configured initial weight, and 1 in the constant slots."""
        for name, sl in self.slices.items():
            self.weight[sl] = self.tables[name].entity_weight_init
        self.weight[self.ones_slot :] = 1.0

    # -- per batch -------------------------------------------------------------------------------------------------

    def slots_request(self) -> EntitySlots:
        """What ``IdTransform.transform_with_slots`` writes for this vector: MEmCom's slots ``s + `` its table's slice
        start (this rank owns all of ``w``: one rank), the constant slots for every other feature."""
        return EntitySlots(
            bases=tuple((f, self.slices[t].start) for f, t in self._feature_tables.items()),
            ones=self.ones_slot,
            dtype=torch.int32 if self.weight.numel() < 2**31 else torch.int64,
        )

    def weights_at(self, slots: torch.Tensor) -> torch.Tensor:
        """The per-sample weights ``w_local[slots]``; their gradient updates ``w`` in backward."""
        return entity_weights_at(self.weight, slots, self.optimizer.update)

    def _params_for(self, keys: Tuple[str, ...]) -> torch.Tensor:
        """``(F, 5)`` parameters (``ops.MEMCOM_PARAMS``) of the features a rank received in one sharding, in order."""
        params = self._row_params.get(keys)
        if params is None:
            rows = []
            for f in keys:
                table = self._feature_tables.get(f)
                if table is None:
                    rows.append([0, 0, self.ones_slot, 0, 0])
                    continue
                h = self.tables[table].bucketed_hash()
                owners = self._owners[table]
                blocks = len(owners)
                index = owners.index(self._rank) if blocks > 1 else 0
                block = h.padded_num_embeddings // blocks * index
                row_offset = h.num_rows // blocks * index
                rows.append([block, row_offset, self.slices[table].start, h.ids_per_bucket, h.rows_per_bucket])
            params = self._row_params[keys] = torch.tensor(rows, dtype=torch.int64, device=self._device).reshape(-1, 5)
        return params

    def rows_and_weights(self, kjt: KeyedJaggedTensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(local shared rows, per-sample weights w_local[j], offsets)`` of the scrambled ids ``j`` a rank received
        in one sharding (one kernel on CUDA); ``offsets``: the KJT's, computed once for the kernel and the lookup."""
        offsets = kjt.offsets()
        params = self._params_for(tuple(kjt.keys()))
        rows, w = memcom_rows_and_weights(
            kjt.values(), kjt.lengths(), params, self.weight, self.optimizer.update, offsets
        )
        return rows, w, offsets

    # -- state dict ------------------------------------------------------------------------------------------------

    def state_dict_into(self, destination: Dict[str, Any], prefix: str) -> None:
        """``entity_weights.<t>`` as ShardedTensors, in place of the flat vector's own entry."""
        destination.pop(prefix + "entity_weights_local", None)
        for name in self.tables:
            destination[f"{prefix}entity_weights.{name}"] = self.sharded(name, self.weight)

    @torch.no_grad()
    def load_from(self, state_dict: Dict[str, Any], prefix: str) -> None:
        """Copies the owned blocks of ``entity_weights.<t>`` (ShardedTensors or full tensors) into the flat vector and
        leaves its own entry in ``state_dict`` instead."""
        for name, owned in self.owned.items():
            key = f"{prefix}entity_weights.{name}"
            if key not in state_dict:
                continue
            src = state_dict[key]
            local = self.weight[self.slices[name]]
            if isinstance(src, ShardedTensor):
                shards = src.local_shards()
                if len(owned) == 0:
                    continue
                if len(shards) != 1 or shards[0].tensor.numel() != local.numel():
                    raise ValueError(f"entity_weights.{name}: the checkpoint's local shard does not match")
                local.copy_(shards[0].tensor)
            else:
                local.copy_(src[owned.start : owned.stop])
        for name in self.tables:
            state_dict.pop(f"{prefix}entity_weights.{name}", None)
        state_dict[prefix + "entity_weights_local"] = self.weight.detach()
