#!/usr/bin/env bash
# Builds the container image from a release binary built outside it (the Dockerfile's
# `prebuilt` target) with podman, starts `batchgate serve` from it, and checks a real answer,
# the health check, the non-root user and a clean exit on SIGTERM as PID 1. Prints the image
# size.
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
image=localhost/batchgate:test
base=localhost/batchgate-runtime-base:test
cleanup() {
  podman --runtime runc rm -f "$name" >/dev/null 2>&1 || true
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
echo "image test: 1 passed, 0 failed"
