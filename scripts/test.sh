#!/usr/bin/env bash
# Sets up the environment if needed (scripts/setup.sh), then runs the test suite.
# Extra arguments go to pytest, e.g.  ./scripts/test.sh -m gpu   or   ./scripts/test.sh tests/modules -x
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
if [ -n "${VIRTUAL_ENV:-}" ]; then py="$VIRTUAL_ENV/bin/python"; else py="$root/.venv/bin/python"; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"$py" -m ruff check .
exec "$py" -m pytest "$@"
