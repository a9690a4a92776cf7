# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The sharded form of ``CompressedEmbeddingBagCollection``: one input dist, one lookup, one output dist.

The physical tables (stock tables, shared tables, QR's tables, LMA memories) are one ordinary
``ShardedEmbeddingBagCollection`` (``_embedding_bag_collection``), so they take the sharding types and kernels TorchRec
offers. What differs from a stock EBC happens on either side of it::

    input KJT (logical ids, data parallel)
      -> id_transform (no grad; one fused kernel for every table and feature; output already in sharding order)
      -> the inner EBC's input dists (MEmCom's row-wise features bucketed over their scrambled ids s, n_pad of them;
         on one rank every sharding's is the identity: ``_compat.init_input_dists``)
      -> rank r, MEmCom only: rows = h(s) - r m / W, per-sample weights w_local[s - r n_pad / W] (* x); one kernel
         (on one rank the transform already wrote the rows h(s) and the slots of w: one gather)
      -> the inner EBC's lookups (fused TBE optimizers) and output dists
      -> combine (QR product, LMA chunk concatenation, MEAN division) -> KeyedTensor of the logical features, its
         keys in any order as a sharded TorchRec EBC's are (a combine that only reorders whole features relabels)

Row-wise, MEmCom's hash maps bucket ``b`` of scrambled ids onto bucket ``b``'s block of ``U`` (``W | B``), so the rank
that owns ``U[h(s)]`` also owns ``w[s]``: ``w`` never crosses the network. Its weights are updated in backward by
``EntityWeightOptimizer`` with each table's rule and learning rate. Gradient semantics: TorchRec scales per-sample
weight gradients by ``W`` (``CommOpGradientScaling``) while the tables' gradients are divided by ``W``; the
optimizer undoes the former (``grad_scale = 1 / W``), so ``w`` and ``U`` see the same mean-over-ranks loss. Where
that factor is 1 (one rank) the scaling is left out (``_compat.skip_unit_weight_gradient_scaling``).
"""

from functools import partial
from typing import Any, Dict, FrozenSet, Iterable, Iterator, List, Optional, Tuple, Type

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embedding_types import BaseEmbeddingSharder, KJTList, ShardedEmbeddingModule
from torchrec.distributed.embeddingbag import (
    EmbeddingBagCollectionContext,
    EmbeddingBagCollectionSharder,
    ShardedEmbeddingBagCollection,
)
from torchrec.distributed.fused_params import (
    FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE,
    FUSED_PARAM_EMBEDDING_TABLE_OFFSET_TYPE,
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
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import MEmComEmbeddingBagConfig
from torchrec_memcom.distributed import _compat
from torchrec_memcom.distributed.local_entity_weights import LocalEntityWeights
from torchrec_memcom.lsh import Batch
from torchrec_memcom.modules.compressed import (
    CompressedEmbeddingBagCollection,
    check_fingerprint,
    fingerprint_json,
    fingerprint_of,
    signature_coverage_of,
)
from torchrec_memcom.modules.transform import EntitySlots, IdTransform
from torchrec_memcom.ops import IdOp

__all__ = [
    "ALL_SHARDING_TYPES",
    "CompressedEmbeddingBagCollectionSharder",
    "ShardedCompressedEmbeddingBagCollection",
    "check_row_wise_buckets",
    "lma_sends_raw_ids",
    "physical_index_dtype",
]

ALL_SHARDING_TYPES: List[str] = [
    ShardingType.DATA_PARALLEL.value,
    ShardingType.TABLE_WISE.value,
    ShardingType.COLUMN_WISE.value,
    ShardingType.TABLE_COLUMN_WISE.value,
    ShardingType.ROW_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
    ShardingType.GRID_SHARD.value,
]


def lma_sends_raw_ids(lma_raw_ids: Optional[bool], world_size: int) -> bool:
    """Whether LMA's ids cross table- and column-wise input dists raw (``lma_raw_ids``; ``None``: only between
    ranks, since on one rank the all-to-all is a local copy and expanding after it costs a second pass of host
    calls)."""
    return world_size > 1 if lma_raw_ids is None else lma_raw_ids


_INT32_MAX = 2**31 - 1


def physical_index_dtype(
    module: CompressedEmbeddingBagCollection, fused_params: Optional[Dict[str, Any]]
) -> torch.dtype:
    """The index dtype of the physical tables' lookup: the one ``fused_params`` names (TorchRec's
    ``embedding_table_index_type``), else int32 when everything an index can hold fits in it: every logical table's
    ids (LMA's raw ids and stock tables' ids cross the input dist as they are), MEmCom's scrambled ids (``n_pad``),
    and the physical tables' rows, also summed (FBGEMM's backward sorts ``table offset + row`` in the index dtype).
    Compressed tables are small, so int32 is the rule: half the bytes through the input dist, the lookup and FBGEMM's
    sort."""
    limits = [(t.name, t.num_embeddings) for t in module.embedding_bag_configs()]
    physical = 0
    for m in module.methods().values():
        for t in m.physical_tables():
            limits.append((t.name, t.num_embeddings))
            physical += t.num_embeddings
        if m.uses_entity_weights:
            limits += [(t.name, t.bucketed_hash().padded_num_embeddings) for t in m.tables]  # type: ignore[attr-defined]
    limits.append(("all physical tables together", physical))
    too_big = [(name, n) for name, n in limits if n > _INT32_MAX]
    asked = (fused_params or {}).get(FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE)
    if asked is None:
        return torch.int64 if too_big else torch.int32
    if asked not in (torch.int32, torch.int64):
        raise ValueError(f"fused_params {FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE}: int32 or int64, got {asked}")
    if asked == torch.int32 and too_big:
        raise ValueError(
            f"fused_params {FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE}=torch.int32, but ids of {too_big[0][0]} reach "
            f"{too_big[0][1]:,} > 2**31 - 1: use torch.int64 (or leave it unset)"
        )
    return asked


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


class CompressedContext(EmbeddingBagCollectionContext):
    """Per-batch state: the inner EBC's context plus the ``(B, F_mean)`` bag sizes of MEAN-pooled features and, when
    the transform computes MEmCom's rows, per sharding the entity-weight slots of its values (``None``: no MEmCom)."""

    def __init__(self) -> None:
        super().__init__()
        self.divisors: Optional[torch.Tensor] = None
        self.entity_slots: Optional[List[Optional[torch.Tensor]]] = None

    def record_stream(self, stream: torch.Stream) -> None:
        super().record_stream(stream)
        if self.divisors is not None:
            self.divisors.record_stream(stream)
        for slots in self.entity_slots or []:
            if slots is not None:
                slots.record_stream(stream)


# Sharding types whose input dist sends each id to a rank holding whole rows of its table (so it can compute rows there)
_WHOLE_ROWS = frozenset(
    t.value for t in (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE, ShardingType.TABLE_COLUMN_WISE)
)


def _materialize(transform: IdTransform, device: torch.device) -> IdTransform:
    """The transform on ``device``; one built on ``meta`` is allocated there and its state reset (the caller's
    ``reset_parameters`` refills it)."""
    if any(b.is_meta for b in transform.buffers()):
        return transform.to_empty(device=device)
    return transform.to(device)


class ShardedCompressedEmbeddingBagCollection(
    ShardedEmbeddingModule[KJTList, List[torch.Tensor], KeyedTensor, CompressedContext],
    FusedOptimizerModule,
):
    """Sharded ``CompressedEmbeddingBagCollection`` (any mix of methods; see the module docstring).

    Output: like a sharded TorchRec ``EmbeddingBagCollection``'s, a ``KeyedTensor`` whose keys may come in another
    order than the tables' (read features by name: ``to_dict()``, ``KeyedTensor.regroup``, as TorchRec's ``DLRM``
    does); where the physical columns only need reordering, no copy is made.

    State dict: the unsharded FQNs. ``_embedding_bag_collection.embedding_bags.<physical>.weight`` and
    ``entity_weights.<t>`` are ShardedTensors (row blocks of the tables and of ``w``), so
    ``torch.distributed.checkpoint`` saves and reshards them; ``id_transform.signatures.<t>`` (LMA) are replicated;
    ``_extra_state`` describes every table (method, sizes, hash parameters) and refuses a checkpoint of other tables.
    """

    def __init__(
        self,
        module: CompressedEmbeddingBagCollection,
        table_name_to_parameter_sharding: Dict[str, ParameterSharding],
        ebc_sharder: EmbeddingBagCollectionSharder,
        env: ShardingEnv,
        device: torch.device,
        module_fqn: Optional[str] = None,
        lma_raw_ids: Optional[bool] = None,
        memcom_rows_in_transform: bool = True,
    ) -> None:
        super().__init__()
        self._unsharded_type: Type[CompressedEmbeddingBagCollection] = type(module)
        self._embedding_bag_configs = module.embedding_bag_configs()
        self._is_weighted = module.is_weighted()
        self._methods = module.methods()
        self._device = device
        self._env = env
        self._pg = env.process_group
        self._world_size = env.world_size
        self._rank = env.rank
        plan = table_name_to_parameter_sharding
        self._check_plan(module, plan)

        from_meta = any(b.is_meta for b in module.id_transform.buffers())
        self.id_transform: IdTransform = _materialize(module.id_transform, device)
        self._index_dtype = physical_index_dtype(module, ebc_sharder.fused_params)
        if self._index_dtype == torch.int32:  # the transform writes int32 ids and lengths: no conversion in the lookup
            offset_type = (ebc_sharder.fused_params or {}).get(FUSED_PARAM_EMBEDDING_TABLE_OFFSET_TYPE, torch.int32)
            ebc_sharder = _compat.with_fused_params(
                ebc_sharder,
                {
                    FUSED_PARAM_EMBEDDING_TABLE_INDEX_TYPE: torch.int32,
                    FUSED_PARAM_EMBEDDING_TABLE_OFFSET_TYPE: offset_type,
                },
            )
        self._embedding_bag_collection: ShardedEmbeddingBagCollection = ebc_sharder.shard(
            module._embedding_bag_collection, plan, env=env, device=device, module_fqn=module_fqn
        )
        self._lookups: List[nn.Module] = _compat.lookups(self._embedding_bag_collection)
        _compat.skip_unit_weight_gradient_scaling(self._embedding_bag_collection)
        inner = self._embedding_bag_collection

        # MEmCom: which physical features are MEmCom's, and their tables.
        self._memcom: Dict[str, MEmComEmbeddingBagConfig] = {}
        for m in self._methods.values():
            if m.uses_entity_weights:
                self._memcom.update({t.name: t for t in m.tables})  # type: ignore[misc]
        self._memcom_feature_table = {s.name: s.table for s in self.id_transform.segments() if s.table in self._memcom}
        self._weighted_lookup = self._is_weighted or bool(self._memcom)

        shardings = _compat.sharding_feature_names(inner)
        self._sharding_order: Tuple[str, ...] = tuple(f for fs in shardings for f in fs)
        n_pad = {
            f: self._memcom[t].bucketed_hash().padded_num_embeddings for f, t in self._memcom_feature_table.items()
        }
        _compat.init_input_dists(inner, list(self._sharding_order), hash_sizes=n_pad, single_rank=self._world_size == 1)
        self._sharding_has_memcom = [any(f in self._memcom_feature_table for f in fs) for fs in shardings]
        # Features whose CUSTOM ids (LMA's chunk locations) all go to tables whose input dist sends every id to whole
        # rows cross it as raw ids, expanded on the receiving rank (``IdTransform.expand``; ``lma_sends_raw_ids``)
        custom = [s for s in self.id_transform.segments() if s.op == IdOp.CUSTOM]
        off_rows = {s.feature for s in custom if s.table not in plan or plan[s.table].sharding_type not in _WHOLE_ROWS}
        raw_ids = lma_sends_raw_ids(lma_raw_ids, self._world_size)
        self._raw: FrozenSet[str] = frozenset({s.feature for s in custom} - off_rows) if raw_ids else frozenset()
        raw_keys = {s.name for s in custom if s.feature in self._raw}
        self._sharding_has_raw = [any(f in raw_keys for f in fs) for fs in shardings]
        self._sharding_key_starts = [0]  # each sharding's first key in the transform's output
        for fs in shardings:
            self._sharding_key_starts.append(self._sharding_key_starts[-1] + len(fs))

        self._entity_slots: Optional[EntitySlots] = None
        if self._memcom:
            self._entity_weights = LocalEntityWeights(
                self._memcom,
                self._memcom_feature_table,
                plan,
                module.entity_weights,
                _compat.table_optimizer_settings(inner),
                self._rank,
                self._world_size,
                self._pg,
                device,
            )
            self.entity_weights_local = self._entity_weights.weight
            if not self._is_weighted:  # the other features' weights are the constant 1: no gradient wanted
                _compat.per_sample_weight_grads_only_for(inner, set(self._memcom))
            if memcom_rows_in_transform and self._slots_in_transform(inner):
                self._entity_slots = self._entity_weights.slots_request()
        # Output projections of narrowed tables: dense, replicated, trained through DDP like the MLPs.
        projections = module.output_projections()
        self._has_projections = projections is not None
        if projections is not None:
            self.projections = nn.ParameterDict()
            for name, p in projections.items():
                local = nn.Parameter(torch.empty(p.shape, device=device))
                with torch.no_grad():
                    if p.is_meta:
                        nn.init.orthogonal_(local)
                    else:
                        local.copy_(p)
                self.projections[name] = local
        # A transform built on meta holds garbage after to_empty: give it the methods' initial state.
        if from_meta:
            for m in self._methods.values():
                if m.transform_state_name is not None:
                    m.reset_state(self)
        self._register_state_dict_hook(self._state_dict_hook)
        self._register_load_state_dict_pre_hook(self._load_state_dict_pre_hook, with_module=True)
        self.register_load_state_dict_post_hook(lambda module, _: module.check_signatures_agree())

    # -- construction --------------------------------------------------------------------------------------------------

    def _check_plan(self, module: CompressedEmbeddingBagCollection, plan: Dict[str, ParameterSharding]) -> None:
        owner = {}
        for m in self._methods.values():
            for c in m.physical_tables():
                owner[c.name] = (m, c)
        for name, ps in plan.items():
            method, config = owner[name]
            allowed = method.sharding_types(name)
            if allowed is not None and ps.sharding_type not in allowed:
                raise ValueError(
                    f"{method.name} table '{name}': sharding type {ps.sharding_type} is not supported (supported: "
                    f"{allowed}); constrain it, e.g. with torchrec_memcom.distributed.planner.default_constraints"
                )
            if config.embedding_dim % 4 != 0:
                raise ValueError(
                    f"{method.name} physical table '{name}' has dim {config.embedding_dim}: FBGEMM's sharded kernels "
                    "need a multiple of 4 (LMA: chunk_size=1 is the unsharded reference path only)"
                )
            if method.uses_entity_weights and ps.sharding_type == ShardingType.ROW_WISE.value:
                table = method.by_name[name]
                assert isinstance(table, MEmComEmbeddingBagConfig)
                check_row_wise_buckets(table, self._world_size)
                m_rows = table.bucketed_hash().num_rows
                shards = getattr(ps.sharding_spec, "shards", None) or []
                expected = [
                    (r * m_rows // self._world_size, m_rows // self._world_size) for r in range(self._world_size)
                ]
                got = [(s.shard_offsets[0], s.shard_sizes[0]) for s in shards]
                if got and got != expected:
                    raise ValueError(
                        f"MEmCom table '{name}': the row-wise plan splits U as {got}, but co-location needs equal "
                        f"blocks {expected}"
                    )

    def _slots_in_transform(self, inner: ShardedEmbeddingBagCollection) -> bool:
        """Whether the transform itself computes MEmCom's shared rows and entity-weight slots
        (``IdTransform.transform_with_slots``, leaving one gather after the dist): when every sharding with MEmCom
        features hands the transform's KJT to the lookup as it is (one rank, whose input dists are the
        identity). Not with LMA's raw ids, whose expansion after the dist moves the values."""
        if self._world_size != 1 or self._raw:
            return False
        identity = _compat.identity_input_dists(inner)
        return all(same for same, has in zip(identity, self._sharding_has_memcom) if has)

    def reset_parameters(self) -> None:
        if self._has_projections:
            for p in self.projections.values():
                nn.init.orthogonal_(p)
        if self._memcom:
            self._entity_weights.reset()

    # -- the EmbeddingBagCollection interface ------------------------------------------------------------------------

    def embedding_bag_configs(self) -> List[Any]:
        return self._embedding_bag_configs

    def is_weighted(self) -> bool:
        return self._is_weighted

    def create_context(self) -> CompressedContext:
        return CompressedContext()

    @property
    def unsharded_module_type(self) -> Type[CompressedEmbeddingBagCollection]:
        return self._unsharded_type

    # -- forward -------------------------------------------------------------------------------------------------------

    def input_dist(self, ctx: CompressedContext, features: KeyedJaggedTensor) -> Awaitable[Awaitable[KJTList]]:
        with torch.no_grad():
            if self._entity_slots is not None:
                physical, ctx.divisors, slots = self.id_transform.transform_with_slots(
                    features, self._entity_slots, order=self._sharding_order, index_dtype=self._index_dtype
                )
                ctx.entity_slots = self._slots_by_sharding(physical, slots)
            else:
                physical, ctx.divisors = self.id_transform(
                    features, order=self._sharding_order, raw=self._raw, index_dtype=self._index_dtype
                )
        return self._embedding_bag_collection.input_dist(ctx, physical)

    def _slots_by_sharding(self, physical: KeyedJaggedTensor, slots: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """The slots of each sharding's values (TorchRec's input dist splits the KJT at its keys' value offsets)."""
        if len(self._sharding_has_memcom) == 1:
            return [slots]
        at = physical.offset_per_key()
        starts = self._sharding_key_starts
        return [
            slots[at[starts[i]] : at[starts[i + 1]]] if has else None for i, has in enumerate(self._sharding_has_memcom)
        ]

    def _post_dist(self, ctx: CompressedContext, dist_input: KJTList) -> KJTList:
        """LMA's chunk locations of raw ids; MEmCom's rows and weights, and weight 1 for the other features when the
        lookup is weighted."""
        if self._raw:
            with torch.no_grad():
                dist_input = KJTList(
                    [
                        self.id_transform.expand(kjt, self._raw, self._index_dtype) if has else kjt
                        for kjt, has in zip(dist_input, self._sharding_has_raw)
                    ]
                )
        if not self._weighted_lookup or self._is_weighted and not self._memcom:
            return dist_input
        out = []
        for i, kjt in enumerate(dist_input):
            if self._sharding_has_memcom[i] and ctx.entity_slots is not None:  # the transform wrote rows and slots
                slots = ctx.entity_slots[i]
                assert slots is not None
                w = self._entity_weights.weights_at(slots)
                out.append(_with(kjt, kjt.values(), w * kjt.weights() if self._is_weighted else w))
            elif self._sharding_has_memcom[i]:
                out.append(self._weighted_rows(kjt))
            elif kjt.weights_or_none() is None:
                out.append(_with(kjt, kjt.values(), torch.ones(kjt.values().shape, device=kjt.values().device)))
            else:
                out.append(kjt)
        return KJTList(out)

    def _weighted_rows(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Local shared rows and per-sample weights ``w_local[j] (* x)`` of the ids this rank received."""
        if len(kjt.keys()) == 0:  # table-wise: this rank holds none of the tables of this sharding
            return kjt
        rows, w, offsets = self._entity_weights.rows_and_weights(kjt)
        if self._is_weighted:
            w = w * kjt.weights()
        return _with(kjt, rows, w, offsets)

    def compute(self, ctx: CompressedContext, dist_input: KJTList) -> List[torch.Tensor]:
        return self._embedding_bag_collection.compute(ctx, self._post_dist(ctx, dist_input))

    def _with_combine(
        self, ctx: CompressedContext, awaitable: LazyAwaitable[KeyedTensor]
    ) -> LazyAwaitable[KeyedTensor]:
        projections = self.projections if self._has_projections else None
        # keys in any order, as a sharded TorchRec EBC's: a combine that only reorders whole features copies nothing
        awaitable.callbacks.append(
            partial(self.id_transform.combine, divisors=ctx.divisors, projections=projections, keep_order=False)
        )
        return awaitable

    def output_dist(self, ctx: CompressedContext, output: List[torch.Tensor]) -> LazyAwaitable[KeyedTensor]:
        return self._with_combine(ctx, self._embedding_bag_collection.output_dist(ctx, output))

    def compute_and_output_dist(self, ctx: CompressedContext, input: KJTList) -> LazyAwaitable[KeyedTensor]:
        inner = self._embedding_bag_collection
        return self._with_combine(ctx, inner.compute_and_output_dist(ctx, self._post_dist(ctx, input)))

    # -- optimizer and state ---------------------------------------------------------------------------------------

    @property
    def fused_optimizer(self) -> KeyedOptimizer:
        """The physical tables' fused optimizers (and MEmCom's entity-weight optimizer), keyed by this module's
        parameter names (``_embedding_bag_collection.embedding_bags.<t>.weight``, ``entity_weights.<t>``), as
        ``state_dict`` names them."""
        inner = self._embedding_bag_collection.fused_optimizer
        # The inner EBC's optimizers (beside MEmCom's) in one level: the parameter keys nesting would give, and a step
        # walks one CombinedOptimizer (and its step hooks) less.
        parts = inner.optimizers if isinstance(inner, CombinedOptimizer) else [("", inner)]
        prefix = "_embedding_bag_collection"
        flat: List[Any] = [(f"{prefix}.{key}" if key else prefix, opt) for key, opt in parts]
        if self._memcom:
            flat.append(self._entity_weights.optimizer)
        return CombinedOptimizer(flat)

    def sharded_parameter_names(self, prefix: str = "") -> Iterator[str]:
        for fqn, _ in self.named_parameters():
            if not fqn.startswith("projections."):  # data parallel: DDP syncs their gradients
                yield append_prefix(prefix, fqn)
        for fqn, _ in self.named_buffers():
            yield append_prefix(prefix, fqn)

    def get_extra_state(self) -> str:
        return fingerprint_json(self.fingerprint())

    def set_extra_state(self, state: Any) -> None:
        check_fingerprint(state, self.fingerprint())

    def fingerprint(self) -> Dict[str, Dict[str, Any]]:
        return fingerprint_of(self._methods.values(), self._embedding_bag_configs)

    def fit_signatures(
        self, batches: Iterable[Batch], max_rows: Optional[int] = None, progress: bool = False
    ) -> Dict[str, float]:
        """Fits LMA signatures on every rank (each must read the same rows), then checks that the ranks agree."""
        coverage: Dict[str, float] = {}
        for m in self._methods.values():
            coverage.update(m.fit(self, batches, max_rows, progress))
        self.check_signatures_agree()
        return coverage

    def signature_coverage(self) -> Dict[str, float]:
        return signature_coverage_of(self._methods.values(), self.id_transform)

    @torch.no_grad()
    def check_signatures_agree(self) -> None:
        """Raises ``ValueError`` naming the LMA tables whose replicated signatures differ between ranks (collective)."""
        sigs = getattr(self.id_transform, "signatures", None)
        if sigs is None or self._world_size == 1:
            return
        names = [name for name, _ in sigs.named_buffers()]
        sums = []
        for _, buf in sigs.named_buffers():
            x = buf.to(torch.int64).reshape(-1)
            position = torch.arange(x.numel(), device=x.device, dtype=torch.int64) % 1_000_003 + 1
            sums.append((x * position).sum())
        local = torch.stack(sums) if sums else torch.zeros(0, dtype=torch.int64, device=self._device)
        lo, hi = local.clone(), local.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=self._pg)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=self._pg)
        bad = [n for n, a, b in zip(names, lo.tolist(), hi.tolist()) if a != b]
        if bad:
            raise ValueError(
                f"LMA signatures of tables {bad} differ between ranks: every rank must fit them on the same rows "
                "(or load the same checkpoint); the same id would get different embeddings on different ranks"
            )

    @staticmethod
    def _state_dict_hook(
        module: "ShardedCompressedEmbeddingBagCollection", destination: Dict[str, Any], prefix: str, _: Any
    ) -> None:
        if module._memcom:
            module._entity_weights.state_dict_into(destination, prefix)

    @staticmethod
    def _load_state_dict_pre_hook(
        module: "ShardedCompressedEmbeddingBagCollection",
        state_dict: Dict[str, Any],
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: List[str],
        unexpected_keys: List[str],
        error_msgs: List[str],
    ) -> None:
        if module._memcom:
            module._entity_weights.load_from(state_dict, prefix)


def _with(
    kjt: KeyedJaggedTensor,
    values: torch.Tensor,
    weights: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor] = None,
) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=kjt.keys(),
        values=values,
        lengths=kjt.lengths(),
        offsets=offsets,
        weights=weights,
        stride=kjt.stride(),
        length_per_key=kjt.length_per_key_or_none(),
        offset_per_key=kjt.offset_per_key_or_none(),
    )


class CompressedEmbeddingBagCollectionSharder(BaseEmbeddingSharder[CompressedEmbeddingBagCollection]):
    """Shards a ``CompressedEmbeddingBagCollection`` (or one of its per-method subclasses, ``module_type``).

    The planner sees the physical tables (``shardable_parameters``); MEmCom's weights and LMA's signatures are added
    by ``torchrec_memcom.distributed.planner``. Every sharding type is offered (TorchRec lists the row-wise types for
    cuda only; they run on gloo too); MEmCom tables support row-wise (``W | num_buckets``) and table-wise, which
    ``planner.default_constraints`` states for the planner.

    Args:
        module_type (Type[CompressedEmbeddingBagCollection]): the exact collection type (DMP looks sharders up by it).
        ebc_sharder (Optional[EmbeddingBagCollectionSharder]): shards the physical tables (default: a new one with
            ``fused_params``).
        fused_params (Optional[Dict[str, Any]]): TBE kwargs (optimizer, learning_rate, ...).
        qcomm_codecs_registry (Optional[Dict[str, QuantizedCommCodecs]]): quantized comms.
        lma_raw_ids (Optional[bool]): LMA memories placed table- or column-wise get each id once through the input
            dist (its ``d / Z`` chunk locations are computed on the receiving rank) instead of ``d / Z`` locations;
            ``None`` (default): when the world has more than one rank (on one, the all-to-all is a local copy).
        memcom_rows_in_transform (bool): where every MEmCom sharding's input dist is the identity (one rank,
            table-wise), the id transform writes MEmCom's shared rows and weight slots in its own launch and one
            gather remains after the dist (default); ``False``: the rows kernel after the dist, as on several ranks
            (the same results; ``bench_sharded.py --no-memcom-rows-in-transform`` measures the difference).
    """

    def __init__(
        self,
        module_type: Type[CompressedEmbeddingBagCollection] = CompressedEmbeddingBagCollection,
        ebc_sharder: Optional[EmbeddingBagCollectionSharder] = None,
        fused_params: Optional[Dict[str, Any]] = None,
        qcomm_codecs_registry: Optional[Dict[str, QuantizedCommCodecs]] = None,
        lma_raw_ids: Optional[bool] = None,
        memcom_rows_in_transform: bool = True,
    ) -> None:
        super().__init__(fused_params=fused_params, qcomm_codecs_registry=qcomm_codecs_registry)
        self._module_type = module_type
        self._lma_raw_ids = lma_raw_ids
        self._memcom_rows_in_transform = memcom_rows_in_transform
        self._ebc_sharder: EmbeddingBagCollectionSharder = ebc_sharder or EmbeddingBagCollectionSharder(
            fused_params=fused_params, qcomm_codecs_registry=self.qcomm_codecs_registry
        )

    def shard(
        self,
        module: CompressedEmbeddingBagCollection,
        params: Dict[str, ParameterSharding],
        env: ShardingEnv,
        device: Optional[torch.device] = None,
        module_fqn: Optional[str] = None,
    ) -> ShardedCompressedEmbeddingBagCollection:
        return ShardedCompressedEmbeddingBagCollection(
            module,
            params,
            self._ebc_sharder,
            env,
            device or torch.device("cpu"),
            module_fqn,
            self._lma_raw_ids,
            self._memcom_rows_in_transform,
        )

    @property
    def fused_params(self) -> Optional[Dict[str, Any]]:
        return self._ebc_sharder.fused_params

    def shardable_parameters(self, module: CompressedEmbeddingBagCollection) -> Dict[str, nn.Parameter]:
        return self._ebc_sharder.shardable_parameters(module._embedding_bag_collection)

    def sharding_types(self, compute_device_type: str) -> List[str]:
        return list(ALL_SHARDING_TYPES)

    @property
    def module_type(self) -> Type[CompressedEmbeddingBagCollection]:
        return self._module_type
