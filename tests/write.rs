//! Writes larger than the socket buffer, vectored writes, and full duplex (a read and a write
//! pending on one stream at once, neither dropping the other's epoll interest).

mod util;

use std::io::{Read, Write};
use std::time::Duration;

use cport::{Op, Request, Status};
use util::{assert_quiet, next, pattern, port_with_pair, read_pattern, small_rcvbuf, small_sndbuf, ProgressLog};

const BIG: usize = 8 << 20;
/// Socket buffer size for the big transfers: far below `BIG`, so the write must resume.
const SMALL_BUF: usize = 64 << 10;

fn check_progress(log: &ProgressLog, total: usize) {
    let v = log.values();
    assert!(!v.is_empty(), "a write larger than the socket buffer made partial progress");
    assert!(v.windows(2).all(|w| w[0] < w[1]), "progress only grows: {v:?}");
    assert!(*v.last().unwrap() < total, "progress reports only partial progress");
}

#[test]
fn write_larger_than_the_socket_buffer_completes_once_with_every_byte() {
    let (port, isb, mut peer) = port_with_pair(2);
    small_sndbuf(isb.fd().unwrap(), SMALL_BUF);
    small_rcvbuf(util::raw(&peer), SMALL_BUF);
    let data = pattern(11, BIG);
    let log = ProgressLog::default();
    port.start_io(&isb, Request::write(data).on_progress(log.callback())).unwrap();
    let reader = std::thread::spawn(move || {
        // A slow reader: a short nap after every read.
        read_pattern(&mut peer, 11, BIG, SMALL_BUF, Duration::from_micros(500))
    });
    let mut c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes(), c.token()), (Op::Write, Status::Ok, BIG, 1));
    assert!(c.error().is_none());
    assert_eq!(reader.join().unwrap(), BIG, "the peer received every byte, intact and in order");
    let buf = c.take_buffer().unwrap();
    assert_eq!(buf.len(), BIG);
    assert!(buf == pattern(11, BIG), "the buffer comes back unchanged");
    check_progress(&log, BIG);
    assert_quiet(&port, Duration::from_millis(50));
}

#[test]
fn vectored_write_arrives_in_order() {
    let (port, isb, mut peer) = port_with_pair(2);
    let bufs = vec![b"hello ".to_vec(), Vec::new(), b"vectored ".to_vec(), b"world".to_vec()];
    port.start_io(&isb, Request::write_vectored(bufs.clone())).unwrap();
    let mut c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::WriteVectored, Status::Ok, 20));
    assert_eq!(c.take_buffers(), bufs, "the buffers come back, in order");
    let mut got = [0; 20];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello vectored world");
}

#[test]
fn large_vectored_write_resumes_across_buffers_in_order() {
    let (port, isb, mut peer) = port_with_pair(2);
    small_sndbuf(isb.fd().unwrap(), SMALL_BUF);
    small_rcvbuf(util::raw(&peer), SMALL_BUF);
    // Odd sizes, so that partial sends stop in the middle of buffers.
    let bufs: Vec<Vec<u8>> =
        [300_001, 1, 1 << 20, 77_777, 500_000].iter().enumerate().map(|(i, &n)| pattern(100 + i as u64, n)).collect();
    let all: Vec<u8> = bufs.concat();
    let total = all.len();
    let log = ProgressLog::default();
    port.start_io(&isb, Request::write_vectored(bufs.clone()).on_progress(log.callback())).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0; total];
        peer.read_exact(&mut got).map(|()| got)
    });
    let mut c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::WriteVectored, Status::Ok, total));
    let got = reader.join().unwrap().expect("the peer reads everything");
    assert!(got == all, "bytes arrive in buffer order");
    assert_eq!(c.take_buffers(), bufs);
    check_progress(&log, total);
    assert_quiet(&port, Duration::from_millis(50));
}

#[test]
fn full_duplex_read_completes_while_a_big_write_waits_for_epollout() {
    let (port, isb, mut peer) = port_with_pair(2);
    small_sndbuf(isb.fd().unwrap(), SMALL_BUF);
    small_rcvbuf(util::raw(&peer), SMALL_BUF);
    // A read that waits (nothing was sent), then a write that fills the send buffer and
    // needs EPOLLOUT: arming for the write must keep the read's EPOLLIN.
    port.start_io(&isb, Request::read_some(vec![0; 16])).unwrap();
    let log = ProgressLog::default();
    port.start_io(&isb, Request::write(pattern(5, BIG)).on_progress(log.callback())).unwrap();
    assert!(!log.values().is_empty(), "the write is pending with a full send buffer");
    peer.write_all(b"ping").unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.data()), (Op::Read, Status::Ok, &b"ping"[..]), "the read, not the write");
    // Completing the read re-arms: the write's EPOLLOUT must survive it.
    let reader = std::thread::spawn(move || read_pattern(&mut peer, 5, BIG, SMALL_BUF, Duration::ZERO));
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Write, Status::Ok, BIG));
    assert_eq!(reader.join().unwrap(), BIG);
    check_progress(&log, BIG);
}

#[test]
fn full_duplex_write_progress_keeps_the_pending_read_armed() {
    const FIRST: usize = 1 << 20;
    let (port, isb, mut peer) = port_with_pair(2);
    small_sndbuf(isb.fd().unwrap(), SMALL_BUF);
    small_rcvbuf(util::raw(&peer), SMALL_BUF);
    // The write first, then the read: EPOLLOUT events follow while the read waits, and every
    // re-arm after them must keep EPOLLIN.
    let data = pattern(6, BIG);
    let log = ProgressLog::default();
    port.start_io(&isb, Request::write(data.clone()).on_progress(log.callback())).unwrap();
    port.start_io(&isb, Request::read(vec![0; 16], 4..=16)).unwrap();
    let mut peer2 = peer.try_clone().unwrap();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        // Read the first MiB (the write resumes on EPOLLOUT many times), then stall the write
        // until told to go on.
        let mut got = vec![0; BIG];
        peer2.read_exact(&mut got[..FIRST]).unwrap();
        resume_rx.recv().unwrap();
        peer2.read_exact(&mut got[FIRST..]).unwrap();
        got
    });
    assert!(util::eventually(|| log.values().last().is_some_and(|&n| n >= FIRST)), "the write progresses");
    // Data for the read arrives while the write is stalled: the read must complete now,
    // not only after the write.
    peer.write_all(b"mid-").unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.data()), (Op::Read, Status::Ok, &b"mid-"[..]), "the read, not the write");
    resume_tx.send(()).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Write, Status::Ok, BIG));
    assert!(reader.join().unwrap() == data, "the peer received every byte in order");
    // After the write is done, a new read still works.
    port.start_io(&isb, Request::read_some(vec![0; 16])).unwrap();
    peer.write_all(b"end").unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.data()), (Op::Read, &b"end"[..]));
    assert_quiet(&port, Duration::from_millis(50));
}

/// `data` and `into_data` give the bytes transferred, for writes and vectored I/O too.
#[test]
fn into_data_is_exactly_the_bytes_transferred() {
    let port = cport::Port::builder().threads(0).build().unwrap();
    let (ours, mut peer) = util::pair();
    let isb = port.assign(cport::driver::UnixStream::new(ours), 1).unwrap();
    port.start_io(&isb, cport::Request::write(b"sent".to_vec())).unwrap();
    let c = util::next(&port);
    assert_eq!((c.op(), c.data()), (cport::Op::Write, &b"sent"[..]));
    assert_eq!(c.into_data(), b"sent".to_vec());

    std::io::Write::write_all(&mut peer, b"abcdefg").unwrap();
    assert!(util::eventually(|| util::pending_bytes(isb.fd().expect("assigned")) == 7));
    port.start_io(&isb, cport::Request::read_vectored(vec![vec![0; 3], vec![0; 3], vec![0; 8]], 7)).unwrap();
    let c = util::next(&port);
    assert_eq!((c.op(), c.bytes(), c.data()), (cport::Op::ReadVectored, 7, &b""[..]));
    assert_eq!(c.into_data(), b"abcdefg".to_vec());
}
