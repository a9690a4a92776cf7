# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Model-level verbs, in the style of torchao's ``quantize_``: compress the tables of an existing TorchRec model in
place (from scratch, or warm-started from its trained tables), and fit the data-dependent state of its tables.

Example::

    from torchrec_memcom import CompressionConfig, compress_

    model = DLRM(embedding_bag_collection=EmbeddingBagCollection(tables, device="meta"), ...)
    compress_(model, CompressionConfig({"t_item": {"type": "memcom", "compression": 16},
                                        "re:t_user.*": {"type": "lma", "compression": 16},
                                        "_default": {"type": "hash", "compression": 8}}, min_rows=10_000))
    # then plan and shard as usual, with torchrec_memcom.distributed.get_sharders()
"""

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom.modules.compressed import CompressedEmbeddingBagCollection
from torchrec_memcom.tables import table_config

__all__ = ["CompressionConfig", "compress_", "fit_signatures", "warm_start_"]

Spec = Optional[Mapping[str, Any]]
_VERSION = 1


@dataclass
class CompressionConfig:
    """Which method each table of a model gets: table specs picked by exact table name, ``"re:<pattern>"`` (full
    match, first one wins, in order) or ``"_default"``; a table no rule picks, or with fewer than ``min_rows`` rows,
    stays stock. A spec is what a recipe's ``tables:`` section takes (``tables.table_config``), e.g.
    ``{"type": "memcom", "compression": 16, "entity_weight_lr_scale": 10}``, ``{"type": "stock"}`` or ``None``.

    Args:
        rules (Mapping[str, Spec]): table name / ``re:`` pattern / ``_default`` -> spec.
        min_rows (int): tables with fewer logical rows stay stock whatever the rules say.
        version (int): format version (``to_dict`` / ``from_dict``).

    Raises:
        ValueError: a bad pattern or spec (checked when the config is applied to a table).
    """

    rules: Mapping[str, Spec] = field(default_factory=dict)
    min_rows: int = 0
    version: int = _VERSION

    def __post_init__(self) -> None:
        if self.version != _VERSION:
            raise ValueError(f"CompressionConfig version {self.version} is not supported (this is {_VERSION})")
        if not isinstance(self.min_rows, int) or self.min_rows < 0:
            raise ValueError(f"CompressionConfig: min_rows must be an integer >= 0, got {self.min_rows!r}")
        self._patterns: List[Tuple[re.Pattern, Spec]] = []
        for key, spec in self.rules.items():
            if spec is not None and not isinstance(spec, Mapping):
                raise ValueError(f"CompressionConfig: rule '{key}' must be a spec mapping or None, got {spec!r}")
            if key.startswith("re:"):
                try:
                    self._patterns.append((re.compile(key[3:]), spec))
                except re.error as e:
                    raise ValueError(f"CompressionConfig: bad pattern '{key}': {e}") from None

    def spec_for(self, table: EmbeddingBagConfig) -> Spec:
        """The spec of ``table`` (``None``: keep it stock)."""
        if table.num_embeddings < self.min_rows:
            return None
        if table.name in self.rules:
            return self.rules[table.name]
        for pattern, spec in self._patterns:
            if pattern.fullmatch(table.name):
                return spec
        return self.rules.get("_default")

    def to_dict(self) -> Dict[str, Any]:
        return {"rules": {k: dict(v) if v is not None else None for k, v in self.rules.items()},
                "min_rows": self.min_rows, "version": self.version}  # fmt: skip

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "CompressionConfig":
        return CompressionConfig(**dict(data))


def _compressed_tables(ebc: EmbeddingBagCollection, config: CompressionConfig) -> List[EmbeddingBagConfig]:
    out = []
    for t in ebc.embedding_bag_configs():
        spec = config.spec_for(t)
        if spec is None or spec.get("type", "stock") == "stock" and len(spec) <= 1:
            out.append(t)  # the stock table itself, every field kept
            continue
        compressed = table_config(t.name, list(t.feature_names), t.num_embeddings, t.embedding_dim, spec, t.pooling)
        if t.data_type != compressed.data_type or t.init_fn is not None:
            compressed = dataclasses.replace(compressed, data_type=t.data_type, init_fn=t.init_fn)
        out.append(compressed)
    return out


def _targets(
    model: nn.Module, filter_fn: Optional[Callable[[nn.Module, str], bool]]
) -> Iterator[Tuple[nn.Module, str, str, EmbeddingBagCollection]]:
    for fqn, module in list(model.named_modules()):
        if type(module) is EmbeddingBagCollection and (filter_fn is None or filter_fn(module, fqn)):
            parent_fqn, _, name = fqn.rpartition(".")
            yield model.get_submodule(parent_fqn) if parent_fqn else model, name, fqn, module


def compress_(
    model: nn.Module,
    config: Union[CompressionConfig, Mapping[str, Spec]],
    *,
    filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
    warm_start: bool = True,
    counts: Optional[Mapping[str, torch.Tensor]] = None,
    signature_batches: Optional[Iterable[Any]] = None,
    signature_rows: Optional[int] = None,
) -> Dict[str, CompressedEmbeddingBagCollection]:
    """Replaces, in place, every stock ``torchrec.EmbeddingBagCollection`` of ``model`` (exact type, picked by
    ``filter_fn(module, fqn)`` if given) by a ``CompressedEmbeddingBagCollection`` of the same logical tables, each
    compressed as ``config`` says (or kept stock). Works on any model (TorchRec's DLRM, a two-tower model, yours),
    on ``meta`` before ``DistributedModelParallel`` and on a trained model.

    When the stock tables hold trained weights (not ``meta``) and ``warm_start``, the compressed tables start from
    them (``warm_start_``): stock tables keep their rows; shared rows, MEmCom weights, QR factors and LMA memories are
    least-squares fits of the trained rows, weighted by ``counts[table]`` (ids' training frequencies) when given.
    LMA places chunks by signatures: pass ``signature_batches`` (training rows) to fit them before the warm start.

    Args:
        model (nn.Module): the model to change in place.
        config (CompressionConfig or Mapping): the rules (a plain mapping is ``CompressionConfig(rules=...)``).
        filter_fn (Optional[Callable]): ``(module, fqn) -> bool``; default every stock ``EmbeddingBagCollection``.
        warm_start (bool): initialise from trained stock weights when there are any.
        counts (Optional[Mapping[str, torch.Tensor]]): per table, ``(n,)`` id counts (frequency weights).
        signature_batches (Optional[Iterable]): KJTs, ``(kjt, labels)`` pairs or ``Batch``es to fit LMA signatures on.
        signature_rows (Optional[int]): rows of ``signature_batches`` read at most.

    Returns:
        Dict[str, CompressedEmbeddingBagCollection]: the new collections by FQN.

    Example::

        compress_(model, {"_default": {"type": "memcom", "compression": 16}})  # every table, MEmCom 16x
    """
    if not isinstance(config, CompressionConfig):
        config = CompressionConfig(rules=config)
    replaced: Dict[str, CompressedEmbeddingBagCollection] = {}
    for parent, name, fqn, ebc in _targets(model, filter_fn):
        tables = _compressed_tables(ebc, config)
        if all(new is old for new, old in zip(tables, ebc.embedding_bag_configs())):
            continue  # every table stays stock: leave the module as it is
        weights = {t.name: ebc.embedding_bags[t.name].weight for t in ebc.embedding_bag_configs()}
        device = next(iter(weights.values())).device
        new = CompressedEmbeddingBagCollection(tables, ebc.is_weighted(), device=device)
        if signature_batches is not None and not device.type == "meta":
            new.fit_signatures(_signature_rows(signature_batches), max_rows=signature_rows)
        if warm_start and device.type != "meta":
            warm_start_(new, {k: w.detach() for k, w in weights.items()}, counts)
        setattr(parent, name, new)
        replaced[fqn] = new
    return replaced


@torch.no_grad()
def warm_start_(
    module: CompressedEmbeddingBagCollection,
    trained: Mapping[str, torch.Tensor],
    counts: Optional[Mapping[str, torch.Tensor]] = None,
) -> None:
    """Initialises ``module``'s tables from trained stock tables ``trained[table]`` (``n x d``), in place (see
    ``compress_``); tables missing from ``trained`` keep their state.

    Raises:
        ValueError: a trained table's shape differs from the logical table's.
    """
    counts = counts or {}
    by_method: Dict[str, Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]] = {}
    projections = module.output_projections()
    for t in module.embedding_bag_configs():
        if t.name not in trained:
            continue
        w = trained[t.name]
        if tuple(w.shape) != (t.num_embeddings, t.embedding_dim):
            raise ValueError(
                f"table '{t.name}': trained weight has shape {tuple(w.shape)}, the table is "
                f"{t.num_embeddings} x {t.embedding_dim}"
            )
        c = counts.get(t.name)
        if projections is not None and t.name in projections:  # narrowed: fit in the best base_dim-wide basis
            p = projections[t.name]
            basis = _principal_basis(w.to(p), c, p.shape[0])  # (d, base_dim), orthonormal columns
            p.copy_(basis.t())
            w = w.to(p) @ basis
        by_method.setdefault(module.method_of(t.name).name, {})[t.name] = (w, c)
    for name, method in module.methods().items():
        if name in by_method:
            method.warm_start(module, by_method[name])


def _principal_basis(weight: torch.Tensor, counts: Optional[torch.Tensor], k: int) -> torch.Tensor:
    """The ``k`` leading eigenvectors of ``E^T diag(c) E`` (``d x k``): the basis in which a rank-``k`` projection
    of the rows loses the least (count-weighted) squared error."""
    c = counts.to(weight) if counts is not None else torch.ones(weight.shape[0], dtype=weight.dtype)
    moment = weight.t() @ (weight * c.to(weight.device).unsqueeze(1))
    _, vectors = torch.linalg.eigh(moment.double())
    return vectors[:, -k:].flip(1).to(weight.dtype)


def _collections(model: nn.Module) -> Iterator[nn.Module]:
    """The outermost compressed collections of ``model``, sharded or not (anything with ``fit_signatures``)."""
    skip: list = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in skip):
            continue
        if callable(getattr(m, "fit_signatures", None)) and callable(getattr(m, "signature_coverage", None)):
            skip.append(name)
            yield m


def _signature_rows(batches: Iterable[Any]) -> Iterator[Any]:
    """KJTs and ``(kjt, labels)`` pairs as they are; ``Batch``-like objects as ``(sparse_features, labels)``."""
    for b in batches:
        yield b if isinstance(b, (KeyedJaggedTensor, tuple)) else (b.sparse_features, getattr(b, "labels", None))


def fit_signatures(
    model: nn.Module,
    batches: Iterable[Any],
    max_rows: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, float]:
    """Fits the LMA signatures of every compressed collection in ``model`` (sharded or not) on training rows.

    Args:
        model (nn.Module): any model; its compressed collections are found wherever they sit.
        batches (Iterable): ``KeyedJaggedTensor``s, ``(kjt, labels)`` pairs, or batches with a ``sparse_features``
            KJT and ``labels`` (``torchrec``'s ``Batch``), holding each LMA table's features and its context features;
            binary labels enter the context of tables with ``label_context``. Re-iterated once per collection.
        max_rows (Optional[int]): rows read at most (the sample).
        progress (bool): show a progress bar.

    Returns:
        Dict[str, float]: per LMA table, the share of its ids that got a signature (empty without LMA tables).
        Sharded, every rank must read the same rows; the ranks' signatures are checked to agree.
    """
    coverage: Dict[str, float] = {}
    for m in _collections(model):
        coverage.update(m.fit_signatures(_signature_rows(batches), max_rows=max_rows, progress=progress))
    return coverage
