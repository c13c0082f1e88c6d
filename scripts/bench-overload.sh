#!/usr/bin/env bash
# Overload (issue #4): 3× the worker's capacity for 60 s, then half its capacity for 20 s, on
# one `batchgate serve` per run, with shedding on (--shed-wait-ms 100). Results
# live 10 s here (--result-ttl-secs 10) instead of 10 min, so that the memory figure shows
# whether the overload itself leaves anything behind rather than the result store filling.
#
#   scripts/bench-overload.sh OUT_DIR [RUNS]      (default 3 runs)
#
# The built-in worker gets 4 slots: 4 × 64 inputs per ≈ 200 ms ≈ 1,280 inputs/s, so 3× is
# 3,840/s — a load this 2-core machine can generate and serve, with the worker the bottleneck.
# Writes OUT_DIR/overload-<i>.json (the 60 s at 3×), OUT_DIR/recover-<i>.json (the 20 s after)
# and OUT_DIR/overload-<i>.rss (the server's resident memory in KiB every 5 s during both).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 runs=${2:-3}
bin=target/release/batchgate
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
cargo build --release --locked -p batchgate >&2
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  log=$(mktemp)
  start_serve "$log" --insecure-no-auth --sim-slots 4 --result-ttl-secs 10 --shed-wait-ms 100
  : >"$out/overload-$i.rss"
  (
    for t in $(seq 0 5 90); do
      kill -0 "$pid" 2>/dev/null || break
      echo "$t $(ps -o rss= -p "$pid" | tr -d ' ')" >>"$out/overload-$i.rss"
      sleep 5
    done
  ) &
  sampler=$!
  "$bin" bench --url "$url" --http2 --worker-slots 4 --rate 3840 --warmup 2s --duration 60s \
    --seed $((2000 + i)) --json >"$out/overload-$i.json" 2>"$out/overload-$i.progress"
  "$bin" bench --url "$url" --http2 --worker-slots 4 --rate 640 --warmup 0s --duration 20s \
    --seed $((3000 + i)) --json >"$out/recover-$i.json" 2>"$out/recover-$i.progress"
  kill "$sampler" 2>/dev/null || true
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$log"
  python3 - "$out/overload-$i.json" "$out/recover-$i.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    l = r.get("latency_ms") or {}
    print(f"{path}: ok/s {r['achieved_rate']:.1f}  outcomes {r['outcomes']}  p50 {l.get('p50')}  p99 {l.get('p99')}")
PY
done
