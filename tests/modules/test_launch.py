# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``ops._launch``: kernels launched from the cache of their compiled kernels give what Triton's own launch gives,
for every dtype, constexpr and scalar value (scalars past 32 bits included), on the current stream, under CUDA graph
capture, and through Triton when a launch hook is set."""

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from tests.interpreted import run_interpreted  # noqa: E402
from torchrec_memcom.ops import _launch  # noqa: E402
from torchrec_memcom.ops._launch import unspecialized_jit  # noqa: E402


@unspecialized_jit
def _affine_kernel(x_ptr, out_ptr, n: tl.int64, a: tl.int64, c: tl.float32, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    # out = x * a + c + SHIFT (in out's dtype); a is an int64 scalar: values past 2**31 must arrive whole
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0)
    y = x.to(tl.float64) * a.to(tl.float64) + c + SHIFT
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@unspecialized_jit(num_warps=2)
def _echo_kernel(out_ptr, v: tl.int64, BLOCK: tl.constexpr):
    tl.store(out_ptr + tl.arange(0, BLOCK), tl.full((BLOCK,), v, tl.int64))


@unspecialized_jit(specialize=("x_ptr", "out_ptr", "n"))
def _scale_kernel(x_ptr, out_ptr, n: tl.int64, a: tl.float32, BLOCK: tl.constexpr):
    # out = x * a: contiguous blocks, vectorised where Triton knows the pointers 16-byte aligned (and n a multiple of
    # 16: whole vectors in or out of the mask)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask, other=0.0) * a, mask=mask)


def _affine(x: torch.Tensor, out: torch.Tensor, a: int, c: float, shift: int) -> None:
    n = x.numel()
    _affine_kernel[(triton.cdiv(n, 64),)](x, out, n, a, c, SHIFT=shift, BLOCK=64)


def _reference(x: torch.Tensor, out: torch.Tensor, a: int, c: float, shift: int) -> torch.Tensor:
    c32 = torch.tensor(c, dtype=torch.float32).double()  # the kernel receives c as float32
    return (x.double() * a + c32 + shift).to(out.dtype)


def _check_affine(device: str) -> None:
    """Every call against the reference, across dtypes, sizes, scalars (past 2**31, 1, multiples of 16), constexprs."""
    cases = [
        (torch.float32, torch.float32, 17, 3, 0.5, 0),
        (torch.int64, torch.float64, 1000, 1, -2.0, 1),  # a = 1: Triton's JIT would make it a constant
        (torch.int32, torch.int64, 64, 2**33 + 5, 0.0, 0),  # a past 32 bits
        (torch.float32, torch.float32, 300, 16, 1.25, 0),  # a multiple of 16
        (torch.int64, torch.float64, 5, 2**40, 0.0, 2),
        (torch.float32, torch.float32, 1, 7, 0.0, 0),  # n = 1
    ]
    for _ in range(2):  # the second round hits the cache for every key
        for x_dtype, out_dtype, n, a, c, shift in cases:
            x = torch.arange(n, device=device).to(x_dtype) - 3
            out = torch.full((n + 8,), -7, dtype=out_dtype, device=device)
            _affine(x, out, a, c, shift)
            want = _reference(x, out[:n], a, c, shift)
            torch.testing.assert_close(out[:n], want, rtol=0, atol=0)
            assert (out[n:] == -7).all(), "wrote past n"


def check_on_interpreter() -> None:
    _check_affine("cpu")
    _check_scale("cpu")
    out = torch.zeros(4, dtype=torch.int64)
    _echo_kernel[(1,)](out, 2**45 + 3, BLOCK=4)
    assert out.tolist() == [2**45 + 3] * 4


def test_cached_kernel_under_interpreter() -> None:
    """Under Triton's interpreter every launch goes through Triton: the same results."""
    run_interpreted("tests.modules.test_launch", "check_on_interpreter")


def test_call_shape_is_checked() -> None:
    """Constexprs must be keywords and every runtime argument positional; runtime parameters come first."""
    with pytest.raises(TypeError, match="positional runtime arguments"):
        _echo_kernel[(1,)](torch.zeros(4, dtype=torch.int64), 3, 4)
    with pytest.raises(TypeError, match="positional runtime arguments"):
        _echo_kernel[(1,)](torch.zeros(4, dtype=torch.int64), BLOCK=4)

    def bad(x_ptr, BLOCK: tl.constexpr, n: tl.int64):  # noqa: ANN202 - a kernel body is never run here
        pass

    with pytest.raises(TypeError, match="before the constexprs"):
        unspecialized_jit(bad)
    with pytest.raises(TypeError, match=r"specialize names \['BLOCK'\]"):
        unspecialized_jit(specialize=("BLOCK",))(_echo_kernel.jit.fn)
    with pytest.raises(TypeError, match=r"specialize names \['a'\], neither pointers nor integers"):
        unspecialized_jit(specialize=("n", "a"))(_scale_kernel.jit.fn)


@pytest.mark.gpu
def test_cached_kernel_matches_reference_cuda() -> None:
    _check_affine("cuda")
    assert len(_affine_kernel._compiled) == 4  # one compiled kernel per (device, dtypes, constexprs) of the cases
    assert all(k is not _launch._TRITON for k in _affine_kernel._compiled.values())  # launched from the cache


_SCALE_CASES = [(0, 0, 4096), (1, 0, 4095), (0, 3, 4096), (2, 1, 1000), (0, 0, 17), (0, 0, 1), (3, 0, 1), (1, 2, 32)]


def _check_scale(device: str) -> None:
    """Aligned and misaligned views (4, 8 and 12 bytes past 16) of both pointers, n a multiple of 16, 1 or neither,
    twice: each against x * a."""
    base, out_base = torch.randn(4100, device=device), torch.zeros(4100, device=device)
    for _ in range(2):
        for x_off, out_off, n in _SCALE_CASES:
            x, out = base[x_off : x_off + n], out_base[out_off : out_off + n]
            out_base.fill_(-7.0)
            _scale_kernel[(triton.cdiv(n, 256),)](x, out, n, 1.5, BLOCK=256)
            torch.testing.assert_close(out, x * 1.5, rtol=0, atol=0)
            assert (out_base[:out_off] == -7).all() and (out_base[out_off + n :] == -7).all(), "wrote outside out"


@pytest.mark.gpu
def test_specialized_arguments_key_on_their_class_cuda() -> None:
    """``specialize``: one compiled kernel per pattern of aligned pointers and of n's class, each specialised to
    exactly it (an aligned kernel launched on a misaligned view would do vectorised accesses at addresses they do not
    allow; one for n = 16k would drop the mask's tail)."""
    _check_scale("cuda")
    f32 = torch.float32
    # the classes written out: a float32 view at element offset o is aligned when 4 * o % 16 == 0
    want = {(o % 4 == 0, p % 4 == 0, 2 if n == 1 else int(n % 16 == 0)) for o, p, n in _SCALE_CASES}
    assert len(want) == 8
    assert all(key[1:3] == (f32, f32) for key in _scale_kernel._compiled)  # the pointers' dtypes
    got = {key[-3:]: kernel for key, kernel in _scale_kernel._compiled.items()}
    assert set(got) == {(int(x), int(out), n) for x, out, n in want}
    for (x, out, n_class), kernel in got.items():
        # Triton's IR marks an argument it may assume 16-divisible (an address: aligned) with tt.divisibility = 16;
        # n = 1 (class 2) is a constant there
        divisible = x + out + int(n_class == 1)
        assert kernel.asm["ttir"].count("tt.divisibility = 16") == divisible, kernel.asm["ttir"]


@pytest.mark.gpu
def test_scalar_pointer_argument_is_rejected_cuda() -> None:
    out = torch.zeros(4, dtype=torch.int64, device="cuda")
    with pytest.raises(TypeError, match="pointers"):
        _echo_kernel[(1,)](5, 3, BLOCK=4)
    _echo_kernel[(1,)](out, -(2**62), BLOCK=4)
    _echo_kernel[(1,)](out, 2**62 + 1, BLOCK=4)  # cached: the value still arrives as int64
    assert out.tolist() == [2**62 + 1] * 4
    (compiled,) = _echo_kernel._compiled.values()
    assert compiled.metadata.num_warps == 2  # the decorator's options reach the compile


@pytest.mark.gpu
def test_cached_kernel_on_side_stream_and_in_graph_cuda() -> None:
    """Launches go to the current stream: a side stream's work orders after its waits, and a CUDA graph captures
    them (a launch on any other stream during capture would fail)."""
    out = torch.zeros(4, dtype=torch.int64, device="cuda")
    _echo_kernel[(1,)](out, 1, BLOCK=4)  # compiled and cached
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # the side stream is busy (~25 ms); the launch below must queue behind it
        _echo_kernel[(1,)](out, 2, BLOCK=4)
    assert out.tolist() == [1] * 4  # read on the idle current stream: the launch has not run yet
    side.synchronize()
    assert out.tolist() == [2] * 4
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _echo_kernel[(1,)](out, 3, BLOCK=4)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert out.tolist() == [3] * 4


@pytest.mark.gpu
def test_launch_hook_sees_every_launch_cuda() -> None:
    """With a launch hook set (Triton's profiler), launches go through Triton, which calls it."""
    knobs = pytest.importorskip("triton.knobs")
    out = torch.zeros(4, dtype=torch.int64, device="cuda")
    _echo_kernel[(1,)](out, 1, BLOCK=4)
    seen = []

    def hook(metadata: object) -> None:
        seen.append(metadata)

    chain = knobs.runtime.launch_enter_hook  # Triton 3.4+: a HookChain, active while it holds calls
    chain.add(hook)
    try:
        _echo_kernel[(1,)](out, 4, BLOCK=4)
    finally:
        chain.remove(hook)
    _echo_kernel[(1,)](out, 5, BLOCK=4)  # the cached launch again: the hook is not called
    torch.cuda.synchronize()
    assert len(seen) == 1 and out.tolist() == [5] * 4


def test_launch_path_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``TORCHREC_MEMCOM_TRITON_LAUNCH``: ``cached`` (default) or ``triton``; anything else is an error naming it."""
    for value, triton_only in (("cached", False), ("triton", True)):
        monkeypatch.setenv("TORCHREC_MEMCOM_TRITON_LAUNCH", value)
        _launch._triton_path_only.cache_clear()
        assert _launch._triton_path_only() is triton_only
    monkeypatch.setenv("TORCHREC_MEMCOM_TRITON_LAUNCH", "fast")
    _launch._triton_path_only.cache_clear()
    with pytest.raises(ValueError, match="TORCHREC_MEMCOM_TRITON_LAUNCH='fast'"):
        _launch._triton_path_only()
    monkeypatch.delenv("TORCHREC_MEMCOM_TRITON_LAUNCH")
    _launch._triton_path_only.cache_clear()
    assert _launch._triton_path_only() is False


@pytest.mark.gpu
def test_triton_path_variable_bypasses_the_cache_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    @unspecialized_jit
    def _fill_kernel(out_ptr, v: tl.int64, BLOCK: tl.constexpr):
        tl.store(out_ptr + tl.arange(0, BLOCK), tl.full((BLOCK,), v, tl.int64))

    out = torch.zeros(4, dtype=torch.int64, device="cuda")
    monkeypatch.setenv("TORCHREC_MEMCOM_TRITON_LAUNCH", "triton")
    _launch._triton_path_only.cache_clear()
    try:
        for v in (3, 2**40):
            _fill_kernel[(1,)](out, v, BLOCK=4)
            assert out.tolist() == [v] * 4
        assert not _fill_kernel._compiled  # every launch went through Triton
    finally:
        monkeypatch.delenv("TORCHREC_MEMCOM_TRITON_LAUNCH")
        _launch._triton_path_only.cache_clear()
    _fill_kernel[(1,)](out, 5, BLOCK=4)
    assert out.tolist() == [5] * 4 and len(_fill_kernel._compiled) == 1
