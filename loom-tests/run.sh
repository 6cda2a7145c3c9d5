#!/usr/bin/env bash
# Runs cport's loom models (the port's in tests/models.rs, a session connection's in
# tests/session.rs) on the production code (release mode), then shows that each model
# catches the bug planted for it. Deeper: LOOM_MAX_PREEMPTIONS=3 loom-tests/run.sh; one model:
# loom-tests/run.sh cancel_races_completion (extra arguments go to the test binary).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
cargo test -p cport-loom-tests --release --test models --test session -- --nocapture --test-threads=1 "$@"
if [ "$#" -eq 0 ]; then
    loom-tests/check-plants.sh
fi
