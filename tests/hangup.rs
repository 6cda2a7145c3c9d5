//! The peer goes away: a reset is `Abandoned`, an orderly close is `Eof` for reads (with the
//! bytes that did arrive), and writes to a closed peer end `Abandoned`.

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use cport::{ErrorKind, Op, Request, Status};
use util::{assert_quiet, eventually, next, pattern, port_with_pair, reset, small_rcvbuf, small_sndbuf, ProgressLog};

const QUIET: Duration = Duration::from_millis(50);

fn assert_abandoned(c: &cport::Completion) {
    assert_eq!(c.status(), Status::Abandoned, "{c:?}");
    assert_eq!(c.result().unwrap_err().kind(), ErrorKind::Abandoned, "{c:?}");
    if let Some(e) = c.error() {
        assert_eq!(e.kind(), ErrorKind::Abandoned, "{e}");
        assert!(matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) | None), "{e}");
    }
}

#[test]
fn peer_reset_while_a_read_is_pending_is_abandoned() {
    let (port, isb, peer) = port_with_pair(2);
    port.start_io(&isb, Request::read_some(vec![0; 64])).unwrap();
    assert_quiet(&port, QUIET);
    reset(peer);
    let c = next(&port);
    assert_eq!((c.op(), c.token(), c.bytes()), (Op::Read, 1, 0));
    assert_abandoned(&c);
    assert_eq!(c.buffer().unwrap().len(), 64, "the buffer comes back");
    assert_quiet(&port, QUIET);
}

#[test]
fn peer_reset_before_the_read_starts_is_abandoned() {
    let (port, isb, peer) = port_with_pair(2);
    reset(peer);
    port.start_io(&isb, Request::read_some(vec![0; 64])).unwrap();
    let c = next(&port);
    assert_eq!(c.op(), Op::Read);
    assert_abandoned(&c);
}

#[test]
fn peer_reset_ends_a_pending_read_and_a_pending_write_once_each() {
    let (port, isb, peer) = port_with_pair(2);
    small_sndbuf(isb.fd().unwrap(), 64 << 10);
    small_rcvbuf(util::raw(&peer), 64 << 10);
    port.start_io(&isb, Request::read_some(vec![0; 64])).unwrap();
    port.write(&isb, pattern(1, 8 << 20)).unwrap();
    assert_quiet(&port, QUIET);
    reset(peer);
    let mut ops = Vec::new();
    for _ in 0..2 {
        let c = next(&port);
        assert_abandoned(&c);
        if c.op() == Op::Write {
            assert!(c.bytes() < 8 << 20, "the write did not finish: {c:?}");
        }
        ops.push(c.op());
    }
    ops.sort_by_key(|op| op.name());
    assert_eq!(ops, vec![Op::Read, Op::Write]);
    assert_quiet(&port, QUIET);
}

#[test]
fn eof_ends_a_pending_read_with_zero_bytes() {
    let (port, isb, peer) = port_with_pair(2);
    port.start_io(&isb, Request::read_some(vec![0; 64])).unwrap();
    assert_quiet(&port, QUIET);
    drop(peer);
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Read, Status::Eof, 0));
    assert_eq!(c.result().unwrap(), 0, "end of stream is not an error");
    assert!(c.error().is_none());
    // A read after the end of stream ends the same way, at once.
    port.start_io(&isb, Request::read_some(vec![0; 64])).unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.bytes()), (Status::Eof, 0));
}

#[test]
fn eof_after_half_close_before_the_read_starts() {
    let (port, isb, peer) = port_with_pair(2);
    peer.shutdown(Shutdown::Write).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 64])).unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.bytes()), (Status::Eof, 0));
    // The other direction still works after the peer's half close.
    port.write(&isb, b"still here".to_vec()).unwrap();
    assert_eq!(next(&port).status(), Status::Ok);
    let mut got = [0; 10];
    std::io::Read::read_exact(&mut &peer, &mut got).unwrap();
    assert_eq!(&got, b"still here");
}

#[test]
fn read_of_min_5_that_got_2_bytes_then_eof_is_eof_with_2_bytes() {
    let (port, isb, mut peer) = port_with_pair(2);
    let log = ProgressLog::default();
    port.start_io(&isb, Request::read(vec![0; 10], 5..=10).on_progress(log.callback())).unwrap();
    peer.write_all(b"ab").unwrap();
    assert!(eventually(|| log.values() == [2]), "the two bytes were read first: {:?}", log.values());
    drop(peer);
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Read, Status::Eof, 2));
    assert_eq!(c.data(), b"ab");
    assert_eq!(c.result().unwrap(), 2);
}

#[test]
fn bytes_and_eof_arriving_together_are_eof_with_the_bytes() {
    let (port, isb, mut peer) = port_with_pair(2);
    peer.write_all(b"xy").unwrap();
    drop(peer);
    port.start_io(&isb, Request::read(vec![0; 10], 5..=10)).unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.bytes(), c.data()), (Status::Eof, 2, &b"xy"[..]));
}

#[test]
fn writes_to_a_closed_peer_end_abandoned() {
    let (port, isb, peer) = port_with_pair(2);
    drop(peer);
    // The first writes may still be taken by the kernel; once the peer's reset is back, a
    // write fails with EPIPE or ECONNRESET.
    let mut oks = 0;
    loop {
        port.write(&isb, vec![7; 64 << 10]).unwrap();
        let c = next(&port);
        assert_eq!(c.op(), Op::Write);
        if c.status() == Status::Ok {
            oks += 1;
            assert!(oks < 100, "100 writes to a closed peer all succeeded");
            continue;
        }
        assert_abandoned(&c);
        assert!(c.error().is_some(), "the OS error is kept: {c:?}");
        break;
    }
}

#[test]
fn pending_write_ends_abandoned_when_the_peer_closes() {
    let (port, isb, peer) = port_with_pair(2);
    small_sndbuf(isb.fd().unwrap(), 64 << 10);
    small_rcvbuf(util::raw(&peer), 64 << 10);
    let log = ProgressLog::default();
    port.start_io(&isb, Request::write(pattern(2, 8 << 20)).on_progress(log.callback())).unwrap();
    assert!(!log.values().is_empty(), "the write is pending with a full send buffer");
    assert_quiet(&port, QUIET);
    // Closing with unread data in its receive buffer makes the peer send a reset.
    drop(peer);
    let c = next(&port);
    assert_eq!(c.op(), Op::Write);
    assert_abandoned(&c);
    assert!(c.bytes() < 8 << 20);
    assert_quiet(&port, QUIET);
}

#[test]
fn read_with_min_zero_at_end_of_stream_is_eof() {
    let (port, isb, peer) = port_with_pair(1);
    drop(peer);
    // With min 0, "nothing there yet" (Ok, 0 bytes) and "nothing will ever come" (Eof) differ.
    assert!(eventually(|| {
        port.read(&isb, vec![0; 8], 0..=8).unwrap();
        let c = next(&port);
        assert_eq!(c.bytes(), 0, "{c:?}");
        c.status() == Status::Eof
    }));
}

/// A Unix socket or a pipe whose peer writes and closes while a read is pending: epoll reports
/// a hang-up with the bytes, and the read ends `Eof` with them (not `Abandoned`), as on TCP.
#[test]
fn bytes_then_hangup_on_unix_sockets_and_pipes_are_eof_with_the_bytes() {
    use std::os::fd::OwnedFd;
    let port = util::port(0);
    let (a, mut b) = util::pair();
    let unix = port.assign(cport::driver::UnixStream::new(a), 1).unwrap();
    let (r, w) = std::io::pipe().unwrap();
    let pipe = port.assign(cport::driver::Fd::new(OwnedFd::from(r)), 2).unwrap();
    port.start_io(&unix, Request::read(vec![0; 16], 8..=16)).unwrap();
    port.start_io(&pipe, Request::read(vec![0; 16], 8..=16)).unwrap();
    assert_quiet(&port, QUIET);
    b.write_all(b"abc").unwrap();
    let mut w = std::fs::File::from(OwnedFd::from(w));
    w.write_all(b"defg").unwrap();
    drop((b, w));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let c = next(&port);
        seen.push((c.token(), c.status(), c.data().to_vec()));
    }
    seen.sort_by_key(|s| s.0);
    assert_eq!(seen, [(1, Status::Eof, b"abc".to_vec()), (2, Status::Eof, b"defg".to_vec())]);
}
