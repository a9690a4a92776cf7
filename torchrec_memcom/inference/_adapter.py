# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The one place that reads trained collections: ``lower_collection(module) -> LoweredCollection``.

Every collection's forward is ``combine(EBC(transform(kjt)))``; this file takes each one apart into the physical
tables of its stock ``EmbeddingBagCollection``, its transform's fixed parameters (as an ``id_maps`` module) and its
combine. It uses the collections' public accessors where they exist and names every internal it touches here, so a
rewrite of ``torchrec_memcom.modules`` re-points this file only. Checked against the modules of commit 816ac5e.

Internals used: ``CompressedEmbeddingBagCollection.children_by_method``; the physical ``EmbeddingBagCollection``
``_embedding_bag_collection`` of QR; LMA's per-table fallback salt ``id_transform._table_index``.
"""

from typing import Dict, List

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection

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

__all__ = ["LOWERABLE_TYPES", "lower_collection"]

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
        h = module.bucketed_hash(cfg.name)
        physical[cfg.name] = _weight(module.shared_weight(cfg.name), cfg.name)
        rows = HashedRows(h.scramble_params, h.padded_num_embeddings, h.ids_per_bucket, h.rows_per_bucket)
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


_LOWER = {
    EmbeddingBagCollection: _stock,
    CompressedEmbeddingBagCollection: _mixed,
    MEmComEmbeddingBagCollection: _hashed,
    HashEmbeddingBagCollection: _hashed,
    QREmbeddingBagCollection: _qr,
    LMAEmbeddingBagCollection: _lma,
}


def lower_collection(module: nn.Module) -> LoweredCollection:
    """Reduces a trained, unsharded collection to its ``LoweredCollection`` (tables in the collection's output order).

    Raises:
        TypeError: ``module`` is not one of ``LOWERABLE_TYPES``.
        ValueError: a table has no serving form (LMA ``chunk_size=1``) or still lives on ``meta``.
    """
    lower = _LOWER.get(type(module))
    if lower is None:
        names = ", ".join(t.__name__ for t in LOWERABLE_TYPES)
        raise TypeError(f"cannot serve a {type(module).__name__}: expected one of {names} (unsharded)")
    return lower(module)

