# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Model-level verbs: compress the tables of an existing model, and fit the data-dependent state of its tables."""

from typing import Any, Dict, Iterable, Iterator, Optional

from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

__all__ = ["fit_signatures"]


def _collections(model: nn.Module) -> Iterator[nn.Module]:
    """The outermost compressed collections of ``model``, sharded or not (anything with ``fit_signatures``)."""
    skip: list = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in skip):
            continue
        if callable(getattr(m, "fit_signatures", None)) and callable(getattr(m, "signature_coverage", None)):
            skip.append(name)
            yield m


def fit_signatures(
    model: nn.Module,
    batches: Iterable[Any],
    max_rows: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, float]:
    """Fits the LMA signatures of every compressed collection in ``model`` (sharded or not) on training rows.

    Args:
        model (nn.Module): any model; its compressed collections are found wherever they sit.
        batches (Iterable): ``KeyedJaggedTensor``s, or batches with a ``sparse_features`` KJT (``torchrec``'s
            ``Batch``), holding each LMA table's features and its context features. Re-iterated once per collection.
        max_rows (Optional[int]): rows read at most (the sample).
        progress (bool): show a progress bar.

    Returns:
        Dict[str, float]: per LMA table, the share of its ids that got a signature (empty without LMA tables).
        Sharded, every rank must read the same rows; the ranks' signatures are checked to agree.
    """
    coverage: Dict[str, float] = {}
    for m in _collections(model):
        kjts = (b if isinstance(b, KeyedJaggedTensor) else b.sparse_features for b in batches)
        coverage.update(m.fit_signatures(kjts, max_rows=max_rows, progress=progress))
    return coverage
