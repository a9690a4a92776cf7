# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Pieces shared by the unsharded compressed collections: input checks, pooling, the common interface."""

import abc
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.memory import MemoryReport

_ID_DTYPES = (torch.int32, torch.int64)


def check_ids(ids: torch.Tensor, num_embeddings: int, table: str, feature: str) -> None:
    """Raises ``ValueError`` naming the table, feature and offending range unless ``0 <= ids < num_embeddings``."""
    if ids.dtype not in _ID_DTYPES:
        raise ValueError(f"table '{table}', feature '{feature}': ids must be int32 or int64, got {ids.dtype}")
    if ids.numel() == 0:
        return
    bad = (ids < 0) | (ids >= num_embeddings)
    if bool(bad.any()):
        raise ValueError(
            f"table '{table}', feature '{feature}': ids must lie in [0, {num_embeddings}), got values in "
            f"[{int(ids.min())}, {int(ids.max())}] ({int(bad.sum())} out of range)"
        )


class IdRangeCheck:
    """Checks that ids lie in ``[0, n)`` per feature without stalling the GPU.

    On CPU the check is immediate. On CUDA each feature's min and max are copied to pinned host memory
    asynchronously, and the next call (or ``flush()``) inspects them, so a bad batch raises ``ValueError`` naming
    the table, feature and offending range one step later, never silently. (A ``bool(tensor)`` per feature and
    step would serialise the host with the device, which costs about half of a sharded step's time.)
    """

    def __init__(self) -> None:
        self._pending: Optional[Tuple[torch.Tensor, torch.cuda.Event, List[Tuple[str, str, int]]]] = None

    def __call__(self, checks: Sequence[Tuple[torch.Tensor, int, str, str]]) -> None:
        """``checks``: (ids, num_embeddings, table, feature) per feature."""
        for ids, _, table, feature in checks:
            if ids.dtype not in _ID_DTYPES:
                raise ValueError(f"table '{table}', feature '{feature}': ids must be int32 or int64, got {ids.dtype}")
        checks = [c for c in checks if c[0].numel() > 0]
        if not checks:
            return
        if checks[0][0].device.type != "cuda" or torch.jit.is_scripting():
            for ids, n, table, feature in checks:
                check_ids(ids, n, table, feature)
            return
        self.flush()
        stats = torch.empty(len(checks), 2, dtype=torch.int64, device=checks[0][0].device)
        for i, (ids, *_) in enumerate(checks):
            torch.aminmax(ids.to(torch.int64), out=(stats[i, 0], stats[i, 1]))
        host = torch.empty(stats.shape, dtype=torch.int64, pin_memory=True)
        host.copy_(stats, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (host, event, [(table, feature, n) for _, n, table, feature in checks])

    def flush(self) -> None:
        """Raises for the previous CUDA batch if it had ids out of range."""
        if self._pending is None:
            return
        host, event, meta = self._pending
        self._pending = None
        event.synchronize()
        for (lo, hi), (table, feature, n) in zip(host.tolist(), meta):
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"table '{table}', feature '{feature}': ids must lie in [0, {n}), got values in [{lo}, {hi}] "
                    "(in the previous batch: on CUDA ids are checked asynchronously)"
                )


def split_features(
    features: KeyedJaggedTensor,
    feature_tables: Sequence[Tuple[str, EmbeddingBagConfig]],
    is_weighted: bool,
    id_check: Optional[IdRangeCheck] = None,
) -> Dict[str, JaggedTensor]:
    """Checks ``features`` against the module's (feature, table config) pairs and splits it per feature.

    Extra keys are ignored, as in ``EmbeddingBagCollection``; missing features, non-integer ids, ids outside
    ``[0, num_embeddings)``, variable batch sizes and missing weights of a weighted module raise ``ValueError``
    (on CUDA, out-of-range ids one batch later: see ``IdRangeCheck``).
    """
    check_kjt(features, feature_tables, is_weighted, id_check or IdRangeCheck())
    return features.to_dict()


def check_kjt(
    features: KeyedJaggedTensor,
    feature_tables: Sequence[Tuple[str, EmbeddingBagConfig]],
    is_weighted: bool,
    id_check: IdRangeCheck,
) -> None:
    """The checks of ``split_features`` without splitting: slices the values by ``offset_per_key`` (host ints)."""
    keys = features.keys()
    index = {k: i for i, k in enumerate(keys)}
    for feature, table in feature_tables:
        if feature not in index:
            raise ValueError(
                f"feature '{feature}' of table '{table.name}' is missing from the input KJT (keys: {keys})"
            )
    if features.variable_stride_per_key():
        raise ValueError("variable batch sizes per feature (variable_stride_per_key) are not supported")
    if is_weighted and features.weights_or_none() is None:
        raise ValueError("the module is weighted (is_weighted=True) but the input KJT has no weights")
    if is_weighted and not features.weights().is_floating_point():
        raise ValueError(f"KJT weights must be floating point, got {features.weights().dtype}")
    values = features.values()
    offsets = features.offset_per_key()
    id_check(
        [(values[offsets[index[f]] : offsets[index[f] + 1]], t.num_embeddings, t.name, f) for f, t in feature_tables]
    )


def pool_lengths(jt: JaggedTensor) -> torch.Tensor:
    """Bag sizes as a ``(B, 1)`` float divisor for MEAN pooling (empty bags divide by 1 and stay 0)."""
    return jt.lengths().clamp(min=1).unsqueeze(1).to(torch.float32)


def keyed_tensor(keys: List[str], pooled: List[torch.Tensor]) -> KeyedTensor:
    return KeyedTensor(keys=keys, length_per_key=[p.size(1) for p in pooled], values=torch.cat(pooled, dim=1))


class IdTransform(nn.Module):
    """Maps a KJT of logical ids to the KJT the physical tables pool, and their pooled output back to the features.

    It holds no trainable state, so a sharded collection runs it before its input dist (on the data-parallel side)
    and after its output dist; both the unsharded and the sharded collections register the same instance under
    ``id_transform``, so any buffers it holds keep the same FQNs.
    """

    def __init__(self, tables: Sequence[EmbeddingBagConfig], is_weighted: bool) -> None:
        super().__init__()
        self._is_weighted = is_weighted
        self.id_check = IdRangeCheck()
        # (feature, table config) in output order: tables in config order, each table's features in order.
        self._feature_tables: List[Tuple[str, EmbeddingBagConfig]] = [(f, t) for t in tables for f in t.feature_names]

    def feature_names(self) -> List[str]:
        """Output keys, in order."""
        return [f for f, _ in self._feature_tables]

    def split(self, features: KeyedJaggedTensor) -> Dict[str, JaggedTensor]:
        """Checks ``features`` (see ``split_features``) and splits it per feature."""
        return split_features(features, self._feature_tables, self._is_weighted, self.id_check)

    def mean_divisors(self, feature_dict: Dict[str, JaggedTensor]) -> Dict[str, torch.Tensor]:
        """``(B, 1)`` bag sizes of the MEAN-pooled features (the physical tables always pool SUM)."""
        return {f: pool_lengths(feature_dict[f]) for f, t in self._feature_tables if t.pooling == PoolingType.MEAN}

    def select(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Checks ``features`` like ``split`` and returns a KJT of exactly this transform's features, in order.

        Unlike ``split`` it never splits the values, and it only reads ``length_per_key`` (computed once per batch, as
        TorchRec's own input dist does), so the hot path has no per-feature host-device synchronisation.
        """
        check_kjt(features, self._feature_tables, self._is_weighted, self.id_check)
        names = self.feature_names()
        keys = features.keys()
        if keys != names:
            features = features.permute([keys.index(f) for f in names])
        return features

    def kjt_mean_divisors(self, kjt: KeyedJaggedTensor) -> Dict[str, torch.Tensor]:
        """``mean_divisors`` of a KJT holding exactly this transform's features in order (see ``select``)."""
        mean = [i for i, (_, t) in enumerate(self._feature_tables) if t.pooling == PoolingType.MEAN]
        if not mean:
            return {}
        lengths = kjt.lengths().view(len(self._feature_tables), -1)
        return {self._feature_tables[i][0]: lengths[i].clamp(min=1).unsqueeze(1).to(torch.float32) for i in mean}

    def table_ranges(self, kjt: KeyedJaggedTensor) -> List[Tuple[EmbeddingBagConfig, int, int]]:
        """``(table, start, stop)`` of each table's values in a KJT from ``select`` (features are table-major)."""
        ranges: List[Tuple[EmbeddingBagConfig, int, int]] = []
        offset = 0
        for (_, table), length in zip(self._feature_tables, kjt.length_per_key()):
            if ranges and ranges[-1][0] is table:
                ranges[-1] = (table, ranges[-1][1], offset + length)
            else:
                ranges.append((table, offset, offset + length))
            offset += length
        return ranges

    @abc.abstractmethod
    def forward(self, features: KeyedJaggedTensor) -> Tuple[KeyedJaggedTensor, Dict[str, torch.Tensor]]:
        """Checks ``features``; returns (KJT for the physical tables, MEAN divisors by feature)."""

    def combine(self, pooled: KeyedTensor, divisors: Dict[str, torch.Tensor]) -> KeyedTensor:
        """Turns the physical tables' pooled output into the features' pooled embeddings."""
        return apply_mean_pooling(pooled, divisors)


class CompressedCollection(EmbeddingBagCollectionInterface):
    """Common base: table configs and the interface every compressed collection offers.

    Subclasses set ``_embedding_bag_collection`` (a stock ``EmbeddingBagCollection`` of the physical tables, so that
    sharding them runs on FBGEMM TBE) and ``id_transform`` (an ``IdTransform``), and implement ``memory_report`` and
    ``reset_parameters``; ``forward`` is ``combine(EBC(transform(features)))``.
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        config_type: type,
        is_weighted: bool,
        device: Optional[torch.device | str],
    ) -> None:
        super().__init__()
        if not tables:
            raise ValueError(f"{type(self).__name__} needs at least one table")
        names, feature_owner = set(), {}
        for t in tables:
            if not isinstance(t, config_type):
                raise TypeError(f"{type(self).__name__} takes {config_type.__name__}, got {type(t).__name__}")
            if t.name in names:
                raise ValueError(f"Duplicate table name {t.name}")
            names.add(t.name)
            for f in t.feature_names:
                if f in feature_owner:
                    raise ValueError(f"feature '{f}' is used by tables '{feature_owner[f]}' and '{t.name}'")
                feature_owner[f] = t.name
        self._embedding_bag_configs: List[EmbeddingBagConfig] = list(tables)
        self._is_weighted = is_weighted
        self._device = torch.device(device) if device is not None else torch.device("cpu")

    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self._embedding_bag_configs

    def is_weighted(self) -> bool:
        return self._is_weighted

    @property
    def device(self) -> torch.device:
        return self._device

    def feature_names(self) -> List[str]:
        """Output keys, in order."""
        return [f for t in self._embedding_bag_configs for f in t.feature_names]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """KJT in; KeyedTensor (keys = features, in table order) out."""
        kjt, divisors = self.id_transform(features)
        return self.id_transform.combine(self._embedding_bag_collection(kjt), divisors)

    @abc.abstractmethod
    def memory_report(self) -> MemoryReport:
        """Bytes per table by component, and the compression ratio against stock fp32 tables."""

    @abc.abstractmethod
    def reset_parameters(self) -> None:
        """(Re)initialises every parameter from the table configs; a no-op on ``meta``."""


def init_table(weight: nn.Parameter | torch.Tensor, config: EmbeddingBagConfig) -> None:
    """Initialises one table with its config's ``init_fn`` unless it lives on ``meta``."""
    if weight.is_meta:
        return
    assert config.init_fn is not None
    with torch.no_grad():
        config.init_fn(weight)


def shared_table_config(
    table: EmbeddingBagConfig, name: str, num_rows: int, dim: int, features: List[str], init_fn=None
) -> EmbeddingBagConfig:
    """Config of a physical table inside a compressed collection; always SUM-pooled (MEAN is applied outside)."""
    return EmbeddingBagConfig(
        name=name,
        num_embeddings=num_rows,
        embedding_dim=dim,
        feature_names=list(features),
        data_type=table.data_type,
        pooling=PoolingType.SUM,
        init_fn=init_fn if init_fn is not None else table.init_fn,
    )


def apply_mean_pooling(kt: KeyedTensor, divisors: Dict[str, torch.Tensor]) -> KeyedTensor:
    """Divides the SUM-pooled features of ``kt`` named in ``divisors`` by their ``(B, 1)`` bag sizes."""
    if not divisors:
        return kt
    pooled = [
        p / divisors[k] if k in divisors else p
        for k, p in zip(kt.keys(), kt.values().split(kt.length_per_key(), dim=1))
    ]
    return keyed_tensor(kt.keys(), pooled)
