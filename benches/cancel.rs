//! Cancel: start a read, cancel it, take its `Cancelled` completion, on a Unix socketpair whose
//! peer never writes. `cargo bench --bench cancel`.
//!
//! - `read/cport`: `start_io(read_some)` + `cancel` + `next_completion`, all on the benchmark's
//!   thread (the port's one worker stays in `epoll_wait`). After the first round the stream is
//!   known drained, so the start neither tries a `recv` nor, as epoll stays armed for reading
//!   after a cancel, calls `epoll_ctl`: this measures the port's own bookkeeping (stream lock,
//!   side states, the completion through the queue).
//! - `read_write/cport`: the same with a read and a write pending at once (the write is made to
//!   wait by filling the send buffer first), so one `cancel` ends both: two completions. Unlike
//!   the read, the write is tried at every start: one `sendmsg` that says EAGAIN per iteration.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use cport::{Op, Port, Request, Status};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn take(port: &Port) -> cport::Completion {
    let c = port.next_completion(None).expect("next_completion").expect("no timeout");
    assert_eq!(c.status(), Status::Cancelled, "{c:?}");
    c
}

fn cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("cancel");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(1));

    let port = Port::builder().threads(1).build().expect("port");
    let (a, _peer) = UnixStream::pair().expect("socketpair");
    let isb = port.assign(cport::driver::UnixStream::new(a), 7).expect("assign");
    let mut buf = Some(vec![0u8; 64]);
    g.bench_function("read/cport", |b| {
        b.iter(|| {
            port.start_io(&isb, Request::read_some(buf.take().expect("buffer"))).expect("start_io");
            assert_eq!(port.cancel(&isb).expect("cancel"), 1);
            buf = take(&port).take_buffer();
        })
    });

    // Fill the send buffer so that a write stays pending.
    let (a, _peer) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    while std::io::Write::write(&mut &a, &[0u8; 4096]).is_ok() {}
    let isb = port.assign(cport::driver::UnixStream::new(a), 8).expect("assign");
    let mut wbuf = Some(vec![1u8; 64]);
    g.bench_function("read_write/cport", |b| {
        b.iter(|| {
            port.start_io(&isb, Request::read_some(buf.take().expect("buffer"))).expect("start read");
            port.start_io(&isb, Request::write(wbuf.take().expect("buffer"))).expect("start write");
            assert_eq!(port.cancel(&isb).expect("cancel"), 2);
            for _ in 0..2 {
                let mut c = take(&port);
                match c.op() {
                    Op::Read => buf = c.take_buffer(),
                    _ => wbuf = c.take_buffer(),
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, cancel);
criterion_main!(benches);
