//! Socket calls that `std::net` does not offer: nonblocking connect, accept straight into
//! nonblocking mode, socket-type checks, and `O_NONBLOCK` on any fd.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What `getsockopt(SO_DOMAIN / SO_TYPE / SO_ACCEPTCONN)` says about an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketKind {
    pub(crate) domain: libc::c_int,
    pub(crate) ty: libc::c_int,
    pub(crate) listening: bool,
}

impl SocketKind {
    pub(crate) fn is_inet(self) -> bool {
        self.domain == libc::AF_INET || self.domain == libc::AF_INET6
    }
}

fn getsockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: val and len are live and len gives val's size.
    syscall!(getsockopt(fd, libc::SOL_SOCKET, opt, (&mut val as *mut libc::c_int).cast(), &mut len))?;
    Ok(val)
}

/// The socket's domain and type; `ENOTSOCK` for a pipe or file.
pub(crate) fn socket_kind(fd: RawFd) -> io::Result<SocketKind> {
    Ok(SocketKind {
        domain: getsockopt_int(fd, libc::SO_DOMAIN)?,
        ty: getsockopt_int(fd, libc::SO_TYPE)?,
        listening: getsockopt_int(fd, libc::SO_ACCEPTCONN)? != 0,
    })
}

/// Puts any fd into nonblocking mode.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
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
    // SAFETY: shutdown takes no pointers; a bad fd is EBADF, a non-socket ENOTSOCK.
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// Bytes waiting in the socket's receive queue (`FIONREAD`).
pub(crate) fn bytes_readable(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to a live c_int.
    syscall!(ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Turns Nagle's algorithm off on a TCP socket (`TCP_NODELAY`).
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to a live c_int.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&on as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))
    .map(drop)
}

/// Takes and clears the socket's pending error (`SO_ERROR`).
pub(crate) fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let code = getsockopt_int(fd, libc::SO_ERROR)?;
    Ok((code != 0).then(|| io::Error::from_raw_os_error(code)))
}

fn new_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let fd = syscall!(socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

fn connect_raw(fd: OwnedFd, addr: *const libc::sockaddr, len: libc::socklen_t) -> io::Result<Connecting> {
    use std::os::fd::AsRawFd;
    // SAFETY: addr points at a live sockaddr of `len` bytes (built by the caller on its stack).
    match syscall!(connect(fd.as_raw_fd(), addr, len)) {
        Ok(_) => Ok(Connecting::Done(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(Connecting::InProgress(fd)),
        Err(e) => Ok(Connecting::Failed(fd, e)),
    }
}

/// Opens a nonblocking TCP socket and starts connecting it to `addr`.
pub(crate) fn connect_tcp(addr: SocketAddr) -> io::Result<Connecting> {
    let (storage, len) = sockaddr_from(addr);
    let fd = new_socket(if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 })?;
    connect_raw(fd, (&storage as *const libc::sockaddr_storage).cast(), len)
}

/// Opens a nonblocking TCP socket, binds it to the first port of `first..=last` that is free
/// on the unspecified address of `addr`'s family, and starts connecting it to `addr`.
///
/// Ports that are in use (`EADDRINUSE`) are skipped; when every one is, the error is
/// `EADDRINUSE`. Any other bind error is returned at once. `SO_REUSEADDR` is not set, so a
/// port that a listener, another connection or a `TIME_WAIT` holds counts as in use.
pub(crate) fn connect_tcp_from(addr: SocketAddr, first: u16, last: u16) -> io::Result<Connecting> {
    use std::os::fd::AsRawFd;
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // A failed bind leaves the socket unbound, so one socket tries every port.
    let fd = new_socket(domain)?;
    for local_port in first..=last {
        let local = match addr {
            SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local_port)),
            SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, local_port, 0, 0)),
        };
        let (local, local_len) = sockaddr_from(local);
        // SAFETY: `local` is a live sockaddr of `local_len` bytes on this stack frame.
        match syscall!(bind(fd.as_raw_fd(), (&local as *const libc::sockaddr_storage).cast(), local_len)) {
            Ok(_) => {
                let (storage, len) = sockaddr_from(addr);
                return connect_raw(fd, (&storage as *const libc::sockaddr_storage).cast(), len);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
}

/// Opens a nonblocking Unix-domain stream socket and starts connecting it to `path`.
pub(crate) fn connect_unix(path: &Path) -> io::Result<Connecting> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path is empty, too long or holds a NUL byte",
        ));
    }
    for (dst, src) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = (mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    let fd = new_socket(libc::AF_UNIX)?;
    connect_raw(fd, (&sun as *const libc::sockaddr_un).cast(), len)
}

/// Accepts one connection straight into nonblocking, close-on-exec mode. The peer address is
/// `None` for Unix-domain sockets.
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are live, len gives storage's size.
    let new = syscall!(accept4(
        fd,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    ))?;
    // SAFETY: a fresh fd owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(new) };
    Ok((owned, sockaddr_to(&storage)))
}

fn sockaddr_from(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn sockaddr_to(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is aligned for it.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6; storage is aligned for it.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `sendmsg` with `MSG_NOSIGNAL`: a vectored send that reports a closed peer as `EPIPE`
/// instead of raising `SIGPIPE`.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    // SAFETY: msg points at `msg_iovlen` live iovecs borrowed from `bufs` for the call.
    let n = syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL))?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:8080", "[::1]:443", "[fe80::1%2]:7"] {
            let addr: SocketAddr = a.parse().unwrap();
            let (s, _) = sockaddr_from(addr);
            assert_eq!(sockaddr_to(&s), Some(addr));
        }
    }

    #[test]
    fn pipe_is_not_a_socket() {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two fds.
        unsafe { assert_eq!(libc::pipe(fds.as_mut_ptr()), 0) };
        // SAFETY: both fds are fresh and owned here.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        use std::os::fd::AsRawFd;
        assert_eq!(socket_kind(r.as_raw_fd()).unwrap_err().raw_os_error(), Some(libc::ENOTSOCK));
        drop(w);
    }
}
