# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Entry point of the two-tower recipe, which ships in the package as ``torchrec_memcom.recipes.two_tower`` (see its
docstring).

    python examples/two_tower/train.py --config ml1m_memcom --set train.epochs=1
    torchrun --standalone --nproc-per-node 2 examples/two_tower/train.py --config ml1m_lma
    python -m torchrec_memcom.recipes.two_tower --config ml1m_memcom  # the same, without a checkout
"""

from torchrec_memcom.recipes.two_tower import cli

if __name__ == "__main__":
    cli()
