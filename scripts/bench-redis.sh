#!/usr/bin/env bash
# Benchmarks the Redis deployment on this machine: a fresh standalone redis-server on a free
# port, batchgate in one of two shapes, `batchgate bench` against it, and what Redis did.
#
#   scripts/bench-redis.sh OUT RATE single            # serve --redis (gateway+batcher, 1 process)
#   scripts/bench-redis.sh OUT RATE split N           # gateway + N batcher processes + worker --sim
#
# Writes OUT.json (the bench report) and OUT.txt (CPU per process, Redis commands per request).
# Each run uses its own bench seed, so inputs never repeat across runs (dedupe would answer them).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 rate=$2 shape=$3 batchers=${4:-1}
bin=target/release/batchgate
cargo build --release --locked -p batchgate >&2
mkdir -p "$(dirname "$out")"
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
url_of() { # log file -> base URL it announced
  for _ in $(seq 1 200); do
    u=$(grep -o 'listening on http://[0-9.:]*' "$1" | head -n1 | sed 's/listening on //') || true
    [ -n "$u" ] && { echo "$u"; return; }; sleep 0.05
  done; echo "no address in $1" >&2; cat "$1" >&2; exit 1
}
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
rpid=$!; pids+=("$rpid")
until redis-cli -p "$rport" PING >/dev/null 2>&1; do sleep 0.05; done
redis="redis://127.0.0.1:$rport"
logs=$(mktemp -d)
procs=()
if [ "$shape" = single ]; then
  "$bin" serve --insecure-no-auth --listen 127.0.0.1:0 --redis "$redis" --sim-slots 40 2>"$logs/serve" &
  pids+=($!); procs+=("serve:$!"); gw=$(url_of "$logs/serve")
else
  "$bin" worker --sim --listen 127.0.0.1:0 --slots 40 2>"$logs/worker" &
  pids+=($!); procs+=("worker:$!"); wurl=$(url_of "$logs/worker")
  "$bin" gateway --insecure-no-auth --listen 127.0.0.1:0 --redis "$redis" 2>"$logs/gateway" &
  pids+=($!); procs+=("gateway:$!"); gw=$(url_of "$logs/gateway")
  for i in $(seq 1 "$batchers"); do
    "$bin" batcher --listen 127.0.0.1:0 --redis "$redis" --worker-url "$wurl" --max-inflight-batches $((40 / batchers)) 2>"$logs/batcher$i" &
    pids+=($!); procs+=("batcher$i:$!"); url_of "$logs/batcher$i" >/dev/null
  done
fi
procs+=("redis:$rpid")
redis-cli -p "$rport" CONFIG RESETSTAT >/dev/null
seed=$(( $(date +%s) % 100000 ))
"$bin" bench --url "$gw" --rate "$rate" --duration 20s --warmup 3s --seed "$seed" --json >"$out.json" 2>"$out.progress" &
bpid=$!; procs+=("bench:$bpid")
sleep 8
ticks() { for p in "${procs[@]}"; do awk -v n="${p%%:*}" '{print n, $14+$15}' "/proc/${p##*:}/stat"; done; }
t0=$(ticks); sleep 10; t1=$(ticks)
wait "$bpid"
redis-cli -p "$rport" INFO commandstats | grep '^cmdstat' >"$logs/cmdstats"
python3 - "$out" "$rate" "$logs/cmdstats" <<PY >"$out.txt"
import json, sys
out, rate, stats = sys.argv[1], float(sys.argv[2]), sys.argv[3]
r = json.load(open(out + ".json"))
tasks = r["sent"] + int(rate * 3 / 2)   # the warmup ramp sends half of its full-rate count
t0 = dict(l.split() for l in """$t0""".splitlines())
t1 = dict(l.split() for l in """$t1""".splitlines())
calls = {}
for line in open(stats):
    name, rest = line[len("cmdstat_"):].split(":", 1)
    calls[name] = int(rest.split("calls=")[1].split(",")[0])
l = r.get("latency_ms") or {}
print(f"ok/s {r['achieved_rate']:.0f}  errors {r['errors']} {r['outcomes']}  p50 {l.get('p50')}  p99 {l.get('p99')}  mean batch {r['server'].get('mean_batch_size')}")
print("CPU % over 10 s: " + ", ".join(f"{k} {(int(t1[k]) - int(t0[k])) / 10:.0f}" for k in t0))
print(f"Redis commands per request: {sum(calls.values()) / tasks:.2f}")
print("  " + ", ".join(f"{k} {v / tasks:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v / tasks >= 0.01))
PY
cat "$out.txt"
rm -rf "$logs"
