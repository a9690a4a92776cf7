# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Every TorchRec / FBGEMM private this package touches, in one place.

Checked against torchrec 1.6.1 (fbgemm-gpu 1.6.0, the GPU machines) and torchrec 1.8.0 (fbgemm-gpu-cpu 1.8.0, CPU
and CI). An upgrade that moves one of these breaks here first; ``tests/distributed`` exercise every function.
"""

import copy
import inspect
from typing import AbstractSet, Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardedTensorMetadata
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
from torchrec.distributed.sharding.dp_sharding import DpSparseFeaturesDist
from torchrec.distributed.sharding.rw_sharding import RwSparseFeaturesDist
from torchrec.distributed.sharding.tw_sharding import TwSparseFeaturesDist
from torchrec.distributed.sharding.twrw_sharding import TwRwSparseFeaturesDist

__all__ = [
    "embedding_shardings",
    "fused_tbes",
    "identity_input_dists",
    "init_input_dists",
    "lookups",
    "set_planner_constraints",
    "output_embedding_names",
    "per_sample_weight_grads_only_for",
    "sharded_tensor",
    "sharding_feature_names",
    "skip_unit_weight_gradient_scaling",
    "table_optimizer_settings",
    "with_fused_params",
]


def embedding_shardings(ebc: ShardedEmbeddingBagCollection) -> List[Any]:
    """The sharded EBC's ``EmbeddingSharding`` per sharding type (order of its input and output dists)."""
    return list(ebc._embedding_shardings)


def sharding_feature_names(ebc: ShardedEmbeddingBagCollection) -> List[List[str]]:
    """Features of each sharding, in the order the sharded EBC's input dist expects them."""
    return [list(s.feature_names()) for s in ebc._embedding_shardings]


def lookups(ebc: ShardedEmbeddingBagCollection) -> List[torch.nn.Module]:
    return list(ebc._lookups)


def init_input_dists(
    ebc: ShardedEmbeddingBagCollection,
    feature_names: List[str],
    hash_sizes: Optional[Dict[str, int]] = None,
    single_rank: bool = False,
) -> None:
    """Creates the sharded EBC's input dists now (TorchRec creates them at the first batch), for input KJTs whose
    keys are ``feature_names`` (already in sharding order: no permute per batch).

    ``hash_sizes`` overrides the id range a row-wise input dist buckets for some features (MEmCom buckets its scrambled
    ids over ``n_pad``, not over the shared table's rows), through the sharding's own ``create_input_dist``.

    ``single_rank`` (a one-rank process group): every input dist becomes ``DpSparseFeaturesDist``, the identity.
    Over one rank TorchRec's KJT all-to-all (table-, column- and table-column-wise: ``TwSparseFeaturesDist``) returns
    its input KJT as it is, but first builds the feature permutation of a real exchange and drops it
    (``dist_data._get_recat``: ``torch.tensor(list, device=cuda)``, a blocking copy, so the host waits there for every
    kernel queued before it, once per batch). The row-wise dists (``RwSparseFeaturesDist``, ``TwRwSparseFeaturesDist``)
    first bucket the ids into one block per rank, which over one rank keeps every in-range id as it is (block 0,
    offset 0; the ids are checked before), then exchange the buckets' sizes through the host (``length_per_key``).
    """
    for sharding in ebc._embedding_shardings:
        features = list(sharding.feature_names())
        if hash_sizes and any(f in hash_sizes for f in features) and hasattr(sharding, "_get_feature_hash_sizes"):
            own = sharding._get_feature_hash_sizes()
            sizes = [hash_sizes.get(f, n) for f, n in zip(features, own)]
            sharding._get_feature_hash_sizes = lambda sizes=sizes: sizes  # instance override, read once below
            try:
                input_dist = sharding.create_input_dist()
            finally:
                del sharding._get_feature_hash_sizes
        else:
            input_dist = sharding.create_input_dist()
        if single_rank and isinstance(input_dist, (TwSparseFeaturesDist, RwSparseFeaturesDist, TwRwSparseFeaturesDist)):
            input_dist = DpSparseFeaturesDist()
        ebc._input_dists.append(input_dist)
        ebc._feature_splits.append(len(features))
    expected = [f for s in ebc._embedding_shardings for f in s.feature_names()]
    if expected != list(feature_names):
        raise ValueError(f"input features {feature_names} are not in the sharding order {expected}")
    ebc._has_features_permute = False
    ebc._has_uninitialized_input_dist = False
    if getattr(ebc, "_has_mean_pooling_callback", False):
        ebc._init_mean_pooling_callback(list(feature_names), None)


def identity_input_dists(ebc: ShardedEmbeddingBagCollection) -> List[bool]:
    """Per sharding, whether its input dist hands the KJT on as it is (``DpSparseFeaturesDist``: data-parallel, or
    any sharding's one-rank identity from ``init_input_dists``)."""
    return [isinstance(d, DpSparseFeaturesDist) for d in ebc._input_dists]


def output_embedding_names(ebc: ShardedEmbeddingBagCollection) -> List[str]:
    """Keys of the sharded EBC's output KeyedTensor, in order."""
    return list(ebc._embedding_names)


def fused_tbes(module: torch.nn.Module) -> List[Tuple[Any, Any]]:
    """``(kernel, FBGEMM TBE)`` of every kernel with a TBE in a sharded collection's lookups (``module._lookups``:
    TorchRec keeps them in a plain list, outside ``module.modules()``); ``[]`` for a module without lookups."""
    out = []
    for lookup in getattr(module, "_lookups", None) or []:
        for emb in getattr(lookup, "_emb_modules", []):
            tbe = getattr(emb, "_emb_module", None)
            if tbe is not None:
                out.append((emb, tbe))
    return out


def per_sample_weight_grads_only_for(module: torch.nn.Module, tables: AbstractSet[str]) -> None:
    """Makes each fused TBE of a sharded collection compute its per-sample weights' gradient only for the features
    of ``tables``; the others get a zero gradient, without their rows being read again (FBGEMM's
    ``feature_requires_grad``, which TorchRec's kernels do not pass: a forward pre-hook adds it). Only for weights
    whose gradient is not wanted outside ``tables``."""
    for emb, tbe in fused_tbes(module):
        if "feature_requires_grad" not in inspect.signature(tbe.forward).parameters:
            continue
        configs = emb._config.embedding_tables
        wanted = [configs[t].name in tables for t in tbe.feature_table_map]
        if all(wanted):
            continue
        flags = torch.tensor(wanted, dtype=torch.int32, device=tbe.D_offsets.device)

        def add_flags(_: Any, args: Any, kwargs: Dict[str, Any], flags: torch.Tensor = flags) -> Any:
            return args, {**kwargs, "feature_requires_grad": flags}

        tbe.register_forward_pre_hook(add_flags, with_kwargs=True)


# TorchRec 1.6 spells the method with a typo, 1.8 without
_SCALING_METHODS = ("_apply_feature_processor_and_gradient_scaling", "_apply_fearture_processor_and_gradient_scaling")


def skip_unit_weight_gradient_scaling(ebc: ShardedEmbeddingBagCollection) -> None:
    """Leaves out TorchRec's ``CommOpGradientScaling`` in each lookup of ``ebc`` whose factor is 1 (one rank, or
    gradient division off): an identity forward and a backward that multiplies by 1, which cost an autograd node, a
    GPU kernel and host time per step for nothing. Lookups with a feature processor keep TorchRec's method; so do
    calls with TorchRec 1.8's ``fs_auto_collection`` set."""
    for lookup in lookups(ebc):
        name = next((n for n in _SCALING_METHODS if hasattr(lookup, n)), None)
        if name is None or getattr(lookup, "_scale_gradient_factor", None) != 1:
            continue
        original = getattr(lookup, name)

        def apply(features: Any, config: Any, *rest: Any, _original: Any = original) -> Any:
            if config.has_feature_processor or any(rest):  # rest: TorchRec 1.8's fs_auto_collection
                return _original(features, config, *rest)
            return features

        setattr(lookup, name, apply)


def table_optimizer_settings(ebc: ShardedEmbeddingBagCollection) -> Dict[str, Tuple[Any, float, float]]:
    """Per physical table: ``(EmbOptimType, learning rate, eps)`` of the fused TBE holding it (fused kernels only)."""
    settings: Dict[str, Tuple[Any, float, float]] = {}
    for emb, tbe in fused_tbes(ebc):
        if not hasattr(tbe, "optimizer"):
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


def with_fused_params(sharder: Any, extra: Dict[str, Any]) -> Any:
    """A shallow copy of an embedding sharder whose ``fused_params`` also hold ``extra`` (the original is unchanged;
    TorchRec's sharders keep them in ``_fused_params``)."""
    out = copy.copy(sharder)
    out._fused_params = {**(sharder.fused_params or {}), **extra}
    return out
