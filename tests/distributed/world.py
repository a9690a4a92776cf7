# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A pool of ``W`` spawned processes that keeps one process group alive across tests.

Importing torchrec in a fresh process takes 5-25 s on a small CI machine, so every multi-process test of a session
runs in the same workers: ``world.run(fn, **kwargs)`` calls the module-level function ``fn(rank=, world_size=,
**kwargs)`` on every rank and returns the per-rank results, or raises with every failing rank's traceback.
"""

import importlib
import os
import queue
import traceback
from datetime import timedelta
from typing import Any, Callable, List, Optional

import torch.multiprocessing as mp

_TIMEOUT_S = 900
CUDA_WORLD_ENV = "TORCHREC_MEMCOM_TEST_CUDA"  # "1" in the workers of a world whose ranks run on GPUs


def _worker(rank: int, world_size: int, backend: str, cuda: bool, port: int, inbox: Any, outbox: Any) -> None:
    os.environ.update(
        MASTER_ADDR="localhost",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        GLOO_DEVICE_TRANSPORT="TCP",
        **{CUDA_WORLD_ENV: "1" if cuda else "0"},
    )
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    if cuda:
        if world_size <= torch.cuda.device_count():
            torch.cuda.set_device(rank)
        else:  # gloo ranks sharing GPU 0, planned as one host's GPUs (scenarios.shard puts the shards on GPU 0)
            torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    while True:
        item = inbox.get()
        if item is None:
            break
        module_name, fn_name, kwargs = item
        try:
            fn = getattr(importlib.import_module(module_name), fn_name)
            outbox.put((rank, True, fn(rank=rank, world_size=world_size, **kwargs)))
        except BaseException:  # noqa: B036 - report everything to the parent
            outbox.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class World:
    """``world_size`` worker processes with an initialised default process group (``backend``). With ``cuda``
    (always with NCCL) each rank's current device is a GPU (``scenarios.device_for``): its own, or, with more ranks
    than GPUs (gloo only), GPU 0 for every rank, planned as one host's GPUs and placed on GPU 0
    (``init_distributed(device="cuda-shared")``'s setting)."""

    def __init__(self, world_size: int, backend: str = "gloo", cuda: bool = False) -> None:
        from torchrec.test_utils import get_free_port

        ctx = mp.get_context("spawn")
        self.world_size = world_size
        self.backend = backend
        cuda = cuda or backend == "nccl"
        self._inboxes = [ctx.Queue() for _ in range(world_size)]
        self._outbox = ctx.Queue()
        port = get_free_port()
        self._procs = [
            ctx.Process(
                target=_worker, args=(r, world_size, backend, cuda, port, self._inboxes[r], self._outbox), daemon=True
            )
            for r in range(world_size)
        ]
        for p in self._procs:
            p.start()
        self.broken: Optional[str] = None

    def run(self, fn: Callable[..., Any], timeout: float = _TIMEOUT_S, **kwargs: Any) -> List[Any]:
        """Runs ``fn(rank=r, world_size=W, **kwargs)`` on every rank; returns the results in rank order."""
        if self.broken:
            raise RuntimeError(f"world is broken after an earlier failure:\n{self.broken}")
        for box in self._inboxes:
            box.put((fn.__module__, fn.__name__, kwargs))
        results: dict = {}
        errors: List[str] = []
        for _ in range(self.world_size):
            try:
                rank, ok, payload = self._outbox.get(timeout=timeout)
            except queue.Empty:
                self.broken = f"{fn.__name__}: no answer within {timeout} s"
                raise TimeoutError(self.broken) from None
            if ok:
                results[rank] = payload
            else:
                errors.append(f"--- rank {rank} ---\n{payload}")
        if errors:
            raise AssertionError(f"{fn.__name__} failed on {len(errors)} rank(s):\n" + "\n".join(sorted(errors)))
        return [results[r] for r in range(self.world_size)]

    def close(self) -> None:
        for box in self._inboxes:
            box.put(None)
        for p in self._procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
