# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Tests of the example recipes (examples/), their configs, the TorchX components and the demo report."""
