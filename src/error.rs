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
    /// A time limit passed: the stream's deadline ([`Port::set_timeout`](crate::Port::set_timeout)),
    /// the I/O's own timeout ([`Request::timeout`](crate::Request::timeout),
    /// [`Port::connect_timeout`](crate::Port::connect_timeout)), or the OS's (`ETIMEDOUT`).
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
/// the `io::Error` the OS (or a driver) reported, where there is one.
///
/// An error made from an `io::Error` ([`Error::from_io`], `From<io::Error>`) keeps it:
/// [`source`](std::error::Error::source) returns it, [`raw_os_error`](Error::raw_os_error) is
/// its `errno`, and converting back into an `io::Error` gives it back (see the `From<Error>`
/// impl of `io::Error` for the whole mapping). It is kept in an `Arc`, so `Error` stays `Clone`.
///
/// `Display` shows the message without the source's text when there is a source, so that a
/// report that prints the chain of sources says each thing once; the alternate form (`{:#}`)
/// and [`Error::message`] give the whole line, source included:
///
/// ```
/// let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let addr = taken.local_addr()?;
/// let e = cport::Port::new()?.listen(addr, 1).unwrap_err();
/// assert_eq!(e.to_string(), format!("cport: listen on {addr}"));
/// let why = std::error::Error::source(&e).expect("the OS error").to_string();
/// assert!(why.contains("Address already in use"), "{why}");
/// assert_eq!(format!("{e:#}"), format!("cport: listen on {addr}: {why}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    /// How much of `message` is this error's own (the rest is its source's text).
    own: usize,
    /// std's `Arc` even under loom (not `crate::sync`'s): it shares an immutable value and
    /// orders nothing, and errors outlive the loom models that make them.
    io: Option<std::sync::Arc<io::Error>>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Error {
        let message = message.into();
        Error { kind, own: message.len(), message, io: None }
    }

    /// An error from an `io::Error`, with `context` saying what was being done.
    ///
    /// A reset or broken connection becomes [`ErrorKind::Abandoned`], a timeout
    /// [`ErrorKind::TimedOut`], and an invalid argument (`io::ErrorKind::InvalidInput`, `EINVAL`,
    /// or a name too long) [`ErrorKind::InvalidInput`], so that bad input has one kind whether
    /// cport or the OS noticed it. Anything else is [`ErrorKind::Os`].
    ///
    /// The error keeps a copy of `err` as its source: one with the same `errno` for an OS
    /// error, otherwise one with the same `io::ErrorKind` and message. (`From<io::Error>`
    /// takes the `io::Error` by value and keeps that very one.)
    pub fn from_io(err: &io::Error, context: impl fmt::Display) -> Error {
        let copy = match err.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None if err.get_ref().is_none() => io::Error::from(err.kind()),
            None => io::Error::new(err.kind(), err.to_string()),
        };
        let context = context.to_string();
        let own = context.len();
        Error { kind: kind_of(err), message: format!("{context}: {err}").into(), own, io: Some(copy.into()) }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The OS error number (`errno`), when the OS reported the error.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io.as_ref().and_then(|e| e.raw_os_error())
    }

    /// The whole message, the source's text included, without the `cport:` prefix that
    /// `Display` adds.
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

/// The kind [`Error::from_io`] and `From<io::Error>` give an `io::Error`.
fn kind_of(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            ErrorKind::Abandoned
        }
        io::ErrorKind::TimedOut => ErrorKind::TimedOut,
        io::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
        _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => ErrorKind::InvalidInput,
        k => ErrorKind::Os(k),
    }
}

/// Two errors are equal when their kinds and messages are, and their sources have the same
/// `errno` and `io::ErrorKind` (or neither has a source).
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.kind == other.kind
            && self.message == other.message
            && self.raw_os_error() == other.raw_os_error()
            && self.io.as_ref().map(|e| e.kind()) == other.io.as_ref().map(|e| e.kind())
    }
}

impl Eq for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.io {
            _ if f.alternate() => write!(f, "cport: {}", self.message),
            // The source says the rest.
            Some(_) if self.own == 0 => f.write_str("cport: I/O error"),
            Some(_) => write!(f, "cport: {}", &self.message[..self.own]),
            None => write!(f, "cport: {}", self.message),
        }
    }
}

impl std::error::Error for Error {
    /// The `io::Error` this error was made from, if any.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Keeps `err` itself as the source; the kind is as for [`Error::from_io`], the message is
/// `err`'s.
impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error { kind: kind_of(&err), message: err.to_string().into(), own: 0, io: Some(err.into()) }
    }
}

/// An error made from an `io::Error` gives that `io::Error` back: the very one when this is
/// its last clone, otherwise one with the same `errno` (or, without one, the same
/// `io::ErrorKind`, carrying this error). Any other error becomes an `io::Error` that carries
/// it (`get_ref` downcasts to [`Error`]), of this kind:
///
/// | [`ErrorKind`] | `io::ErrorKind` |
/// | --- | --- |
/// | `Busy` | `ResourceBusy` |
/// | `InvalidInput` | `InvalidInput` |
/// | `NotAssigned` | `NotFound` |
/// | `PortClosed` | `NotConnected` |
/// | `TimedOut` | `TimedOut` |
/// | `Cancelled` | `Other` |
/// | `Abandoned` | `ConnectionReset` |
/// | `LimitExceeded` | `QuotaExceeded` |
/// | `Os(k)` | `k` |
///
/// A cancel is `Other`, never `Interrupted`: retry loops take `Interrupted` to mean "make the
/// same call again", and a cancelled I/O was ended on purpose.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let Error { kind, message, own, io } = e;
        if let Some(io) = io {
            return match std::sync::Arc::try_unwrap(io) {
                Ok(original) => original,
                Err(shared) => match shared.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(shared.kind(), Error { kind, message, own, io: Some(shared) }),
                },
            };
        }
        let io_kind = match kind {
            ErrorKind::Busy => io::ErrorKind::ResourceBusy,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::NotAssigned => io::ErrorKind::NotFound,
            ErrorKind::PortClosed => io::ErrorKind::NotConnected,
            ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            ErrorKind::Cancelled => io::ErrorKind::Other,
            ErrorKind::Abandoned => io::ErrorKind::ConnectionReset,
            ErrorKind::LimitExceeded => io::ErrorKind::QuotaExceeded,
            ErrorKind::Os(k) => k,
        };
        io::Error::new(io_kind, Error { kind, message, own, io: None })
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
        // Display says what failed; the source says why (each once in a chain of sources).
        assert_eq!(e.to_string(), "cport: read on stream 3");
        assert!(e.message().starts_with("read on stream 3: "), "the message has both: {e:?}");
        let why = std::error::Error::source(&e).expect("a source").to_string();
        assert!(e.message().ends_with(&why) && !e.to_string().contains(&why));
        let e = Error::from_io(&io::Error::from_raw_os_error(libc::ECONNREFUSED), "connect");
        assert_eq!(e.kind(), ErrorKind::Os(io::ErrorKind::ConnectionRefused));
        let back: io::Error = e.into();
        assert_eq!(back.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    fn io_source(e: &Error) -> &io::Error {
        let source = std::error::Error::source(e).expect("an error made from an io::Error has a source");
        source.downcast_ref::<io::Error>().expect("the source is the io::Error")
    }

    #[test]
    fn the_source_of_an_os_error_is_the_io_error() {
        let e = Error::from_io(&io::Error::from_raw_os_error(libc::ECONNREFUSED), "connect to 127.0.0.1:1");
        let io = io_source(&e);
        assert_eq!((io.raw_os_error(), io.kind()), (Some(libc::ECONNREFUSED), io::ErrorKind::ConnectionRefused));
        // A clone shares it.
        let c = e.clone();
        assert_eq!(io_source(&c).raw_os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(c, e);
        // Not an OS error: the kind and message are kept.
        let e = Error::from_io(&io::Error::new(io::ErrorKind::Unsupported, "no such thing"), "attach");
        assert_eq!(
            (io_source(&e).kind(), io_source(&e).to_string().as_str()),
            (io::ErrorKind::Unsupported, "no such thing")
        );
        assert_eq!(e.raw_os_error(), None);
        // cport's own refusals have none.
        assert!(std::error::Error::source(&Error::new(ErrorKind::Busy, "busy")).is_none());
    }

    #[test]
    fn from_io_error_and_back_keeps_the_io_error() {
        // An OS error, whatever kind cport gives it.
        for (code, kind) in [
            (libc::ECONNREFUSED, ErrorKind::Os(io::ErrorKind::ConnectionRefused)),
            (libc::EINVAL, ErrorKind::InvalidInput),
            (libc::ENAMETOOLONG, ErrorKind::InvalidInput),
            (libc::ETIMEDOUT, ErrorKind::TimedOut),
            (libc::EPIPE, ErrorKind::Abandoned),
            (libc::EINTR, ErrorKind::Os(io::ErrorKind::Interrupted)),
        ] {
            let original = io::Error::from_raw_os_error(code);
            let io_kind = original.kind();
            let e = Error::from(original);
            assert_eq!((e.kind(), e.raw_os_error()), (kind, Some(code)));
            let shared = e.clone();
            let back = io::Error::from(e);
            assert_eq!((back.raw_os_error(), back.kind()), (Some(code), io_kind));
            // The last clone gives back the very io::Error; a shared one, one with its errno.
            let back = io::Error::from(shared);
            assert_eq!((back.raw_os_error(), back.kind()), (Some(code), io_kind));
        }
        // An io::Error with a payload of its own comes back with it.
        #[derive(Debug)]
        struct Mine;
        impl fmt::Display for Mine {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("mine")
            }
        }
        impl std::error::Error for Mine {}
        let e: Error = io::Error::new(io::ErrorKind::InvalidData, Mine).into();
        assert_eq!((e.kind(), e.message()), (ErrorKind::Os(io::ErrorKind::InvalidData), "mine"));
        let back = io::Error::from(e);
        assert_eq!(back.kind(), io::ErrorKind::InvalidData);
        assert!(back.get_ref().is_some_and(|p| p.is::<Mine>()), "{back:?}");
        // `?` turns an io::Error into an Error.
        fn open() -> Result<()> {
            std::fs::File::open("/nonexistent/cport")?;
            Ok(())
        }
        assert_eq!(open().unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn a_cancel_never_becomes_interrupted() {
        let back = io::Error::from(Error::new(ErrorKind::Cancelled, "read on stream 1 cancelled"));
        assert_ne!(back.kind(), io::ErrorKind::Interrupted);
        assert_eq!(back.kind(), io::ErrorKind::Other);
        let inner =
            back.get_ref().and_then(|p| p.downcast_ref::<Error>()).expect("the io::Error carries the cport::Error");
        assert_eq!(inner.kind(), ErrorKind::Cancelled);
        // The rest of the table.
        for (kind, io_kind) in [
            (ErrorKind::Busy, io::ErrorKind::ResourceBusy),
            (ErrorKind::InvalidInput, io::ErrorKind::InvalidInput),
            (ErrorKind::NotAssigned, io::ErrorKind::NotFound),
            (ErrorKind::PortClosed, io::ErrorKind::NotConnected),
            (ErrorKind::TimedOut, io::ErrorKind::TimedOut),
            (ErrorKind::Abandoned, io::ErrorKind::ConnectionReset),
            (ErrorKind::LimitExceeded, io::ErrorKind::QuotaExceeded),
            (ErrorKind::Os(io::ErrorKind::AddrInUse), io::ErrorKind::AddrInUse),
        ] {
            assert_eq!(io::Error::from(Error::new(kind, "x")).kind(), io_kind, "{kind:?}");
        }
    }

    #[test]
    fn error_is_a_well_behaved_error_type() {
        fn check<T: Send + Sync + 'static + Clone + fmt::Debug + fmt::Display + std::error::Error>() {}
        check::<Error>();
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
