#!/usr/bin/env bash
# Every test of cport: unit, integration and doc tests (the storm included), the C API's tests
# (under valgrind too), the check that the storm catches the bugs planted for it, then the loom
# models and the check that each model catches the bug planted for it. Installs what the tests
# need on a fresh Debian machine: redis-tools (redis-cli and redis-benchmark drive the RESP
# server's tests, in examples/resp_server), valgrind and python3 (the C tests).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (what the tests need)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --workspace
# The C API: its header checked against the Rust side, then the library, the C example and
# the C tests built and run (tests/c/run.sh).
cargo test -q -p cport --features ffi --lib ffi::
tests/c/run.sh
tests/check-storm-plant.sh
loom-tests/run.sh
