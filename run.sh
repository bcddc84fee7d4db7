#!/usr/bin/env bash
# Set up everything (first run ~1 min) and start NeuroShard Node: the window when a display
# exists, the headless node otherwise. Extra arguments go to main.py (try --help).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh run
exec .venv/bin/python main.py "$@"
