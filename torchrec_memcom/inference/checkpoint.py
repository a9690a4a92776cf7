# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Gather: a DCP checkpoint written by any number of ranks -> the state of one unsharded model, in one process.

Sharded collections keep the unsharded FQNs and save their tables, MEmCom weights and LMA signatures as
ShardedTensors with global offsets, so ``torch.distributed.checkpoint`` reassembles full tensors for plain ones
without a process group. Two layouts are read: the model's state at the top level
(``torchrec_memcom.distributed.checkpoint.save``) and nested under a key next to optimizer and trainer state (the
recipes' ``Checkpointer``: ``{"model": ..., "optimizer": ..., "trainer": ...}``).
"""

import os
from typing import List, Optional, Set

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

__all__ = ["checkpoint_keys", "load_checkpoint"]

_RECIPE_KEY = "model"


def checkpoint_keys(path: str | os.PathLike) -> Set[str]:
    """The flattened state-dict keys a DCP checkpoint holds."""
    if not os.path.isfile(os.path.join(path, ".metadata")):
        raise FileNotFoundError(f"{os.fspath(path)}: not a DCP checkpoint (no .metadata)")
    return set(dcp.FileSystemReader(path).read_metadata().state_dict_metadata)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, key: Optional[str] = None) -> str:
    """Loads a DCP checkpoint of any world size into an unsharded ``model`` (on CPU), in place.

    Args:
        model (nn.Module): the unsharded model, built as in training but on a real device (not ``meta``); e.g.
            ``DLRMTrain(DLRM(...CompressedEmbeddingBagCollection(tables, device="cpu")...))``.
        path (str): the checkpoint directory.
        key (Optional[str]): where the model's state sits in the checkpoint: ``""`` top level, ``"model"`` as the
            recipes save it; ``None`` picks the layout that holds every key of ``model``.

    Returns:
        the key used (``""`` or e.g. ``"model"``).

    Raises:
        FileNotFoundError: ``path`` is not a DCP checkpoint.
        ValueError: the model has meta tensors, or the checkpoint misses some of the model's keys.
    """
    state = model.state_dict()
    meta = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_meta]
    if meta:
        raise ValueError(f"the model has tensors on meta (e.g. '{meta[0]}'): build it on CPU before loading")
    available = checkpoint_keys(path)
    candidates = [key] if key is not None else ["", _RECIPE_KEY]
    missing_by_key: List[List[str]] = []
    for prefix in candidates:
        names = {k: f"{prefix}.{k}" if prefix else k for k in state}
        missing = [k for k, name in names.items() if name not in available]
        if not missing:
            flat = {names[k]: v for k, v in state.items()}
            # tensors load in place; other entries (a module's extra state, e.g. the tables' fingerprint, which
            # load_state_dict then checks against the model) are replaced in ``flat``
            dcp.load(flat, checkpoint_id=path, planner=DefaultLoadPlanner(flatten_state_dict=False))
            model.load_state_dict({k: flat[names[k]] for k in state})
            return prefix
        missing_by_key.append(missing)
    tried = ", ".join(
        f"{'top level' if p == '' else repr(p)}: {len(m)} missing, e.g. {m[:3]}"
        for p, m in zip(candidates, missing_by_key)
    )
    raise ValueError(f"{os.fspath(path)}: the checkpoint does not hold this model's state ({tried})")
