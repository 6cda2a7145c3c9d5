//! Micro-benchmarks of the port's hot paths. `cargo bench --bench port`.
//!
//! - `post_take`: `post` then `next_completion` on one thread: the queue hand-off.
//! - `socketpair_round_trip`: start a read, the peer writes 64 bytes, take the completion;
//!   beside the same work done with blocking syscalls on one thread.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cport::{Port, Request};
use criterion::{criterion_group, criterion_main, Criterion};

fn post_take(c: &mut Criterion) {
    let port = Port::builder().threads(1).build().unwrap();
    c.bench_function("post_take", |b| {
        b.iter(|| {
            port.post(1, 2).unwrap();
            port.next_completion(None).unwrap().unwrap()
        })
    });
}

fn socketpair_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("socketpair_round_trip");
    g.measurement_time(Duration::from_secs(3));
    let port = Port::builder().threads(1).build().unwrap();
    let (a, mut peer) = UnixStream::pair().unwrap();
    let isb = port.assign(cport::driver::UnixStream::new(a), 7).unwrap();
    let msg = [5u8; 64];
    let mut buf = Some(vec![0u8; 64]);
    g.bench_function("cport", |b| {
        b.iter(|| {
            port.start_io(&isb, Request::read_exact(buf.take().unwrap())).unwrap();
            peer.write_all(&msg).unwrap();
            let mut c = port.next_completion(None).unwrap().unwrap();
            buf = c.take_buffer();
        })
    });
    let (mut x, mut y) = UnixStream::pair().unwrap();
    let mut raw = [0u8; 64];
    g.bench_function("blocking", |b| {
        b.iter(|| {
            y.write_all(&msg).unwrap();
            x.read_exact(&mut raw).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, post_take, socketpair_round_trip);
criterion_main!(benches);
