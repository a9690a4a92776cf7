# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Training-throughput benchmarks of sharded stock and compressed tables (``scripts/bench_sharded.py`` is their CLI).

- ``layouts``: the ``Layout`` dataclass, the layouts (``big``, ``criteo``, ``terabyte``, ``tiny``) and the table
  configs each method builds from them.
- ``data``: power-law synthetic batches, generated on the device.
- ``planning``: sharders, constraints, the topology under an HBM / host budget, plans that report "does not fit".
- ``plan_report``: what the planner chooses for each method on 1, 2, 4 ranks (planning only, no GPUs).
- ``harness``: build / plan / shard / time / profile one method; a whole run with interleaved repeats.
- ``measure``: training steps, their timing and profile, the memory of a sharded model.
- ``host_time``: a step's host time split over the parts of the embedding layer.
- ``trace_ops``: which call launched each GPU op of a profiler trace (a CLI).
- ``transform_time``: the id transform's host and GPU time alone, per method (a CLI).
- ``recat``: the ``--cache-recat`` diagnostic (TorchRec's input-dist permutation built once).
- ``uvm_cache``: fresh batches for tables behind FBGEMM's HBM cache, and the cache's miss counters.
- ``tbe_alone``: the command line and training TBE of the benchmarks of FBGEMM's TBE alone (``scripts/``).
- ``report``: rows, ratios against stock, JSON, markdown tables and the weak-scaling combine.
"""
