# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``InferenceEmbeddingBagCollection``: the serving form of any embedding-bag collection (stock, compressed, mixed).

Forward is ``combine(QuantEBC(transform(kjt)))`` with ONE quantized TorchRec ``EmbeddingBagCollection`` over every
physical table of the collection, so a request runs one FBGEMM kernel call however the tables are compressed:

1. transform: split the KJT's values per feature; each table's id map turns its ids into ``k`` physical rows
   (``k = 1`` stock / hash / MEmCom, 2 QR, ``d / Z`` LMA), MEmCom's per-id weights become per-sample weights;
   the pieces are laid out in the quantized collection's own feature order, so it never permutes.
2. one FBGEMM TBE call (SUM pooling) over the physical features: the quantized collection's single
   ``IntNBitTableBatchedEmbeddingBagsCodegen``, fed the flat values and offsets directly.
3. combine: each logical feature's columns (concatenated parts, QR's product), MEAN division, the output
   projection of tables narrower than their output, output order.

Everything is tensor ops on the KJT's values, lengths and weights plus fixed buffers, with no host synchronisation
beyond the per-feature value counts that ``KeyedJaggedTensor`` itself needs, so ``torch.export`` traces it whole.
"""

from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.inference.config import InferenceConfig
from torchrec_memcom.inference.id_maps import HashedRows, LMAChunkRows, PointwiseFeatures
from torchrec_memcom.inference.lowering import LoweredCollection, LoweredTable
from torchrec_memcom.inference.quantize import quantized_tables, storage_bytes, table_batched_modules

__all__ = ["InferenceEmbeddingBagCollection"]

_FP32_BYTES = 4


def _part_name(feature: str, part: int, num_parts: int) -> str:
    return feature if num_parts == 1 else f"{feature}#{part}"


def _times(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``a * b`` where both are given, else whichever is (``None`` stands for ones)."""
    if a is None:
        return b
    return a if b is None else a * b


class InferenceEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """A collection's serving form: KJT in, KeyedTensor (same keys, dims and values as the trained collection, up to
    quantization) out.

    Args:
        lowered (LoweredCollection): the trained collection reduced by ``lower_collection``.
        config (InferenceConfig): table and entity-weight precision, row alignment, id checks.

    Example::

        served = InferenceEmbeddingBagCollection(lower_collection(trained_ebc), InferenceConfig("int8"))
        #        0       1
        # f1   [1, 2]   [3]
        kjt = KeyedJaggedTensor.from_lengths_sync(["f1"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
        served(kjt).values().shape  # (2, d)
    """

    def __init__(self, lowered: LoweredCollection, config: InferenceConfig) -> None:
        super().__init__()
        self._config = config
        self._configs: List[EmbeddingBagConfig] = [t.config for t in lowered.tables]
        self._is_weighted = lowered.is_weighted
        self._methods = {t.config.name: t.method for t in lowered.tables}
        self._stock_bytes = sum(c.num_embeddings * c.embedding_dim * _FP32_BYTES for c in self._configs)
        features = [(f, t) for t in lowered.tables for f in t.config.feature_names]
        self._features: List[str] = [f for f, _ in features]
        self._dims: List[int] = [t.config.embedding_dim for _, t in features]
        self._num_parts = [t.num_parts for _, t in features]
        self._input_weighted = [list(t.input_weighted) for _, t in features]
        # Pointwise features (one physical row per id: stock, hash, MEmCom) are transformed over the whole values
        # vector at once; the others (QR, LMA) run their table's id map on their own slice of the values.
        self._pointwise = [
            t.num_parts == 1 and (t.id_map is None or isinstance(t.id_map, HashedRows)) for _, t in features
        ]
        hashes = [t.id_map if p and t.id_map is not None else None for p, (_, t) in zip(self._pointwise, features)]
        entity = {t.config.name: t.entity_weights for t in lowered.tables if t.entity_weights is not None}
        self.pointwise = (
            PointwiseFeatures(hashes, entity, [t.config.name for _, t in features], config.entity_weight_dtype)
            if entity or any(h is not None for h in hashes)
            else None
        )
        self._has_entity_weights = [t.entity_weights is not None for _, t in features]
        self.id_maps = nn.ModuleDict(
            {t.config.name: t.id_map for p, (_, t) in zip(self._pointwise, features) if not p and t.id_map is not None}
        )
        self._feature_table = [t.config.name for _, t in features]
        self.projections = nn.ParameterDict(
            {
                t.config.name: nn.Parameter(t.projection.detach().to(torch.float32).clone(), requires_grad=False)
                for t in lowered.tables
                if t.projection is not None
            }
        )
        # Physical features: one per (feature, part), grouped by physical table in order of first use; that is the
        # quantized collection's own feature (and output column) order.
        names = set(self._features)
        by_table: OrderedDict[str, List[Tuple[int, int]]] = OrderedDict()
        for fi, (f, t) in enumerate(features):
            for j, p in enumerate(t.physical_tables):
                name = _part_name(f, j, t.num_parts)
                if t.num_parts > 1 and name in names:
                    raise ValueError(f"physical feature name '{name}' of feature '{f}' clashes with a feature")
                by_table.setdefault(p, []).append((fi, j))
        order = [fj for parts in by_table.values() for fj in parts]
        self._needs_weights = self._is_weighted or bool(entity)
        self.ebc = quantized_tables(
            [
                (p, lowered.physical[p], [_part_name(self._features[fi], j, self._num_parts[fi]) for fi, j in parts])
                for p, parts in by_table.items()
            ],
            is_weighted=self._needs_weights,
            config=config,
        )
        tbes = table_batched_modules(self.ebc)
        if len(tbes) != 1:  # every physical table pools SUM, so TorchRec batches them into one TBE
            raise AssertionError(f"expected one TBE in the quantized collection, got {len(tbes)}")
        self._tbes = tbes  # a plain list, as TorchRec keeps them: not submodules, so export lifts their tensors
        self._blocks = self._value_blocks(order)
        in_order = order == [(fi, 0) for fi in range(len(self._features))]
        self._all_pointwise = in_order and all(self._pointwise)
        src = [fi for fi, _ in order]
        self._identity_lengths = src == list(range(len(self._features)))
        self._needs_feature_index = config.check_ids or self.pointwise is not None
        self.register_buffer("_length_src", torch.tensor(src, dtype=torch.int64), persistent=False)
        self.register_buffer("_feature_ids", torch.arange(len(self._features), dtype=torch.int64), persistent=False)
        self._combine = self._combine_plan(order, features, lowered)
        self.register_buffer(
            "_num_embeddings",
            torch.tensor([t.config.num_embeddings for _, t in features], dtype=torch.int64),
            persistent=False,
        )
        self._check_message = "ids out of range: every id must lie in [0, n) of its feature: " + ", ".join(
            f"{f} < {t.config.num_embeddings}" for f, t in features
        )

    def _value_blocks(self, order: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
        """The physical values as blocks: ``(feature, -1)`` = all its parts in order (one reshape), else one part."""
        blocks: List[Tuple[int, int]] = []
        i = 0
        while i < len(order):
            fi, j = order[i]
            k = self._num_parts[fi]
            same_weighting = len(set(self._input_weighted[fi])) == 1
            if j == 0 and same_weighting and order[i : i + k] == [(fi, p) for p in range(k)]:
                blocks.append((fi, -1))
                i += k
            else:
                blocks.append((fi, j))
                i += 1
        return blocks

    def _combine_plan(
        self, order: List[Tuple[int, int]], features: List[Tuple[str, LoweredTable]], lowered: LoweredCollection
    ) -> Dict[str, object]:
        """Columns of each feature's parts in the quantized output, and the cheapest way to assemble the output."""
        widths = {}
        for fi, (_, t) in enumerate(features):
            for j, p in enumerate(t.physical_tables):
                widths[(fi, j)] = int(lowered.physical[p].shape[1])
        start, col = {}, 0
        for fj in order:
            start[fj] = col
            col += widths[fj]
        per_feature = []
        columns: List[int] = []
        simple = True
        for fi, (_, t) in enumerate(features):
            parts = [(start[(fi, j)], start[(fi, j)] + widths[(fi, j)]) for j in range(t.num_parts)]
            mean = t.config.pooling == PoolingType.MEAN
            projected = t.projection is not None
            per_feature.append((t.combine, parts, mean, t.config.name if projected else None))
            simple = simple and t.combine == "concat" and not mean and not projected
            for lo, hi in parts:
                columns.extend(range(lo, hi))
        identity = simple and columns == list(range(col))
        self.register_buffer("_columns", torch.tensor(columns, dtype=torch.int64), persistent=False)
        return {"identity": identity, "simple": simple, "features": per_feature}

    # -- EmbeddingBagCollectionInterface ----------------------------------------------------------------------------

    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self._configs

    def is_weighted(self) -> bool:
        return self._is_weighted

    def feature_names(self) -> List[str]:
        """Input and output keys, in order."""
        return list(self._features)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """KJT ``(F, B, L)`` in (extra keys are ignored); KeyedTensor ``(B, sum d)`` with the collection's keys out."""
        kjt = self._select(features)
        values, lengths = kjt.values(), kjt.lengths()
        weights = kjt.weights_or_none() if self._is_weighted else None
        lengths2d = lengths.view(len(self._features), -1)
        phys_values, phys_weights = self._transform(values, lengths2d, weights)
        phys_lengths = lengths if self._identity_lengths else lengths2d.index_select(0, self._length_src).reshape(-1)
        # The quantized collection's own forward would rebuild per-key lengths and offsets on the host (a KJT split);
        # its features are already laid out in its order, so its one TBE runs directly on the flat values.
        offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(phys_lengths)
        pooled = self._tbes[0](indices=phys_values, offsets=offsets, per_sample_weights=phys_weights)
        return KeyedTensor(keys=self._features, length_per_key=self._dims, values=self._combined(pooled, lengths2d))

    def _select(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        keys = features.keys()
        if keys != self._features:
            missing = [f for f in self._features if f not in keys]
            if missing:
                raise ValueError(f"features {missing} are missing from the input KJT (keys: {keys})")
            features = features.permute([keys.index(f) for f in self._features])
        if self._is_weighted and features.weights_or_none() is None:
            raise ValueError("the collection is weighted (is_weighted=True) but the input KJT has no weights")
        return features

    def _transform(
        self, values: torch.Tensor, lengths2d: torch.Tensor, weights: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Physical values (and per-sample weights, if the quantized collection is weighted) in its feature order."""
        counts = lengths2d.sum(1)
        feature_index = None
        if self._needs_feature_index:
            feature_index = torch.repeat_interleave(self._feature_ids, counts, output_size=values.shape[0])
        if self._config.check_ids:
            bound = self._num_embeddings[feature_index]
            torch._assert_async(((values >= 0) & (values < bound)).all(), self._check_message)
        rows, entity = self.pointwise(values, feature_index) if self.pointwise is not None else (values, None)
        if self._all_pointwise:
            w = _times(entity, weights)
            if self._needs_weights and w is None:
                w = torch.ones(values.shape, dtype=torch.float32, device=values.device)
            return rows, w
        split = counts.tolist()
        ids, rows_f = values.split(split), rows.split(split)
        entity_f = entity.split(split) if entity is not None else None
        xs = weights.split(split) if weights is not None else None
        out_values: List[torch.Tensor] = []
        out_weights: List[torch.Tensor] = []
        mapped: Dict[int, torch.Tensor] = {}
        for fi, j in self._blocks:
            k = self._num_parts[fi]
            if self._pointwise[fi]:
                out_values.append(rows_f[fi])
            else:
                if fi not in mapped:
                    table = self._feature_table[fi]
                    mapped[fi] = self.id_maps[table](ids[fi]) if table in self.id_maps else ids[fi].unsqueeze(1)
                out_values.append(mapped[fi].t().reshape(-1) if j < 0 else mapped[fi][:, j])
            if self._needs_weights:
                x = xs[fi] if xs is not None and self._input_weighted[fi][max(j, 0)] else None
                w = _times(entity_f[fi] if entity_f is not None and self._has_entity_weights[fi] else None, x)
                if w is None:
                    w = torch.ones(ids[fi].shape, dtype=torch.float32, device=values.device)
                out_weights.append(w.repeat(k) if j < 0 and k > 1 else w)
        return torch.cat(out_values), torch.cat(out_weights) if self._needs_weights else None

    def _combined(self, pooled: torch.Tensor, lengths2d: torch.Tensor) -> torch.Tensor:
        plan = self._combine
        if plan["identity"]:
            return pooled
        if plan["simple"]:
            return pooled.index_select(1, self._columns)
        out: List[torch.Tensor] = []
        for fi, (combine, parts, mean, projected) in enumerate(plan["features"]):
            pieces = [pooled[:, lo:hi] for lo, hi in parts]
            emb = pieces[0] * pieces[1] if combine == "product" else torch.cat(pieces, dim=1)
            if mean:
                divisor = lengths2d[fi].clamp(min=1).unsqueeze(1).to(emb.dtype)
                emb = emb / divisor if combine == "concat" else emb / (divisor * divisor)
            if projected is not None:
                emb = emb @ self.projections[projected]
            out.append(emb)
        return torch.cat(out, dim=1)

    # -- reports ----------------------------------------------------------------------------------------------------

    def embedding_bytes(self) -> Dict[str, int]:
        """Bytes the served embeddings hold: ``tables`` (quantized physical tables as FBGEMM stores them),
        ``entity_weights`` (MEmCom's ``w``), ``signatures`` (LMA), ``projections`` (fp32 output projections of
        narrowed tables), their ``total``, and ``stock_fp32`` (stock fp32 tables of the same logical shapes)."""
        parts = {
            "tables": storage_bytes(self.ebc)["total"],
            "entity_weights": self.pointwise.table_bytes() if self.pointwise is not None else 0,
            "signatures": sum(
                m.signatures.numel() * m.signatures.element_size()
                for m in self.id_maps.values()
                if isinstance(m, LMAChunkRows)
            ),
            "projections": sum(p.numel() * p.element_size() for p in self.projections.values()),
        }
        return {**parts, "total": sum(parts.values()), "stock_fp32": self._stock_bytes}

    def methods(self) -> Dict[str, str]:
        """Method of each logical table."""
        return dict(self._methods)
