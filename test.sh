#!/usr/bin/env bash
# Every test of cport: unit, integration and doc tests, then the loom models and the check
# that each model catches the bug planted for it.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace
loom-tests/run.sh
