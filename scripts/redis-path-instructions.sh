#!/usr/bin/env bash
# Instructions redis-server spends per request on the whole Redis path (admission, reads,
# settle, notices), counted with callgrind: repeatable whatever else the machine does,
# unlike CPU time. Counts user-space instructions only: the system time of Redis's reads
# and writes is not in them (scripts/bench-shapes.sh measures CPU time, both together).
#
#   scripts/redis-path-instructions.sh OUT [RATE] [DURATION] [SHAPE]
#
# SHAPE: redis (serve --redis, the default) or split (2 gateways, 2 batchers, a simulated
# worker). Starts redis-server under `valgrind --tool=callgrind` on a free loopback port,
# batchgate ($BIN, default target/release/batchgate) against it with the simulated worker
# (40 slots), and `batchgate bench` at RATE/s (1000) for DURATION (10s) with distinct 2 KB
# inputs; then shuts Redis down (so callgrind writes its counts) and prints: requests
# answered, the tasks per admission group and per read, total instructions per request, and
# per request the inclusive instructions of the commands that matter (scripts, XADD,
# XREADGROUP, GET, SET, PUBLISH, reading and writing the sockets). OUT.callgrind keeps the
# profile for callgrind_annotate. Redis under valgrind is ≈ 50 times slower: keep RATE
# where it keeps up (the bench's p99 says whether it did).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: $0 OUT [RATE] [DURATION] [SHAPE]}
rate=${2:-1000}
duration=${3:-10s}
shape=${4:-redis}
bin=${BIN:-target/release/batchgate}
# shellcheck source=serve-lib.sh
. scripts/serve-lib.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

port=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$out.callgrind" \
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  >"$out.redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 1 200); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis=redis://127.0.0.1:$port

urls=()
case "$shape" in
  redis)
    start_serve "$out.serve.log" --insecure-no-auth --redis "$redis" --sim-slots 40
    pids+=("$pid")
    urls+=("$url")
    ;;
  split)
    start_listening "$out.worker.log" "$bin" worker --sim --slots 40 --listen 127.0.0.1:0
    pids+=("$pid")
    worker=$url
    for i in 1 2; do
      start_listening "$out.batcher$i.log" "$bin" batcher --redis "$redis" --worker "$worker" \
        --max-inflight-batches 20 --listen 127.0.0.1:0
      pids+=("$pid")
    done
    for i in 1 2; do
      start_listening "$out.gateway$i.log" "$bin" gateway --insecure-no-auth --redis "$redis" \
        --listen 127.0.0.1:0
      pids+=("$pid")
      urls+=("$url")
    done
    ;;
  *) echo "unknown shape $shape" >&2; exit 2 ;;
esac

per_bench=$((rate / ${#urls[@]}))
bench_pids=()
i=0
for u in "${urls[@]}"; do
  i=$((i + 1))
  "$bin" bench --url "$u" --rate "$per_bench" --duration "$duration" --warmup 0s \
    --worker-slots 40 --seed "$i" --json >"$out.bench$i.json" 2>"$out.bench$i.log" &
  bench_pids+=("$!")
done
for p in "${bench_pids[@]}"; do wait "$p"; done

# Calls per command (admission groups are XADDs, reads XREADGROUPs).
stats=$(redis-cli -p "$port" info commandstats)
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$redis_pid" || true

python3 - "$out" "${#urls[@]}" "$stats" <<'PY'
import json, re, subprocess, sys
out, n, stats = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ok = 0
p99 = []
for i in range(1, n + 1):
    r = json.load(open(f"{out}.bench{i}.json"))
    ok += r["outcomes"].get("ok", 0)
    p99.append((r.get("latency_ms") or {}).get("p99"))
calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"^cmdstat_(\w+):calls=(\d+)", stats, re.M)}
ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", f"{out}.callgrind"],
                     capture_output=True, text=True).stdout
total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", ann).group(1).replace(",", ""))
def incl(fn):
    m = re.search(rf"^\s*([\d,]+) \([^)]*\)\s+\S*:{re.escape(fn)} ", ann, re.M)
    return int(m.group(1).replace(",", "")) if m else 0
print(f"answered ok: {ok}; bench p99 ms: {p99}")
for cmd in ["xadd", "xreadgroup", "evalsha", "publish", "spublish"]:
    if calls.get(cmd):
        print(f"  requests per {cmd}: {ok / calls[cmd]:.1f}")
print(f"redis-server instructions per answered request: {total / max(ok, 1):,.0f} (whole run, idle included)")
for fn in ["evalShaCommand", "evalCommand", "xaddCommand", "xreadCommand", "getCommand",
           "setCommand", "publishCommand", "spublishCommand", "xackCommand", "xdelCommand",
           "execCommand", "readQueryFromClient", "writeToClient", "sendReplyToClient",
           "handleClientsWithPendingWrites", "serverCron", "beforeSleep", "luaCallFunction",
           "luaRedisGenericCommand", "luaS_newlstr"]:
    v = incl(fn)
    if v:
        print(f"  {fn:32s} {v / max(ok, 1):>10,.0f} per request ({100 * v / total:.1f}%)")
PY
