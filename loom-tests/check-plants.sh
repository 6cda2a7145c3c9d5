#!/usr/bin/env bash
# A model that cannot fail proves nothing: plant each bug (CPORT_PLANT=name, compiled only in
# loom builds) and check that its model fails. Exits non-zero if any planted bug goes uncaught.
# Run through loom-tests/run.sh, which sets RUSTFLAGS and the target directory.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${RUSTFLAGS:?run loom-tests/run.sh instead}"

# plant name -> the model that must catch it
plants=(
    "cancel_toctou cancel_races_completion"
    "timer_unlocked timeout_races_completion_and_cancel"
    "close_before_cancel close_races_readiness"
    "no_generation reused_slot_gets_no_stale_event"
    "lost_wakeup waiters_race_worker_and_wakeup"
    "closed_before_cancel last_dec_ref_races_worker_and_waiter"
    "join_before_stop last_dec_ref_races_worker_and_waiter"
    "racy_refcount concurrent_inc_ref_dec_ref"
    "post_unguarded post_races_shutdown"
    "poller_counts_late polling_waiters_race_post_and_wakeup"
    "no_hand_on spinner_hands_on_the_rest"
    "connect_unchecked connect_races_shutdown"
    "close_unchecked close_races_shutdown"
)

logs="${CARGO_TARGET_DIR}/planted"
mkdir -p "$logs"
caught=0
missed=0
for entry in "${plants[@]}"; do
    read -r plant test <<< "$entry"
    log="$logs/$plant.log"
    if CPORT_PLANT="$plant" cargo test -q -p cport-loom-tests --release --test models -- --exact "$test" \
        > "$log" 2>&1; then
        echo "MISSED  $plant: $test passed with the bug planted"
        missed=$((missed + 1))
    else
        why=$(grep -m1 -oE "deadlock" "$log" || grep -m1 -oE "panicked at [^ ]+" "$log")
        echo "caught  $plant by $test (${why:-failed})"
        caught=$((caught + 1))
    fi
done
echo "planted bugs: $caught caught, $missed missed (logs in $logs/)"
[ "$missed" -eq 0 ]
