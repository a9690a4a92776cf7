# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Quality against embedding bytes on MovieLens-1M (and SYNTHETIC large-vocabulary data), through the packaged
recipes: the command line of ``torchrec_memcom.recipes.quality`` (see its docstring and ``recipes.frontier``).

    python scripts/bench_quality.py --prepare data                        # data/ml-1m.npz for a machine without it
    python scripts/bench_quality.py --data data/ml-1m.npz --workers 12 --protocols ctr,planted --pack $OUT
    python scripts/bench_quality.py --report outputs/quality/frontier.json  # docs/RESULTS.md + docs/quality_*.png
    python scripts/bench_quality.py --smoke --cpu --workers 2               # the CPU smoke version
"""

from torchrec_memcom.recipes.quality import main

if __name__ == "__main__":
    main()
