#!/usr/bin/env bash
# A model that cannot fail proves nothing: plant each bug (CPORT_PLANT=name, compiled only in
# loom builds) and check that its model fails, and fails for the reason the plant must cause:
# the model's own assertion message, or loom's report of a deadlock or of a livelock ("maximum
# number of branches": a thread that waits, yielding, for something that never comes). A model
# that passes, fails to build, or fails in another way (a panic inside the library, another
# assertion) is "missed".
# Exits non-zero if any planted bug is missed. Run through loom-tests/run.sh, which sets
# RUSTFLAGS and the target directory.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${RUSTFLAGS:?run loom-tests/run.sh instead}"

# plant | the test file and model that must catch it | what its first panic must say
plants=(
    "cancel_toctou|models/cancel_races_completion|cancel's answer agrees with the completion"
    "timeout_keeps_io|models/timeout_races_completion_and_cancel|one started read, one completion"
    "request_timeout_keeps_io|models/request_timeout_races_completion_and_cancel|one started read, one completion"
    "cancel_side_ends_both|models/cancel_read_leaves_the_write_pending|the write is still pending after cancel_read"
    "next_accept_unchecked|models/accept_series_races_close|maximum number of branches"
    "drain_misses_a_move|models/accept_series_races_close|the started accept ends before the close"
    "close_before_cancel|models/close_races_readiness|the read ends before the close"
    "no_generation|models/reused_slot_gets_no_stale_event|the new stream saw a stale event"
    "lost_wakeup|models/waiters_race_worker_and_wakeup|deadlock"
    "closed_before_cancel|models/last_dec_ref_races_worker_and_waiter|the read's completion is drained before PortClosed"
    "pollers_not_stopped|models/last_dec_ref_races_worker_and_waiter|deadlock"
    "racy_refcount|models/concurrent_inc_ref_dec_ref|torn down exactly once"
    "post_unguarded|models/post_races_shutdown|a post that returned Ok is delivered once before PortClosed"
    "poller_blocks_blind|models/waiters_race_post_and_wakeup|deadlock"
    "wakeup_left_to_searcher|models/waiters_race_post_and_wakeup|deadlock"
    "no_pass_on|models/searcher_passes_the_look_on|deadlock"
    "no_local_delivery|models/a_handlers_io_comes_back_to_it|the handler's own read comes back to it"
    "timer_cancel_unlocked|models/timer_races_cancel_and_shutdown|one timer, one completion"
    "connect_unchecked|models/connect_races_shutdown|a started connect completes before PortClosed"
    "close_unchecked|models/close_races_shutdown|every completion before PortClosed, Close last"
    "retire_keeps_work|models/no_completion_stranded_when_its_taker_leaves|deadlock"
    "close_not_deferred|models/close_waits_for_the_streams_last_completion|the read ends before the close"
    "searcher_misses_close|models/shutdown_races_a_searcher|deadlock"
    "refeed_needs_progress|session/paced_requests_are_answered_when_the_output_drains|the pipelined requests are answered"
    "pause_unlocked|session/paced_requests_are_answered_when_the_output_drains|the pipelined requests are answered"
    "close_ignores_call|session/a_reply_is_not_lost_to_a_concurrent_close|what the session queued before the close is sent"
    "feed_after_close|session/a_reply_is_not_lost_to_a_concurrent_close|what the session queued before the close is sent"
)

logs="${CARGO_TARGET_DIR}/planted"
mkdir -p "$logs"
caught=0
missed=0
for entry in "${plants[@]}"; do
    IFS='|' read -r plant model reason <<< "$entry"
    file="${model%%/*}"
    test="${model#*/}"
    log="$logs/$plant.log"
    if CPORT_PLANT="$plant" cargo test -q -p cport-loom-tests --release --test "$file" -- --exact "$test" \
        > "$log" 2>&1; then
        echo "MISSED  $plant: $test passed with the bug planted"
        missed=$((missed + 1))
        continue
    fi
    # The first panic: its location line and the message after it.
    first=$(grep -m1 -A1 "panicked at" "$log" | tr '\n' ' ')
    if [[ "$first" == *"$reason"* ]]; then
        echo "caught  $plant by $test: $reason"
        caught=$((caught + 1))
    else
        echo "MISSED  $plant: $test failed, but not with \"$reason\": ${first:-no panic (log: $log)}"
        missed=$((missed + 1))
    fi
done
echo "planted bugs: $caught caught, $missed missed (logs in $logs/)"
[ "$missed" -eq 0 ]
