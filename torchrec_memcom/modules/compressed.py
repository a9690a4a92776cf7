# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""One drop-in for a whole model's ``EmbeddingBagCollection``: any mix of compressed and stock tables."""

from typing import Dict, List, Optional, Sequence, Type

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_tracing
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import (
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
    QREmbeddingBagConfig,
)
from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.modules._base import IdRangeCheck, check_kjt, init_table
from torchrec_memcom.modules.baselines import HashEmbeddingBagCollection, QREmbeddingBagCollection
from torchrec_memcom.modules.lma import LMAEmbeddingBagCollection
from torchrec_memcom.modules.memcom import MEmComEmbeddingBagCollection

__all__ = ["CompressedEmbeddingBagCollection"]

# config type -> (child name, collection type); a plain EmbeddingBagConfig stays a stock table.
_CHILDREN: Dict[Type[EmbeddingBagConfig], tuple] = {
    MEmComEmbeddingBagConfig: ("memcom", MEmComEmbeddingBagCollection),
    LMAEmbeddingBagConfig: ("lma", LMAEmbeddingBagCollection),
    HashEmbeddingBagConfig: ("hash", HashEmbeddingBagCollection),
    QREmbeddingBagConfig: ("qr", QREmbeddingBagCollection),
    EmbeddingBagConfig: ("stock", EmbeddingBagCollection),
}


class CompressedEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """A model's tables, each stock or compressed, behind the ``EmbeddingBagCollection`` interface.

    Tables are grouped by config type into child collections (``children_by_method["memcom"]`` etc., a stock
    ``EmbeddingBagCollection`` for plain ``EmbeddingBagConfig``); every child sees the whole KJT and pools its own
    features, and the output KeyedTensor lists all features in table order. So it drops into
    ``torchrec.models.dlrm.DLRM(embedding_bag_collection=...)``, and ``DistributedModelParallel`` shards each child
    with its own sharder.

    Args:
        tables (Sequence[EmbeddingBagConfig]): any mix of our configs and plain ``EmbeddingBagConfig``.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        is_weighted: bool = False,
        device: Optional[torch.device | str] = None,
    ) -> None:
        super().__init__()
        if not tables:
            raise ValueError("CompressedEmbeddingBagCollection needs at least one table")
        by_child: Dict[str, List[EmbeddingBagConfig]] = {}
        child_types: Dict[str, type] = {}
        for t in tables:
            if type(t) not in _CHILDREN:
                raise TypeError(f"table '{t.name}': unsupported config type {type(t).__name__}")
            name, cls = _CHILDREN[type(t)]
            by_child.setdefault(name, []).append(t)
            child_types[name] = cls
        names = [t.name for t in tables]
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate table name in {names}")
        self._embedding_bag_configs: List[EmbeddingBagConfig] = list(tables)
        self._is_weighted = is_weighted
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self.children_by_method = nn.ModuleDict(
            {
                name: child_types[name](tables=cfgs, is_weighted=is_weighted, device=device)
                for name, cfgs in by_child.items()
            }
        )
        feature_names = [f for t in tables for f in t.feature_names]
        if len(set(feature_names)) != len(feature_names):
            raise ValueError(f"feature names must be unique across tables, got {feature_names}")
        self._feature_names = feature_names
        # Stock tables get the same input checks as ours (EmbeddingBagCollection itself has none).
        self._stock_features = [(f, t) for t in tables if type(t) is EmbeddingBagConfig for f in t.feature_names]
        self._stock_check = IdRangeCheck()
        self._dims = [t.embedding_dim for t in tables for _ in t.feature_names]

    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self._embedding_bag_configs

    def is_weighted(self) -> bool:
        return self._is_weighted

    @property
    def device(self) -> torch.device:
        return self._device

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """KJT in; KeyedTensor with every table's features, in table order, out."""
        if self._stock_features and not is_fx_tracing():  # TorchRec's pipelines fx-trace the model to find inputs
            check_kjt(features, self._stock_features, self._is_weighted, self._stock_check)
        kts = [child(features) for child in self.children_by_method.values()]
        if len(kts) == 1:
            return kts[0]
        values = KeyedTensor.regroup(kts, [self._feature_names])[0]
        return KeyedTensor(keys=self._feature_names, length_per_key=self._dims, values=values)

    def reset_parameters(self) -> None:
        for child in self.children_by_method.values():
            if isinstance(child, EmbeddingBagCollection):
                for cfg in child.embedding_bag_configs():
                    init_table(child.embedding_bags[cfg.name].weight, cfg)
            else:
                child.reset_parameters()

    def memory_report(self) -> MemoryReport:
        """Bytes per table by component for every child, stock tables included."""
        reports = []
        for child in self.children_by_method.values():
            if isinstance(child, EmbeddingBagCollection):
                weights = {c.name: child.embedding_bags[c.name].weight for c in child.embedding_bag_configs()}
                reports.append(MemoryReport.stock(child.embedding_bag_configs(), weights))
            else:
                reports.append(child.memory_report())
        return MemoryReport.merge(reports)
