#!/usr/bin/env bash
# Set up everything and run the checks CI runs: ruff, import contracts, the default test suite.
# Extra arguments go to pytest (e.g. ./test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh test
export QT_QPA_PLATFORM=offscreen
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
