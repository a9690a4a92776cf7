#!/usr/bin/env bash
# Serve it small: MovieLens-1M DLRM (CTR) and two-tower (ranking) models with stock tables, MEmCom 16x and LMA 16x,
# exported to single-file artifacts (torch.export, and AOTInductor packages when a C++ compiler is present), then one
# table per model: artifact and embedding bytes, test AUC / nDCG@10 of the loaded artifact, CPU latency per request
# at batch 1, 64 and 512 (median / p99, one thread and all threads), and the issue's goals checked.
#
# Usage: ./scripts/export_demo.sh [demo options...]     e.g. ./scripts/export_demo.sh --requests 400
#        EXPORT_DEMO_AOTI=0 ./scripts/export_demo.sh    (skip the AOTInductor packages: about 3 minutes less)
# Options: python -m torchrec_memcom.inference.demo --help (--out, --epochs, --two-tower-steps, --retrain, ...).
# The first run trains six models with the shipped recipes (DLRM 1 epoch, two-tower 100 steps; a few minutes on a
# 2-core CPU); later runs reuse their checkpoints under outputs/export_demo/. Writes outputs/export_demo/export.json
# and the artifacts under outputs/export_demo/artifacts/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

./scripts/setup.sh
if [ -n "${VIRTUAL_ENV:-}" ]; then py="$VIRTUAL_ENV/bin/python"; else py="$root/.venv/bin/python"; fi
aoti=()
if [ "${EXPORT_DEMO_AOTI:-1}" = "1" ]; then
  if command -v c++ > /dev/null; then aoti=(--aoti); else echo "export_demo: no C++ compiler, skipping AOTInductor"; fi
fi
export PYTHONWARNINGS=ignore  # TorchRec / FBGEMM deprecation notices
exec "$py" -m torchrec_memcom.inference.demo "${aoti[@]}" "$@"
