#!/usr/bin/env bash
# Every test of cport: unit, integration and doc tests (the storm included), the check that the
# storm catches the bugs planted for it, then the loom models and the check that each model
# catches the bug planted for it. Installs what the tests need on a fresh Debian machine
# (redis-tools: redis-cli and redis-benchmark drive the RESP server's tests, in
# examples/resp_server).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v redis-cli >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "==> installing redis-tools (the RESP server tests drive it with redis-cli, redis-benchmark)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-tools >/dev/null
fi

cargo test --workspace
# The C API: its header checked against the Rust side, then the library, the C example and
# the C tests built and run.
cargo test -q -p cport --features ffi --lib ffi::
examples/c/build.sh
tests/check-storm-plant.sh
loom-tests/run.sh
