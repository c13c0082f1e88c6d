#!/usr/bin/env bash
# Server CPU per request of `batchgate serve` against its floor, under the same load,
# interleaved in one session: `serve --insecure-no-auth --sim-slots 40` (default flags
# otherwise), and the floor example (crates/bench/examples/floor.rs: a bare axum server on the
# same stack that parses the same body, holds each request --hold-ms 210, then answers the
# same result shape; and the same floor behind batchgate's own accept loop, `--stack net`,
# labelled floor-net), at RATE requests/s (default 8,000) over HTTP/1.1 for 20 s
# after a 5 s ramp, RUNS times each (default 3). The load generator is BIN's `bench` every time.
#
#   scripts/bench-floor.sh OUT_DIR [RUNS] [RATE]
#
# HTTP/1.1 only: over HTTP/2 the bench sends everything on one connection, and `axum::serve`
# keeps hyper's default of 200 concurrent streams per connection, which at 210 ms a request
# caps the floor near 950 requests/s (`serve` allows --h2-max-streams 4,096).
#
# BIN (default target/release/batchgate) and FLOOR (default target/release/examples/floor)
# are not built here: `cargo build --release -p batchgate` and `cargo build --release -p
# batchgate-bench --example floor`. With OLD_BIN set, that binary's `serve` runs as a further
# variant in each round (before/after comparisons). VARIANTS="serve floor" leaves floor-net
# out (more rounds in the same time: the machine's speed drifts between rounds, so the ratio
# of serve to the floor is read round by round). Writes OUT_DIR/<variant>-PROTO-<i>.json (bench
# reports) and prints, per run, ok/s, outcomes, p50/p99 and the server's CPU per request sent
# (utime + stime from /proc over the whole run, warmup counted as half its requests), marking
# runs that did not hold the rate.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 runs=${2:-3} rate=${3:-8000} proto=http1
serve_bin=${BIN:-target/release/batchgate}
floor_bin=${FLOOR:-target/release/examples/floor}
old_bin=${OLD_BIN:-}
for b in "$serve_bin" "$floor_bin" ${old_bin:+"$old_bin"}; do
  [ -x "$b" ] || { echo "no binary at $b (see the header of $0)" >&2; exit 1; }
done
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
mkdir -p "$out"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT

# start_floor LOG STACK: the floor on a free loopback port; sets $pid and $url like start_serve.
start_floor() {
  start_listening "$1" "$floor_bin" --listen 127.0.0.1:0 --hold-ms 210 --stack "$2"
}

# report JSON BEFORE AFTER RATE WARMUP_SECS: like report_run (serve-lib.sh), but per request
# the bench SENT (requests it refused to send at its in-flight cap are not server work), and
# marks a run that did not hold its rate (ok/s < 99% of it): its CPU per request is not
# comparable (a server that falls behind over HTTP/1.1 also pays for the connections the
# bench opens to catch up).
report() {
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" "$4" "$5" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); before, after, ticks, rate, warmup = map(float, sys.argv[2:7])
l = r.get('latency_ms') or {}
total = r['sent'] + rate * warmup / 2  # warmup requests: half the warmup at the full rate
held = "" if r['achieved_rate'] >= 0.99 * rate else "  (rate NOT held)"
print(f"{sys.argv[1]}: ok/s {r['achieved_rate']:.0f}  outcomes {r['outcomes']}  p50 {l.get('p50')}  p99 {l.get('p99')}  "
      f"server CPU {(after - before) / ticks:.1f} s = {(after - before) / ticks / total * 1e6:.1f} µs/request sent{held}")
PY
}

# VARIANTS (default "serve floor floor-net") picks the variants each round runs, in order.
read -r -a variants <<<"${VARIANTS:-serve floor floor-net}"

[ -n "$old_bin" ] && variants+=(old)
for i in $(seq 1 "$runs"); do
  for which in "${variants[@]}"; do
    log=$(mktemp)
    case $which in
      serve) bin=$serve_bin; start_serve "$log" --insecure-no-auth --sim-slots 40 ;;
      old) bin=$old_bin; start_serve "$log" --insecure-no-auth --sim-slots 40 ;;
      floor) start_floor "$log" axum ;;
      floor-net) start_floor "$log" net ;;
    esac
    sleep 0.5
    before=$(cpu "$pid")
    "$serve_bin" bench --url "$url" --worker-slots 40 --rate "$rate" --warmup 5s \
      --duration 20s --seed $((9000 + i)) --json \
      >"$out/$which-$proto-$i.json" 2>"$out/$which-$proto-$i.progress"
    after=$(cpu "$pid")
    kill -TERM "$pid"; wait "$pid" || true; pid=""; rm -f "$log"
    report "$out/$which-$proto-$i.json" "$before" "$after" "$rate" 5
  done
done
