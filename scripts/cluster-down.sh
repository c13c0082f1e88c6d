#!/usr/bin/env bash
# Stops what scripts/cluster-up.sh started: SIGTERM to each recorded PID (batchgate processes
# drain), SIGKILL to any still alive after 30 s, then removes the state directory.
set -uo pipefail
STATE=${STATE:-/tmp/batchgate-cluster}
[ -f "$STATE/pids" ] || { echo "nothing to stop ($STATE/pids not found)"; exit 0; }
# Gateways and batchers first (they drain into Redis), then the worker, then Redis.
order() { grep -E " (gateway|batcher)-" "$STATE/pids"; grep " worker$" "$STATE/pids"; grep " redis-" "$STATE/pids"; }
order | while read -r pid name; do
  kill -TERM "$pid" 2>/dev/null && echo "stopping $name ($pid)"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null && echo "killed $name ($pid)"
done
rm -rf "$STATE"
echo "stopped"
