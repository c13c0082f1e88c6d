#!/usr/bin/env bash
# The real model on this machine: its own best rate, then the rate through batchgate.
#
#   scripts/bench-model.sh MODEL_DIR OUT_PREFIX RUNS [INPUT_BYTES]
#   e.g. scripts/fetch-model.sh /tmp/minilm && scripts/bench-model.sh /tmp/minilm results/model 3
#
# RUNS pairs of
# 1. direct: examples/model_bench calls ModelWorker::infer in a loop on batches of 64 for 20 s,
#    inputs made like `batchgate bench`'s (INPUT_BYTES random ASCII, 64 by default: ~41 tokens);
# 2. through batchgate: a fresh `batchgate serve --model-dir` (model in-process) loaded by
#    `batchgate bench` in closed loop (256 requests in flight: batches fill to 64), 30 s after a
#    10 s warmup, new inputs each run (--seed), outputs not checked against the simulated
#    worker's. JSON reports in OUT_PREFIX-through-N.json;
# then RUNS runs of the model alone on one input at a time (batch 1).
# VIA=http puts the model in its own process instead (`worker --model-dir` on a free port,
# `serve --worker-url` to it, 2 batches in flight): the deployment with a separate GPU host.
# BENCH_FLAGS adds flags to the load, e.g. BENCH_FLAGS="--api openai" to go through the OpenAI
# embeddings door (`POST /v1/embeddings`, one input per request) instead of /v1/inference.
# SERVE_FLAGS adds flags to `serve`, e.g. SERVE_FLAGS="--latency-objective-ms 0": this model's
# batch of 64 takes longer than the default objective (500 ms), so with shedding on a closed
# loop of 256 callers is mostly shed, and the run measures shedding, not throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 out=$2 runs=$3 bytes=${4:-64}
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/batchgate
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
cargo build --release --locked -p batchgate --features model >&2
cargo build --release --locked -p batchgate-model --features model --example model_bench >&2
mkdir -p "$(dirname "$out")"

bench_direct() { # BATCH SECONDS
  "$target/release/examples/model_bench" --model-dir "$model" --batch "$1" --input-bytes "$bytes" \
    --seconds "$2" --runs 1 | grep "run 1"
}

# Direct and through batchgate alternate, so that both see the same background load: on a
# shared machine it drifts by ±30% over minutes, more than what is being compared.
for i in $(seq 1 "$runs"); do
  echo "== pair $i: $(uptime | sed 's/.*load/load/')"
  echo -n "direct  batch 64: " && bench_direct 64 20 | tee -a "$out-direct.txt"
  log=$(mktemp)
  if [ "${VIA:-}" = http ]; then
    wlog=$(mktemp)
    "$bin" worker --listen 127.0.0.1:0 --model-dir "$model" 2>"$wlog" &
    wpid=$!
    wurl=""
    for _ in $(seq 1 200); do
      wurl=$(grep -o 'listening on http://[0-9.:]*' "$wlog" | head -n1 | sed 's/listening on //') || true
      [ -n "$wurl" ] && break
      sleep 0.05
    done
    [ -n "$wurl" ] || { cat "$wlog" >&2; kill "$wpid"; exit 1; }
    start_serve "$log" --insecure-no-auth --worker-url "$wurl" --max-inflight-batches 2 ${SERVE_FLAGS:-}
  else
    start_serve "$log" --insecure-no-auth --model-dir "$model" ${SERVE_FLAGS:-}
  fi
  "$bin" bench --url "$url" --concurrency 256 --duration 30s --warmup 10s \
    --input-bytes "$bytes" --no-check --seed "$((1000 + i))" --json ${BENCH_FLAGS:-} \
    >"$out-through-$i.json" 2>"$out-through-$i.progress"
  kill -TERM "$pid"
  wait "$pid" || true
  if [ "${VIA:-}" = http ]; then
    kill -TERM "$wpid"
    wait "$wpid" || true
    rm -f "$wlog"
  fi
  rm -f "$log"
  python3 - "$out-through-$i.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r.get("latency_ms") or {}
print(f"through batchgate: ok/s {r['achieved_rate']:.1f}  errors {r['errors']}  p50 {l.get('p50')}  "
      f"p99 {l.get('p99')}  mean batch {r['server'].get('mean_batch_size')}  ({sys.argv[1]})")
PY
done
echo "== one request at a time (batch 1), direct"
for i in $(seq 1 "$runs"); do
  bench_direct 1 20 | tee -a "$out-direct.txt"
done
