# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from torchrec_memcom.benchmarks.speed_chart import bars, draw_run, main, plot, run_title, text_table


def _row(method: str, repeats: List[float], status: str = "ok", model: str = "ebc") -> Dict[str, Any]:
    step = sum(repeats) / len(repeats) if repeats else float("inf")  # the median of at most two repeats
    return {
        "model": model,
        "method": method,
        "label": f"{method} label",
        "status": status,
        "samples_per_s": 1000.0 / step,
        "step_ms_repeat_medians": repeats,
    }


def _payload(layout: str = "big", model: str = "ebc", world: int = 1, **config: Any) -> Dict[str, Any]:
    rows = [
        _row("stock", [2.0, 2.4], model=model),
        _row("memcom", [2.5, 2.4], model=model),
        _row("lma", [], status="does not fit", model=model),
        _row("qr", [1.6, 2.0], model=model),
    ]
    for r in rows[1:]:  # what report.add_ratios records
        r["throughput_vs_stock"] = r["samples_per_s"] / rows[0]["samples_per_s"]
    cfg = {"layout": layout, "model": model, "pipeline": False, "cuda_graph": False, "allow_tf32": False, **config}
    return {"config": cfg, "environment": {"world_size": world}, "results": rows}


def test_bars_are_each_methods_ratio_with_the_spread_over_paired_repeats_and_its_goal() -> None:
    out = bars(_payload())
    assert [b.method for b in out] == ["memcom", "qr"]  # stock is the reference; a method that did not run is left out
    memcom, qr = out
    assert memcom.ratio == pytest.approx(2.2 / 2.45)  # medians of two repeats: their means
    assert (memcom.low, memcom.high) == pytest.approx((2.0 / 2.5, 2.4 / 2.4))  # stock's repeat i over memcom's
    assert (qr.low, qr.high) == pytest.approx((2.4 / 2.0, 2.0 / 1.6))
    assert (memcom.goal, qr.goal) == (0.9, 0.85)  # issue 9's 1-GPU goals for `big`
    assert memcom.run == qr.run == "EBC big, 1 GPU, eager"


def test_goals_follow_the_layout_the_world_and_the_scale() -> None:
    assert [b.goal for b in bars(_payload("criteo", "dlrm", pipeline=True))] == [1.0, 0.95]
    assert [b.goal for b in bars(_payload(world=2))] == [1.0, 1.0]  # every method >= 1.0x on 2 GPUs
    assert [b.goal for b in bars(_payload("criteo", "dlrm", world=2))] == [1.0, 0.95]  # the DLRM's hold on 2 GPUs too
    assert [b.goal for b in bars(_payload(scale=4.0))] == [None, None]
    assert [b.goal for b in bars(_payload("terabyte"))] == [None, None]


def test_titles_name_how_each_run_trained() -> None:
    assert run_title(_payload("criteo", "dlrm", pipeline=True)) == "DLRM criteo, 1 GPU, pipelined"
    graph_tf32 = _payload("criteo", "dlrm", world=2, pipeline=True, cuda_graph=True, allow_tf32=True)
    assert run_title(graph_tf32) == "DLRM criteo, 2 GPUs, compressed replayed, TF32"


def test_a_single_repeat_has_no_spread() -> None:
    payload = _payload()
    for r in payload["results"]:
        r["step_ms_repeat_medians"] = r["step_ms_repeat_medians"][:1]
        r["samples_per_s"] = 1000.0 / r["step_ms_repeat_medians"][0] if r["step_ms_repeat_medians"] else 0.0
        r["throughput_vs_stock"] = r["samples_per_s"] / payload["results"][0]["samples_per_s"]
    memcom = bars(payload)[0]
    assert memcom.low == memcom.high == pytest.approx(memcom.ratio) == pytest.approx(2.0 / 2.5)


def test_table_says_which_goals_are_met() -> None:
    text = text_table(bars(_payload()))
    assert "memcom label" in text and "0.90x missed" in text and "0.85x met" in text


def test_main_writes_the_chart_and_the_bars(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    runs = []
    for i, payload in enumerate((_payload(), _payload("criteo", "dlrm", cuda_graph=True))):
        runs.append(tmp_path / f"run{i}.json")
        runs[-1].write_text(json.dumps(payload))
    png, bars_json = tmp_path / "speed.png", tmp_path / "bars.json"
    noted = f"{runs[0]}=slower host"  # the same run again, as a group of its own
    main([str(r) for r in runs] + [noted, "--out", str(png), "--json", str(bars_json)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads(bars_json.read_text())
    assert [(b["run"], b["method"]) for b in written] == [
        ("EBC big, 1 GPU, eager", "memcom"),
        ("EBC big, 1 GPU, eager", "qr"),
        ("DLRM criteo, 1 GPU, compressed replayed", "memcom"),
        ("DLRM criteo, 1 GPU, compressed replayed", "qr"),
        ("EBC big, 1 GPU, eager, slower host", "memcom"),
        ("EBC big, 1 GPU, eager, slower host", "qr"),
    ]
    assert "DLRM criteo, 1 GPU, compressed replayed" in capsys.readouterr().out


def test_plot_of_no_bars_still_draws(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot([], str(tmp_path / "empty.png"))
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_draw_run_says_how_to_draw_later_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it raises ImportError, as on the GPU machines
    said = draw_run(_payload(), str(tmp_path / "run.png"), "out/run.json")
    assert said.endswith("python -m torchrec_memcom.benchmarks.speed_chart out/run.json")
    assert not (tmp_path / "run.png").exists()


def test_draw_run_titles_the_chart_with_the_run_and_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchrec_memcom.benchmarks.speed_chart as chart

    pytest.importorskip("matplotlib")
    drawn = {}
    monkeypatch.setattr(chart, "plot", lambda b, path, title: drawn.update(bars=b, path=path, title=title))
    payload = _payload()
    payload["environment"]["revision"] = "abc1234"
    assert draw_run(payload, "x.png") == "wrote x.png"
    assert drawn["title"] == "EBC big, 1 GPU, eager: throughput vs stock TorchRec (code abc1234)"
    assert [b.method for b in drawn["bars"]] == ["memcom", "qr"]
