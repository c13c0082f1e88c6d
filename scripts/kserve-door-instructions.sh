#!/usr/bin/env bash
# User-space instructions per input of the KServe V2 doors, HTTP (JSON) against gRPC (raw
# tensors), under callgrind: independent of what else the machine runs. For each door, a fresh
# `serve --insecure-no-auth --dedupe-ttl-secs 0` (the simulated worker in process) runs under
# `valgrind --tool=callgrind` while Triton's own client (`tritonclient.http` or
# `tritonclient.grpc`) sends REQUESTS infer calls of 8 distinct texts each from CALLERS threads,
# every answer checked; then the server is stopped (SIGINT) and its whole-process instruction
# count read. A run with no calls (`none`: start-up, idle timers, shutdown) is subtracted, so
#
#   per input = (instructions of the door's run - instructions of `none`) / (REQUESTS × 8)
#
# which holds the admission, batching, the simulated worker (its SHA-256 of each input, in
# software under valgrind) and the door's own decoding and encoding; the two doors differ only
# in the last.
#
#   scripts/kserve-door-instructions.sh OUT_DIR [REQUESTS] [CALLERS]
#
# BIN (default target/release/batchgate) is not built here (`cargo build --release -p
# batchgate`); PYTHON (default target/api-clients-venv/bin/python, which scripts/test.sh
# makes) must import tritonclient.http and tritonclient.grpc.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 requests=${2:-200} callers=${3:-8}
bin=${BIN:-target/release/batchgate}
python=${PYTHON:-target/api-clients-venv/bin/python}
[ -x "$bin" ] || { echo "no binary at $bin (see the header of $0)" >&2; exit 1; }
"$python" -c 'import tritonclient.http, tritonclient.grpc' || {
  echo "$python does not import tritonclient.http and tritonclient.grpc" >&2
  exit 1
}
mkdir -p "$out"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT

# run DOOR: one server under callgrind, DOOR's calls, stop; sets $ir, its instruction count.
run() {
  local door=$1 log=$out/$1.log url=""
  valgrind --tool=callgrind --callgrind-out-file="$out/$door.callgrind" \
    --log-file="$out/$door.valgrind" "$bin" serve --insecure-no-auth \
    --listen 127.0.0.1:0 --shutdown-delay-ms 0 --dedupe-ttl-secs 0 2>"$log" &
  pid=$!
  for _ in $(seq 1 600); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | sed 's/listening on //') || true
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "serve did not start under valgrind:" >&2; cat "$log" >&2; exit 1; }
  "$python" - "${url#http://}" "$door" "$requests" "$callers" <<'PY'
import hashlib, sys, threading
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

host_port, door, requests, callers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if door == "none":
    sys.exit(0)
local = threading.local()

def call(i):
    texts = [f"{door} call {i} text {j}" for j in range(8)]
    if door == "http":
        client = getattr(local, "c", None) or thttp.InferenceServerClient(url=host_port, network_timeout=600)
        tensor = thttp.InferInput("input", [8], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=False)
        wanted = [thttp.InferRequestedOutput("output", binary_data=False)]
    else:
        client = getattr(local, "c", None) or tgrpc.InferenceServerClient(url=host_port)
        tensor = tgrpc.InferInput("input", [8], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=np.object_))
        wanted = [tgrpc.InferRequestedOutput("output")]
    local.c = client
    got = client.infer("default", [tensor], outputs=wanted).as_numpy("output")
    got = [g.decode() if isinstance(g, bytes) else g for g in got]
    want = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert got == want, f"call {i}: {got} != {want}"

with ThreadPoolExecutor(max_workers=callers) as pool:
    list(pool.map(call, range(requests)))
PY
  kill -INT "$pid"
  wait "$pid" || true
  pid=""
  ir=$(awk '/^summary:/ {print $2}' "$out/$door.callgrind")
}

run none; none=$ir
run http; http=$ir
run grpc; grpc=$ir
inputs=$((requests * 8))
echo "instructions: none $none, http $http, grpc $grpc"
echo "per input: http $(((http - none) / inputs)), grpc $(((grpc - none) / inputs)) ($inputs inputs)"
