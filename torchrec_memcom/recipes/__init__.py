# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Shared pieces of the example recipes (``examples/dlrm/train.py`` and later ones); not part of the core API.

- ``config``: strict dataclass configs from YAML with ``--set key.sub=value`` overrides, and the shared sections
  (optimizers, training loop, evaluation, checkpoints, output, per-feature table specs).
- ``data``: dataset sections (``ml1m_ctr``, ``criteo_tsv``, ``criteo_npy``, ``synthetic_criteo``).
- ``schemas``: each recipe's top-level config (``RECIPE_CONFIGS``, keyed by a YAML's ``recipe:``).
- ``training``: process group, tables, sharding (planner + DMP with the same sharders), optimizers, LMA
  signatures, AUC / logloss over ranks, DCP checkpoints.
- ``components``: TorchX components (registered under the ``torchx.components`` entry point as ``memcom``).

Only ``config``, ``data`` and ``schemas`` load without torch.distributed work; nothing here is imported by
``torchrec_memcom`` itself.
"""
