#!/usr/bin/env bash
# The simulator on the bench's scenarios, with the flags of the measured runs
# (scripts/bench-policies.sh: --sim-slots 40 --shed-wait-ms 0, --warmup 3s --duration 30s;
# scripts/bench-overload.sh: --sim-slots 2, default shedding, 1,920/s for 60 s after 2 s).
#
#   scripts/simulate-agreement.sh [GATEWAY_CPU_US [CLIENT_CPU_US]]   (default 55 72; 0 0: no CPU)
#
# The measured runs had `batchgate serve` and `batchgate bench` on the same 2 cores, and the
# bench kept at most 10,000 requests in flight (its --max-connections): GATEWAY_CPU_US and
# CLIENT_CPU_US are their CPU per request (BENCHMARKS.md, "The simulator"). Prints one table
# row per scenario and policy: ok/s, p50, p99, mean batch, shed %, requests the bench could
# not send.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/batchgate}
gateway=${1:-55}
client=${2:-72}
[ -x "$bin" ] || { echo "no batchgate binary at $bin (cargo build --release -p batchgate)" >&2; exit 1; }
declare -A profile=(
  [steady200]="--rate 200"
  [steady8000]="--rate 8000"
  [bursts]="--rate 500 --burst-rate 15000 --burst-secs 2 --burst-every 10"
)
row() { # NAME POLICY FLAGS...
  local name=$1 policy=$2; shift 2
  "$bin" simulate --json --policy "$policy" --gateway-cpu-us "$gateway" --client-cpu-us "$client" \
    --host-cores 2 --max-connections 10000 "$@" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin); l = r["latency_ms"]; s = r["server"]
shed = 100 * r["outcomes"].get("http_503:overloaded", 0) / max(r["sent"], 1)
unsent = r["outcomes"].get("client_overloaded", 0)
cells = [sys.argv[1], sys.argv[2], "%.0f" % r["achieved_rate"], "%.0f" % l["p50"],
         "%.0f" % l["p99"], "%.1f" % s["mean_batch_size"], "%.1f" % shed, "%d" % unsent]
print("| " + " | ".join(cells) + " |")
' "$name" "$policy"
}
echo "| scenario | policy | ok/s | p50 ms | p99 ms | mean batch | shed % | not sent |"
echo "|---|---|---|---|---|---|---|---|"
for name in steady200 steady8000 bursts; do
  for policy in fixed adaptive; do
    # shellcheck disable=SC2086 # a profile is a list of flags
    row "$name" "$policy" --sim-slots 40 --shed-wait-ms 0 --warmup 3s --duration 30s ${profile[$name]}
  done
done
for policy in fixed adaptive; do
  row overload3x "$policy" --sim-slots 2 --rate 1920 --warmup 2s --duration 60s
done
