# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Checkpoints of sharded models with ``torch.distributed.checkpoint`` (DCP), and unsharded state in and out.

Sharded modules keep the unsharded FQNs and expose their tables and entity weights as ShardedTensors, so DCP saves
every rank's shards and loads them back at any world size (DCP reshards by global offsets)::

    save(model, "ckpt/step_100")         # on every rank
    load(model, "ckpt/step_100")         # on every rank, any world size; or into an unsharded model, one process
"""

import os
from typing import Any, Dict, Mapping, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor

__all__ = ["load", "load_unsharded_state_dict", "save", "unsharded_state_dict"]


def _local_pieces(tensor: Any) -> list:
    """(local tensor, global offsets) of a ShardedTensor / DTensor shard, or of a plain tensor (offset 0)."""
    if isinstance(tensor, ShardedTensor):
        return [(s.tensor, s.metadata.shard_offsets) for s in tensor.local_shards()]
    if isinstance(tensor, DTensor):
        local = tensor.to_local()
        if hasattr(local, "local_shards"):  # TorchRec's LocalShardsWrapper
            return list(zip(local.local_shards(), local.local_offsets()))
        raise NotImplementedError("DTensor state with plain placements is not supported here")
    return [(tensor, [0] * tensor.dim())]


@torch.no_grad()
def load_unsharded_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Copies full (unsharded) tensors into a sharded model's local shards, in place.

    ``state_dict`` has the unsharded FQNs (e.g. ``unsharded_model.state_dict()``); every rank passes the same one.

    Raises:
        KeyError: a key of the model is missing from ``state_dict`` (with ``strict``).
        ValueError: a tensor's global shape differs from the model's.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    if missing and strict:
        raise KeyError(f"'{missing[0]}' is missing from the unsharded state dict")
    # Each module checks its tables' description first (through the wrappers' key prefixes): other tables are
    # refused before anything is copied.
    extra = {k: state_dict[k] for k, v in own.items() if not isinstance(v, torch.Tensor) and k in state_dict}
    if extra:
        model.load_state_dict(dict(extra), strict=False)  # (DMP renames keys in place)
    for key, dst in own.items():
        if key not in state_dict or key in extra:
            continue
        src = state_dict[key]
        global_shape = tuple(dst.size()) if isinstance(dst, (ShardedTensor, DTensor)) else tuple(dst.shape)
        if tuple(src.shape) != global_shape:
            raise ValueError(f"'{key}': shape {tuple(src.shape)} does not match the model's {global_shape}")
        for local, offsets in _local_pieces(dst):
            index = tuple(slice(o, o + n) for o, n in zip(offsets, local.shape))
            local.copy_(src[index].to(local.device, local.dtype))


@torch.no_grad()
def unsharded_state_dict(model: nn.Module, dst: int = 0) -> Optional[Dict[str, torch.Tensor]]:
    """Gathers a sharded model's state into full CPU tensors on rank ``dst`` (``None`` on other ranks).

    Collective: every rank must call it. Meant for small models, tests and exporting.
    """
    out: Dict[str, torch.Tensor] = {}
    rank = dist.get_rank() if dist.is_initialized() else 0
    for key, tensor in model.state_dict().items():
        if isinstance(tensor, ShardedTensor):
            full = torch.empty(tensor.size(), dtype=tensor.dtype) if rank == dst else None
            tensor.gather(dst=dst, out=full)
            if rank == dst:
                out[key] = full
        elif isinstance(tensor, torch.Tensor):
            out[key] = tensor.detach().cpu().clone()
        else:  # extra state (e.g. the tables' description)
            out[key] = tensor
    return out if rank == dst else None


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Saves ``model.state_dict()`` with DCP (collective when distributed: call on every rank)."""
    dcp.save(model.state_dict(), checkpoint_id=path)


def load(model: nn.Module, path: str | os.PathLike) -> None:
    """Loads a DCP checkpoint into ``model`` in place, resharding as needed (any world size, or unsharded)."""
    state = model.state_dict()
    dcp.load(state, checkpoint_id=path)
    model.load_state_dict(state)
