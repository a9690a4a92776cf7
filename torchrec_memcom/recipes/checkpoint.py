# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Checkpoints of the recipes: ``torch.distributed.checkpoint`` (DCP) of model and optimizers, committed atomically.

Layout of ``<dir>/step_<N>/``: DCP's files (every rank writes its shards; rank 0 the ``.metadata``), one
``rng_rank<r>.pt`` per rank (its RNG states) and ``checkpoint.json``, the commit record rank 0 writes last: step,
world size, trainer state (data position, seed, ...), the run's whole config, and the size of every file.

Rules (``docs/RELIABILITY.md`` states them for users):

- A checkpoint is written to ``step_<N>.tmp``; after every rank has written its files (barrier), rank 0 writes
  ``checkpoint.json`` into it and renames the folder to ``step_<N>`` (atomic on POSIX file systems). A save killed at
  any point leaves either the previous checkpoints only or a complete new one; leftover ``.tmp`` folders are never
  read and are removed by the next run.
- Only folders with a readable ``checkpoint.json`` whose listed files all exist with their recorded sizes count
  ("committed"). Restoring tries them newest first: a committed checkpoint that still fails to load (a damaged file,
  a missing rank's RNG state) is skipped with a warning in favour of the previous one, on every rank alike.
- Before loading, the caller compares the recorded config with its own (``config_changes``) and refuses a mismatch by
  name, so a changed table type or optimizer never reaches DCP's shape errors.
"""

import json
import logging
import os
import random
import re
import shutil
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torchrec.optim.keyed import KeyedOptimizer

from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.training import DistContext

__all__ = ["COMMIT_FILE", "CheckpointError", "Checkpointer", "config_changes"]

logger: logging.Logger = logging.getLogger(__name__)

COMMIT_FILE = "checkpoint.json"
"""The commit record of a checkpoint folder, written last (by rank 0)."""
FORMAT_VERSION = 2
"""2: the fused optimizer state of a compressed collection is keyed by the model's parameter names
(``..._embedding_bag_collection.embedding_bags.<t>.weight``). Format 1 keyed it by the inner collection's names
(without ``_embedding_bag_collection.``) when the collection had no MEmCom table; such checkpoints still load."""
_INNER = "._embedding_bag_collection."
_STEP_DIR = re.compile(r"step_(\d+)")


class CheckpointError(RuntimeError):
    """No committed checkpoint could be loaded."""


class Checkpointer:
    """Saves and restores model, optimizer, RNG and trainer state (see the module docstring for the rules).

    Args:
        directory (str): where the ``step_<N>`` folders go.
        ctx (DistContext): ranks (every method is collective unless it says otherwise).
        keep (Optional[int]): keep the newest this-many committed checkpoints (``None``: all).
    """

    def __init__(self, directory: str, ctx: DistContext, keep: Optional[int] = None) -> None:
        self.directory = directory
        self.ctx = ctx
        self.keep = keep

    # -- before training ---------------------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Checks that this rank can write ``directory`` (local).

        Raises:
            ConfigError: ``checkpoint.dir: cannot write ...``.
        """
        probe = os.path.join(self.directory, f".write_test_rank{self.ctx.rank}")
        try:
            os.makedirs(self.directory, exist_ok=True)
            with open(probe, "w", encoding="utf-8") as f:
                f.write("ok\n")
            os.remove(probe)
        except OSError as e:
            raise ConfigError(f"checkpoint.dir: cannot write {self.directory}: {e.strerror or e}") from None

    def remove_partial(self) -> None:
        """Removes the ``step_<N>.tmp`` / ``.old`` leftovers of interrupted saves (rank 0; collective)."""
        if self.ctx.is_main:
            for name in sorted(os.listdir(self.directory)):
                stem, _, suffix = name.partition(".")
                if _STEP_DIR.fullmatch(stem) and suffix in ("tmp", "old"):
                    logger.warning("removing %s (left by an interrupted save)", os.path.join(self.directory, name))
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        self.ctx.barrier()

    # -- saving ------------------------------------------------------------------------------------------------------

    def save(self, step: int, model: nn.Module, optimizer: KeyedOptimizer, record: Mapping[str, Any]) -> str:
        """Writes ``step_<step>`` atomically; ``record`` (JSON-ready: trainer state, config) goes into its
        ``checkpoint.json``. Returns the committed path."""
        final = self._path(step)
        tmp = final + ".tmp"
        if self.ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        self.ctx.barrier()
        dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint_id=tmp)
        _save_synced(_rng_state(), os.path.join(tmp, f"rng_rank{self.ctx.rank}.pt"))
        self.ctx.barrier()  # every rank's files are on disk
        if self.ctx.is_main:
            self._commit(tmp, final, {**record, "step": step, "world_size": self.ctx.world_size})
        self.ctx.barrier()
        return final

    def _commit(self, tmp: str, final: str, record: Dict[str, Any]) -> None:
        """Rank 0: writes the commit record into ``tmp``, then renames it to ``final`` (replacing an older one)."""
        files = {name: os.path.getsize(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))}
        payload = {"format": FORMAT_VERSION, **record, "files": files}
        _write_synced(os.path.join(tmp, COMMIT_FILE), json.dumps(payload, indent=1, default=str))
        if os.path.exists(final):  # e.g. a run resumed from an older checkpoint saves this step again
            old = final + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(self.directory)
        if self.keep is not None:
            for old_step in self.committed_steps()[: -self.keep]:
                shutil.rmtree(self._path(old_step), ignore_errors=True)

    # -- finding and loading -----------------------------------------------------------------------------------------

    def _path(self, step: int) -> str:
        return os.path.join(self.directory, f"step_{step}")

    def committed_steps(self) -> List[int]:
        """Steps of the folders that hold a commit record, oldest first (not verified; local, not collective)."""
        if not os.path.isdir(self.directory):
            return []
        steps = []
        for name in os.listdir(self.directory):
            m = _STEP_DIR.fullmatch(name)
            if m and os.path.isfile(os.path.join(self.directory, name, COMMIT_FILE)):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def latest(self) -> Optional[str]:
        """Path of the newest committed checkpoint, or ``None`` (local, not collective)."""
        steps = self.committed_steps()
        return self._path(steps[-1]) if steps else None

    def _verified(self) -> List[Tuple[str, Dict[str, Any]]]:
        """Rank 0: ``(path, record)`` of every intact committed checkpoint, newest first; warns about the others."""
        out = []
        for step in reversed(self.committed_steps()):
            path = self._path(step)
            try:
                out.append((path, _read_record(path)))
            except ValueError as e:
                logger.warning("skipping checkpoint %s: %s", path, e)
        return out

    def restore(
        self,
        model: nn.Module,
        optimizer: KeyedOptimizer,
        accept: Callable[[str, Dict[str, Any]], None],
    ) -> Optional[Tuple[str, Dict[str, Any]]]:
        """Loads the newest committed checkpoint that loads, in place; returns ``(path, record)`` or ``None`` if
        there is none.

        ``accept(path, record)`` runs first and raises (``ConfigError``) when the checkpoint does not fit this run;
        that stops the search, since older checkpoints of the same run do not fit either.

        Raises:
            CheckpointError: committed checkpoints exist but none loads (each one's error named).
        """
        found = [self._verified() if self.ctx.is_main else None]
        if self.ctx.world_size > 1:
            dist.broadcast_object_list(found, src=0)  # one decision for every rank, whatever each one sees
        candidates = found[0] or []
        errors = []
        for path, record in candidates:
            accept(path, record)
            error = self._try_load(path, model, optimizer, int(record.get("format", 1)))
            if error is None:
                if errors and self.ctx.is_main:
                    logger.warning("resumed from %s, an older checkpoint than the newest", path)
                return path, record
            errors.append(f"{path}: {error}")
            if self.ctx.is_main:
                logger.warning("checkpoint %s does not load (%s); trying the previous one", path, error)
        if errors:
            raise CheckpointError(f"no checkpoint in {self.directory} loads: " + "; ".join(errors))
        return None

    def _try_load(self, path: str, model: nn.Module, optimizer: KeyedOptimizer, fmt: int) -> Optional[str]:
        """Loads ``path``, written in format ``fmt`` (collective); returns ``None``, or the error of the first rank
        that failed."""
        error: Optional[str] = None
        rng: Optional[Dict[str, Any]] = None
        try:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            # Flatten here and load without DCP's own flattening: a table-wise table's fused optimizer state exists
            # only on its rank, and DCP (torch 2.13) takes checkpoint keys missing locally for a pre-2.4 checkpoint
            # and switches to an old key scheme. Every value is a tensor and loads in place, so ``state`` sees it.
            flat, _ = flatten_state_dict(state)
            if fmt < 2:
                flat = _format1_keys(flat, path)
            dcp.load(flat, checkpoint_id=path, planner=DefaultLoadPlanner(flatten_state_dict=False))
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            rng = torch.load(os.path.join(path, f"rng_rank{self.ctx.rank}.pt"), weights_only=False)
        except (Exception, CheckpointException) as e:  # any damage (DCP's CheckpointException is a BaseException)
            error = f"rank {self.ctx.rank}: {_describe(e)}"
        errors: List[Optional[str]] = [error]
        if self.ctx.world_size > 1:
            errors = [None] * self.ctx.world_size
            dist.all_gather_object(errors, error)
        first = next((e for e in errors if e is not None), None)
        if first is None and rng is not None:
            _set_rng_state(rng)
        return first


def _format1_keys(flat: Dict[str, Any], path: str) -> Dict[str, Any]:
    """``flat`` with each optimizer key that the format-1 checkpoint at ``path`` lacks, but holds under its format-1
    name (without ``_embedding_bag_collection.``), renamed to that name. The values are the live tensors, which DCP
    fills in place whatever their key."""
    saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    out = {}
    for key, value in flat.items():
        old = key.replace(_INNER, ".", 1)
        out[old if key.startswith("optimizer.") and key not in saved and old in saved else key] = value
    return out


def _describe(e: BaseException) -> str:
    """``Type: first line`` of an error; for DCP's wrapper, of the first rank's underlying error."""
    if isinstance(e, CheckpointException) and e.failures:
        inner = next(iter(e.failures.values()))
        e = getattr(inner, "exception", inner)
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], sections: Sequence[str]) -> List[str]:
    """``key: saved -> current`` for every dotted key under ``sections`` whose value differs between two config dicts
    (lists compare whole; a key only one side has shows ``<unset>``)."""
    a, b = _flatten(saved), _flatten(current)
    under = [k for k in sorted(set(a) | set(b)) if any(k == s or k.startswith(s + ".") for s in sections)]

    def show(d: Dict[str, Any], k: str) -> str:
        return repr(d[k]) if k in d else "<unset>"

    return [f"{k}: {show(a, k)} -> {show(b, k)}" for k in under if k not in a or k not in b or a[k] != b[k]]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _read_record(path: str) -> Dict[str, Any]:
    """The commit record of ``path`` after checking every listed file's size.

    Raises:
        ValueError: unreadable record, or a file missing or of another size than recorded.
    """
    try:
        with open(os.path.join(path, COMMIT_FILE), encoding="utf-8") as f:
            record = json.load(f)
        files = dict(record["files"])
        world_size = int(record["world_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"unreadable {COMMIT_FILE} ({type(e).__name__}: {e})") from None
    for r in range(world_size):
        if f"rng_rank{r}.pt" not in files:
            raise ValueError(f"rng_rank{r}.pt is not in {COMMIT_FILE}")
    for name, size in files.items():
        p = os.path.join(path, name)
        if not os.path.isfile(p):
            raise ValueError(f"{name} is missing")
        if os.path.getsize(p) != size:
            raise ValueError(f"{name} has {os.path.getsize(p)} bytes, {size} were written")
    return record


def _write_synced(path: str, text: str) -> None:
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _save_synced(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
