# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""CPU latency per request of a served program: median and p99 over a fixed list of requests, at a thread count."""

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence, Tuple

import torch

__all__ = ["Latency", "measure_latency"]


@dataclass
class Latency:
    """Per-request wall time in microseconds over ``requests`` timed calls."""

    median_us: float
    p99_us: float
    requests: int

    def to_dict(self) -> Dict[str, float]:
        return {"median_us": self.median_us, "p99_us": self.p99_us, "requests": self.requests}


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


@torch.no_grad()
def measure_latency(
    fn: Callable[..., Any], requests: Sequence[Tuple[torch.Tensor, ...]], threads: int, warmup: int = 10
) -> Latency:
    """Times ``fn(*request)`` once per request (after ``warmup`` untimed calls) with ``threads`` intra-op threads.

    The requests are fixed (built beforehand), so every program is timed on the same inputs; the previous thread
    count is restored afterwards.
    """
    if not requests:
        raise ValueError("measure_latency needs at least one request")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for i in range(warmup):
            fn(*requests[i % len(requests)])
        times = []
        for request in requests:
            start = time.perf_counter()
            fn(*request)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    times.sort()
    return Latency(median_us=_quantile(times, 0.5) * 1e6, p99_us=_quantile(times, 0.99) * 1e6, requests=len(times))
