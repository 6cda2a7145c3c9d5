//! Stream deadlines (`set_timeout`): pending I/O ends as TimedOut, completed I/O is left
//! alone, `None` clears, timeouts race completion and cancel, and thousands of them fire
//! exactly once each.

mod util;

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cport::{driver, ErrorKind, Op, Port, Request, Status};
use util::{assert_quiet, next, pair, pending_bytes, raw, spin, Rng, GUARD};

/// A deadline that no stall of the test's threads (a second, on a loaded machine) can pass
/// before the test has done what must happen first.
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn pending_read_times_out_and_returns_its_buffer() {
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 11).unwrap();

    let buf = vec![5u8; 64];
    let ptr = buf.as_ptr();
    port.start_io(&isb, Request::read_some(buf)).unwrap();
    let t0 = Instant::now();
    port.set_timeout(&isb, Some(Duration::from_millis(50))).unwrap();
    assert_eq!(port.timers(), 1);
    let mut c = next(&port);
    assert!(t0.elapsed() >= Duration::from_millis(50), "timed out early: {:?}", t0.elapsed());
    assert_eq!((c.token(), c.op(), c.status(), c.bytes()), (11, Op::Read, Status::TimedOut, 0));
    let e = c.result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert!(e.message().contains("timed out"), "{e}");
    let back = c.take_buffer().unwrap();
    assert_eq!((back.as_ptr(), back.len()), (ptr, 64));
    assert!(back.iter().all(|&b| b == 5));
    assert_eq!(port.timers(), 0, "a fired deadline is disarmed");
    assert!(port.try_next_completion().unwrap().is_none());

    // The stream is still usable and the deadline is gone: a new read waits for data.
    port.start_io(&isb, Request::read_some(back)).unwrap();
    assert_quiet(&port, Duration::from_millis(80));
    peer.write_all(b"late").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"late"[..]));
}

#[test]
fn deadline_ends_both_sides() {
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, _peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 12).unwrap();
    // Much more than a socketpair buffers: the write stays pending with nobody reading.
    let big = vec![1u8; 8 << 20];
    port.write(&isb, big).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 16])).unwrap();
    port.set_timeout(&isb, Some(Duration::from_millis(30))).unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut c = next(&port);
        assert_eq!(c.status(), Status::TimedOut, "{c:?}");
        if c.op() == Op::Write {
            assert!(c.bytes() < 8 << 20, "only part of the write was sent");
            assert_eq!(c.take_buffer().unwrap().len(), 8 << 20);
        }
        seen.push(c.op());
    }
    seen.sort_by_key(|op| op.name());
    assert_eq!(seen, vec![Op::Read, Op::Write]);
    assert_quiet(&port, Duration::from_millis(30));
}

#[test]
fn read_done_before_deadline_is_ok_and_the_deadline_fires_nothing() {
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 13).unwrap();

    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    // Far enough away that no stall of this thread lets it pass before the read is done.
    port.set_timeout(&isb, Some(SLACK)).unwrap();
    peer.write_all(b"ok").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"ok"[..]));
    // The deadline passes with nothing pending: the timer is gone and made no completion.
    assert!(util::eventually(|| port.timers() == 0), "timers: {}", port.timers());
    assert_quiet(&port, Duration::from_millis(50));

    // It fired once: a read started after it does not time out.
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    assert_quiet(&port, Duration::from_millis(150));
    peer.write_all(b"x").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"x"[..]));
}

#[test]
fn set_timeout_none_clears_the_deadline() {
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 14).unwrap();

    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    port.set_timeout(&isb, Some(SLACK)).unwrap();
    assert_eq!(port.timers(), 1);
    port.set_timeout(&isb, None).unwrap();
    assert_eq!(port.timers(), 0, "the cleared deadline is gone from the wheel");
    assert!(port.try_next_completion().unwrap().is_none());

    // Replacing a deadline keeps only the new one. The first is far enough away that no
    // stall between the two calls lets it fire.
    port.set_timeout(&isb, Some(SLACK)).unwrap();
    let t0 = Instant::now();
    port.set_timeout(&isb, Some(SLACK + Duration::from_millis(500))).unwrap();
    assert_eq!(port.timers(), 1);
    let c = next(&port);
    assert_eq!(c.status(), Status::TimedOut);
    assert!(t0.elapsed() >= SLACK + Duration::from_millis(500), "the replaced deadline fired: {:?}", t0.elapsed());

    // Clearing with no deadline set is fine too.
    port.set_timeout(&isb, None).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    peer.write_all(b"y").unwrap();
    assert_eq!(next(&port).status(), Status::Ok);
}

/// A short deadline races the peer's write and, in half the rounds, a cancel: every read
/// completes exactly once (Ok with the byte, TimedOut or Cancelled) and no byte is lost.
#[test]
fn timeout_races_completion_and_cancel() {
    const ROUNDS: usize = 2_000;
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    let probe = ours.try_clone().unwrap();
    let isb = port.assign(driver::UnixStream::new(ours), 15).unwrap();

    let (go_tx, go_rx) = mpsc::channel::<u64>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for delay in go_rx {
            spin(delay);
            peer.write_all(b"z").unwrap();
            done_tx.send(()).unwrap();
        }
    });

    let mut rng = Rng::new(7);
    let mut counts = [0usize; 3];
    for round in 0..ROUNDS {
        port.start_io(&isb, Request::read_some(vec![0; 1])).unwrap();
        port.set_timeout(&isb, Some(Duration::from_micros(rng.below(1_500)))).unwrap();
        go_tx.send(rng.below(20_000)).unwrap();
        let mut cancelled = 0;
        if round % 2 == 0 {
            spin(rng.below(20_000));
            cancelled = port.cancel(&isb).unwrap();
        }
        done_rx.recv_timeout(GUARD).expect("writer stalled");
        let c = next(&port);
        assert_eq!((c.token(), c.op()), (15, Op::Read), "round {round}");
        let mut backlog = 1;
        match c.status() {
            Status::Ok => {
                assert_eq!(c.data(), b"z", "round {round}");
                backlog = 0;
                counts[0] += 1;
            }
            Status::TimedOut => counts[1] += 1,
            Status::Cancelled => {
                assert_eq!(cancelled, 1, "round {round}");
                counts[2] += 1;
            }
            s => panic!("round {round}: unexpected status {s:?}"),
        }
        if c.status() != Status::Cancelled {
            assert_eq!(cancelled, 0, "round {round}: cancel counted an I/O that ended otherwise");
        }
        port.set_timeout(&isb, None).unwrap();
        if let Some(extra) = port.try_next_completion().unwrap() {
            panic!("round {round}: a second completion {extra:?}");
        }
        assert_eq!(pending_bytes(raw(&probe)), backlog, "round {round}");
        if backlog == 1 {
            port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
            let c = next(&port);
            assert_eq!((c.status(), c.data()), (Status::Ok, &b"z"[..]), "round {round}: the left-over byte");
        }
    }
    drop(go_tx);
    writer.join().unwrap();
    assert_eq!(counts.iter().sum::<usize>(), ROUNDS);
    assert_quiet(&port, Duration::from_millis(20));
    assert_eq!(port.timers(), 0);
    eprintln!("{ROUNDS} rounds: ok {}, timed out {}, cancelled {}", counts[0], counts[1], counts[2]);
}

/// 2,000 streams, each with a pending read and a deadline between 20 and 200 ms: every read
/// ends TimedOut exactly once, none before its deadline, and the timers are all gone after.
#[test]
fn thousands_of_deadlines_fire_exactly_once() {
    const STREAMS: usize = 2_000;
    let nofile = cport_testkit::raise_nofile(3 * STREAMS as u64 + 256).expect("raising RLIMIT_NOFILE");
    assert!(nofile.soft >= 2 * STREAMS as u64 + 128, "too few fds allowed: {nofile:?}");
    let port = Port::builder().threads(2).build().unwrap();
    let mut peers = Vec::with_capacity(STREAMS);
    let mut isbs = Vec::with_capacity(STREAMS);
    let mut deadlines = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let (ours, peer) = pair();
        peers.push(peer);
        let isb = port.assign(driver::UnixStream::new(ours), i as u64).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
        let after = Duration::from_millis(20 + (i as u64 * 7919) % 181);
        // The port reads the clock inside set_timeout: the deadline is no earlier than this.
        let set_at = Instant::now();
        port.set_timeout(&isb, Some(after)).unwrap();
        deadlines.push(set_at + after);
        isbs.push(isb);
    }
    assert!(port.timers() <= STREAMS);
    let mut seen = vec![false; STREAMS];
    for _ in 0..STREAMS {
        let mut c = next(&port);
        let now = Instant::now();
        let i = usize::try_from(c.token()).unwrap();
        assert!(!seen[i], "stream {i} completed twice");
        seen[i] = true;
        assert_eq!((c.op(), c.status(), c.bytes()), (Op::Read, Status::TimedOut, 0), "stream {i}");
        assert!(now >= deadlines[i], "stream {i} timed out {:?} early", deadlines[i] - now);
        assert_eq!(c.take_buffer().map(|b| b.len()), Some(4), "stream {i}");
    }
    assert!(seen.iter().all(|&s| s));
    assert_eq!(port.timers(), 0, "every deadline fired and was disarmed");
    assert_quiet(&port, Duration::from_millis(50));
    // Every stream is still assigned and free for new I/O.
    for isb in &isbs {
        assert!(isb.is_assigned());
        port.deassign(isb).unwrap();
    }
    assert_eq!(port.streams(), 0);
    assert!(port.try_next_completion().unwrap().is_none());
}

/// `Request::timeout`: the request's own timeout ends it alone (the other side's I/O stays
/// pending), returns its buffer, is disarmed when the I/O finishes first, and fires once.
#[test]
fn a_request_timeout_ends_that_request_only() {
    let port = Port::builder().threads(0).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 21).unwrap();
    // Much more than a socketpair buffers: the write stays pending with nobody reading.
    port.start_io(&isb, Request::write(vec![1u8; 8 << 20])).unwrap();
    let t0 = Instant::now();
    port.start_io(&isb, Request::read_some(vec![7; 32]).timeout(Duration::from_millis(40))).unwrap();
    assert_eq!(port.timers(), 1, "the read's timeout is armed");
    let mut c = next(&port);
    assert!(t0.elapsed() >= Duration::from_millis(40), "timed out early: {:?}", t0.elapsed());
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Read, Status::TimedOut, 0));
    assert_eq!(c.result().unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(c.take_buffer().map(|b| b.len()), Some(32), "the buffer comes back");
    assert_eq!(port.timers(), 0);

    // The write was not touched: it is still pending, and ends when the peer reads.
    assert_quiet(&port, Duration::from_millis(50));
    let reader = std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0;
        while total < 8 << 20 {
            total += std::io::Read::read(&mut peer, &mut sink).unwrap();
        }
        peer
    });
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Write, Status::Ok, 8 << 20));
    let mut peer = reader.join().unwrap();

    // An I/O that finishes first disarms its timeout: nothing fires later.
    port.start_io(&isb, Request::read_some(vec![0; 32]).timeout(SLACK)).unwrap();
    assert_eq!(port.timers(), 1);
    peer.write_all(b"in time").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"in time"[..]));
    assert_eq!(port.timers(), 0, "a finished request's timeout is disarmed");

    // An I/O that finishes at once (a write with room in the send buffer) never arms one.
    let c = port.start_io_inline(&isb, Request::write(b"at once".to_vec()).timeout(SLACK)).unwrap();
    assert_eq!(c.map(|c| c.into_data()), Some(b"at once".to_vec()));
    assert_eq!(port.timers(), 0);
    drop(peer);
}

/// The request's timeout and the stream's deadline both pending: whichever fires first ends
/// the I/O, once; the other finds nothing.
#[test]
fn a_request_timeout_and_the_stream_deadline_end_an_io_once() {
    let port = Port::builder().threads(0).build().unwrap();
    let (ours, _peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 22).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8]).timeout(Duration::from_millis(20))).unwrap();
    port.set_timeout(&isb, Some(Duration::from_millis(20))).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Read, Status::TimedOut));
    assert_quiet(&port, Duration::from_millis(80));
}
