#!/usr/bin/env bash
# Overload with DEFAULT flags: 3× the worker's capacity for 60 s, then half of it for 20 s.
#
#   scripts/bench-overload.sh OUT_DIR [RUNS] [SHAPE]      RUNS default 3, SHAPE embedded|redis
#
# The worker gets 2 slots (the only flag changed from the defaults): 2 × 64 inputs per
# ≈ 200 ms ≈ 640 inputs/s, so 3× is 1,920/s and half is 320/s.
#   embedded  batchgate serve --insecure-no-auth --sim-slots 2
#   redis     a fresh redis-server on a free port (--save "" --appendonly no), batchgate worker
#             --sim --slots 2, one batcher told the worker's slots (--max-inflight-batches 2,
#             as `serve --sim-slots 2` does by itself), two gateways (--insecure-no-auth); the
#             load is split over both gateways by two bench processes at half the rate each.
# Load: batchgate bench --http2 (open loop, distinct 2 KB inputs, outputs checked), 60 s at 3×
# after a 2 s warmup, then at once 20 s at ½×. Per run, OUT_DIR/<shape>-<phase>-<run>[-g].json
# (bench reports) and OUT_DIR/<shape>-<run>.rss: the batchgate processes' resident memory
# (KiB, summed) every 5 s, and embedded, the records the result store holds then. BIN
# (default target/release/batchgate) is not built here.
# SERVE_FLAGS (embedded only) adds flags to `serve`, e.g. SERVE_FLAGS="--policy adaptive", or
# `--result-ttl-secs 10 --dedupe-ttl-secs 10` to see the memory that is not records.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 runs=${2:-3} shape=${3:-embedded}
bin=${BIN:-target/release/batchgate}
[ -x "$bin" ] || { echo "no batchgate binary at $bin (cargo build --release -p batchgate)" >&2; exit 1; }
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# start LOG CMD...: runs CMD in the background, its stderr to LOG; sets $started.
start() { local log=$1; shift; "$@" 2>"$log" >/dev/null & started=$!; pids+=("$started"); }
url_of() {
  local u
  for _ in $(seq 1 200); do
    u=$(grep -o 'listening on http://[0-9.:]*' "$1" | head -n1 | sed 's/listening on //') || true
    [ -n "$u" ] && { echo "$u"; return 0; }
    sleep 0.05
  done
  echo "no address in $1:" >&2; cat "$1" >&2; exit 1
}
for i in $(seq 1 "$runs"); do
  tmp=$(mktemp -d)
  pids=() bg=() urls=()
  if [ "$shape" = embedded ]; then
    # shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
    start "$tmp/serve.log" "$bin" serve --insecure-no-auth --listen 127.0.0.1:0 --sim-slots 2 ${SERVE_FLAGS:-}
    bg+=("$started"); urls+=("$(url_of "$tmp/serve.log")")
  else
    port=$(free_port)
    start "$tmp/redis.log" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp"
    until redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.05; done
    start "$tmp/worker.log" "$bin" worker --sim --listen 127.0.0.1:0 --slots 2
    wurl=$(url_of "$tmp/worker.log")
    start "$tmp/batcher.log" "$bin" batcher --listen 127.0.0.1:0 --redis "redis://127.0.0.1:$port" \
      --worker-url "$wurl" --max-inflight-batches 2
    bg+=("$started")
    for g in 1 2; do
      start "$tmp/gateway$g.log" "$bin" gateway --insecure-no-auth --listen 127.0.0.1:0 --redis "redis://127.0.0.1:$port"
      bg+=("$started"); urls+=("$(url_of "$tmp/gateway$g.log")")
    done
    url_of "$tmp/batcher.log" >/dev/null
  fi
  : >"$out/$shape-$i.rss"
  (
    for t in $(seq 0 5 90); do
      total=0
      for p in "${bg[@]}"; do total=$((total + $(ps -o rss= -p "$p" | tr -d ' ' || echo 0))); done
      records=""
      # Embedded: the records held, to tell their memory from the rest (see BENCHMARKS.md).
      [ "$shape" = embedded ] && records=$(curl -s "${urls[0]}/metrics" \
        | awk '/^batchgate_result_store_records /{print $2}' || true)
      echo "$t $total $records" >>"$out/$shape-$i.rss"
      sleep 5
    done
  ) &
  sampler=$!
  n=${#urls[@]}
  phase() { # NAME RATE WARMUP DURATION SEED
    local k bench=()
    for k in $(seq 0 $((n - 1))); do
      "$bin" bench --url "${urls[$k]}" --http2 --worker-slots 2 --rate $(($2 / n)) --warmup "$3" \
        --duration "$4" --seed $(($5 + k)) --json >"$out/$shape-$1-$i-$k.json" 2>"$tmp/bench-$1-$k.err" &
      bench+=($!)
    done
    for k in "${bench[@]}"; do wait "$k"; done
  }
  phase overload 1920 2s 60s $((2000 + 10 * i))
  phase recover 320 0s 20s $((3000 + 10 * i))
  kill "$sampler" 2>/dev/null || true
  cleanup
  wait 2>/dev/null || true
  rm -rf "$tmp"
  python3 - "$out" "$shape" "$i" <<'PY'
import glob, json, sys
out, shape, i = sys.argv[1:]
for phase in ("overload", "recover"):
    parts = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{shape}-{phase}-{i}-*.json"))]
    outcomes = {}
    for r in parts:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    sent = sum(r["sent"] for r in parts)
    ok = sum(r["ok"] for r in parts)
    p99 = max((r.get("latency_ms") or {}).get("p99") or 0 for r in parts)
    shed = sum(v for k, v in outcomes.items() if "overloaded" in k)
    print(f"{shape} run {i} {phase}: ok/s {sum(r['achieved_rate'] for r in parts):.0f}  "
          f"shed {100 * shed / max(sent, 1):.1f}%  p99 (accepted, worst part) {p99} ms  outcomes {outcomes}")
PY
done
