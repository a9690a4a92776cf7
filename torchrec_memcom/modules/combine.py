# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``IdTransform.combine``'s column arithmetic: the physical tables' pooled columns -> the logical features' (QR's
products, LMA's chunk concatenation, MEAN divisions, output projections), planned once per physical key order."""

import itertools
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedTensor

from torchrec_memcom.modules.method import Combine
from torchrec_memcom.ops.columns import ColumnProducts, column_products

__all__ = ["CombinePlan"]


class CombinePlan:
    """Column arithmetic of ``IdTransform.combine`` for one physical key order (built once per order).

    Cheapest first: the physical columns already are the logical ones (relabel the KeyedTensor); only whole features
    move (one column gather); products, concatenations and MEAN divisions in which each physical column is used once
    (QR, LMA, MEAN tables): one ``ops.columns.column_products`` (one kernel forward, one backward); else (output
    projections, a column used twice) the values are split once per physical feature (one ``SplitBackward`` in
    autograd, which stays cheap where per-slice views would each send back a zero-filled gradient) and each logical
    feature is formed from its parts, then concatenated.

    With ``keep_order=False`` (the sharded module: a sharded TorchRec ``EmbeddingBagCollection`` returns its keys in
    its shardings' order, not the tables', so its consumers read features by name) a plan that only moves whole
    features, each already one contiguous run of columns in its parts' order, copies nothing: it relabels the runs
    (``relabel``), and the output's keys come in the physical columns' order.
    """

    def __init__(
        self,
        combines: List[Combine],
        pooled: KeyedTensor,
        mean_features: List[int],
        feature_tables: List[Tuple[str, EmbeddingBagConfig]],
        keep_order: bool = True,
    ) -> None:
        features = [f for f, _ in feature_tables]
        self.split_sizes = list(pooled.length_per_key())
        offsets = [0, *itertools.accumulate(self.split_sizes)][:-1]
        index = {k: i for i, k in enumerate(pooled.keys())}
        mean_column = {features[f]: j for j, f in enumerate(mean_features)}
        self.keys = [c.feature for c in combines]
        self.dims = [table.embedding_dim for _, table in feature_tables]
        self.steps: List[Tuple[str, List[int], Optional[int], Optional[str]]] = []
        gather: List[int] = []
        starts: List[int] = []  # each feature's first column, -1 where its columns are not one ascending run
        for c in combines:
            parts = [index[p] for p in c.parts]
            self.steps.append((c.kind, parts, mean_column.get(c.feature) if c.mean else None, c.project))
            if c.kind != "product":
                columns = [offsets[p] + i for p in parts for i in range(self.split_sizes[p])]
                gather += columns
                run = bool(columns) and columns == list(range(columns[0], columns[0] + len(columns)))
                starts.append(columns[0] if run else -1)
        self.simple = all(kind != "product" and m is None and pr is None for kind, _, m, pr in self.steps)
        self.identity = self.simple and gather == list(range(sum(self.split_sizes)))
        # A permutation of the columns (each used once) moves whole blocks: split once at the blocks' edges and
        # concatenate them in output order (one copy kernel each way; a column gather's backward is an atomic
        # index_add_ along dim 1, and its forward an elementwise gather, both several times slower on CUDA).
        self.permutation = self.simple and sorted(gather) == list(range(sum(self.split_sizes)))
        self.block_sizes: List[int] = []
        self.block_order: List[int] = []
        if self.permutation:
            runs: List[List[int]] = []  # (first physical column, width) in output order, adjacent columns merged
            for col in gather:
                if runs and runs[-1][0] + runs[-1][1] == col:
                    runs[-1][1] += 1
                else:
                    runs.append([col, 1])
            by_start = sorted(range(len(runs)), key=lambda i: runs[i][0])
            self.block_sizes = [runs[i][1] for i in by_start]
            rank = {run: k for k, run in enumerate(by_start)}
            self.block_order = [rank[i] for i in range(len(runs))]
        # relabel: every feature one run (a permutation has no product: one start per feature), together covering
        # every column once; keys in the runs' order
        self.relabel = not keep_order and self.permutation and not self.identity and -1 not in starts
        by_column = sorted(range(len(starts)), key=lambda k: starts[k]) if self.relabel else []
        self.relabel_keys = [self.keys[k] for k in by_column]
        self.relabel_dims = [self.dims[k] for k in by_column]
        self._gather = torch.tensor(gather, dtype=torch.int64)
        self._gather_on: Dict[torch.device, torch.Tensor] = {}
        self.products = None if self.simple else _column_products(self.steps, self.split_sizes, offsets)

    def __call__(
        self, pooled: KeyedTensor, divisors: torch.Tensor, projections: Optional[Mapping[str, torch.Tensor]]
    ) -> KeyedTensor:
        values = pooled.values()
        if self.identity:
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=values)
        if self.relabel:
            return KeyedTensor(keys=self.relabel_keys, length_per_key=self.relabel_dims, values=values)
        if self.permutation:
            blocks = values.split(self.block_sizes, dim=1)
            columns = torch.cat([blocks[b] for b in self.block_order], dim=1)
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=columns)
        if self.simple:
            idx = self._gather_on.get(values.device)
            if idx is None:
                idx = self._gather_on[values.device] = self._gather.to(values.device)
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=values.index_select(1, idx))
        if self.products is not None:
            values = column_products(values, divisors, self.products)
            return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=values)
        pieces = values.split(self.split_sizes, dim=1)
        out: List[torch.Tensor] = []
        for kind, parts, mean, project in self.steps:
            if kind == "product":
                emb = pieces[parts[0]]
                for p in parts[1:]:
                    emb = emb * pieces[p]
                if mean is not None:  # each side is a mean: divide by the bag size once per side
                    emb = emb / divisors[:, mean : mean + 1].pow(len(parts))
            else:
                emb = pieces[parts[0]] if len(parts) == 1 else torch.cat([pieces[p] for p in parts], dim=1)
                if mean is not None:
                    emb = emb / divisors[:, mean : mean + 1]
            if project is not None:
                assert projections is not None, f"table '{project}' needs its output projection"
                emb = emb @ projections[project]
            out.append(emb)
        return KeyedTensor(keys=self.keys, length_per_key=self.dims, values=torch.cat(out, dim=1))


def _column_products(
    steps: List[Tuple[str, List[int], Optional[int], Optional[str]]], split_sizes: List[int], offsets: List[int]
) -> Optional[ColumnProducts]:
    """The combine as one ``ColumnProducts`` (one kernel each way), or ``None`` where it cannot be: an output
    projection, a product of more than two parts or of unequal widths, a physical column feeding two features."""
    columns: List[Tuple[int, int, int, int]] = []
    for kind, parts, mean, project in steps:
        m = -1 if mean is None else mean
        if project is not None:
            return None
        if kind == "product":
            width = split_sizes[parts[0]]
            if len(parts) > 2 or any(split_sizes[p] != width for p in parts):
                return None
            power = 0 if mean is None else len(parts)
            second = offsets[parts[1]] if len(parts) == 2 else None
            columns += [(offsets[parts[0]] + i, -1 if second is None else second + i, m, power) for i in range(width)]
        else:
            power = 0 if mean is None else 1
            columns += [(offsets[p] + i, -1, m, power) for p in parts for i in range(split_sizes[p])]
    try:
        return ColumnProducts(columns, sum(split_sizes))
    except ValueError:  # a column feeding two outputs: the split path sums its gradients
        return None
