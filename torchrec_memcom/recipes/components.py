# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""TorchX components of the recipes: ``dlrm`` and ``two_tower``, each taking ``--config`` (a packaged preset such as
``ml1m_memcom``, or a YAML path readable where the job runs) plus recipe arguments after ``--``.

TorchX (0.7) loads its builtins (``dist.ddp``, ``utils.echo``, ...) only when no package registers components under
the ``torchx.components`` entry point, so this package registers none: it would hide the builtins of every
environment that installs it. Name a component by its file instead (TorchX's ``<file>:<function>`` form), which
works the same from an installed wheel and from a checkout. ``python -m torchrec_memcom.recipes.components`` prints
the installed file::

    C=$(python -m torchrec_memcom.recipes.components)
    torchx run -s local_cwd $C:dlrm --config ml1m_memcom -j 1x2
    torchx run -s local_cwd $C:dlrm --config ml1m_lma -j 1x2 -- --set train.epochs=3
    torchx run -s local_cwd $C:two_tower --config ml1m_memcom -j 1x2 -- --set train.epochs=2
    torchx run -s local_cwd $C:dlrm --help                                   # the arguments below
    torchx run -s slurm $C:dlrm --config criteo_memcom -j 4x8 --gpu 8 --max_restarts 3 \\
        -- --set data.directory=/data/criteo_npy checkpoint.dir=/shared/ckpt checkpoint.every_steps=1000
    torchx run -s local_cwd torchrec_memcom/recipes/components.py:dlrm ...  # from a checkout

A project that wants short names registers them itself, keeping the builtins, e.g. in its ``setup.cfg``::

    [options.entry_points]
    torchx.components =
        memcom = torchrec_memcom.recipes.components
        _builtins = torchx.components

Each component wraps ``torchx.components.dist.ddp`` (torchrun ``-j {nnodes}x{nproc_per_node}``; with ``--gpu`` one
process per GPU and NCCL, else gloo on CPU) running ``python -m torchrec_memcom.recipes.<recipe>``; ``image`` and
``h`` pass through. Resources scale with the processes per node unless given: ``cpu`` 4 and ``memMB`` 16384 per
process (an 8-GPU node: 32 CPUs, 128 GiB), or the named resource ``h``. (They are plain ``int`` s, ``-1`` meaning
"scale": TorchX 0.7 passes an ``Optional[int]`` from its command line as a string.) Fault tolerance:
``--max_restarts N`` lets torchrun restart the workers after a failure (the recipe then resumes from the newest
checkpoint by itself); ``--max_retries N`` asks the scheduler to rerun the job (the recipe gets ``--resume``). Both
need ``checkpoint.dir`` on storage every node shares, and ``checkpoint.every_steps``.
"""

import os
from typing import Dict, List, Optional

import torchx
from torchx import specs
from torchx.components import dist

__all__ = ["dlrm", "two_tower"]

_CPU_PER_PROCESS = 4
_MEM_MB_PER_PROCESS = 16384


def _recipe(
    recipe: str,
    config: str,
    script_args: List[str],
    j: str,
    gpu: int,
    cpu: int,
    memMB: int,  # noqa: N803 - TorchX's spelling
    h: Optional[str],
    image: str,
    env: Optional[Dict[str, str]],
    max_restarts: int,
    max_retries: int,
    mounts: Optional[List[str]],
) -> specs.AppDef:
    """``dist.ddp`` of ``python -m torchrec_memcom.recipes.<recipe> --config <config> [--resume] <script_args>``."""
    _, _, nproc_per_node, _ = dist.parse_nnodes(j)
    if gpu < 0 or (gpu > 0 and nproc_per_node > gpu):
        raise ValueError(f"-j {j} --gpu {gpu}: with GPUs, run at most one process per GPU (nproc_per_node <= gpu)")
    if max_restarts < 0 or max_retries < 0:
        raise ValueError(f"max_restarts and max_retries must be >= 0, got {max_restarts} and {max_retries}")
    job_env = dict(env or {})
    job_env["PET_MAX_RESTARTS"] = str(max_restarts)  # torchrun reads its flags from PET_* variables
    resume = ["--resume"] if max_retries > 0 else []  # a retried job starts over: continue from its checkpoints
    return dist.ddp(
        "--config",
        config,
        *resume,
        *script_args,
        m=f"torchrec_memcom.recipes.{recipe}",
        image=image,
        name=f"{recipe}_{config.rsplit('/', 1)[-1].removesuffix('.yaml')}",
        h=h,
        cpu=cpu if cpu > 0 else _CPU_PER_PROCESS * nproc_per_node,
        gpu=gpu,
        memMB=memMB if memMB > 0 else _MEM_MB_PER_PROCESS * nproc_per_node,
        j=j,
        env=job_env,
        max_retries=max_retries,
        mounts=mounts,
    )


def dlrm(
    *script_args: str,
    config: str = "ml1m_memcom",
    j: str = "1x2",
    gpu: int = 0,
    cpu: int = -1,
    memMB: int = -1,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    image: str = torchx.IMAGE,
    env: Optional[Dict[str, str]] = None,
    max_restarts: int = 0,
    max_retries: int = 0,
    mounts: Optional[List[str]] = None,
) -> specs.AppDef:
    """DLRM with compressed embedding tables (python -m torchrec_memcom.recipes.dlrm) on every process.

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=3 checkpoint.dir=/ckpt, or --resume
        config: a packaged preset (ml1m_{stock,hash,qr,memcom,lma}, criteo_{stock,hash,qr,memcom,lma},
            synthetic_criteo_{stock,memcom,lma}) or the path of a recipe YAML where the job runs
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host) or 4x8
        gpu: GPUs per node (one process per GPU, NCCL); 0 runs CPU processes with gloo
        cpu: CPUs per node; -1: 4 per process
        memMB: memory per node in MB; -1: 16384 per process
        h: a registered named resource (replaces cpu, gpu and memMB)
        image: container image with torchrec_memcom installed (local_cwd runs in the current environment)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_restarts: torchrun restarts after a worker fails; the recipe resumes from the newest checkpoint
        max_retries: scheduler retries of the whole job; the recipe then runs with --resume
        mounts: mounts for container schedulers, e.g. type=bind,src=/data,dst=/data
    """
    return _recipe(
        "dlrm", config, list(script_args), j, gpu, cpu, memMB, h, image, env, max_restarts, max_retries, mounts
    )


def two_tower(
    *script_args: str,
    config: str = "ml1m_memcom",
    j: str = "1x2",
    gpu: int = 0,
    cpu: int = -1,
    memMB: int = -1,  # noqa: N803 - TorchX's spelling
    h: Optional[str] = None,
    image: str = torchx.IMAGE,
    env: Optional[Dict[str, str]] = None,
    max_restarts: int = 0,
    max_retries: int = 0,
    mounts: Optional[List[str]] = None,
) -> specs.AppDef:
    """Two-tower retrieval with compressed tables (python -m torchrec_memcom.recipes.two_tower) on every process.

    Args:
        script_args: recipe arguments, e.g. --set train.epochs=2 checkpoint.dir=/ckpt, or --resume
        config: a packaged preset (ml1m_{stock,hash,qr,memcom,lma}) or the path of a recipe YAML where the job runs
        j: {nnodes}x{nproc_per_node}, e.g. 1x2 (two processes on this host) or 2x8
        gpu: GPUs per node (one process per GPU, NCCL); 0 runs CPU processes with gloo
        cpu: CPUs per node; -1: 4 per process
        memMB: memory per node in MB; -1: 16384 per process
        h: a registered named resource (replaces cpu, gpu and memMB)
        image: container image with torchrec_memcom installed (local_cwd runs in the current environment)
        env: extra environment variables, e.g. LOGLEVEL=INFO
        max_restarts: torchrun restarts after a worker fails; the recipe resumes from the newest checkpoint
        max_retries: scheduler retries of the whole job; the recipe then runs with --resume
        mounts: mounts for container schedulers, e.g. type=bind,src=/data,dst=/data
    """
    return _recipe(
        "two_tower", config, list(script_args), j, gpu, cpu, memMB, h, image, env, max_restarts, max_retries, mounts
    )


if __name__ == "__main__":  # the file to name in `torchx run <file>:dlrm`
    print(os.path.abspath(__file__))
