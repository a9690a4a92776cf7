# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Quality against embedding bytes on MovieLens-1M (and SYNTHETIC large-vocabulary data), through the packaged
recipes: the command line of ``torchrec_memcom.recipes.quality`` (see its docstring and ``recipes.frontier``).

    python scripts/bench_quality.py --prepare outputs/data                # outputs/data/ml-1m.npz (never commit it)
    python scripts/bench_quality.py --data outputs/data/ml-1m.npz --workers 12 --deadline 400 --pack $OUT
    python scripts/bench_quality.py --report outputs/quality/frontier.json  # docs/RESULTS.md + docs/quality_*.png
    python scripts/bench_quality.py --smoke --cpu --workers 2               # the CPU smoke version
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # a checkout that is not pip-installed (the GPU machines): import the package from here
    sys.path.insert(0, ROOT)

from torchrec_memcom.recipes.quality import main  # noqa: E402

if __name__ == "__main__":
    main()
