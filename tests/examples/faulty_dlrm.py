# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The DLRM recipe with two injected crashes, for ``test_dlrm_train.test_killed_ranks_restart_and_match``; run under
``torchrun --max-restarts 2`` (the recipe itself has no fault hooks: this script patches it from outside).

- First attempt: rank 0 SIGKILLs itself while saving step 6, after every rank has written its DCP files (and DCP's
  ``.metadata``) but before the commit record: ``step_6.tmp`` must never be taken as a checkpoint.
- First restart (resumes from step 4): rank 1 SIGKILLs itself at the start of its third training step (step 7),
  while rank 0 is inside the same step's collectives.
- Second restart resumes from step 6 and finishes.
"""

import os
import signal

from torchrec_memcom.recipes import checkpoint, dlrm, runner

ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
RANK = int(os.environ["RANK"])


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if ATTEMPT == 0 and RANK == 0:
    _commit = checkpoint.Checkpointer._commit

    def _commit_or_die(self: checkpoint.Checkpointer, tmp: str, final: str, record: dict) -> None:
        if record["step"] == 6:
            _die()
        _commit(self, tmp, final, record)

    checkpoint.Checkpointer._commit = _commit_or_die

if ATTEMPT == 1 and RANK == 1:

    class _DyingPipeline(runner.TrainPipelineSparseDist):
        calls = 0

        def progress(self, dataloader_iter):  # noqa: ANN001, ANN201 - TorchRec's signature
            type(self).calls += 1
            if type(self).calls == 3:  # resumed at step 4: this is step 7
                _die()
            return super().progress(dataloader_iter)

    runner.TrainPipelineSparseDist = _DyingPipeline

if __name__ == "__main__":
    dlrm.cli()
