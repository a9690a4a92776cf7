# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""What a trained collection is reduced to for serving: per logical table, an id map onto physical tables, the
per-id weights, and how the pooled physical outputs combine; plus the physical tables' fp32 weights.

``_adapter.lower_collection`` fills these from a trained (unsharded) collection; ``InferenceEmbeddingBagCollection``
is built from them. Nothing here refers to the training modules.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig

__all__ = ["LoweredCollection", "LoweredTable"]

Combine = Literal["concat", "product"]


@dataclass
class LoweredTable:
    """How one logical table is served.

    A bag of feature ``f`` of this table pools, for each physical part ``j < k``, the rows ``id_map(ids)[:, j]`` of
    ``physical_tables[j]`` (SUM, per-sample weights = ``entity_weights[ids]`` if any, times the input weights on the
    parts where ``input_weighted[j]``); ``combine`` joins the ``k`` pooled parts (``concat`` along the embedding dim,
    or the elementwise ``product`` of QR), MEAN pooling then divides by the bag size (each factor of a product),
    and ``projection`` (tables narrower than their output) maps the result to ``embedding_dim``.

    Args:
        config (EmbeddingBagConfig): the logical table (name, features, ``num_embeddings``, ``embedding_dim``,
            pooling).
        method (str): ``stock``, ``hash``, ``memcom``, ``qr`` or ``lma`` (for reports).
        physical_tables (List[str]): the physical table of each part (``k`` entries; may repeat, as LMA's chunks).
        id_map (Optional[nn.Module]): ``(N,) -> (N, k)`` physical rows; ``None`` means the ids themselves (``k = 1``).
        combine (Combine): ``concat`` or ``product``.
        input_weighted (List[bool]): per part, whether the KJT's input weights scale it.
        entity_weights (Optional[torch.Tensor]): ``(n,)`` fp32 per-id weights in raw-id order (MEmCom), or ``None``.
        projection (Optional[torch.Tensor]): ``(base_dim, embedding_dim)`` fp32 output projection, or ``None``.
    """

    config: EmbeddingBagConfig
    method: str
    physical_tables: List[str]
    id_map: Optional[nn.Module] = None
    combine: Combine = "concat"
    input_weighted: List[bool] = field(default_factory=lambda: [True])
    entity_weights: Optional[torch.Tensor] = None
    projection: Optional[torch.Tensor] = None

    @property
    def pooled_dim(self) -> int:
        """Width of the combined parts before the projection (``embedding_dim`` without one)."""
        return self.projection.shape[0] if self.projection is not None else self.config.embedding_dim

    def __post_init__(self) -> None:
        k = len(self.physical_tables)
        name = self.config.name
        if k < 1:
            raise ValueError(f"table '{name}': needs at least one physical table")
        if self.id_map is None and k != 1:
            raise ValueError(f"table '{name}': an identity id map serves exactly one physical table, got {k}")
        if self.id_map is not None and getattr(self.id_map, "num_outputs", k) != k:
            raise ValueError(f"table '{name}': id map gives {self.id_map.num_outputs} rows per id for {k} parts")
        if len(self.input_weighted) != k:
            raise ValueError(f"table '{name}': input_weighted has {len(self.input_weighted)} entries for {k} parts")
        if self.combine == "product" and k != 2:
            raise ValueError(f"table '{name}': a product combine joins exactly 2 parts, got {k}")
        if self.projection is not None and self.projection.shape[1] != self.config.embedding_dim:
            width = self.projection.shape[1]
            raise ValueError(f"table '{name}': its projection maps to {width} dims, not {self.config.embedding_dim}")
        if self.entity_weights is not None and self.entity_weights.shape != (self.config.num_embeddings,):
            raise ValueError(
                f"table '{name}': entity weights must have shape ({self.config.num_embeddings},), "
                f"got {tuple(self.entity_weights.shape)}"
            )

    @property
    def num_parts(self) -> int:
        return len(self.physical_tables)


@dataclass
class LoweredCollection:
    """A collection reduced for serving: logical tables in output order plus the physical tables' fp32 weights.

    Args:
        tables (List[LoweredTable]): in the collection's output order (its features, table by table).
        physical (Dict[str, torch.Tensor]): physical table name -> ``(rows, dim)`` fp32 weight.
        is_weighted (bool): whether input KJTs carry per-id weights.
    """

    tables: List[LoweredTable]
    physical: Dict[str, torch.Tensor]
    is_weighted: bool

    def __post_init__(self) -> None:
        features: Dict[str, str] = {}
        for t in self.tables:
            for f in t.config.feature_names:
                if f in features:
                    raise ValueError(f"feature '{f}' is used by tables '{features[f]}' and '{t.config.name}'")
                features[f] = t.config.name
            for p in t.physical_tables:
                if p not in self.physical:
                    raise ValueError(f"table '{t.config.name}': physical table '{p}' has no weight")
                width = self.physical[p].shape[1]
                if width % 4 != 0:
                    raise ValueError(
                        f"table '{t.config.name}' ({t.method}): physical table '{p}' is {width} wide; FBGEMM's "
                        "quantized tables need a multiple of 4 (LMA's chunk_size=1 reference path has no serving form)"
                    )
                if t.combine == "product" and width != t.pooled_dim:
                    raise ValueError(f"table '{t.config.name}': physical table '{p}' is {width} wide for a product")
            if t.combine == "concat":
                total = sum(self.physical[p].shape[1] for p in t.physical_tables)
                if total != t.pooled_dim:
                    raise ValueError(
                        f"table '{t.config.name}': its parts concatenate to {total} dims, not {t.pooled_dim}"
                    )
