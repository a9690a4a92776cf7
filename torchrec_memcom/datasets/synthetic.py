# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Synthetic click data in Criteo's layout with power-law ids and a planted click model.

SYNTHETIC DATA: for scale, memory and speed tests and for checking that training learns something. Numbers measured
on it are never real-data results and must never be reported as Criteo (or any real dataset) results.
"""

import math
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchrec.datasets.criteo import CAT_FEATURE_COUNT, INT_FEATURE_COUNT
from torchrec.datasets.utils import Batch

from torchrec_memcom.datasets._batching import check_rank, single_id_kjt

__all__ = ["SyntheticCriteo"]

_SPLITS = ("train", "val", "test")
_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 (wrapping arithmetic): a fixed pseudo-random function of each value."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class SyntheticCriteo:
    """Seeded synthetic click logs with Criteo's layout (13 dense, 26 categorical) and a planted logistic model.

    SYNTHETIC: results on this data are never real-data (Criteo) results.

    Ids: categorical ``f`` draws a popularity rank ``k`` from a power law truncated to ``[0, n_f)``,
    ``P(k) ~ (k + 1) ** -zipf_exponent`` (continuous inverse-CDF sampling), then maps it through a fixed affine
    bijection of ``[0, n_f)`` so popular ids are spread over the whole range (as after Criteo's hashing) instead of
    crowding the first rows of a row-wise shard. Dense: feature ``j`` is ``log(1 + c)`` of a count
    ``c = floor(exp(N(mu_j, sigma_j)))``, missing (0) with probability ``missing_rate``, the same transform
    ``CriteoTSVReader`` applies.

    Click model: ``logit = b + sum_f s_f * e_f(id_f) + sum_j w_j * (dense_j - m_j)`` and ``label ~ Bernoulli(
    sigmoid(logit))``, where ``e_f(id)`` is a fixed pseudo-random effect of unit variance computed by hashing
    ``(seed, f, id)`` (no per-id table, so cardinalities can be huge), ``s_f`` and ``w_j`` are drawn from ``seed``
    and scaled so the sparse and dense parts have variances about ``sparse_signal`` and ``dense_signal`` (the
    realized variance depends on which ids are popular), and ``b`` makes the mean click rate about ``base_ctr``.
    ``planted_logits`` exposes the model, so a learner's AUC can be compared with the best achievable.

    Streams: rank ``r``'s batch ``i`` of ``split`` is drawn from ``np.random.default_rng([seed, split, r, i])``,
    so it is deterministic, independent of ``world_size`` and of the other ranks, and every rank yields
    ``num_batches`` batches of ``batch_size`` rows. The click model depends on ``seed`` only, so the ``"train"``,
    ``"val"`` and ``"test"`` splits share it but never share samples.

    Args:
        num_batches (int): batches per rank per pass.
        batch_size (int): rows per batch.
        num_embeddings_per_feature (Optional[Sequence[int]]): cardinality of each categorical feature (its length
            sets the number of features; keys ``cat_0 ..``); default 26 features of 100,000.
        seed (int): seed of the click model and of the streams.
        split (str): ``"train"``, ``"val"`` or ``"test"``; selects the stream.
        rank (int): this rank.
        world_size (int): number of ranks (only checked: the data of a rank does not depend on it).
        zipf_exponent (float): power-law exponent of the id popularity (> 0).
        base_ctr (float): target mean click rate (approximate), in ``(0, 1)``.
        sparse_signal (float): variance of the categorical part of the logit.
        dense_signal (float): variance of the dense part of the logit.
        missing_rate (float): probability that a dense value is missing.
    """

    num_dense: int = INT_FEATURE_COUNT

    def __init__(
        self,
        num_batches: int,
        batch_size: int,
        num_embeddings_per_feature: Optional[Sequence[int]] = None,
        *,
        seed: int = 0,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
        zipf_exponent: float = 1.05,
        base_ctr: float = 0.25,
        sparse_signal: float = 2.0,
        dense_signal: float = 0.5,
        missing_rate: float = 0.1,
    ) -> None:
        check_rank(batch_size, rank, world_size)
        sizes = list(num_embeddings_per_feature or [100_000] * CAT_FEATURE_COUNT)
        if not sizes or min(sizes) < 1 or max(sizes) >= 1 << 32:
            raise ValueError(f"num_embeddings_per_feature needs sizes in [1, 2**32), got {sizes}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if num_batches < 0 or zipf_exponent <= 0 or not 0 < base_ctr < 1 or not 0 <= missing_rate < 1:
            raise ValueError("need num_batches >= 0, zipf_exponent > 0, 0 < base_ctr < 1, 0 <= missing_rate < 1")
        if sparse_signal < 0 or dense_signal < 0:
            raise ValueError("sparse_signal and dense_signal must be >= 0")
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.num_embeddings_per_feature: List[int] = sizes
        self.feature_names: List[str] = [f"cat_{i}" for i in range(len(sizes))]
        self.seed = seed
        self.split = split
        self.rank = rank
        self.world_size = world_size
        self.zipf_exponent = zipf_exponent
        self.missing_rate = missing_rate

        model = np.random.default_rng([seed, 0x5EED])
        self._mult: List[int] = []
        self._shift: List[int] = []
        for n in sizes:  # affine bijection k -> (a k + c) mod n, gcd(a, n) = 1
            a = int(model.integers(max(n // 3, 1), n)) if n > 1 else 1
            while math.gcd(a, n) != 1:
                a += 1
            self._mult.append(a % n if n > 1 else 0)
            self._shift.append(int(model.integers(0, n)))
        self._dense_mu = model.uniform(0.0, 3.0, INT_FEATURE_COUNT)
        self._dense_sigma = model.uniform(0.5, 1.5, INT_FEATURE_COUNT)
        s = model.uniform(0.2, 1.0, len(sizes))
        self._sparse_scale = s * math.sqrt(sparse_signal / float(np.sum(s**2)))
        w = model.normal(0.0, 1.0, INT_FEATURE_COUNT)
        # Var(log1p(c)) ~ sigma^2 (roughly; missing values add a little): scale w so the dense part has dense_signal.
        self._dense_weight = w * math.sqrt(dense_signal / float(np.sum((w * self._dense_sigma) ** 2)))
        self._dense_center = self._dense_mu * (1.0 - missing_rate)
        # E[sigmoid(b + Z)] ~ sigmoid(b / sqrt(1 + pi var(Z) / 8)) for Z ~ N(0, var): solve for mean CTR = base_ctr.
        spread = math.sqrt(1.0 + math.pi * (sparse_signal + dense_signal) / 8.0)
        self._bias = math.log(base_ctr / (1.0 - base_ctr)) * spread
        self._seed_key = np.uint64(seed & _MASK64)
        self._feature_keys = [np.uint64((0xC2B2AE3D27D4EB4F * (f + 1)) & _MASK64) for f in range(len(sizes))]

    def __len__(self) -> int:
        return self.num_batches

    def _effects(self, f: int, ids: np.ndarray) -> np.ndarray:
        """Unit-variance pseudo-random effect ``e_f(id)``: uniform on ``[-sqrt(3), sqrt(3)]`` from a hash."""
        h = _splitmix64(_splitmix64(ids.astype(np.uint64) ^ self._feature_keys[f]) ^ self._seed_key)
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return math.sqrt(3.0) * (2.0 * u - 1.0)

    def _logits(self, dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
        logit = self._bias + (dense - self._dense_center) @ self._dense_weight
        for f in range(ids.shape[1]):
            logit = logit + self._sparse_scale[f] * self._effects(f, ids[:, f])
        return logit

    def planted_logits(self, dense_features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The planted model's logits for dense ``[B, 13]`` and ids ``[B, F]`` (``Batch``: ``ids`` is
        ``sparse_features.values().view(F, B).T``)."""
        return torch.from_numpy(self._logits(dense_features.double().numpy(), ids.numpy()).astype(np.float32))

    def _sample(self, batch_index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, _SPLITS.index(self.split), self.rank, batch_index])
        b = self.batch_size
        ids = np.empty((b, len(self.num_embeddings_per_feature)), dtype=np.int64)
        a = self.zipf_exponent
        for f, n in enumerate(self.num_embeddings_per_feature):
            u = rng.random(b)
            if abs(a - 1.0) < 1e-9:
                x = np.exp(u * math.log(n + 1.0))
            else:
                x = (1.0 - u * (1.0 - (n + 1.0) ** (1.0 - a))) ** (1.0 / (1.0 - a))
            k = np.clip(np.floor(x).astype(np.int64) - 1, 0, n - 1).astype(np.uint64)
            ids[:, f] = ((k * np.uint64(self._mult[f]) + np.uint64(self._shift[f])) % np.uint64(n)).astype(np.int64)
        counts = np.floor(np.exp(rng.normal(self._dense_mu, self._dense_sigma, (b, INT_FEATURE_COUNT))))
        counts[rng.random((b, INT_FEATURE_COUNT)) < self.missing_rate] = 0.0
        dense = np.log1p(counts).astype(np.float32)
        logits = self._logits(dense.astype(np.float64), ids)
        labels = (rng.random(b) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return dense, ids, labels

    def __iter__(self) -> Iterator[Batch]:
        for i in range(self.num_batches):
            dense, ids, labels = self._sample(i)
            yield Batch(
                dense_features=torch.from_numpy(dense),
                sparse_features=single_id_kjt(self.feature_names, list(ids.T)),
                labels=torch.from_numpy(labels),
            )
