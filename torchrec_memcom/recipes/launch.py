# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Builds the TorchX ``AppDef`` s behind ``torchrec_memcom.recipes.components`` (kept apart, because TorchX lists
every function of a components module as a component)."""

from typing import Any, Dict, Optional, Sequence

from torchx import specs
from torchx.components import dist

__all__ = [
    "DLRM_CONFIGS",
    "DLRM_MODULE",
    "TWO_TOWER_CONFIGS",
    "TWO_TOWER_MODULE",
    "dlrm_app",
    "recipe_app",
    "two_tower_app",
]

DLRM_MODULE = "examples.dlrm.train"
"""The DLRM recipe, run as ``python -m`` from the repository root."""
DLRM_CONFIGS = "examples/dlrm/configs"
TWO_TOWER_MODULE = "examples.two_tower.train"
"""The two-tower recipe, run as ``python -m`` from the repository root."""
TWO_TOWER_CONFIGS = "examples/two_tower/configs"


def recipe_app(
    module: str,
    config: str,
    script_args: Sequence[str],
    *,
    name: str,
    image: str,
    j: str,
    cpu: int,
    gpu: int,
    memMB: int,  # noqa: N803 - TorchX's spelling
    h: Optional[str],
    env: Optional[Dict[str, str]],
    max_retries: int,
) -> specs.AppDef:
    """``dist.ddp`` running ``python -m <module> --config <config> <script_args>`` on every process."""
    return dist.ddp(
        "--config",
        config,
        *script_args,
        m=module,
        image=image,
        name=name,
        h=h,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        env=dict(env or {}),
        max_retries=max_retries,
    )


def dlrm_app(config: str, script_args: Sequence[str], **kwargs: Any) -> specs.AppDef:
    """``recipe_app`` of the DLRM recipe (``python -m examples.dlrm.train``)."""
    return recipe_app(DLRM_MODULE, config, script_args, **kwargs)


def two_tower_app(config: str, script_args: Sequence[str], **kwargs: Any) -> specs.AppDef:
    """``recipe_app`` of the two-tower recipe (``python -m examples.two_tower.train``)."""
    return recipe_app(TWO_TOWER_MODULE, config, script_args, **kwargs)


def preset(name: str) -> str:
    """Config file of a DLRM preset, relative to the repository root."""
    return f"{DLRM_CONFIGS}/{name}.yaml"


def two_tower_preset(name: str) -> str:
    """Config file of a two-tower preset, relative to the repository root."""
    return f"{TWO_TOWER_CONFIGS}/{name}.yaml"
