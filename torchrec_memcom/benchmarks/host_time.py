# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Where a step's host time goes: the host time spent inside each part of the embedding layer, per step.

``measure.host_step_ms`` gives the host's time for a whole step; this splits it. It wraps a fixed list of methods
(``SITES``: our id transform, MEmCom's rows and weight update, TorchRec's sharded EBC input dist, the waits on its
all-to-alls and its lookup, backward, the optimizer step) with ``time.perf_counter`` for the duration of the
measurement, runs the same rounds as ``host_step_ms`` (synchronise, then time a few step calls: the host's own time,
the GPU's queue never full), and restores them. The profiler's host view does not answer this: its self-CPU sum
overstated a `big` step's host time about 2x and misses the Python between ops (``docs/PERFORMANCE.md``). Times are
inclusive, and a site may run inside another (the weight update inside backward).
"""

import importlib
import inspect
import statistics
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from torchrec_memcom.benchmarks.measure import host_step_ms

__all__ = ["FINE_SITES", "SITES", "Site", "host_breakdown", "timed_sites"]


class Site(NamedTuple):
    """A method to time: ``module.owner.attr`` (``owner`` empty: a module-level function), shown as ``label``;
    ``inside``: the label of the site it runs within, if any."""

    label: str
    module: str
    owner: str
    attr: str
    inside: Optional[str] = None


_EBC = "torchrec.distributed.embeddingbag"
_DIST = "torchrec.distributed.dist_data"
_TRANSFORM = "torchrec_memcom.modules.transform"
_CHECK = "torchrec_memcom.modules.input_check"
_SHARDED = "torchrec_memcom.distributed.compressed"
SITES: List[Site] = [
    Site("TorchRec EBC input dist", _EBC, "ShardedEmbeddingBagCollection", "input_dist"),
    # the input dist's awaitables, waited on after input_dist returns: the splits' wait builds the feature
    # permutation with a blocking copy (TorchRec's per-batch synchronisation: the host waits there for the kernels
    # queued before it), then starts the ids' all-to-all, whose wait builds the received KJT
    Site("TorchRec input dist: splits wait (its sync)", _DIST, "KJTAllToAllSplitsAwaitable", "_wait_impl"),
    Site("TorchRec input dist: ids wait", _DIST, "KJTAllToAllTensorsAwaitable", "_wait_impl"),
    Site("TorchRec EBC lookup + output dist", _EBC, "ShardedEmbeddingBagCollection", "compute_and_output_dist"),
    # forward and transform_with_slots (one-rank MEmCom: its rows and entity-weight slots in the same launch)
    Site("id transform", _TRANSFORM, "IdTransform", "_transform"),
    # the previous batch's check: waits (an event) for that batch's statistics copy, so the host stays at most one
    # transform ahead of the GPU (where a GPU-bound step's host waits once no TorchRec sync is left)
    Site("input check: previous batch's wait", _CHECK, "InputCheck", "flush", inside="id transform"),
    Site("input check", _CHECK, "InputCheck", "__call__", inside="id transform"),
    Site("combine (physical -> logical pooled)", _TRANSFORM, "IdTransform", "combine"),
    # what the sharded module does between the input dist and TorchRec's lookup: MEmCom's per-sample weights (one
    # gather when the transform wrote its rows and slots, else its rows kernel), LMA's expansion of raw ids
    Site(
        "after the dist (MEmCom weights, LMA expansion)",
        _SHARDED,
        "ShardedCompressedEmbeddingBagCollection",
        "_post_dist",
    ),
    Site(
        "LMA: raw ids expanded after the dist",
        _TRANSFORM,
        "IdTransform",
        "expand",
        inside="after the dist (MEmCom weights, LMA expansion)",
    ),
    Site(
        "MEmCom: rows and weights after the dist",
        _SHARDED,
        "ShardedCompressedEmbeddingBagCollection",
        "_weighted_rows",
        inside="after the dist (MEmCom weights, LMA expansion)",
    ),
    Site("backward", "torch", "Tensor", "backward"),
    Site(
        "MEmCom: weight update",
        "torchrec_memcom.distributed.entity_weights",
        "EntityWeightOptimizer",
        "update",
        inside="backward",
    ),
    Site("optimizer step", "torchrec.optim.keyed", "CombinedOptimizer", "step"),
]

_LOOKUP = "TorchRec EBC lookup + output dist"
_UPDATE = "MEmCom: weight update"
# Finer parts (``bench_sharded.py --fine-host-sites``): inside the id transform, MEmCom's weights and update, and the
# lookup. Each wrapper adds its own host time to the step (0.45 us per call on a 2-core CI machine), so they stay
# out of the default table.
FINE_SITES: List[Site] = [
    # KeyedJaggedTensor.length_per_key(): a host read of the lengths unless the batch carries its counts
    Site("id transform: ids per feature", _TRANSFORM, "IdTransform", "_lengths_per_key", inside="id transform"),
    Site("id transform: segments call", _TRANSFORM, "", "transform_segments", inside="id transform"),
    Site("id transform: its Triton launch", "torchrec_memcom.ops._triton", "", "transform_segments_triton",
         inside="id transform"),
    Site("MEmCom: weights gather w[slots]", "torchrec_memcom.distributed.local_entity_weights", "LocalEntityWeights",
         "weights_at", inside="after the dist (MEmCom weights, LMA expansion)"),
    Site("FBGEMM TBE forward", "fbgemm_gpu.split_table_batched_embeddings_ops_training",
         "SplitTableBatchedEmbeddingBagsCodegen", "forward", inside=_LOOKUP),
    # TorchRec's autograd function around the lookup's per-sample weights (weighted lookups only; left out where its
    # factor is 1, as on one rank: _compat.skip_unit_weight_gradient_scaling)
    Site("TorchRec: weights' gradient scaling", "torchrec.distributed.embedding_lookup", "CommOpGradientScaling",
         "apply", inside=_LOOKUP),
    Site("MEmCom update: block sums launch", "torchrec_memcom.ops._triton_entity_update", "",
         "entity_aggregate_triton", inside=_UPDATE),
    Site("MEmCom update: update launch", "torchrec_memcom.ops._triton_entity_update", "", "entity_update_triton",
         inside=_UPDATE),
]  # fmt: skip


class _Timers:
    def __init__(self, labels: Sequence[str]) -> None:
        self.seconds = dict.fromkeys(labels, 0.0)
        self.calls = dict.fromkeys(labels, 0)
        self.on = False


def _timed(fn: Callable[..., Any], label: str, timers: _Timers) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not timers.on:
            return fn(*args, **kwargs)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers.seconds[label] += time.perf_counter() - start
            timers.calls[label] += 1

    return wrapper


class timed_sites:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Context manager: while inside, each site's method accumulates its host time in ``self.timers``; the
    originals are restored on exit (also on error). A site whose module or attribute does not exist is skipped."""

    def __init__(self, sites: Sequence[Site] = SITES) -> None:
        self._sites = list(sites)
        self.timers = _Timers([s.label for s in self._sites])
        self._saved: List[Tuple[Any, str, Any]] = []
        self.resolved: List[str] = []  # labels of the sites found (and timed)

    def __enter__(self) -> "timed_sites":
        for site in self._sites:
            try:
                owner: Any = importlib.import_module(site.module)
                if site.owner:
                    owner = getattr(owner, site.owner)
                original = inspect.getattr_static(owner, site.attr)
            except (ImportError, AttributeError):
                continue
            own = site.attr in vars(owner)  # else inherited: shadowed while timing, then the shadow is removed
            static = isinstance(original, staticmethod)
            wrapped: Any = _timed(original.__func__ if static else getattr(owner, site.attr), site.label, self.timers)
            self._saved.append((owner, site.attr, original if own else None))
            setattr(owner, site.attr, staticmethod(wrapped) if static else wrapped)
            self.resolved.append(site.label)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, attr, original in reversed(self._saved):
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self._saved.clear()


def host_breakdown(
    step: Callable[[], None],
    device: torch.device,
    rounds: int = 10,
    per_round: int = 4,
    sites: Sequence[Site] = SITES,
) -> Dict[str, Any]:
    """The host time per step inside each site, over ``rounds`` x ``per_round`` step calls timed as in
    ``measure.host_step_ms``: ``{"step_ms": median host ms of a step call, "sites": {label: {"ms_per_step",
    "calls_per_step", "inside"}}}`` (sites that did not run are left out)."""
    with timed_sites(sites) as timed:
        timed.timers.on = True
        times = host_step_ms(step, device, rounds, per_round)
        timed.timers.on = False
    n = len(times)
    t = timed.timers
    return {
        "steps": n,
        "step_ms": statistics.median(times),
        "sites": {
            s.label: {
                "ms_per_step": t.seconds[s.label] * 1e3 / n,
                "calls_per_step": t.calls[s.label] / n,
                "inside": s.inside,
            }
            for s in sites
            if t.calls[s.label]
        },
    }
