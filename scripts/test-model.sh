#!/usr/bin/env bash
# The `model` feature's own check: lints and tests of the real-model code (crates/model and the
# binary's --model-dir), which the main test command (scripts/test.sh) does not build because
# candle adds minutes to it. Release profile only: the model is 40–60× slower in debug, and the
# release dependency build is the one the model benchmark reuses.
#
#   scripts/test-model.sh            # lints + tests with a tiny model each test builds itself
#   BATCHGATE_TEST_MODEL_DIR=DIR scripts/test-model.sh
#                                    # also the tests on the real model in DIR
#                                    # (scripts/fetch-model.sh DIR makes it)
#
# Not BATCHGATE_MODEL_DIR: that is `serve --model-dir`'s own variable, and would turn every
# `serve` the tests parse into a model server.
#
# For CI, cache ~/.cargo/registry and the target directory (CARGO_TARGET_DIR, `target/` by
# default) keyed on Cargo.lock: with the cache warm this step takes about a minute, cold 6–8.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo clippy --locked -p batchgate-model -p batchgate --features batchgate-model/model,batchgate/model --all-targets -- -D warnings
# Every test but the one on the real model (tests/real_model.rs), which needs a fetched model
# directory (below).
cargo test --release --locked -p batchgate-model --features model "$@" -- --skip reproduces_the_published_similarities
# The binary's --model-dir: flag checks (lib) and serve/worker with a tiny model (tests/model.rs).
cargo test --release --locked -p batchgate --features model --lib --test model "$@"
if [ -n "${BATCHGATE_TEST_MODEL_DIR:-}" ]; then
  cargo test --release --locked -p batchgate-model --features model --test real_model
else
  echo "BATCHGATE_TEST_MODEL_DIR not set: the real-model tests (tests/real_model.rs) do not run" >&2
fi
