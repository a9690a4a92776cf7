# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Triton kernels launched from a cache of their compiled kernels (imported only where Triton runs).

``JITFunction.run`` binds and specialises every argument on every launch: for the id transform's 34-argument kernel
that is 35 us of host time per call on an H200's host, against 11 us for launching the compiled kernel itself
(measured, ``docs/PERFORMANCE.md``), on steps where the GPU waits for the host. ``unspecialized_jit`` compiles a
kernel whose runtime arguments Triton does not specialise, so that the compiled kernel depends only on the device,
the dtypes of its pointer arguments and its ``tl.constexpr`` values: ``CachedKernel`` keys its compiled kernels on
exactly those and launches them directly. The runtime arguments named in ``unspecialized_jit(specialize=...)`` keep
Triton's specialisation (pointers: 16-byte alignment; integers: divisibility by 16, equality to 1), and the key holds
each one's class.

``TORCHREC_MEMCOM_TRITON_LAUNCH=triton`` sends every launch through Triton's own path instead (``cached``, the default:
the cache); so does a Triton whose compiled kernels lack the launcher attributes used here (with a warning).
"""

import functools
import inspect
import os
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import triton
from triton.runtime.driver import driver

from torchrec_memcom.ops import _interpreted

__all__ = ["CachedKernel", "unspecialized_jit"]


try:
    from triton import knobs as _knobs
except ImportError:  # Triton before 3.4 keeps its launch hook on CompiledKernel
    _knobs = None


@functools.cache
def _triton_path_only() -> bool:
    """``TORCHREC_MEMCOM_TRITON_LAUNCH``: ``cached`` (default) or ``triton`` (every launch through Triton's path)."""
    value = os.environ.get("TORCHREC_MEMCOM_TRITON_LAUNCH", "cached")
    if value not in ("cached", "triton"):
        raise ValueError(f"TORCHREC_MEMCOM_TRITON_LAUNCH={value!r}: expected 'cached' or 'triton'")
    return value == "triton"


_TRITON = object()  # a key whose compiled kernel lacks the launcher attributes: launched through Triton
_LAUNCHER_ATTRIBUTES = ("run", "function", "packed_metadata")


def _launch_hooked() -> bool:
    """Whether a launch hook (Triton's profiler) wants to see launches: they then go through ``JITFunction.run``.
    (Triton 3.4+ keeps a ``HookChain``, active when it holds calls; earlier versions a function or ``None``.)"""
    hook = (
        getattr(triton.compiler.CompiledKernel, "launch_enter_hook", None)
        if _knobs is None
        else _knobs.runtime.launch_enter_hook
    )
    return bool(getattr(hook, "calls", hook is not None))


class CachedKernel:
    """``kernel[grid](*runtime_args, **constexprs)`` for a kernel of ``unspecialized_jit``.

    The first launch per key goes through Triton (which compiles); later ones launch the cached compiled kernel with
    the same arguments, skipping Triton's per-call binding. Runtime arguments are positional, every ``tl.constexpr``
    a keyword. Under Triton's interpreter, while a launch hook is set, or with ``TORCHREC_MEMCOM_TRITON_LAUNCH=triton``,
    every launch goes through Triton.
    """

    def __init__(
        self,
        jit: Any,
        names: Sequence[str],
        constexprs: Sequence[str],
        pointers: Sequence[int],
        options: Optional[Dict[str, Any]] = None,
        specialized: Sequence[int] = (),
    ) -> None:
        self.jit = jit
        self._options = dict(options or {})
        self._runtime = len(names) - len(constexprs)
        self._names = list(names)
        self._constexprs = list(constexprs)
        self._pointers = list(pointers)
        self._specialized = [(i, i in pointers) for i in specialized]
        self._compiled: Dict[Tuple[Any, ...], Any] = {}

    def __getitem__(self, grid: Tuple[int, ...]) -> Callable[..., None]:
        return lambda *args, **constexprs: self.launch(grid, args, constexprs)

    def launch(self, grid: Tuple[int, ...], args: Tuple[Any, ...], constexprs: Dict[str, Any]) -> None:
        if len(args) != self._runtime or len(constexprs) != len(self._constexprs):
            raise TypeError(
                f"{self._names}: {self._runtime} positional runtime arguments and the constexprs {self._constexprs} "
                f"as keywords expected, got {len(args)} positional and {sorted(constexprs)}"
            )
        if _interpreted() or _triton_path_only() or _launch_hooked():
            self.jit[grid](*args, **constexprs, **self._options)
            return
        try:
            values = [constexprs[name] for name in self._constexprs]
        except KeyError as e:
            raise TypeError(f"missing constexpr {e} (constexprs: {self._constexprs})") from None
        device = driver.active.get_current_device()
        try:
            key = (device, *[args[i].dtype for i in self._pointers], *values)
            if self._specialized:
                key += tuple(_specialization(args[i], pointer) for i, pointer in self._specialized)
        except AttributeError:
            bad = [self._names[i] for i in self._pointers if not isinstance(args[i], torch.Tensor)]
            raise TypeError(f"arguments {bad} are pointers (unannotated): pass tensors, or annotate scalars") from None
        kernel = self._compiled.get(key)
        if kernel is None:
            kernel = self.jit[grid](*args, **constexprs, **self._options)
            if not all(hasattr(kernel, a) for a in _LAUNCHER_ATTRIBUTES):
                warnings.warn(
                    f"Triton {triton.__version__}: compiled kernels lack {_LAUNCHER_ATTRIBUTES}; "
                    "launching through Triton",
                    stacklevel=3,
                )
                kernel = _TRITON
            self._compiled[key] = kernel
            return
        if kernel is _TRITON:
            self.jit[grid](*args, **constexprs, **self._options)
            return
        kernel.run(
            grid[0],
            grid[1] if len(grid) > 1 else 1,
            grid[2] if len(grid) > 2 else 1,
            driver.active.get_current_stream(device),
            kernel.function,
            kernel.packed_metadata,
            None,  # launch metadata and hooks: only wanted by a launch hook, which goes through Triton
            None,
            None,
            *args,
            *values,
        )


def _specialization(arg: Any, pointer: bool) -> int:
    """Triton's class of a specialised argument: a pointer 16-byte aligned (1) or not (0); an integer equal to 1 (2),
    divisible by 16 (1) or neither (0)."""
    if pointer:
        return int(arg.data_ptr() % 16 == 0)
    return 2 if arg == 1 else int(arg % 16 == 0)


def unspecialized_jit(
    fn: Optional[Callable[..., Any]] = None, *, specialize: Sequence[str] = (), **options: Any
) -> Any:
    """``@triton.jit`` (with ``options``, e.g. ``num_warps``, applied to every launch) with no runtime argument
    specialised on its value (integers: not on divisibility by 16 or equality to 1; pointers: not on alignment) but
    those named in ``specialize``, returned as a ``CachedKernel``.

    ``specialize``: Triton compiles one kernel per pattern of its arguments' classes (aligned pointers: vectorised
    loads and stores), and the cache's key holds each one's class. It pays where a kernel streams contiguous blocks
    (MEmCom's update block sums, its pointers: 183 -> 158 us per ``big`` step on an H200); the id transform's segments
    kernel ran slower with aligned pointers (40 -> 47 us), so it is per kernel, measured.

    Every scalar parameter must be annotated (``n: tl.int64``, ``eps: tl.float32``): an unannotated one is a pointer
    (a tensor's dtype is part of the key), and a Python int there would otherwise compile as i32 or i64 by value.
    """

    def wrap(f: Callable[..., Any]) -> CachedKernel:
        params = list(inspect.signature(f).parameters.values())
        constexprs = [p.name for p in params if "constexpr" in str(p.annotation)]
        runtime = [p.name for p in params if p.name not in constexprs]
        if [p.name for p in params[: len(runtime)]] != runtime:
            raise TypeError(f"{f.__name__}: runtime parameters must come before the constexprs")
        pointers = [i for i, p in enumerate(params[: len(runtime)]) if p.annotation is inspect.Parameter.empty]
        names = [p.name for p in params]
        unknown = sorted(set(specialize) - set(runtime))
        if unknown:
            raise TypeError(f"{f.__name__}: specialize names {unknown}, not runtime parameters {runtime}")
        scalars = [p for i, p in enumerate(params) if p.name in specialize and i not in pointers]
        not_int = [p.name for p in scalars if "int" not in str(p.annotation)]
        if not_int:  # Triton specialises only integers and pointers
            raise TypeError(f"{f.__name__}: specialize names {not_int}, neither pointers nor integers")
        # an argument in do_not_specialize is not specialised on alignment either (Triton's specialize_impl)
        fixed = [n for n in runtime if n not in specialize]
        jit = triton.jit(f, do_not_specialize=fixed, do_not_specialize_on_alignment=fixed)
        specialized = [runtime.index(n) for n in specialize]
        return CachedKernel(jit, names, constexprs, pointers, options, specialized)

    return wrap(fn) if fn is not None else wrap
