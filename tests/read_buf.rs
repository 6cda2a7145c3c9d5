//! Reads into a vector's spare capacity (`Request::read_buf`): appended after what the vector
//! held, its length set to what was read, the same allocation reused with no zero-filling,
//! through the built-in drivers (which let the port read their fd directly) and through a
//! driver of the test's own (which gets a zeroed buffer, as `Request::read` does).

mod util;

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use cport::{driver, Driver, ErrorKind, Op, Request, Status};
use util::{next, port};

#[test]
fn appends_after_what_the_vector_held() {
    let port = port(0);
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let isb = port.assign(driver::UnixStream::new(ours), 1).unwrap();
    let mut buf = Vec::with_capacity(16);
    buf.extend_from_slice(b"head:");
    peer.write_all(b"body").unwrap();
    port.start_io(&isb, Request::read_buf(buf, 1..=11)).unwrap();
    let mut c = next(&port);
    assert_eq!((c.status(), c.bytes(), c.data()), (Status::Ok, 4, &b"body"[..]));
    assert_eq!(c.buffer(), Some(&b"body"[..]), "the part read into");
    assert_eq!(c.take_buffer().unwrap(), b"head:body", "the vector, grown by what was read");

    peer.write_all(b"again").unwrap();
    let mut buf = b"x".to_vec();
    buf.reserve(8);
    port.read_buf(&isb, buf, 5..=5).unwrap();
    assert_eq!(next(&port).into_data(), b"again", "into_data is only the bytes read");
}

#[test]
fn reuses_the_allocation_and_waits_for_the_minimum() {
    let port = port(0);
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let isb = port.assign(driver::UnixStream::new(ours), 1).unwrap();
    let mut buf = Vec::with_capacity(4096);
    let at = buf.as_ptr();
    for round in 0..20u8 {
        // Two writes, the read needs both: it resumes into the rest of the spare capacity.
        port.read_buf(&isb, buf, 6..=4096).unwrap();
        peer.write_all(&[round; 3]).unwrap();
        peer.write_all(&[round + 100; 3]).unwrap();
        let mut c = next(&port);
        assert_eq!(c.op(), Op::Read);
        assert!(c.bytes() >= 6, "round {round}: {} bytes", c.bytes());
        assert_eq!(&c.data()[..6], &[round, round, round, round + 100, round + 100, round + 100]);
        buf = c.take_buffer().unwrap();
        assert_eq!(buf.len(), c.bytes());
        assert_eq!(buf.as_ptr(), at, "the same allocation");
        buf.clear();
    }
}

#[test]
fn end_of_stream_keeps_the_bytes_read() {
    let port = port(0);
    let (r, w) = std::io::pipe().unwrap();
    let isb = port.assign(driver::Fd::new(std::os::fd::OwnedFd::from(r)), 1).unwrap();
    let mut w = w;
    w.write_all(b"tail").unwrap();
    drop(w);
    port.read_buf(&isb, Vec::with_capacity(64), 10..=64).unwrap();
    let mut c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Eof, &b"tail"[..]));
    assert_eq!(c.take_buffer().unwrap(), b"tail");
}

#[test]
fn refused_requests_give_the_vector_back() {
    let port = port(0);
    let (ours, _peer) = UnixStream::pair().unwrap();
    let isb = port.assign(driver::UnixStream::new(ours), 1).unwrap();
    let mut buf = Vec::with_capacity(8);
    buf.extend_from_slice(b"keep");
    let spare = buf.capacity() - buf.len();
    let (min, max) = (3, 2); // an empty range on purpose
    for (range, why) in [(1..=spare + 1, "spare capacity"), (0..=0, "zero bytes"), (min..=max, "min 3 > max 2")] {
        let e = port.start_io(&isb, Request::read_buf(buf.clone(), range)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains(why) || format!("{e:#}").contains(why), "{e:#}");
        assert_eq!(e.into_request().into_buffer().unwrap(), b"keep");
    }
}

/// A driver of the test's own: its reads go through `read` (it does not say `plain_reads`).
struct Wrapped(UnixStream, usize);

impl Driver for Wrapped {
    fn name(&self) -> &'static str {
        "wrapped"
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
    fn supports(&self, op: Op) -> bool {
        op == Op::Read
    }
    fn attach(&mut self) -> io::Result<()> {
        self.0.set_nonblocking(true)
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(buf.iter().all(|&b| b == 0), "a driver's read gets initialised (zeroed) memory");
        self.1 += 1;
        io::Read::read(&mut self.0, buf)
    }
}

#[test]
fn a_driver_that_reads_its_own_way_gets_a_zeroed_buffer() {
    let port = port(0);
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let isb = port.assign(Wrapped(ours, 0), 1).unwrap();
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(&[0xff; 8]);
    buf.truncate(2); // spare capacity that held bytes before: zeroed before the driver sees it
    peer.write_all(b"wrapped").unwrap();
    port.read_buf(&isb, buf, 7..=7).unwrap();
    let mut c = next(&port);
    assert_eq!(c.data(), b"wrapped");
    assert_eq!(c.take_buffer().unwrap(), [&[0xff, 0xff][..], b"wrapped"].concat());
}
