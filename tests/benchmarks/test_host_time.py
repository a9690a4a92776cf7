# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``benchmarks.host_time``: each part's host time per step, measured with the clock around the real methods, and
the methods restored afterwards."""

import time
from typing import Any, Dict, Optional

import pytest
import torch

from torchrec_memcom.benchmarks.host_time import FINE_SITES, SITES, Site, host_breakdown, timed_sites
from torchrec_memcom.benchmarks.report import host_breakdown_tables


class _Base:
    def inherited(self) -> None:
        time.sleep(0.001)


class _Layer(_Base):
    def work(self) -> None:
        time.sleep(0.002)
        self.inner()

    def inner(self) -> None:
        time.sleep(0.001)

    @staticmethod
    def helper(x: int) -> int:
        return x + 1

    def never(self) -> None:
        pass


_HERE = __name__
_TOY = [
    Site("work", _HERE, "_Layer", "work"),
    Site("inner", _HERE, "_Layer", "inner", inside="work"),
    Site("inherited", _HERE, "_Layer", "inherited"),
    Site("helper", _HERE, "_Layer", "helper"),
    Site("never", _HERE, "_Layer", "never"),
    Site("missing", _HERE, "_Layer", "no_such_method"),
]


def test_every_default_site_exists() -> None:
    """A renamed method in TorchRec or here would silently drop out of the breakdown."""
    with timed_sites() as timed:
        assert timed.resolved == [s.label for s in SITES]
    with timed_sites(FINE_SITES) as timed:  # --fine-host-sites
        assert timed.resolved == [s.label for s in FINE_SITES]
    labels = {s.label for s in SITES}
    assert all(s.inside in labels for s in FINE_SITES)  # each shown under a default part of the table


def test_breakdown_times_each_part_per_step() -> None:
    layer = _Layer()

    def step() -> None:
        layer.work()  # 3 ms, 1 ms of it in inner
        layer.work()
        layer.inherited()  # 1 ms
        assert layer.helper(1) == 2
        time.sleep(0.001)  # outside every part

    out = host_breakdown(step, torch.device("cpu"), rounds=3, per_round=2, sites=_TOY)
    sites = out["sites"]
    assert out["steps"] == 6 and out["step_ms"] >= 8.0
    assert set(sites) == {"work", "inner", "inherited", "helper"}  # never ran / does not exist: left out
    assert sites["work"]["calls_per_step"] == 2 and 6.0 <= sites["work"]["ms_per_step"] < 60.0
    assert sites["inner"]["calls_per_step"] == 2 and 2.0 <= sites["inner"]["ms_per_step"] < sites["work"]["ms_per_step"]
    assert sites["inner"]["inside"] == "work" and sites["work"]["inside"] is None
    assert 1.0 <= sites["inherited"]["ms_per_step"] < 30.0 and sites["helper"]["calls_per_step"] == 1


def test_methods_are_restored_even_when_the_step_fails() -> None:
    originals = {name: _Layer.__dict__.get(name) for name in ("work", "inner", "helper")}

    def step() -> None:
        _Layer().work()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        host_breakdown(step, torch.device("cpu"), rounds=1, per_round=1, sites=_TOY)
    assert {name: _Layer.__dict__.get(name) for name in originals} == originals
    assert "inherited" not in vars(_Layer)  # the shadow of the inherited method is gone
    assert isinstance(_Layer.__dict__["helper"], staticmethod) and _Layer.helper(2) == 3


def test_breakdown_table_has_one_column_per_method() -> None:
    def row(label: str, step_ms: float, sites: dict) -> dict:
        return {"model": "ebc", "label": label, "profile": {"host_breakdown": {"step_ms": step_ms, "sites": sites}}}

    def part(ms: float, inside: Optional[str] = None) -> Dict[str, Any]:
        return {"ms_per_step": ms, "calls_per_step": 1.0, "inside": inside}

    results = [
        row("stock EBC", 1.5, {"TorchRec EBC input dist": part(0.5), "backward": part(1.0)}),
        row(
            "MEmCom 16x",
            2.75,
            {
                "TorchRec EBC input dist": part(0.5),
                "MEmCom: rows and weights after the dist": part(0.25),
                "backward": part(1.25),
                "MEmCom: weight update": part(0.375, inside="backward"),
                "MEmCom update: update launch": part(0.125, inside="MEmCom: weight update"),
                "id transform: ids per feature": part(0.0625, inside="id transform"),
                "id transform": part(0.25),
            },
        ),
        {"model": "ebc", "label": "LMA", "status": "skipped"},
    ]
    lines = host_breakdown_tables(results)
    assert lines[3] == "| part | stock EBC | MEmCom 16x |"
    assert lines[5] == "| host ms/step (median step call) | 1.500 | 2.750 |"
    # in the order of host_time.SITES (a nested part right under its own), whichever method ran it first
    assert lines[6:] == [
        "| TorchRec EBC input dist | 0.500 (1x) | 0.500 (1x) |",
        "| id transform | - | 0.250 (1x) |",
        "| &nbsp;&nbsp;id transform: ids per feature | - | 0.062 (1x) |",  # a finer site under its part
        "| MEmCom: rows and weights after the dist | - | 0.250 (1x) |",
        "| backward | 1.000 (1x) | 1.250 (1x) |",
        "| &nbsp;&nbsp;MEmCom: weight update | - | 0.375 (1x) |",
        "| &nbsp;&nbsp;MEmCom update: update launch | - | 0.125 (1x) |",
    ]
    assert host_breakdown_tables([{"model": "ebc", "label": "x", "profile": {}}]) == []
