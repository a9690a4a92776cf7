# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Table configs from plain specs (YAML/JSON): one place that maps ``{type, compression, ...}`` to a config class.

A spec is a mapping with ``type`` (``stock``, ``hash``, ``qr``, ``memcom`` or ``lma``), ``compression`` (the
compression ratio; not for ``stock``) and the method's own optional fields, e.g.::

    movie: {type: memcom, compression: 16}
    user:  {type: lma, compression: 16, chunk_size: 16, memory_group: shared}
    zip:   {type: stock}

Unknown types or fields raise ``ValueError`` naming the table.
"""

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Type

from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType

from torchrec_memcom.configs import (
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)

__all__ = ["TABLE_TYPES", "table_config"]

TABLE_TYPES: Dict[str, Type[EmbeddingBagConfig]] = {
    "stock": EmbeddingBagConfig,
    "hash": HashEmbeddingBagConfig,
    "qr": QREmbeddingBagConfig,
    "memcom": MEmComEmbeddingBagConfig,
    "lma": LMAEmbeddingBagConfig,
}
# Fields a spec may not set: they come from the model (name, features, sizes) or are TorchRec internals.
_RESERVED = {"name", "feature_names", "num_embeddings", "embedding_dim", "init_fn", "compression_ratio"}


def _own_fields(cls: Type[EmbeddingBagConfig]) -> List[str]:
    base = {f.name for f in dataclasses.fields(EmbeddingBagConfig)}
    return [f.name for f in dataclasses.fields(cls) if f.name not in base]


def table_config(
    name: str,
    feature_names: List[str],
    num_embeddings: int,
    embedding_dim: int,
    spec: Optional[Mapping[str, Any]] = None,
    pooling: PoolingType = PoolingType.SUM,
) -> EmbeddingBagConfig:
    """The table config a spec asks for (``None`` or ``{type: stock}``: a stock ``EmbeddingBagConfig``).

    Raises:
        ValueError: unknown ``type``, unknown field, or ``compression`` given to / missing from a method that
            takes / needs it (the config's own validation then checks the values).
    """
    spec = dict(spec or {})
    kind = spec.pop("type", "stock")
    if kind not in TABLE_TYPES:
        raise ValueError(f"table '{name}': unknown table type '{kind}' (choose from {sorted(TABLE_TYPES)})")
    cls = TABLE_TYPES[kind]
    allowed = {"compression", "pooling", *(_own_fields(cls))} - _RESERVED
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"table '{name}' ({kind}): unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    kwargs: Dict[str, Any] = {}
    if "pooling" in spec:
        pooling = PoolingType[str(spec.pop("pooling")).upper()]
    compression = spec.pop("compression", None)
    if kind == "stock":
        if compression not in (None, 1, 1.0):
            raise ValueError(f"table '{name}': a stock table takes no compression (got {compression})")
    else:
        size_fields = {"num_shared_rows", "num_remainder_rows", "memory_rows"} & set(spec)
        if compression is None and not size_fields:
            raise ValueError(f"table '{name}' ({kind}): give a compression (ratio) or an explicit size")
        if compression is not None:
            kwargs["compression_ratio"] = float(compression)
    kwargs.update(spec)
    return cls(
        name=name,
        feature_names=list(feature_names),
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        pooling=pooling,
        **kwargs,
    )
