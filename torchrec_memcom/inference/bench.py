# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""CPU latency per request of served programs: median and p99 over a fixed list of requests, at a thread count.

``compare_latency`` times several programs on the same requests in interleaved rounds (program A's slice of
requests, then B's, then A's next slice, ...), so a machine whose load drifts during the run (a shared CI box)
slows every program alike and their ratios stay meaningful.
"""

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch

__all__ = ["Latency", "compare_latency"]


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
def compare_latency(
    programs: Mapping[str, Callable[..., Any]],
    requests: Sequence[Tuple[torch.Tensor, ...]],
    threads: int,
    rounds: int = 5,
    warmup: int = 10,
) -> Dict[str, Latency]:
    """Times ``program(*request)`` once per request for every program, with ``threads`` intra-op threads.

    Each program first runs ``warmup`` untimed requests; then the requests are cut into ``rounds`` slices and every
    program runs slice ``r`` before any runs slice ``r + 1``. The previous thread count is restored afterwards.

    Returns:
        per program, its ``Latency`` over all ``len(requests)`` timed calls.
    """
    if not requests:
        raise ValueError("compare_latency needs at least one request")
    if threads < 1 or rounds < 1:
        raise ValueError(f"threads and rounds must be >= 1, got {threads} and {rounds}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: Dict[str, List[float]] = {name: [] for name in programs}
    try:
        for fn in programs.values():
            for i in range(warmup):
                fn(*requests[i % len(requests)])
        slices = [requests[r::rounds] for r in range(rounds)]
        for part in slices:
            for name, fn in programs.items():
                for request in part:
                    start = time.perf_counter()
                    fn(*request)
                    times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    out = {}
    for name, t in times.items():
        t.sort()
        out[name] = Latency(median_us=_quantile(t, 0.5) * 1e6, p99_us=_quantile(t, 0.99) * 1e6, requests=len(t))
    return out
