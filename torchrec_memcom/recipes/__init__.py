# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The recipes: DLRM and two-tower training with compressed tables, their YAML presets and TorchX components.
Needs the ``recipes`` extra (``pip install torchrec_memcom[recipes]``); not part of the core API.

- ``dlrm``, ``two_tower``: the recipes (``python -m torchrec_memcom.recipes.dlrm --config ml1m_memcom``); each is a
  ``RecipeTask`` (model, data, metrics) run by ``runner``.
- ``configs/<recipe>/*.yaml``: the presets ``--config`` accepts by name (or give a YAML path).
- ``components``: TorchX components ``dlrm`` and ``two_tower`` (``torchx run <file>:dlrm``; see its docstring).
- ``runner``: what every recipe shares: checks before training, sharding, the training loop, non-finite loss
  detection, checkpoints and resume (also after a torchrun restart), the results JSON.
- ``checkpoint``: atomic DCP checkpoints with a commit record, verification and fallback.
- ``config``, ``schemas``, ``data``: strict dataclass configs from YAML with ``--set key.sub=value`` overrides.
- ``training``: process group, tables, sharding (planner + DMP with the same sharders), optimizers, LMA signatures,
  AUC / logloss over ranks.
- ``two_tower_model``: the towers and the in-batch softmax; ``report``: side-by-side comparison of DLRM runs.

Nothing here is imported by ``torchrec_memcom`` itself.
"""
