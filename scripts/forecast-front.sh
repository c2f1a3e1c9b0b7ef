#!/usr/bin/env bash
# The predictive control's cost/wait front against the reference policies, measured on the days
# after a cut (default: days 22-28 of the four-week trace, the issue-15 benchmark), with all jobs
# as one class and with the trace's classes each in its own pool. One line per run: p50/p95/p99
# wait and VM-hours of the measured days, and the VM-hours as a multiple of the oracle's.
#
#   scripts/forecast-front.sh [LEVEL...]       (default levels: 10% 50% 80% 90% 95% 97%)
#
# Environment: SIM (default target/release/simulate), TRACE (default
# ../shared/traces/travis-2020-02.csv), CUT (default 21d), MAX (default 400), EXTRA (flags added
# to every predictive run, e.g. "--idle-timeout 30m").
set -euo pipefail
cd "$(dirname "$0")/.."
sim=${SIM:-target/release/simulate}
trace=${TRACE:-../shared/traces/travis-2020-02.csv}
cut=${CUT:-21d}
max=${MAX:-400}
extra=${EXTRA:-}
if [ "$#" -gt 0 ]; then levels=("$@"); else levels=(10% 50% 80% 90% 95% 97%); fi
[ -x "$sim" ] || { echo "no simulator at $sim (cargo build --release -p simulate)" >&2; exit 1; }
[ -f "$trace" ] || { echo "no trace at $trace" >&2; exit 1; }

# Prints "p50 p95 p99 vm_hours" of the last phase (the measured days) of one run.
measure() {
  "$sim" --headless --format json --trace "$trace" --max-replicas "$max" --phases "$cut" "$@" |
    python3 -c 'import json,sys; p=json.load(sys.stdin)["phases"][-1]; print(p["wait_p50_s"], p["wait_p95_s"], p["wait_p99_s"], p["vm_hours"])'
}

row() {
  local label=$1 oracle=$2
  shift 2
  read -r p50 p95 p99 vmh < <(measure "$@")
  awk -v l="$label" -v a="$p50" -v b="$p95" -v c="$p99" -v h="$vmh" -v o="$oracle" \
    'BEGIN { printf "%-34s %8.1f %8.1f %8.1f %10.0f %6.2fx\n", l, a, b, c, h, h / o }'
}

for pools in one four; do
  if [ "$pools" = one ]; then classes=(--class-as x/y); else classes=(); fi
  read -r _ _ _ oracle < <(measure "${classes[@]}" --policy oracle)
  echo "== $pools pool(s), days after $cut, max $max"
  printf "%-34s %8s %8s %8s %10s %7s\n" policy "p50 s" "p95 s" "p99 s" VM-h oracle
  row oracle "$oracle" "${classes[@]}" --policy oracle
  row "seed (min 3, idle 10m)" "$oracle" "${classes[@]}" --policy seed --idle-timeout 10m
  row "circleci-0.1.2 (headroom 15)" "$oracle" "${classes[@]}" --policy circleci-0.1.2 --headroom 15 --idle-timeout 10m
  for buffer in 10 25 40; do
    row "arc (idle buffer $buffer)" "$oracle" "${classes[@]}" --policy arc --idle-buffer "$buffer" --idle-timeout 10m
  done
  row "gitlab (idle 10, factor 0.2)" "$oracle" "${classes[@]}" --policy gitlab --idle-buffer 10 --scale-factor 0.2 --idle-timeout 10m
  for level in "${levels[@]}"; do
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    row "predictive $level $extra" "$oracle" "${classes[@]}" --policy predictive --service-level "$level" $extra
  done
done
