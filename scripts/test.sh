#!/usr/bin/env bash
# Runs every test of the workspace. Tests start their own servers (and, for the Redis
# backends, their own redis-server processes) on free loopback ports; this script only makes
# sure the programs they need are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server missing: installing it (Debian package redis-server)" >&2
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

cargo test --workspace --locked "$@"
