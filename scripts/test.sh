#!/usr/bin/env bash
# Runs every test of the workspace. Tests start their own servers (and, for the Redis
# backends, their own redis-server processes; for the KServe V2 test, MLServer) on free
# loopback ports; this script only makes sure the programs they need are installed. The
# container image has its own script, scripts/image-test.sh (podman, a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server missing: installing it (Debian package redis-server)" >&2
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

# The status page test drives headless Chromium (crates/batchgate/tests/status_page.rs).
# Debian's package is ~80 MB to download, ~290 MB installed.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  echo "chromium missing: installing it (Debian package chromium)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)

# venv_tool VENV 'PACKAGE==VERSION[ …]' PROGRAM: the path of PROGRAM in a virtual environment
# beside the build, installed there (with every package named) from PyPI when missing; prints
# nothing and fails if that cannot be done.
venv_tool() {
  local venv=$target_dir/$1 package=$2 program=$3 packages
  read -ra packages <<<"$package"
  if [ ! -x "$venv/bin/$program" ]; then
    echo "${package%%==*} missing: installing $package into $venv (PyPI)" >&2
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "${packages[@]}"; } >&2 || return 1
  fi
  [ -x "$venv/bin/$program" ] && echo "$venv/bin/$program"
}

# MLServer (PyPI), the real KServe V2 server of crates/batchgate/tests/mlserver.rs, lives in a
# virtual environment beside the build. If it cannot be installed (no Python, no PyPI), this
# script says so and the MLServer test FAILS: a run that did not exercise MLServer must not
# look green. Whoever knowingly runs without it sets BATCHGATE_ALLOW_NO_MLSERVER=1 in their own
# environment; this script never sets it, and CI (.ci/run) refuses to run when it is set.
if mlserver=$(venv_tool mlserver-venv mlserver==1.7.1 mlserver); then
  export BATCHGATE_MLSERVER="$mlserver"
else
  echo "MLServer could not be installed: the MLServer test will FAIL (set BATCHGATE_ALLOW_NO_MLSERVER=1 yourself to run without it)" >&2
fi

# kubernetes-validate (PyPI) checks the Kubernetes manifests offline against the schemas
# (crates/batchgate/tests/deploy.rs, scripts/check-deploy.py), from a virtual environment
# beside the build, like MLServer's; without it that test fails in the same way, unless
# BATCHGATE_ALLOW_NO_KUBERNETES_VALIDATE=1 is set by hand.
if venv_tool deploy-venv kubernetes-validate==1.37.0 kubernetes-validate >/dev/null; then
  export BATCHGATE_DEPLOY_VENV="$target_dir/deploy-venv"
else
  echo "kubernetes-validate could not be installed: the deployment files test will FAIL (set BATCHGATE_ALLOW_NO_KUBERNETES_VALIDATE=1 yourself to run without it)" >&2
fi

# schemathesis (PyPI) runs property-based requests against a live server from its OpenAPI
# description (crates/batchgate/tests/api_schema.rs), from a virtual environment beside the
# build. It is required: if it cannot be installed the run stops here, unless
# BATCHGATE_ALLOW_NO_SCHEMATHESIS=1 is set by whoever runs this (CI does not set it).
if st=$(venv_tool schemathesis-venv schemathesis==4.32.5 st); then
  export BATCHGATE_SCHEMATHESIS="$st"
elif [ "${BATCHGATE_ALLOW_NO_SCHEMATHESIS:-}" != 1 ]; then
  echo "schemathesis could not be installed: stopping (set BATCHGATE_ALLOW_NO_SCHEMATHESIS=1 to run without the API schema test)" >&2
  exit 1
else
  echo "schemathesis could not be installed: the API schema test will NOT RUN (BATCHGATE_ALLOW_NO_SCHEMATHESIS=1)" >&2
fi

# The official OpenAI Python SDK and Triton's KServe V2 clients (HTTP and gRPC), the real
# clients of crates/batchgate/tests/api_clients.rs, in one virtual environment beside the build. They are
# required: if they cannot be installed the run stops here, unless
# BATCHGATE_ALLOW_NO_API_CLIENTS=1 is set by whoever runs this (CI refuses to run with it set).
# Neither package installs a program of its own: the environment counts as installed when its
# Python imports all three (one pip call installs all or none; a half-made one, or one made
# before the gRPC client was needed, is made again).
clients_import() { "$target_dir/api-clients-venv/bin/python" -c 'import openai, tritonclient.http, tritonclient.grpc' 2>/dev/null; }
clients_import || rm -rf "$target_dir/api-clients-venv"
if venv_tool api-clients-venv "openai==3.63.0 tritonclient[http,grpc]==2.73.0" python >/dev/null && clients_import; then
  export BATCHGATE_API_CLIENTS_PYTHON="$target_dir/api-clients-venv/bin/python"
elif [ "${BATCHGATE_ALLOW_NO_API_CLIENTS:-}" != 1 ]; then
  echo "openai and tritonclient could not be installed: stopping (set BATCHGATE_ALLOW_NO_API_CLIENTS=1 to run without the API clients test)" >&2
  exit 1
else
  echo "openai and tritonclient could not be installed: the API clients test will NOT RUN (BATCHGATE_ALLOW_NO_API_CLIENTS=1)" >&2
fi

# cargo prints one "test result" line per test binary, the last often a crate's empty doc-test
# run; the line after it sums them all up, so a reader of the tail sees the whole run.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}' || true)
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}' || true)
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
