# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Low-rank stock tables: a stock table at a smaller width, then a learned projection to the model's width."""

from typing import List

from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_memcom.configs import LowRankEmbeddingBagConfig, physical_dim
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.method import physical_config, register_method
from torchrec_memcom.modules.stock import StockMethod

__all__ = ["LowRankEmbeddingBagCollection", "LowRankMethod"]


@register_method
class LowRankMethod(StockMethod):
    """``embedding(i) = E[i] P``: ``E`` (``n x base_dim``) is a physical table fed the ids unchanged; the
    projection ``P`` (``base_dim x d``, ``projections.<table>``) is applied when combining (pooling is linear, so the
    pooled bag is projected once). Everything else is a stock table's."""

    name = "lowrank"
    config_type = LowRankEmbeddingBagConfig

    def physical_tables(self) -> List[EmbeddingBagConfig]:
        return [physical_config(t, t.name, t.num_embeddings, physical_dim(t), t.feature_names) for t in self.tables]


class LowRankEmbeddingBagCollection(CompressedEmbeddingBagCollection):
    """Low-rank stock tables (``embedding(i) = E[i] P``, see ``LowRankMethod``).

    Args:
        tables (List[LowRankEmbeddingBagConfig]): the tables; feature names must be unique across tables.
        is_weighted (bool): whether input KJTs carry per-id weights.
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation.
    """

    _config_types = (LowRankEmbeddingBagConfig,)


LowRankMethod.collection_type = LowRankEmbeddingBagCollection
