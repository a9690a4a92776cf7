# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""SYNTHETIC large-vocabulary click logs with a planted click model of known rank (Criteo-like layout).

SYNTHETIC DATA: for the large-vocabulary regime (millions of ids per table, Zipf popularity, per-id signal) that
real public data here does not cover. Numbers measured on it are never real-data results; label them synthetic.

Nothing is stored per id: every id's latent vector and bias, and every row, are pure functions of the seed computed
by a 64-bit hash (SplitMix64), so a table of 10M ids costs no memory (storing 26 tables x 10M ids x rank 32 even as
float16 would take 16.6 GB, and one table 640 MB), any row can be generated alone (random access: exact rank
sharding and per-epoch shuffles without materialising a split), and the model is identical on every rank.
"""

import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torchrec.datasets.criteo import INT_FEATURE_COUNT
from torchrec.datasets.utils import Batch

from torchrec_memcom.datasets._batching import check_rank, rank_slice, single_id_kjt

__all__ = ["PlantedCTR", "bayes_auc", "bayes_logloss"]

_SPLITS = ("train", "val", "test", "calibration")
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_SQRT3 = math.sqrt(3.0)
_CALIBRATION_ROWS = 16384


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 (wrapping arithmetic): a fixed bijective pseudo-random function."""
    x = x + np.uint64(_GOLDEN)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _key(*parts: int) -> np.uint64:
    """A 64-bit key from small integers (order matters)."""
    h = np.zeros(1, dtype=np.uint64)
    for p in parts:
        h = _mix(h ^ np.uint64(p & _MASK64))
    return np.uint64(h[0])


def _uniform(h: np.ndarray) -> np.ndarray:
    """float64 in [0, 1) from the top 53 bits of a hash."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _zipf_ranks(u: np.ndarray, n: np.ndarray | int, a: float) -> np.ndarray:
    """Popularity rank ``k`` in ``[0, n)`` with ``P(k) ~ (k + 1) ** -a`` (continuous inverse CDF on ``[1, n + 1)``)."""
    n1 = np.asarray(n, dtype=np.float64) + 1.0
    if abs(a - 1.0) < 1e-9:
        x = np.exp(u * np.log(n1))
    else:
        x = (1.0 - u * (1.0 - n1 ** (1.0 - a))) ** (1.0 / (1.0 - a))
    return np.clip(np.floor(x).astype(np.int64) - 1, 0, np.asarray(n, dtype=np.int64) - 1)


def _pair_weights(logits: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    return z, 1.0 / (1.0 + np.exp(-z))


def bayes_auc(logits: Union[np.ndarray, torch.Tensor]) -> float:
    """AUC of the Bayes-optimal scorer on rows whose labels are ``Bernoulli(sigmoid(logits))``.

    The population AUC ``P(z+ > z-) + P(z+ = z-) / 2`` where a positive is row ``i`` drawn with weight ``p_i`` and a
    negative row ``j != i`` with weight ``1 - p_j``: the highest AUC any model of these rows reaches in expectation
    (a test-set AUC scatters around it by its standard error). Exact, ``O(N log N)``.
    """
    z, p = _pair_weights(logits.numpy() if isinstance(logits, torch.Tensor) else logits)
    if z.size < 2:
        raise ValueError(f"bayes_auc needs at least 2 rows, got {z.size}")
    order = np.argsort(z, kind="stable")
    z, p = z[order], p[order]
    neg = 1.0 - p
    _, start, count = np.unique(z, return_index=True, return_counts=True)
    group = np.repeat(np.arange(start.size), count)
    below = (np.cumsum(neg) - neg)[start][group]  # negative mass strictly below each row's logit
    tied = np.add.reduceat(neg, start)[group] - neg  # negative mass of the other rows with an equal logit
    numerator = float(np.sum(p * (below + 0.5 * tied)))
    denominator = float(np.sum(p) * np.sum(neg) - np.sum(p * neg))
    return numerator / denominator


def bayes_logloss(logits: Union[np.ndarray, torch.Tensor]) -> float:
    """Expected logloss of the Bayes-optimal predictor: the mean binary entropy of ``sigmoid(logits)`` (nats)."""
    z, p = _pair_weights(logits.numpy() if isinstance(logits, torch.Tensor) else logits)
    return float(np.mean(np.logaddexp(0.0, z) - p * z))  # H(p) = log(1 + e^z) - p z


class PlantedCTR:
    """SYNTHETIC click logs: dense + categorical features, Zipf ids, labels from a planted rank-``r`` model.

    SYNTHETIC: results on this data are never real-data (Criteo) results.

    Model (``F`` categorical features, feature ``f`` with ``n_f`` ids; all pure functions of ``seed``):

    - each id ``i`` of feature ``f`` has a latent vector ``v_f(i)`` in ``R^r`` (entries of unit variance) and a bias
      ``b_f(i)`` (unit variance); with ``num_clusters = C > 0`` ids fall into ``C`` clusters per feature and
      ``v_f(i) = sqrt(c) * centroid_f(cluster(i)) + sqrt(1 - c) * own_f(i)`` with ``c = cluster_share``;
    - ``logit = b0 + s_v * sum_{f<g} <v_f(i_f), v_g(i_g)> + s_b * sum_f b_f(i_f) + w . (dense - center)`` and
      ``label ~ Bernoulli(sigmoid(logit))``. ``s_v``, ``s_b`` and ``w`` give the three parts the variances
      ``interaction_signal``, ``bias_signal`` and ``dense_signal``; ``b0`` is solved on a calibration sample so the
      mean click rate is ``base_ctr``. Feature pair ``(f, g)`` interacts through a rank-``r`` matrix.
    - ids: feature ``f`` draws a popularity rank ``k`` in ``[0, n_f)`` by a continuous Zipf law (``P(k)`` is the mass
      of ``[k + 1, k + 2)`` under the density ``x ** -a_f`` on ``[1, n_f + 1)``, about ``(k + 1.5) ** -a_f``) and
      maps it to an id through a fixed affine bijection (``id_of_rank``: popular ids spread over the range). With
      clusters, each row also has a segment ``s`` (uniform over ``C``) and each feature draws, with probability
      ``cluster_affinity``, a Zipf rank among the ranks ``k = s (mod C)`` instead: ids of one cluster then share
      co-occurrence contexts (what LMA's signatures look for) as well as latent directions.
    - dense: 13 features ``log(1 + c)`` of log-normal counts ``c``, missing (0) with probability ``missing_rate``.

    Rows: row ``g`` of ``split`` is a function of ``(seed, split, g)``; a split has ``num_rows`` rows. Each epoch
    visits them in an order (``shuffle``: a per-epoch affine permutation seeded by ``(shuffle_seed, epoch)``),
    cut into global batches of ``batch_size * world_size`` rows of which rank ``r`` takes
    ``[r * batch_size, (r + 1) * batch_size)`` (``rank_slice``), so ranks see disjoint rows and the union over ranks
    does not depend on ``world_size``. ``drop_last`` drops the short last global batch (training).

    Args:
        num_rows (int): rows of this split per epoch, over all ranks.
        batch_size (int): rows per rank per batch.
        num_embeddings_per_feature (Optional[Sequence[int]]): ids per feature (its length sets ``F``; keys
            ``cat_0 ..``); default 8 features of 1,000,000.
        seed (int): seed of the model and of the rows.
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        rank (int): this rank.
        world_size (int): number of ranks.
        latent_rank (int): ``r``.
        zipf_exponent (float | Sequence[float]): ``a_f`` (> 0), one for all features or one per feature.
        base_ctr (float): mean click rate, in ``(0, 1)``.
        interaction_signal (float): variance of the pairwise-interaction part of the logit. With the defaults
            (1.0, 0.5, 0.25) and ``base_ctr=0.25`` the Bayes AUC is about 0.80 and the Bayes logloss 0.45 (a
            Criteo-like click rate and AUC range); ``ceiling()`` gives the exact values.
        bias_signal (float): variance of the per-id bias part.
        dense_signal (float): variance of the dense part.
        num_clusters (int): ``C`` (0: no clusters).
        cluster_share (float): fraction of a latent vector's variance that is its cluster's centroid.
        cluster_affinity (float): probability that a feature's id comes from the row segment's cluster.
        missing_rate (float): probability that a dense value is missing.
        shuffle (bool): visit the rows in a fresh order every epoch (``set_epoch``).
        shuffle_seed (int): seed of the orders (the same on every rank).
        drop_last (bool): drop the short last global batch.
    """

    num_dense: int = INT_FEATURE_COUNT

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        num_embeddings_per_feature: Optional[Sequence[int]] = None,
        *,
        seed: int = 0,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
        latent_rank: int = 32,
        zipf_exponent: Union[float, Sequence[float]] = 1.05,
        base_ctr: float = 0.25,
        interaction_signal: float = 1.0,
        bias_signal: float = 0.5,
        dense_signal: float = 0.25,
        num_clusters: int = 0,
        cluster_share: float = 0.5,
        cluster_affinity: float = 0.5,
        missing_rate: float = 0.1,
        shuffle: bool = False,
        shuffle_seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        check_rank(batch_size, rank, world_size)
        sizes = [int(n) for n in (num_embeddings_per_feature or [1_000_000] * 8)]
        if not sizes or min(sizes) < 1 or max(sizes) >= 1 << 32:
            raise ValueError(f"num_embeddings_per_feature needs sizes in [1, 2**32), got {sizes}")
        exps = [float(zipf_exponent)] * len(sizes) if np.isscalar(zipf_exponent) else list(zipf_exponent)  # type: ignore[arg-type]
        if len(exps) != len(sizes) or min(exps) <= 0:
            raise ValueError(f"zipf_exponent: one value > 0 or one per feature ({len(sizes)}), got {zipf_exponent}")
        if split not in _SPLITS[:3]:
            raise ValueError(f"split must be one of {_SPLITS[:3]}, got {split!r}")
        if num_rows < 0 or latent_rank < 1 or not 0 < base_ctr < 1 or not 0 <= missing_rate < 1:
            raise ValueError(
                f"need num_rows >= 0, latent_rank >= 1, 0 < base_ctr < 1, 0 <= missing_rate < 1; got num_rows="
                f"{num_rows}, latent_rank={latent_rank}, base_ctr={base_ctr}, missing_rate={missing_rate}"
            )
        if min(interaction_signal, bias_signal, dense_signal) < 0:
            raise ValueError(
                f"signal variances must be >= 0, got interaction={interaction_signal}, bias={bias_signal}, "
                f"dense={dense_signal}"
            )
        if num_clusters < 0 or num_clusters > min(sizes):
            raise ValueError(f"num_clusters must be in [0, {min(sizes)}] (the smallest table), got {num_clusters}")
        if not (0 <= cluster_share <= 1 and 0 <= cluster_affinity <= 1):
            raise ValueError(
                f"cluster_share and cluster_affinity must be in [0, 1], got {cluster_share}, {cluster_affinity}"
            )
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.num_embeddings_per_feature: List[int] = sizes
        self.feature_names: List[str] = [f"cat_{i}" for i in range(len(sizes))]
        self.zipf_exponents: List[float] = exps
        self.seed, self.split, self.rank, self.world_size = seed, split, rank, world_size
        self.latent_rank = latent_rank
        self.num_clusters, self.cluster_share, self.cluster_affinity = num_clusters, cluster_share, cluster_affinity
        self.missing_rate = missing_rate
        self.shuffle, self.shuffle_seed, self.drop_last = shuffle, shuffle_seed, drop_last
        self.epoch = 0

        num_f = len(sizes)
        model = np.random.default_rng([seed, 0x91A7])
        self._mult: List[int] = []
        self._inv: List[int] = []
        self._shift: List[int] = []
        for n in sizes:  # rank -> id: i = (a k + c) mod n with gcd(a, n) = 1; id -> rank: k = a^-1 (i - c) mod n
            a = int(model.integers(max(n // 3, 1), n)) if n > 1 else 1
            while math.gcd(a, n) != 1:
                a += 1
            self._mult.append(a % n)
            self._inv.append(pow(a, -1, n) if n > 1 else 0)
            self._shift.append(int(model.integers(0, n)))
        self._dense_mu = model.uniform(0.0, 3.0, INT_FEATURE_COUNT)
        self._dense_sigma = model.uniform(0.5, 1.5, INT_FEATURE_COUNT)
        w = model.normal(0.0, 1.0, INT_FEATURE_COUNT)
        # Var(log1p(c)) ~ sigma^2 (roughly; missing values add a little): scale w so the dense part has dense_signal.
        self._dense_weight = w * math.sqrt(dense_signal / float(np.sum((w * self._dense_sigma) ** 2)))
        self._dense_center = self._dense_mu * (1.0 - missing_rate)
        pairs = num_f * (num_f - 1) // 2
        # <v_f, v_g> of independent unit-variance entries has variance r; pairs are uncorrelated.
        self._interaction_scale = math.sqrt(interaction_signal / (pairs * latent_rank)) if pairs else 0.0
        self._bias_scale = math.sqrt(bias_signal / num_f)
        self._model_key = int(_key(seed, 0x3A0DE1))
        self._split_keys = {s: int(_key(seed, 0x5B117, i)) for i, s in enumerate(_SPLITS)}
        # salts of the per-id hashes: (own vector, cluster centroid, bias) per feature
        self._salts = [[int(_key(self._model_key, part, f)) for part in (1, 2, 3)] for f in range(num_f)]
        # streams of draws per row: 0 segment, 1..F id ranks, F+1..2F cluster coins, then dense, missing, label
        self._dense_stream = 1 + 2 * num_f
        self._label_stream = self._dense_stream + 2 * ((INT_FEATURE_COUNT + 1) // 2) + INT_FEATURE_COUNT
        self._intercept = 0.0
        _, _, calibration = self._rows(np.arange(_CALIBRATION_ROWS, dtype=np.int64), "calibration")
        self._intercept = _solve_intercept(calibration, base_ctr)

    # -- the planted model ------------------------------------------------------------------------------------------

    def id_of_rank(self, feature: int, ranks: np.ndarray) -> np.ndarray:
        """Ids of popularity ranks ``ranks`` (0 = most popular) of ``feature``."""
        n = np.uint64(self.num_embeddings_per_feature[feature])
        k = np.asarray(ranks, dtype=np.int64).astype(np.uint64)
        return ((k * np.uint64(self._mult[feature]) + np.uint64(self._shift[feature])) % n).astype(np.int64)

    def rank_of_id(self, feature: int, ids: np.ndarray) -> np.ndarray:
        """Popularity ranks of ``ids`` of ``feature`` (inverse of ``id_of_rank``)."""
        n = self.num_embeddings_per_feature[feature]
        i = (np.asarray(ids, dtype=np.int64) - self._shift[feature]) % n
        return ((i.astype(np.uint64) * np.uint64(self._inv[feature])) % np.uint64(n)).astype(np.int64)

    def _hash_vectors(self, keys: np.ndarray, salt: int) -> np.ndarray:
        """``[len(keys), r]`` float32 entries uniform on ``[-sqrt(3), sqrt(3)]`` (unit variance), four 16-bit lanes
        per 64-bit hash."""
        base = _mix(keys.astype(np.uint64) ^ np.uint64(salt))
        lanes = -(-self.latent_rank // 4)
        steps = (np.arange(1, lanes + 1, dtype=np.uint64) * np.uint64(_GOLDEN))[None, :]
        h = _mix(base[:, None] + steps)  # [N, lanes]
        parts = (h[:, :, None] >> np.arange(0, 64, 16, dtype=np.uint64)) & np.uint64(0xFFFF)
        u = (parts.reshape(len(keys), -1)[:, : self.latent_rank].astype(np.float32) + 0.5) * (1.0 / 65536.0)
        return (2.0 * _SQRT3) * u - _SQRT3

    def latent(self, feature: int, ids: np.ndarray) -> np.ndarray:
        """``[len(ids), r]`` planted latent vectors ``v_f(ids)`` (unit-variance entries)."""
        ids = np.asarray(ids, dtype=np.int64)
        own = self._hash_vectors(ids, self._salts[feature][0])
        if self.num_clusters == 0 or self.cluster_share == 0:
            return own
        cluster = self.rank_of_id(feature, ids) % self.num_clusters
        centroid = self._hash_vectors(cluster, self._salts[feature][1])
        return (math.sqrt(self.cluster_share) * centroid + math.sqrt(1.0 - self.cluster_share) * own).astype(np.float32)

    def bias(self, feature: int, ids: np.ndarray) -> np.ndarray:
        """``[len(ids)]`` planted per-id biases ``b_f(ids)`` (unit variance)."""
        h = _mix(np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ np.uint64(self._salts[feature][2]))
        return _SQRT3 * (2.0 * _uniform(h) - 1.0)

    def _logits(self, dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
        logit = self._intercept + (dense.astype(np.float64) - self._dense_center) @ self._dense_weight
        total = np.zeros((len(ids), self.latent_rank), dtype=np.float64)
        squares = np.zeros(len(ids), dtype=np.float64)
        for f in range(ids.shape[1]):
            v = self.latent(f, ids[:, f])
            total += v
            squares += np.einsum("ij,ij->i", v, v, dtype=np.float64)
            logit = logit + self._bias_scale * self.bias(f, ids[:, f])
        pairwise = 0.5 * (np.einsum("ij,ij->i", total, total, dtype=np.float64) - squares)
        return logit + self._interaction_scale * pairwise

    def planted_logits(self, dense_features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The planted logits of dense ``[B, 13]`` and ids ``[B, F]`` (a ``Batch``'s ids are
        ``sparse_features.values().view(F, B).T``)."""
        return torch.from_numpy(self._logits(dense_features.double().numpy(), ids.numpy()))

    # -- rows -------------------------------------------------------------------------------------------------------

    def _stream(self, rows: np.ndarray, split: str, stream: int) -> np.ndarray:
        """Uniforms of one named stream of draws for each row."""
        base = _mix(rows.astype(np.uint64) ^ np.uint64(self._split_keys[split]))
        return _uniform(_mix(base + np.uint64((stream * _GOLDEN) & _MASK64)))

    def _ids(self, rows: np.ndarray, split: str) -> np.ndarray:
        num_f = len(self.num_embeddings_per_feature)
        ids = np.empty((len(rows), num_f), dtype=np.int64)
        segment = None
        if self.num_clusters:
            segment = np.minimum(
                (self._stream(rows, split, 0) * self.num_clusters).astype(np.int64), self.num_clusters - 1
            )
        for f, n in enumerate(self.num_embeddings_per_feature):
            u = self._stream(rows, split, 1 + f)
            k = _zipf_ranks(u, n, self.zipf_exponents[f])
            if segment is not None:
                local = self._stream(rows, split, 1 + num_f + f) < self.cluster_affinity
                s = segment[local]
                c = self.num_clusters
                k[local] = _zipf_ranks(u[local], (n - s + c - 1) // c, self.zipf_exponents[f]) * c + s
            ids[:, f] = self.id_of_rank(f, k)
        return ids

    def _rows(self, rows: np.ndarray, split: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense ``[N, 13]`` float32, ids ``[N, F]`` int64 and planted logits ``[N]`` float64 of row indices."""
        ids = self._ids(rows, split)
        first = self._dense_stream
        half = (INT_FEATURE_COUNT + 1) // 2
        u1 = np.stack([self._stream(rows, split, first + j) for j in range(half)], axis=1)
        u2 = np.stack([self._stream(rows, split, first + half + j) for j in range(half)], axis=1)
        radius = np.sqrt(-2.0 * np.log1p(-u1))  # Box-Muller: two normals per pair of uniforms
        normal = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)], axis=1)
        counts = np.floor(np.exp(self._dense_mu + self._dense_sigma * normal[:, :INT_FEATURE_COUNT]))
        miss = np.stack([self._stream(rows, split, first + 2 * half + j) for j in range(INT_FEATURE_COUNT)], axis=1)
        counts[miss < self.missing_rate] = 0.0
        dense = np.log1p(counts).astype(np.float32)
        return dense, ids, self._logits(dense, ids)

    def sample(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``rows`` of this split: dense ``[N, 13]``, ids ``[N, F]``, labels ``[N]`` (float32) and the planted
        logits ``[N]`` (float64)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise ValueError(f"rows must be in [0, num_rows={self.num_rows}), got [{rows.min()}, {rows.max()}]")
        dense, ids, logits = self._rows(rows, self.split)
        labels = (self._stream(rows, self.split, self._label_stream) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return dense, ids, labels, logits

    def ceiling(self, num_rows: Optional[int] = None, block: int = 65536) -> Dict[str, float]:
        """The Bayes-optimal AUC and logloss, and the mean click probability, on the split's first ``num_rows`` rows
        (default: all; exactly the rows the split's batches cover over all ranks without ``drop_last``)."""
        n = self.num_rows if num_rows is None else min(num_rows, self.num_rows)
        logits = (
            np.concatenate([self._rows(np.arange(s, min(s + block, n)), self.split)[2] for s in range(0, n, block)])
            if n
            else np.zeros(0)
        )
        return {
            "bayes_auc": bayes_auc(logits),
            "bayes_logloss": bayes_logloss(logits),
            "ctr": float(np.mean(1.0 / (1.0 + np.exp(-logits)))),
            "num_rows": float(n),
        }

    def id_counts(self, num_rows: Optional[int] = None, block: int = 65536) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """Id frequencies in the split's first ``num_rows`` rows: per feature, ``(ids, counts)`` of the distinct ids
        seen (sorted by id); memory grows with the sample, not with the vocabulary."""
        n = self.num_rows if num_rows is None else min(num_rows, self.num_rows)
        chunks = [self._ids(np.arange(s, min(s + block, n)), self.split) for s in range(0, n, block)]
        ids = np.concatenate(chunks) if chunks else np.zeros((0, len(self.feature_names)), dtype=np.int64)
        out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        for f, name in enumerate(self.feature_names):
            uniq, counts = np.unique(ids[:, f], return_counts=True)
            out[name] = (uniq, counts)
        return out

    # -- batches ----------------------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Selects the row order of the next iteration (with ``shuffle``)."""
        self.epoch = epoch

    def _order(self, positions: np.ndarray) -> np.ndarray:
        """Row index at each position of this epoch's order."""
        n = self.num_rows
        if not self.shuffle or n <= 1:
            return positions
        rng = np.random.default_rng([self.shuffle_seed, self.seed, self.epoch, 0x0D3E])
        a = int(rng.integers(1, n))
        while math.gcd(a, n) != 1:
            a += 1
        c = int(rng.integers(0, n))
        return ((positions.astype(np.uint64) * np.uint64(a % n) + np.uint64(c)) % np.uint64(n)).astype(np.int64)

    def _local_slices(self) -> List[slice]:
        step = self.batch_size * self.world_size
        full = self.num_rows // step
        starts = [(i * step, (i + 1) * step) for i in range(full)]
        if not self.drop_last and self.num_rows % step:
            starts.append((full * step, self.num_rows))
        out = []
        for lo, hi in starts:
            local = rank_slice(hi - lo, self.batch_size, self.rank, self.world_size)
            if local.stop > local.start:
                out.append(slice(lo + local.start, lo + local.stop))
        return out

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return len(self._local_slices())

    def __iter__(self) -> Iterator[Batch]:
        for sl in self._local_slices():
            dense, ids, labels, _ = self.sample(self._order(np.arange(sl.start, sl.stop, dtype=np.int64)))
            yield Batch(
                dense_features=torch.from_numpy(dense),
                sparse_features=single_id_kjt(self.feature_names, list(ids.T)),
                labels=torch.from_numpy(labels),
            )


def _solve_intercept(logits: np.ndarray, ctr: float) -> float:
    """``b`` with ``mean(sigmoid(b + logits)) = ctr`` (bisection; the mean is increasing in ``b``)."""
    lo, hi = -60.0, 60.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(mid + logits)))) < ctr:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
