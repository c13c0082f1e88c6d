#!/usr/bin/env bash
# Server CPU per request of two batchgate binaries under the same load, interleaved: `serve
# --sim-slots 40` with a JWT (HS256) on every call and the per-user limiter on (the bench's user
# has an override high enough never to be refused, so every request pays for the checks), at
# RATE requests/s (default 10,000) for 30 s after a 5 s ramp, RUNS times each. The load generator is always
# NEW_BIN's `bench`, so only the server differs.
#
#   scripts/bench-compare.sh OUT_DIR OLD_BIN NEW_BIN [RUNS] [PROTO] [RATE]
#                                  RUNS default 3; PROTO http1 (default) or http2; RATE 10000
#
# Writes OUT_DIR/{old,new}-PROTO-RATE-<i>.json and prints, per run, ok/s, outcomes, p50/p99 and the
# server's CPU per request (utime + stime from /proc over the whole run, warmup counted as half
# its requests).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 old_bin=$2 new_bin=$3 runs=${4:-3} proto=${5:-http1} rate=${6:-10000}
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
mkdir -p "$out"
proto_flags=()
[ "$proto" = http2 ] && proto_flags=(--http2)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$("$new_bin" token --sub bench --secret "$secret" --ttl 1h)
for i in $(seq 1 "$runs"); do
  for which in old new; do
    if [ "$which" = old ]; then bin=$old_bin; else bin=$new_bin; fi
    log=$(mktemp)
    start_serve "$log" --sim-slots 40 --jwt-secret "$secret" --rate-limit-override bench=1000000000
    before=$(cpu "$pid")
    "$new_bin" bench --url "$url" "${proto_flags[@]}" --worker-slots 40 --rate "$rate" --warmup 5s \
      --duration 30s --seed $((7000 + i * 2 + ${#which})) --bearer "$token" --json \
      >"$out/$which-$proto-$rate-$i.json" 2>"$out/$which-$proto-$rate-$i.progress"
    after=$(cpu "$pid")
    kill -TERM "$pid"; wait "$pid" || true; rm -f "$log"
    report_run "$out/$which-$proto-$rate-$i.json" "$before" "$after" "$rate" 5
  done
done
