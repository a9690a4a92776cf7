# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""criteo_npy_datapipe over tiny npy files in TorchRec's day_X and train_* layouts."""

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from torchrec_memcom.datasets import criteo_npy_datapipe

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray]


def _save(d: Path, prefix: str, rows: int, seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    dense = rng.random((rows, 13), dtype=np.float32)
    sparse = rng.integers(0, 1000, (rows, 26), dtype=np.int64)
    labels = rng.integers(0, 2, (rows, 1), dtype=np.int32)
    for kind, arr in (("dense", dense), ("sparse", sparse), ("labels", labels)):
        np.save(d / f"{prefix}_{kind}.npy", arr)
    return dense, sparse, labels


def _collect(pipe: object) -> Dict[str, torch.Tensor]:
    batches = list(pipe)  # type: ignore[call-overload]  # an IterableDataset of Batch
    return {
        "dense": torch.cat([b.dense_features for b in batches]),
        "ids": torch.cat([b.sparse_features.values().view(26, -1).T for b in batches]),
        "labels": torch.cat([b.labels for b in batches]),
        "sizes": torch.tensor([len(b.labels) for b in batches]),
    }


def test_day_layout(tmp_path: Path) -> None:
    days = [_save(tmp_path, f"day_{i}", 10, seed=i) for i in range(3)]
    train = _collect(criteo_npy_datapipe(str(tmp_path), "train", 4))
    assert torch.equal(train["dense"], torch.from_numpy(np.concatenate([days[0][0], days[1][0]])))
    assert torch.equal(train["ids"], torch.from_numpy(np.concatenate([days[0][1], days[1][1]])))
    assert train["sizes"].tolist() == [4, 4, 4, 4, 4]
    val = _collect(criteo_npy_datapipe(str(tmp_path), "val", 4, num_embeddings_per_feature=[7] * 26))
    test = _collect(criteo_npy_datapipe(str(tmp_path), "test", 4))
    assert torch.equal(val["ids"], torch.from_numpy(days[2][1][:5] % 7))  # first half of the last day, hashed
    assert torch.equal(test["labels"], torch.from_numpy(days[2][2][5:, 0]))


def test_train_layout_and_sharding(tmp_path: Path) -> None:
    dense, sparse, labels = _save(tmp_path, "train", 20, seed=5)
    ranks = [
        _collect(criteo_npy_datapipe(str(tmp_path), "train", 3, rank=r, world_size=2, drop_last=True)) for r in range(2)
    ]
    assert ranks[0]["sizes"].tolist() == ranks[1]["sizes"].tolist() == [3, 3, 3]
    seen = torch.cat([r["ids"] for r in ranks])
    assert len({tuple(row) for row in seen.tolist()}) == 18
    assert {tuple(row) for row in seen.tolist()} <= {tuple(row) for row in sparse.tolist()}
    with pytest.raises(FileNotFoundError):
        criteo_npy_datapipe(str(tmp_path), "val", 3)
    _save(tmp_path, "val", 6, seed=6)
    assert _collect(criteo_npy_datapipe(str(tmp_path), "val", 3))["sizes"].tolist() == [3, 3]  # whole file


def test_explicit_prefixes_and_errors(tmp_path: Path) -> None:
    a = _save(tmp_path, "part_a", 4, seed=1)
    got = _collect(criteo_npy_datapipe(str(tmp_path), "test", 8, prefixes=["part_a"]))
    assert torch.equal(got["dense"], torch.from_numpy(a[0]))
    with pytest.raises(FileNotFoundError):
        criteo_npy_datapipe(str(tmp_path), "train", 8, prefixes=["nope"])
    with pytest.raises(ValueError):
        criteo_npy_datapipe(str(tmp_path), "dev", 8)


def test_recipe_npy_batches_carry_their_length_per_key(tmp_path: Path) -> None:
    from torchrec_memcom.recipes.data import CriteoNpyData

    _, sparse, _ = _save(tmp_path, "train", 10, seed=3)
    epochs = CriteoNpyData(directory=str(tmp_path)).batches("train", 4, rank=0, world_size=1, train=True, seed=0)
    batches = list(epochs)
    assert len(epochs) == len(batches) == 2  # drop_last: 10 rows, batches of 4
    for b in batches:
        kjt = b.sparse_features
        assert kjt.length_per_key_or_none() == [4] * 26 == kjt.lengths().view(26, -1).sum(1).tolist()
    assert torch.equal(
        torch.cat([b.sparse_features.values().view(26, -1).T for b in batches]), torch.from_numpy(sparse[:8])
    )
