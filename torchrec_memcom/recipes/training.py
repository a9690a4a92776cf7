# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Building blocks of the distributed recipes: process group, tables, sharding, optimizers, LMA signatures and
evaluation. Each is a function of explicit arguments, so recipes stay short and any model (DLRM, two-tower) can reuse
them. Checkpoints are in ``torchrec_memcom.recipes.checkpoint``, the shared training loop in
``torchrec_memcom.recipes.runner``.
"""

import ctypes
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.distributed.comm import get_local_size
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.convert import fit_signatures
from torchrec_memcom.distributed import get_sharders
from torchrec_memcom.distributed.planner import CompressedEmbeddingShardingPlanner, place_on_device
from torchrec_memcom.recipes.config import DenseOptimizerConfig, SparseOptimizerConfig
from torchrec_memcom.tables import table_config

__all__ = [
    "DistContext",
    "build_tables",
    "combined_optimizer",
    "enable_tf32",
    "evaluate_binary",
    "fit_lma_signatures",
    "fused_params",
    "init_distributed",
    "pad_batch",
    "pin_malloc_mmap_threshold",
    "shard_model",
    "sharding_constraints",
    "write_json",
]

logger: logging.Logger = logging.getLogger(__name__)

_SPARSE_OPTIMIZERS: Dict[str, EmbOptimType] = {
    "exact_adagrad": EmbOptimType.EXACT_ADAGRAD,
    "exact_rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "exact_sgd": EmbOptimType.EXACT_SGD,
}
_DENSE_OPTIMIZERS: Dict[str, Callable[..., torch.optim.Optimizer]] = {
    # capturable: keep host-read state on the device for CUDA-graph steps (Adagrad's and SGD's need nothing: a graph
    # step counts Adagrad's host-side step counter on each replay, and neither reads it)
    "adagrad": lambda params, c, capturable: torch.optim.Adagrad(
        params, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay
    ),
    "sgd": lambda params, c, capturable: torch.optim.SGD(params, lr=c.lr, weight_decay=c.weight_decay),
    "adam": lambda params, c, capturable: torch.optim.Adam(
        params, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay, capturable=capturable
    ),
}


# --- process group -------------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """This process's place in the job: ranks, device and backend (``nccl`` on CUDA, else ``gloo``).

    ``ranks_per_device``: the ranks that share this rank's device (more than 1 only with ``init_distributed``'s
    ``device="cuda-shared"``); ``scripts/bench_sharded.py`` gives each its share of the device's memory and of the
    host's."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    ranks_per_device: int = 1

    def place(self, plan: ShardingPlan) -> ShardingPlan:
        """``plan`` as this job shards it: where ranks share a device, every shard on it (``place_on_device``; the
        planner puts rank r's on ``cuda:(r mod LOCAL_WORLD_SIZE)``)."""
        return place_on_device(plan, self.device) if self.ranks_per_device > 1 else plan

    @property
    def ranks_per_host(self) -> int:
        """The ranks on this rank's host as TorchRec sees them (``get_local_size``: ``LOCAL_WORLD_SIZE``), for its
        planner's topology and intra-node groups; ranks sharing a GPU count as the host's GPUs."""
        return get_local_size(self.world_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, values: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
        """All-reduces a copy of ``values`` over the job (on the backend's device) and returns it on CPU."""
        t = values.detach().to(self.device, copy=True)
        dist.all_reduce(t, op=op)
        return t.cpu()

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


DEVICES = ("auto", "cuda", "cpu", "cuda-shared")  # init_distributed's choices


def init_distributed(timeout_s: int = 600, device: str = "auto") -> DistContext:
    """Joins the job that ``torchrun`` (or TorchX) started, or makes a one-process group when run plainly.

    On CUDA each process takes GPU ``LOCAL_RANK`` (``torch.cuda.set_device``) and NCCL; elsewhere gloo on CPU. Works
    in workers that torchrun restarted after a failure (``TORCHELASTIC_RESTART_COUNT > 0``).
    ``device``: ``"auto"`` (CUDA when available), ``"cuda"``, ``"cpu"`` (gloo on CPU even where CUDA is) or
    ``"cuda-shared"``: every rank of the host on GPU 0, gloo between them. Its all-to-alls between ranks are real but
    go through the host, so it checks or counts a multi-rank step on a one-GPU machine; its step times are not a
    multi-GPU machine's. The host's ranks still plan as one host's (``LOCAL_WORLD_SIZE``), as on a GPU each: put
    the plan's shards on the shared GPU with ``distributed.planner.place_on_device`` before sharding.

    Raises:
        ValueError: an unknown ``device``, or ``"cuda"`` / ``"cuda-shared"`` without CUDA.
    """
    if device not in DEVICES:
        raise ValueError(f"init_distributed: device must be one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    shared = device == "cuda-shared"
    use_cuda = device in ("cuda", "cuda-shared") or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"init_distributed: device={device!r}, but CUDA is not available")
    if "RANK" not in os.environ:
        from torchrec.test_utils import get_free_port

        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="localhost")
        os.environ.setdefault("MASTER_PORT", str(get_free_port()))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ranks_per_device = 1
    if shared:
        ranks_per_device = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        local_rank = 0
        torch.cuda.set_device(0)
        where, backend = torch.device("cuda", 0), "gloo"
    elif use_cuda:
        torch.cuda.set_device(local_rank)
        where, backend = torch.device("cuda", local_rank), "nccl"
    else:
        where, backend = torch.device("cpu"), "gloo"
        pin_malloc_mmap_threshold()
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout))
        # torchrun hands restarted workers (--max-restarts) the same agent store, where the previous attempt's
        # process-group keys still are: gloo would connect to the dead workers' addresses and hang. One key prefix
        # per attempt keeps every attempt's process group apart.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            backend,
            store=dist.PrefixStore(f"torchrec_memcom/attempt_{attempt}", store),
            rank=rank,
            world_size=world_size,
            timeout=timeout,
            device_id=where if backend == "nccl" else None,
        )
    return DistContext(rank, world_size, local_rank, where, backend, ranks_per_device)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def pin_malloc_mmap_threshold(threshold: int = 1 << 20) -> bool:
    """Fixes glibc's mmap threshold at ``threshold`` bytes, so every CPU tensor at least that large is mmapped and
    handed back to the OS when freed. Returns ``False`` (doing nothing) without glibc.

    By default glibc raises the threshold after each large free, up to 32 MiB: the large tensors of a training step
    (a two-tower's ``B x B`` logits are 16 MiB at ``B = 2048``) then come from the heap, the small tensors a training
    loop keeps (each step's detached loss) land in their freed space, and the heap never closes again: the process
    grew by about 16 MiB per step, 22 GB after 1.3 epochs of the ML-1M two-tower on CPU. A fixed threshold turns
    the dynamic adjustment off (``mallopt(3)``).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # no glibc (macOS, musl without mallopt)
        return False


# --- tables, sharding, optimizers ----------------------------------------------------------------------------------


def build_tables(
    features: Sequence[str],
    table_sizes: Mapping[str, int],
    embedding_dim: int,
    specs: Mapping[str, Mapping[str, Any]],
    poolings: Optional[Mapping[str, PoolingType]] = None,
) -> List[EmbeddingBagConfig]:
    """One table ``t_<feature>`` per feature, of the type its spec names (``specs[feature]``, else
    ``specs["_default"]``, else stock); ``tables.table_config`` maps specs to configs. ``poolings`` gives a
    feature's pooling when its spec names none (default SUM).

    Raises:
        ValueError: naming the table when a spec does not fit the feature's real size.
    """
    default = specs.get("_default")
    poolings = poolings or {}
    return [
        table_config(
            f"t_{f}", [f], table_sizes[f], embedding_dim, specs.get(f, default), poolings.get(f, PoolingType.SUM)
        )
        for f in features  # one place decides the table type: tables.table_config
    ]


def sharding_constraints(
    features: Sequence[str], sharding: Mapping[str, Sequence[str]]
) -> Optional[Dict[str, ParameterConstraints]]:
    """Planner constraints on the tables ``t_<feature>`` from ``{feature or "_default": [sharding types]}``."""
    if not sharding:
        return None
    out = {}
    for f in features:
        types = sharding.get(f, sharding.get("_default"))
        if types:
            out[f"t_{f}"] = ParameterConstraints(sharding_types=list(types))
    return out


def fused_params(config: SparseOptimizerConfig) -> Dict[str, Any]:
    """TBE kwargs of the fused sparse optimizer (for the sharders and the planner)."""
    params: Dict[str, Any] = {"optimizer": _SPARSE_OPTIMIZERS[config.name], "learning_rate": config.lr}
    if config.name != "exact_sgd":
        params["eps"] = config.eps
    return params


def shard_model(
    model: nn.Module,
    ctx: DistContext,
    fused: Dict[str, Any],
    batch_size: int,
    constraints: Optional[Dict[str, ParameterConstraints]] = None,
) -> DistributedModelParallel:
    """Plans ``model`` (built on ``meta``) with ``CompressedEmbeddingShardingPlanner`` and wraps it in DMP.

    The planner and DMP get the same sharder list (``get_sharders(fused)``), as TorchRec requires. Ranks that share
    a GPU (``DistContext.ranks_per_device > 1``) plan as one host's GPUs and keep every shard on theirs.
    """
    sharders = get_sharders(fused_params=fused)
    planner = CompressedEmbeddingShardingPlanner(
        topology=Topology(
            world_size=ctx.world_size,
            compute_device=ctx.device.type,
            local_world_size=ctx.ranks_per_host,
        ),
        batch_size=batch_size,
        constraints=constraints,
        fused_params=fused,
    )
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=ctx.device,
        plan=ctx.place(plan),
        sharders=sharders,
    )


def enable_tf32() -> None:
    """Float32 matmuls and convolutions on CUDA in TensorFloat-32 (10-bit mantissa products, float32 sums), as
    TorchRec's DLRM example's ``--allow_tf32``: the dense layers run on the tensor cores, several times faster on
    Ampere and later GPUs. Embedding lookups are not matmuls and keep float32."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def combined_optimizer(
    model: DistributedModelParallel, config: DenseOptimizerConfig, capturable: bool = False
) -> CombinedOptimizer:
    """The model's fused (in-backward) sparse optimizers plus ``torch.optim`` over every other parameter.

    ``capturable``: the dense optimizer's step can be captured in a CUDA graph (``Adam(capturable=True)``: its step
    counter, which its bias correction reads, lives on the GPU; the others need no change).
    """
    dense = dict(in_backward_optimizer_filter(model.named_parameters()))
    optimizers: List[KeyedOptimizer] = [model.fused_optimizer]
    if dense:
        make = _DENSE_OPTIMIZERS[config.name]
        optimizers.append(KeyedOptimizerWrapper(dense, lambda params: make(params, config, capturable)))
    return CombinedOptimizer(optimizers)


def fit_lma_signatures(
    model: nn.Module, batches: Iterable[Batch], max_rows: int, progress: bool = False
) -> Dict[str, float]:
    """Fits the signatures of every LMA table in ``model`` (sharded or not) on the first ``max_rows`` rows.

    Every rank must pass the same ``batches`` so the replicated signatures agree. Returns the fraction of ids of
    each table that got a signature (empty if the model has no LMA table).
    """
    return fit_signatures(model, batches, max_rows=max_rows, progress=progress)  # labels: for label_context


# --- evaluation ----------------------------------------------------------------------------------------------------


def pad_batch(batch: Batch, size: int) -> Batch:
    """``batch`` grown to ``size`` rows with empty bags, zero dense features and zero labels."""
    kjt = batch.sparse_features
    rows = batch.dense_features.shape[0]
    pad = size - rows
    if pad < 0:
        raise ValueError(f"batch has {rows} rows, more than {size}")
    if pad == 0:
        return batch
    lengths = kjt.lengths().view(len(kjt.keys()), rows)
    lengths = torch.cat([lengths, lengths.new_zeros(len(kjt.keys()), pad)], dim=1).reshape(-1)
    padded = KeyedJaggedTensor(
        keys=kjt.keys(),
        values=kjt.values(),
        lengths=lengths,
        weights=kjt.weights_or_none(),
        stride=size,
        length_per_key=kjt.length_per_key_or_none(),  # empty bags added: the same counts
    )
    dense = batch.dense_features
    return Batch(
        dense_features=torch.cat([dense, dense.new_zeros(pad, dense.shape[1])]),
        sparse_features=padded,
        labels=torch.cat([batch.labels, batch.labels.new_zeros(pad)]),
    )


def empty_batch(features: Sequence[str], dense_dim: int, size: int) -> Batch:
    """A batch of ``size`` rows with empty bags (what a rank whose share of the data is used up evaluates)."""
    kjt = KeyedJaggedTensor(
        keys=list(features),
        values=torch.zeros(0, dtype=torch.int64),
        lengths=torch.zeros(len(features) * size, dtype=torch.int32),
        stride=size,
        length_per_key=[0] * len(features),
    )
    return Batch(dense_features=torch.zeros(size, dense_dim), sparse_features=kjt, labels=torch.zeros(size))


@torch.no_grad()
def evaluate_binary(
    predict: Callable[[Batch], torch.Tensor],
    batches: Iterable[Batch],
    ctx: DistContext,
    batch_size: int,
    features: Sequence[str],
    dense_dim: int,
    max_batches: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, float]:
    """AUC and logloss of a binary classifier over every rank's share of ``batches``.

    Ranks step together: each pads its batches to ``batch_size`` rows (padding is masked out) and, once its share
    is used up, evaluates empty batches until every rank is done, so sharded models see equal batches on every
    rank. Predictions and labels are gathered over ranks for an exact AUC (torchmetrics ``binary_auroc`` on the
    whole split); the logloss is the mean binary cross-entropy over all real rows.

    Args:
        predict (Callable[[Batch], torch.Tensor]): batch on device -> ``[B]`` logits.
        batches (Iterable[Batch]): this rank's batches (at most ``batch_size`` rows each).
        ctx (DistContext): ranks and device.
        batch_size (int): rows per rank per step.
        features (Sequence[str]): sparse feature names (for empty batches).
        dense_dim (int): dense width (for empty batches).
        max_batches (Optional[int]): stop after this many steps.
        progress (bool): tqdm bar.

    Returns:
        Dict[str, float]: ``auc``, ``logloss``, ``num_samples`` (over all ranks) and ``positive_rate``.
    """
    from torchmetrics.functional.classification import binary_auroc
    from tqdm import tqdm

    preds: List[torch.Tensor] = []
    targets: List[torch.Tensor] = []
    totals = torch.zeros(3, dtype=torch.float64)  # bce sum, rows, positives
    it: Iterator[Batch] = iter(batches)
    bar = tqdm(desc="eval", unit="batch", disable=not progress, mininterval=5.0)
    steps = 0
    while max_batches is None or steps < max_batches:
        batch = next(it, None)
        if int(ctx.all_reduce(torch.tensor([0 if batch is None else 1]))[0]) == 0:
            break
        rows = 0 if batch is None else int(batch.labels.shape[0])
        padded = empty_batch(features, dense_dim, batch_size) if batch is None else pad_batch(batch, batch_size)
        logits = predict(padded.to(ctx.device)).float()[:rows].cpu()
        if rows:
            labels = batch.labels.float()
            preds.append(torch.sigmoid(logits))
            targets.append(labels)
            bce = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
            totals += torch.tensor([float(bce), rows, float(labels.sum())], dtype=torch.float64)
        steps += 1
        bar.update()
    bar.close()
    totals = ctx.all_reduce(totals)
    all_preds = _all_gather_1d(torch.cat(preds) if preds else torch.zeros(0), ctx)
    all_targets = _all_gather_1d(torch.cat(targets) if targets else torch.zeros(0), ctx)
    n = max(float(totals[1]), 1.0)
    return {
        "auc": float(binary_auroc(all_preds, all_targets.long())) if all_preds.numel() else float("nan"),
        "logloss": float(totals[0]) / n,
        "num_samples": int(totals[1]),
        "positive_rate": float(totals[2]) / n,
    }


def _all_gather_1d(local: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenation (in rank order) of every rank's 1-D float tensor, on CPU; sizes may differ."""
    if ctx.world_size == 1:
        return local
    sizes = [torch.zeros(1, dtype=torch.int64, device=ctx.device) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, torch.tensor([local.numel()], device=ctx.device))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=local.dtype, device=ctx.device)
    padded[: local.numel()] = local.to(ctx.device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)].cpu() for p, s in zip(parts, sizes)])


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Writes ``payload`` as indented JSON (non-finite floats as ``null``), creating the folder; the file is replaced
    atomically, so a reader never sees half of it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_finite(payload), f, indent=2, default=str, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
