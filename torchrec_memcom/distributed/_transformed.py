# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharding for collections whose lookups are a pure function of the ids (hashing trick, QR, LMA).

The ids are mapped to physical-table ids on the data-parallel side, inside ``input_dist`` under ``no_grad`` (so
``TrainPipelineSparseDist`` still pipelines it), and the physical tables are an ordinary
``ShardedEmbeddingBagCollection``: every sharding type and kernel TorchRec offers for them works. After the output
dist, a callback turns the pooled physical features back into the logical ones (``IdTransform.combine``).
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, Generic, Iterator, List, Optional, Type, TypeVar

import torch
from torch import nn
from torchrec.distributed.embedding_types import BaseEmbeddingSharder, KJTList, ShardedEmbeddingModule
from torchrec.distributed.embeddingbag import (
    EmbeddingBagCollectionContext,
    EmbeddingBagCollectionSharder,
    ShardedEmbeddingBagCollection,
)
from torchrec.distributed.types import (
    Awaitable,
    LazyAwaitable,
    ParameterSharding,
    QuantizedCommCodecs,
    ShardingEnv,
    ShardingType,
)
from torchrec.distributed.utils import append_prefix
from torchrec.optim.fused import FusedOptimizerModule
from torchrec.optim.keyed import KeyedOptimizer
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.modules._base import CompressedCollection, IdTransform

M = TypeVar("M", bound=CompressedCollection)

ALL_SHARDING_TYPES: List[str] = [
    ShardingType.DATA_PARALLEL.value,
    ShardingType.TABLE_WISE.value,
    ShardingType.COLUMN_WISE.value,
    ShardingType.TABLE_COLUMN_WISE.value,
    ShardingType.ROW_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
    ShardingType.GRID_SHARD.value,
]


@dataclass
class CompressedCollectionContext(EmbeddingBagCollectionContext):
    """Per-batch state: the inner EBC's context plus the ``(B, 1)`` bag sizes of MEAN-pooled features."""

    divisors: Dict[str, torch.Tensor] = field(default_factory=dict)

    def record_stream(self, stream: torch.Stream) -> None:
        super().record_stream(stream)
        for d in self.divisors.values():
            d.record_stream(stream)


def materialize_id_transform(transform: IdTransform, device: torch.device) -> IdTransform:
    """Moves the transform to ``device``; one built on ``meta`` is allocated there and its buffers reset."""
    if any(b.is_meta for b in transform.buffers()):
        transform = transform.to_empty(device=device)
        reset = getattr(transform, "reset_buffers", None)
        if reset is not None:
            reset()
        return transform
    return transform.to(device)


def _combine(kt: KeyedTensor, transform: IdTransform, divisors: Dict[str, torch.Tensor]) -> KeyedTensor:
    return transform.combine(kt, divisors)


class ShardedTransformedCollection(
    ShardedEmbeddingModule[KJTList, List[torch.Tensor], KeyedTensor, CompressedCollectionContext],
    FusedOptimizerModule,
    Generic[M],
):
    """Sharded form of a collection whose physical ids are a function of the logical ids.

    Wraps the ``ShardedEmbeddingBagCollection`` of the physical tables (``_embedding_bag_collection``, same FQNs as
    the unsharded module) and registers the unsharded module's ``id_transform`` (same FQNs for its buffers).
    """

    def __init__(
        self,
        module: M,
        table_name_to_parameter_sharding: Dict[str, ParameterSharding],
        ebc_sharder: EmbeddingBagCollectionSharder,
        env: ShardingEnv,
        device: torch.device,
        module_fqn: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._unsharded_type: Type[M] = type(module)
        self._embedding_bag_configs = module.embedding_bag_configs()
        self._is_weighted = module.is_weighted()
        self._device = device
        self._env = env
        self.id_transform: IdTransform = materialize_id_transform(module.id_transform, device)
        self._embedding_bag_collection: ShardedEmbeddingBagCollection = ebc_sharder.shard(
            module._embedding_bag_collection,
            table_name_to_parameter_sharding,
            env=env,
            device=device,
            module_fqn=module_fqn,
        )
        self._lookups: List[nn.Module] = self._embedding_bag_collection._lookups

    def embedding_bag_configs(self) -> List[Any]:
        return self._embedding_bag_configs

    def is_weighted(self) -> bool:
        return self._is_weighted

    def input_dist(
        self, ctx: CompressedCollectionContext, features: KeyedJaggedTensor
    ) -> Awaitable[Awaitable[KJTList]]:
        with torch.no_grad():
            physical, divisors = self.id_transform(features)
        ctx.divisors = divisors
        return self._embedding_bag_collection.input_dist(ctx, physical)

    def compute(self, ctx: CompressedCollectionContext, dist_input: KJTList) -> List[torch.Tensor]:
        return self._embedding_bag_collection.compute(ctx, dist_input)

    def _with_combine(
        self, ctx: CompressedCollectionContext, awaitable: LazyAwaitable[KeyedTensor]
    ) -> LazyAwaitable[KeyedTensor]:
        awaitable.callbacks.append(partial(_combine, transform=self.id_transform, divisors=ctx.divisors))
        return awaitable

    def output_dist(self, ctx: CompressedCollectionContext, output: List[torch.Tensor]) -> LazyAwaitable[KeyedTensor]:
        return self._with_combine(ctx, self._embedding_bag_collection.output_dist(ctx, output))

    def compute_and_output_dist(self, ctx: CompressedCollectionContext, input: KJTList) -> LazyAwaitable[KeyedTensor]:
        return self._with_combine(ctx, self._embedding_bag_collection.compute_and_output_dist(ctx, input))

    def create_context(self) -> CompressedCollectionContext:
        return CompressedCollectionContext()

    @property
    def fused_optimizer(self) -> KeyedOptimizer:
        return self._embedding_bag_collection.fused_optimizer

    def sharded_parameter_names(self, prefix: str = "") -> Iterator[str]:
        for fqn, _ in self.named_parameters():
            yield append_prefix(prefix, fqn)
        for fqn, _ in self.named_buffers():
            yield append_prefix(prefix, fqn)

    @property
    def unsharded_module_type(self) -> Type[M]:
        return self._unsharded_type


class TransformedCollectionSharder(BaseEmbeddingSharder[M], Generic[M]):
    """Sharder of a transformed collection: plans and shards its physical tables like an EBC's.

    Args:
        ebc_sharder (Optional[EmbeddingBagCollectionSharder]): shards the physical tables (default: a new one with
            ``fused_params``).
        fused_params (Optional[Dict[str, Any]]): TBE kwargs (optimizer, learning_rate, ...).
        qcomm_codecs_registry (Optional[Dict[str, QuantizedCommCodecs]]): quantized comms.
    """

    unsharded_type: Type[CompressedCollection]
    sharded_type: Type[ShardedTransformedCollection] = ShardedTransformedCollection

    def __init__(
        self,
        ebc_sharder: Optional[EmbeddingBagCollectionSharder] = None,
        fused_params: Optional[Dict[str, Any]] = None,
        qcomm_codecs_registry: Optional[Dict[str, QuantizedCommCodecs]] = None,
    ) -> None:
        super().__init__(fused_params=fused_params, qcomm_codecs_registry=qcomm_codecs_registry)
        self._ebc_sharder: EmbeddingBagCollectionSharder = ebc_sharder or EmbeddingBagCollectionSharder(
            fused_params=fused_params, qcomm_codecs_registry=self.qcomm_codecs_registry
        )

    def shard(
        self,
        module: M,
        params: Dict[str, ParameterSharding],
        env: ShardingEnv,
        device: Optional[torch.device] = None,
        module_fqn: Optional[str] = None,
    ) -> ShardedTransformedCollection[M]:
        return self.sharded_type(module, params, self._ebc_sharder, env, device or torch.device("cpu"), module_fqn)

    @property
    def fused_params(self) -> Optional[Dict[str, Any]]:
        return self._ebc_sharder.fused_params

    def shardable_parameters(self, module: M) -> Dict[str, nn.Parameter]:
        return self._ebc_sharder.shardable_parameters(module._embedding_bag_collection)

    def sharding_types(self, compute_device_type: str) -> List[str]:
        # TorchRec lists row-wise types for cuda only; they run on gloo too (torch >= 2.6 has reduce_scatter).
        return list(ALL_SHARDING_TYPES)

    @property
    def module_type(self) -> Type[M]:
        return self.unsharded_type  # type: ignore[return-value]

    @property
    def sharded_module_type(self) -> Type[ShardedTransformedCollection]:
        return self.sharded_type
