#!/usr/bin/env bash
# The simulator on the bench's scenarios, with the flags of the measured runs
# (scripts/bench-policies.sh: --sim-slots 40 --shed-wait-ms 0, --warmup 3s --duration 30s;
# scripts/bench-overload.sh: --sim-slots 2, default shedding, 1,920/s for 60 s after 2 s).
#
#   scripts/simulate-agreement.sh [HOST_CPU_US]      (default 150; 0: the CPU not modelled)
#
# HOST_CPU_US is the CPU each request costs the 2-core machine where bench and server ran
# together (BENCHMARKS.md: bench 70–90 µs, server 55–80 µs per request). Prints one table row
# per scenario and policy: ok/s, p50, p99, mean batch, shed %.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/batchgate}
cpu=${1:-150}
[ -x "$bin" ] || { echo "no batchgate binary at $bin (cargo build --release -p batchgate)" >&2; exit 1; }
declare -A profile=(
  [steady200]="--rate 200"
  [steady8000]="--rate 8000"
  [bursts]="--rate 500 --burst-rate 15000 --burst-secs 2 --burst-every 10"
)
row() { # NAME POLICY FLAGS...
  local name=$1 policy=$2; shift 2
  "$bin" simulate --json --policy "$policy" --host-cpu-us "$cpu" "$@" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin); l = r["latency_ms"]; s = r["server"]
shed = 100 * r["outcomes"].get("http_503:overloaded", 0) / max(r["sent"], 1)
cells = [sys.argv[1], sys.argv[2], "%.0f" % r["achieved_rate"], "%.0f" % l["p50"],
         "%.0f" % l["p99"], "%.1f" % s["mean_batch_size"], "%.1f" % shed]
print("| " + " | ".join(cells) + " |")
' "$name" "$policy"
}
echo "| scenario | policy | ok/s | p50 ms | p99 ms | mean batch | shed % |"
echo "|---|---|---|---|---|---|---|"
for name in steady200 steady8000 bursts; do
  for policy in fixed adaptive; do
    # shellcheck disable=SC2086 # a profile is a list of flags
    row "$name" "$policy" --sim-slots 40 --shed-wait-ms 0 --warmup 3s --duration 30s ${profile[$name]}
  done
done
for policy in fixed adaptive; do
  row overload3x "$policy" --sim-slots 2 --rate 1920 --warmup 2s --duration 60s
done
