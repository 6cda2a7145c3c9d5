//! OS helpers that cport's tests, benchmarks and benchmark programs share, written once: the
//! open-file limit (`RLIMIT_NOFILE`), socket options and nonblocking mode. Not part of cport's
//! API, and not published.
//!
//! Each helper is one or two libc calls and returns the OS error instead of panicking: a test
//! `expect`s success, a benchmark may go on without it.
#![deny(missing_docs)]

use std::io;
use std::os::fd::RawFd;

// ---------------------------------------------------------------------------------------------
// The open-file limit.

/// The process's open-file limits (`RLIMIT_NOFILE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoFile {
    /// The limit in force: no new fd gets a number at or above it.
    pub soft: libc::rlim_t,
    /// The ceiling an unprivileged process may raise `soft` to.
    pub hard: libc::rlim_t,
}

/// The open-file limits now in force.
pub fn nofile() -> io::Result<NoFile> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through the pointer, which points at `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NoFile { soft: lim.rlim_cur, hard: lim.rlim_max })
}

/// Sets the open-file limits (lowering `hard` cannot be undone without privileges).
pub fn set_nofile(limit: NoFile) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: limit.soft, rlim_max: limit.hard };
    // SAFETY: setrlimit reads one rlimit through the pointer, which points at `lim`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-file limit to `want`, or to the hard limit if that is lower (so
/// `raise_nofile(libc::RLIM_INFINITY)` raises it as far as it goes); never lowers it. Returns
/// the limits in force afterwards.
pub fn raise_nofile(want: libc::rlim_t) -> io::Result<NoFile> {
    let now = nofile()?;
    let soft = want.min(now.hard);
    if soft <= now.soft {
        return Ok(now);
    }
    let raised = NoFile { soft, ..now };
    set_nofile(raised)?;
    Ok(raised)
}

// ---------------------------------------------------------------------------------------------
// Socket options.

/// Sets an integer socket option: `setsockopt(fd, level, name, &value)`.
pub fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes through the pointer, which points at
    // `value`; a bad fd or option is an error, not undefined behaviour.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TCP_NODELAY` on: small writes go out at once.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// `SO_REUSEADDR` on: a listener may bind an address that connections in `TIME_WAIT` still use.
pub fn set_reuseaddr(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
}

/// Asks for a kernel send buffer of `bytes` (`SO_SNDBUF`; Linux doubles it and applies a
/// minimum), so that a large write cannot be taken in one go.
pub fn set_send_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, buffer_size(bytes)?)
}

/// Asks for a kernel receive buffer of `bytes` (`SO_RCVBUF`; Linux doubles it and applies a
/// minimum).
pub fn set_recv_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, buffer_size(bytes)?)
}

fn buffer_size(bytes: usize) -> io::Result<libc::c_int> {
    libc::c_int::try_from(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer size over i32::MAX"))
}

/// `SO_LINGER {on, 0 s}`: closing the socket then sends a reset (RST) instead of a FIN.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes through the pointer, which points at
    // `l`; a bad fd is an error, not undefined behaviour.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// File status flags.

/// Puts `fd` into nonblocking mode (`O_NONBLOCK`), keeping its other status flags.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL) takes integers only; a bad fd is an error.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl(F_SETFL) takes integers only; a bad fd is an error.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn raise_nofile_never_lowers_and_stops_at_the_hard_limit() {
        let before = nofile().unwrap();
        assert_eq!(raise_nofile(0).unwrap(), before);
        let raised = raise_nofile(libc::RLIM_INFINITY).unwrap();
        assert_eq!(raised, NoFile { soft: before.hard, hard: before.hard });
        assert_eq!(nofile().unwrap(), raised);
    }

    #[test]
    fn options_take_on_a_socket_and_fail_on_a_bad_fd() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = stream.as_raw_fd();
        set_nodelay(fd).unwrap();
        assert!(stream.nodelay().unwrap());
        set_reuseaddr(listener.as_raw_fd()).unwrap();
        set_send_buffer(fd, 4096).unwrap();
        set_recv_buffer(fd, 4096).unwrap();
        set_linger_zero(fd).unwrap();
        set_nonblocking(fd).unwrap();
        let err = std::io::Read::read(&mut &stream, &mut [0; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(set_nodelay(-1).unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(set_send_buffer(fd, usize::MAX).is_err());
    }
}
