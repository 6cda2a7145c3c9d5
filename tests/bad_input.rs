//! Every bad input is a clear error (the right kind, a message naming the problem), never a
//! panic, and never costs another stream its completion.

mod util;

use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use cport::{driver, Driver, Error, ErrorKind, Isb, Op, Port, Request, StartError, Status};
use util::{assert_quiet, next, pair, pipe};

fn port() -> Port {
    Port::builder().threads(2).build().unwrap()
}

/// Asserts `r` is refused with `kind` and a message containing every one of `words`, and
/// returns the refused request.
fn refused(r: Result<(), StartError>, kind: ErrorKind, words: &[&str]) -> Request {
    let e = r.expect_err("the request was accepted");
    assert_eq!(e.kind(), kind, "{e}");
    for w in words {
        assert!(e.to_string().contains(w), "{e:?} does not mention {w:?}");
    }
    e.into_request()
}

fn error_is(r: Result<impl std::fmt::Debug, Error>, kind: ErrorKind, words: &[&str]) {
    let e = r.expect_err("the call succeeded");
    assert_eq!(e.kind(), kind, "{e}");
    for w in words {
        assert!(e.message().contains(w), "{e:?} does not mention {w:?}");
    }
}

fn stream(port: &Port, token: u64) -> (Isb, std::os::unix::net::UnixStream) {
    let (ours, peer) = pair();
    (port.assign(driver::UnixStream::new(ours), token).unwrap(), peer)
}

#[test]
fn bad_read_ranges_and_empty_buffers() {
    let port = port();
    let (isb, _peer) = stream(&port, 31);

    let req = refused(
        port.read(&isb, vec![1; 8], RangeInclusive::new(5, 4)),
        ErrorKind::InvalidInput,
        &["min 5 > max 4", "stream 31"],
    );
    assert_eq!(req.into_buffer().unwrap(), vec![1; 8], "the buffer comes back");
    let req =
        refused(port.read(&isb, vec![2; 4], 1..=8), ErrorKind::InvalidInput, &["max 8", "larger than the buffer"]);
    assert_eq!(req.into_buffer().unwrap(), vec![2; 4]);
    refused(port.start_io(&isb, Request::read_some(Vec::new())), ErrorKind::InvalidInput, &["zero bytes"]);
    refused(port.read(&isb, vec![0; 4], 0..=0), ErrorKind::InvalidInput, &["zero bytes"]);
    refused(port.start_io(&isb, Request::read_exact(Vec::new())), ErrorKind::InvalidInput, &["zero bytes"]);
    refused(port.start_io(&isb, Request::read_vectored(Vec::new(), 0)), ErrorKind::InvalidInput, &["no bytes"]);
    refused(
        port.start_io(&isb, Request::read_vectored(vec![vec![], vec![]], 0)),
        ErrorKind::InvalidInput,
        &["no bytes"],
    );
    let req = refused(
        port.start_io(&isb, Request::read_vectored(vec![vec![1; 2], vec![2; 2]], 5)),
        ErrorKind::InvalidInput,
        &["min 5", "4 bytes"],
    );
    assert_eq!(req.into_buffers(), vec![vec![1; 2], vec![2; 2]]);
    refused(port.write(&isb, Vec::new()), ErrorKind::InvalidInput, &["empty"]);
    refused(port.start_io(&isb, Request::write_vectored(vec![vec![], vec![]])), ErrorKind::InvalidInput, &["no bytes"]);
    refused(port.start_io(&isb, Request::write_vectored(Vec::new())), ErrorKind::InvalidInput, &["no bytes"]);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = port.assign(driver::UdpSocket::new(udp), 32).unwrap();
    refused(port.start_io(&udp, Request::recv_from(Vec::new())), ErrorKind::InvalidInput, &["empty buffer"]);

    // None of it left a side busy: good requests still work.
    port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
    port.write(&isb, b"ok".to_vec()).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Write, Status::Ok));
    assert_eq!(port.cancel(&isb).unwrap(), 1);
    assert_eq!(next(&port).status(), Status::Cancelled);
    assert!(port.try_next_completion().unwrap().is_none(), "a refused request queued a completion");
}

#[test]
fn operations_a_driver_does_not_support() {
    let port = port();
    let lis = TcpListener::bind("127.0.0.1:0").unwrap();
    let lis = port.assign(driver::TcpListener::new(lis), 41).unwrap();
    let (isb, _peer) = stream(&port, 42);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = port.assign(driver::UdpSocket::new(udp), 43).unwrap();
    let (r, w) = pipe();
    let fd = port.assign(driver::Fd::new(r), 44).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();

    let req = refused(
        port.start_io(&lis, Request::read_some(vec![6; 4])),
        ErrorKind::InvalidInput,
        &["read", "tcp listener", "does not support"],
    );
    assert_eq!(req.into_buffer().unwrap(), vec![6; 4]);
    refused(port.write(&lis, b"x".to_vec()), ErrorKind::InvalidInput, &["write", "does not support"]);
    refused(port.accept(&isb), ErrorKind::InvalidInput, &["accept", "unix stream", "does not support"]);
    refused(port.start_io(&isb, Request::recv_from(vec![0; 4])), ErrorKind::InvalidInput, &["does not support"]);
    refused(port.start_io(&isb, Request::send_to(vec![0; 4], any)), ErrorKind::InvalidInput, &["does not support"]);
    refused(port.accept(&udp), ErrorKind::InvalidInput, &["accept", "udp socket", "does not support"]);
    refused(port.accept(&fd), ErrorKind::InvalidInput, &["accept", "does not support"]);
    refused(port.start_io(&fd, Request::recv_from(vec![0; 4])), ErrorKind::InvalidInput, &["does not support"]);

    // The listener still accepts, the stream still reads.
    port.accept(&lis).unwrap();
    let refused_again = refused(port.accept(&lis), ErrorKind::Busy, &["accept", "in progress"]);
    assert_eq!(refused_again.op(), Op::Accept);
    assert_eq!(port.cancel(&lis).unwrap(), 1);
    assert_eq!(next(&port).status(), Status::Cancelled);
    drop(w);
    assert!(port.try_next_completion().unwrap().is_none());
}

#[test]
fn an_isb_of_another_port_is_invalid_input() {
    let a = port();
    let b = port();
    let (isb, _peer) = stream(&a, 51);
    let req = refused(b.start_io(&isb, Request::read_some(vec![8; 3])), ErrorKind::InvalidInput, &["another port"]);
    assert_eq!(req.into_buffer().unwrap(), vec![8; 3]);
    refused(b.write(&isb, b"x".to_vec()), ErrorKind::InvalidInput, &["another port"]);
    error_is(b.cancel(&isb), ErrorKind::InvalidInput, &["another port"]);
    error_is(b.set_timeout(&isb, Some(Duration::from_millis(1))), ErrorKind::InvalidInput, &["another port"]);
    error_is(b.deassign(&isb), ErrorKind::InvalidInput, &["another port"]);
    error_is(b.close(&isb), ErrorKind::InvalidInput, &["another port"]);
    // Nothing happened to the stream on its own port.
    assert!(isb.is_assigned());
    assert_eq!((a.streams(), b.streams()), (1, 0));
    assert_eq!(b.timers(), 0);
    a.start_io(&isb, Request::read_some(vec![0; 3])).unwrap();
    assert_eq!(a.cancel(&isb).unwrap(), 1);
    assert_eq!(next(&a).status(), Status::Cancelled);
}

#[test]
fn a_deassigned_isb_is_not_assigned() {
    let port = port();
    let (isb, _peer) = stream(&port, 61);
    port.deassign(&isb).unwrap();
    let req = refused(port.start_io(&isb, Request::read_some(vec![1; 2])), ErrorKind::NotAssigned, &["not assigned"]);
    assert_eq!(req.into_buffer().unwrap(), vec![1; 2]);
    error_is(port.deassign(&isb), ErrorKind::NotAssigned, &["not assigned"]);
    error_is(port.close(&isb), ErrorKind::NotAssigned, &["not assigned"]);
    error_is(port.cancel(&isb), ErrorKind::NotAssigned, &["not assigned"]);
    error_is(port.set_timeout(&isb, None), ErrorKind::NotAssigned, &["not assigned"]);
}

#[test]
fn a_busy_side_refuses_a_second_io() {
    let port = port();
    let (isb, mut peer) = stream(&port, 71);

    // A second read while one is in progress.
    port.start_io(&isb, Request::read_exact(vec![0; 2])).unwrap();
    let req =
        refused(port.start_io(&isb, Request::read_some(vec![5; 5])), ErrorKind::Busy, &["read side", "in progress"]);
    assert_eq!(req.into_buffer().unwrap(), vec![5; 5]);
    // The other side is free: full duplex.
    port.write(&isb, b"w".to_vec()).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Write, Status::Ok));

    // The first read finishes, its completion not yet taken: still Busy, now for that reason.
    peer.write_all(b"ab").unwrap();
    let untaken = |r: Result<(), StartError>| r.unwrap_err().to_string().contains("not yet taken");
    assert!(
        util::eventually(|| untaken(port.start_io(&isb, Request::read_some(vec![0; 4])))),
        "the read never finished"
    );
    refused(port.start_io(&isb, Request::read_some(vec![0; 4])), ErrorKind::Busy, &["read side", "not yet taken"]);
    // The same for a finished write whose completion is untaken.
    port.write(&isb, b"v".to_vec()).unwrap();
    assert!(util::eventually(|| untaken(port.write(&isb, b"u".to_vec()))), "the write never finished");
    refused(port.write(&isb, b"u".to_vec()), ErrorKind::Busy, &["write side", "not yet taken"]);
    // Cancel does not touch finished I/O.
    assert_eq!(port.cancel(&isb).unwrap(), 0);

    // Taking the completions frees the sides.
    let mut got = [next(&port), next(&port)];
    got.sort_by_key(|c| c.op().name());
    assert_eq!((got[0].op(), got[0].status(), got[0].data()), (Op::Read, Status::Ok, &b"ab"[..]));
    assert_eq!((got[1].op(), got[1].status()), (Op::Write, Status::Ok));
    port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
    port.write(&isb, b"u".to_vec()).unwrap();
    assert_eq!(next(&port).op(), Op::Write);
    assert_eq!(port.cancel(&isb).unwrap(), 1);
    assert_eq!(next(&port).status(), Status::Cancelled);
}

/// A driver that watches an fd it does not own (it never closes it, and cannot hand it back).
struct Borrowed(std::os::fd::BorrowedFd<'static>);

impl Driver for Borrowed {
    fn name(&self) -> &'static str {
        "borrowed fd"
    }
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0
    }
    fn supports(&self, op: Op) -> bool {
        op == Op::Read
    }
}

/// A driver whose attach refuses.
struct Refuses(std::fs::File);

impl Driver for Refuses {
    fn name(&self) -> &'static str {
        "refuser"
    }
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.0)
    }
    fn supports(&self, _: Op) -> bool {
        true
    }
    fn attach(&mut self) -> std::io::Result<()> {
        Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not this one"))
    }
}

#[test]
fn fds_a_driver_cannot_take() {
    let port = port();
    // A pipe is not a socket.
    let (r, _w) = pipe();
    error_is(port.assign(driver::TcpStream::from_fd(r), 81), ErrorKind::InvalidInput, &["not a socket", "tcp stream"]);
    let (r, _w) = pipe();
    error_is(port.assign(driver::UnixListener::from_fd(r), 82), ErrorKind::InvalidInput, &["not a socket"]);
    // A UDP socket is not a TCP stream.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    error_is(
        port.assign(driver::TcpStream::from_fd(OwnedFd::from(udp)), 83),
        ErrorKind::InvalidInput,
        &["not a tcp stream"],
    );
    // A listener is not a stream, a stream is not a listener, unix is not tcp.
    let lis = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = lis.local_addr().unwrap();
    let conn = TcpStream::connect(addr).unwrap();
    error_is(port.assign(driver::TcpStream::from_fd(OwnedFd::from(lis)), 84), ErrorKind::InvalidInput, &["not a"]);
    error_is(port.assign(driver::TcpListener::from_fd(OwnedFd::from(conn)), 85), ErrorKind::InvalidInput, &["not a"]);
    let (a, _b) = pair();
    error_is(port.assign(driver::TcpStream::from_fd(OwnedFd::from(a)), 86), ErrorKind::InvalidInput, &["not a"]);
    // epoll refuses a regular file.
    let file = std::fs::File::open("Cargo.toml").unwrap();
    error_is(port.assign(driver::Fd::new(file), 87), ErrorKind::InvalidInput, &["regular file"]);
    // A user driver whose attach refuses.
    error_is(
        port.assign(Refuses(std::fs::File::open("/dev/null").unwrap()), 89),
        ErrorKind::InvalidInput,
        &["not this one"],
    );
    assert_eq!(port.streams(), 0, "a refused assign left a stream behind");
}

#[test]
fn the_same_fd_assigned_twice() {
    let port = port();
    let (r, w) = pipe();
    let raw = r.as_raw_fd();
    let isb = port.assign(driver::Fd::new(r), 91).unwrap();
    // The same fd number again, through a driver that does not own it (so the refusal
    // closes nothing).
    // SAFETY: the fd stays open until the end of the test: the first assignment owns it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    error_is(port.assign(Borrowed(borrowed), 92), ErrorKind::InvalidInput, &["already assigned"]);
    assert_eq!(port.streams(), 1);
    // The first assignment is intact.
    assert_eq!(isb.fd(), Some(raw));
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    let mut w = std::fs::File::from(w);
    w.write_all(b"pipe").unwrap();
    let c = next(&port);
    assert_eq!((c.token(), c.status(), c.data()), (91, Status::Ok, &b"pipe"[..]));
}

#[test]
fn bad_port_arguments() {
    error_is(Port::builder().threads(cport::MAX_THREADS + 1).build(), ErrorKind::InvalidInput, &["threads"]);
    error_is(Port::builder().poll_interval(0).build(), ErrorKind::InvalidInput, &["poll_interval"]);
    error_is(Port::builder().injector_interval(0).build(), ErrorKind::InvalidInput, &["injector_interval"]);
    let port = port();
    let mut out = Vec::new();
    error_is(port.next_completions(&mut out, 0, Some(Duration::ZERO)), ErrorKind::InvalidInput, &["max 0"]);
    assert!(out.is_empty());
    // And the port works after it.
    port.post(1, 1).unwrap();
    assert_eq!(port.next_completions(&mut out, 8, Some(Duration::ZERO)).unwrap(), 1);
}

/// A stream waits for data while another stream gets every kind of bad call; the first
/// stream's completion still arrives, once.
#[test]
fn bad_input_never_loses_another_streams_completion() {
    let port = port();
    let other = Port::builder().threads(1).build().unwrap();
    let (good, mut good_peer) = stream(&port, 1);
    port.start_io(&good, Request::read_exact(vec![0; 5])).unwrap();

    let (bad, _bad_peer) = stream(&port, 2);
    let (foreign, _foreign_peer) = stream(&other, 3);
    let lis = port.assign(driver::TcpListener::new(TcpListener::bind("127.0.0.1:0").unwrap()), 4).unwrap();
    port.start_io(&bad, Request::read_some(vec![0; 4])).unwrap();
    for _ in 0..50 {
        let _ = port.read(&bad, vec![0; 4], RangeInclusive::new(3, 2)).unwrap_err();
        let _ = port.read(&bad, vec![0; 4], 1..=9).unwrap_err();
        let _ = port.start_io(&bad, Request::read_some(Vec::new())).unwrap_err();
        let _ = port.start_io(&bad, Request::read_some(vec![0; 4])).unwrap_err(); // busy
        let _ = port.write(&bad, Vec::new()).unwrap_err();
        let _ = port.accept(&bad).unwrap_err();
        let _ = port.start_io(&lis, Request::read_some(vec![0; 4])).unwrap_err();
        let _ = port.start_io(&foreign, Request::read_some(vec![0; 4])).unwrap_err();
        let _ = port.cancel(&foreign).unwrap_err();
        let _ = port.deassign(&foreign).unwrap_err();
        let (r, _w) = pipe();
        let _ = port.assign(driver::TcpStream::from_fd(r), 5).unwrap_err();
        let _ = port.next_completions(&mut Vec::new(), 0, None).unwrap_err();
    }
    port.deassign(&bad).unwrap();
    let c = next(&port);
    assert_eq!((c.token(), c.status()), (2, Status::Cancelled));
    let _ = port.start_io(&bad, Request::read_some(vec![0; 4])).unwrap_err();
    let _ = port.deassign(&bad).unwrap_err();

    good_peer.write_all(b"hello").unwrap();
    let c = next(&port);
    assert_eq!((c.token(), c.op(), c.status(), c.data()), (1, Op::Read, Status::Ok, &b"hello"[..]));
    assert_quiet(&port, Duration::from_millis(30));
    assert!(other.try_next_completion().unwrap().is_none());
}

#[test]
fn connect_unix_to_a_path_no_socket_can_have_is_invalid_input() {
    let port = port();
    let long = "x".repeat(200);
    for (path, why) in [("", "empty"), ("a\0b", "a NUL byte"), (long.as_str(), "too long for sun_path")] {
        let e = port.connect_unix(path, 1).expect_err(why);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{why}: {e}");
        assert!(e.message().contains("connect to"), "{why}: {e}");
    }
    assert_eq!(port.streams(), 0, "a refused connect assigns nothing");
}

#[test]
fn an_os_einval_is_invalid_input_and_keeps_its_errno() {
    let e = Error::from_io(&std::io::Error::from_raw_os_error(libc::EINVAL), "bind");
    assert_eq!((e.kind(), e.raw_os_error()), (ErrorKind::InvalidInput, Some(libc::EINVAL)));
    let e = Error::from_io(&std::io::Error::from_raw_os_error(libc::ENAMETOOLONG), "bind");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // std's own refusals of bad input, such as a Unix socket path too long for sun_path.
    let long = std::env::temp_dir().join("y".repeat(200));
    let io = std::os::unix::net::UnixListener::bind(&long).unwrap_err();
    assert_eq!(Error::from_io(&io, "bind").kind(), ErrorKind::InvalidInput, "{io}");
}

/// `deassign_fd` hands a built-in driver's fd back open; a driver that cannot is deassigned
/// all the same, with a clear error; a second call finds nothing assigned.
#[test]
fn deassign_fd_gives_the_fd_back_or_says_why_not() {
    let port = port();
    let (r, w) = pipe();
    let raw = r.as_raw_fd();
    let isb = port.assign(driver::Fd::new(r), 93).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    let fd = port.deassign_fd(&isb).unwrap();
    assert_eq!(fd.as_raw_fd(), raw, "the same fd, open");
    let c = next(&port);
    assert_eq!((c.token(), c.status()), (93, Status::Cancelled), "its pending read ended first");
    assert_eq!(port.deassign_fd(&isb).unwrap_err().kind(), ErrorKind::NotAssigned);
    let mut w = std::fs::File::from(w);
    w.write_all(b"x").unwrap();
    let mut got = [0u8; 1];
    std::io::Read::read_exact(&mut std::fs::File::from(fd), &mut got).unwrap();
    assert_eq!(&got, b"x");

    let (r2, _w2) = pipe();
    // SAFETY: `r2` outlives every use of the borrow (the port drops the driver at deassign).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(r2.as_raw_fd()) };
    let isb = port.assign(Borrowed(borrowed), 94).unwrap();
    error_is(port.deassign_fd(&isb), ErrorKind::InvalidInput, &["cannot hand its fd back"]);
    assert!(!isb.is_assigned(), "deassigned all the same");
}
