//! One I/O round trip through the port on a Unix socketpair, beside the same bytes moved with
//! blocking syscalls on one thread. `cargo bench --bench io`.
//!
//! The port has one worker thread; the benchmark's thread starts the I/O, plays the peer with
//! blocking calls on the other end, and takes the completions.
//!
//! - `read/cport`: start a 64-byte `read_exact` (the socket is empty: the try says EAGAIN and
//!   epoll is armed), the peer writes 64 B, `next_completion` takes the read. Costs a worker
//!   wake-up from `epoll_wait` and, unless the waiter is still spinning, a waiter wake-up.
//! - `read_ready/cport`: the peer writes 64 B first, then the read starts: it completes inside
//!   `start_io` (no epoll, no worker), and `next_completion` finds it queued.
//! - `read/blocking`: the peer writes 64 B, `read_exact` reads them, on one thread.
//! - `echo/cport`: start a read, the peer writes 64 B, take the read, start a write of the
//!   same buffer (it completes inside `start_io`: the send buffer has room), take the write,
//!   the peer reads the 64 B back.
//! - `echo/blocking`: the peer writes, read, write back, the peer reads, on one thread.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cport::{Op, Port, Request, Status};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SIZE: usize = 64;

fn take(port: &Port, op: Op) -> Vec<u8> {
    let mut c = port.next_completion(None).expect("next_completion").expect("no timeout");
    assert_eq!((c.op(), c.status(), c.bytes()), (op, Status::Ok, SIZE), "{c:?}");
    c.take_buffer().expect("buffer")
}

fn io(c: &mut Criterion) {
    let mut g = c.benchmark_group("io");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(1));
    let msg = [5u8; SIZE];

    let port = Port::builder().threads(1).build().expect("port");
    let (a, mut peer) = UnixStream::pair().expect("socketpair");
    let isb = port.assign(cport::driver::UnixStream::new(a), 7).expect("assign");
    let mut buf = Some(vec![0u8; SIZE]);
    g.bench_function("read/cport", |b| {
        b.iter(|| {
            port.start_io(&isb, Request::read_exact(buf.take().expect("buffer"))).expect("start_io");
            peer.write_all(&msg).expect("peer write");
            buf = Some(take(&port, Op::Read));
        })
    });
    g.bench_function("read_ready/cport", |b| {
        b.iter(|| {
            peer.write_all(&msg).expect("peer write");
            port.start_io(&isb, Request::read_exact(buf.take().expect("buffer"))).expect("start_io");
            buf = Some(take(&port, Op::Read));
        })
    });
    let mut back = [0u8; SIZE];
    g.bench_function("echo/cport", |b| {
        b.iter(|| {
            port.start_io(&isb, Request::read_exact(buf.take().expect("buffer"))).expect("start_io");
            peer.write_all(&msg).expect("peer write");
            let got = take(&port, Op::Read);
            port.write(&isb, got).expect("write");
            buf = Some(take(&port, Op::Write));
            peer.read_exact(&mut back).expect("peer read");
        })
    });
    drop(port);

    let (mut x, mut y) = UnixStream::pair().expect("socketpair");
    let mut raw = [0u8; SIZE];
    g.bench_function("read/blocking", |b| {
        b.iter(|| {
            y.write_all(&msg).expect("write");
            x.read_exact(&mut raw).expect("read");
        })
    });
    g.bench_function("echo/blocking", |b| {
        b.iter(|| {
            y.write_all(&msg).expect("write");
            x.read_exact(&mut raw).expect("read");
            x.write_all(&raw).expect("write back");
            y.read_exact(&mut back).expect("read back");
        })
    });
    g.finish();
}

criterion_group!(benches, io);
criterion_main!(benches);
