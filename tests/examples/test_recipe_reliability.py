# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The recipe layer never reports a wrong result silently: diverged training, late file errors, resume with another
config or batch size, damaged or half-written checkpoints, and skipped Criteo rows. Each run is the tiny DLRM of
``tests/examples/tiny.py`` as a one-process job inside this process (a few seconds each)."""

import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

import pytest
import torch
import torch.distributed.checkpoint as dcp

from tests.examples.tiny import committed, criteo_lines, criteo_tsv_config, run_in_process
from torchrec_memcom.datasets import CriteoTSVReader, InMemoryBatches
from torchrec_memcom.datasets._batching import DataError
from torchrec_memcom.distributed.compressed import ShardedCompressedEmbeddingBagCollection
from torchrec_memcom.recipes import checkpoint as recipe_checkpoint
from torchrec_memcom.recipes.checkpoint import Checkpointer, CheckpointError
from torchrec_memcom.recipes.config import ConfigError
from torchrec_memcom.recipes.runner import RecipeRunner, TrainingDiverged


def _results(out: Path) -> Dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def _losses(r: Dict[str, Any]) -> Dict[int, float]:
    return {int(s): v for s, v in r["train"]["losses"]}


def test_diverged_training_stops_naming_the_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SGD at lr 1000 (allowed: not absurd for SGD on sparse features) gives losses ~1e6, ~1e22, then nan at step 4."""
    (tmp_path / "results.json").write_text(json.dumps({"status": "ok", "final": {"auc": 0.8}}))  # an old result
    diverge = ["optimizer.dense={name: sgd, lr: 1000}", "optimizer.sparse={name: exact_sgd, lr: 1000}"]
    ckpt = [f"checkpoint.dir={tmp_path}/ckpt", "checkpoint.every_steps=2", "eval.every_steps=null"]
    with pytest.raises(TrainingDiverged, match=r"the loss is not finite at step 4 \(rank 0: nan\)"):
        run_in_process(monkeypatch, [*diverge, *ckpt, f"output.dir={tmp_path}"])
    r = _results(tmp_path)
    assert r["status"] == "failed" and "TrainingDiverged" in r["error"] and "final" not in r
    assert r["train"]["losses"][3] == [4, None]  # non-finite values are written as null (valid JSON)
    assert committed(tmp_path / "ckpt") == ["step_2"]  # step 4's model is never saved


def test_checkpoints_refuse_non_finite_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A finite loss at step N does not prove finite weights after step N's update: the checkpoint checks them
    itself (the loss check is switched off here to reach it)."""
    monkeypatch.setattr(RecipeRunner, "check_losses", lambda self: None)
    diverge = ["optimizer.dense={name: sgd, lr: 1000}", "optimizer.sparse={name: exact_sgd, lr: 1000}"]
    ckpt = [f"checkpoint.dir={tmp_path}/ckpt", "checkpoint.every_steps=6", "eval.every_steps=null"]
    with pytest.raises(TrainingDiverged, match=r"non-finite weights after step 6 \(rank 0: .*\); no checkpoint"):
        run_in_process(monkeypatch, [*diverge, *ckpt, f"output.dir={tmp_path}"])
    assert committed(tmp_path / "ckpt") == []


def test_missing_files_and_unwritable_folders_fail_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("".join(criteo_lines(300)))
    out = [f"output.dir={tmp_path}/out"]
    with pytest.raises(ConfigError, match=rf"data.test_paths\[0\]: no such file: {test}"):
        run_in_process(monkeypatch, [*criteo_tsv_config(train, test), *out])
    r = _results(tmp_path / "out")
    assert r["status"] == "failed" and r["train"]["steps"] == 0 and "test_paths" in r["error"]
    test.write_text("".join(criteo_lines(100, seed=1)))
    with pytest.raises(ConfigError, match=r"data.val_paths: no files for split 'val'"):  # periodic evaluation
        run_in_process(monkeypatch, [*criteo_tsv_config(train, test, "eval.every_steps=2"), *out])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=rf"output.dir: cannot write {blocker}/out/results.json"):
        run_in_process(monkeypatch, [f"output.dir={blocker}/out"])
    with pytest.raises(ConfigError, match=rf"checkpoint.dir: cannot write {blocker}/ckpt"):
        run_in_process(monkeypatch, [*out, f"checkpoint.dir={blocker}/ckpt"])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 4 steps with checkpoints at steps 2 and 4 (a pristine copy for each test)."""
    out = tmp_path_factory.mktemp("saved")
    with pytest.MonkeyPatch.context() as mp:
        run_in_process(mp, ["train.max_steps=4", f"checkpoint.dir={out}/ckpt", "checkpoint.every_steps=2",
                            "checkpoint.keep=null", f"output.dir={out}"])  # fmt: skip
    assert committed(out / "ckpt") == ["step_2", "step_4"]
    return out


def _copy(saved: Path, tmp_path: Path) -> Path:
    shutil.copytree(saved, tmp_path / "run")
    return tmp_path / "run"


def _resume(mp: pytest.MonkeyPatch, run: Path, *overrides: str) -> Dict[str, Any]:
    ckpt = [f"checkpoint.dir={run}/ckpt", "checkpoint.every_steps=2", "checkpoint.keep=null"]
    return run_in_process(mp, ["train.max_steps=4", *ckpt, f"output.dir={run}/resumed", *overrides], "--resume")


@pytest.mark.parametrize(
    "override, named",
    [
        ("tables.cat_0.compression=8", "tables.cat_0.compression: 4 -> 8"),
        ("tables.cat_4={type: hash, compression: 2}", "tables.cat_4.type: <unset> -> 'hash'"),
        ("optimizer.sparse.name=exact_rowwise_adagrad", "optimizer.sparse.name: 'exact_adagrad' -> 'exact_rowwise"),
        ("optimizer.dense={name: adam, lr: 0.001}", "optimizer.dense.lr: 0.05 -> 0.001; optimizer.dense.name:"),
        ("train.seed=7", "train.seed: 2026 -> 7"),
        ("data.zipf_exponent=1.2", "data.zipf_exponent: 1.05 -> 1.2"),
    ],
)
def test_resume_names_what_changed(
    monkeypatch: pytest.MonkeyPatch, saved: Path, tmp_path: Path, override: str, named: str
) -> None:
    """Before: a fingerprint mismatch without the key, or DCP's raw 'Size mismatch' / 'Missing key' traceback."""
    run = _copy(saved, tmp_path)
    with pytest.raises(ConfigError, match=r"--resume: .*step_4 was written with another config") as e:
        _resume(monkeypatch, run, override)
    assert named in str(e.value)


def test_resume_with_another_batch_size(monkeypatch: pytest.MonkeyPatch, saved: Path, tmp_path: Path) -> None:
    """Synthetic streams draw each batch from (seed, rank, batch index): another batch size means other rows."""
    run = _copy(saved, tmp_path)
    message = r"train.batch_size: .*step_4 stopped after 256 rows of epoch 0 with a global batch of 64; this dataset's"
    with pytest.raises(ConfigError, match=message + " row order depends on the batch size"):
        _resume(monkeypatch, run, "train.batch_size=32")


def test_resume_continues_at_the_same_row_with_another_batch_size(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Criteo TSV rows come in file order: 4 steps of 32 rows, then steps of 64 rows from row 128 (the old code
    skipped to batch 4 of the new size: row 256)."""
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("".join(criteo_lines(1000)))
    test.write_text("".join(criteo_lines(100, seed=1)))
    base = [*criteo_tsv_config(train, test), f"checkpoint.dir={tmp_path}/ckpt", "checkpoint.every_steps=4"]
    run_in_process(monkeypatch, [*base, "train.batch_size=32", "train.max_steps=4", f"output.dir={tmp_path}/a"])
    with pytest.raises(ConfigError, match=r"after 128 rows .* not a multiple of this run's global batch of 48"):
        run_in_process(monkeypatch, [*base, "train.batch_size=48", f"output.dir={tmp_path}/b"], "--resume")
    r = run_in_process(monkeypatch, [*base, "train.batch_size=64", "train.max_steps=6", f"output.dir={tmp_path}/c"],
                       "--resume")  # fmt: skip
    assert r["train"]["resumed_from"].endswith("step_4") and r["train"]["steps_this_run"] == 2
    assert r["train"]["data_position"] == {"epoch": 0, "samples_in_epoch": 128 + 2 * 64}
    assert r["data"]["train"]["rows_read"] >= 256  # 0-127 read and skipped, 128-255 trained, + read-ahead


def _rows(batches: Any) -> List[List[float]]:
    return [row for b in batches for row in b.dense_features.tolist()]


def test_fixed_row_order_holds_for_the_readers_that_claim_it(tmp_path: Path) -> None:
    """``Epochs.fixed_row_order``: rows [S, ...) at global batch G2 after skipping S / G2 batches are the rows that
    follow the first S rows read at global batch G1, for the Criteo TSV reader and the in-memory datasets."""
    path = tmp_path / "day.tsv"
    path.write_text("".join(criteo_lines(500)))
    sizes = [100] * 26

    def tsv(batch: int, rank: int) -> Any:
        return CriteoTSVReader(str(path), batch, sizes, rank=rank, world_size=2, drop_last=True)

    def memory(batch: int, rank: int) -> Any:
        dense = torch.arange(500, dtype=torch.float32).view(-1, 1)
        make = lambda idx: SimpleNamespace(dense_features=dense[torch.from_numpy(idx)])  # noqa: E731
        return InMemoryBatches(500, make, batch, shuffle=True, seed=3, drop_last=True, rank=rank, world_size=2)

    for source in (tsv, memory):
        whole = _interleave([_rows(source(16, r)) for r in range(2)], 16)  # global order at 32 rows per step
        first = _interleave([_rows(list(source(16, r))[:4]) for r in range(2)], 16)  # 4 steps: 128 rows
        rest = _interleave([_rows(list(source(32, r))[2:]) for r in range(2)], 32)  # resumed at 64 rows per step
        assert first + rest == whole[: len(first) + len(rest)] and len(rest) >= 300, source


def _interleave(per_rank: List[List[List[float]]], batch: int) -> List[List[float]]:
    """The global row order from each rank's rows (rank r holds rows [r * batch, (r + 1) * batch) of each step)."""
    steps = len(per_rank[0]) // batch
    return [row for s in range(steps) for rows in per_rank for row in rows[s * batch : (s + 1) * batch]]


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    monkeypatch: pytest.MonkeyPatch, saved: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = _losses(_results(saved))
    for damage in ("truncate", "garbage"):
        run = _copy(saved, tmp_path / damage)
        shard = run / "ckpt/step_4/__0_0.distcp"
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(len(data)))
        with caplog.at_level(logging.WARNING, logger="torchrec_memcom.recipes.checkpoint"):
            r = _resume(monkeypatch, run)
        expected = "has" if damage == "truncate" else "does not load"  # caught by the size record / by DCP
        assert "step_4" in caplog.text and expected in caplog.text, caplog.text
        assert r["train"]["resumed_from"].endswith("step_2")
        assert _losses(r) == {s: full[s] for s in (3, 4)}  # bitwise: the previous checkpoint is whole
        caplog.clear()


def test_half_written_checkpoints_are_never_taken(monkeypatch: pytest.MonkeyPatch, saved: Path, tmp_path: Path) -> None:
    """A save interrupted after every rank wrote its DCP files (``.metadata`` included) but before the commit record:
    the old code took any folder with ``.metadata`` as the newest checkpoint."""
    run = _copy(saved, tmp_path)
    shutil.copytree(run / "ckpt/step_4", run / "ckpt/step_6")
    (run / "ckpt/step_6/checkpoint.json").unlink()  # complete DCP data, never committed
    calls = []

    def interrupted(self: Checkpointer, tmp: str, final: str, record: Dict[str, Any]) -> None:
        calls.append(final)
        raise KeyboardInterrupt  # the process dies between the barrier and the commit

    monkeypatch.setattr(Checkpointer, "_commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _resume(monkeypatch, run, "train.max_steps=6")
    assert calls[0].endswith("step_6") and (run / "ckpt/step_6.tmp/.metadata").is_file()
    assert committed(run / "ckpt") == ["step_2", "step_4"]
    assert _results(run / "resumed")["status"] == "failed"
    monkeypatch.undo()
    r = _resume(monkeypatch, run, "train.max_steps=6")
    assert r["train"]["resumed_from"].endswith("step_4") and not (run / "ckpt/step_6.tmp").exists()
    assert committed(run / "ckpt") == ["step_2", "step_4", "step_6"]


def test_format1_checkpoints_without_memcom_tables_resume_bitwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Format 1 keyed a compressed collection's fused optimizer state by its inner collection's names when it had no
    MEmCom table (``...embedding_bags.<t>.weight``, not the model's ``..._embedding_bag_collection.embedding_bags...``):
    such a checkpoint resumes, with the same losses as the run that never stopped."""
    tables = "tables={cat_2: {type: qr, compression: 4}, cat_3: {type: hash, compression: 4}}"
    ckpt = [f"checkpoint.dir={tmp_path}/ckpt", "checkpoint.every_steps=2", "checkpoint.keep=null"]
    full = run_in_process(monkeypatch, [tables, "train.max_steps=4", f"output.dir={tmp_path}/full"])

    def format1_keys(self: ShardedCompressedEmbeddingBagCollection) -> Any:
        return self._embedding_bag_collection.fused_optimizer  # what format 1 saved for a collection without MEmCom

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ShardedCompressedEmbeddingBagCollection, "fused_optimizer", property(format1_keys))
        mp.setattr(recipe_checkpoint, "FORMAT_VERSION", 1)
        run_in_process(mp, [tables, "train.max_steps=2", *ckpt, f"output.dir={tmp_path}/old"])
    saved = dcp.FileSystemReader(str(tmp_path / "ckpt/step_2")).read_metadata().state_dict_metadata
    old = [k for k in saved if k.startswith("optimizer.state.") and ".embedding_bags." in k]
    assert old and not any("._embedding_bag_collection." in k for k in old), sorted(saved)
    resume = [tables, "train.max_steps=4", *ckpt]
    with pytest.MonkeyPatch.context() as mp:  # without the renaming, DCP refuses the old keys
        mp.setattr(recipe_checkpoint, "_format1_keys", lambda flat, path: flat)
        with pytest.raises(CheckpointError, match="step_2: rank 0: .*embedding_bags"):
            run_in_process(mp, [*resume, f"output.dir={tmp_path}/refused"], "--resume")
    r = run_in_process(monkeypatch, [*resume, f"output.dir={tmp_path}/resumed"], "--resume")
    assert r["train"]["resumed_from"].endswith("step_2")
    assert _losses(r) == {s: _losses(full)[s] for s in (3, 4)}


def test_skipped_criteo_rows_are_reported_when_max_steps_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = criteo_lines(600)
    lines[3] = lines[3].replace("\t", " ", 1)  # 39 fields
    lines[10] = "0x1f" + lines[10][1:]  # a label that int() would not take either
    lines[20] = "\t".join(lines[20].split("\t")[:-1] + ["-1f\n"])  # a signed hex id
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("".join(lines))
    test.write_text("".join(criteo_lines(100, seed=1)[:-1]) + criteo_lines(1, seed=2)[0].rstrip("\n"))
    config = criteo_tsv_config(train, test, "data.skip_bad_rows=true", "train.batch_size=32", "train.max_steps=3")
    r = run_in_process(monkeypatch, [*config, f"output.dir={tmp_path}"])
    train_stats = r["data"]["train"]
    assert train_stats["skipped_rows"] == {"field_count": 1, "label": 1, "categorical": 1}
    assert train_stats["skipped_total"] == 3 and train_stats["rows_read"] >= 96  # stopped after 3 of 18 steps
    assert r["final"]["data"]["skipped_rows"] == {"truncated_line": 1}  # the test file's cut-off last line
    assert _results(tmp_path)["data"] == r["data"]
    out = capsys.readouterr().out
    assert "[dlrm] train data: skipped 3 malformed rows (categorical 1, field_count 1, label 1)" in out
    assert "[dlrm] test data: skipped 1 malformed rows (truncated_line 1)" in out


def test_no_valid_rows_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before: 0 training steps, exit 0 and a test AUC."""
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("".join(line.replace("\t", ",") for line in criteo_lines(200)))
    test.write_text("".join(criteo_lines(100, seed=1)))
    config = criteo_tsv_config(train, test, "data.skip_bad_rows=true")
    with pytest.raises(DataError, match=r"train.tsv: no valid Criteo rows \(all 200 lines are malformed"):
        run_in_process(monkeypatch, [*config, f"output.dir={tmp_path}"])
    assert _results(tmp_path)["status"] == "failed"


def test_cuda_graph_needs_are_checked_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = "train.cuda_graph=true"
    for dense in ("adagrad", "adam"):  # adam too: the recipe builds it capturable=True
        with pytest.raises(ConfigError, match=r"needs one rank on one CUDA GPU \(this job: 1 rank\(s\) on cpu\)"):
            run_in_process(monkeypatch, [graph, "sharding={}", f"optimizer.dense.name={dense}"])


def test_allow_tf32_turns_tensorfloat32_on_and_only_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [f.allow_tf32 for f in flags]
    try:
        for f in flags:
            f.allow_tf32 = False
        short = ["train.max_steps=2", "eval.every_steps=null"]
        run_in_process(monkeypatch, [*short, f"output.dir={tmp_path / 'a'}"])
        assert [f.allow_tf32 for f in flags] == [False, False]
        results = run_in_process(monkeypatch, [*short, "train.allow_tf32=true", f"output.dir={tmp_path / 'b'}"])
        assert [f.allow_tf32 for f in flags] == [True, True]
        assert results["config"]["train"]["allow_tf32"] is True
    finally:
        for f, value in zip(flags, before):
            f.allow_tf32 = value


def test_cuda_graph_refuses_multi_hot_data_before_anything_is_built() -> None:
    from torchrec_memcom.recipes.runner import _check_cuda_graph
    from torchrec_memcom.recipes.schemas import load_recipe_config
    from torchrec_memcom.recipes.training import DistContext

    gpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0), backend="nccl")
    _check_cuda_graph(load_recipe_config("synthetic_criteo_memcom", recipe="dlrm"), gpu)  # one id per row: accepted
    cases = [("dlrm", "ml1m_memcom", "['genres']"), ("two_tower", "ml1m_history_memcom", "['history', 'genres']")]
    for recipe, preset, features in cases:
        cfg = load_recipe_config(preset, recipe=recipe)
        with pytest.raises(ConfigError, match=re.escape(f"{cfg.data.name}'s features {features} have a varying")):
            _check_cuda_graph(cfg, gpu)
