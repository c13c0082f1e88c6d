#!/usr/bin/env bash
# Starts the distributed deployment on this one machine, without Docker:
#   a 6-node Redis Cluster (3 masters, 3 replicas), a simulated worker,
#   2 gateways and 2 batchers, each a separate process.
# Everything listens on 127.0.0.1; logs and PID files go to $STATE (default /tmp/batchgate-cluster).
# Stop it all with scripts/cluster-down.sh (it kills only the PIDs recorded here).
#
# Ports (override with env): REDIS_BASE=7100 (7100-7105), WORKER_PORT=9000,
# GATEWAY_PORTS="8081 8082", BATCHER_PORTS="9101 9102".
set -euo pipefail
cd "$(dirname "$0")/.."
# No load balancer stands in front of these processes: on SIGTERM they may drain at once.
export BATCHGATE_SHUTDOWN_DELAY_MS=${BATCHGATE_SHUTDOWN_DELAY_MS:-0}
STATE=${STATE:-/tmp/batchgate-cluster}
REDIS_BASE=${REDIS_BASE:-7100}
WORKER_PORT=${WORKER_PORT:-9000}
GATEWAY_PORTS=${GATEWAY_PORTS:-"8081 8082"}
BATCHER_PORTS=${BATCHER_PORTS:-"9101 9102"}

if [ -e "$STATE/pids" ]; then
  echo "$STATE/pids exists: is a cluster already up? Run scripts/cluster-down.sh first." >&2
  exit 1
fi
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install -y redis-server)" >&2; exit 1; }
cargo build --release --locked -p batchgate >&2
bin=$PWD/target/release/batchgate
mkdir -p "$STATE"
: > "$STATE/pids"

start() { # name, command...
  local name=$1; shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo "$! $name" >> "$STATE/pids"
}

nodes=()
for i in 0 1 2 3 4 5; do
  port=$((REDIS_BASE + i))
  mkdir -p "$STATE/redis-$port"
  start "redis-$port" redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$STATE/redis-$port/nodes.conf" --cluster-node-timeout 5000 \
    --save "" --appendonly no --dir "$STATE/redis-$port"
  nodes+=("127.0.0.1:$port")
done
for n in "${nodes[@]}"; do
  until redis-cli -h 127.0.0.1 -p "${n#*:}" PING >/dev/null 2>&1; do sleep 0.05; done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$STATE/cluster-create.log"
until redis-cli -h 127.0.0.1 -p "$REDIS_BASE" CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.1; done
echo "redis cluster up: ${nodes[*]}"

redis_flags=(--redis-cluster)
for n in "${nodes[@]}"; do redis_flags+=(--redis "redis://$n"); done

start worker "$bin" worker --sim --listen "127.0.0.1:$WORKER_PORT" --slots 32
for p in $GATEWAY_PORTS; do
  start "gateway-$p" "$bin" gateway --insecure-no-auth --listen "127.0.0.1:$p" "${redis_flags[@]}"
done
for p in $BATCHER_PORTS; do
  start "batcher-$p" "$bin" batcher --listen "127.0.0.1:$p" --worker-url "http://127.0.0.1:$WORKER_PORT" "${redis_flags[@]}"
done
for p in $GATEWAY_PORTS; do
  until curl -fsS "http://127.0.0.1:$p/readyz" >/dev/null 2>&1; do sleep 0.1; done
done

first=${GATEWAY_PORTS%% *}
cat <<MSG
batchgate distributed deployment is up (logs and PIDs in $STATE):
  gateways  $(for p in $GATEWAY_PORTS; do printf 'http://127.0.0.1:%s ' "$p"; done)
  batchers  $(for p in $BATCHER_PORTS; do printf 'http://127.0.0.1:%s/metrics ' "$p"; done)
  worker    http://127.0.0.1:$WORKER_PORT (simulated, 32 slots)
Try:
  curl -s -X POST 'http://127.0.0.1:$first/v1/inference?wait_ms=2000' -H 'content-type: application/json' -d '{"input":"hello"}'
  $bin bench --url http://127.0.0.1:$first --rate 2000 --duration 10s
Stop: scripts/cluster-down.sh
MSG
