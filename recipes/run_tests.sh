#!/usr/bin/env bash
# Set up (recipes/setup.sh), then run the whole test suite.
# Extra arguments go to pytest, e.g.  bash recipes/run_tests.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash recipes/setup.sh
exec .venv/bin/python -m pytest -q -rs "$@"
