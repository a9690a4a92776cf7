# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``ops._launch``: the cached Triton launch keys what Triton specializes on, launches a kept kernel only for its own
key, and falls back to Triton's launch for anything else; on the GPU its kernels' outputs equal the reference."""

from typing import Any, Dict, List, Tuple

import pytest
import torch

pytest.importorskip("triton")

from torchrec_memcom.hashing import BucketedHash  # noqa: E402
from torchrec_memcom.ops import _launch  # noqa: E402
from torchrec_memcom.ops._launch import FLOAT, INT, TENSOR, VALUE, key_function, kind_of  # noqa: E402

NAMES = ["x_ptr", "n", "eps", "FLAG", "BLOCK"]
KINDS = [TENSOR, INT, FLOAT, VALUE, VALUE]


def _key(*args: Any, **kwargs: Any) -> Tuple[Any, ...]:
    return key_function(NAMES, KINDS)(*args, **kwargs)[0]


def test_kinds() -> None:
    assert kind_of(torch.zeros(1), False) == TENSOR
    assert kind_of(torch.nn.Parameter(torch.zeros(1)), False) == TENSOR
    assert kind_of(3, False) == INT
    assert kind_of(True, False) == VALUE  # a bool is not an int here
    assert kind_of(0.5, False) == FLOAT
    assert kind_of(None, False) == VALUE
    assert kind_of(3, True) == VALUE  # constexprs by value


def test_key_separates_what_triton_specializes() -> None:
    base = torch.zeros(64, dtype=torch.int64)
    k = _key(base, 1000, 1e-8, FLAG=True, BLOCK=128)
    # the same key for another aligned tensor of the dtype, another float and another int of the same classes
    assert _key(torch.ones(8, dtype=torch.int64), 1003, 0.25, FLAG=True, BLOCK=128) == k
    different = [
        _key(base[1:], 1000, 1e-8, FLAG=True, BLOCK=128),  # 8-byte aligned, not 16
        _key(base.to(torch.int32), 1000, 1e-8, FLAG=True, BLOCK=128),  # dtype
        _key(base, 1, 1e-8, FLAG=True, BLOCK=128),  # Triton's constant 1
        _key(base, 1008, 1e-8, FLAG=True, BLOCK=128),  # divisible by 16
        _key(base, 2**31 + 3, 1e-8, FLAG=True, BLOCK=128),  # i64
        _key(base, 2**63 + 3, 1e-8, FLAG=True, BLOCK=128),  # u64
        _key(base, 1000, 1e-8, FLAG=False, BLOCK=128),  # constexpr values
        _key(base, 1000, 1e-8, FLAG=True, BLOCK=256),
        _key(base, 1000, 1e-8, FLAG=True, BLOCK=128, num_warps=8),  # launch options
    ]
    assert all(d != k for d in different)
    assert len(set(different)) == len(different)
    assert _key(base, -(2**31) - 3, 1e-8, FLAG=True, BLOCK=128) == different[4]  # i64 too
    assert base[2:].data_ptr() % 16 == 0 and _key(base[2:], 1000, 1e-8, FLAG=True, BLOCK=128) == k


def test_key_values_in_parameter_order() -> None:
    x = torch.zeros(4)
    _, values = key_function(NAMES, KINDS)(x, 5, 0.5, BLOCK=64, FLAG=False)
    assert values[0] is x and values[1:] == (5, 0.5, False, 64)


def test_key_refuses_other_kinds() -> None:
    f = key_function(NAMES, KINDS)
    x = torch.zeros(4)
    bad = [
        lambda: f(5, 5, 0.5, FLAG=True, BLOCK=1),  # an int for a tensor
        lambda: f(x, x, 0.5, FLAG=True, BLOCK=1),  # a tensor for an int
        lambda: f(x, True, 0.5, FLAG=True, BLOCK=1),  # a bool for an int
        lambda: f(x, 5, 1, FLAG=True, BLOCK=1),  # an int for a float
        lambda: f(x, 5, 0.5, FLAG=x, BLOCK=1),  # a tensor where values are keyed
        lambda: f(x, 5, 0.5, FLAG=True),  # missing
    ]
    for call in bad:
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError, match="identifiers"):
        key_function(["a", "a"], [INT, INT])
    with pytest.raises(ValueError, match="_lk_"):
        key_function(["_lk_key"], [INT])


class _Param:
    def __init__(self, name: str, constexpr: bool) -> None:
        self.name, self.is_constexpr = name, constexpr


class _Compiled:
    def __init__(self, calls: List[Any]) -> None:
        self.calls = calls

    def __getitem__(self, grid: Tuple[int, ...]) -> Any:
        return lambda *values: self.calls.append(("kept", grid, values))


class _FakeJit:
    """Records how it is launched, as a ``@triton.jit`` function whose launch returns its compiled kernel."""

    def __init__(self) -> None:
        self.params = [_Param(n, n.isupper()) for n in NAMES]
        self.calls: List[Any] = []

    def __getitem__(self, grid: Tuple[int, ...]) -> Any:
        def run(*args: Any, **kwargs: Dict[str, Any]) -> _Compiled:
            self.calls.append(("triton", grid, args, kwargs))
            return _Compiled(self.calls)

        return run


def test_launch_keeps_a_kernel_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_launch, "cached_launch_enabled", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    fn = _FakeJit()
    x = torch.zeros(64, dtype=torch.int64)
    _launch.launch(fn, (3,), x, 100, 0.5, FLAG=True, BLOCK=128)
    _launch.launch(fn, (4, 2), x, 101, 0.7, FLAG=True, BLOCK=128)  # same key: the kept kernel, every value in order
    _launch.launch(fn, (5,), x[1:], 101, 0.7, FLAG=True, BLOCK=128)  # misaligned: Triton again
    _launch.launch(fn, (5,), x, 101, 0.7, BLOCK=128)  # a missing argument: Triton binds it
    _launch.launch(fn, (5,), x, True, 0.7, FLAG=True, BLOCK=128)  # another kind: Triton's launch
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    _launch.launch(fn, (6,), x, 100, 0.5, FLAG=True, BLOCK=128)  # another device: Triton's launch
    kinds = [c[0] for c in fn.calls]
    assert kinds == ["triton", "kept", "triton", "triton", "triton", "triton"]
    assert fn.calls[1] == ("kept", (4, 2, 1), (x, 101, 0.7, True, 128))
    assert len(_launch._LAUNCHERS[fn].kernels) == 3  # aligned, misaligned, device 1


def test_launch_without_cache_is_tritons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_launch, "cached_launch_enabled", lambda: False)
    fn = _FakeJit()
    x = torch.zeros(4)
    for _ in range(2):
        _launch.launch(fn, (1,), x, 3, 0.5, FLAG=True, BLOCK=8)
    assert [c[0] for c in fn.calls] == ["triton", "triton"]
    assert fn not in _launch._LAUNCHERS


def test_launch_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, interpreted, want in [("cached", "0", True), ("triton", "0", False), ("cached", "1", False)]:
        monkeypatch.setenv(_launch.LAUNCH_ENV, value)
        monkeypatch.setenv("TRITON_INTERPRET", interpreted)
        _launch.cached_launch_enabled.cache_clear()
        assert _launch.cached_launch_enabled() is (want and torch.version.hip is None)
    monkeypatch.setenv(_launch.LAUNCH_ENV, "fast")
    _launch.cached_launch_enabled.cache_clear()
    with pytest.raises(ValueError, match="TORCHREC_MEMCOM_TRITON_LAUNCH"):
        _launch.cached_launch_enabled()
    _launch.cached_launch_enabled.cache_clear()


@pytest.mark.gpu
def test_cached_launch_equals_reference_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real kernel through the cached launch, with arguments that change Triton's specialization from call to call
    (misaligned views, int32 / int64 ids, sizes 1, 16 and 1000): each output equals the PyTorch definition."""
    from torchrec_memcom.ops import hash_ids
    from torchrec_memcom.ops._triton import _hash_kernel

    monkeypatch.delenv(_launch.LAUNCH_ENV, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _launch.cached_launch_enabled.cache_clear()
    assert _launch.cached_launch_enabled()
    h = BucketedHash(num_embeddings=100_000, num_rows=1_000, num_buckets=4)
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 100_000, (2_000,), generator=g)
    for _ in range(2):  # the second round launches kept kernels
        for n in (1, 16, 1000, 17):
            for dtype in (torch.int64, torch.int32):
                for offset in (0, 1):
                    ids = base.to(dtype).cuda()[offset : offset + n]
                    s_out = torch.empty(n + 1, dtype=torch.int64, device="cuda")[offset : offset + n]
                    s, r = hash_ids(ids, h, scrambled_out=s_out)
                    want_s = h.scramble(ids.cpu().to(torch.int64))
                    torch.testing.assert_close(s.cpu(), want_s, rtol=0, atol=0)
                    torch.testing.assert_close(r.cpu(), h.rows_of_scrambled(want_s), rtol=0, atol=0)
    assert len(_launch._LAUNCHERS[_hash_kernel].kernels) >= 8
    _launch.cached_launch_enabled.cache_clear()
