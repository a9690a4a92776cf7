# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``train.init_from``: start a recipe run from a trained stock-table run's checkpoint, converted to this run's
tables by ``compress_``'s warm start (``torchrec_memcom.convert.warm_start_``).

The source is a checkpoint (``<checkpoint.dir>/step_<N>``, any world size) of the same recipe, data and model sizes
with stock tables everywhere. Every rank rebuilds it unsharded on CPU, reads it (``inference.load_checkpoint``),
fits this run's LMA signatures and counts ids on the same seeded sample of training rows
(``train.lma_signature_rows``), fits each compressed table to the trained rows (least squares weighted by
1 + the id's count in the sample),
takes the dense layers as they are, and copies the result into its shards (``load_unsharded_state_dict``). The
stock model must fit in host memory once per rank: this is the recipes' way to measure conversion; a production
model converts once with ``torchrec_memcom.compress_`` and saves.
"""

import dataclasses
from typing import Any, Dict, Iterable, Mapping, Tuple

import torch
from torch import nn

from torchrec_memcom.convert import fit_signatures, warm_start_
from torchrec_memcom.inference.checkpoint import checkpoint_keys, load_checkpoint
from torchrec_memcom.recipes.config import ConfigError

__all__ = ["converted_state", "id_counts"]


def _collections(model: nn.Module) -> Dict[str, nn.Module]:
    """The compressed collections of an unsharded ``model`` by FQN."""
    return {fqn: m for fqn, m in model.named_modules() if callable(getattr(m, "physical_weight", None))}


def id_counts(batches: Iterable[Any], sizes: Mapping[str, int], max_rows: int) -> Dict[str, torch.Tensor]:
    """Per feature, how often each id occurs in the first ``max_rows`` rows of ``batches`` (``Batch``es)."""
    counts = {f: torch.zeros(n, dtype=torch.float64) for f, n in sizes.items()}
    rows = 0
    for batch in batches:
        kjt = batch.sparse_features
        for f in kjt.keys():
            if f in counts:
                ids = kjt[f].values()
                counts[f] += torch.bincount(ids[(ids >= 0) & (ids < sizes[f])], minlength=sizes[f]).double()
        rows += kjt.stride()
        if rows >= max_rows:
            break
    return counts


@torch.no_grad()
def converted_state(task: Any, path: str) -> Tuple[Dict[str, Any], Dict[str, float]]:
    """The unsharded state of ``task``'s model warm-started from the stock run checkpointed at ``path``, and the LMA
    signature coverage.

    Raises:
        ConfigError: ``path`` is not a checkpoint of this recipe's model with stock tables (naming the first key that
            does not match).
    """
    cfg = task.cfg
    source_task = type(task)(dataclasses.replace(cfg, tables={}), task.ctx)
    source, _ = source_task.build_model(device="cpu")
    try:
        keys = checkpoint_keys(path)
        load_checkpoint(source, path, key="model" if any(k.startswith("model.") for k in keys) else "")
    except (FileNotFoundError, KeyError, RuntimeError, ValueError) as e:
        raise ConfigError(
            f"train.init_from: {path} is not a checkpoint of this recipe's model with stock tables "
            f"(same data and model sizes): {e}"
        ) from None
    target, _ = task.build_model(device="cpu")
    rows = cfg.train.lma_signature_rows
    coverage = fit_signatures(target, task.signature_batches(), max_rows=rows)
    features = {f: n for f, n in cfg.data.table_sizes().items()}
    counts = id_counts(task.signature_batches(), features, rows)
    sources = _collections(source)
    for fqn, collection in _collections(target).items():
        trained, weights = sources[fqn], {}
        table_counts = {}
        for t in collection.embedding_bag_configs():
            weights[t.name] = trained.physical_weight(t.name).detach()
            if len(t.feature_names) == 1 and t.feature_names[0] in counts:  # ids outside the sample count once
                table_counts[t.name] = counts[t.feature_names[0]] + 1
        warm_start_(collection, weights, table_counts)
    state = target.state_dict()
    source_state = source.state_dict()
    inside = tuple(f"{fqn}." for fqn in sources)
    for key in state:
        if not key.startswith(inside):  # dense layers: as trained
            state[key] = source_state[key]
    return state, coverage
