#!/usr/bin/env bash
# Cost per request of batchgate's deployment shapes, side by side, on this machine, with the
# load generator (`batchgate bench`) on the same box.
#
#   scripts/bench-shapes.sh OUT SHAPE RATE [RUNS] [DURATION]      RUNS runs (default 3) at RATE/s
#   scripts/bench-shapes.sh OUT SHAPE search START STEP [RUNS]     highest rate held (see below)
#   scripts/bench-shapes-summary.py OUT*                           markdown tables of the runs
#
# e.g.  for s in embedded redis split cluster; do scripts/bench-shapes.sh /tmp/shapes/r "$s" 2000; done
#       scripts/bench-shapes-summary.py /tmp/shapes/r*
#
# SHAPE (every process on 127.0.0.1, fresh ones for every run, Redis on free ports, batchgate on :0):
#   embedded  serve --insecure-no-auth --sim-slots 40                        (no Redis)
#   redis     serve --insecure-no-auth --redis redis://… --sim-slots 40       one fresh standalone redis-server
#   embedded-worker, redis-worker   the same two with the simulated worker out of process, as
#             split and cluster have it: worker --sim --slots 40, serve --worker-url …
#             --max-inflight-batches 40 (the worker's HTTP hop costed alike in every shape)
#   split     one fresh standalone redis-server, worker --sim --slots 40, 2 gateways, 2 batchers
#             (--max-inflight-batches 20 each, 40 in all = the worker's slots)
#   cluster   as split on a fresh 6-node Redis Cluster (3 masters + 3 replicas, created with
#             redis-cli --cluster create … --cluster-replicas 1); gateways and batchers get
#             --redis-cluster and one --redis per master
#   redis-server always runs with --save "" --appendonly no.
#
# The load (`batchgate bench` defaults, checked in crates/bench): open loop, fixed spacing,
# HTTP/1.1 with one connection per request in flight (no --http2), each request
# `POST /v1/inference?wait_ms=30000` with JSON {"input": <2048 ASCII bytes, all distinct>,
# "client_id": …}, output checked against the simulated worker's; flags given here:
# --rate --duration DURATION (default 20s) --warmup 3s --seed <distinct per run and per bench
# process> --json --worker-slots 40. Split and cluster have two gateways: one bench process
# sends to both in turn (`--url A,B`), as the one-process shapes are sent to. With
# BENCH_PER_GATEWAY=1 they get a bench process each, at RATE/2, whose reports are merged into
# OUT-…json: counts and rates are summed, and each latency percentile (p50, p99, p99.9, max)
# is the WORSE (higher) of the two (an exact merge needs the histograms, which the JSON does
# not carry); mean is count-weighted; the two reports are kept under "parts".
#
# Per run: OUT-SHAPE-RATE-N.json (the bench report) and OUT-SHAPE-RATE-N.txt (human lines, then
# one `METRICS {json}` line for bench-shapes-summary.py). The .txt has, over a fixed WINDOW
# (10 s) in the middle of the measured period (20 s run, 3 s warmup: from 8 s to 18 s after the
# bench's start; shorter when DURATION is short: DURATION-2 s, centred):
#   - CPU (utime+stime from /proc/PID/stat) per request, in µs: batchgate (serve, or gateways +
#     batchers), the simulated worker on its own (split, cluster; in embedded and redis it runs
#     inside serve and is counted in batchgate), bench, redis-server (all of the shape's nodes;
#     for the cluster also masters and replicas apart);
#   - Redis round trips per request: total_reads_processed (read events = client round trips)
#     over the window ÷ requests; total_commands_processed ÷ requests; INFO commandstats calls
#     per command ÷ requests, and each command's time (its usec) ÷ requests (CONFIG RESETSTAT
#     on every node at the window's start, INFO at its end; this script's own RESETSTAT and
#     INFO are taken off). For the cluster, "per request"
#     Redis numbers are the MASTERS' (what clients sent); what the replicas applied from the
#     replication stream is given apart (replica reads are replication-link reads, not clients).
#   - requests in the window: counted by the bench, not estimated: the window is aligned to the
#     bench's once-a-second progress line (stderr), which carries cumulative sent/ok/errors; the
#     requests are the increase of `sent` between the two lines (summed over both bench
#     processes; arrivals are evenly spaced, so this is smooth, where answers come a batch at a
#     time); also given: answered (ok+errors) in the window, and as a cross-check the increase
#     of batchgate_tasks_accepted_total on the gateways (or serve), scraped at both edges.
#
# total_commands_processed vs script-internal calls (checked on this machine's Redis 7.0.15):
# after CONFIG RESETSTAT, 100 × `EVAL "redis.call('SET','a','1'); redis.call('GET','a')" 0`
# gave cmdstat eval=100, set=100, get=100 AND total_commands_processed=303 (100 EVAL + 200 inner
# + RESETSTAT, INFO, COMMAND DOCS), i.e. total_commands_processed INCLUDES the commands a script
# calls (so do EVALSHA/FCALL, and the SLOWLOG entry ids), and "commandstats − total" is ~0, not
# the script-internal count. No Redis 7.0 counter separates them (CLIENT LIST has no tot-cmds),
# and the names overlap (batchgate sends HSET, EXPIRE, XLEN, DEL, SET both directly and from
# admit.lua). So the split comes from a short MONITOR sample (MONITOR marks calls from scripts
# `[0 lua]`) taken on every master during the warmup, OUTSIDE the measured window and before the
# measured period (MONITOR_SECS, default 0: off, and the split is reported as n/a; e.g. 0.5 turns it on).
# MONITOR disturbs what it watches: Redis formats every command, script-internal calls and their
# arguments included, for the monitor. Half a second of it during the warmup at 9,000/s on
# `serve --redis` left a backlog the run never recovered from (p99 1.5 s, the bench's 10,000
# in flight reached) where the same run without it held (p99 239 ms). Take the split in runs
# whose latency is not used.
# from it, each command's share of calls made from scripts, lua[cmd] / (lua[cmd] + top[cmd]);
# in the window, script-internal[cmd] = that share × commandstats[cmd] (commands never seen in
# the sample count as top-level), top-level = commandstats total − script-internal. Top-level
# therefore counts EVAL/EVALSHA/FCALL plus the commands the client sent itself. (A share per
# command, not "calls per script invocation", so that it holds however many tasks one script
# call carries.) With no EVAL/EVALSHA/FCALL in the window, script-internal is 0 exactly.
#
# Rate search: `search START STEP [RUNS]` runs START, START+STEP, … (one run each, at most 10
# steps) until a run fails: p99 ≥ 500 ms, or errors > 0, or ok/s < 99% of the rate (or no
# window could be taken: a bench stalled or ended early, see `window` in the .txt). Then it runs
# the highest passing rate and the failing one RUNS (default 3) more times each and prints the
# highest of them held by the median of its runs (the step run included): median p99 < 500 ms
# and median errors 0. If all 10 steps pass, only the last is repeated (the answer is then "at
# least"). Files: OUT-SHAPE-RATE-1 for the steps, -2… for the repeats, OUT-SHAPE-search.txt.
#
# Environment: DURATION (20s; the search's only way to set it; the 5th argument wins over it),
# BIN (default target/release/batchgate: build it first, this script does not run
# cargo), WARMUP_SECS (3), WINDOW_SECS (10), MONITOR_SECS (0), SEED_BASE (epoch seconds),
# KEEP_LOGS=1 (keep the per-run directory of logs; it is always kept when a run fails),
# BENCH_FLAGS (more flags for every bench process, e.g. "--api openai" to load the OpenAI
# embeddings door, one input per request, instead of /v1/inference), REDIS_FLAGS (more flags
# for every gateway and batcher of split and cluster, e.g. "--partitions 3"; SERVE_FLAGS: the same
# for serve in the one-process shapes, e.g. "--dedupe-ttl-secs 0"), SERVICE_THREADS
# (`default`, batchgate's one per core; or N, the runtime threads of every batchgate process:
# serve, or each gateway, batcher and worker of split and cluster; with 1, split spent ≈ 26%
# less CPU per request at 6,000/s and serve ≈ 16% less, but near the machine's limit a
# process's one thread falls behind and the tail grows: split at 10,000/s, p99 2.1–2.7 s
# against 0.4–0.7 s on an earlier build). BACK_THREADS (`default`:
# as SERVICE_THREADS; or N) overrides it for the batchers and the worker alone.
# BENCH_PER_GATEWAY (0: one bench process sends to every gateway in turn, as in the one-process
# shapes; 1: one bench process per gateway, each at its share of the rate, as before 2026-12-05:
# the second process cost the client ≈ 15 µs more per request).
# SLOTS (40): the simulated worker's slots in every shape (capacity SLOTS × 64 / 0.2 s: 12,800/s
# at 40), the batchers' --max-inflight-batches SLOTS/2 each; raise it so that the cores, not the
# worker, bound the rate a search finds.
# CPUS, REDIS_CPUS (off; CPU lists as taskset takes them, e.g. CPUS=1 REDIS_CPUS=0): every
# process but redis-server (bench, batchgate, worker) runs on CPUS, and redis-server on
# REDIS_CPUS. With CPUS=1 REDIS_CPUS=0, Redis has a core to itself, as on its own host, which is
# where a deployment puts it, and the rest of the shape shares the other core; give the
# embedded shape the same CPUS to compare against it. (Runtimes size their threads to the
# CPUs they may use: one here, for bench and batchgate alike.)
# REDIS_UNIX (0; 1: batchgate reaches the standalone redis-server of redis, redis-worker and
# split over a Unix socket in the run's directory instead of loopback TCP, as a Redis on the
# same host may be reached; the TCP port stays open for the accounting).
# BATCHGATE_* variables are unset so that they cannot change the shapes.
# Everything started here is stopped by PID (TERM, then KILL after 15 s) when a run ends and in
# the EXIT trap.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,12p' "$0" >&2
  exit 2
}
[ $# -ge 3 ] || usage
out=$1 shape=$2
case $shape in embedded | redis | embedded-worker | redis-worker | split | cluster) ;; *) usage ;; esac

BIN=${BIN:-$PWD/target/release/batchgate}
WARMUP_SECS=${WARMUP_SECS:-3}
WINDOW_SECS=${WINDOW_SECS:-10}
MONITOR_SECS=${MONITOR_SECS:-0}
SERVICE_THREADS=${SERVICE_THREADS:-default}
BACK_THREADS=${BACK_THREADS:-default}
BENCH_PER_GATEWAY=${BENCH_PER_GATEWAY:-0}
SEED_BASE=${SEED_BASE:-$(date +%s)}
KEEP_LOGS=${KEEP_LOGS:-0}
SLOTS=${SLOTS:-40}  # simulated worker slots, every shape
INFLIGHT=$((SLOTS / 2))  # --max-inflight-batches of each of the 2 batchers (split, cluster)
P99_LIMIT_MS=500   # pass/held: p99 below this, no errors
MIN_ACHIEVED=0.99  # pass: ok/s at least this fraction of the rate
MAX_STEPS=10       # rate search bound
STOP_GRACE=15      # seconds between TERM and KILL

[ -x "$BIN" ] || { echo "no batchgate binary at $BIN (build it: cargo build --release -p batchgate, or set BIN)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
if [ "${shape%-worker}" != embedded ] && ! { command -v redis-server && command -v redis-cli; } >/dev/null; then
  echo "redis-server and redis-cli are needed (apt-get install -y redis-server)" >&2
  exit 1
fi
while read -r v; do unset "$v"; done < <(compgen -e | grep '^BATCHGATE_' || true)
mkdir -p "$(dirname "$out")"
is_number() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]] && python3 -c "import sys; sys.exit(not float(sys.argv[1]) > 0)" "$1"; }
secs_of() { # 20s / 20 -> 20
  [[ $1 =~ ^([0-9]+)s?$ ]] || { echo "DURATION must be whole seconds, like 20s: got $1" >&2; exit 2; }
  echo "${BASH_REMATCH[1]}"
}

# ---- processes ---------------------------------------------------------------------------
pids=()      # every process started (and not yet stopped), stopped by PID
procs=()     # "role name pid" of the processes whose CPU is measured
rundir=""
run_seq=0    # runs so far in this invocation (seeds)

# alive PID: running (not gone, not a zombie waiting for `wait`)
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_all() {
  local p deadline left
  [ ${#pids[@]} -gt 0 ] || return 0
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  deadline=$((SECONDS + STOP_GRACE))
  while :; do
    left=()
    for p in "${pids[@]}"; do
      if alive "$p"; then left+=("$p"); fi
    done
    [ ${#left[@]} -eq 0 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "still running after ${STOP_GRACE}s, killing: ${left[*]}" >&2
      for p in "${left[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
      break
    fi
    sleep 0.1
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    if [ -e "/proc/$p" ]; then echo "warning: PID $p is still there after stop" >&2; fi
  done
  pids=()
  procs=()
}
on_exit() {
  local rc=$?
  stop_all
  if [ -n "$rundir" ] && [ -d "$rundir" ]; then
    if [ "$rc" -ne 0 ]; then echo "logs of the failed run: $rundir" >&2; else rm -rf "$rundir"; fi
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ---- CPUS / REDIS_CPUS: where the processes may run ------------------------------------------
# "${on_cpus[@]}" CMD... / "${on_redis_cpus[@]}" CMD...: CMD pinned (taskset); empty when unset.
on_cpus=() on_redis_cpus=()
if [ -n "${CPUS:-}" ] || [ -n "${REDIS_CPUS:-}" ]; then
  command -v taskset >/dev/null || { echo "CPUS and REDIS_CPUS need taskset (util-linux)" >&2; exit 1; }
  if [ -n "${CPUS:-}" ]; then on_cpus=(taskset -c "$CPUS"); "${on_cpus[@]}" true || exit 2; fi
  if [ -n "${REDIS_CPUS:-}" ]; then on_redis_cpus=(taskset -c "$REDIS_CPUS"); "${on_redis_cpus[@]}" true || exit 2; fi
fi

# forget PID: drop a process that ended and was waited for (its PID may be reused).
forget() {
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
# start ROLE NAME CMD...: in the background, log in $rundir/NAME.log; its CPU is measured.
# With CPUS / REDIS_CPUS it is pinned (taskset execs the command: the PID stays the same).
start() {
  local role=$1 name=$2
  shift 2
  if [ "$role" = redis ]; then
    "${on_redis_cpus[@]}" "$@" >"$rundir/$name.log" 2>&1 &
  else
    "${on_cpus[@]}" "$@" >"$rundir/$name.log" 2>&1 &
  fi
  pids+=("$!")
  procs+=("$role $name $!")
}
# url_of NAME: the http://host:port batchgate announced in its log.
url_of() {
  local name=$1 u i
  for i in $(seq 1 400); do
    u=$(grep -o 'listening on http://[0-9.:]*' "$rundir/$name.log" | head -n1 | sed 's/listening on //') || true
    [ -n "$u" ] && { echo "$u"; return 0; }
    [ $((i % 20)) -ne 0 ] || pid_alive_or_die "$name"
    sleep 0.05
  done
  echo "$name announced no address in 20 s:" >&2
  cat "$rundir/$name.log" >&2
  exit 1
}
pid_alive_or_die() { # NAME: exits with its log if that process has ended
  local line n p
  for line in "${procs[@]}"; do
    read -r _ n p <<<"$line"
    if [ "$n" = "$1" ] && ! alive "$p"; then
      echo "$n (PID $p) exited:" >&2
      cat "$rundir/$n.log" >&2
      exit 1
    fi
  done
}
wait_ready() { # URL NAME
  local i
  for i in $(seq 1 300); do
    curl -fsS --max-time 1 "$1/readyz" >/dev/null 2>&1 && return 0
    [ $((i % 10)) -ne 0 ] || pid_alive_or_die "$2"
    sleep 0.1
  done
  echo "$2 at $1 not ready in 30 s:" >&2
  cat "$rundir/$2.log" >&2
  exit 1
}
# free_ports N [bus]: N distinct free loopback ports (with bus: port+10000 free as well).
free_ports() {
  python3 - "$1" "${2:-}" <<'PY'
import random, socket, sys
n, bus = int(sys.argv[1]), sys.argv[2] == "bus"
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
got = []
while len(got) < n:
    if bus:   # below the ephemeral range, and its cluster bus port (+10000) under 65536
        p = random.randint(20000, 29999)
    else:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p in got or (bus and (p + 10000 in got or not free(p) or not free(p + 10000))):
        continue
    got.append(p)
print(" ".join(map(str, got)))
PY
}
rcli() { redis-cli -h 127.0.0.1 -p "$@"; }
wait_redis() { # PORT NAME
  local i
  for i in $(seq 1 200); do
    rcli "$1" PING >/dev/null 2>&1 && return 0
    [ $((i % 20)) -ne 0 ] || pid_alive_or_die "$2"
    sleep 0.05
  done
  echo "$2 on port $1 did not answer PING" >&2
  cat "$rundir/$2.log" >&2
  exit 1
}

# ---- the shapes --------------------------------------------------------------------------
# Each sets: gateways (base URLs the benches use), metric_urls (where tasks_accepted is),
# redis_ports / redis_roles (master|replica|standalone) for the Redis accounting.
start_standalone_redis() {
  local port
  port=$(free_ports 1)
  start redis redis-"$port" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$rundir" --unixsocket "$rundir/redis.sock" --unixsocketperm 700
  wait_redis "$port" redis-"$port"
  redis_ports=("$port")
  redis_roles=(standalone)
  if [ "${REDIS_UNIX:-0}" = 1 ]; then
    standalone_url="unix://$rundir/redis.sock"
  else
    standalone_url="redis://127.0.0.1:$port"
  fi
}
start_cluster() {
  local ports p i nodes=() masters=() created role
  read -r -a ports <<<"$(free_ports 6 bus)"
  for p in "${ports[@]}"; do
    mkdir -p "$rundir/node-$p"
    start redis redis-"$p" redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$rundir/node-$p/nodes.conf" --cluster-node-timeout 5000 \
      --save "" --appendonly no --dir "$rundir/node-$p"
    nodes+=("127.0.0.1:$p")
  done
  for p in "${ports[@]}"; do wait_redis "$p" redis-"$p"; done
  rcli "${ports[0]}" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
    >"$rundir/cluster-create.log" 2>&1 || { cat "$rundir/cluster-create.log" >&2; exit 1; }
  # Up when every node says cluster_state:ok, every master has its replica connected, and
  # every replica's link to its master is up.
  created=""
  for i in $(seq 1 600); do
    local ok=1 nm=0 nr=0
    for p in "${ports[@]}"; do
      rcli "$p" CLUSTER INFO 2>/dev/null | grep -q '^cluster_state:ok' || { ok=0; break; }
      local repl
      repl=$(rcli "$p" INFO replication 2>/dev/null | tr -d '\r')
      if grep -q '^role:master' <<<"$repl"; then
        grep -q '^connected_slaves:1$' <<<"$repl" || { ok=0; break; }
        nm=$((nm + 1))
      else
        grep -q '^master_link_status:up' <<<"$repl" || { ok=0; break; }
        nr=$((nr + 1))
      fi
    done
    if [ "$ok" = 1 ] && [ "$nm" = 3 ] && [ "$nr" = 3 ]; then created=1; break; fi
    sleep 0.1
  done
  [ -n "$created" ] || { echo "the Redis Cluster did not come up in 60 s" >&2; exit 1; }
  redis_ports=() redis_roles=()
  for p in "${ports[@]}"; do
    role=$(rcli "$p" INFO replication | tr -d '\r' | sed -n 's/^role://p')
    if [ "$role" = slave ]; then role=replica; else masters+=("redis://127.0.0.1:$p"); fi
    redis_ports+=("$p")
    redis_roles+=("$role")
  done
  redis_flags=(--redis-cluster)
  for p in "${masters[@]}"; do redis_flags+=(--redis "$p"); done
}
# REDIS_FLAGS: more flags for every gateway and batcher of split and cluster (e.g. "--partitions 3").
read -r -a extra_redis_flags <<< "${REDIS_FLAGS:-}"
# SERVE_FLAGS: more flags for serve in the one-process shapes (embedded, redis, *-worker).
read -r -a extra_serve_flags <<< "${SERVE_FLAGS:-}"
start_shape() {
  local url wurl i
  gateways=() metric_urls=() redis_ports=() redis_roles=()
  case $shape in
  embedded | redis | embedded-worker | redis-worker)
    local extra=()
    case $shape in redis | redis-worker)
      start_standalone_redis
      extra=(--redis "$standalone_url")
    esac
    [ "$SERVICE_THREADS" = default ] || extra+=(--worker-threads "$SERVICE_THREADS")
    case $shape in
    *-worker)
      # The worker out of process, called over HTTP, as split and cluster call it.
      start worker worker "$BIN" worker --sim --listen 127.0.0.1:0 --slots "$SLOTS"
      extra+=(--worker-url "$(url_of worker)" --max-inflight-batches "$SLOTS") ;;
    *) extra+=(--sim-slots "$SLOTS") ;;
    esac
    start batchgate serve "$BIN" serve --insecure-no-auth --listen 127.0.0.1:0 "${extra[@]}" \
      "${extra_serve_flags[@]}"
    url=$(url_of serve)
    wait_ready "$url" serve
    gateways=("$url")
    metric_urls=("$url")
    ;;
  split | cluster)
    if [ "$shape" = split ]; then
      start_standalone_redis
      redis_flags=(--redis "$standalone_url")
    else
      start_cluster
    fi
    local threads=() back_threads=()
    [ "$SERVICE_THREADS" = default ] || threads=(--worker-threads "$SERVICE_THREADS")
    back_threads=("${threads[@]}")
    [ "$BACK_THREADS" = default ] || back_threads=(--worker-threads "$BACK_THREADS")
    start worker worker "$BIN" worker --sim --listen 127.0.0.1:0 --slots "$SLOTS" "${back_threads[@]}"
    wurl=$(url_of worker)
    for i in 1 2; do
      start batchgate batcher$i "$BIN" batcher --listen 127.0.0.1:0 "${redis_flags[@]}" \
        --worker-url "$wurl" --max-inflight-batches "$INFLIGHT" "${back_threads[@]}" "${extra_redis_flags[@]}"
    done
    for i in 1 2; do
      start batchgate gateway$i "$BIN" gateway --insecure-no-auth --listen 127.0.0.1:0 "${redis_flags[@]}" \
        "${threads[@]}" "${extra_redis_flags[@]}"
    done
    for i in 1 2; do url_of batcher$i >/dev/null; done
    for i in 1 2; do
      url=$(url_of gateway$i)
      wait_ready "$url" gateway$i
      gateways+=("$url")
      metric_urls+=("$url")
    done
    ;;
  esac
}

# ---- measuring ---------------------------------------------------------------------------
# python3 -c "$monitor_py" SECS OUT PORT...: counts MONITOR lines per command, top-level vs
# "[0 lua]", on every PORT at once for SECS, then exits by itself.
monitor_py=$(
  cat <<'PY'
import json, re, selectors, socket, sys, time
secs, out, ports = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
line = re.compile(rb'^\+[0-9.]+ \[[0-9]+ ([^\]]*)\] "([^"]*)"', re.M)
sel = selectors.DefaultSelector()
bufs = {}
for p in ports:
    s = socket.create_connection(("127.0.0.1", int(p)))
    s.sendall(b"MONITOR\r\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    bufs[s] = b""
counts = {"top": {}, "lua": {}}
def take(chunk):
    for m in line.finditer(chunk):
        kind = "lua" if m.group(1) == b"lua" else "top"
        name = m.group(2).decode("ascii", "replace").lower()
        counts[kind][name] = counts[kind].get(name, 0) + 1
end = time.monotonic() + secs
while (left := end - time.monotonic()) > 0:
    for key, _ in sel.select(timeout=left):
        data = key.fileobj.recv(1 << 20)
        if not data:
            continue
        buf = bufs[key.fileobj] + data
        cut = buf.rfind(b"\n") + 1
        take(buf[:cut])
        bufs[key.fileobj] = buf[cut:]
for s in bufs:
    s.close()
json.dump({"secs": secs, **counts}, open(out, "w"))
PY
)

# snap EDGE: CPU ticks of every process, the benches' last progress lines, the time, the
# tasks_accepted counters; at t0 CONFIG RESETSTAT on every Redis node, at t1 their INFO.
snap() {
  local edge=$1 files=() line role name pid k i u
  date +%s.%N >"$rundir/$edge.time"
  for line in "${procs[@]}"; do
    read -r role name pid <<<"$line"
    if [ ! -r "/proc/$pid/stat" ]; then
      # a bench that ended early leaves no window (the run is reported without one); anything
      # else that ended is a crash: stop here
      [ "$role" = bench ] && { echo "$name ended before the window did" >&2; return 1; }
      echo "$name (PID $pid) died during the run" >&2
      cat "$rundir/$name.log" >&2
      exit 1
    fi
    files+=("/proc/$pid/stat")
  done
  awk '{split(FILENAME, f, "/"); print f[3], $14 + $15}' "${files[@]}" >"$rundir/$edge.ticks"
  for k in "${!bench_pids[@]}"; do tail -n1 "$rundir/bench$((k + 1)).progress" >"$rundir/$edge.progress$((k + 1))"; done
  local bg=()
  for i in "${!redis_ports[@]}"; do
    if [ "$edge" = t0 ]; then
      rcli "${redis_ports[$i]}" CONFIG RESETSTAT >/dev/null &
    else
      rcli "${redis_ports[$i]}" INFO stats commandstats >"$rundir/t1.redis-${redis_ports[$i]}" &
    fi
    bg+=("$!")
  done
  for i in "${!metric_urls[@]}"; do
    u=${metric_urls[$i]}
    curl -fsS --max-time 2 "$u/metrics" 2>/dev/null | grep -E '^batchgate_tasks_accepted(_total)?[ {]' \
      >"$rundir/$edge.accepted$i" &
    bg+=("$!")
  done
  for pid in "${bg[@]}"; do wait "$pid" || true; done
}
# wait_progress SECS: until bench 1's progress line says SECS or more have elapsed; fails if
# bench 1 ends first or no such line comes within 10 s of when it was due.
wait_progress() {
  local want=$1 line e deadline
  deadline=$(python3 -c "import sys; print(float(sys.argv[1]) + float(sys.argv[2]) + 10)" "$bench_t0" "$want")
  # sleep most of the way, then look often
  local nap
  nap=$(python3 -c "import sys,time; print(max(0.0, float(sys.argv[1]) + float(sys.argv[2]) - 0.3 - time.time()))" "$bench_t0" "$want")
  sleep "$nap"
  while :; do
    line=$(tail -n1 "$rundir/bench1.progress" 2>/dev/null) || true
    if [[ $line =~ ^\[\ *([0-9]+)\.[0-9]+s ]]; then
      e=${BASH_REMATCH[1]}
      [ "$e" -ge "$want" ] && return 0
    fi
    if ! alive "${bench_pids[0]}"; then
      echo "bench 1 ended before ${want}s: no window for this run" >&2
      return 1
    fi
    if [ "$(date +%s)" -gt "${deadline%.*}" ]; then
      echo "no progress line of ${want}s from bench 1 (stalled?): no window for this run" >&2
      return 1
    fi
    sleep 0.01
  done
}

# run_one RATE N: one run, files OUT-SHAPE-RATE-N.{json,txt}.
run_one() {
  local rate=$1 n=$2 base k seed nb per_rate ws we win
  base="$out-$shape-$rate-$n"
  run_seq=$((run_seq + 1))
  rundir=$(mktemp -d /tmp/bg-shapes.XXXXXX)
  start_shape
  # One bench process in every shape (the same client cost), sending to the gateways in turn
  # (`--url A,B`), unless BENCH_PER_GATEWAY=1: one process per gateway, each at its share.
  local targets=()
  if [ "$BENCH_PER_GATEWAY" = 1 ]; then
    targets=("${gateways[@]}")
  else
    targets=("$(IFS=,; echo "${gateways[*]}")")
  fi
  nb=${#targets[@]}
  per_rate=$(python3 -c "import sys; print(float(sys.argv[1]) / int(sys.argv[2]))" "$rate" "$nb")
  win=$((dur < WINDOW_SECS + 2 ? dur - 2 : WINDOW_SECS))
  [ "$win" -ge 1 ] || { echo "DURATION ${dur}s is too short for a window (3 s at least)" >&2; exit 2; }
  ws=$((WARMUP_SECS + (dur - win) / 2))
  we=$((ws + win))
  bench_pids=() seeds=()
  bench_t0=$(date +%s.%N)
  for k in $(seq 1 "$nb"); do
    seed=$((SEED_BASE * 1000 + run_seq * 2 + k))
    seeds+=("$seed")
    "${on_cpus[@]}" "$BIN" bench --url "${targets[$((k - 1))]}" --rate "$per_rate" --duration "${dur}s" \
      --warmup "${WARMUP_SECS}s" --seed "$seed" --json --worker-slots "$SLOTS" ${BENCH_FLAGS:-} \
      >"$rundir/bench$k.json" 2>"$rundir/bench$k.progress" &
    bench_pids+=("$!")
    pids+=("$!")
    procs+=("bench bench$k $!")
  done
  # Script-internal calls per script invocation, from MONITOR on every master, in the warmup.
  local mon_pid="" mports=()
  for k in "${!redis_ports[@]}"; do
    [ "${redis_roles[$k]}" = replica ] || mports+=("${redis_ports[$k]}")
  done
  local mstart
  mstart=$(python3 -c "import sys; print(float(sys.argv[1]) - 0.5 - float(sys.argv[2]))" "$WARMUP_SECS" "$MONITOR_SECS")
  if [ ${#mports[@]} -gt 0 ] && python3 -c "import sys; sys.exit(not (float(sys.argv[1]) > 0 and float(sys.argv[2]) >= 0.5))" "$MONITOR_SECS" "$mstart"; then
    sleep "$(python3 -c "import sys,time; print(max(0.0, float(sys.argv[1]) + float(sys.argv[2]) - time.time()))" "$bench_t0" "$mstart")"
    python3 -c "$monitor_py" "$MONITOR_SECS" "$rundir/monitor.json" "${mports[@]}" &
    mon_pid=$!
    pids+=("$mon_pid")
  elif [ ${#mports[@]} -gt 0 ] && python3 -c "import sys; sys.exit(not float(sys.argv[1]) > 0)" "$MONITOR_SECS"; then
    echo "no MONITOR sample: WARMUP_SECS must be at least MONITOR_SECS + 1" >&2
  fi
  if [ -n "$mon_pid" ]; then
    wait "$mon_pid" || echo "MONITOR sample failed" >&2
    forget "$mon_pid"
  fi
  # The window; without one (a bench stalled or ended early) the run is still reported, with
  # the bench's numbers only (and fails).
  window_ok=0
  if wait_progress "$ws" && snap t0 && wait_progress "$we" && snap t1; then window_ok=1; fi
  local rc=0
  for k in "${bench_pids[@]}"; do
    wait "$k" || rc=$?
    forget "$k"
  done
  [ "$rc" = 0 ] || { echo "a bench process failed (exit $rc):" >&2; cat "$rundir"/bench*.progress >&2; exit 1; }
  # the processes' shape, for the report, before stop_all forgets them
  printf '%s\n' "${procs[@]}" >"$rundir/procs"
  for k in "${!redis_ports[@]}"; do echo "${redis_ports[$k]} ${redis_roles[$k]}"; done >"$rundir/redis-nodes"
  stop_all
  report "$rate" "$base"
  if [ "$KEEP_LOGS" = 1 ]; then echo "logs: $rundir" >&2; else rm -rf "$rundir"; fi
  rundir=""
}

# report RATE BASE: writes BASE.json (the bench report, merged if two) and BASE.txt.
report() {
  python3 - "$rundir" "$1" "$2" "$shape" "$(getconf CLK_TCK)" "$P99_LIMIT_MS" "$MIN_ACHIEVED" \
    "$window_ok" "$WARMUP_SECS" "$dur" "${seeds[@]}" <<'PY'
import glob, json, os, re, sys
rundir, rate, base, shape, clk, p99_limit, min_achieved, window_ok, warmup, dur = sys.argv[1:11]
window_ok, warmup, dur = window_ok == "1", float(warmup), float(dur)
seeds = [int(s) for s in sys.argv[11:]]
rate, clk, p99_limit, min_achieved = float(rate), float(clk), float(p99_limit), float(min_achieved)
nb = len(seeds)

# -- the bench report(s) --
parts = [json.load(open(f"{rundir}/bench{k}.json")) for k in range(1, nb + 1)]
if nb == 1:
    merged = parts[0]
else:
    outcomes = {}
    for p in parts:
        for k, v in p["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    lats = [p["latency_ms"] for p in parts if p.get("latency_ms")]
    latency = None
    if lats:
        count = sum(l["count"] for l in lats)
        latency = {"count": count, "mean": sum(l["mean"] * l["count"] for l in lats) / count}
        for q in ("p50", "p90", "p99", "p999", "max"):
            latency[q] = max(l[q] for l in lats)
    config = dict(parts[0]["config"])
    config["rate"] = sum(p["config"]["rate"] for p in parts)
    config["url"] = [p["config"]["url"] for p in parts]
    config["seed"] = [p["config"]["seed"] for p in parts]
    merged = {
        "merged_from": nb,
        "merge": "sum of counts and rates; each latency percentile is the worse (higher) of the "
                 "parts' (no histograms in the JSON); mean weighted by count",
        "config": config,
        "measured_secs": max(p["measured_secs"] for p in parts),
        "sent": sum(p["sent"] for p in parts),
        "ok": sum(p["ok"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "achieved_rate": sum(p["achieved_rate"] for p in parts),
        "outcomes": outcomes,
        "latency_ms": latency,
        "server": [p["server"] for p in parts],
        "parts": parts,
    }
json.dump(merged, open(base + ".json", "w"), indent=2)

# -- the window (None without one) --
def window():
    procs = [l.split() for l in open(f"{rundir}/procs")]      # role name pid
    def ticks(edge):
        return dict((a, int(b)) for a, b in (l.split() for l in open(f"{rundir}/{edge}.ticks")))
    t0, t1 = ticks("t0"), ticks("t1")
    wall = float(open(f"{rundir}/t1.time").read()) - float(open(f"{rundir}/t0.time").read())
    prog = re.compile(r"^\[\s*([0-9.]+)s[^\]]*\] sent (\d+)\s+ok (\d+)\s+errors (\d+)")
    def progress(edge, k):
        m = prog.match(open(f"{rundir}/{edge}.progress{k}").read())
        if not m:
            raise ValueError(f"unreadable progress line {rundir}/{edge}.progress{k}")
        return [float(m.group(1))] + [int(g) for g in m.groups()[1:]]
    sent = ok = answered = 0
    bench_secs = None
    for k in range(1, nb + 1):
        a, b = progress("t0", k), progress("t1", k)
        sent += b[1] - a[1]
        ok += b[2] - a[2]
        answered += (b[2] + b[3]) - (a[2] + a[3])
        if k == 1:
            bench_secs, e0, e1 = b[0] - a[0], a[0], b[0]
    def accepted(edge):
        total, seen = 0.0, False
        for f in glob.glob(f"{rundir}/{edge}.accepted*"):
            for l in open(f):
                total += float(l.split()[-1]); seen = True
        return total if seen else None
    acc0, acc1 = accepted("t0"), accepted("t1")
    accepted_window = acc1 - acc0 if acc0 is not None and acc1 is not None else None
    reqs = sent
    if reqs <= 0:
        raise ValueError("no requests sent in the window")

    cpu = {}         # group -> seconds
    cpu_proc = {}    # name -> seconds
    nodes = dict(l.split() for l in open(f"{rundir}/redis-nodes")) if os.path.getsize(f"{rundir}/redis-nodes") else {}
    for role, name, pid in procs:
        s = (t1[pid] - t0[pid]) / clk
        cpu_proc[name] = s
        group = role
        if role == "redis" and shape == "cluster":
            group = "redis_" + nodes[name.split("-")[1]]   # redis_master / redis_replica
        cpu[group] = cpu.get(group, 0.0) + s
    if shape == "cluster":
        cpu["redis"] = cpu.get("redis_master", 0.0) + cpu.get("redis_replica", 0.0)
    us = lambda s: s / reqs * 1e6 if s is not None else None

    # -- Redis: INFO stats + commandstats at t1 (counters reset at t0) --
    def info(port):
        stats, calls, usec = {}, {}, {}
        for l in open(f"{rundir}/t1.redis-{port}"):
            l = l.strip()
            if l.startswith("cmdstat_"):
                name, rest = l[len("cmdstat_"):].split(":", 1)
                calls[name] = int(rest.split("calls=")[1].split(",")[0])
                usec[name] = int(rest.split("usec=")[1].split(",")[0])
            elif ":" in l and not l.startswith("#"):
                k, v = l.split(":", 1)
                stats[k] = v
        # this script's own: CONFIG RESETSTAT (1 command, counted after the reset with its read)
        # and INFO's read (INFO itself is counted after it answers)
        reads = int(stats["total_reads_processed"]) - 2
        cmds = int(stats["total_commands_processed"]) - 1
        calls["config|resetstat"] = calls.get("config|resetstat", 0) - 1
        usec = {k: v for k, v in usec.items() if calls.get(k, 0) > 0}
        calls = {k: v for k, v in calls.items() if v > 0}
        return reads, cmds, calls, usec
    redis = None
    if nodes:
        groups = {}
        for port, role in nodes.items():
            g = "replica" if role == "replica" else "client"   # masters / standalone: what clients sent
            reads, cmds, calls, usec = info(port)
            d = groups.setdefault(g, {"reads": 0, "cmds": 0, "calls": {}, "usec": {}})
            d["reads"] += reads; d["cmds"] += cmds
            for k, v in calls.items():
                d["calls"][k] = d["calls"].get(k, 0) + v
            for k, v in usec.items():
                d["usec"][k] = d["usec"].get(k, 0) + v
        c = groups["client"]
        total_calls = sum(c["calls"].values())
        script_names = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
        invocations = sum(c["calls"].get(n, 0) for n in script_names)
        split = None
        try:
            mon = json.load(open(f"{rundir}/monitor.json"))
        except (OSError, ValueError):
            mon = None
        if invocations == 0:
            split = {"top_level": total_calls, "script_internal": 0, "per_command_internal": {}, "sample": mon}
        elif mon:
            # Each command's share of calls made from scripts in the sample, applied to its calls
            # in the window: robust to how many tasks one script call carries (batched admits).
            per_cmd = {}
            for name, n in mon["lua"].items():
                share = n / (n + mon["top"].get(name, 0))
                # MONITOR names a container command by its first word (XINFO), commandstats by
                # command|subcommand (xinfo|groups)
                for cname, calls in c["calls"].items():
                    if cname == name or cname.startswith(name + "|"):
                        per_cmd[cname] = share * calls
            internal = sum(per_cmd.values())
            split = {"top_level": total_calls - internal, "script_internal": internal,
                     "per_command_internal": per_cmd,
                     "sample": {"secs": mon["secs"],
                                "script_invocations": sum(mon["top"].get(n, 0) for n in script_names),
                                "script_internal_calls": sum(mon["lua"].values()),
                                "top_level_calls": sum(mon["top"].values())}}
        redis = {
            "round_trips_per_req": c["reads"] / reqs,
            "commands_processed_per_req": c["cmds"] / reqs,
            "commandstats_per_req": total_calls / reqs,
            "commandstats_minus_processed_per_req": (total_calls - c["cmds"]) / reqs,
            "top_level_per_req": split["top_level"] / reqs if split else None,
            "script_internal_per_req": split["script_internal"] / reqs if split else None,
            "script_invocations_per_req": invocations / reqs,
            "per_command_per_req": {k: v / reqs for k, v in sorted(c["calls"].items(), key=lambda kv: -kv[1])},
            "per_command_usec_per_req": {k: v / reqs for k, v in sorted(c["usec"].items(), key=lambda kv: -kv[1])},
            "per_command_internal_per_req": {k: v / reqs for k, v in split["per_command_internal"].items()} if split else None,
            "split_sample": split["sample"] if split else None,
        }
        if "replica" in groups:
            r = groups["replica"]
            redis["replica_reads_per_req"] = r["reads"] / reqs
            redis["replica_commands_per_req"] = sum(r["calls"].values()) / reqs
            redis["replica_per_command_per_req"] = {k: v / reqs for k, v in sorted(r["calls"].items(), key=lambda kv: -kv[1])}
    return {"wall": wall, "bench_secs": bench_secs, "e0": e0, "e1": e1, "reqs": reqs,
            "answered": answered, "ok": ok, "accepted": accepted_window,
            "cpu": cpu, "cpu_proc": cpu_proc, "us": {
                "batchgate": us(cpu.get("batchgate")),
                "worker": us(cpu.get("worker")),
                "batchgate_and_worker": us(cpu.get("batchgate", 0.0) + cpu.get("worker", 0.0)),
                "bench": us(cpu.get("bench")),
                "redis": us(cpu.get("redis")),
                "redis_master": us(cpu.get("redis_master")),
                "redis_replica": us(cpu.get("redis_replica")),
            }, "redis": redis}

w, why = None, "not taken: a bench stalled or ended early"
if window_ok:
    try:
        w = window()
    except (OSError, ValueError, KeyError) as error:
        why = f"unusable: {error}"
if w and not (warmup - 0.5 <= w["e0"] and w["e1"] <= warmup + dur + 0.5):
    why = (f"outside the measured period ({w['e0']:.1f}-{w['e1']:.1f} s by the bench's clock; "
           f"measured {warmup:g}-{warmup + dur:g} s): the bench was late")
    w = None

lat = merged.get("latency_ms") or {}
passed = (lat.get("p99") is not None and lat["p99"] < p99_limit and merged["errors"] == 0
          and merged["achieved_rate"] >= min_achieved * rate and w is not None)
m = {
    "shape": shape, "rate": rate, "run": int(base.rsplit("-", 1)[1]), "seeds": seeds,
    "bench_processes": nb,
    "ok_per_s": merged["achieved_rate"], "errors": merged["errors"], "outcomes": merged["outcomes"],
    "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"), "p999_ms": lat.get("p999"),
    "pass": passed,
    "window": None if w is None else {
        "wall_secs": w["wall"], "bench_secs": w["bench_secs"], "from_secs": w["e0"], "to_secs": w["e1"],
        "requests": w["reqs"], "answered": w["answered"], "ok": w["ok"],
        "accepted_by_batchgate": w["accepted"]},
    "window_missing": None if w else why,
    "cpu_secs": w and w["cpu"], "cpu_secs_per_process": w and w["cpu_proc"],
    "us_per_req": w["us"] if w else {},
    "redis": w and w["redis"],
}
f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
with open(base + ".txt", "w") as o:
    p = lambda *a: print(*a, file=o)
    p(f"{shape} at {rate:g}/s, run {m['run']}: ok/s {merged['achieved_rate']:.1f}  errors {merged['errors']} "
      f"{merged['outcomes']}  p50 {f(lat.get('p50'))}  p99 {f(lat.get('p99'))}  p99.9 {f(lat.get('p999'))} ms  "
      f"{'PASS' if passed else 'FAIL'} (p99 < {p99_limit:g} ms, no errors, ok/s >= {min_achieved:.0%} of the rate)")
    if w is None:
        p(f"window {why}")
    else:
        p(f"window: {w['e0']:.1f}-{w['e1']:.1f} s by the bench's clock ({w['wall']:.2f} s wall), {w['reqs']} requests sent "
          f"(answered {w['answered']}, ok {w['ok']}; accepted by batchgate {f(w['accepted'], 0)})")
        u = m["us_per_req"]
        p("CPU µs/request: " + "  ".join(f"{k} {f(v)}" for k, v in u.items() if v is not None))
        p("CPU s per process: " + ", ".join(f"{k} {v:.2f}" for k, v in w["cpu_proc"].items()))
    redis = m["redis"]
    if redis:
        p(f"Redis per request: round trips {redis['round_trips_per_req']:.2f}  "
          f"total_commands_processed {redis['commands_processed_per_req']:.2f}  "
          f"commandstats calls {redis['commandstats_per_req']:.2f} "
          f"(top-level {f(redis['top_level_per_req'], 2)}, script-internal {f(redis['script_internal_per_req'], 2)}; "
          f"script invocations {redis['script_invocations_per_req']:.2f})")
        p("  commands: " + ", ".join(f"{k} {v:.3f}" for k, v in redis["per_command_per_req"].items() if v >= 0.001))
        p("  time in commands, µs/request (Redis's own timer; a script's or EXEC's includes the commands it ran): "
          + ", ".join(f"{k} {v:.2f}" for k, v in redis["per_command_usec_per_req"].items() if v >= 0.01))
        if redis["per_command_internal_per_req"]:
            p("  of which from scripts: " + ", ".join(f"{k} {v:.3f}" for k, v in redis["per_command_internal_per_req"].items()))
        if redis.get("replica_commands_per_req") is not None:
            p(f"  replicas applied {redis['replica_commands_per_req']:.2f} commands/request "
              f"({redis['replica_reads_per_req']:.2f} replication-link reads/request)")
    p("METRICS " + json.dumps(m))
print(open(base + ".txt").read().split("\nMETRICS ")[0])
PY
}

passes() { # BASE -> exit 0 if the run passed
  python3 - "$1.txt" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if l.startswith("METRICS "):
        sys.exit(0 if json.loads(l[8:])["pass"] else 1)
sys.exit(1)
PY
}

# ---- main --------------------------------------------------------------------------------
if [ "$3" != search ]; then
  rate=$3 runs=${4:-3}
  is_number "$rate" || { echo "RATE must be a positive number: $rate" >&2; exit 2; }
  [[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer: $runs" >&2; exit 2; }
  dur=$(secs_of "${5:-${DURATION:-20s}}")
  for n in $(seq 1 "$runs"); do run_one "$rate" "$n"; done
  exit 0
fi

[ $# -ge 5 ] || usage
start_rate=$4 step=$5 runs=${6:-3}
if ! is_number "$start_rate" || ! is_number "$step"; then
  echo "START and STEP must be positive numbers" >&2
  exit 2
fi
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer: $runs" >&2; exit 2; }
dur=$(secs_of "${DURATION:-20s}")
fmt() { python3 -c "import sys; print(f'{float(sys.argv[1]):g}')" "$1"; }
best="" failed="" rate=$(fmt "$start_rate")
for s in $(seq 1 "$MAX_STEPS"); do
  echo "== step $s: $rate/s" >&2
  run_one "$rate" 1
  if passes "$out-$shape-$rate-1"; then
    best=$rate
    rate=$(python3 -c "import sys; print(f'{float(sys.argv[1]) + float(sys.argv[2]):g}')" "$rate" "$step")
  else
    failed=$rate
    break
  fi
done
confirm=()
[ -z "$best" ] || confirm+=("$best")
[ -z "$failed" ] || confirm+=("$failed")
for r in "${confirm[@]}"; do
  for n in $(seq 2 $((runs + 1))); do
    echo "== repeat $((n - 1))/$runs: $r/s" >&2
    run_one "$r" "$n"
  done
done
python3 - "$out" "$shape" "$P99_LIMIT_MS" "$runs" "$best" "$failed" "${confirm[@]}" <<'PY' | tee "$out-$shape-search.txt"
import json, os, statistics, sys
out, shape, limit, runs, best, failed = sys.argv[1:7]
limit, runs = float(limit), int(runs)
held = None
print(f"rate search, {shape}: highest passing step {best or 'none'}, first failing step {failed or 'none (10 steps passed)'}")
for r in sys.argv[7:]:
    ms = []
    for n in range(1, runs + 2):   # the step run and the repeats of this search
        f = f"{out}-{shape}-{r}-{n}.txt"
        for l in (open(f) if os.path.exists(f) else []):
            if l.startswith("METRICS "):
                ms.append(json.loads(l[8:]))
    p99 = statistics.median([m["p99_ms"] if m["p99_ms"] is not None else float("inf") for m in ms])
    err = statistics.median([m["errors"] for m in ms])
    okr = statistics.median([m["ok_per_s"] for m in ms])
    ok = p99 < limit and err == 0
    print(f"  {r}/s: {len(ms)} runs, median p99 {p99:.1f} ms, median errors {err:g}, median ok/s {okr:.1f} -> {'held' if ok else 'not held'}")
    if ok and (held is None or float(r) > float(held)):
        held = r
if held is None:
    print(f"highest rate held: none (lower START)")
else:
    print(f"highest rate held: {held}/s" + (" (at least: the search bound was reached)" if not failed and held == best else ""))
PY
