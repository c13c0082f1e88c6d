#!/usr/bin/env bash
# Fixed vs adaptive batching, interleaved in one session on one machine:
# steady 200/s, steady 8,000/s, and bursts (2 s at 15,000/s every 10 s, 500/s otherwise).
#
#   scripts/bench-policies.sh OUT_DIR [RUNS]      (default 3 runs)
#
# Every (run, profile, policy) gets a fresh `batchgate serve` (built-in simulated worker, 40
# slots: capacity ≈ 12,800/s, so the worker is not the limit at 8,000/s) and its own seed.
# Shedding is off (--shed-wait-ms 0) so that both policies see every request; the overload
# benchmark (scripts/bench-overload.sh) measures shedding. Summarise with
#   scripts/bench-summary.py OUT_DIR/<profile>-<policy>-*.json
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 runs=${2:-3}
mkdir -p "$out"
serve_common="--sim-slots 40 --shed-wait-ms 0"
bench_common="--http2 --worker-slots 40 --warmup 3s --duration 30s"
declare -A profile=(
  [steady200]="--rate 200"
  [steady8000]="--rate 8000"
  [bursts]="--rate 500 --burst-rate 15000 --burst-secs 2 --burst-every 10"
)
seed=1000
for i in $(seq 1 "$runs"); do
  for name in steady200 steady8000 bursts; do
    for policy in fixed adaptive; do
      seed=$((seed + 1))
      scripts/bench-run.sh "$out/$name-$policy-r$i" 1 \
        "$serve_common --policy $policy" \
        "$bench_common ${profile[$name]} --seed $seed"
      mv "$out/$name-$policy-r$i-1.json" "$out/$name-$policy-$i.json"
      mv "$out/$name-$policy-r$i-1.progress" "$out/$name-$policy-$i.progress"
    done
  done
done
