# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The twenty-ninth session's loop-vs-step measurement (docs/PERFORMANCE.md), archived: not a shipped benchmark.

Host us per call of the id transform on ``big``'s batches (MEmCom, Hash, QR; one H200), and of its launch function
(``ops._triton.transform_segments_triton``: output allocations, grid, the cached launch), each the median of 300
calls synchronised every 20, two rounds per condition, with one of these before every call:

- ``loop``: nothing (the twenty-eighth session's loop);
- ``gpu busy``: a 2M-cycle ``torch.cuda._sleep`` (the GPU runs a kernel while the host launches; the transform's
  input check then waits for the previous batch, so the whole transform is about 1 ms);
- ``data thrash``: a pure-Python pass over a 2M-element list (evicts the host's data caches, no CUDA call);
- ``ebc fwd+bwd``: forward and backward of an unsharded TorchRec ``EmbeddingBagCollection`` (8 tables of 10k x 64,
  512 ids each): the kind of code a training step runs between two transforms.

Usage (GPU machine, the tree under test on ``PYTHONPATH``): ``python scripts/experiments/launch_gap.py memcom,hash,qr``
"""

import itertools
import statistics
import sys
import time
from typing import Any, Callable, List

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

import torchrec_memcom.ops._triton as kernels
from torchrec_memcom.benchmarks.data import make_batches
from torchrec_memcom.benchmarks.layouts import LAYOUTS, MethodOptions, embedding_module, table_configs
from torchrec_memcom.benchmarks.transform_time import _features
from torchrec_memcom.distributed.compressed import physical_index_dtype

DEVICE = torch.device("cuda")
_launch_times: List[float] = []
_launch = kernels.transform_segments_triton


def _timed_launch(*args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    out = _launch(*args, **kwargs)
    _launch_times.append(time.perf_counter() - start)
    return out


def _transform_call(method: str) -> Callable[[], Any]:
    layout = LAYOUTS["big"]
    module, _ = embedding_module(table_configs(method, layout, MethodOptions()), DEVICE)
    kjts = itertools.cycle([_features(b.sparse_features, True) for b in make_batches(layout, 4, 0, DEVICE)])
    index_dtype = physical_index_dtype(module, None)
    return lambda: module.id_transform(next(kjts), index_dtype=index_dtype)


def _conditions() -> dict:
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name=f"t{i}", embedding_dim=64, num_embeddings=10_000, feature_names=[f"f{i}"])
            for i in range(8)
        ],
        device=DEVICE,
    )
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=[f"f{i}" for i in range(8)],
        values=torch.randint(0, 10_000, (8 * 512,), device=DEVICE),
        lengths=torch.ones(8 * 512, dtype=torch.int32, device=DEVICE),
    )
    big_list = list(range(2_000_000))
    return {
        "loop": None,
        "gpu busy": lambda: torch.cuda._sleep(2_000_000),
        "data thrash": lambda: sum(big_list[::7]),
        "ebc fwd+bwd": lambda: ebc(kjt).values().sum().backward(),
    }


def main() -> None:
    kernels.transform_segments_triton = _timed_launch  # the transform calls it through the module
    conditions = _conditions()
    for method in sys.argv[1].split(","):
        call = _transform_call(method)
        for _ in range(50):
            call()
        for name, between in conditions.items():
            for round_ in range(2):
                _launch_times.clear()
                whole = []
                for i in range(300):
                    if i % 20 == 0:
                        torch.cuda.synchronize()
                    if between is not None:
                        between()
                    start = time.perf_counter()
                    call()
                    whole.append(time.perf_counter() - start)
                torch.cuda.synchronize()
                print(
                    f"{method:7s} {name:12s} round {round_}: transform {statistics.median(whole) * 1e6:6.1f} us, "
                    f"launch function {statistics.median(_launch_times) * 1e6:6.1f} us",
                    flush=True,
                )


if __name__ == "__main__":
    main()
