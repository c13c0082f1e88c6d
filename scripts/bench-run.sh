#!/usr/bin/env bash
# Runs `batchgate bench` against a fresh `batchgate serve` RUNS times and keeps each JSON report.
#
#   scripts/bench-run.sh OUT_PREFIX RUNS "<serve flags>" "<bench flags>"
#   e.g. scripts/bench-run.sh results/10k 3 "--sim-slots 40" "--rate 10000 --duration 30s --warmup 3s"
#
# Each run starts its own server on a free loopback port (read from its log), and stops it with
# SIGTERM by its PID. Summarise with scripts/bench-summary.py OUT_PREFIX-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 runs=$2 serve_flags=$3 bench_flags=$4
bin=target/release/batchgate
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
cargo build --release --locked -p batchgate >&2
mkdir -p "$(dirname "$out")"

for i in $(seq 1 "$runs"); do
  log=$(mktemp)
  # shellcheck disable=SC2086
  start_serve "$log" --insecure-no-auth $serve_flags
  # shellcheck disable=SC2086
  "$bin" bench --url "$url" $bench_flags --json >"$out-$i.json" 2>"$out-$i.progress"
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$log"
  python3 - "$out-$i.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r.get("latency_ms") or {}
print(f"{sys.argv[1]}: ok/s {r['achieved_rate']:.1f}  errors {r['errors']}  p50 {l.get('p50')}  p99 {l.get('p99')}  "
      f"mean batch {r['server'].get('mean_batch_size')}  rss {r['server'].get('resident_memory_bytes')}")
PY
done
