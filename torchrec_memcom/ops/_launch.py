# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Launching this package's Triton kernels with less host time (imported only where Triton is).

``kernel[grid](*args)`` runs Triton's binder (a specialization of every argument), builds its cache key and checks the
kernel's globals before the launch itself: inside a `big` step on an H200 that Python took 0.07 ms of a 0.13 ms
launch, and a MEmCom step launches three kernels (docs/PERFORMANCE.md, twenty-fourth session). ``launch`` keeps the
compiled kernel under a key of its own (``key_function``), a refinement of what Triton's CUDA backend specializes on,
so the kernel it keeps for a key is the one Triton would launch for every call with that key. A key's first call goes
through ``kernel[grid]`` (which compiles, or finds its kernel) and keeps the kernel it returns; later calls launch it
through ``CompiledKernel[grid]``. Under Triton's interpreter, on ROCm, or with ``TORCHREC_MEMCOM_TRITON_LAUNCH=triton``
every call goes through ``kernel[grid]``; so does any call whose arguments are not of the kinds of the kernel's first
call.
"""

import functools
import keyword
import os
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch

__all__ = ["LAUNCH_ENV", "cached_launch_enabled", "key_function", "launch"]

LAUNCH_ENV = "TORCHREC_MEMCOM_TRITON_LAUNCH"

TENSOR, INT, FLOAT, VALUE = "tensor", "int", "float", "value"

KeyFunction = Callable[..., Tuple[Tuple[Hashable, ...], Tuple[Any, ...]]]


@functools.cache
def cached_launch_enabled() -> bool:
    """Whether ``launch`` keeps compiled kernels: CUDA (not ROCm, whose backend also specializes on pointer ranges),
    not Triton's interpreter, and ``TORCHREC_MEMCOM_TRITON_LAUNCH`` unset or ``cached``."""
    mode = os.environ.get(LAUNCH_ENV, "cached")
    if mode not in ("cached", "triton"):
        raise ValueError(f"{LAUNCH_ENV}={mode!r}: expected 'cached' or 'triton'")
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return mode == "cached" and not interpreted and torch.version.hip is None


def kind_of(x: Any, constexpr: bool) -> str:
    """How ``key_function`` keys an argument ``x``."""
    if constexpr:
        return VALUE
    if isinstance(x, torch.Tensor):
        return TENSOR
    if type(x) is int:
        return INT
    return FLOAT if type(x) is float else VALUE


def key_function(names: Sequence[str], kinds: Sequence[str]) -> KeyFunction:
    """A function of a kernel's arguments (positional or by parameter name; launch options such as ``num_warps`` as
    further keywords) returning ``(key, values)``: the specialization key and every parameter's value in order.
    Each argument must be of its kind (a ``TypeError`` otherwise, as for a missing one):

    - ``tensor``: its dtype and whether its address is a multiple of 16 (Triton: the dtype, "D");
    - ``int``: whether it is 1, a multiple of 16, within int32, within int64 (Triton: a constant 1, "D", i32 / i64 /
      u64);
    - ``float``: nothing (Triton passes any float as fp32);
    - ``value`` (``tl.constexpr`` parameters, bools, None): its type and value.

    Generated once per kernel, as Triton's binder is, so a call runs no loop over its arguments."""
    if len(set(names)) != len(names) or not all(n.isidentifier() and not keyword.iskeyword(n) for n in names):
        raise ValueError(f"parameter names {list(names)}: expected distinct identifiers")
    if any(n.startswith("_lk_") for n in names):
        raise ValueError(f"parameter names {list(names)}: the prefix _lk_ is the key function's own")
    checks, parts = [], []
    for a, kind in zip(names, kinds):
        if kind == TENSOR:
            checks.append(f"isinstance({a}, _lk_Tensor)")
            parts.append(f"{a}.dtype, {a}.data_ptr() & 15 == 0")
        elif kind == INT:
            checks.append(f"type({a}) is int")
            parts.append(
                f"{a} == 1, {a} & 15 == 0, -2147483648 <= {a} < 2147483648, "
                f"-9223372036854775808 <= {a} < 9223372036854775808"
            )
        elif kind == FLOAT:
            checks.append(f"type({a}) is float")
        elif kind == VALUE:
            checks.append(f"not isinstance({a}, _lk_Tensor)")  # a tensor would be keyed by its id
            parts.append(f"type({a}), {a}")
        else:
            raise ValueError(f"kind {kind!r}: expected one of {(TENSOR, INT, FLOAT, VALUE)}")
    body = f"""
def _lk_key({", ".join(names)}, **_lk_options):
    if not ({" and ".join(checks) or "True"}):
        raise TypeError("an argument of another kind than the key function's")
    return ({"".join(p + ", " for p in parts)}*sorted(_lk_options.items())), ({"".join(a + ", " for a in names)})
"""
    namespace: Dict[str, Any] = {"_lk_Tensor": torch.Tensor}
    exec(body, namespace)  # noqa: S102 - source built from validated identifiers and fixed templates only
    return namespace["_lk_key"]


class _Launcher:
    """One ``@triton.jit`` function's compiled kernels by key (``key_function``) and current device."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.names: List[str] = [p.name for p in fn.params]
        self.constexpr: List[bool] = [p.is_constexpr for p in fn.params]
        if not all(isinstance(c, bool) for c in self.constexpr):
            raise TypeError(f"{fn}: its parameters' is_constexpr are not bools in this Triton")
        self.key: Optional[KeyFunction] = None
        self.kernels: Dict[Tuple[int, Tuple[Hashable, ...]], Any] = {}

    def _first_key(self, args: Sequence[Any], kwargs: Dict[str, Any]) -> KeyFunction:
        given = dict(zip(self.names, args))
        given.update({k: v for k, v in kwargs.items() if k in self.names})
        kinds = [kind_of(given.get(n), c) for n, c in zip(self.names, self.constexpr)]
        return key_function(self.names, kinds)

    def __call__(self, grid: Tuple[int, ...], args: Sequence[Any], kwargs: Dict[str, Any]) -> None:
        if self.key is None:
            self.key = self._first_key(args, kwargs)
        try:
            key, values = self.key(*args, **kwargs)
            full_key = (torch.cuda.current_device(), key)
            kernel = self.kernels.get(full_key)
        except TypeError:  # a missing (default) or unhashable argument, or one of another kind
            self.fn[grid](*args, **kwargs)
            return
        if kernel is None:
            kernel = self.fn[grid](*args, **kwargs)
            kernel = kernel.result() if hasattr(kernel, "result") else kernel  # Triton's asynchronous compile mode
            if kernel is not None and hasattr(kernel, "__getitem__"):
                self.kernels[full_key] = kernel
            return
        kernel[(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)](*values)


_LAUNCHERS: Dict[Any, Optional[_Launcher]] = {}


def launch(fn: Any, grid: Tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """``fn[grid](*args, **kwargs)`` for a ``@triton.jit`` function ``fn`` and a grid of 1-3 ints. See the module
    docstring."""
    if not cached_launch_enabled():
        fn[grid](*args, **kwargs)
        return
    if fn not in _LAUNCHERS:
        try:
            _LAUNCHERS[fn] = _Launcher(fn)
        except (AttributeError, TypeError):  # a Triton whose JITFunction looks otherwise: its own launch path
            _LAUNCHERS[fn] = None
    launcher = _LAUNCHERS[fn]
    if launcher is None:
        fn[grid](*args, **kwargs)
        return
    launcher(grid, args, kwargs)
