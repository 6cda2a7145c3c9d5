//! What the fairness polls cost (`Builder::poll_interval`). `cargo bench --bench fairness`.
//!
//! One thread serves a port and keeps its own queue full: every completion it takes is a
//! post, and it posts the next one at once (local delivery: into its own queue, no wake-up),
//! so the queue never empties and the thread never polls on its own. Every `poll_interval`
//! completions it does a non-blocking `epoll_wait` anyway (`Stats::forced_polls`), the price
//! of serving streams armed in epoll within a bound however busy the queues are. 50 idle
//! streams are registered, as a server's would be. `off` is an interval no run reaches: the
//! cost of a completion without fairness polls. A completion here costs ~0.1 µs, a 20th of an
//! echoed message's, so the figures show the polls' cost at its largest.

use std::hint::black_box;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cport::{driver, Port};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Completions per iteration.
const PER_ITER: u64 = 1000;
/// Completions kept in the queue.
const DEPTH: u64 = 50;

fn fairness(c: &mut Criterion) {
    let mut g = c.benchmark_group("fairness");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(PER_ITER));
    for (name, interval) in
        [("1", 1), ("4", 4), ("15", 15), ("31", 31), ("61", 61), ("127", 127), ("255", 255), ("off", u32::MAX)]
    {
        let port = Port::builder().poll_interval(interval).build().expect("port");
        let _idle: Vec<_> = (0..50)
            .map(|i| {
                let (ours, peer) = UnixStream::pair().expect("socketpair");
                (port.assign(driver::UnixStream::new(ours), i).expect("assign"), peer)
            })
            .collect();
        // A completion taken first makes this thread one that serves the port.
        port.post(0, 0).expect("post");
        port.next_completion(None).expect("next").expect("the post");
        for v in 0..DEPTH {
            port.post(1, v).expect("post");
        }
        g.bench_function(BenchmarkId::new("poll_interval", name), |b| {
            b.iter(|| {
                for _ in 0..PER_ITER {
                    let c = port.next_completion(None).expect("next").expect("queued");
                    port.post(1, black_box(c.value())).expect("post");
                }
            })
        });
        let s = port.stats();
        assert!(interval == u32::MAX || s.forced_polls > 0, "the polls ran: {s:?}");
    }
    g.finish();
}

criterion_group!(benches, fairness);
criterion_main!(benches);
