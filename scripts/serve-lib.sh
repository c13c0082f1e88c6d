# Sourced by the benchmark scripts: start a `batchgate serve` on a free loopback port.
#
#   start_serve LOG FLAG...   sets $pid and $url (read from the server's log), or exits.
start_serve() {
  local log=$1
  shift
  start_listening "$log" "$bin" serve --listen 127.0.0.1:0 "$@"
}

#   start_listening LOG CMD...  runs CMD (stderr to LOG), which must log "listening on
#                             http://…"; sets $pid and $url, or exits.
start_listening() {
  local log=$1
  shift
  "$@" 2>"$log" &
  pid=$!
  url=""
  for _ in $(seq 1 200); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | sed 's/listening on //') || true
    [ -n "$url" ] && return 0
    sleep 0.05
  done
  echo "$1 did not start:" >&2
  cat "$log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}

#   cpu PID                   the process's CPU time so far (utime + stime), in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

#   report_run JSON BEFORE AFTER RATE WARMUP_SECS
#                             prints a bench report's ok/s, outcomes, p50/p99 and the server's CPU
#                             per request: AFTER - BEFORE ticks (from `cpu`) over the requests
#                             sent, warmup counted as half its requests at RATE.
report_run() {
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" "$4" "$5" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); before, after, ticks, rate, warmup = map(float, sys.argv[2:7])
sent = sum(r['outcomes'].values()); l = r.get('latency_ms') or {}
# Warmup requests are not in the report: count them as half the warmup at the full rate.
total = sent + rate * warmup / 2
print(f"{sys.argv[1]}: ok/s {r['achieved_rate']:.0f}  outcomes {r['outcomes']}  p50 {l.get('p50')}  p99 {l.get('p99')}  "
      f"server CPU {(after - before) / ticks:.1f} s = {(after - before) / ticks / total * 1e6:.1f} µs/request")
PY
}
