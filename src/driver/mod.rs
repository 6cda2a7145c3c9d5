//! Drivers: how the port does I/O on one kind of stream.
//!
//! A [`Driver`] owns its stream and exposes the nonblocking calls the port makes when the
//! stream is ready. The built-in drivers cover TCP and Unix-domain listeners and streams, UDP
//! sockets, and any native fd such as a pipe ([`Fd`]). The trait is public so a transport that
//! is not a socket can plug in: it needs an fd that epoll can watch for readiness.

mod net;
mod signal;

pub use net::{Fd, TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
pub(crate) use signal::SignalFd;

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::request::Op;

/// How the port does I/O on one kind of stream: attach, detach, the nonblocking I/O calls,
/// cancel.
///
/// Every I/O method is nonblocking: it returns `io::ErrorKind::WouldBlock` when the stream is
/// not ready, and the port then waits for readiness of [`Driver::fd`] and calls again. The
/// port calls at most one method of a driver at a time. A method the driver does not support
/// keeps its default, which returns `io::ErrorKind::Unsupported`; [`Driver::supports`] tells
/// the port which operations to refuse up front.
pub trait Driver: Send + 'static {
    /// A short name for messages, like `"tcp stream"`.
    fn name(&self) -> &'static str;

    /// The fd epoll watches for readiness, borrowed from the driver, which owns it (or
    /// borrows it for at least as long as itself). It must stay the same while assigned.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Gives up the driver and hands its fd back, open, for
    /// [`Port::deassign_fd`](crate::Port::deassign_fd). `None` (the default) for a driver
    /// that cannot; then dropping it closes the fd as usual.
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        None
    }

    /// Whether the driver can run `op`.
    fn supports(&self, op: Op) -> bool;

    /// Called once by `assign`, before the stream is registered: check the fd (an error
    /// refuses the assignment). The port then makes the fd nonblocking whatever this did (it
    /// sets `O_NONBLOCK`, which belongs to the open file and so to any duplicate of the fd as
    /// well): every I/O method is called expecting `WouldBlock`, never a wait.
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

    /// Whether [`Driver::read`] is a plain `read(2)` of [`Driver::fd`] (or `recv` without
    /// flags, the same on a socket). Then the port may read that fd itself into memory that is
    /// not initialised yet, for [`Request::read_buf`](crate::Request::read_buf), which saves
    /// zero-filling the buffer first. Default `false`: the port calls `read` as usual on a
    /// zeroed buffer. The built-in drivers say `true`. A driver that says `true` wrongly gets
    /// its fd read directly (wrong bytes for a stream that needs decoding), never unsound memory.
    fn plain_reads(&self) -> bool {
        false
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

    /// Starts connecting the stream's socket to `addr` ([`Request::connect`](crate::Request::connect)):
    /// `Ok` if it connected at once, an error with `raw_os_error() == Some(EINPROGRESS)` if
    /// it is under way (the port then waits for writability and calls
    /// [`Driver::finish_connect`]), any other error if it failed. The default: unsupported.
    fn connect(&mut self, addr: &socket2::SockAddr) -> io::Result<()> {
        let _ = addr;
        Err(unsupported(self.name(), Op::Connect))
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

/// A connection an accept produced, not yet assigned ([`Completion::take_accepted`]): its
/// peer's address, its fd for socket options (through [`AsFd`], e.g. `socket2::SockRef`), and
/// a [`Driver`] to give to [`Port::assign`](crate::Port::assign). Dropping it closes the
/// connection.
///
/// [`Completion::take_accepted`]: crate::Completion::take_accepted
///
/// ```
/// use cport::{Op, Port};
///
/// let port = Port::new()?;
/// let listener = port.listen("127.0.0.1:0".parse()?, 0)?;
/// let client = std::net::TcpStream::connect(listener.local_addr()?)?;
/// port.accept(&listener)?;
/// let mut c = port.next_completion(None)?.expect("no timeout");
/// assert_eq!(c.op(), Op::Accept);
/// let conn = c.take_accepted().expect("an Ok accept carries its connection");
/// assert_eq!(conn.peer_addr(), Some(client.local_addr()?));
/// conn.set_nodelay(true)?;
/// let isb = port.assign(conn, 1)?;
/// # drop(isb);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Accepted {
    driver: Box<dyn Driver>,
    peer: Option<SocketAddr>,
}

impl Accepted {
    pub(crate) fn new(driver: Box<dyn Driver>, peer: Option<SocketAddr>) -> Accepted {
        Accepted { driver, peer }
    }

    /// The peer's address (`None` for a Unix-domain peer, which has none worth reporting).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Turns Nagle's algorithm off (`true`) or on for a TCP connection (`TCP_NODELAY`).
    ///
    /// # Errors
    /// `Os` if the connection is not TCP or the OS refuses.
    pub fn set_nodelay(&self, on: bool) -> crate::Result<()> {
        socket2::SockRef::from(&self.driver.fd())
            .set_tcp_nodelay(on)
            .map_err(|e| crate::Error::from_io(&e, format!("set_nodelay on an accepted {}", self.driver.name())))
    }

    /// The connection's driver, to assign with
    /// [`Port::assign_boxed`](crate::Port::assign_boxed) (assigning the `Accepted` itself
    /// works as well, through one more indirection per I/O call).
    pub fn into_driver(self) -> Box<dyn Driver> {
        self.driver
    }
}

impl AsFd for Accepted {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.driver.fd()
    }
}

impl AsRawFd for Accepted {
    fn as_raw_fd(&self) -> RawFd {
        self.driver.fd().as_raw_fd()
    }
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("driver", &self.driver.name())
            .field("fd", &self.as_raw_fd())
            .field("peer", &self.peer)
            .finish()
    }
}

/// An accepted connection is a driver: it delegates to the one the listener made.
impl Driver for Accepted {
    fn name(&self) -> &'static str {
        self.driver.name()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.driver.fd()
    }
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        self.driver.into_fd()
    }
    fn supports(&self, op: Op) -> bool {
        self.driver.supports(op)
    }
    fn attach(&mut self) -> io::Result<()> {
        self.driver.attach()
    }
    fn detach(&mut self) {
        self.driver.detach()
    }
    fn cancel(&mut self, op: Op) {
        self.driver.cancel(op)
    }
    fn plain_reads(&self) -> bool {
        self.driver.plain_reads()
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.driver.read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.driver.read_vectored(bufs)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.driver.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.driver.write_vectored(bufs)
    }
    fn accept(&mut self) -> io::Result<(Box<dyn Driver>, Option<SocketAddr>)> {
        self.driver.accept()
    }
    fn connect(&mut self, addr: &socket2::SockAddr) -> io::Result<()> {
        self.driver.connect(addr)
    }
    fn finish_connect(&mut self) -> io::Result<()> {
        self.driver.finish_connect()
    }
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.driver.recv_from(buf)
    }
    fn send_to(&mut self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.driver.send_to(buf, addr)
    }
}

fn unsupported(name: &str, op: Op) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("a {name} does not support {op}"))
}

impl Driver for Box<dyn Driver> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        (**self).fd()
    }
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        (*self).into_fd()
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
    fn plain_reads(&self) -> bool {
        (**self).plain_reads()
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
    fn connect(&mut self, addr: &socket2::SockAddr) -> io::Result<()> {
        (**self).connect(addr)
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
