//! A driver of one's own: the port makes its fd nonblocking whatever the driver's `attach`
//! did, so a driver that forgets `O_NONBLOCK` cannot block `start_io` (nor the port).

mod util;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use cport::{Driver, Op, Request, Status};
use util::{next, port, GUARD};

/// A stream driver that leaves its socket blocking (the default `attach`).
struct Forgetful(UnixStream);

impl Driver for Forgetful {
    fn name(&self) -> &'static str {
        "forgetful"
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::Read | Op::Write)
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
}

/// A driver over a regular file, which epoll refuses.
struct Plain(std::fs::File);

impl Driver for Plain {
    fn name(&self) -> &'static str {
        "plain file"
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
    fn supports(&self, _: Op) -> bool {
        true
    }
}

#[test]
fn a_refused_fd_is_left_as_it_was() {
    // The assign fails (epoll cannot watch a regular file): the open file, which the caller
    // may still hold through another fd, stays blocking, as it came.
    let port = port(0);
    let path = std::env::temp_dir().join(format!("cport-test-refused-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let twin = file.try_clone().unwrap();
    let e = port.assign(Plain(file), 1).unwrap_err();
    assert_eq!(e.kind(), cport::ErrorKind::InvalidInput, "{e}");
    assert_eq!(status_flags(&twin) & libc::O_NONBLOCK, 0, "the refused file is still blocking");
}

/// The file status flags of `f` (`fcntl(F_GETFL)`).
fn status_flags(f: &std::fs::File) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL on an open fd takes no pointer.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) }
}

#[test]
fn a_driver_that_forgets_nonblocking_does_not_block_the_port() {
    let port = port(0);
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let isb = port.assign(Forgetful(ours), 1).unwrap();
    // Nothing to read: start_io must return (the read is pending), not wait for data.
    let (tx, rx) = mpsc::channel();
    let (p, i) = (port.clone(), isb.clone());
    std::thread::spawn(move || tx.send(p.start_io(&i, Request::read_some(vec![0; 8])).is_ok()).unwrap());
    assert_eq!(rx.recv_timeout(GUARD), Ok(true), "start_io returned, the read pending");
    peer.write_all(b"late").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"late"[..]));
}
