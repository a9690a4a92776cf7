# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The one place that reads trained collections: ``lower_collection(module) -> LoweredCollection``.

Every collection's forward is ``combine(EBC(transform(kjt)))``; this file takes each one apart into the physical
tables of its stock ``EmbeddingBagCollection``, its transform's fixed parameters (as an ``id_maps`` module) and its
combine. It uses the collections' public accessors where they exist and names every internal it touches here, so a
rewrite of ``torchrec_memcom.modules`` re-points this file only.

Two generations of the modules are read:

- the method registry (``modules.method``: one physical EBC per collection, ``Segment`` / ``Combine`` per feature;
  main from a3c09a1 on): ``_lower_methods``. Internal used: LMA's per-table fallback salt ``LMAMethod._index``.
- the per-method child collections (up to 816ac5e): ``_stock`` ... ``_mixed``. Internals used:
  ``CompressedEmbeddingBagCollection.children_by_method``, QR's physical ``_embedding_bag_collection``, LMA's salt
  ``id_transform._table_index``. Delete this path once the registry is the only one.
"""

from typing import Dict, List

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
from torchrec_memcom.modules.baselines import QUOTIENT_SUFFIX, REMAINDER_SUFFIX
from torchrec_memcom.modules.lma import memory_table_name

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


def _hashed(module: HashEmbeddingBagCollection | MEmComEmbeddingBagCollection) -> LoweredCollection:
    memcom = isinstance(module, MEmComEmbeddingBagCollection)
    tables, physical = [], {}
    for cfg in module.embedding_bag_configs():
        physical[cfg.name] = _weight(module.shared_weight(cfg.name), cfg.name)
        rows = _hashed_rows(module.bucketed_hash(cfg.name))
        w = None
        if memcom:
            with torch.no_grad():
                w = module.entity_weight(cfg.name, torch.arange(cfg.num_embeddings)).detach().to("cpu", torch.float32)
        tables.append(LoweredTable(cfg, "memcom" if memcom else "hash", [cfg.name], rows, entity_weights=w))
    return LoweredCollection(tables, physical, module.is_weighted())


def _qr(module: QREmbeddingBagCollection) -> LoweredCollection:
    bags = module._embedding_bag_collection.embedding_bags  # internal: the physical EBC
    tables, physical = [], {}
    for cfg in module.embedding_bag_configs():
        q, r = cfg.name + QUOTIENT_SUFFIX, cfg.name + REMAINDER_SUFFIX
        physical[q] = _weight(bags[q].weight, q)
        physical[r] = _weight(bags[r].weight, r)
        rows = QuotientRemainderRows(module.num_remainder_rows(cfg.name))
        # the input weights scale the quotient side only (QREmbeddingBagCollection's convention)
        tables.append(LoweredTable(cfg, "qr", [q, r], rows, combine="product", input_weighted=[True, False]))
    return LoweredCollection(tables, physical, module.is_weighted())


def _lma(module: LMAEmbeddingBagCollection) -> LoweredCollection:
    tables, physical = [], {}
    salts: Dict[str, int] = module.id_transform._table_index  # internal: the per-table fallback salt
    for cfg in module.embedding_bag_configs():
        if cfg.chunk() == 1:
            raise ValueError(
                f"LMA table '{cfg.name}' uses chunk_size=1 (the plain-PyTorch reference path), which has no FBGEMM "
                "table to quantize; serve a chunk_size that is a multiple of 4"
            )
        group = cfg.group()
        mem = memory_table_name(group)
        if mem not in physical:
            physical[mem] = _weight(module.memory_weight(group), mem)
        rows = LMAChunkRows(
            module.table_signatures(cfg.name).cpu(),
            module.key_selection(cfg.name).cpu(),
            module.memory_rows(group),
            salts[cfg.name],
        )
        k = cfg.num_chunks()
        tables.append(LoweredTable(cfg, "lma", [mem] * k, rows, input_weighted=[True] * k))
    return LoweredCollection(tables, physical, module.is_weighted())


def _mixed(module: CompressedEmbeddingBagCollection) -> LoweredCollection:
    by_name: Dict[str, LoweredTable] = {}
    physical: Dict[str, torch.Tensor] = {}
    for child in module.children_by_method.values():  # internal: one child collection per method
        part = lower_collection(child)
        for name, w in part.physical.items():
            if name in physical:
                raise ValueError(f"physical table name '{name}' is used twice in one collection")
            physical[name] = w
        by_name.update({t.config.name: t for t in part.tables})
    tables: List[LoweredTable] = [by_name[cfg.name] for cfg in module.embedding_bag_configs()]
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
        elif ops == [_CUSTOM] * len(ops) and hasattr(method, "group_rows"):  # LMA chunk locations
            rows = LMAChunkRows(
                module.table_signatures(cfg.name).cpu(),
                method.key_selection(cfg.name, torch.device("cpu")),
                method.group_rows[cfg.group()],
                method._index[cfg.name],  # internal: the table's fallback salt
            )
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


# ``ops.IdOp`` values (the registry's segment ops), as ints so this file imports on either generation
_IDENTITY, _HASH, _SCRAMBLE, _DIV, _MOD, _CUSTOM = range(6)


def _hashed_rows(h: BucketedHash) -> HashedRows:
    return HashedRows(h.scramble_params, h.padded_num_embeddings, h.ids_per_bucket, h.rows_per_bucket)


_LOWER = {
    EmbeddingBagCollection: _stock,
    CompressedEmbeddingBagCollection: _mixed,
    MEmComEmbeddingBagCollection: _hashed,
    HashEmbeddingBagCollection: _hashed,
    QREmbeddingBagCollection: _qr,
    LMAEmbeddingBagCollection: _lma,
}


def is_collection(module: nn.Module) -> bool:
    """Whether ``lower_collection`` takes ``module`` (a stock ``EmbeddingBagCollection`` or one of ours)."""
    return type(module) in _LOWER or _has_method_registry(module)


def lower_collection(module: nn.Module) -> LoweredCollection:
    """Reduces a trained, unsharded collection to its ``LoweredCollection`` (tables in the collection's output order).

    Raises:
        TypeError: ``module`` is not one of ``LOWERABLE_TYPES``.
        ValueError: a table has no serving form (LMA ``chunk_size=1``) or still lives on ``meta``.
    """
    if _has_method_registry(module):
        return _lower_methods(module)
    lower = _LOWER.get(type(module))
    if lower is None:
        names = ", ".join(t.__name__ for t in LOWERABLE_TYPES)
        raise TypeError(f"cannot serve a {type(module).__name__}: expected one of {names} (unsharded)")
    return lower(module)

