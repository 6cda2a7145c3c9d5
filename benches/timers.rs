//! Timers: the cost of arming and cancelling a stream deadline (`Port::set_timeout`) while
//! many other deadlines are armed. `cargo bench --bench timers`.
//!
//! What is measured, exactly: a port (1 worker) with K streams assigned, K in {1, 1,000,
//! 10,000}. The streams are K `dup`s of one end of one Unix socketpair (each dup is its own
//! fd, so its own epoll registration and cport stream; one fd per stream keeps 10,000 streams
//! within this machine's `RLIMIT_NOFILE` of 20,000). Each stream gets a deadline one hour
//! ahead, so `Port::timers() == K` throughout and nothing fires. No I/O is pending.
//!
//! - `replace/K`: one `set_timeout(isb, Some(1 h))` on the next stream in turn (round robin):
//!   the stream's armed deadline is removed from the wheel and a new one inserted (disarm +
//!   arm, as a server does when it pushes a connection's idle deadline back). K timers stay
//!   armed.
//! - `cancel_arm/K`: `set_timeout(isb, None)` (cancel: K-1 armed) then `set_timeout(isb,
//!   Some(1 h))` (arm: K again) on the next stream in turn. One iteration is the pair.
//!
//! The public API holds at most one deadline per stream, so the number of timers armed at
//! once is bounded by the number of streams, that is by fds: 100,000 armed timers would need
//! 100,000 fds, more than this machine's hard limit (the wheel itself is tested with 100,000
//! entries in `src/timer.rs`). What "O(1)" means here: the time per call should not grow from
//! K = 1 to K = 10,000. Each call takes the stream's lock and the port's timer lock (twice
//! for a replace: once to disarm, once to arm), reads the clock, inserts or unlinks a wheel
//! entry, and scans the wheel's occupancy bitmap for the next deadline (`next_deadline`, at
//! most 16 words with the default 1,024 slots); it calls `timerfd_settime` only when the new
//! deadline is earlier than the one programmed, which a far deadline rarely is.
//!
//! In the background, the port's worker is woken by the timerfd about once per occupied wheel
//! slot per revolution (1,024 slots of 1 ms) even though no deadline is due for an hour
//! (`next_deadline` answers with the first non-empty slot, which may hold only later
//! revolutions); each such poll walks that slot's list under the timer lock, which the calls
//! measured here also take.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use cport::{Isb, Port};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const FAR: Duration = Duration::from_secs(3600);

/// A port with `k` streams (dups of one socket end), each with a deadline `FAR` ahead.
fn setup(k: usize) -> (Port, Vec<Isb>, UnixStream) {
    let port = Port::builder().threads(1).build().expect("port");
    let (a, peer) = UnixStream::pair().expect("socketpair");
    let isbs: Vec<Isb> = (0..k)
        .map(|i| {
            let fd = a.try_clone().expect("dup");
            let isb = port.assign(cport::driver::UnixStream::new(fd), i as u64).expect("assign");
            port.set_timeout(&isb, Some(FAR)).expect("set_timeout");
            isb
        })
        .collect();
    assert_eq!(port.timers(), k);
    (port, isbs, peer)
}

fn timers(c: &mut Criterion) {
    // The soft fd limit raised to the hard one (or left as it was, if that fails).
    let limit =
        cport_testkit::raise_nofile(libc::RLIM_INFINITY).or_else(|_| cport_testkit::nofile()).map_or(1024, |l| l.soft);
    let mut g = c.benchmark_group("timers");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).throughput(Throughput::Elements(1));
    for k in [1usize, 1_000, 10_000] {
        if k as libc::rlim_t + 64 > limit {
            eprintln!("timers: skipping K = {k}: RLIMIT_NOFILE is {limit}");
            continue;
        }
        let (port, isbs, _peer) = setup(k);
        let mut next = 0;
        g.bench_function(BenchmarkId::new("replace", k), |b| {
            b.iter(|| {
                port.set_timeout(&isbs[next], Some(FAR)).expect("set_timeout");
                next = if next + 1 == k { 0 } else { next + 1 };
            })
        });
        assert_eq!(port.timers(), k);
        g.bench_function(BenchmarkId::new("cancel_arm", k), |b| {
            b.iter(|| {
                port.set_timeout(&isbs[next], None).expect("cancel");
                port.set_timeout(&isbs[next], Some(FAR)).expect("arm");
                next = if next + 1 == k { 0 } else { next + 1 };
            })
        });
        assert_eq!(port.timers(), k);
        drop(isbs);
        drop(port);
    }
    g.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
