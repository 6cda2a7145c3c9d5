//! One error type for every fallible call, with a kind a program can match on.

use std::borrow::Cow;
use std::fmt;
use std::io;

use crate::request::Request;

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in a form a program can decide on.
///
/// The same kinds describe a call that was refused (an [`Error`]) and, through
/// [`Completion::result`](crate::Completion::result), an I/O that ended without success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The side of the stream (read or write) already has an I/O in progress or a completion
    /// that has not been taken yet.
    Busy,
    /// An argument is wrong: `min > max`, an empty buffer, an operation the driver does not
    /// support, an fd of the wrong type, an ISB of another port.
    InvalidInput,
    /// The ISB was deassigned or closed, or its stream never existed on this port.
    NotAssigned,
    /// The port was shut down.
    PortClosed,
    /// The stream's deadline (see [`Port::set_timeout`](crate::Port::set_timeout)) passed.
    TimedOut,
    /// The I/O was cancelled by `cancel`, `close`, `deassign` or shutdown.
    Cancelled,
    /// The peer reset or hung up the connection.
    Abandoned,
    /// A configured limit was reached: a connection's queued output or unconsumed input
    /// (see [`session::Limits`](crate::session::Limits)).
    LimitExceeded,
    /// The operating system reported an error (other than the kinds above: an OS `EINVAL`
    /// is `InvalidInput`, a reset `Abandoned`, `ETIMEDOUT` `TimedOut`).
    Os(io::ErrorKind),
}

/// The error type of cport: a [`ErrorKind`], a message naming the stream and what failed, and
/// the OS error code where there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    os: Option<i32>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Error {
        Error { kind, message: message.into(), os: None }
    }

    /// An error from an `io::Error`, with `context` saying what was being done.
    ///
    /// A reset or broken connection becomes [`ErrorKind::Abandoned`], a timeout
    /// [`ErrorKind::TimedOut`], and an invalid argument (`io::ErrorKind::InvalidInput`, `EINVAL`,
    /// or a name too long) [`ErrorKind::InvalidInput`], so that bad input has one kind whether
    /// cport or the OS noticed it. Anything else is [`ErrorKind::Os`].
    pub fn from_io(err: &io::Error, context: impl fmt::Display) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                ErrorKind::Abandoned
            }
            io::ErrorKind::TimedOut => ErrorKind::TimedOut,
            io::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => ErrorKind::InvalidInput,
            k => ErrorKind::Os(k),
        };
        Error { kind, message: format!("{context}: {err}").into(), os: err.raw_os_error() }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The OS error number (`errno`), when the OS reported the error.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.os
    }

    /// The message, without the `cport:` prefix that `Display` adds.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn invalid(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn closed() -> Error {
        Error::new(ErrorKind::PortClosed, "the port was shut down")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cport: {}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind {
            ErrorKind::Busy => io::ErrorKind::ResourceBusy,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::NotAssigned => io::ErrorKind::NotFound,
            ErrorKind::PortClosed => io::ErrorKind::NotConnected,
            ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            ErrorKind::Cancelled => io::ErrorKind::Interrupted,
            ErrorKind::Abandoned => io::ErrorKind::ConnectionReset,
            ErrorKind::LimitExceeded => io::ErrorKind::OutOfMemory,
            ErrorKind::Os(k) => k,
        };
        match e.os {
            Some(code) if matches!(e.kind, ErrorKind::Os(_) | ErrorKind::Abandoned) => {
                io::Error::from_raw_os_error(code)
            }
            _ => io::Error::new(kind, e),
        }
    }
}

/// A refused [`Port::start_io`](crate::Port::start_io): the reason and the request itself, so
/// the buffers it owns come back to the caller.
#[derive(Debug)]
pub struct StartError {
    error: Error,
    request: Request,
}

impl StartError {
    pub(crate) fn new(error: Error, request: Request) -> StartError {
        StartError { error, request }
    }

    /// Why the request was refused.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind
    }

    /// The refused request, with its buffers.
    pub fn into_request(self) -> Request {
        self.request
    }

    /// Splits into the error and the request.
    pub fn into_parts(self) -> (Error, Request) {
        (self.error, self.request)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<StartError> for Error {
    fn from(e: StartError) -> Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_map_to_abandoned_and_os() {
        let e = Error::from_io(&io::Error::from_raw_os_error(libc::ECONNRESET), "read on stream 3");
        assert_eq!(e.kind(), ErrorKind::Abandoned);
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
        assert!(e.to_string().starts_with("cport: read on stream 3: "));
        let e = Error::from_io(&io::Error::from_raw_os_error(libc::ECONNREFUSED), "connect");
        assert_eq!(e.kind(), ErrorKind::Os(io::ErrorKind::ConnectionRefused));
        let back: io::Error = e.into();
        assert_eq!(back.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    #[test]
    fn start_error_gives_the_request_back() {
        let req = Request::write(vec![1, 2, 3]);
        let e = StartError::new(Error::new(ErrorKind::Busy, "busy"), req);
        assert_eq!(e.kind(), ErrorKind::Busy);
        let (_, req) = e.into_parts();
        assert_eq!(req.into_buffer().unwrap(), vec![1, 2, 3]);
    }
}
