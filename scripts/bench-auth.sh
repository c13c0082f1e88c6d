#!/usr/bin/env bash
# The cost of authentication and rate limiting: the same 10,000 requests/s over
# HTTP/2 against `serve` without auth (--insecure-no-auth) and with a JWT (HS256) plus the
# per-user GCRA limiter (the bench's user gets an override high enough never to be limited, so
# every request still pays for the check). Interleaved, RUNS times each.
#
#   scripts/bench-auth.sh OUT_DIR [RUNS]      (default 3)
#
# Writes OUT_DIR/{noauth,auth}-<i>.json and prints, per run, ok/s, p50/p99 and the server's CPU
# time per request (utime + stime from /proc over the whole run, warmup included).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 runs=${2:-3}
bin=target/release/batchgate
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
cargo build --release --locked -p batchgate >&2
mkdir -p "$out"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$("$bin" token --sub bench --secret "$secret" --ttl 1h)
for i in $(seq 1 "$runs"); do
  for mode in noauth auth; do
    if [ "$mode" = auth ]; then
      flags=(--jwt-secret "$secret" --rate-limit-override bench=1000000000)
      bench_flags=(--bearer "$token")
    else
      flags=(--insecure-no-auth)
      bench_flags=()
    fi
    log=$(mktemp)
    start_serve "$log" --sim-slots 40 "${flags[@]}"
    before=$(cpu "$pid")
    "$bin" bench --url "$url" --http2 --worker-slots 40 --rate 10000 --warmup 5s --duration 30s \
      --seed $((5000 + i * 2 + ${#mode})) "${bench_flags[@]}" --json >"$out/$mode-$i.json" 2>"$out/$mode-$i.progress"
    after=$(cpu "$pid")
    kill -TERM "$pid"; wait "$pid" || true; rm -f "$log"
    report_run "$out/$mode-$i.json" "$before" "$after" 10000 5
  done
done
