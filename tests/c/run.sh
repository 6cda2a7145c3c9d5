#!/usr/bin/env bash
# The C API's tests: builds the library, the C example and every tests/c/*.c
# (examples/c/build.sh), runs each test, runs them again under valgrind (no leak, no invalid
# access: the buffers lent to the port, the last cport_port_dec_ref with I/O pending) and
# built with ASan and UBSan, checks the C echo server example, and runs the README's Python
# ctypes snippet. Exits non-zero on the first failure. Called by ./test.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

examples/c/build.sh

step() { printf '==> C API: %s\n' "$*"; }

tests=()
for t in tests/c/*.c; do
    tests+=("target/c/test_$(basename "$t" .c)")
done

for t in "${tests[@]}"; do
    step "$t"
    "$t"
done

if command -v valgrind >/dev/null; then
    for t in "${tests[@]}"; do
        step "$t under valgrind"
        # Valgrind runs one thread at a time and ~20x slower: the watchdogs scale, the echo
        # tests use fewer connections. The flags a C user's CI would use: any leak (possibly
        # lost too) and every invalid access fail the run.
        CPORT_TEST_SLOW=20 CPORT_TEST_CONNS=40 valgrind -q --leak-check=full --error-exitcode=3 "$t"
    done
else
    echo "valgrind is missing: ./test.sh installs it" >&2
    exit 1
fi

# The same tests built with AddressSanitizer and UndefinedBehaviorSanitizer (the C side is
# instrumented; valgrind above sees the library's side too). Any report fails the run.
CPORT_C_BIN=target/c/asan CPORT_C_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
    examples/c/build.sh
for t in tests/c/*.c; do
    t="target/c/asan/test_$(basename "$t" .c)"
    step "$t (ASan, UBSan)"
    ASAN_OPTIONS=abort_on_error=0:exitcode=4 "$t"
done

step "examples/c/echo_server echoes"
out=$(mktemp)
target/c/echo_server 127.0.0.1:0 2 >"$out" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do
    grep -q '^listening ' "$out" && break
    sleep 0.1
done
addr=$(sed -n 's/^listening //p' "$out" | head -1)
[ -n "$addr" ] || { echo "echo_server printed no address" >&2; exit 1; }
python3 - "$addr" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
conns = [socket.create_connection((host, int(port)), timeout=10) for _ in range(20)]
for i, s in enumerate(conns):
    msg = bytes((i * 7 + j) % 251 for j in range(1000 + i * 3000))
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        part = s.recv(65536)
        assert part, "the server closed early"
        got += part
    assert got == msg, f"connection {i}: echoed bytes differ"
    s.close()
print("echo_server: 20 connections echoed")
EOF
kill "$server"
wait "$server" 2>/dev/null || true

step "the README's Python snippet"
awk '/<!-- tests\/c\/run.sh runs the next python block -->/{f=1; next}
     f && /^```python/{g=1; next}
     g && /^```/{exit}
     g' README.md >"$out.py"
[ -s "$out.py" ] || { echo "no python block after the marker in README.md" >&2; exit 1; }
python3 "$out.py" | grep -qx 'hello from python'
rm -f "$out.py"
step "all passed"
