#!/usr/bin/env bash
# The suite must pass three times in a row on a fresh clone while another CPU-bound process keeps
# every core busy (#15 item 6). Run from anywhere: ./scripts/loaded_triple_check.sh [REPO] [WORKDIR]
# REPO defaults to this checkout, WORKDIR to a new temporary folder. Prints one line per run and a
# final verdict; exits 0 only when all three runs passed. The load is stopped on any exit.
set -uo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
work=${2:-$(mktemp -d /tmp/neuroshard-loaded-XXXXXX)}
git clone -q "$repo" "$work/clone" || exit 1
cd "$work/clone"
# The load: one busy loop per core, for the whole check (killed on any exit).
loads=()
for _ in $(seq "$(nproc)"); do ( while :; do :; done ) & loads+=($!); done
trap 'kill "${loads[@]}" 2>/dev/null' EXIT
passed=0
for run in 1 2 3; do
  start=$(date +%s)
  if ./test.sh -q -p no:cacheprovider > "$work/run$run.log" 2>&1; then
    status=passed; passed=$((passed + 1))
  else
    status="FAILED (see $work/run$run.log)"
  fi
  echo "run $run: $status in $(( $(date +%s) - start )) s; $(grep -E '[0-9]+ (passed|failed)' "$work/run$run.log" | tail -1)"
done
echo "loaded triple check: $passed/3 passed (logs in $work)"
[ "$passed" -eq 3 ]
