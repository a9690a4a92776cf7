# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""TorchX components of the example recipes: one per preset config, plus ``dlrm`` / ``two_tower`` for any config.

Registered under the ``torchx.components`` entry point as ``memcom`` (with TorchX's builtins kept), so from the
repository root (the recipes run as ``python -m examples.dlrm.train`` and the configs are relative paths)::

    torchx run -s local_cwd memcom.dlrm_ml1m_memcom
    torchx run -s local_cwd memcom.dlrm_ml1m_lma -j 1x2 -- --set train.epochs=3
    torchx run -s local_cwd memcom.dlrm --config examples/dlrm/configs/criteo_memcom.yaml -j 1x8 --gpu 8 \\
        -- --set data.directory=/data/criteo_npy
    torchx run -s local_cwd torchrec_memcom/recipes/components.py:dlrm_ml1m_stock   # without the entry point
    torchx run -s local_cwd memcom.two_tower_ml1m_memcom -j 1x2 -- --set train.epochs=2

Every component wraps ``torchx.components.dist.ddp`` (torchrun: ``-j {nnodes}x{nproc_per_node}``, one process per
GPU with NCCL when ``--gpu`` > 0, else gloo on CPU); ``image`` and ``h`` pass through unchanged. Arguments after
``--`` go to the recipe (``--set key.sub=value``, ``--resume``). Name the component explicitly when passing them:
TorchX drops a ``--`` that follows no component.
"""

from typing import Dict, Optional

import torchx
from torchx import specs

from torchrec_memcom.recipes import launch


def dlrm(
    *script_args: str,
    config: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM (examples/dlrm/train.py) with any config.

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        config: recipe YAML, relative to the repository root (examples/dlrm/configs/*.yaml)
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        config,
        script_args,
        name="dlrm",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_ml1m_stock(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: MovieLens-1M CTR, stock tables (baseline) (examples/dlrm/configs/ml1m_stock.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("ml1m_stock"),
        script_args,
        name="dlrm_ml1m_stock",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_ml1m_hash(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: MovieLens-1M CTR, hashing trick 16x on user/movie/zip (examples/dlrm/configs/ml1m_hash.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("ml1m_hash"),
        script_args,
        name="dlrm_ml1m_hash",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_ml1m_qr(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: MovieLens-1M CTR, QR 16x on user/movie/zip (examples/dlrm/configs/ml1m_qr.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("ml1m_qr"),
        script_args,
        name="dlrm_ml1m_qr",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_ml1m_memcom(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: MovieLens-1M CTR, MEmCom 16x on user/movie/zip (examples/dlrm/configs/ml1m_memcom.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("ml1m_memcom"),
        script_args,
        name="dlrm_ml1m_memcom",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_ml1m_lma(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: MovieLens-1M CTR, LMA 16x on user/movie/zip (examples/dlrm/configs/ml1m_lma.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("ml1m_lma"),
        script_args,
        name="dlrm_ml1m_lma",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_criteo_stock(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: Criteo, stock tables (examples/dlrm/configs/criteo_stock.yaml).

    Args:
        script_args: recipe arguments; the data: --set data.directory=/path/to/criteo_npy
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("criteo_stock"),
        script_args,
        name="dlrm_criteo_stock",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_criteo_hash(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: Criteo, hashing trick 16x on the large tables (examples/dlrm/configs/criteo_hash.yaml).

    Args:
        script_args: recipe arguments; the data: --set data.directory=/path/to/criteo_npy
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("criteo_hash"),
        script_args,
        name="dlrm_criteo_hash",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_criteo_qr(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: Criteo, QR 16x on the large tables (examples/dlrm/configs/criteo_qr.yaml).

    Args:
        script_args: recipe arguments; the data: --set data.directory=/path/to/criteo_npy
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("criteo_qr"),
        script_args,
        name="dlrm_criteo_qr",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_criteo_memcom(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: Criteo, MEmCom 16x on the large tables (examples/dlrm/configs/criteo_memcom.yaml).

    Args:
        script_args: recipe arguments; the data: --set data.directory=/path/to/criteo_npy
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("criteo_memcom"),
        script_args,
        name="dlrm_criteo_memcom",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_criteo_lma(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: Criteo, LMA 16x on the large tables (examples/dlrm/configs/criteo_lma.yaml).

    Args:
        script_args: recipe arguments; the data: --set data.directory=/path/to/criteo_npy
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("criteo_lma"),
        script_args,
        name="dlrm_criteo_lma",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_synthetic_criteo_stock(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: SYNTHETIC Criteo-layout data, stock tables (examples/dlrm/configs/synthetic_criteo_stock.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("synthetic_criteo_stock"),
        script_args,
        name="dlrm_synthetic_criteo_stock",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_synthetic_criteo_memcom(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: SYNTHETIC Criteo-layout data, MEmCom 16x (examples/dlrm/configs/synthetic_criteo_memcom.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("synthetic_criteo_memcom"),
        script_args,
        name="dlrm_synthetic_criteo_memcom",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def dlrm_synthetic_criteo_lma(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """DLRM: SYNTHETIC Criteo-layout data, LMA 16x (examples/dlrm/configs/synthetic_criteo_lma.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 or --resume
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.dlrm_app(
        launch.preset("synthetic_criteo_lma"),
        script_args,
        name="dlrm_synthetic_criteo_lma",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def two_tower(
    *script_args: str,
    config: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """Two-tower retrieval (examples/two_tower/train.py) with any config.

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=2
        config: recipe YAML, relative to the repository root (examples/two_tower/configs/*.yaml)
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.two_tower_app(
        config,
        script_args,
        name="two_tower",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def two_tower_ml1m_stock(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """Two-tower: MovieLens-1M ranking, stock tables (baseline) (examples/two_tower/configs/ml1m_stock.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=2
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.two_tower_app(
        launch.two_tower_preset("ml1m_stock"),
        script_args,
        name="two_tower_ml1m_stock",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def two_tower_ml1m_hash(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """Two-tower: MovieLens-1M ranking, hashing trick 16x on user/movie/zip (examples/two_tower/configs/ml1m_hash.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=2
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.two_tower_app(
        launch.two_tower_preset("ml1m_hash"),
        script_args,
        name="two_tower_ml1m_hash",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def two_tower_ml1m_qr(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """Two-tower: MovieLens-1M ranking, QR 16x on user/movie/zip (examples/two_tower/configs/ml1m_qr.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=2
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.two_tower_app(
        launch.two_tower_preset("ml1m_qr"),
        script_args,
        name="two_tower_ml1m_qr",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def two_tower_ml1m_memcom(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """Two-tower: MovieLens-1M ranking, MEmCom 16x on user/movie/zip (examples/two_tower/configs/ml1m_memcom.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=2
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.two_tower_app(
        launch.two_tower_preset("ml1m_memcom"),
        script_args,
        name="two_tower_ml1m_memcom",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )


def two_tower_ml1m_lma(
    *script_args: str,
    image: str = torchx.IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
) -> specs.AppDef:
    """Two-tower: MovieLens-1M ranking, LMA 16x on user/movie/zip (examples/two_tower/configs/ml1m_lma.yaml).

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=2
        image: container image (ignored by local_cwd, which runs in the current directory)
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host)
        cpu: cpus per replica
        gpu: gpus per replica (one process per GPU, NCCL)
        memMB: memory per replica in MB
        h: a registered named resource (takes precedence over cpu, gpu and memMB)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_retries: scheduler retries
    """
    return launch.two_tower_app(
        launch.two_tower_preset("ml1m_lma"),
        script_args,
        name="two_tower_ml1m_lma",
        image=image,
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        h=h,
        env=env,
        max_retries=max_retries,
    )
