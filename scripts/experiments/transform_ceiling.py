# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Ceiling experiment: the id transform memoised per (module, batch), i.e. costing no host (or GPU) time after a
batch's first step; runs scripts/bench_sharded.py with the patch. Not a correct training step: the input check
runs once per batch."""
import runpy
import sys

from torchrec_memcom.modules import transform as T

_orig = T.IdTransform._transform
_cache = {}


def _memo(self, features, order, raw, index_dtype, slots):
    key = (id(self), id(features), features.values().data_ptr(), order, raw, index_dtype, slots)
    hit = _cache.get(key)
    if hit is None:
        hit = _cache[key] = (_orig(self, features, order, raw, index_dtype, slots), self, features)
    return hit[0]


T.IdTransform._transform = _memo
sys.argv = ["scripts/bench_sharded.py"] + sys.argv[1:]
runpy.run_path("scripts/bench_sharded.py", run_name="__main__")
