# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The id transform of a whole collection: logical KJT -> physical KJT, and physical pooled -> logical pooled.

``IdTransform.forward`` checks the input KJT and maps it, for every table and feature at once, to the KJT of the
physical tables (``ops.transform_segments``: one fused kernel on CUDA); ``combine`` turns the physical tables' pooled
output back into the logical features. It holds no trainable state, so a sharded collection runs it on the
data-parallel side, before its input dist and after its output dist.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.modules.method import Combine, Segment, TableMethod
from torchrec_memcom.ops import NUM_OP_PARAMS, IdOp, transform_segments

__all__ = ["IdTransform", "InputCheck"]

_ID_DTYPES = (torch.int32, torch.int64)


class InputCheck:
    """Raises ``ValueError`` for ids outside ``[0, n)`` or negative lengths, without stalling the GPU.

    On CPU the check is immediate. On CUDA the statistics of a batch (per feature id min / max, the smallest length,
    all computed by the transform kernel) are copied to pinned host memory asynchronously and inspected at the next
    call (or ``flush()``), so a bad batch raises one step later, never silently; a ``bool(tensor)`` per step would
    serialise the host with the device.
    """

    def __init__(self) -> None:
        self._pending: Optional[Tuple[torch.Tensor, torch.cuda.Event, List[Tuple[str, str, int]]]] = None

    def __call__(self, stats: torch.Tensor, min_length: torch.Tensor, features: List[Tuple[str, str, int]]) -> None:
        """``stats``: ``(F, 2)`` id (min, max) per feature; ``features``: (feature, table, num_embeddings) per row."""
        packed = torch.cat([stats.reshape(-1), min_length.reshape(1).to(torch.int64)])
        if not packed.is_cuda:
            self._raise_if_bad(packed.tolist(), features, deferred=False)
            return
        self.flush()
        host = torch.empty(packed.shape, dtype=torch.int64, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (host, event, features)

    def flush(self) -> None:
        """Raises for the previous CUDA batch if it was bad."""
        if self._pending is None:
            return
        host, event, features = self._pending
        self._pending = None
        event.synchronize()
        self._raise_if_bad(host.tolist(), features, deferred=True)

    @staticmethod
    def _raise_if_bad(values: List[int], features: List[Tuple[str, str, int]], deferred: bool) -> None:
        when = " (in the previous batch: on CUDA inputs are checked asynchronously)" if deferred else ""
        if values[-1] < 0:
            raise ValueError(f"KJT lengths must be >= 0, got {values[-1]}{when}")
        for i, (feature, table, n) in enumerate(features):
            lo, hi = values[2 * i], values[2 * i + 1]
            if lo > hi:  # no ids
                continue
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"table '{table}', feature '{feature}': ids must lie in [0, {n}), got values in [{lo}, {hi}]{when}"
                )


@dataclass
class _Order:
    """A physical output order of the segments (the physical EBC's feature order, or a sharding's)."""

    segments: List[int]  # segment indices, in output order
    keys: List[str]
    static_host: List[List[int]]
    sources: List[int]  # logical feature of each output segment
    # logical feature -> per CUSTOM segment (in segments() order): (its column in custom_ids(), output positions)
    custom: Dict[int, List[Tuple[int, List[int]]]]


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
        self._orders: Dict[Tuple[str, ...], _Order] = {}
        self._device_cache: Dict[Tuple[Tuple[str, ...], torch.device], Tuple[torch.Tensor, torch.Tensor]] = {}
        self._combine_plans: Dict[Tuple[str, ...], _CombinePlan] = {}
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

    def _order(self, keys: Tuple[str, ...]) -> _Order:
        if keys not in self._orders:
            index = {s.name: i for i, s in enumerate(self._segments)}
            # Column-wise shardings list a feature once per column shard: a segment may repeat, none may be missing.
            if set(keys) != set(index) or len(keys) < len(index):
                raise ValueError(f"physical order {list(keys)} does not list the segments {sorted(index)}")
            segs = [index[k] for k in keys]
            custom: Dict[int, List[Tuple[int, List[int]]]] = {}
            for s in self._segments:  # segments() order within a feature
                if s.op == IdOp.CUSTOM:
                    at = [pos for pos, k in enumerate(keys) if k == s.name]
                    custom.setdefault(self._feature_index[s.feature], []).append(
                        (len(custom.get(self._feature_index[s.feature], [])), at)
                    )
            self._orders[keys] = _Order(
                segments=segs,
                keys=list(keys),
                static_host=[self._static_rows[i] for i in segs],
                sources=[self._static_rows[i][0] for i in segs],
                custom=custom,
            )
        return self._orders[keys]

    def _device_tensors(self, keys: Tuple[str, ...], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """(static segment table, source feature per segment) of an order, on ``device`` (cached)."""
        key = (keys, device)
        if key not in self._device_cache:
            order = self._order(keys)
            static = torch.tensor(order.static_host, dtype=torch.int64).reshape(-1, 5 + NUM_OP_PARAMS)
            sources = torch.tensor(order.sources, dtype=torch.int64)
            self._device_cache[key] = (static.to(device), sources.to(device))
        return self._device_cache[key]

    # -- input -----------------------------------------------------------------------------------------------------

    def select(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Checks ``features`` and returns a KJT of exactly the logical features, in order.

        Extra keys are ignored, as in ``EmbeddingBagCollection``; missing features, non-integer ids, lengths that do
        not add up to the values, weights of the wrong size or dtype, missing weights of a weighted module and
        variable batch sizes raise ``ValueError``. Reads ``length_per_key`` (one host read per batch, as TorchRec's
        own input dist does).
        """
        keys = features.keys()
        index = {k: i for i, k in enumerate(keys)}
        for feature, table in self._feature_tables:
            if feature not in index:
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
        total = sum(features.length_per_key())
        if total != values.numel():
            raise ValueError(
                f"KJT lengths add up to {total} ids but it holds {values.numel()} values (features {keys}); "
                "lengths, values and weights must agree"
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
        if keys != self._features:
            features = features.permute([index[f] for f in self._features])
        return features

    def forward(
        self, features: KeyedJaggedTensor, order: Optional[Tuple[str, ...]] = None
    ) -> Tuple[KeyedJaggedTensor, torch.Tensor]:
        """Checks ``features``; returns (KJT of the physical features in ``order``, ``(B, F_mean)`` bag sizes of the
        features that are MEAN-pooled when combining).

        Args:
            features (KeyedJaggedTensor): logical ids (extra keys are ignored).
            order (Optional[Tuple[str, ...]]): physical feature order (default: the physical EBC's).
        """
        kjt = self.select(features)
        plan = self._order(order or self.default_order)
        static, sources = self._device_tensors(order or self.default_order, kjt.values().device)
        lengths_per_key = kjt.length_per_key()
        in_starts = _exclusive_cumsum(lengths_per_key)
        dynamic: List[Tuple[int, int, int]] = []
        out_lengths: List[int] = []
        offset = 0
        for f in plan.sources:
            n = lengths_per_key[f]
            dynamic.append((in_starts[f], offset, n))
            out_lengths.append(n)
            offset += n
        weights = kjt.weights_or_none() if self._is_weighted else None
        values, out_weights, stats = transform_segments(
            kjt.values(),
            weights,
            static,
            plan.static_host,
            dynamic,
            len(self._features),
            offset,
            self.out_weighted,
        )
        lengths = kjt.lengths()
        min_length = lengths.min() if lengths.numel() else torch.zeros((), dtype=lengths.dtype, device=lengths.device)
        self.input_check(stats, min_length, self._check_meta)  # before CUSTOM segments read per-id state
        ids = kjt.values()
        for f, positions in plan.custom.items():
            start, n = in_starts[f], lengths_per_key[f]
            if n == 0:
                continue
            feature, table = self._feature_tables[f]
            custom = self._methods[table.name].custom_ids(self, feature, ids[start : start + n].to(torch.int64))
            for k, at in positions:
                for pos in at:
                    values[dynamic[pos][1] : dynamic[pos][1] + n] = custom[:, k]
        stride = kjt.stride()
        by_feature = lengths.view(len(self._features), stride)
        physical_lengths = by_feature.index_select(0, sources).reshape(-1)
        divisors = self._mean_divisors(by_feature)
        out = KeyedJaggedTensor(
            keys=plan.keys,
            values=values,
            lengths=physical_lengths,
            weights=out_weights,
            stride=stride,
            length_per_key=out_lengths,
            offset_per_key=_exclusive_cumsum(out_lengths) + [offset],
        )
        return out, divisors

    def _mean_divisors(self, lengths_by_feature: torch.Tensor) -> torch.Tensor:
        if not self._mean_features:
            return lengths_by_feature.new_zeros((lengths_by_feature.shape[1], 0), dtype=torch.float32)
        idx = torch.tensor(self._mean_features, device=lengths_by_feature.device)
        return lengths_by_feature.index_select(0, idx).t().clamp(min=1).to(torch.float32)

    # -- output ----------------------------------------------------------------------------------------------------

    def combine(self, pooled: KeyedTensor, divisors: torch.Tensor) -> KeyedTensor:
        """Turns the physical tables' pooled output (any key order) into the logical features' embeddings."""
        keys = tuple(pooled.keys())
        plan = self._combine_plans.get(keys)
        if plan is None:
            plan = self._combine_plans[keys] = _CombinePlan(self._combines, pooled, self._mean_features, self._features)
        return plan(pooled, divisors)


class _CombinePlan:
    """Column arithmetic of ``IdTransform.combine`` for one physical key order (built once per order)."""

    def __init__(
        self, combines: List[Combine], pooled: KeyedTensor, mean_features: List[int], features: List[str]
    ) -> None:
        offsets = _exclusive_cumsum(pooled.length_per_key())
        col = {k: (o, n) for k, o, n in zip(pooled.keys(), offsets, pooled.length_per_key())}
        mean_column = {features[f]: j for j, f in enumerate(mean_features)}
        self.keys = [c.feature for c in combines]
        self.steps: List[Tuple[str, List[Tuple[int, int]], Optional[int]]] = []
        gather: List[int] = []
        self.dims: List[int] = []
        for c in combines:
            parts = [col[p] for p in c.parts]
            self.steps.append((c.kind, parts, mean_column.get(c.feature) if c.mean else None))
            if c.kind == "product":
                self.dims.append(parts[0][1])
            else:
                self.dims.append(sum(n for _, n in parts))
                gather += [o + i for o, n in parts for i in range(n)]
        self.simple = all(kind != "product" and m is None for kind, _, m in self.steps)
        total = sum(pooled.length_per_key())
        self.identity = self.simple and gather == list(range(total))
        self._gather = torch.tensor(gather, dtype=torch.int64)
        self._gather_on: Dict[torch.device, torch.Tensor] = {}

    def __call__(self, pooled: KeyedTensor, divisors: torch.Tensor) -> KeyedTensor:
        values = pooled.values()
        if self.identity:
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=values)
        if self.simple:
            idx = self._gather_on.get(values.device)
            if idx is None:
                idx = self._gather_on[values.device] = self._gather.to(values.device)
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=values.index_select(1, idx))
        out: List[torch.Tensor] = []
        for kind, parts, mean in self.steps:
            pieces = [values[:, o : o + n] for o, n in parts]
            if mean is not None:
                div = divisors[:, mean : mean + 1]
                pieces = [p / div for p in pieces]
            if kind == "product":
                emb = pieces[0]
                for p in pieces[1:]:
                    emb = emb * p
            else:
                emb = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
            out.append(emb)
        return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=torch.cat(out, dim=1))


def _exclusive_cumsum(xs: Sequence[int]) -> List[int]:
    out, acc = [], 0
    for x in xs:
        out.append(acc)
        acc += x
    return out
