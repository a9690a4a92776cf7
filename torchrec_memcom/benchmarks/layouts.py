# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Benchmark layouts (logical tables, batch shape, DLRM MLPs) and the table configs each method builds from them.

Layouts (``LAYOUTS``):

- ``big``: 8 tables x 4M rows x 128, multi-hot pooling 20, batch 16384 per rank (the embedding layer at scale);
- ``criteo``: 26 one-hot features with Criteo-Kaggle cardinalities capped at 10M, dim 128, batch 16384 per rank
  (the 7 tables of >= 100k rows are compressed);
- ``terabyte``: 26 one-hot features with the Criteo-Terabyte cardinalities of MLPerf's DLRM (ids capped at 40M),
  dim 128: 187.8M rows, 96.1 GB of fp32 stock tables, more than a GPU budget of tens of GB, so the planner may also
  put stock tables in host memory behind FBGEMM's HBM cache (``fused_uvm_caching``). ``Layout.scaled(4)`` (384 GB,
  close to the uncapped Terabyte's 452 GB) exceeds the host memory of a 1- or 2-GPU machine as well;
- ``tiny``: a CPU smoke test.
"""

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface

from torchrec_memcom.memory import MemoryReport
from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.tables import table_config

__all__ = [
    "CRITEO_KAGGLE_CARDINALITIES",
    "CRITEO_TERABYTE_CARDINALITIES",
    "LAYOUTS",
    "METHODS",
    "Layout",
    "MethodOptions",
    "feature_name",
    "embedding_module",
    "method_label",
    "table_configs",
    "table_spec",
]

METHODS: Tuple[str, ...] = ("stock", "memcom", "lma", "hash", "qr")

# Criteo Kaggle (Display Advertising Challenge) categorical cardinalities, as listed by facebookresearch/dlrm.
CRITEO_KAGGLE_CARDINALITIES: Tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip

# Criteo Terabyte (24 days) categorical cardinalities with ids folded into 40M rows (MLPerf DLRM, facebookresearch/dlrm
# ``--max-ind-range=40000000``).
CRITEO_TERABYTE_CARDINALITIES: Tuple[int, ...] = (
    39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951, 2953546, 403346, 10,
    2208, 11938, 155, 4, 976, 14, 39979771, 25641295, 39664984, 585935, 12972, 108, 36,
)  # fmt: skip

_KERNELS = {k.value for k in EmbeddingComputeKernel}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Logical tables and batch shape of a benchmark (one feature ``f<i>`` per table ``t<i>``).

    Args:
        num_embeddings (Tuple[int, ...]): rows of each table.
        embedding_dim (int): dim of every table (DLRM needs one dim; a multiple of 4 for FBGEMM).
        batch_size (int): rows per rank per step.
        pooling (int): ids per bag (1 = one-hot).
        compress_min_rows (int): smaller tables stay stock in every method.
        num_buckets (int): MEmCom / hash bucket count (the world size must divide it for row-wise).
        dense_arch (Tuple[int, ...]): DLRM dense MLP (last = ``embedding_dim``).
        over_arch (Tuple[int, ...]): DLRM over MLP (last = 1).
        lma_fit_rows (int): rows of the LMA signature sample (0: no fit).
        kernels (Tuple[str, ...]): compute kernels the planner may choose for every table (TorchRec names).

    Raises:
        ValueError: naming the field and the offending value.
    """

    num_embeddings: Tuple[int, ...]
    embedding_dim: int
    batch_size: int
    pooling: int
    compress_min_rows: int
    num_buckets: int
    dense_arch: Tuple[int, ...]
    over_arch: Tuple[int, ...]
    lma_fit_rows: int
    kernels: Tuple[str, ...] = ("fused",)

    def __post_init__(self) -> None:
        def bad(field: str, value: Any, why: str) -> ValueError:
            return ValueError(f"Layout.{field}={value!r}: {why}")

        if not self.num_embeddings or any(int(n) != n or n < 1 for n in self.num_embeddings):
            raise bad("num_embeddings", self.num_embeddings, "needs at least one table, each of >= 1 rows")
        if self.embedding_dim < 4 or self.embedding_dim % 4:
            raise bad("embedding_dim", self.embedding_dim, "must be a positive multiple of 4 (FBGEMM)")
        for name in ("batch_size", "pooling", "num_buckets"):
            if getattr(self, name) < 1:
                raise bad(name, getattr(self, name), "must be >= 1")
        if self.compress_min_rows < 0 or self.lma_fit_rows < 0:
            raise bad("compress_min_rows / lma_fit_rows", (self.compress_min_rows, self.lma_fit_rows), "must be >= 0")
        if not self.dense_arch or self.dense_arch[-1] != self.embedding_dim:
            raise bad("dense_arch", self.dense_arch, f"must end with embedding_dim={self.embedding_dim}")
        if not self.over_arch or self.over_arch[-1] != 1:
            raise bad("over_arch", self.over_arch, "must end with 1")
        unknown = sorted(set(self.kernels) - _KERNELS)
        if not self.kernels or unknown:
            raise bad("kernels", self.kernels, f"unknown kernel(s) {unknown}; TorchRec has {sorted(_KERNELS)}")

    @property
    def num_tables(self) -> int:
        return len(self.num_embeddings)

    def stock_bytes(self) -> int:
        """Bytes of the layout's tables as stock fp32 tables (weights only)."""
        return sum(self.num_embeddings) * self.embedding_dim * 4

    def scaled(self, factor: float) -> "Layout":
        """The same layout with every table ``factor`` times as many rows (at least 1)."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"scale must be a finite number > 0, got {factor!r}")
        return dataclasses.replace(self, num_embeddings=tuple(max(1, round(n * factor)) for n in self.num_embeddings))


_DLRM_DENSE = (512, 256, 128)
_DLRM_OVER = (1024, 1024, 512, 256, 1)

_CRITEO_LIKE = dict(
    embedding_dim=128,
    batch_size=16384,
    pooling=1,
    compress_min_rows=100_000,
    num_buckets=1024,
    dense_arch=_DLRM_DENSE,
    over_arch=_DLRM_OVER,
    lma_fit_rows=16384,
)

LAYOUTS: Dict[str, Layout] = {
    "big": Layout((4_000_000,) * 8, 128, 16384, 20, 0, 1024, _DLRM_DENSE, _DLRM_OVER, 1024),
    "criteo": Layout(tuple(min(n, 10_000_000) for n in CRITEO_KAGGLE_CARDINALITIES), **_CRITEO_LIKE),  # type: ignore[arg-type]
    "terabyte": Layout(CRITEO_TERABYTE_CARDINALITIES, kernels=("fused", "fused_uvm_caching"), **_CRITEO_LIKE),  # type: ignore[arg-type]
    "tiny": Layout((20_000, 10_000, 5_000, 100), 64, 64, 4, 1_000, 64, (16, 64), (32, 1), 256),
}


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """How the compressed methods are configured (the same for every compressed table).

    Args:
        ratio (float): compression ratio of every compressed table.
        lma_chunk_size (int): LMA chunk width ``Z``.
        lma_signature_bytes (int): LMA signature bytes per id.
        lma_shared_memory (bool): one LMA memory shared by all compressed tables (as in the paper).
        lma_raw_ids (Optional[bool]): LMA ids cross table- and column-wise input dists once
            (``get_sharders(lma_raw_ids=)``; ``None``: when there is more than one rank).
        memcom_rows_in_transform (bool): ``get_sharders(memcom_rows_in_transform=)`` (one rank: MEmCom's rows from
            the id transform, else after the dist).
    """

    ratio: float = 16.0
    lma_chunk_size: int = 16
    lma_signature_bytes: int = 8
    lma_shared_memory: bool = True
    lma_raw_ids: Optional[bool] = None
    memcom_rows_in_transform: bool = True


def feature_name(i: int) -> str:
    return f"f{i}"


def _buckets(n: int, wanted: int) -> int:
    """``wanted`` buckets, or the largest power of two <= ``n`` for a table with fewer ids."""
    return wanted if n >= wanted else 1 << (n.bit_length() - 1)


def table_spec(method: str, num_rows: int, layout: Layout, opts: MethodOptions) -> Optional[Dict[str, Any]]:
    """The ``tables.table_config`` spec of one logical table of ``num_rows`` rows (``None``: stock).

    Raises:
        ValueError: unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}' (choose from {list(METHODS)})")
    if method == "stock" or num_rows < layout.compress_min_rows:
        return None
    spec: Dict[str, Any] = {"type": method, "compression": opts.ratio}
    if method in ("memcom", "hash"):
        spec["num_buckets"] = _buckets(num_rows, layout.num_buckets)
    elif method == "lma":
        spec.update(
            chunk_size=opts.lma_chunk_size,
            signature_bytes=opts.lma_signature_bytes,
            memory_group="all" if opts.lma_shared_memory else None,
        )
    return spec


def table_configs(method: str, layout: Layout, opts: MethodOptions) -> List[EmbeddingBagConfig]:
    """The layout's logical tables as ``method`` builds them (tables below ``compress_min_rows`` stay stock).

    Raises:
        ValueError: the method cannot reach ``opts.ratio`` on some table (the config's own validation names it).
    """
    return [
        table_config(f"t{i}", [feature_name(i)], n, layout.embedding_dim, table_spec(method, n, layout, opts))
        for i, n in enumerate(layout.num_embeddings)
    ]


def method_label(method: str, opts: MethodOptions) -> str:
    """``"stock EBC"``, ``"MEmCom 16x"``, ``"LMA Z=16 16x"``, ..."""
    if method == "stock":
        return "stock EBC"
    name = {"memcom": "MEmCom", "lma": f"LMA Z={opts.lma_chunk_size}", "hash": "Hash", "qr": "QR"}[method]
    return f"{name} {opts.ratio:g}x"


def embedding_module(
    tables: Sequence[EmbeddingBagConfig], device: torch.device
) -> Tuple[EmbeddingBagCollectionInterface, MemoryReport]:
    """The embedding layer of ``tables`` (a stock ``EmbeddingBagCollection`` when every table is stock, else a
    ``CompressedEmbeddingBagCollection``) on ``device`` (``meta`` to plan and shard), and its memory report."""
    if all(type(t) is EmbeddingBagConfig for t in tables):
        ebc = EmbeddingBagCollection(tables=list(tables), device=device)
        return ebc, MemoryReport.stock(tables, {t.name: ebc.embedding_bags[t.name].weight for t in tables})
    compressed = CompressedEmbeddingBagCollection(tables, device=device)
    return compressed, compressed.memory_report()
