# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Many recipe runs in parallel worker processes, each run exactly what a user gets from the recipe's command line.

A ``Run`` is a recipe, a config (packaged preset or YAML path) and ``--set``-style overrides: ``execute`` runs it in
the calling process as rank 0 of a one-process job (``python -m torchrec_memcom.recipes.<recipe> --config C --set
...``, through ``runner.main``; gloo on CPU, NCCL on the process's GPU), and ``Pool`` runs many of them in ``workers``
long-lived processes (each its own process group of size 1; on a GPU machine they share the GPU).

Results are cached: every finished run leaves ``<out>/runs/<name>.json`` (its identity key, the run and the compact
result), written atomically, so a rerun of a sweep skips the runs whose key matches and a crash loses at most the runs
in flight. A run that raises (diverged, bad config) is recorded as ``failed`` with its error and not retried unless
``retry_failed``; a worker process that dies is replaced and its run recorded as failed but not cached.

Dependent stages (tune, then train the chosen setting, then more seeds of the best points) are callbacks::

    with Pool(out_dir, workers=12) as pool:
        pool.submit(tuning_runs, then=lambda records: pool.submit(frontier_runs(records)))
        pool.join()
"""

import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import time
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from tqdm import tqdm

__all__ = ["Pool", "Record", "Run", "compact", "execute", "load_record", "run_all"]

_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Run:
    """One recipe run.

    Attributes:
        name: unique name in the sweep (letters, digits, ``_ . + -``): the cache file and the run's output folder.
        recipe: ``dlrm`` or ``two_tower``.
        config: a packaged preset of the recipe or the path of a YAML file.
        overrides: ``key.sub=value`` overrides, applied in order.
        tags: labels for the report (method, bytes target, seed, ...); they do not change the run.
    """

    name: str
    recipe: str
    config: str
    overrides: Tuple[str, ...] = ()
    tags: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"run name {self.name!r}: use letters, digits and '_ . + -' only")
        if self.recipe not in _TASKS:
            raise ValueError(f"run {self.name}: unknown recipe {self.recipe!r} (choose from {sorted(_TASKS)})")

    @property
    def key(self) -> str:
        """What identifies the run's result: recipe, config and overrides (not the name or the tags)."""
        blob = json.dumps([self.recipe, self.config, list(self.overrides)])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def argv(self, output_dir: str) -> List[str]:
        """The recipe's command line (after the program name), writing its results to ``output_dir``."""
        sets = [*self.overrides, f"output.dir={output_dir}", f"output.run_name={self.name}"]
        return ["--config", self.config, "--set", *sets]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "recipe": self.recipe,
            "config": self.config,
            "overrides": list(self.overrides),
            "tags": dict(self.tags),
        }


_TASKS = {
    "dlrm": "torchrec_memcom.recipes.dlrm:DLRMTask",
    "two_tower": "torchrec_memcom.recipes.two_tower:TwoTowerTask",
}


@dataclass
class Record:
    """A finished run: ``status`` ``ok`` (``result`` holds the compact results) or ``failed`` (``error``)."""

    run: Run
    status: str
    result: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    seconds: float = 0.0
    cached: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {
            "key": self.run.key,
            "run": self.run.to_dict(),
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "seconds": self.seconds,
        }


def compact(results: Mapping[str, Any]) -> Dict[str, Any]:
    """The parts of a recipe's ``results.json`` a sweep reports: metrics, evaluations, early stopping, bytes, memory,
    speed and the config (the per-step losses and the sharding plan are left out)."""
    train = dict(results.get("train") or {})
    losses = train.pop("losses", None) or []
    train["last_loss"] = losses[-1][1] if losses else None
    keep = ("status", "run_name", "recipe", "device", "embedding_bytes", "stock_embedding_bytes", "compression")
    out = {k: results.get(k) for k in keep}
    out.update(
        final=results.get("final"),
        evals=results.get("evals"),
        early_stopping=results.get("early_stopping"),
        memory=results.get("memory"),
        train=train,
        lma_signature_coverage=results.get("lma_signature_coverage"),
        config=results.get("config"),
    )
    return out


def _task(recipe: str) -> Any:
    import importlib

    module, cls = _TASKS[recipe].split(":")
    return getattr(importlib.import_module(module), cls)


def execute(run: Run, out_dir: str, log_path: Optional[str] = None) -> Record:
    """Runs ``run`` in this process as rank 0 of a one-process job; its results go to ``<out_dir>/<run.name>/``.

    Config and run errors (and any other exception) become a ``failed`` record; stdout and stderr go to
    ``log_path`` when given.
    """
    from torchrec.test_utils import get_free_port

    from torchrec_memcom.recipes import runner

    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="localhost")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_restored_environ([*env, "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"]))
        os.environ.pop("TORCHELASTIC_RESTART_COUNT", None)
        if log_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
            log = stack.enter_context(open(log_path, "w", encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        for attempt in range(_PORT_ATTEMPTS):
            # a free port can be taken by another worker between the probe and the bind: then try another one
            os.environ.update(env, MASTER_PORT=str(get_free_port()))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    results = runner.main(_task(run.recipe), run.argv(os.path.join(out_dir, run.name)))
                record = Record(run, "ok", result=compact(results))
            except Exception as e:  # a failed run is a result of the sweep (e.g. a learning rate that diverges)
                traceback.print_exc()
                record = Record(run, "failed", error=f"{type(e).__name__}: {e}")
                if "address already in use" in str(e).lower() and attempt + 1 < _PORT_ATTEMPTS:
                    continue
            break
    record.seconds = time.perf_counter() - start
    return record


_PORT_ATTEMPTS = 3


@contextlib.contextmanager
def _restored_environ(keys: Sequence[str]) -> Iterator[None]:
    """Puts ``keys`` of ``os.environ`` back as they were (a run's rank variables must not leak into the caller's
    later subprocesses, which would join a stale job)."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cache_path(out_dir: str, run: Run) -> str:
    return os.path.join(out_dir, "runs", f"{run.name}.json")


def load_record(out_dir: str, run: Run) -> Optional[Record]:
    """The cached record of ``run`` in ``out_dir``, if there is one with the run's key."""
    path = _cache_path(out_dir, run)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if data.get("key") != run.key:
        return None
    return Record(run, data["status"], data.get("result"), data.get("error"), data.get("seconds", 0.0), cached=True)


def _save_record(out_dir: str, record: Record) -> None:
    path = _cache_path(out_dir, record.run)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record.to_dict(), f, indent=1, default=str)
    os.replace(tmp, path)


def _worker(conn: Connection, out_dir: str, threads: int, cpu: bool) -> None:
    """A worker process: runs the runs it is sent, one at a time, and sends back their records."""
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("torchrec").setLevel(logging.ERROR)  # the planner's notices, once per run, in every worker
    while True:
        run = conn.recv()
        if run is None:
            return
        record = execute(run, os.path.join(out_dir, "outputs"), os.path.join(out_dir, "logs", f"{run.name}.log"))
        conn.send(record)


class Pool:
    """Runs ``Run`` s in ``workers`` processes (``workers=0``: in this process), with caching and callbacks.

    Args:
        out_dir (str): the sweep's folder (``runs/`` records, ``logs/``, ``outputs/`` of the runs).
        workers (int): worker processes (0: run in this process, one at a time).
        threads (Optional[int]): torch CPU threads per worker (default: the CPUs over the workers, at least 1).
        cpu (bool): hide GPUs from the workers (CPU and gloo).
        retry_failed (bool): rerun runs whose cached record says ``failed``.
        progress (bool): a tqdm bar over the runs.
        deadline (Optional[float]): ``time.monotonic()`` after which no new run starts (runs in flight finish);
            the runs never started are left out of the results (``skipped``).
    """

    def __init__(
        self,
        out_dir: str,
        workers: int = 1,
        threads: Optional[int] = None,
        cpu: bool = False,
        retry_failed: bool = False,
        progress: bool = True,
        deadline: Optional[float] = None,
    ) -> None:
        self.out_dir = out_dir
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // max(workers, 1))
        self.cpu = cpu
        self.retry_failed = retry_failed
        self.deadline = deadline
        self.records: Dict[str, Record] = {}
        self._runs: Dict[str, Run] = {}
        self.skipped: List[Run] = []
        self._queue: List[Run] = []
        self._groups: List[Tuple[List[str], Optional[Callable[[List[Record]], None]]]] = []
        self._procs: List[Tuple[Any, Connection]] = []
        self._busy: Dict[int, Run] = {}
        self._bar = tqdm(total=0, desc="runs", unit="run", disable=not progress, smoothing=0.0)
        os.makedirs(out_dir, exist_ok=True)

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stops the workers (a run in flight is killed)."""
        for i, (proc, conn) in enumerate(self._procs):
            if proc.is_alive():
                if i in self._busy:
                    proc.kill()
                else:
                    with contextlib.suppress(OSError):
                        conn.send(None)
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._procs.clear()
        self._bar.close()

    def _spawn(self) -> Tuple[Any, Connection]:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, self.out_dir, self.threads, self.cpu), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    # -- submitting -----------------------------------------------------------------------------------------------

    def submit(self, runs: Sequence[Run], then: Optional[Callable[[List[Record]], None]] = None) -> None:
        """Queues ``runs``; ``then(records)`` is called (from ``join``) once all of them are done, and may submit
        more. Names must be unique in the pool; a run already submitted under the same name and key is shared."""
        names: List[str] = []
        for run in runs:
            known = self._runs.get(run.name)
            if known is not None and known.key != run.key:
                raise ValueError(f"run name {run.name!r} is used by two different runs")
            names.append(run.name)
            if known is not None:
                continue
            self._runs[run.name] = run
            self._bar.total += 1
            cached = load_record(self.out_dir, run)
            if cached is not None and (cached.status == "ok" or not self.retry_failed):
                self.records[run.name] = cached
                self._bar.update()
            else:
                self._queue.append(run)
        self._bar.refresh()
        self._groups.append((names, then))

    def join(self) -> Dict[str, Record]:
        """Runs everything queued (and what the callbacks add); returns every record by run name."""
        while True:
            self._fire_callbacks()
            if self.deadline is not None and time.monotonic() > self.deadline and self._queue:
                self.skipped.extend(self._queue)
                self._queue.clear()
            if not self._queue and not self._busy:
                self._fire_callbacks()
                if not self._queue:
                    return self.records
            if self.workers == 0:
                run = self._queue.pop(0)
                log = os.path.join(self.out_dir, "logs", f"{run.name}.log")
                self._finish(execute(run, os.path.join(self.out_dir, "outputs"), log))
                continue
            self._dispatch()
            self._collect()

    def _fire_callbacks(self) -> None:
        fired = True
        while fired:
            fired = False
            for i, (names, then) in enumerate(self._groups):
                if all(n in self.records for n in names):
                    del self._groups[i]
                    if then is not None:
                        then([self.records[n] for n in names])
                    fired = True
                    break
                if any(r.name in names for r in self.skipped):
                    del self._groups[i]  # never completes: a part was skipped at the deadline
                    fired = True
                    break

    def _dispatch(self) -> None:
        while len(self._procs) < self.workers:
            self._procs.append(self._spawn())
        for i, (_, conn) in enumerate(self._procs):
            if i not in self._busy and self._queue:
                run = self._queue.pop(0)
                conn.send(run)
                self._busy[i] = run

    def _collect(self) -> None:
        if not self._busy:
            return
        conns = {conn: i for i, (_, conn) in enumerate(self._procs) if i in self._busy}
        sentinels = {proc.sentinel: i for i, (proc, _) in enumerate(self._procs) if i in self._busy}
        for ready in wait([*conns, *sentinels], timeout=5.0):
            if ready in conns:
                i = conns[ready]
                try:
                    record = ready.recv()
                except (EOFError, OSError):
                    continue  # the worker died mid-send: its sentinel reports it
                self._busy.pop(i)
                self._finish(record)
            else:
                i = sentinels[ready]
                if i not in self._busy:
                    continue
                run = self._busy.pop(i)
                proc, conn = self._procs[i]
                proc.join()
                code = proc.exitcode
                self._procs[i] = self._spawn()
                self._finish(Record(run, "failed", error=f"worker process died (exit code {code})"), cache=False)

    def _finish(self, record: Record, cache: bool = True) -> None:
        if cache:
            _save_record(self.out_dir, record)
        self.records[record.run.name] = record
        self._bar.update()
        if record.status != "ok":
            self._bar.write(f"run {record.run.name} failed: {record.error}")


def run_all(runs: Sequence[Run], out_dir: str, workers: int = 1, **kwargs: Any) -> Dict[str, Record]:
    """Runs ``runs`` (cached ones skipped) in ``workers`` processes; returns their records by name."""
    with Pool(out_dir, workers=workers, **kwargs) as pool:
        pool.submit(runs)
        return pool.join()
