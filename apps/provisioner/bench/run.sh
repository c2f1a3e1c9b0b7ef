#!/usr/bin/env bash
# Benchmark of `provisioner run --dry-run` (no cluster: the pool is modelled) polling 1 and 100
# resource classes every second against a local fake CircleCI for DURATION seconds (default 60).
# Prints resident memory (VmRSS, sampled every 5 s: max and last), CPU use over the run, cycles
# done, and cycle latency p50/p99 from the binary's own provisioner_cycle_duration_seconds
# histogram (linear interpolation inside a bucket; buckets grow by 1.5x).
#
# Usage: apps/provisioner/bench/run.sh [DURATION] [CLASS_COUNTS...]   e.g. run.sh 60 1 100
set -euo pipefail

duration="${1:-60}"
shift || true
counts=("$@")
if [ "${#counts[@]}" -eq 0 ]; then counts=(1 100); fi

root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
cargo build --release -q -p provisioner --bin provisioner --example fake_circleci
bin="$root/target/release/provisioner"
fake="$root/target/release/examples/fake_circleci"

work="$(mktemp -d)"
fake_pid=""
prov_pid=""
cleanup() {
  if [ -n "$prov_pid" ]; then kill "$prov_pid" 2>/dev/null || true; fi
  if [ -n "$fake_pid" ]; then kill "$fake_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$fake" 127.0.0.1:0 >"$work/fake.out" &
fake_pid=$!
for _ in $(seq 50); do
  grep -q "listening on" "$work/fake.out" 2>/dev/null && break
  sleep 0.1
done
api="http://$(sed -n 's/^listening on //p' "$work/fake.out")"

clk_tck="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

printf '%-8s %-10s %-12s %-12s %-10s %-14s %-10s %-10s\n' classes seconds rss_max_MiB rss_end_MiB cpu_pct cycles_per_s p50_ms p99_ms
for n in "${counts[@]}"; do
  config="$work/config-$n.yaml"
  {
    echo "resourceClasses:"
    for i in $(seq 1 "$n"); do
      printf '  "bench/class-%d":\n    token: "runner-token-%d"\n    scaling:\n      minReplicas: 1\n      maxReplicas: 20\n' "$i" "$i"
    done
  } >"$config"
  log="$work/prov-$n.log"
  # Two requests per class per second, with room to spare.
  rate=$((n * 2 + 20))
  CIRCLE_TOKEN=bench-token KUBECONFIG=/nonexistent "$bin" run --dry-run --config "$config" \
    --api-addr "$api" --poll-interval 1s --api-requests-per-second "$rate" \
    --bind-address 127.0.0.1 --ready-port 0 --live-port 0 --metrics-port 0 \
    2>"$log" &
  prov_pid=$!
  metrics_addr=""
  for _ in $(seq 100); do
    metrics_addr="$(sed -n 's/.*"metrics_addr":"\([^"]*\)".*/\1/p' "$log" | head -n1)"
    [ -n "$metrics_addr" ] && break
    sleep 0.1
  done
  if [ -z "$metrics_addr" ]; then
    echo "provisioner did not start; log:" >&2
    cat "$log" >&2
    exit 1
  fi
  # Warm-up: let every loop start before measuring.
  sleep 3
  start_ticks="$(cpu_ticks "$prov_pid")"
  start_time="$(date +%s.%N)"
  start_cycles="$(curl -s "http://$metrics_addr/metrics" | awk '/^provisioner_cycle_duration_seconds_count/ {print $2}')"
  rss_max=0
  elapsed=0
  while [ "$elapsed" -lt "$duration" ]; do
    sleep 5
    elapsed=$((elapsed + 5))
    rss="$(rss_kib "$prov_pid")"
    if [ "$rss" -gt "$rss_max" ]; then rss_max="$rss"; fi
  done
  end_ticks="$(cpu_ticks "$prov_pid")"
  end_time="$(date +%s.%N)"
  rss_end="$(rss_kib "$prov_pid")"
  curl -s "http://$metrics_addr/metrics" >"$work/metrics-$n.txt"
  kill -TERM "$prov_pid"
  wait "$prov_pid" || true
  prov_pid=""
  python3 - "$work/metrics-$n.txt" "$n" "$start_ticks" "$end_ticks" "$start_time" "$end_time" "$clk_tck" "$rss_max" "$rss_end" "$start_cycles" <<'PY'
import sys
path, n, t0, t1, s0, s1, hz, rss_max, rss_end, c0 = sys.argv[1:]
buckets, count = [], 0.0
for line in open(path):
    if line.startswith("provisioner_cycle_duration_seconds_bucket"):
        le = line.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    elif line.startswith("provisioner_cycle_duration_seconds_count"):
        count = float(line.split()[-1])
def quantile(q):
    target, prev_le, prev_c = q * count, 0.0, 0.0
    for le, c in buckets:
        if c >= target:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((target - prev_c) / (c - prev_c) if c > prev_c else 0)
        prev_le, prev_c = le, c
    return float("nan")
secs = float(s1) - float(s0)
cpu = (float(t1) - float(t0)) / float(hz) / secs * 100
cycles = (count - float(c0 or 0)) / secs
print(f"{n:<8} {secs:<10.1f} {int(rss_max)/1024:<12.1f} {int(rss_end)/1024:<12.1f} {cpu:<10.2f} {cycles:<14.1f} {quantile(0.5)*1000:<10.3f} {quantile(0.99)*1000:<10.3f}")
PY
done
