# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``InputCheck`` on its own: the ranges it accepts and rejects (against the rule written out here), and on CUDA that
the deferred check waits for the statistics' copy on whichever stream produced them."""

import pytest
import torch

from torchrec_memcom.modules.input_check import InputCheck

_FEATURES = [("f", "t", 10), ("g", "u", 5)]


def _stats(f: tuple, g: tuple, min_length: int = 1) -> torch.Tensor:
    """Rows (id min, id max) per feature, then (smallest length, unused)."""
    return torch.tensor([list(f), list(g), [min_length, 0]], dtype=torch.int64)


def test_ranges_cpu() -> None:
    """Ids must lie in [0, n) per feature; a feature with no ids (min > max) passes; lengths must be >= 0."""
    check = InputCheck()
    check(_stats((0, 9), (0, 4)), _FEATURES)
    check(_stats((5, 4), (0, 4)), _FEATURES)  # f has no ids
    with pytest.raises(ValueError, match=r"table 't', feature 'f': ids must lie in \[0, 10\), got values in \[0, 10\]"):
        check(_stats((0, 10), (0, 4)), _FEATURES)
    with pytest.raises(ValueError, match=r"table 'u', feature 'g'.*\[-1, 2\]"):
        check(_stats((0, 9), (-1, 2)), _FEATURES)
    with pytest.raises(ValueError, match="lengths must be >= 0, got -2"):
        check(_stats((0, 9), (0, 4), min_length=-2), _FEATURES)


@pytest.mark.gpu
def test_deferred_check_follows_the_producing_stream_cuda() -> None:
    """Statistics written on a busy side stream are read only once that stream's copy is done: the check records its
    event on the current stream (a stream object cached per raw stream), so a bad batch queued behind 25 ms of work
    still raises at the next call, on that stream or on the default one."""
    check = InputCheck()
    side = torch.cuda.Stream()
    for stream in (side, torch.cuda.current_stream(), side):  # the cache: a second lookup of the side stream too
        check(_stats((0, 9), (0, 4)).cuda(), _FEATURES)  # a good batch: the pinned buffer holds good values
        check.flush()
        stats = _stats((0, 9), (0, 4)).cuda()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            torch.cuda._sleep(50_000_000)  # ~25 ms: the statistics become bad only after it
            stats[0, 1] = 12
            check(stats, _FEATURES)
        with pytest.raises(ValueError, match=r"feature 'f'.*got values in \[0, 12\].*previous batch"):
            check.flush()
        torch.cuda.synchronize()
