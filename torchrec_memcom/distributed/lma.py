# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Sharded LMA: ids expand to chunk locations inside ``input_dist``; the memory is an ordinary sharded table."""

from typing import Dict, Optional

import torch
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.types import ParameterSharding, ShardingEnv

from torchrec_memcom.distributed._transformed import ShardedTransformedCollection, TransformedCollectionSharder
from torchrec_memcom.modules.lma import LMAEmbeddingBagCollection

__all__ = ["LMAEmbeddingBagCollectionSharder", "ShardedLMAEmbeddingBagCollection"]


class ShardedLMAEmbeddingBagCollection(ShardedTransformedCollection[LMAEmbeddingBagCollection]):
    """Sharded LMA collection.

    Each feature ``f`` becomes ``d / Z`` sub-features ``f__c<k>`` whose ids are the chunk locations, computed on the
    data-parallel side from the signatures (replicated on every rank, ``id_transform.signatures.<table>``); the
    memory tables ``<group>__memory`` (``rows x Z``) take any sharding type: table-, row-, column-wise or
    data-parallel. The output regroups the chunks into ``d``-dim features.
    """

    def __init__(
        self,
        module: LMAEmbeddingBagCollection,
        table_name_to_parameter_sharding: Dict[str, ParameterSharding],
        ebc_sharder: EmbeddingBagCollectionSharder,
        env: ShardingEnv,
        device: torch.device,
        module_fqn: Optional[str] = None,
    ) -> None:
        if len(module.elementwise_memories) > 0:
            raise ValueError(
                f"LMA memory groups {list(module.elementwise_memories)} use chunk_size=1 (the plain-PyTorch "
                "reference path), which cannot be sharded; use a chunk_size that is a multiple of 4"
            )
        super().__init__(module, table_name_to_parameter_sharding, ebc_sharder, env, device, module_fqn)


class LMAEmbeddingBagCollectionSharder(TransformedCollectionSharder[LMAEmbeddingBagCollection]):
    """Shards ``LMAEmbeddingBagCollection``: the planner sees each memory table (``rows x Z``); the signatures'
    bytes are reserved on every rank by ``torchrec_memcom.distributed.planner``."""

    unsharded_type = LMAEmbeddingBagCollection
    sharded_type = ShardedLMAEmbeddingBagCollection
