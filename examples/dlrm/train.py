# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Entry point of the DLRM recipe, which ships in the package as ``torchrec_memcom.recipes.dlrm`` (see its docstring).

python examples/dlrm/train.py --config ml1m_memcom --set train.epochs=1
torchrun --standalone --nproc-per-node 2 examples/dlrm/train.py --config synthetic_criteo_lma
python -m torchrec_memcom.recipes.dlrm --config ml1m_memcom       # the same, without a checkout
"""

from torchrec_memcom.recipes.dlrm import cli

if __name__ == "__main__":
    cli()
