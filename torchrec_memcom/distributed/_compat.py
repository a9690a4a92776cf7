# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Every TorchRec / FBGEMM private this package touches, in one place.

Checked against torchrec 1.6.1 (fbgemm-gpu 1.6.0, the GPU machines) and torchrec 1.8.0 (fbgemm-gpu-cpu 1.8.0, CPU
and CI). An upgrade that moves one of these breaks here first; ``tests/distributed`` exercise every function.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardedTensorMetadata
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection

__all__ = [
    "embedding_shardings",
    "init_input_dists",
    "lookup_storages",
    "lookups",
    "pooled_lookup_layout",
    "set_planner_constraints",
    "output_embedding_names",
    "sharded_tensor",
    "sharding_feature_names",
    "table_optimizer_settings",
    "weight_gradient_factor",
]


def embedding_shardings(ebc: ShardedEmbeddingBagCollection) -> List[Any]:
    """The sharded EBC's ``EmbeddingSharding`` per sharding type (order of its input and output dists)."""
    return list(ebc._embedding_shardings)


def sharding_feature_names(ebc: ShardedEmbeddingBagCollection) -> List[List[str]]:
    """Features of each sharding, in the order the sharded EBC's input dist expects them."""
    return [list(s.feature_names()) for s in ebc._embedding_shardings]


def lookups(ebc: ShardedEmbeddingBagCollection) -> List[torch.nn.Module]:
    return list(ebc._lookups)


def pooled_lookup_layout(lookup: torch.nn.Module) -> Optional[List[Tuple[str, int, int, torch.Tensor]]]:
    """Per key of the KJT a sharding's pooled lookup receives, in order: ``(feature, column, dim, local weight
    view)``; the lookup's output is ``(stride, width)``, the key's bag ``b`` at row ``b``, columns ``[column, column +
    dim)``. ``None`` unless every group is an fp32 FBGEMM TBE whose tables are whole in device, host or managed
    memory (no cache: the views are the rows the lookup reads).
    """
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen

    configs, modules = getattr(lookup, "grouped_configs", None), getattr(lookup, "_emb_modules", None)
    if configs is None or modules is None or len(configs) != len(modules):
        return None
    whole = (EmbeddingLocation.DEVICE, EmbeddingLocation.HOST, EmbeddingLocation.MANAGED)
    out: List[Tuple[str, int, int, torch.Tensor]] = []
    col = 0
    for config, module in zip(configs, modules):
        tbe = getattr(module, "_emb_module", None)
        if not isinstance(tbe, SplitTableBatchedEmbeddingBagsCodegen) or tbe.weights_precision != SparseType.FP32:
            return None
        if any(spec[2] not in whole for spec in tbe.embedding_specs):
            return None
        for table, view in zip(config.embedding_tables, tbe.split_embedding_weights()):
            for feature in table.feature_names:
                out.append((feature, col, table.local_cols, view))
                col += table.local_cols
    return out


def weight_gradient_factor(lookup: torch.nn.Module) -> float:
    """The factor a weighted lookup multiplies its per-sample weights' gradient by (``CommOpGradientScaling``: the
    world size when TorchRec divides gradients by it in the output dist's backward, else 1)."""
    return float(getattr(lookup, "_scale_gradient_factor", 1))


def lookup_storages(lookup: torch.nn.Module) -> Tuple[int, ...]:
    """Addresses of the weight storages of a pooled lookup's TBEs (they change if a TBE reallocates its tables)."""
    return tuple(
        getattr(m._emb_module, name).data_ptr()
        for m in getattr(lookup, "_emb_modules", [])
        for name in ("weights_dev", "weights_host", "weights_uvm")
        if hasattr(m, "_emb_module") and hasattr(m._emb_module, name)
    )


def init_input_dists(
    ebc: ShardedEmbeddingBagCollection, feature_names: List[str], hash_sizes: Optional[Dict[str, int]] = None
) -> None:
    """Creates the sharded EBC's input dists now (TorchRec creates them at the first batch), for input KJTs whose
    keys are ``feature_names`` (already in sharding order: no permute per batch).

    ``hash_sizes`` overrides the id range a row-wise input dist buckets for some features (MEmCom buckets its scrambled
    ids over ``n_pad``, not over the shared table's rows), through the sharding's own ``create_input_dist``.
    """
    for sharding in ebc._embedding_shardings:
        features = list(sharding.feature_names())
        if hash_sizes and any(f in hash_sizes for f in features) and hasattr(sharding, "_get_feature_hash_sizes"):
            own = sharding._get_feature_hash_sizes()
            sizes = [hash_sizes.get(f, n) for f, n in zip(features, own)]
            sharding._get_feature_hash_sizes = lambda sizes=sizes: sizes  # instance override, read once below
            try:
                ebc._input_dists.append(sharding.create_input_dist())
            finally:
                del sharding._get_feature_hash_sizes
        else:
            ebc._input_dists.append(sharding.create_input_dist())
        ebc._feature_splits.append(len(features))
    expected = [f for s in ebc._embedding_shardings for f in s.feature_names()]
    if expected != list(feature_names):
        raise ValueError(f"input features {feature_names} are not in the sharding order {expected}")
    ebc._has_features_permute = False
    ebc._has_uninitialized_input_dist = False
    if getattr(ebc, "_has_mean_pooling_callback", False):
        ebc._init_mean_pooling_callback(list(feature_names), None)


def output_embedding_names(ebc: ShardedEmbeddingBagCollection) -> List[str]:
    """Keys of the sharded EBC's output KeyedTensor, in order."""
    return list(ebc._embedding_names)


def table_optimizer_settings(ebc: ShardedEmbeddingBagCollection) -> Dict[str, Tuple[Any, float, float]]:
    """Per physical table: ``(EmbOptimType, learning rate, eps)`` of the fused TBE holding it (fused kernels only)."""
    settings: Dict[str, Tuple[Any, float, float]] = {}
    for lookup in ebc._lookups:
        for emb in getattr(lookup, "_emb_modules", []):
            tbe = getattr(emb, "_emb_module", None)
            if tbe is None or not hasattr(tbe, "optimizer"):
                continue
            for cfg in emb._config.embedding_tables:
                settings[cfg.name] = (tbe.optimizer, float(tbe.get_learning_rate()), float(tbe.optimizer_args.eps))
    return settings


def sharded_tensor(
    shards: List[Shard], metadata: ShardedTensorMetadata, pg: Optional[dist.ProcessGroup]
) -> ShardedTensor:
    """A ShardedTensor from this rank's shards and the global metadata (no communication)."""
    return ShardedTensor._init_from_local_shards_and_global_metadata(shards, metadata, process_group=pg)


def set_planner_constraints(planner: Any, enumerator: Any, estimators: List[Any], constraints: Dict[str, Any]) -> None:
    """Replaces the constraints an ``EmbeddingShardingPlanner``, its enumerator and its estimators plan with (they
    copy them at construction; ours depend on the model, known only at ``plan`` time)."""
    planner._constraints = constraints
    enumerator._constraints = constraints
    for estimator in estimators:
        estimator._constraints = constraints
