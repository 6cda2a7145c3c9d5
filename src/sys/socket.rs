//! Socket calls that `std::net` does not offer, made through `socket2`: nonblocking connect
//! (also from a port range), accept straight into nonblocking mode, socket-type checks,
//! `SO_ERROR`, `TCP_NODELAY`, `sendmsg(MSG_NOSIGNAL)`.
//!
//! Two calls stay hand-written, because socket2 has no form of them: `O_NONBLOCK` on any fd
//! (the `Fd` driver takes pipes, FIFOs and character devices, which are not sockets) and
//! `FIONREAD`.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

/// What `getsockopt(SO_DOMAIN / SO_TYPE / SO_ACCEPTCONN)` says about an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketKind {
    pub(crate) domain: Domain,
    pub(crate) ty: Type,
    pub(crate) listening: bool,
}

impl SocketKind {
    pub(crate) fn is_inet(self) -> bool {
        self.domain == Domain::IPV4 || self.domain == Domain::IPV6
    }
}

/// Runs `f` on the socket whose fd number is `fd`, for the callers that hold a driver (which
/// owns the fd) but only its number: `Port::shutdown_write` and the session layer's
/// `TCP_NODELAY`. The caller keeps the driver, and so the fd, for the whole call.
fn with_fd<T>(fd: RawFd, f: impl FnOnce(SockRef<'_>) -> io::Result<T>) -> io::Result<T> {
    if fd < 0 {
        // A driver's `fd()` is the application's to write; no negative number is an fd.
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is not -1 (it is not negative), and it stays open for the borrow, which
    // ends with this call: every caller holds the driver that owns it (see above). A driver
    // that names an fd it does not own (the application writes `Driver::fd`) makes the calls
    // below fail with EBADF or ENOTSOCK, or act on whatever fd has that number, as the plain
    // syscalls would: the borrow gives socket2 a number to pass to the kernel, no memory.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    f(SockRef::from(&fd))
}

/// The socket's domain and type; `ENOTSOCK` for a pipe or file.
pub(crate) fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<SocketKind> {
    // On something that is not a socket these are getsockopt calls that fail with ENOTSOCK,
    // which is how we find out.
    let sock = SockRef::from(&fd);
    Ok(SocketKind { domain: sock.domain()?, ty: sock.r#type()?, listening: sock.is_listener()? })
}

/// Puts any fd into nonblocking mode (socket or not: socket2 is only for sockets).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL takes no pointer; a bad fd is EBADF.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL takes an int.
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Shuts down the sending direction of a socket: the peer reads end of stream after the bytes
/// already sent.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    with_fd(fd, |sock| sock.shutdown(Shutdown::Write))
}

/// Bytes waiting in the socket's receive queue (`FIONREAD`). socket2 has no call for it, so
/// this is the one ioctl left; it takes the fd number because the session layer has no more.
#[cfg(any(feature = "session", test))]
pub(crate) fn bytes_readable(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to a live c_int; a
    // bad fd is EBADF.
    syscall!(ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Takes and clears the socket's pending error (`SO_ERROR`).
pub(crate) fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    SockRef::from(&fd).take_error()
}

/// A nonblocking, close-on-exec stream socket (socket2 sets close-on-exec itself).
fn new_socket(domain: Domain) -> io::Result<Socket> {
    Socket::new(domain, Type::STREAM.nonblocking(), None)
}

/// The backlog of the listeners this crate makes: as deep as the kernel allows
/// (`net.core.somaxconn` caps it), not std's 128, so that a burst of connections waits in the
/// queue instead of being dropped and retried a second later by the client.
const BACKLOG: libc::c_int = libc::c_int::MAX;

/// A TCP listener bound to `addr` (with `SO_REUSEADDR`, as std binds), with the deep backlog.
pub(crate) fn listen_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(sock.into())
}

/// A Unix-domain stream listener bound at `path`, with the deep backlog.
pub(crate) fn listen_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let to = unix_path(path)?;
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.bind(&to)?;
    sock.listen(BACKLOG)?;
    Ok(std::os::unix::net::UnixListener::from(OwnedFd::from(sock)))
}

/// Result of starting a nonblocking connect.
pub(crate) enum Connecting {
    /// Connected at once (loopback can do that).
    Done(OwnedFd),
    /// `EINPROGRESS`: wait for writability, then check [`take_error`].
    InProgress(OwnedFd),
    /// Failed at once (a Unix socket path that does not exist, say); the socket is kept so
    /// the failure can be reported as a completion like any other.
    Failed(OwnedFd, io::Error),
}

fn start_connect(sock: Socket, to: &SockAddr) -> Connecting {
    match sock.connect(to) {
        Ok(()) => Connecting::Done(sock.into()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Connecting::InProgress(sock.into()),
        Err(e) => Connecting::Failed(sock.into(), e),
    }
}

/// Opens a nonblocking TCP socket and starts connecting it to `addr`.
pub(crate) fn connect_tcp(addr: SocketAddr) -> io::Result<Connecting> {
    let sock = new_socket(Domain::for_address(addr))?;
    Ok(start_connect(sock, &addr.into()))
}

/// Opens a nonblocking TCP socket, binds it to the first port of `first..=last` that is free
/// on the unspecified address of `addr`'s family, and starts connecting it to `addr`.
///
/// Ports that are in use (`EADDRINUSE`) are skipped; when every one is, the error is
/// `EADDRINUSE`. Any other bind error is returned at once. `SO_REUSEADDR` is not set, so a
/// port that a listener, another connection or a `TIME_WAIT` holds counts as in use.
pub(crate) fn connect_tcp_from(addr: SocketAddr, first: u16, last: u16) -> io::Result<Connecting> {
    // A failed bind leaves the socket unbound, so one socket tries every port.
    let sock = new_socket(Domain::for_address(addr))?;
    for local_port in first..=last {
        let local = match addr {
            SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local_port)),
            SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, local_port, 0, 0)),
        };
        match sock.bind(&local.into()) {
            Ok(()) => return Ok(start_connect(sock, &addr.into())),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
}

/// The address of the Unix socket file `path`. socket2 takes an empty path for an unnamed
/// address, a leading NUL for the abstract namespace, and the kernel cuts a path at its first
/// NUL: none of them is the file asked for, so all are refused.
pub(crate) fn unix_path(path: &Path) -> io::Result<SockAddr> {
    let bad_path =
        || io::Error::new(io::ErrorKind::InvalidInput, "unix socket path is empty, too long or holds a NUL byte");
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(bad_path());
    }
    // Its only error: the path does not fit in `sun_path`.
    SockAddr::unix(path).map_err(|_| bad_path())
}

/// Opens a nonblocking Unix-domain stream socket and starts connecting it to `path`.
pub(crate) fn connect_unix(path: &Path) -> io::Result<Connecting> {
    let to = unix_path(path)?;
    let sock = new_socket(Domain::UNIX)?;
    Ok(start_connect(sock, &to))
}

/// Accepts one connection straight into nonblocking, close-on-exec mode. The peer address is
/// `None` for Unix-domain sockets.
pub(crate) fn accept(fd: BorrowedFd<'_>) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    let (sock, peer) = SockRef::from(&fd).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    Ok((sock.into(), peer.as_socket()))
}

/// The most iovecs one `sendmsg` takes (`UIO_MAXIOV`); more would fail with `EMSGSIZE`, so the
/// rest wait for the next call, as a short write.
const MAX_IOVECS: usize = libc::UIO_MAXIOV as usize;

/// `sendmsg` with `MSG_NOSIGNAL`: a vectored send that reports a closed peer as `EPIPE`
/// instead of raising `SIGPIPE`.
pub(crate) fn send_vectored(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let bufs = &bufs[..bufs.len().min(MAX_IOVECS)];
    SockRef::from(&fd).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_file_is_not_a_socket() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(socket_kind(file.as_fd()).unwrap_err().raw_os_error(), Some(libc::ENOTSOCK));
        // O_NONBLOCK is for any fd.
        set_nonblocking(file.as_fd()).unwrap();
    }

    #[test]
    fn kinds_of_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let k = socket_kind(listener.as_fd()).unwrap();
        assert!(k.is_inet() && k.listening && k.ty == Type::STREAM, "{k:?}");
        let (a, _b) = UnixStream::pair().unwrap();
        let k = socket_kind(a.as_fd()).unwrap();
        assert_eq!(k, SocketKind { domain: Domain::UNIX, ty: Type::STREAM, listening: false });
    }

    #[test]
    fn accept_gives_a_nonblocking_stream_and_its_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (fd, peer) = accept(listener.as_fd()).unwrap();
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        let sock = Socket::from(fd);
        assert!(sock.nonblocking().unwrap());
        let mut buf = [0; 4];
        assert_eq!((&sock).read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn send_vectored_caps_the_iovecs_and_raises_no_sigpipe() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let bytes = vec![7u8; MAX_IOVECS + 100];
        let slices: Vec<IoSlice<'_>> = bytes.chunks(1).map(IoSlice::new).collect();
        assert_eq!(send_vectored(a.as_fd(), &slices).unwrap(), MAX_IOVECS, "a short write, not EMSGSIZE");
        assert_eq!(bytes_readable(b.as_raw_fd()).unwrap(), MAX_IOVECS);
        let mut got = vec![0; MAX_IOVECS];
        b.read_exact(&mut got).unwrap();
        assert_eq!(bytes_readable(b.as_raw_fd()).unwrap(), 0);
        assert!(take_error(a.as_fd()).unwrap().is_none());
        b.write_all(b"x").unwrap();
        drop(b);
        assert_eq!(send_vectored(a.as_fd(), &slices[..1]).unwrap_err().raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn connect_unix_refuses_paths_no_listener_can_have() {
        let long = "x".repeat(200);
        for p in ["", "a\0b", "\0abstract", long.as_str()] {
            let e = connect_unix(Path::new(p)).err().expect(p);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p:?}: {e}");
        }
    }
}
