#!/usr/bin/env bash
# User-space instructions per request of `batchgate serve` (or of the floor example) under a
# fixed, low load, counted with callgrind: repeatable whatever else the machine does, unlike
# CPU time (kernel work is not in them; scripts/bench-floor.sh measures CPU time).
#
#   scripts/floor-instructions.sh OUT [serve|serve-redis|floor] [RATE] [DURATION]
#
# Starts the variant under `valgrind --tool=callgrind` on a free loopback port (`serve
# --insecure-no-auth --sim-slots 40`; `serve-redis`, the same with `--redis` on a fresh
# redis-server of its own on a free port, natively, stopped at the end: the Redis path's
# instructions in batchgate, Redis's own not counted; or the floor with --hold-ms 210), runs `batchgate bench`
# (natively) at RATE/s (150) for DURATION (10s) after a 2 s ramp, seed 9001, then stops the
# server with SIGTERM (callgrind writes its counts at exit) and prints the requests (the
# bench's sent, plus the ramp counted as half its requests, as scripts/bench-floor.sh does),
# the instructions per request in all, those of SHA-256 (inclusive: under valgrind `sha2`
# cannot use the CPU's SHA instructions and runs in software, ≈ 110,000 instructions per 2 KB
# input, ≈ 1 µs natively), and the rest. Start-up, idle timers and the shutdown are in the
# total (a few million instructions, a few thousand per request at the defaults). OUT.callgrind
# keeps the profile for callgrind_annotate.
#
# BIN (default target/release/batchgate) runs the bench and `serve`; FLOOR (default
# target/release/examples/floor) is the floor. Neither is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: $0 OUT [serve|serve-redis|floor] [RATE] [DURATION]}
which=${2:-serve}
rate=${3:-150}
duration=${4:-10s}
bin=${BIN:-target/release/batchgate}
floor_bin=${FLOOR:-target/release/examples/floor}
# shellcheck source=serve-lib.sh
. scripts/serve-lib.sh
pid=""
redis_pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true' EXIT

grind=(valgrind --tool=callgrind --callgrind-out-file="$out.callgrind")
case $which in
  serve) start_listening "$out.log" "${grind[@]}" "$bin" serve --listen 127.0.0.1:0 \
    --insecure-no-auth --sim-slots 40 ;;
  serve-redis)
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$out.redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 100); do
      redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break
      sleep 0.05
    done
    start_listening "$out.log" "${grind[@]}" "$bin" serve --listen 127.0.0.1:0 \
      --insecure-no-auth --sim-slots 40 --redis "redis://127.0.0.1:$redis_port" ;;
  floor) start_listening "$out.log" "${grind[@]}" "$floor_bin" --listen 127.0.0.1:0 \
    --hold-ms 210 --stack axum ;;
  *) echo "unknown variant $which (serve, serve-redis or floor)" >&2; exit 1 ;;
esac
"$bin" bench --url "$url" --worker-slots 40 --rate "$rate" --warmup 2s --duration "$duration" \
  --seed 9001 --json >"$out.json" 2>"$out.progress"
kill -TERM "$pid"
wait "$pid" || true
pid=""
if [ -n "$redis_pid" ]; then
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
fi
python3 - "$out" "$rate" <<'PY'
import json, re, subprocess, sys
out, rate = sys.argv[1], float(sys.argv[2])
r = json.load(open(f"{out}.json"))
requests = r["sent"] + rate * 2 / 2
ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no",
                      f"{out}.callgrind"],
                     capture_output=True, text=True, check=True).stdout
total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", ann, re.M).group(1).replace(",", ""))
sha = 0
for line in ann.splitlines():
    m = re.match(r"\s*([\d,]+) \([\d. ]+%\)\s+\S*:?(sha2::sha256::compress256)\b", line)
    if m:
        sha = max(sha, int(m.group(1).replace(",", "")))
print(f"{out}: outcomes {r['outcomes']}  p99 {(r.get('latency_ms') or {}).get('p99')} ms  "
      f"requests {requests:.0f}  instructions/request {total / requests:,.0f}  "
      f"SHA-256 {sha / requests:,.0f}  without SHA-256 {(total - sha) / requests:,.0f}")
PY
