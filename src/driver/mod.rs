//! Drivers: how the port does I/O on one kind of stream (seed 000's stream handler).
//!
//! A [`Driver`] owns its stream and exposes the nonblocking calls the port makes when the
//! stream is ready. The built-in drivers cover TCP and Unix-domain listeners and streams, UDP
//! sockets, and any native fd such as a pipe ([`Fd`]). The trait is public so a transport that
//! is not a socket can plug in: it needs an fd that epoll can watch for readiness.

mod net;

pub use net::{Fd, TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::request::Op;

/// The stream handler of seed 000: attach, detach, start I/O, cancel.
///
/// Every I/O method is nonblocking: it returns `io::ErrorKind::WouldBlock` when the stream is
/// not ready, and the port then waits for readiness of [`Driver::fd`] and calls again. The
/// port calls at most one method of a driver at a time. A method the driver does not support
/// keeps its default, which returns `io::ErrorKind::Unsupported`; [`Driver::supports`] tells
/// the port which operations to refuse up front.
pub trait Driver: Send + 'static {
    /// A short name for messages, like `"tcp stream"`.
    fn name(&self) -> &'static str;

    /// The fd epoll watches for readiness. It must stay open and the same while assigned.
    fn fd(&self) -> RawFd;

    /// Whether the driver can run `op`.
    fn supports(&self, op: Op) -> bool;

    /// Called once by `assign`, before the stream is registered: check the fd and make it
    /// nonblocking. An error refuses the assignment.
    fn attach(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Called once when the stream is deassigned or closed, before the driver is dropped.
    fn detach(&mut self) {}

    /// Called when a pending `op` is cancelled, timed out or abandoned by close (after the
    /// port has taken it off the stream).
    fn cancel(&mut self, op: Op) {
        let _ = op;
    }

    /// Reads into `buf`; `Ok(0)` is end of stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let _ = buf;
        Err(unsupported(self.name(), Op::Read))
    }

    /// Reads into several buffers in order. The default reads into the first non-empty one.
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match bufs.iter_mut().find(|b| !b.is_empty()) {
            Some(b) => self.read(b),
            None => Ok(0),
        }
    }

    /// Writes from `buf`, returning how many bytes were taken.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = buf;
        Err(unsupported(self.name(), Op::Write))
    }

    /// Writes from several buffers in order. The default writes the first non-empty one.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(b) => self.write(b),
            None => Ok(0),
        }
    }

    /// Accepts one connection, returning its driver and the peer's address if it has one.
    fn accept(&mut self) -> io::Result<(Box<dyn Driver>, Option<SocketAddr>)> {
        Err(unsupported(self.name(), Op::Accept))
    }

    /// Once a connecting stream is writable: `Ok` if the connection is up, else its error.
    fn finish_connect(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Receives one datagram.
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let _ = buf;
        Err(unsupported(self.name(), Op::RecvFrom))
    }

    /// Sends one datagram.
    fn send_to(&mut self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        let _ = (buf, addr);
        Err(unsupported(self.name(), Op::SendTo))
    }
}

fn unsupported(name: &str, op: Op) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("a {name} does not support {op}"))
}

impl Driver for Box<dyn Driver> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn fd(&self) -> RawFd {
        (**self).fd()
    }
    fn supports(&self, op: Op) -> bool {
        (**self).supports(op)
    }
    fn attach(&mut self) -> io::Result<()> {
        (**self).attach()
    }
    fn detach(&mut self) {
        (**self).detach()
    }
    fn cancel(&mut self, op: Op) {
        (**self).cancel(op)
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (**self).read_vectored(bufs)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (**self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (**self).write_vectored(bufs)
    }
    fn accept(&mut self) -> io::Result<(Box<dyn Driver>, Option<SocketAddr>)> {
        (**self).accept()
    }
    fn finish_connect(&mut self) -> io::Result<()> {
        (**self).finish_connect()
    }
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        (**self).recv_from(buf)
    }
    fn send_to(&mut self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        (**self).send_to(buf, addr)
    }
}
