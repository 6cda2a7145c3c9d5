//! The built-in drivers: TCP and Unix-domain listeners and streams, UDP sockets, native fds.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, Type};

use super::Driver;
use crate::request::Op;
use crate::sys::socket::{self, SocketKind};

/// Checks that `fd` is a socket of the expected shape and makes it nonblocking.
fn attach_socket(fd: BorrowedFd<'_>, what: &str, ok: impl Fn(SocketKind) -> bool) -> io::Result<()> {
    let kind = socket::socket_kind(fd).map_err(|e| {
        let fd = fd.as_raw_fd();
        if e.raw_os_error() == Some(libc::ENOTSOCK) {
            io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd} is not a socket, so it cannot be a {what}"))
        } else {
            e
        }
    })?;
    if !ok(kind) {
        let fd = fd.as_raw_fd();
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd} is a socket but not a {what}")));
    }
    socket::set_nonblocking(fd)
}

/// `AsFd` and `AsRawFd` for a driver, through the field that owns its fd.
macro_rules! fd_traits {
    ($name:ident, $field:ident) => {
        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.$field.as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.$field.as_raw_fd()
            }
        }
    };
}

fn is_stream(k: SocketKind) -> bool {
    k.ty == Type::STREAM && !k.listening
}

macro_rules! stream_driver {
    ($(#[$doc:meta])* $name:ident, $std:ty, $label:literal, $domain_ok:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            sock: $std,
            /// Made by cport's own accept or connect: already a nonblocking stream socket, so
            /// `attach` has nothing to check.
            known: bool,
        }

        impl $name {
            /// Wraps a connected stream (checked and made nonblocking at assign).
            #[must_use = "a driver does nothing until it is assigned to a port"]
            pub fn new(sock: $std) -> Self {
                $name { sock, known: false }
            }

            /// Wraps any fd; `assign` refuses it with `InvalidInput` unless it is such a socket.
            #[must_use = "a driver does nothing until it is assigned to a port"]
            pub fn from_fd(fd: OwnedFd) -> Self {
                $name { sock: <$std>::from(fd), known: false }
            }

            /// A socket cport opened itself, nonblocking and of the right kind.
            pub(crate) fn known(fd: OwnedFd) -> Self {
                $name { sock: <$std>::from(fd), known: true }
            }

            /// The wrapped socket.
            pub fn get_ref(&self) -> &$std {
                &self.sock
            }
        }

        impl From<$std> for $name {
            fn from(sock: $std) -> Self {
                $name::new(sock)
            }
        }

        fd_traits!($name, sock);

        impl Driver for $name {
            fn name(&self) -> &'static str {
                $label
            }
            fn fd(&self) -> BorrowedFd<'_> {
                self.sock.as_fd()
            }
            fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
                Some(OwnedFd::from(self.sock))
            }
            fn supports(&self, op: Op) -> bool {
                matches!(op, Op::Read | Op::ReadVectored | Op::Write | Op::WriteVectored | Op::Connect)
            }
            fn attach(&mut self) -> io::Result<()> {
                if self.known {
                    return Ok(());
                }
                let domain_ok: fn(SocketKind) -> bool = $domain_ok;
                attach_socket(self.sock.as_fd(), $label, |k| is_stream(k) && domain_ok(k))
            }
            fn plain_reads(&self) -> bool {
                true
            }
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&self.sock).read(buf)
            }
            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                (&self.sock).read_vectored(bufs)
            }
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                socket::send_vectored(self.sock.as_fd(), &[IoSlice::new(buf)])
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                socket::send_vectored(self.sock.as_fd(), bufs)
            }
            fn connect(&mut self, addr: &socket2::SockAddr) -> io::Result<()> {
                socket2::SockRef::from(&self.sock).connect(addr)
            }
            fn finish_connect(&mut self) -> io::Result<()> {
                match socket::take_error(self.sock.as_fd())? {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
        }
    };
}

stream_driver!(
    /// A connected TCP stream: read, vectored read, write, vectored write.
    TcpStream, std::net::TcpStream, "tcp stream", |k| k.is_inet()
);
stream_driver!(
    /// A connected Unix-domain stream: read, vectored read, write, vectored write.
    UnixStream, std::os::unix::net::UnixStream, "unix stream", |k| k.domain == Domain::UNIX
);

macro_rules! listener_driver {
    ($(#[$doc:meta])* $name:ident, $std:ty, $label:literal, $stream:ident, $stdstream:ty, $domain_ok:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            sock: $std,
        }

        impl $name {
            /// Wraps a listening socket (checked and made nonblocking at assign).
            #[must_use = "a driver does nothing until it is assigned to a port"]
            pub fn new(sock: $std) -> Self {
                $name { sock }
            }

            /// Wraps any fd; `assign` refuses it with `InvalidInput` unless it is a listening
            /// socket of this kind.
            #[must_use = "a driver does nothing until it is assigned to a port"]
            pub fn from_fd(fd: OwnedFd) -> Self {
                $name { sock: <$std>::from(fd) }
            }

            /// The wrapped socket.
            pub fn get_ref(&self) -> &$std {
                &self.sock
            }
        }

        impl From<$std> for $name {
            fn from(sock: $std) -> Self {
                $name::new(sock)
            }
        }

        fd_traits!($name, sock);

        impl Driver for $name {
            fn name(&self) -> &'static str {
                $label
            }
            fn fd(&self) -> BorrowedFd<'_> {
                self.sock.as_fd()
            }
            fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
                Some(OwnedFd::from(self.sock))
            }
            fn supports(&self, op: Op) -> bool {
                op == Op::Accept
            }
            fn attach(&mut self) -> io::Result<()> {
                let domain_ok: fn(SocketKind) -> bool = $domain_ok;
                attach_socket(self.sock.as_fd(), $label, |k| k.ty == Type::STREAM && k.listening && domain_ok(k))
            }
            fn accept(&mut self) -> io::Result<(Box<dyn Driver>, Option<SocketAddr>)> {
                let (fd, peer) = socket::accept(self.sock.as_fd())?;
                Ok((Box::new($stream::known(fd)), peer))
            }
        }
    };
}

listener_driver!(
    /// A listening TCP socket: accept. Accepted streams come as [`TcpStream`] drivers.
    TcpListener, std::net::TcpListener, "tcp listener", TcpStream, std::net::TcpStream, |k| k.is_inet()
);
listener_driver!(
    /// A listening Unix-domain socket: accept. Accepted streams come as [`UnixStream`] drivers.
    UnixListener, std::os::unix::net::UnixListener, "unix listener", UnixStream, std::os::unix::net::UnixStream,
    |k| k.domain == Domain::UNIX
);

/// A UDP socket: recv_from and send_to (and read/write once connected).
#[derive(Debug)]
pub struct UdpSocket {
    sock: std::net::UdpSocket,
}

impl UdpSocket {
    /// Wraps a bound UDP socket.
    #[must_use = "a driver does nothing until it is assigned to a port"]
    pub fn new(sock: std::net::UdpSocket) -> Self {
        UdpSocket { sock }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &std::net::UdpSocket {
        &self.sock
    }
}

impl From<std::net::UdpSocket> for UdpSocket {
    fn from(sock: std::net::UdpSocket) -> Self {
        UdpSocket::new(sock)
    }
}

fd_traits!(UdpSocket, sock);

impl Driver for UdpSocket {
    fn name(&self) -> &'static str {
        "udp socket"
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        Some(OwnedFd::from(self.sock))
    }
    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::RecvFrom | Op::SendTo | Op::Read | Op::Write)
    }
    fn attach(&mut self) -> io::Result<()> {
        attach_socket(self.sock.as_fd(), "udp socket", |k| k.ty == Type::DGRAM && k.is_inet())
    }
    fn plain_reads(&self) -> bool {
        true
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send(buf)
    }
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf)
    }
    fn send_to(&mut self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, addr)
    }
}

/// Any native fd that epoll can watch: pipes, FIFOs, character devices, sockets used as plain
/// byte streams. Reads and writes use `read(2)`/`write(2)`.
///
/// Writing to a pipe whose reader is gone raises `SIGPIPE` unless the program ignores it (Rust
/// programs do by default); the write then completes as `Abandoned`.
#[derive(Debug)]
pub struct Fd {
    file: File,
}

impl Fd {
    /// Wraps an owned fd; it is made nonblocking at assign.
    #[must_use = "a driver does nothing until it is assigned to a port"]
    pub fn new(fd: impl Into<OwnedFd>) -> Self {
        Fd { file: File::from(fd.into()) }
    }
}

fd_traits!(Fd, file);

impl Driver for Fd {
    fn name(&self) -> &'static str {
        "fd"
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        Some(OwnedFd::from(self.file))
    }
    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::Read | Op::ReadVectored | Op::Write | Op::WriteVectored)
    }
    fn attach(&mut self) -> io::Result<()> {
        socket::set_nonblocking(self.file.as_fd())
    }
    fn plain_reads(&self) -> bool {
        true
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.file).read_vectored(bufs)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }
}
