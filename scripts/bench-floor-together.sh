#!/usr/bin/env bash
# Server CPU per request of `batchgate serve` against its floor, both loaded AT THE SAME TIME:
# `serve --insecure-no-auth --sim-slots 40` and the floor example (a bare axum server on the
# same stack, holding each request --hold-ms 210; see crates/bench/examples/floor.rs), each
# with its own `batchgate bench` at RATE requests/s (default 8,000) over HTTP/1.1, for 20 s
# after a 5 s ramp, RUNS rounds (default 5).
#
#   scripts/bench-floor-together.sh OUT_DIR [RUNS] [RATE]
#
# Why together: this machine's speed drifts by a third and more between runs a minute apart
# (other tenants), so run one after the other (scripts/bench-floor.sh) the ratio of the two
# moves by as much as the difference it measures. Loaded together, the two servers and their
# load generators meet the same machine over the same 20 s, and the ratio of their CPU per
# request is read within each round. The price: the four processes share the two cores, so
# each figure is higher than the same server's alone; the ratio is what this measures. Which
# server starts first alternates from round to round.
#
# BIN (default target/release/batchgate) and FLOOR (default target/release/examples/floor)
# are not built here. Prints, per round, each server's ok/s, p99 and CPU per request sent
# (utime + stime from /proc over its bench's run, the ramp counted as half its requests) and
# the ratio; then the median of the rounds' ratios, and of each server's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: $0 OUT_DIR [RUNS] [RATE]}
runs=${2:-5}
rate=${3:-8000}
bin=${BIN:-target/release/batchgate}
floor_bin=${FLOOR:-target/release/examples/floor}
for b in "$bin" "$floor_bin"; do
  [ -x "$b" ] || { echo "no binary at $b (see the header of $0)" >&2; exit 1; }
done
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
mkdir -p "$out"
serve_pid="" floor_pid=""
trap '[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; [ -n "$floor_pid" ] && kill "$floor_pid" 2>/dev/null || true' EXIT

: >"$out/rounds.txt"
for i in $(seq 1 "$runs"); do
  serve_log=$(mktemp) floor_log=$(mktemp)
  start_serve() { start_listening "$serve_log" "$bin" serve --listen 127.0.0.1:0 --insecure-no-auth --sim-slots 40; serve_pid=$pid serve_url=$url; }
  start_floor() { start_listening "$floor_log" "$floor_bin" --listen 127.0.0.1:0 --hold-ms 210 --stack axum; floor_pid=$pid floor_url=$url; }
  if [ $((i % 2)) -eq 1 ]; then start_serve; start_floor; else start_floor; start_serve; fi
  sleep 0.5
  serve_before=$(cpu "$serve_pid") floor_before=$(cpu "$floor_pid")
  bench() { # NAME URL
    "$bin" bench --url "$2" --worker-slots 40 --rate "$rate" --warmup 5s --duration 20s \
      --seed $((9000 + i)) --json >"$out/$1-$i.json" 2>"$out/$1-$i.progress"
  }
  bench serve "$serve_url" &
  serve_bench=$!
  bench floor "$floor_url" &
  floor_bench=$!
  wait "$serve_bench"
  serve_after=$(cpu "$serve_pid")
  wait "$floor_bench"
  floor_after=$(cpu "$floor_pid")
  kill -TERM "$serve_pid" "$floor_pid"
  wait "$serve_pid" || true
  wait "$floor_pid" || true
  serve_pid="" floor_pid=""
  rm -f "$serve_log" "$floor_log"
  python3 - "$out" "$i" "$rate" "$(getconf CLK_TCK)" \
    "$serve_before" "$serve_after" "$floor_before" "$floor_after" <<'PY' | tee -a "$out/rounds.txt"
import json, sys
out, i, rate, ticks = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
sb, sa, fb, fa = map(float, sys.argv[5:9])
def cost(name, before, after):
    r = json.load(open(f"{out}/{name}-{i}.json"))
    us = (after - before) / ticks / (r["sent"] + rate * 5 / 2) * 1e6
    held = r["achieved_rate"] >= 0.99 * rate and set(r["outcomes"]) == {"ok"}
    return us, r, held
s, sr, sh = cost("serve", sb, sa)
f, fr, fh = cost("floor", fb, fa)
flag = "" if sh and fh else "  (a rate NOT held, or errors)"
print(f"round {i}: serve {s:.1f} µs/request (ok/s {sr['achieved_rate']:.0f}, p99 {sr['latency_ms']['p99']:.0f} ms)  "
      f"floor {f:.1f} (ok/s {fr['achieved_rate']:.0f}, p99 {fr['latency_ms']['p99']:.0f} ms)  ratio {s / f:.3f}{flag}")
PY
done
python3 - "$out/rounds.txt" <<'PY'
import re, statistics, sys
rows = [l for l in open(sys.argv[1]) if l.startswith("round")]
def col(pattern):
    return [float(re.search(pattern, l).group(1)) for l in rows]
ratio, serve, floor = col(r"ratio ([\d.]+)"), col(r"serve ([\d.]+)"), col(r"floor ([\d.]+)")
print(f"{len(rows)} rounds: ratio median {statistics.median(ratio):.3f} ({min(ratio):.3f} – {max(ratio):.3f}); "
      f"serve {statistics.median(serve):.1f} ({min(serve):.1f} – {max(serve):.1f}) µs/request, "
      f"floor {statistics.median(floor):.1f} ({min(floor):.1f} – {max(floor):.1f})")
PY
