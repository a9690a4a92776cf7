#!/usr/bin/env bash
# The project's demo: DLRM on MovieLens-1M CTR (real data) with stock tables, and four ways to spend the bytes of 16x
# compression on the large tables: stock at d = 4 (the simplest alternative), stock tables 4 wide with a learned
# projection (lowrank), MEmCom 16x and LMA 16x, each trained through TorchX on 2 local CPU processes (gloo), then a
# side-by-side table of embedding bytes, compression, test AUC, logloss and samples/s, plus
# outputs/demo/comparison.{json,png}.
#
# Usage: ./scripts/demo.sh [recipe overrides...]     e.g. ./scripts/demo.sh --set train.epochs=1
#        DEMO_RUNS="ml1m_stock ml1m_hash ml1m_qr ml1m_memcom ml1m_lma" ./scripts/demo.sh   (any DLRM presets)
# Each run is `torchx run -s local_cwd torchrec_memcom/recipes/components.py:dlrm --config <preset> -j 1x2`; its
# full log: outputs/demo/<run>.log; its JSON: outputs/demo/<run>/results.json.
# About 3-5 minutes on a 2-core CPU machine (2 epochs of ML-1M per run; presets in
# torchrec_memcom/recipes/configs/dlrm/ml1m_*.yaml).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

./scripts/setup.sh
if [ -z "${VIRTUAL_ENV:-}" ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate  # TorchX's local_cwd scheduler starts `torchrun` from PATH
fi

out=outputs/demo
components=torchrec_memcom/recipes/components.py  # TorchX component by file (the package registers no entry point)
mkdir -p "$out"
read -r -a runs <<< "${DEMO_RUNS:-ml1m_stock ml1m_stock_d4 ml1m_lowrank ml1m_memcom ml1m_lma}"
start=$(date +%s)
for run in "${runs[@]}"; do
  t0=$(date +%s)
  echo "demo: training $run (torchx run -s local_cwd $components:dlrm --config $run -j 1x2) ..."
  if ! torchx run -s local_cwd "$components:dlrm" --config "$run" -j 1x2 -- --set "output.dir=$out/$run" "$@" \
      > "$out/$run.log" 2>&1; then
    echo "demo: $run failed; last lines of $out/$run.log:" >&2
    tail -n 40 "$out/$run.log" >&2
    exit 1
  fi
  grep -aoE "\[dlrm $run\].*" "$out/$run.log" | tail -n 1 || true
  echo "demo: $run took $(( $(date +%s) - t0 )) s"
done

echo
paths=()
for run in "${runs[@]}"; do paths+=("$out/$run/results.json"); done
python -m torchrec_memcom.recipes.report "${paths[@]}" --out "$out" \
  --title "DLRM on MovieLens-1M CTR, 2 CPU processes (gloo); 16x = the user/movie/zip tables compressed 16x; stock_d4, lowrank = the same bytes"
# the per-run JSONs hold the full results; add them to one file next to the plot
python - "$out" "${runs[@]}" <<'EOF'
import json, os, sys
out, runs = sys.argv[1], sys.argv[2:]
merged = {run: json.load(open(os.path.join(out, run, "results.json"))) for run in runs}
json.dump(merged, open(os.path.join(out, "results.json"), "w"), indent=2)
print(f"wrote {os.path.join(out, 'results.json')}")
EOF
echo "demo: done in $(( $(date +%s) - start )) s"
