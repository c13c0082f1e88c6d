#!/usr/bin/env bash
# Builds the container image from a release binary built outside it (the Dockerfile's
# `prebuilt` target) with podman, starts `batchgate serve` from it, and checks a real answer,
# the health check, the non-root user and a clean exit on SIGTERM as PID 1; then runs a
# gateway, a batcher and the simulated worker from it on a redis-server of the host, and
# checks an answer through them. Prints the image size.
#
# No image can be pulled here, so the runtime base is assembled from the host's own C
# libraries (what `ldd` names for the binary), a `nonroot` user (65532) and the CA bundle,
# in place of the distroless base the Dockerfile uses by default. Running a container here
# takes Debian's runc (`--runtime runc`) and a containers.conf with `default_ulimits = []`.
#
#   scripts/image-test.sh                 # uses $CARGO_TARGET_DIR/release/batchgate (builds it if missing)
#   BATCHGATE_BIN=path/to/batchgate scripts/image-test.sh
#   KEEP_IMAGE=1 scripts/image-test.sh    # leaves localhost/batchgate:test behind
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in podman runc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool missing: installing Debian's podman and runc" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
    break
  fi
done

target_dir=${CARGO_TARGET_DIR:-target}
bin=${BATCHGATE_BIN:-$target_dir/release/batchgate}
if [ ! -x "$bin" ]; then
  echo "no release binary at $bin: building it" >&2
  cargo build --release --locked -p batchgate
fi

work=$(mktemp -d)
name="batchgate-image-test-$$"
redis_pid=
image=localhost/batchgate:test
base=localhost/batchgate-runtime-base:test
cleanup() {
  for c in "$name" "$name-worker" "$name-batcher" "$name-gateway"; do
    podman --runtime runc rm -f "$c" >/dev/null 2>&1 || true
  done
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
  if [ -z "${KEEP_IMAGE:-}" ]; then
    podman rmi -f "$image" "$base" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

printf '[containers]\ndefault_ulimits = []\n' >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
pm() { podman --runtime runc "$@"; }

# The base: the binary's shared libraries (and the loader) at their paths, a non-root user,
# CA certificates, /tmp.
root="$work/base/rootfs"
mkdir -p "$root/etc" "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
printf 'FROM scratch\nCOPY rootfs/ /\n' >"$work/base/Containerfile"
pm build -q -t "$base" "$work/base" >/dev/null

# The image, from the repository's Dockerfile, with the stripped binary as its context.
mkdir -p "$work/ctx"
strip -o "$work/ctx/batchgate" "$bin"
pm build -q --format docker --target prebuilt \
  --build-arg RUNTIME_BASE="$base" --build-arg BINARY=batchgate \
  -t "$image" -f Dockerfile "$work/ctx" >/dev/null
size=$(pm image inspect --format '{{.Size}}' "$image")
user=$(pm image inspect --format '{{.Config.User}}' "$image")
echo "image $image: $((size / 1000000)) MB ($size bytes), user $user"
[ "$user" = "65532:65532" ] || { echo "FAIL: the image runs as '$user', not 65532" >&2; exit 1; }

# serve from the image on a free loopback port of the host network.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
pm run -d --name "$name" --network host --read-only --health-interval disable \
  -e BATCHGATE_LISTEN="127.0.0.1:$port" -e BATCHGATE_PROBE_URL="$url/healthz" \
  -e BATCHGATE_SHUTDOWN_DELAY_MS=500 \
  "$image" serve --insecure-no-auth --sim-base-ms 20 >/dev/null 2>"$work/podman.err" \
  || { cat "$work/podman.err" >&2; exit 1; }
# (podman cannot schedule the periodic health check without systemd and says so on stderr;
# the check itself is run below.)
for _ in $(seq 1 100); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$url/readyz" >/dev/null || { pm logs "$name" >&2; echo "FAIL: not ready" >&2; exit 1; }

input="hello from the image"
answer=$(curl -fsS -X POST "$url/v1/inference?wait_ms=5000" -H 'content-type: application/json' \
  -d "{\"input\":\"$input\"}")
expected=$(printf '%s' "$input" | sha256sum | cut -d' ' -f1)
got=$(python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["status"], v.get("output"))' <<<"$answer")
if [ "$got" != "SUCCESS $expected" ]; then
  echo "FAIL: expected SUCCESS $expected, got: $answer" >&2
  exit 1
fi
echo "serve from the image answered: $got"

pm healthcheck run "$name" >/dev/null || { echo "FAIL: HEALTHCHECK (batchgate probe) failed" >&2; exit 1; }
echo "HEALTHCHECK passes"

# SIGTERM to PID 1: the shutdown sequence runs and the process exits 0.
pm stop -t 30 "$name" >/dev/null 2>>"$work/podman.err"
code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
logs=$(pm logs "$name" 2>&1)
if [ "$code" != 0 ] || ! grep -q 'drain complete' <<<"$logs"; then
  echo "$logs" >&2
  echo "FAIL: exit code $code after SIGTERM" >&2
  exit 1
fi
echo "SIGTERM: drained, exit code 0"

# The distributed roles from the same image, configured as deploy/compose/compose.yaml does
# (JWT on the gateway, Redis, a worker URL), on loopback ports of the host network, with a
# redis-server of the host started here.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port); wport=$(free_port); bport=$(free_port); gport=$(free_port)
if ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
secret=image-test-jwt-secret-0123456789abcdef
common=(-e BATCHGATE_REDIS="redis://127.0.0.1:$rport" -e BATCHGATE_SHUTDOWN_DELAY_MS=0)
pm run -d --name "$name-worker" --network host --read-only --health-interval disable \
  -e BATCHGATE_WORKER_LISTEN="127.0.0.1:$wport" -e BATCHGATE_PROBE_URL="http://127.0.0.1:$wport/healthz" \
  "$image" worker --sim --base-ms 20 >/dev/null 2>>"$work/podman.err"
pm run -d --name "$name-batcher" --network host --read-only --health-interval disable "${common[@]}" \
  -e BATCHGATE_LISTEN="127.0.0.1:$bport" -e BATCHGATE_PROBE_URL="http://127.0.0.1:$bport/healthz" \
  -e BATCHGATE_WORKER_URL="http://127.0.0.1:$wport" "$image" batcher >/dev/null 2>>"$work/podman.err"
pm run -d --name "$name-gateway" --network host --read-only --health-interval disable "${common[@]}" \
  -e BATCHGATE_LISTEN="127.0.0.1:$gport" -e BATCHGATE_PROBE_URL="http://127.0.0.1:$gport/healthz" \
  -e BATCHGATE_JWT_SECRET="$secret" "$image" gateway >/dev/null 2>>"$work/podman.err"
for port in "$wport" "$bport" "$gport"; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
for c in worker batcher gateway; do
  pm healthcheck run "$name-$c" >/dev/null || { pm logs "$name-$c" >&2; echo "FAIL: $c unhealthy" >&2; exit 1; }
done
curl -fsS "http://127.0.0.1:$bport/readyz" >/dev/null || { echo "FAIL: batcher not ready" >&2; exit 1; }
token=$(pm run --rm "$image" token --sub image-test --secret "$secret" 2>>"$work/podman.err")
input="hello through gateway, Redis, batcher and worker containers"
answer=$(curl -sS -X POST "http://127.0.0.1:$gport/v1/inference?wait_ms=5000" \
  -H "authorization: Bearer $token" -H 'content-type: application/json' -d "{\"input\":\"$input\"}")
expected=$(printf '%s' "$input" | sha256sum | cut -d' ' -f1)
got=$(python3 -c 'import json,sys; v=json.load(sys.stdin); print(v.get("status"), v.get("output"))' <<<"$answer")
if [ "$got" != "SUCCESS $expected" ]; then
  for c in gateway batcher worker; do pm logs "$name-$c" >&2; done
  echo "FAIL: distributed: expected SUCCESS $expected, got: $answer" >&2
  exit 1
fi
echo "gateway + batcher + worker containers on Redis answered: $got"
for c in gateway batcher worker; do
  pm stop -t 30 "$name-$c" >/dev/null 2>>"$work/podman.err"
  code=$(pm inspect --format '{{.State.ExitCode}}' "$name-$c")
  [ "$code" = 0 ] || { pm logs "$name-$c" >&2; echo "FAIL: $c exited $code after SIGTERM" >&2; exit 1; }
done
echo "SIGTERM: gateway, batcher and worker exited 0"
echo "image test: 2 passed, 0 failed"
