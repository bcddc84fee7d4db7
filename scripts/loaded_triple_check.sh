#!/usr/bin/env bash
# The suite must pass three times in a row on a fresh clone while another CPU-bound process keeps
# every core busy (#15 item 6).
#
#   scripts/loaded_triple_check.sh [--dry-run] [REPO] [WORKDIR]
#
# REPO defaults to this checkout (its committed HEAD is what gets cloned), WORKDIR to a new
# temporary folder. One busy loop per core runs for the whole check; ./test.sh (bootstrap, ruff,
# import contracts, the default pytest suite) runs three times in the clone, one log per run in
# WORKDIR. Prints one line per run and a final line
#   loaded triple check: N/3 passed at COMMIT (K busy loops, load average ...)
# and exits 0 only when all three runs passed. The load is stopped however the script ends.
# --dry-run does everything but the suite: it clones, starts and checks the load, runs a stand-in
# command three times and stops the load, so the mechanics can be checked in seconds.
set -uo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
work=${2:-$(mktemp -d /tmp/neuroshard-loaded-XXXXXX)}
mkdir -p "$work"
git clone -q "$repo" "$work/clone" || { echo "loaded triple check: cannot clone $repo" >&2; exit 1; }
cd "$work/clone" || exit 1
commit=$(git rev-parse --short HEAD)
[ -x ./test.sh ] || { echo "loaded triple check: no executable test.sh in the clone" >&2; exit 1; }
if [ "$dry_run" -eq 1 ]; then
  run_suite() { echo "dry run: would run ./test.sh -q -p no:cacheprovider"; echo "1 passed in 0.00s"; }
else
  run_suite() { ./test.sh -q -p no:cacheprovider; }
fi

# The load: one busy loop per core, each its own process, for the whole check.
loads=()
stop_load() {
  [ "${#loads[@]}" -gt 0 ] && kill "${loads[@]}" 2>/dev/null
  wait "${loads[@]}" 2>/dev/null
  loads=()
}
trap stop_load EXIT
trap 'stop_load; exit 130' INT TERM
cores=$(nproc)
for _ in $(seq "$cores"); do ( while :; do :; done ) & loads+=($!); done
for pid in "${loads[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "loaded triple check: a busy loop did not start" >&2; exit 1; }
done
echo "load: ${#loads[@]} busy loops on $cores cores (pids ${loads[*]}); testing $commit in $work/clone"

passed=0
for run in 1 2 3; do
  start=$(date +%s)
  if run_suite > "$work/run$run.log" 2>&1; then
    status=passed; passed=$((passed + 1))
  else
    status="FAILED (see $work/run$run.log)"
  fi
  summary=$(grep -E '[0-9]+ (passed|failed)' "$work/run$run.log" | tail -1)
  echo "run $run: $status in $(( $(date +%s) - start )) s; $summary"
done
load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
busy=${#loads[@]}
stop_load
label="loaded triple check"
[ "$dry_run" -eq 1 ] && label="loaded triple check (dry run, suite not run)"
echo "$label: $passed/3 passed at $commit ($busy busy loops, load average $load; logs in $work)"
[ "$passed" -eq 3 ]
