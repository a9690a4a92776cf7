# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharded MEmCom: co-located row-wise (or table-wise) shared table and entity weights.

Row-wise, rank ``r`` owns the scrambled ids ``s`` of buckets ``[r B / W, (r + 1) B / W)``: their entity weights
``w[s]`` and, because the hash maps bucket ``b`` onto bucket ``b``'s block of ``U``, also every row ``U[h(s)]`` they
use. So one all-to-all of the (scrambled) ids brings each id to the rank that owns both; the rank gathers ``w``
locally, hashes, and runs the shared tables' weighted TBE lookup; one reduce-scatter returns the pooled sums::

    input KJT (raw ids, data parallel)
      -> scramble (no_grad) -> RwSparseFeaturesDist over n_pad  [ids of block r -> rank r, as local offsets]
      -> rank r: s = j + r n_pad / W;  row = h(s) - r m / W;  psw = w_local[j] (* x)
      -> inner ShardedEmbeddingBagCollection.compute (weighted TBE, fused optimizer for U)
      -> inner output dist (reduce-scatter) -> MEAN division -> KeyedTensor

``w`` never crosses the network. Table-wise, the table and its weights sit on one rank. The weights are updated in
backward by ``EntityWeightOptimizer`` with the rule and learning rate of their table's fused optimizer.
"""

from typing import Any, Dict, Iterator, List, Optional, Type

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.metadata import ShardMetadata
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardedTensorMetadata, TensorProperties
from torchrec.distributed.comm import get_local_size
from torchrec.distributed.embedding_sharding import EmbeddingShardingContext, KJTListSplitsAwaitable
from torchrec.distributed.embedding_types import KJTList, ShardedEmbeddingModule
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder, ShardedEmbeddingBagCollection
from torchrec.distributed.sharding.rw_sharding import RwPooledEmbeddingSharding, RwSparseFeaturesDist
from torchrec.distributed.sharding.tw_sharding import TwPooledEmbeddingSharding
from torchrec.distributed.types import (
    Awaitable,
    LazyAwaitable,
    ParameterSharding,
    ShardingEnv,
    ShardingType,
)
from torchrec.distributed.utils import append_prefix
from torchrec.optim.fused import FusedOptimizerModule
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import MEmComEmbeddingBagConfig
from torchrec_memcom.distributed._transformed import CompressedCollectionContext, TransformedCollectionSharder
from torchrec_memcom.distributed.entity_weights import (
    EntityWeightOptimizer,
    fused_entity_weight_lookup,
    optimizer_kind,
)
from torchrec_memcom.modules._base import apply_mean_pooling
from torchrec_memcom.modules.memcom import HashedIds, MEmComEmbeddingBagCollection
from torchrec_memcom.ops import memcom_local_rows

__all__ = ["MEmComEmbeddingBagCollectionSharder", "ShardedMEmComEmbeddingBagCollection", "check_row_wise_buckets"]

SUPPORTED_SHARDING_TYPES: List[str] = [ShardingType.ROW_WISE.value, ShardingType.TABLE_WISE.value]


def check_row_wise_buckets(table: MEmComEmbeddingBagConfig, world_size: int) -> None:
    """Raises ``ValueError`` unless row-wise sharding over ``world_size`` ranks keeps ids and rows co-located."""
    b = table.bucketed_hash().num_buckets
    if b % world_size != 0:
        raise ValueError(
            f"MEmCom table '{table.name}': row-wise sharding over {world_size} ranks needs the world size to divide "
            f"num_buckets={b} (the hash is fixed by the buckets, never by the world size). Set num_buckets to a "
            f"multiple of {world_size} (e.g. {world_size * max(1, b // world_size)}), or constrain the table to "
            f"table_wise."
        )


def _sharded_vector(
    local: Optional[torch.Tensor],
    offset: int,
    global_size: int,
    owners: List[int],
    pg: dist.ProcessGroup,
    device_type: str,
) -> ShardedTensor:
    """A 1-D ShardedTensor of ``global_size`` whose shards are ``global_size / len(owners)`` contiguous blocks."""
    block = global_size // len(owners)
    local_size = get_local_size(dist.get_world_size(pg))
    metas = [
        ShardMetadata(
            shard_offsets=[i * block],
            shard_sizes=[block],
            placement=f"rank:{r}/cuda:{r % local_size}" if device_type == "cuda" else f"rank:{r}/cpu",
        )
        for i, r in enumerate(owners)
    ]
    dtype = local.dtype if local is not None else torch.float32
    md = ShardedTensorMetadata(
        shards_metadata=metas, size=torch.Size([global_size]), tensor_properties=TensorProperties(dtype=dtype)
    )
    rank = dist.get_rank(pg)
    shards = [Shard(tensor=local, metadata=m) for m in metas if local is not None and m.placement.rank() == rank]
    assert all(s.metadata.shard_offsets[0] == offset for s in shards)
    return ShardedTensor._init_from_local_shards_and_global_metadata(shards, md, process_group=pg)


class ShardedMEmComEmbeddingBagCollection(
    ShardedEmbeddingModule[KJTList, List[torch.Tensor], KeyedTensor, CompressedCollectionContext],
    FusedOptimizerModule,
):
    """Sharded ``MEmComEmbeddingBagCollection`` (row-wise co-located, or table-wise); see the module docstring.

    State dict: the same FQNs as the unsharded module; ``_embedding_bag_collection.embedding_bags.<t>.weight`` and
    ``entity_weights.<t>`` are ShardedTensors (row blocks of ``U`` and of ``w``), so
    ``torch.distributed.checkpoint`` saves and reshards them.
    """

    def __init__(
        self,
        module: MEmComEmbeddingBagCollection,
        table_name_to_parameter_sharding: Dict[str, ParameterSharding],
        ebc_sharder: EmbeddingBagCollectionSharder,
        env: ShardingEnv,
        device: torch.device,
        module_fqn: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._env = env
        self._device = device
        self._pg = env.process_group
        self._world_size = env.world_size
        self._rank = env.rank
        self._embedding_bag_configs = module.embedding_bag_configs()
        self._is_weighted = module.is_weighted()
        self._tables: Dict[str, MEmComEmbeddingBagConfig] = {t.name: t for t in self._embedding_bag_configs}
        self._feature_table = {f: t.name for t in self._embedding_bag_configs for f in t.feature_names}
        self.id_transform: HashedIds = module.id_transform

        for name, ps in table_name_to_parameter_sharding.items():
            if ps.sharding_type not in SUPPORTED_SHARDING_TYPES:
                raise ValueError(
                    f"MEmCom table '{name}': sharding type {ps.sharding_type} is not supported "
                    f"(supported: {SUPPORTED_SHARDING_TYPES})"
                )
            if ps.sharding_type == ShardingType.ROW_WISE.value:
                self._check_row_wise(self._tables[name], ps)

        self._embedding_bag_collection: ShardedEmbeddingBagCollection = ebc_sharder.shard(
            module._embedding_bag_collection,
            table_name_to_parameter_sharding,
            env=env,
            device=device,
            module_fqn=module_fqn,
        )
        # Our own input dist (over scrambled ids) replaces the inner one.
        self._embedding_bag_collection._has_uninitialized_input_dist = False
        self._lookups: List[nn.Module] = self._embedding_bag_collection._lookups

        # Which tables this rank holds entity weights for, and where (block of the scrambled id space).
        self._w_owned: Dict[str, range] = {}
        for name, ps in table_name_to_parameter_sharding.items():
            n_pad = self._tables[name].bucketed_hash().padded_num_embeddings
            if ps.sharding_type == ShardingType.ROW_WISE.value:
                block = n_pad // self._world_size
                self._w_owned[name] = range(self._rank * block, (self._rank + 1) * block)
            elif ps.ranks is not None and ps.ranks[0] == self._rank:
                self._w_owned[name] = range(0, n_pad)
        self._w_owners = {
            name: (list(range(self._world_size)) if ps.sharding_type == ShardingType.ROW_WISE.value else list(ps.ranks))
            for name, ps in table_name_to_parameter_sharding.items()
        }
        self._w_slices: Dict[str, slice] = {}
        offset = 0
        for name in self._tables:
            size = len(self._w_owned.get(name, range(0)))
            self._w_slices[name] = slice(offset, offset + size)
            offset += size
        self.entity_weights_local = nn.Parameter(torch.empty(offset, device=device))
        self._init_entity_weights(module)

        self._build_input_dists()
        self._fused_optimizer = self._build_optimizer()
        self.entity_weights_local._in_backward_optimizers = [self._fused_optimizer]  # keep DDP/dense optimizers off
        self._register_state_dict_hook(self._state_dict_hook)
        self._register_load_state_dict_pre_hook(self._load_state_dict_pre_hook, with_module=True)

    # -- construction ------------------------------------------------------------------------------------------

    def _check_row_wise(self, table: MEmComEmbeddingBagConfig, ps: ParameterSharding) -> None:
        check_row_wise_buckets(table, self._world_size)
        m = table.bucketed_hash().num_rows
        spec = ps.sharding_spec
        shards = getattr(spec, "shards", None) or []
        expected = [(r * m // self._world_size, m // self._world_size) for r in range(self._world_size)]
        got = [(s.shard_offsets[0], s.shard_sizes[0]) for s in shards]
        if got and got != expected:
            raise ValueError(
                f"MEmCom table '{table.name}': the row-wise plan splits U as {got}, but co-location needs equal "
                f"blocks {expected}"
            )

    @torch.no_grad()
    def _init_entity_weights(self, module: MEmComEmbeddingBagCollection) -> None:
        for name, owned in self._w_owned.items():
            local = self.entity_weights_local[self._w_slices[name]]
            source = module.entity_weights[name]
            if source.is_meta:
                local.fill_(self._tables[name].entity_weight_init)
            else:
                local.copy_(source[owned.start : owned.stop])

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for name, sl in self._w_slices.items():
                self.entity_weights_local[sl] = self._tables[name].entity_weight_init

    def _build_input_dists(self) -> None:
        inner = self._embedding_bag_collection
        self._dists = nn.ModuleList()
        self._sharding_features: List[List[str]] = []
        per_sharding_params: List[Dict[str, tuple]] = []
        for sharding in inner._embedding_shardings:
            features = sharding.feature_names()
            tables = [self._tables[self._feature_table[f]] for f in features]
            hashes = [t.bucketed_hash() for t in tables]
            if isinstance(sharding, RwPooledEmbeddingSharding):
                self._dists.append(
                    RwSparseFeaturesDist(
                        pg=self._pg,
                        num_features=len(features),
                        feature_hash_sizes=[h.padded_num_embeddings for h in hashes],
                        device=self._device,
                        is_sequence=False,
                        has_feature_processor=False,
                        need_pos=False,
                    )
                )
                block = [h.padded_num_embeddings // self._world_size * self._rank for h in hashes]
                row_offset = [h.num_rows // self._world_size * self._rank for h in hashes]
            elif isinstance(sharding, TwPooledEmbeddingSharding):
                self._dists.append(sharding.create_input_dist())
                block = [0] * len(features)
                row_offset = [0] * len(features)
            else:
                raise ValueError(f"MEmCom: unsupported sharding {type(sharding).__name__}")
            per_feature = {
                f: (b, o, self._w_slices[t.name].start, h.ids_per_bucket, h.rows_per_bucket)
                for f, t, h, b, o in zip(features, tables, hashes, block, row_offset)
            }
            per_sharding_params.append(per_feature)
            self._sharding_features.append(features)
        self._per_sharding_params = per_sharding_params
        self._param_cache: Dict[Any, torch.Tensor] = {}
        order = self.id_transform.feature_names()
        flat = [f for fs in self._sharding_features for f in fs]
        self._features_order: List[int] = [order.index(f) for f in flat]
        self._features_order_tensor = torch.tensor(self._features_order, dtype=torch.int32, device=self._device)
        self._feature_splits = [len(fs) for fs in self._sharding_features]

    def _table_optimizer_settings(self) -> Dict[str, Any]:
        """Per table: the fused optimizer type, learning rate and eps of its shared table's TBE."""
        settings: Dict[str, Any] = {}
        for lookup in self._lookups:
            for emb in getattr(lookup, "_emb_modules", []):
                tbe = emb._emb_module
                for cfg in emb._config.embedding_tables:
                    settings[cfg.name] = (tbe.optimizer, tbe.get_learning_rate(), tbe.optimizer_args.eps)
        return settings

    def _build_optimizer(self) -> EntityWeightOptimizer:
        settings = self._table_optimizer_settings()
        kinds, lrs, eps = {}, {}, 1e-8
        for name in self._tables:
            if name not in settings:
                continue
            optim, lr, eps = settings[name]
            kinds[name], lrs[name] = optimizer_kind(optim), lr
        params = {f"entity_weights.{name}": self._sharded_w(name, self.entity_weights_local) for name in self._tables}
        # The Adagrad state is laid out like the weights: wrap each table's slice the same way.
        return EntityWeightOptimizer(
            weight=self.entity_weights_local,
            params=params,
            table_slices=self._w_slices,
            kinds=kinds,
            lrs=lrs,
            eps=eps,
            # TorchRec scales per-sample-weight gradients by W (CommOpGradientScaling) while the shared tables get
            # gradients divided by W: undo the former so w and U see the same (mean-over-ranks) loss.
            grad_scale=1.0 / self._world_size,
            make_sharded=lambda table, flat: self._sharded_w(table, flat),
        )

    def _sharded_w(self, table: str, flat: torch.Tensor) -> ShardedTensor:
        """``table``'s slice of a flat local vector (weights or optimizer state) as a 1-D ShardedTensor."""
        local = flat.detach()[self._w_slices[table]] if table in self._w_owned else None
        owned = self._w_owned.get(table, range(0))
        n_pad = self._tables[table].bucketed_hash().padded_num_embeddings
        return _sharded_vector(local, owned.start, n_pad, self._w_owners[table], self._pg, self._device.type)

    # -- forward -----------------------------------------------------------------------------------------------

    def input_dist(
        self, ctx: CompressedCollectionContext, features: KeyedJaggedTensor
    ) -> Awaitable[Awaitable[KJTList]]:
        with torch.no_grad():
            scrambled, ctx.divisors = self.id_transform.scramble(features)
            if self._features_order != list(range(len(self._features_order))):
                scrambled = scrambled.permute(self._features_order, self._features_order_tensor)
            awaitables = []
            for dist_, part in zip(self._dists, scrambled.split(self._feature_splits)):
                awaitables.append(dist_(part))
                ctx.sharding_contexts.append(
                    EmbeddingShardingContext(
                        batch_size_per_feature_pre_a2a=part.stride_per_key(),
                        variable_batch_per_feature=part.variable_stride_per_key(),
                    )
                )
        return KJTListSplitsAwaitable(awaitables, ctx)

    def _params_for(self, sharding: int, keys: List[str]) -> torch.Tensor:
        """``(F, 5)`` hash/offset parameters (``ops.MEMCOM_PARAMS``) of the features a rank received, in order."""
        cache_key = (sharding, tuple(keys))
        if cache_key not in self._param_cache:
            rows = [list(self._per_sharding_params[sharding][k]) for k in keys]
            self._param_cache[cache_key] = torch.tensor(rows, dtype=torch.int64, device=self._device)
        return self._param_cache[cache_key]

    def _weighted_rows(self, kjt: KeyedJaggedTensor, params: torch.Tensor) -> KeyedJaggedTensor:
        """Local shared rows and per-sample weights ``w_local[j] (* x)`` of the ids this rank received."""
        num_features = len(kjt.keys())
        if num_features == 0:  # table-wise: this rank holds none of the tables of this sharding
            return kjt
        with torch.no_grad():
            rows, w_index = memcom_local_rows(kjt.values(), kjt.lengths(), params)
        w = fused_entity_weight_lookup(w_index, self.entity_weights_local, self._fused_optimizer.update)
        if self._is_weighted:
            w = w * kjt.weights()
        return KeyedJaggedTensor(
            keys=kjt.keys(),
            values=rows,
            lengths=kjt.lengths(),
            weights=w,
            stride=kjt.stride(),
            length_per_key=kjt.length_per_key_or_none(),
        )

    def compute(self, ctx: CompressedCollectionContext, dist_input: KJTList) -> List[torch.Tensor]:
        weighted = KJTList(
            [self._weighted_rows(kjt, self._params_for(i, kjt.keys())) for i, kjt in enumerate(dist_input)]
        )
        return self._embedding_bag_collection.compute(ctx, weighted)

    def output_dist(self, ctx: CompressedCollectionContext, output: List[torch.Tensor]) -> LazyAwaitable[KeyedTensor]:
        awaitable = self._embedding_bag_collection.output_dist(ctx, output)
        divisors = ctx.divisors
        awaitable.callbacks.append(lambda kt: apply_mean_pooling(kt, divisors))
        return awaitable

    def create_context(self) -> CompressedCollectionContext:
        return CompressedCollectionContext()

    # -- optimizer and state -----------------------------------------------------------------------------------

    @property
    def fused_optimizer(self) -> KeyedOptimizer:
        return CombinedOptimizer(
            [("_embedding_bag_collection", self._embedding_bag_collection.fused_optimizer), self._fused_optimizer]
        )

    def sharded_parameter_names(self, prefix: str = "") -> Iterator[str]:
        for fqn, _ in self.named_parameters():
            yield append_prefix(prefix, fqn)

    @staticmethod
    def _state_dict_hook(
        module: "ShardedMEmComEmbeddingBagCollection", destination: Dict[str, Any], prefix: str, _: Any
    ) -> None:
        destination.pop(prefix + "entity_weights_local", None)
        for name in module._tables:
            destination[f"{prefix}entity_weights.{name}"] = module._sharded_w(name, module.entity_weights_local)

    @staticmethod
    def _load_state_dict_pre_hook(
        module: "ShardedMEmComEmbeddingBagCollection",
        state_dict: Dict[str, Any],
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: List[str],
        unexpected_keys: List[str],
        error_msgs: List[str],
    ) -> None:
        with torch.no_grad():
            for name, owned in module._w_owned.items():
                key = f"{prefix}entity_weights.{name}"
                if key not in state_dict:
                    continue
                src = state_dict[key]
                local = module.entity_weights_local[module._w_slices[name]]
                if isinstance(src, ShardedTensor):
                    shards = src.local_shards()
                    if len(shards) != 1 or shards[0].tensor.numel() != local.numel():
                        raise ValueError(f"entity_weights.{name}: the checkpoint's local shard does not match")
                    local.copy_(shards[0].tensor)
                else:
                    local.copy_(src[owned.start : owned.stop])
        for name in module._tables:
            state_dict.pop(f"{prefix}entity_weights.{name}", None)
        state_dict[prefix + "entity_weights_local"] = module.entity_weights_local.detach()

    @property
    def unsharded_module_type(self) -> Type[MEmComEmbeddingBagCollection]:
        return MEmComEmbeddingBagCollection


class MEmComEmbeddingBagCollectionSharder(TransformedCollectionSharder[MEmComEmbeddingBagCollection]):
    """Shards ``MEmComEmbeddingBagCollection`` row-wise (co-located ids, ``U`` rows and ``w``) or table-wise.

    The planner sees the shared tables (``num_shared_rows x d``); ``torchrec_memcom.distributed.planner`` adds the
    bytes of ``w`` and its optimizer state. Row-wise over ``W`` ranks needs ``W | num_buckets``.

    Takes the arguments of ``TransformedCollectionSharder``; ``w`` follows the shared tables' fused optimizer.
    """

    unsharded_type = MEmComEmbeddingBagCollection
    sharded_type = ShardedMEmComEmbeddingBagCollection  # type: ignore[assignment]

    def sharding_types(self, compute_device_type: str) -> List[str]:
        return list(SUPPORTED_SHARDING_TYPES)
