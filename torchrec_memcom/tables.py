# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Table configs from plain specs (YAML/JSON): the registry's method names map ``{type, compression, ...}`` to configs.

A spec is a mapping with ``type`` (a registered method: ``stock``, ``hash``, ``qr``, ``memcom``, ``lma``, ...),
``compression`` (the compression ratio; not for ``stock``), ``pooling`` (``sum`` or ``mean``) and the method's own
optional fields, e.g.::

    movie: {type: memcom, compression: 16, entity_weight_lr_scale: 10}
    user:  {type: lma, compression: 16, chunk_size: 16, memory_group: shared}
    zip:   {type: stock}

Unknown types or fields and bad values raise ``ValueError`` naming the table.
"""

from typing import Any, Dict, List, Mapping, Optional, Type

from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType

import torchrec_memcom.modules  # noqa: F401 - registers the methods
from torchrec_memcom.modules.method import method_for_name, registered_methods, spec_fields

__all__ = ["TABLE_TYPES", "table_config", "table_types"]

# Fields a spec may not set: they come from the model (name, features, sizes) or are TorchRec internals.
_RESERVED = {"name", "feature_names", "num_embeddings", "embedding_dim", "init_fn", "compression_ratio"}
_SIZE_FIELDS = {"num_shared_rows", "num_remainder_rows", "memory_rows"}
# methods whose size is their width: base_dim alone sizes them
_WIDTH_SIZED = {"lowrank"}
_POOLINGS = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def table_types() -> Dict[str, Type[EmbeddingBagConfig]]:
    """Registered spec ``type`` -> table config class."""
    return {m.name: m.config_type for m in registered_methods()}


TABLE_TYPES: Dict[str, Type[EmbeddingBagConfig]] = table_types()


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
        ValueError: unknown ``type``, unknown field, unknown ``pooling``, or ``compression`` given to / missing from a
            method that takes / needs it (the config's own validation then checks the values).
    """
    spec = dict(spec or {})
    kind = spec.pop("type", "stock")
    try:
        cls = method_for_name(kind).config_type
    except ValueError as e:
        raise ValueError(f"table '{name}': {e}") from None
    allowed = {"compression", "pooling", *spec_fields(cls)} - _RESERVED
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"table '{name}' ({kind}): unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    kwargs: Dict[str, Any] = {}
    if "pooling" in spec:
        raw = spec.pop("pooling")
        if str(raw).lower() not in _POOLINGS:
            raise ValueError(f"table '{name}': pooling must be one of {sorted(_POOLINGS)}, got {raw!r}")
        pooling = _POOLINGS[str(raw).lower()]
    compression = spec.pop("compression", None)
    if kind == "stock":
        if compression not in (None, 1, 1.0) or isinstance(compression, bool):
            raise ValueError(f"table '{name}': a stock table takes no compression (got {compression!r})")
    else:
        sized = _SIZE_FIELDS & set(spec) or (kind in _WIDTH_SIZED and "base_dim" in spec)
        if compression is None and not sized:
            raise ValueError(f"table '{name}' ({kind}): give a compression (ratio) or an explicit size")
        if compression is not None:
            kwargs["compression_ratio"] = compression
    kwargs.update(spec)
    return cls(
        name=name,
        feature_names=list(feature_names),
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        pooling=pooling,
        **kwargs,
    )
