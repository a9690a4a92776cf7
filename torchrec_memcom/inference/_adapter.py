# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The one place that reads trained collections: ``lower_collection(module) -> LoweredCollection``.

Every collection's forward is ``combine(EBC(transform(kjt)))``; this file takes each one apart into the physical
tables of its stock ``EmbeddingBagCollection``, its transform's fixed parameters (as an ``id_maps`` module) and its
combine. It uses the collections' public accessors where they exist and names every internal it touches here, so a
rewrite of ``torchrec_memcom.modules`` re-points this file only.

Collections are read through the method registry (``modules.method``: one physical EBC per collection, ``Segment`` /
``Combine`` per feature): ``_lower_methods``; stock ``EmbeddingBagCollection``s: ``_stock``. Internal used: LMA's
per-table fallback salt ``LMAMethod._index``.
"""

from typing import List

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_memcom.hashing import BucketedHash
from torchrec_memcom.inference.id_maps import HashedRows, LMAChunkRows, QuotientRemainderRows
from torchrec_memcom.inference.lowering import LoweredCollection, LoweredTable
from torchrec_memcom.modules import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagCollection,
    LMAEmbeddingBagCollection,
    MEmComEmbeddingBagCollection,
    QREmbeddingBagCollection,
)
from torchrec_memcom.ops import IdOp

__all__ = ["LOWERABLE_TYPES", "is_collection", "lower_collection"]

# The collection types ``lower_collection`` takes (exact types, as TorchRec's sharders match them).
LOWERABLE_TYPES = (
    EmbeddingBagCollection,
    CompressedEmbeddingBagCollection,
    MEmComEmbeddingBagCollection,
    HashEmbeddingBagCollection,
    QREmbeddingBagCollection,
    LMAEmbeddingBagCollection,
)


def _weight(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.is_meta:
        raise ValueError(f"physical table '{name}' is on the meta device: load trained weights first")
    return t.detach().to("cpu", torch.float32)


def _stock(module: EmbeddingBagCollection) -> LoweredCollection:
    tables, physical = [], {}
    for cfg in module.embedding_bag_configs():
        physical[cfg.name] = _weight(module.embedding_bags[cfg.name].weight, cfg.name)
        tables.append(LoweredTable(cfg, "stock", [cfg.name]))
    return LoweredCollection(tables, physical, module.is_weighted())


def _has_method_registry(module: nn.Module) -> bool:
    return isinstance(module, CompressedEmbeddingBagCollection) and hasattr(module, "physical_table_configs")


def _lower_methods(module: nn.Module) -> LoweredCollection:
    """A registry-based collection: each logical table's segments (physical features of its first feature; a
    table's features share them) become one id map, its combine the lowered combine."""
    physical = {c.name: _weight(module.physical_weight(c.name), c.name) for c in module.physical_table_configs()}
    projections = module.output_projections()
    tables: List[LoweredTable] = []
    for cfg in module.embedding_bag_configs():
        method = module.method_of(cfg.name)
        first = cfg.feature_names[0]
        segments = [s for s in method.segments() if s.feature == first]
        combine = next(c for c in method.combines() if c.feature == first)
        ops = [int(s.op) for s in segments]
        entity = None
        if method.uses_entity_weights:  # MEmCom: scrambled ids -> rows and w[s] (read in raw-id order)
            rows = _hashed_rows(module.bucketed_hash(cfg.name))
            with torch.no_grad():
                entity = module.entity_weight(cfg.name, torch.arange(cfg.num_embeddings)).to("cpu", torch.float32)
        elif ops == [_IDENTITY]:
            rows = None
        elif ops == [_HASH]:
            a, c, n_pad, per_bucket, rows_per_bucket = segments[0].params
            rows = HashedRows((a, c), n_pad, per_bucket, rows_per_bucket)
        elif ops == [_DIV, _MOD] and segments[0].params[0] == segments[1].params[0]:
            rows = QuotientRemainderRows(segments[0].params[0])
        elif ops == [_CUSTOM] * len(ops) and hasattr(method, "location_params"):  # LMA chunk locations
            rows = LMAChunkRows(module.table_signatures(cfg.name).cpu(), method.location_params(cfg.name))
        else:
            raise ValueError(f"table '{cfg.name}' ({method.name}): no serving form for id ops {ops}")
        projection = None
        if combine.project is not None:
            projection = projections[combine.project].detach().to("cpu", torch.float32)
        tables.append(
            LoweredTable(
                cfg,
                method.name,
                [s.table for s in segments],
                rows,
                combine="product" if combine.kind == "product" else "concat",
                input_weighted=[bool(s.carry_weight) for s in segments],
                entity_weights=entity,
                projection=projection,
            )
        )
    return LoweredCollection(tables, physical, module.is_weighted())


_IDENTITY, _HASH, _SCRAMBLE, _DIV, _MOD, _CUSTOM = (int(op) for op in IdOp)


def _hashed_rows(h: BucketedHash) -> HashedRows:
    return HashedRows(h.scramble_params, h.padded_num_embeddings, h.ids_per_bucket, h.rows_per_bucket)


def is_collection(module: nn.Module) -> bool:
    """Whether ``lower_collection`` takes ``module`` (a stock ``EmbeddingBagCollection`` or one of ours)."""
    return type(module) is EmbeddingBagCollection or _has_method_registry(module)


def lower_collection(module: nn.Module) -> LoweredCollection:
    """Reduces a trained, unsharded collection to its ``LoweredCollection`` (tables in the collection's output order).

    Raises:
        TypeError: ``module`` is not one of ``LOWERABLE_TYPES``.
        ValueError: a table has no serving form (LMA ``chunk_size=1``) or still lives on ``meta``.
    """
    if _has_method_registry(module):
        return _lower_methods(module)
    if type(module) is EmbeddingBagCollection:
        return _stock(module)
    names = ", ".join(t.__name__ for t in LOWERABLE_TYPES)
    raise TypeError(f"cannot serve a {type(module).__name__}: expected one of {names} (unsharded)")
