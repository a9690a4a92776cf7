# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A recipe process on CPU does not grow step after step: the two-tower loss with each step's detached loss kept
(what the runner does) stays flat once ``init_distributed`` ran on CPU (``pin_malloc_mmap_threshold``)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_LOOP = """
import os, sys, torch
from torchrec_memcom.recipes.training import init_distributed
from torchrec_memcom.recipes.two_tower_model import in_batch_softmax_loss

def rss_mib():
    return int(open(f"/proc/{os.getpid()}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

if sys.argv[1] == "recipe":
    ctx = init_distributed()
torch.manual_seed(0)
tower = torch.nn.Linear(64, 64)
kept, start = [], None
for step in range(40):
    users, items = tower(torch.randn(2048, 64)), torch.randn(2048, 64)
    ids = torch.randint(0, 3000, (2048,))
    loss, _ = in_batch_softmax_loss(users, items, ids, ids, torch.zeros(3000))
    loss.backward()
    kept.append(loss.detach())  # as the runner keeps its losses
    if step == 9:
        start = rss_mib()
print(rss_mib() - start)
"""


def _growth(mode: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("RANK", None)
    out = subprocess.run(
        [sys.executable, "-c", _LOOP, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_recipe_process_does_not_grow_per_step() -> None:
    growth = _growth("recipe")  # 30 steps of 16 MiB logits: about 500 MiB without the fix
    assert growth < 100, f"the process grew by {growth:.0f} MiB over 30 steps"
