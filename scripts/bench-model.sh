#!/usr/bin/env bash
# The real model on this machine (issue #7): its own best rate, then the rate through batchgate.
#
#   scripts/bench-model.sh MODEL_DIR OUT_PREFIX RUNS [INPUT_BYTES]
#   e.g. scripts/fetch-model.sh /tmp/minilm && scripts/bench-model.sh /tmp/minilm results/model 3
#
# 1. direct: examples/model_bench calls ModelWorker::infer in a loop, batches of 64, then of 1
#    (one request at a time), RUNS runs of 20 s each, inputs made like `batchgate bench`'s;
# 2. through batchgate: RUNS times a fresh `batchgate serve --model-dir` (model in-process)
#    loaded by `batchgate bench` in closed loop (256 requests in flight: batches fill to 64),
#    30 s after a 10 s warmup, each run with new inputs (--seed), outputs not checked against the
#    simulated worker's. JSON reports in OUT_PREFIX-through-N.json.
# Compare "batch 64: median" of step 1 with "ok/s" of step 2.
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

echo "== direct: ModelWorker::infer, no batchgate"
"$target/release/examples/model_bench" --model-dir "$model" --batch 64 --batch 1 \
  --input-bytes "$bytes" --seconds 20 --runs "$runs" | tee "$out-direct.txt"

echo "== through batchgate: serve --model-dir, bench --concurrency 256"
for i in $(seq 1 "$runs"); do
  log=$(mktemp)
  start_serve "$log" --insecure-no-auth --model-dir "$model"
  "$bin" bench --url "$url" --concurrency 256 --duration 30s --warmup 10s \
    --input-bytes "$bytes" --no-check --seed "$((1000 + i))" --json \
    >"$out-through-$i.json" 2>"$out-through-$i.progress"
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$log"
  python3 - "$out-through-$i.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r.get("latency_ms") or {}
print(f"{sys.argv[1]}: ok/s {r['achieved_rate']:.1f}  errors {r['errors']}  p50 {l.get('p50')}  p99 {l.get('p99')}  "
      f"mean batch {r['server'].get('mean_batch_size')}")
PY
done
