#!/usr/bin/env bash
# Builds cport's C library and the C programs into target/c/:
#   target/c/libcport.so, target/c/libcport.a   the library (the `ffi` feature of the crate)
#   target/c/include/cport.h                    its header (and completion_port.h, the original API)
#   target/c/echo_server                        examples/c/echo_server.c, linked statically
# and every tests/c/*.c into target/c/test_<name> (run by tests/c/run.sh).
# CPORT_C_CFLAGS adds compiler flags (e.g. -fsanitize=address); CPORT_C_BIN puts the programs
# (not the library) in another directory, e.g. a sanitizer build beside the plain one.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/c
mkdir -p "$out/include"
# A target directory of its own: the ffi build must not rebuild the workspace's artifacts.
export CARGO_TARGET_DIR="$out/cargo"
cargo rustc -q -p cport --lib --release --no-default-features --features ffi --crate-type cdylib
cargo rustc -q -p cport --lib --release --no-default-features --features ffi --crate-type staticlib
cp "$CARGO_TARGET_DIR/release/libcport.so" "$CARGO_TARGET_DIR/release/libcport.a" "$out/"
cp src/ffi/include/cport.h src/ffi/include/completion_port.h "$out/include/"

CC="${CC:-cc}"
CFLAGS="-O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I$out/include ${CPORT_C_CFLAGS:-}"
LIBS="$out/libcport.a -lpthread -ldl -lm"
# shellcheck disable=SC2086
bin="${CPORT_C_BIN:-$out}"
mkdir -p "$bin"
# shellcheck disable=SC2086
$CC $CFLAGS examples/c/echo_server.c -o "$bin/echo_server" $LIBS
for t in tests/c/*.c; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .c)
    # shellcheck disable=SC2086
    $CC $CFLAGS "$t" -o "$bin/test_$name" $LIBS
done
