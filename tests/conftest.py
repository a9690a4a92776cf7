# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Test-session setup: tests marked ``gpu`` are skipped without CUDA."""

from typing import List

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run with -m gpu on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
