# Sourced by the benchmark scripts: start a `batchgate serve` on a free loopback port.
#
#   start_serve LOG FLAG...   sets $pid and $url (read from the server's log), or exits.
start_serve() {
  local log=$1
  shift
  "$bin" serve --listen 127.0.0.1:0 "$@" 2>"$log" &
  pid=$!
  url=""
  for _ in $(seq 1 200); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | sed 's/listening on //') || true
    [ -n "$url" ] && return 0
    sleep 0.05
  done
  echo "server did not start:" >&2
  cat "$log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}
