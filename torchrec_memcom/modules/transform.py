# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The id transform of a whole collection: logical KJT -> physical KJT, and physical pooled -> logical pooled.

``IdTransform.forward`` checks the input KJT and maps it, for every table and feature at once, to the KJT of the
physical tables (``ops.transform_segments``: one fused kernel on CUDA); ``combine`` turns the physical tables' pooled
output back into the logical features. It holds no trainable state, so a sharded collection runs it on the
data-parallel side, before its input dist and after its output dist.
"""

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.modules.combine import CombinePlan
from torchrec_memcom.modules.input_check import InputCheck
from torchrec_memcom.modules.method import Combine, CustomJob, Segment, TableMethod
from torchrec_memcom.ops import (
    NUM_OP_PARAMS,
    STATS_INIT,
    IdOp,
    SegmentPlacement,
    SlotRequest,
    transform_segments,
    triton_enabled,
)

__all__ = ["EntitySlots", "IdTransform"]

_ID_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True)
class EntitySlots:
    """Asks ``IdTransform.transform_with_slots`` for MEmCom's shared rows and entity-weight slots in the transform
    itself (for a lookup that receives the transform's output as it is: one rank, an identity input dist).

    ``bases``: ``(physical feature, base)`` of each ``SCRAMBLE`` segment to finish: its ids become the shared rows
    ``h(s)`` (the ``HASH`` op on the same parameters) and its slots ``s + base``; every other segment's slots are
    ``ones + position % ops.ONE_SLOTS``, the slots of the constant weight 1; ``dtype``: the slots' dtype.
    """

    bases: Tuple[Tuple[str, int], ...]
    ones: int
    dtype: torch.dtype = torch.int32


@dataclass
class _InputPlan:
    """For one input key order and output order: where each logical feature is in the input, the input key whose
    lengths each output segment takes (-1: sent empty), whether those are the input's keys in order, the rows of MEAN
    features."""

    position: List[int]
    length_sources: torch.Tensor
    same_lengths: bool  # the output's lengths are the input's, in order (no gather needed unless the dtype changes)
    mean_rows: torch.Tensor
    # the kernel's SegmentPlacement.place for all output segments and for the live ones; two statistics buffers
    # the batches take in turn (transform_segments fills one and resets the other: no per-batch template copy)
    place: torch.Tensor
    place_live: torch.Tensor
    stats_pair: List[torch.Tensor]


@dataclass
class _ExpandPlan:
    """``IdTransform.expand`` for one key order: per key, the key whose ids, lengths and weights it takes; the raw
    features' (feature, table, key holding the ids, output keys of each column); the copy kernel's rows."""

    holders: Optional[List[Tuple[str, str, int, List[List[int]]]]]  # None: no raw feature among the keys
    source_keys: List[int]
    length_rows: torch.Tensor
    static_host: List[List[int]]
    copy_rows: List[int]  # the keys the segments kernel has work for without weights (all but the raw features')
    static: torch.Tensor  # the static rows of copy_rows
    static_all: torch.Tensor  # every key's static row (weights are copied for the raw features' keys too)
    stats: torch.Tensor  # unchecked rows: a buffer for the kernel's statistics (the ids were checked before the dist)


@dataclass
class _Order:
    """A physical output order of the segments (the physical EBC's feature order, or a sharding's)."""

    segments: List[int]  # segment indices, in output order
    keys: List[str]
    static_host: List[List[int]]
    sources: List[int]  # logical feature of each output segment
    # logical feature -> per column of its custom_ids(), the output positions of that CUSTOM segment
    custom: Dict[int, List[List[int]]]
    # output positions the transform kernel has work for when no weights are written: all but the CUSTOM segments
    # that are not their feature's checked one (LMA: the chunks after the first)
    live: List[int]
    # output positions sent empty: the CUSTOM segments of raw features after their first (``expand`` fills them)
    empty: FrozenSet[int] = frozenset()
    # with EntitySlots: per output position, its ops.SlotRequest row (kind, base)
    slot_rows: Optional[List[Tuple[int, int]]] = None


class IdTransform(nn.Module):
    """Maps KJTs of logical ids to KJTs of the physical tables, and their pooled output back (see module docstring).

    Args:
        feature_tables (Sequence[Tuple[str, EmbeddingBagConfig]]): (logical feature, table), in output order.
        methods (Dict[str, TableMethod]): the method of each logical table, by table name.
        segments (Sequence[Segment]): every physical feature, logical features in order.
        combines (Sequence[Combine]): per logical feature, in order.
        is_weighted (bool): input KJTs carry per-id weights.
        out_weighted (bool): the physical KJT carries weights (input weights, or 1 where a segment carries none).
        physical_order (Sequence[str]): physical feature names in the physical EBC's order (the default output).
    """

    def __init__(
        self,
        feature_tables: Sequence[Tuple[str, EmbeddingBagConfig]],
        methods: Dict[str, TableMethod],
        segments: Sequence[Segment],
        combines: Sequence[Combine],
        is_weighted: bool,
        out_weighted: bool,
        physical_order: Sequence[str],
    ) -> None:
        super().__init__()
        self._feature_tables = list(feature_tables)
        self._features = [f for f, _ in self._feature_tables]
        self._feature_index = {f: i for i, f in enumerate(self._features)}
        self._methods = methods
        self._segments = list(segments)
        self._combines = list(combines)
        self._is_weighted = is_weighted
        self.out_weighted = out_weighted
        self._check_meta = [(f, t.name, t.num_embeddings) for f, t in self._feature_tables]
        self.input_check = InputCheck()
        self._mean_features = [self._feature_index[c.feature] for c in self._combines if c.mean]
        checked = set()
        self._static_rows: List[List[int]] = []
        for seg in self._segments:
            f = self._feature_index[seg.feature]
            params = list(seg.params) + [0] * (NUM_OP_PARAMS - len(seg.params))
            check = int(f not in checked)
            checked.add(f)
            n = self._feature_tables[f][1].num_embeddings
            self._static_rows.append([f, int(seg.op), check, int(seg.carry_weight), n, *params])
        # CUSTOM segment name -> (its logical feature, its column in custom_ids()), and columns per feature
        self._custom_column: Dict[str, Tuple[str, int]] = {}
        self._custom_columns: Dict[str, int] = {}
        for seg in self._segments:
            if seg.op == IdOp.CUSTOM:
                k = self._custom_columns.get(seg.feature, 0)
                self._custom_column[seg.name] = (seg.feature, k)
                self._custom_columns[seg.feature] = k + 1
        self._expand_plans: Dict[Tuple[Tuple[str, ...], FrozenSet[str], torch.device], _ExpandPlan] = {}
        self._orders: Dict[Tuple[Tuple[str, ...], FrozenSet[str], Optional[EntitySlots]], _Order] = {}
        self._device_cache: Dict[Tuple[object, ...], torch.Tensor] = {}
        self._input_plans: Dict[Tuple[Tuple[str, ...], Tuple[str, ...], torch.device], _InputPlan] = {}
        self._combine_plans: Dict[Tuple[Tuple[str, ...], bool], CombinePlan] = {}
        self._no_divisors: Dict[Tuple[int, torch.device], torch.Tensor] = {}
        self.default_order = tuple(physical_order)
        self._order(self.default_order)  # validates the order

    # -- layout ----------------------------------------------------------------------------------------------------

    def feature_names(self) -> List[str]:
        """Logical output keys, in order."""
        return list(self._features)

    def physical_feature_names(self) -> List[str]:
        return [s.name for s in self._segments]

    def segments(self) -> List[Segment]:
        return list(self._segments)

    def _order(
        self, keys: Tuple[str, ...], raw: FrozenSet[str] = frozenset(), slots: Optional[EntitySlots] = None
    ) -> _Order:
        """The plan of an output order; ``raw``: logical features whose CUSTOM segments go out as raw ids (the first
        segment carries the ids, the others are empty; ``expand`` writes them after the input dist); ``slots``: see
        ``EntitySlots``."""
        if (keys, raw, slots) not in self._orders:
            index = {s.name: i for i, s in enumerate(self._segments)}
            # Column-wise shardings list a feature once per column shard: a segment may repeat, none may be missing.
            if set(keys) != set(index) or len(keys) < len(index):
                raise ValueError(f"physical order {list(keys)} does not list the segments {sorted(index)}")
            unknown = raw - {s.feature for s in self._segments if s.op == IdOp.CUSTOM}
            if unknown:
                raise ValueError(f"features {sorted(unknown)} have no CUSTOM segments to send as raw ids")
            segs = [index[k] for k in keys]
            custom: Dict[int, List[List[int]]] = {}
            for s in self._segments:
                if s.op == IdOp.CUSTOM and s.feature not in raw:
                    at = [pos for pos, k in enumerate(keys) if k == s.name]
                    feature, k = self._custom_column[s.name]
                    columns = custom.setdefault(
                        self._feature_index[feature], [[] for _ in range(self._custom_columns[feature])]
                    )
                    columns[k] = at
            static_host = [list(self._static_rows[i]) for i in segs]
            empty = set()
            for p, i in enumerate(segs):
                if self._segments[i].feature in raw:
                    if self._custom_column[self._segments[i].name][1] == 0:  # column 0 carries the raw ids
                        static_host[p][1] = int(IdOp.IDENTITY)
                        static_host[p][2] = 1  # and their range check
                    else:
                        empty.add(p)
            slot_rows = None
            if slots is not None:
                bases = dict(slots.bases)
                slot_rows = []
                for p, i in enumerate(segs):
                    name = self._segments[i].name
                    if name not in bases:
                        slot_rows.append((0, slots.ones))
                        continue
                    if static_host[p][1] != IdOp.SCRAMBLE:
                        raise ValueError(f"entity slots: physical feature '{name}' is not a SCRAMBLE segment")
                    static_host[p][1] = int(IdOp.HASH)  # the shared rows h(s): the same parameters
                    slot_rows.append((1, bases[name]))
                unknown = set(bases) - set(keys)
                if unknown:
                    raise ValueError(f"entity slots name features {sorted(unknown)} that are not in the order")
            self._orders[(keys, raw, slots)] = _Order(
                segments=segs,
                keys=list(keys),
                static_host=static_host,
                sources=[self._static_rows[i][0] for i in segs],
                custom=custom,
                live=[p for p, row in enumerate(static_host) if row[1] != IdOp.CUSTOM or row[2]],
                empty=frozenset(empty),
                slot_rows=slot_rows,
            )
        return self._orders[(keys, raw, slots)]

    def _device_tensors(
        self,
        keys: Tuple[str, ...],
        device: torch.device,
        live: bool = False,
        raw: FrozenSet[str] = frozenset(),
        slots: Optional[EntitySlots] = None,
    ) -> torch.Tensor:
        """The static segment table of an order (``live``: its ``_Order.live`` rows only), on ``device`` (cached)."""
        key = (keys, device, live, raw, slots)
        if key not in self._device_cache:
            plan = self._order(keys, raw, slots)
            rows = [plan.static_host[p] for p in plan.live] if live else plan.static_host
            self._device_cache[key] = _rows_tensor(rows, device)
        return self._device_cache[key]

    def _slot_rows(self, keys: Tuple[str, ...], device: torch.device, slots: EntitySlots) -> torch.Tensor:
        """An order's ``ops.SlotRequest`` rows on ``device`` (cached)."""
        key = (keys, device, "slots", slots)
        if key not in self._device_cache:
            rows = self._order(keys, frozenset(), slots).slot_rows
            self._device_cache[key] = torch.tensor(rows, dtype=torch.int64).reshape(-1, 2).to(device)
        return self._device_cache[key]

    def _input_plan(
        self, input_keys: Tuple[str, ...], order: Tuple[str, ...], device: torch.device, raw: FrozenSet[str]
    ) -> "_InputPlan":
        """Where each logical feature sits in an input KJT of ``input_keys``, for an output ``order`` (cached)."""
        key = (input_keys, order, device, raw)
        plan = self._input_plans.get(key)
        if plan is None:
            index = {k: i for i, k in enumerate(input_keys)}
            position = [index[f] for f in self._features]
            out = self._order(order, raw)
            sources = [position[f] for f in out.sources]
            identity = sources == list(range(len(input_keys))) and not out.empty
            keys = [-1 if p in out.empty else s for p, s in enumerate(sources)]
            stats = torch.tensor([STATS_INIT] * (len(self._features) + 1), device=device)
            place = torch.tensor(keys + list(range(len(keys))), dtype=torch.int64, device=device)
            plan = _InputPlan(
                position=position,
                length_sources=place[: len(keys)],
                same_lengths=identity,
                mean_rows=torch.tensor([position[f] for f in self._mean_features], dtype=torch.int64, device=device),
                place=place,
                place_live=torch.tensor(keys + out.live, dtype=torch.int64, device=device),
                stats_pair=[stats, stats.clone()],
            )
            self._input_plans[key] = plan
        return plan

    # -- input -----------------------------------------------------------------------------------------------------

    def check(self, features: KeyedJaggedTensor) -> None:
        """Checks the structure of ``features`` (no host read of device data).

        Extra keys are ignored, as in ``EmbeddingBagCollection``; missing features, non-integer ids, lengths that do
        not add up to the values, weights of the wrong size or dtype, missing weights of a weighted module and
        variable batch sizes raise ``ValueError`` (ids out of range and negative lengths: see ``InputCheck``).
        """
        keys = features.keys()
        if keys != self._features:
            present = set(keys)
            for feature, table in self._feature_tables:
                if feature not in present:
                    raise ValueError(
                        f"feature '{feature}' of table '{table.name}' is missing from the input KJT (keys: {keys})"
                    )
        if features.variable_stride_per_key():
            raise ValueError("variable batch sizes per feature (variable_stride_per_key) are not supported")
        values = features.values()
        if values.dtype not in _ID_DTYPES:
            raise ValueError(f"KJT values must be int32 or int64 ids, got {values.dtype} (features {keys})")
        if features.lengths().is_floating_point():
            raise ValueError(f"KJT lengths must be integers, got {features.lengths().dtype}")
        if features.lengths().numel() != len(keys) * features.stride():
            raise ValueError(
                f"KJT has {features.lengths().numel()} lengths for {len(keys)} features x stride {features.stride()}"
            )
        weights = features.weights_or_none()
        if self._is_weighted and weights is None:
            raise ValueError("the module is weighted (is_weighted=True) but the input KJT has no weights")
        if weights is not None:
            if weights.numel() != values.numel():
                raise ValueError(
                    f"KJT has {weights.numel()} weights for {values.numel()} values (features {keys}); "
                    "lengths, values and weights must agree"
                )
            if self._is_weighted and weights.dtype != torch.float32:
                raise ValueError(f"KJT weights must be float32 (FBGEMM's per-sample weights), got {weights.dtype}")

    @staticmethod
    def _lengths_per_key(features: KeyedJaggedTensor) -> List[int]:
        """``length_per_key`` (a host read), checked to add up to the values."""
        lengths_per_key = features.length_per_key()
        total, values = sum(lengths_per_key), features.values()
        if total != values.numel():
            raise ValueError(
                f"KJT lengths add up to {total} ids but it holds {values.numel()} values (features {features.keys()}); "
                "lengths, values and weights must agree"
            )
        return lengths_per_key

    def forward(
        self,
        features: KeyedJaggedTensor,
        order: Optional[Tuple[str, ...]] = None,
        raw: FrozenSet[str] = frozenset(),
        index_dtype: torch.dtype = torch.int64,
    ) -> Tuple[KeyedJaggedTensor, torch.Tensor]:
        """Checks ``features``; returns (KJT of the physical features in ``order``, ``(B, F_mean)`` bag sizes of the
        features that are MEAN-pooled when combining).

        The input is read where it lies (no permute of the KJT): each segment's ids are taken at its feature's offset.

        Args:
            features (KeyedJaggedTensor): logical ids (extra keys are ignored).
            order (Optional[Tuple[str, ...]]): physical feature order (default: the physical EBC's).
            raw (FrozenSet[str]): logical features of CUSTOM segments (LMA) to send as raw ids: the first segment
                carries the (range-checked) ids, the others are empty; ``expand`` completes them after the input dist.
            index_dtype (torch.dtype): the output's values dtype, and its lengths' when int32 (the sharded module's
                TBE index type when every id leaving the transform fits in int32: half the bytes through the input
                dist, the lookup and FBGEMM's backward sort, and no conversion launch in TorchRec's lookup).
        """
        out, divisors, _ = self._transform(features, order, raw, index_dtype, None)
        return out, divisors

    def transform_with_slots(
        self,
        features: KeyedJaggedTensor,
        slots: EntitySlots,
        order: Optional[Tuple[str, ...]] = None,
        index_dtype: torch.dtype = torch.int64,
    ) -> Tuple[KeyedJaggedTensor, torch.Tensor, torch.Tensor]:
        """``forward``, with ``slots``' ``SCRAMBLE`` segments finished to shared rows, and the ``(N,)`` entity-weight
        slot of every output value (see ``EntitySlots``), in the same launch."""
        out, divisors, slot_values = self._transform(features, order, frozenset(), index_dtype, slots)
        assert slot_values is not None
        return out, divisors, slot_values

    def _transform(
        self,
        features: KeyedJaggedTensor,
        order: Optional[Tuple[str, ...]],
        raw: FrozenSet[str],
        index_dtype: torch.dtype,
        slots: Optional[EntitySlots],
    ) -> Tuple[KeyedJaggedTensor, torch.Tensor, Optional[torch.Tensor]]:
        self.check(features)
        order = order or self.default_order
        ids = features.values()
        device = ids.device
        plan = self._order(order, raw, slots)
        inputs = self._input_plan(tuple(features.keys()), order, device, raw)
        lengths_per_key = self._lengths_per_key(features)
        in_starts = _exclusive_cumsum(lengths_per_key)
        dynamic: List[Tuple[int, int, int]] = []
        out_lengths: List[int] = []
        offset = 0
        for p, f in enumerate(plan.sources):
            i = inputs.position[f]
            n = 0 if p in plan.empty else lengths_per_key[i]
            dynamic.append((in_starts[i], offset, n))
            out_lengths.append(n)
            offset += n
        weights = features.weights_or_none() if self._is_weighted else None
        lengths = features.lengths()
        static, static_host, run = self._device_tensors(order, device, raw=raw, slots=slots), plan.static_host, dynamic
        slot_request = None
        if slots is not None:  # every segment writes slots
            slot_rows = self._slot_rows(order, device, slots)
            slot_values = torch.empty(offset, dtype=slots.dtype, device=device)
            slot_request = SlotRequest(slot_rows, plan.slot_rows or [], slot_values)
        elif not self.out_weighted and len(plan.live) < len(dynamic):  # launch only segments with work
            static = self._device_tensors(order, device, live=True, raw=raw)
            static_host = [static_host[p] for p in plan.live]
            run = [dynamic[p] for p in plan.live]
        stride = features.stride()
        # the output's lengths: the input's, or gathered per output segment in the transform's launch (also to give
        # them the int32 index dtype)
        lengths_dtype = torch.int32 if index_dtype == torch.int32 else lengths.dtype
        length_sources, lengths_out = None, None
        if not (inputs.same_lengths and lengths.dtype == lengths_dtype):
            length_sources = inputs.length_sources
            lengths_out = torch.empty(len(dynamic) * stride, dtype=lengths_dtype, device=device)
        # two statistics buffers in turn: this batch fills one, and the same launch resets the other for the next
        # batch (no per-batch template copy); first the previous batch's check (it may raise): its asynchronous copy
        # of the buffer about to be reset is then done
        self.input_check.flush()
        stats, reset = inputs.stats_pair
        inputs.stats_pair.reverse()
        place, max_len = None, None
        if run and triton_enabled(ids):
            # where the segments lie the kernel reads from the KJT's offsets when the KJT has them (nothing crosses
            # from the host), else the rows cross in one copy (computing the offsets would cost more launches than
            # the copy; the kernel reading them in pinned host memory took 32-49 us more GPU time per big batch than
            # the copy)
            offsets = features.offsets_or_none()
            if offsets is not None:
                rows = inputs.place_live if len(run) < len(dynamic) else inputs.place
                place = SegmentPlacement(offsets, stride, rows, len(dynamic))
            max_len = max(n for _, _, n in run)
        values, out_weights = transform_segments(
            ids, weights, static, static_host, run, stats, offset, self.out_weighted, max_len, lengths, place, reset,
            length_sources, lengths_out, index_dtype, slot_request,
        )  # fmt: skip
        self.input_check(stats, self._check_meta)  # before CUSTOM segments read per-id state
        jobs: Dict[TableMethod, List[CustomJob]] = {}  # one custom_ids_into call per method
        for f, columns in plan.custom.items():
            i = inputs.position[f]
            feature, table = self._feature_tables[f]
            jobs.setdefault(self._methods[table.name], []).extend(
                _custom_jobs(feature, in_starts[i], lengths_per_key[i], columns, dynamic)
            )
        for method, method_jobs in jobs.items():
            method.custom_ids_into(self, method_jobs, ids, values)
        divisors = self._mean_divisors(lengths.view(-1, stride), inputs.mean_rows)
        out = KeyedJaggedTensor(
            keys=plan.keys,
            values=values,
            lengths=lengths if lengths_out is None else lengths_out,
            weights=out_weights,
            stride=stride,
            length_per_key=out_lengths,
            offset_per_key=_exclusive_cumsum(out_lengths) + [offset],
        )
        return out, divisors, None if slot_request is None else slot_request.out

    def expand(
        self, kjt: KeyedJaggedTensor, raw: FrozenSet[str], index_dtype: torch.dtype = torch.int64
    ) -> KeyedJaggedTensor:
        """Completes a physical KJT that left ``forward(..., raw=raw)`` and crossed an input dist: each raw feature's
        first CUSTOM segment holds ids, its later ones are empty; all of them get the ids' ``custom_ids`` columns
        (LMA's chunk locations) and the first one's lengths and weights. Other keys pass unchanged.

        Two launches whatever the number of features (the segments kernel copies the other keys and the weights and
        gathers every key's lengths; one ``custom_ids_into`` per method writes the columns); no host synchronisation
        when the KJT knows its ``length_per_key`` (TorchRec's input dists compute it). ``index_dtype``: the output
        values' dtype (``forward``'s).
        """
        keys = kjt.keys()
        values, weights = kjt.values(), kjt.weights_or_none()
        plan = self._expand_plans.get((tuple(keys), raw, values.device))
        if plan is None:
            plan = self._expand_plan(keys, raw, values.device)
            self._expand_plans[(tuple(keys), raw, values.device)] = plan
        if plan.holders is None:  # no raw feature among the keys
            return kjt
        length_per_key = kjt.length_per_key()
        starts = _exclusive_cumsum(length_per_key)
        dynamic: List[Tuple[int, int, int]] = []
        out_lengths: List[int] = []
        offset = 0
        for at in plan.source_keys:
            n = length_per_key[at]
            dynamic.append((starts[at], offset, n))
            out_lengths.append(n)
            offset += n
        rows = plan.copy_rows if weights is None else range(len(keys))
        lengths = kjt.lengths()
        lengths_out = lengths.new_empty(lengths.numel() // len(keys) * len(plan.source_keys))
        out, out_weights = transform_segments(
            values,
            weights,
            plan.static if weights is None else plan.static_all,
            [plan.static_host[p] for p in rows],
            [dynamic[p] for p in rows],
            plan.stats,
            offset,
            weights is not None,
            length_sources=plan.length_rows,
            lengths=lengths,
            lengths_out=lengths_out,
            out_dtype=index_dtype,
        )  # each key's lengths gathered in the same launch
        jobs: Dict[TableMethod, List[CustomJob]] = {}  # one custom_ids_into call per method
        for feature, table, holder, columns in plan.holders:
            jobs.setdefault(self._methods[table], []).extend(
                _custom_jobs(feature, starts[holder], length_per_key[holder], columns, dynamic)
            )
        for method, method_jobs in jobs.items():
            method.custom_ids_into(self, method_jobs, values, out)
        stride = kjt.stride()
        return KeyedJaggedTensor(
            keys=keys,
            values=out,
            lengths=lengths_out,
            weights=out_weights,
            stride=stride,
            length_per_key=out_lengths,
            offset_per_key=_exclusive_cumsum(out_lengths) + [offset],
        )

    def _expand_plan(self, keys: List[str], raw: FrozenSet[str], device: torch.device) -> "_ExpandPlan":
        source_keys: List[int] = []  # per key, the key whose ids and lengths it takes
        holder: Dict[str, int] = {}
        columns: Dict[str, List[List[int]]] = {}
        static_host: List[List[int]] = []
        for i, key in enumerate(keys):
            feature, k = self._custom_column.get(key, (None, -1))
            if feature is None or feature not in raw:
                source_keys.append(i)
                static_host.append([0, int(IdOp.IDENTITY), 0, 1] + [0] * (1 + NUM_OP_PARAMS))
                continue
            if k == 0:
                holder[feature] = i
            if feature not in holder:
                raise ValueError(f"key '{key}' of raw feature '{feature}' comes before the key with its ids")
            source_keys.append(holder[feature])
            columns.setdefault(feature, [[] for _ in range(self._custom_columns[feature])])[k].append(i)
            static_host.append([0, int(IdOp.CUSTOM), 0, 1] + [0] * (1 + NUM_OP_PARAMS))
        copy_rows = [i for i, row in enumerate(static_host) if row[1] != IdOp.CUSTOM]
        table_of = {f: t.name for f, t in self._feature_tables}
        return _ExpandPlan(
            holders=[(f, table_of[f], holder[f], cols) for f, cols in columns.items()] if columns else None,
            source_keys=source_keys,
            length_rows=torch.tensor(source_keys, dtype=torch.int64, device=device),
            static_host=static_host,
            copy_rows=copy_rows,
            static=_rows_tensor([static_host[i] for i in copy_rows], device),
            static_all=_rows_tensor(static_host, device),
            stats=torch.zeros(1, 2, dtype=torch.int64, device=device),
        )

    def _mean_divisors(self, lengths_by_feature: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if not self._mean_features:  # one empty tensor per batch size, not an allocation per batch
            key = (lengths_by_feature.shape[1], lengths_by_feature.device)
            if key not in self._no_divisors:
                self._no_divisors[key] = torch.empty((key[0], 0), dtype=torch.float32, device=key[1])
            return self._no_divisors[key]
        return lengths_by_feature.index_select(0, rows).t().clamp(min=1).to(torch.float32)

    # -- output ----------------------------------------------------------------------------------------------------

    def combine(
        self,
        pooled: KeyedTensor,
        divisors: torch.Tensor,
        projections: Optional[Mapping[str, torch.Tensor]] = None,
        keep_order: bool = True,
    ) -> KeyedTensor:
        """Turns the physical tables' pooled output (any key order) into the logical features' embeddings
        (``projections``: the ``base_dim x d`` output projection of each narrowed table, by table name), in the
        logical order, or with ``keep_order=False`` in any order (see ``CombinePlan``: no copy where the physical
        columns only need relabelling)."""
        key = (tuple(pooled.keys()), keep_order)
        plan = self._combine_plans.get(key)
        if plan is None:
            plan = CombinePlan(self._combines, pooled, self._mean_features, self._feature_tables, keep_order)
            self._combine_plans[key] = plan
        return plan(pooled, divisors, projections)


def _custom_jobs(
    feature: str, start: int, n: int, columns: List[List[int]], dynamic: List[Tuple[int, int, int]]
) -> List[CustomJob]:
    """The ``custom_ids_into`` jobs of one feature's ``n`` ids at ``start``: column ``k`` goes to the output offsets
    of the positions ``columns[k]`` (``dynamic``: per position, ``(input start, output start, length)``); a column-wise
    order may list a segment more than once, one job per repeat."""
    if n == 0:
        return []
    return [
        CustomJob(feature, start, n, tuple(dynamic[at[r]][1] if r < len(at) else -1 for at in columns))
        for r in range(max(len(at) for at in columns))
    ]


def _rows_tensor(rows: List[List[int]], device: torch.device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 5 + NUM_OP_PARAMS).to(device)


def _exclusive_cumsum(xs: Sequence[int]) -> List[int]:
    out, acc = [], 0
    for x in xs:
        out.append(acc)
        acc += x
    return out
