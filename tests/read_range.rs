//! Reads of a byte range `min..=max`, fed one byte at a time; reads with min 0; vectored
//! reads; progress reports.

mod util;

use std::io::Write;

use cport::{ErrorKind, Op, Request, Status};
use util::{eventually, next, pending_bytes, port_with_pair, ProgressLog};

/// Asserts that the read side of `isb` still has its I/O in progress: not finished, and no
/// completion queued.
#[track_caller]
fn assert_read_in_progress(port: &cport::Port, isb: &cport::Isb, what: &str) {
    let e = port.start_io(isb, Request::read_some(vec![7; 4])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{what}: {e}");
    assert!(e.error().message().contains("in progress"), "{what}: the read finished: {e}");
    assert_eq!(e.into_request().into_buffer().unwrap(), vec![7; 4]);
    assert!(port.try_next_completion().unwrap().is_none(), "{what}: a completion was queued");
}

#[test]
fn read_5_to_10_completes_only_once_5_bytes_trickled_in() {
    let (port, isb, mut peer) = port_with_pair(2);
    let fd = isb.fd().unwrap();
    port.read(&isb, vec![0; 16], 5..=10).unwrap();
    for (i, b) in b"abcd".iter().enumerate() {
        peer.write_all(&[*b]).unwrap();
        // The worker has taken the byte into the read: nothing is left in the socket.
        assert!(eventually(|| pending_bytes(fd) == 0), "byte {i} was never read");
        assert_read_in_progress(&port, &isb, &format!("after byte {i}"));
    }
    peer.write_all(b"e").unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.token()), (Op::Read, Status::Ok, 1));
    assert_eq!(c.bytes(), 5);
    assert_eq!(c.data(), b"abcde");
    assert_eq!(c.buffer().unwrap().len(), 16, "the whole buffer comes back");
    assert_eq!(&c.buffer().unwrap()[5..], &[0; 11], "nothing written past the bytes read");
}

#[test]
fn busy_error_while_the_range_read_waits() {
    let (port, isb, mut peer) = port_with_pair(1);
    port.read(&isb, vec![0; 8], 3..=8).unwrap();
    peer.write_all(b"x").unwrap();
    let err = port.start_io(&isb, Request::read_some(vec![7; 4])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert_eq!(err.into_request().into_buffer().unwrap(), vec![7; 4], "a refused request gives its buffer back");
    peer.write_all(b"yz").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"xyz"[..]));
}

#[test]
fn read_takes_at_most_max_and_leaves_the_rest() {
    let (port, isb, mut peer) = port_with_pair(2);
    let sent = util::pattern(3, 15);
    peer.write_all(&sent).unwrap();
    port.read(&isb, vec![0; 15], 15..=15).unwrap();
    let c = next(&port);
    assert_eq!(c.data(), &sent[..]);
    peer.write_all(&sent).unwrap();
    // Wait until the whole burst is there, so the read sees more than max at once.
    assert!(eventually(|| pending_bytes(isb.fd().unwrap()) == 15));
    port.read(&isb, vec![0; 32], 5..=10).unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.bytes()), (Status::Ok, 10));
    assert_eq!(c.data(), &sent[..10]);
    assert_eq!(&c.buffer().unwrap()[10..], &[0; 22], "max bounds the read, not the buffer length");
    port.read(&isb, vec![0; 32], 1..=32).unwrap();
    let c = next(&port);
    assert_eq!(c.data(), &sent[10..], "the bytes beyond max stay for the next read");
}

#[test]
fn read_with_min_zero_completes_at_once() {
    let (port, isb, mut peer) = port_with_pair(2);
    // Nothing was sent: a read that waited would only end at the hang guard.
    port.read(&isb, vec![9; 8], 0..=8).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Read, Status::Ok, 0));
    assert_eq!(c.data(), b"");
    assert_eq!(c.buffer().unwrap(), &[9; 8], "the buffer is untouched");
    // The same again, after a read that drained the stream.
    peer.write_all(b"hi").unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    assert_eq!(next(&port).data(), b"hi");
    port.read(&isb, vec![0; 8], 0..=8).unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.bytes()), (Status::Ok, 0));
    // With data there, min 0 takes what is there.
    peer.write_all(b"abc").unwrap();
    assert!(eventually(|| pending_bytes(isb.fd().unwrap()) == 3));
    port.read(&isb, vec![0; 8], 0..=8).unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"abc"[..]));
}

#[test]
fn vectored_read_fills_buffers_in_order() {
    let (port, isb, mut peer) = port_with_pair(2);
    peer.write_all(b"abcdefghijkl").unwrap();
    port.start_io(&isb, Request::read_vectored(vec![vec![0; 3], vec![0; 4], vec![0; 5]], 12)).unwrap();
    let mut c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::ReadVectored, Status::Ok, 12));
    let bufs = c.take_buffers();
    assert_eq!(bufs, vec![b"abc".to_vec(), b"defg".to_vec(), b"hijkl".to_vec()]);
}

#[test]
fn vectored_read_trickled_across_buffer_boundaries() {
    let (port, isb, mut peer) = port_with_pair(2);
    let fd = isb.fd().unwrap();
    port.start_io(&isb, Request::read_vectored(vec![vec![0; 2], vec![0; 3], vec![0; 4]], 7)).unwrap();
    for chunk in [&b"a"[..], b"bc", b"d", b"ef"] {
        peer.write_all(chunk).unwrap();
        assert!(eventually(|| pending_bytes(fd) == 0), "{chunk:?} was never read");
        assert_read_in_progress(&port, &isb, &format!("after {chunk:?}"));
    }
    peer.write_all(b"g").unwrap();
    let mut c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::ReadVectored, Status::Ok, 7));
    assert_eq!(c.take_buffers(), vec![b"ab".to_vec(), b"cde".to_vec(), b"fg\0\0".to_vec()]);
}

#[test]
fn progress_reports_partial_progress_before_the_completion() {
    let (port, isb, mut peer) = port_with_pair(2);
    let log = ProgressLog::default();
    port.start_io(&isb, Request::read(vec![0; 10], 5..=10).on_progress(log.callback())).unwrap();
    for (i, b) in b"vwxy".iter().enumerate() {
        peer.write_all(&[*b]).unwrap();
        assert!(
            eventually(|| log.values().len() > i),
            "no progress report for byte {} (reports so far {:?})",
            i + 1,
            log.values()
        );
        assert!(port.try_next_completion().unwrap().is_none(), "completed after only {} bytes", i + 1);
    }
    assert_eq!(log.values(), vec![1, 2, 3, 4]);
    peer.write_all(b"z").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"vwxyz"[..]));
    assert_eq!(log.values(), vec![1, 2, 3, 4], "no report for the completing step, none after it");
}
