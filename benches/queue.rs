//! Queue hand-off: one producer thread, N consumer threads waiting for messages.
//! `cargo bench --bench queue`.
//!
//! Each benchmark keeps N consumer threads alive across all its samples. One iteration is
//! [`MESSAGES`] messages: the producer (the benchmark's thread) sends them as fast as it can,
//! then parks until the consumer that takes the last one unparks it. Every consumer counts
//! each message it takes with one `fetch_add` on a shared counter (the same for every
//! queue). The time is from the first send to the last message counted, so it covers the
//! producer's sends, the consumers' takes and their wake-ups, whichever is the bottleneck.
//!
//! - `cport/N`: `Port::post` -> `Port::next_completion(None)` (a port with 1 worker thread,
//!   idle in `epoll_wait`; posts do not go through it).
//! - `crossbeam/N`: `crossbeam_channel::unbounded`, the receiver cloned into N threads.
//! - `mpsc/1`: `std::sync::mpsc::channel`, its single receiver (mpsc is single-consumer).
//! - `mpsc_mutex/N`: the same channel with the receiver behind a `Mutex`, shared by N
//!   threads: a consumer holds the lock while it blocks in `recv`.
//!
//! Throughput is in messages (`Throughput::Elements`); criterion reports time per iteration
//! (per [`MESSAGES`] messages) and messages/s.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use cport::Port;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};

/// Messages per iteration.
const MESSAGES: u64 = 10_000;

/// Consumer thread counts.
const CONSUMERS: [usize; 4] = [1, 2, 8, 16];

/// The value that tells a consumer to exit (never counted).
const STOP: u64 = u64::MAX;

/// Counter of messages taken in the current round, on its own cache line.
#[repr(align(128))]
struct Padded(AtomicU64);

/// What the consumers of one benchmark share with the producer.
struct Tally {
    taken: Padded,
    target: Padded,
    done: AtomicBool,
    producer: Thread,
}

impl Tally {
    fn new() -> Arc<Tally> {
        Arc::new(Tally {
            taken: Padded(AtomicU64::new(0)),
            target: Padded(AtomicU64::new(u64::MAX)),
            done: AtomicBool::new(false),
            producer: thread::current(),
        })
    }

    /// Called by a consumer for every message it takes.
    fn count(&self, value: u64) {
        black_box(value);
        if self.taken.0.fetch_add(1, Ordering::AcqRel) + 1 == self.target.0.load(Ordering::Acquire) {
            self.done.store(true, Ordering::Release);
            self.producer.unpark();
        }
    }

    /// Runs one round of `total` messages sent by `send`; returns its duration. Every
    /// consumer is idle (the previous round was fully taken) when this starts.
    fn round(&self, total: u64, mut send: impl FnMut(u64)) -> Duration {
        self.done.store(false, Ordering::Relaxed);
        self.target.0.store(total, Ordering::Relaxed);
        self.taken.0.store(0, Ordering::Release);
        let start = Instant::now();
        for i in 0..total {
            send(i);
        }
        while !self.done.load(Ordering::Acquire) {
            thread::park();
        }
        start.elapsed()
    }
}

/// Spawns `n` consumers running `body` (which returns when told to stop).
fn spawn(n: usize, body: impl Fn() + Send + Sync + Clone + 'static) -> Vec<JoinHandle<()>> {
    (0..n).map(|_| thread::spawn(body.clone())).collect()
}

fn queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(MESSAGES));

    for n in CONSUMERS {
        // cport: post -> next_completion.
        let port = Port::builder().threads(1).build().expect("port");
        let tally = Tally::new();
        let consumers = spawn(n, {
            let (port, tally) = (port.clone(), tally.clone());
            move || loop {
                let c = port.next_completion(None).expect("next_completion").expect("no timeout");
                if c.value() == STOP {
                    return;
                }
                tally.count(c.value());
            }
        });
        g.bench_function(BenchmarkId::new("cport", n), |b| {
            b.iter_custom(|iters| tally.round(iters * MESSAGES, |i| port.post(1, i).expect("post")))
        });
        (0..n).for_each(|_| port.post(1, STOP).expect("post"));
        consumers.into_iter().for_each(|h| h.join().expect("consumer"));
        drop(port);

        // crossbeam-channel: unbounded MPMC.
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let tally = Tally::new();
        let consumers = spawn(n, {
            let tally = tally.clone();
            move || loop {
                let v = rx.recv().expect("recv");
                if v == STOP {
                    return;
                }
                tally.count(v);
            }
        });
        g.bench_function(BenchmarkId::new("crossbeam", n), |b| {
            b.iter_custom(|iters| tally.round(iters * MESSAGES, |i| tx.send(i).expect("send")))
        });
        (0..n).for_each(|_| tx.send(STOP).expect("send"));
        consumers.into_iter().for_each(|h| h.join().expect("consumer"));

        // std::sync::mpsc: the receiver alone for one consumer, behind a Mutex for any number.
        if n == 1 {
            let (tx, rx) = mpsc::channel::<u64>();
            let tally = Tally::new();
            let consumer = thread::spawn({
                let tally = tally.clone();
                move || {
                    while let Ok(v) = rx.recv() {
                        tally.count(v);
                    }
                }
            });
            g.bench_function(BenchmarkId::new("mpsc", n), |b| {
                b.iter_custom(|iters| tally.round(iters * MESSAGES, |i| tx.send(i).expect("send")))
            });
            drop(tx);
            consumer.join().expect("consumer");
        }
        let (tx, rx) = mpsc::channel::<u64>();
        let rx = Arc::new(Mutex::new(rx));
        let tally = Tally::new();
        let consumers = spawn(n, {
            let tally = tally.clone();
            move || loop {
                let got = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match got {
                    Ok(v) => tally.count(v),
                    Err(_) => return,
                }
            }
        });
        g.bench_function(BenchmarkId::new("mpsc_mutex", n), |b| {
            b.iter_custom(|iters| tally.round(iters * MESSAGES, |i| tx.send(i).expect("send")))
        });
        drop(tx);
        consumers.into_iter().for_each(|h| h.join().expect("consumer"));
    }
    g.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
