# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Entry point of the run comparison, which ships in the package as ``torchrec_memcom.recipes.report``.

python examples/dlrm/report.py outputs/demo/ml1m_*/results.json --out outputs/demo
"""

from torchrec_memcom.recipes.report import main

if __name__ == "__main__":
    main()
