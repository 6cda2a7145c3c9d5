#!/usr/bin/env bash
# The storm (tests/storm.rs) must be able to fail: build it with a bug planted
# (`--cfg cport_plant`; the planted code is selected at run time by CPORT_PLANT=name and exists
# in no other build) and check that each storm fails, and for the reason the plant must cause.
# Exits non-zero if a planted bug goes uncaught or the storm fails for another reason.
set -uo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg cport_plant"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/plant"

# plant name | storm test | the failure it must produce (a message of the storm's own check)
plants=(
    "close_before_cancel|storm_on_a_worker_port|taken after the stream's Close completion"
    "close_before_cancel|storm_on_a_polling_port|taken after the stream's Close completion"
    "lost_cancel|storm_on_a_worker_port|started and no completion before PortClosed"
    "lost_cancel|storm_on_a_polling_port|started and no completion before PortClosed"
    "close_not_deferred|storm_on_a_worker_port|taken after the stream's Close completion"
)

cargo test -q --test storm --no-run 2>&1 | grep -vE "^\s*$" || true
logs="${CARGO_TARGET_DIR}/planted"
mkdir -p "$logs"
missed=0
for entry in "${plants[@]}"; do
    IFS='|' read -r plant test reason <<< "$entry"
    log="$logs/$plant-$test.log"
    if CPORT_PLANT="$plant" cargo test -q --test storm -- --exact "$test" > "$log" 2>&1; then
        echo "MISSED  $plant: $test passed with the bug planted"
        missed=$((missed + 1))
    elif grep -qF -- "$reason" "$log"; then
        echo "caught  $plant by $test ($reason)"
    else
        echo "MISSED  $plant: $test failed, but not with \"$reason\" (log: $log)"
        missed=$((missed + 1))
    fi
done
[ "$missed" -eq 0 ]
