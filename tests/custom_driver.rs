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
