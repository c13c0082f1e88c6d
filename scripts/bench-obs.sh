#!/usr/bin/env bash
# The cost of tracing: the same 10,000 requests/s over HTTP/2 against `serve`, with
# trace export off (the default), on with 1 % of traces sampled, and on with every request
# traced. Metrics are always on (every mode pays for them). Interleaved, RUNS times each.
#
#   scripts/bench-obs.sh OUT_DIR [RUNS]      (default 3)
#
# Spans go to a loopback port where nothing listens: the SDK builds, batches and drops them
# (export fails at once), so the cost of sending them to a real collector is not included.
# Writes OUT_DIR/{off,sampled,traced}-<i>.json and prints, per run, ok/s, p50/p99 and the
# server's CPU time per request (utime + stime from /proc over the whole run, warmup included).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 runs=${2:-3}
bin=target/release/batchgate
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
cargo build --release --locked -p batchgate >&2
mkdir -p "$out"
# A port nobody listens on: bound by python, released at once.
sink=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for i in $(seq 1 "$runs"); do
  for mode in off sampled traced; do
    flags=()
    case $mode in
      off) unset OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_ARG ;;
      sampled) flags=(--otlp-endpoint "http://127.0.0.1:$sink")
        export OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 ;;
      traced) flags=(--otlp-endpoint "http://127.0.0.1:$sink")
        export OTEL_TRACES_SAMPLER=always_on; unset OTEL_TRACES_SAMPLER_ARG ;;
    esac
    log=$(mktemp)
    start_serve "$log" --insecure-no-auth --sim-slots 40 "${flags[@]}"
    before=$(cpu "$pid")
    "$bin" bench --url "$url" --http2 --worker-slots 40 --rate 10000 --warmup 5s --duration 30s \
      --seed $((7000 + i * 3 + ${#mode})) --json >"$out/$mode-$i.json" 2>"$out/$mode-$i.progress"
    after=$(cpu "$pid")
    kill -TERM "$pid"; wait "$pid" || true; rm -f "$log"
    report_run "$out/$mode-$i.json" "$before" "$after" 10000 5
  done
done
