//! [`Completion`]: what `next_completion` hands out, and [`Status`], how an I/O ended.

use std::fmt;
use std::net::SocketAddr;

use crate::buf::Buf;
use crate::driver::{Accepted, Driver};
use crate::error::{Error, ErrorKind, Result};
use crate::isb::Isb;
use crate::request::Op;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Done: a read got at least `min` bytes, a write sent everything, an accept or connect
    /// succeeded, a close closed, a post was posted.
    Ok,
    /// A read reached the end of the stream before `min` bytes arrived;
    /// [`Completion::bytes`] says how many did (possibly zero).
    Eof,
    /// Cancelled by `cancel`, `close`, `deassign` or shutdown before it finished.
    Cancelled,
    /// The stream's deadline ([`Port::set_timeout`](crate::Port::set_timeout)) or the
    /// request's own timeout ([`Request::timeout`](crate::Request::timeout)) passed while the
    /// I/O was pending.
    TimedOut,
    /// The peer reset or hung up the connection ([`Completion::error`] has the detail).
    Abandoned,
    /// The OS reported an error ([`Completion::error`] has it).
    Failed,
}

/// One finished operation: whose it was (the user's token and the ISB), what it was, how it
/// ended, how many bytes moved, and the buffers it owned.
///
/// Dropping a completion drops what it carries: buffers are freed and an accepted stream that
/// was never assigned is closed, so nothing leaks.
pub struct Completion {
    pub(crate) token: u64,
    pub(crate) isb: Option<Isb>,
    pub(crate) op: Op,
    pub(crate) status: Status,
    pub(crate) bytes: usize,
    pub(crate) buf: Option<Buf>,
    pub(crate) value: u64,
    /// What only some completions carry, boxed so that the common ones stay small to move
    /// through the queue.
    pub(crate) extra: Option<Box<Extra>>,
}

/// The rarer parts of a completion.
#[derive(Default)]
pub(crate) struct Extra {
    pub(crate) bufs: Vec<Buf>,
    pub(crate) accepted: Option<Box<dyn Driver>>,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) error: Option<Error>,
}

impl Completion {
    pub(crate) fn new(token: u64, isb: Option<Isb>, op: Op, status: Status) -> Completion {
        Completion { token, isb, op, status, bytes: 0, buf: None, value: 0, extra: None }
    }

    /// The rarer parts, created on first use.
    pub(crate) fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The token given to [`Port::assign`](crate::Port::assign) (or to `post`).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The stream the operation ran on; `None` for a post.
    ///
    /// ```
    /// use cport::Port;
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.read(&isb, vec![0; 8], 1..=8)?;
    /// peer.write_all(b"x")?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.isb(), Some(&isb)); // the stream to start its next I/O on
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn isb(&self) -> Option<&Isb> {
        self.isb.as_ref()
    }

    /// The operation.
    pub fn op(&self) -> Op {
        self.op
    }

    /// How it ended.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Bytes transferred (for a read: the bytes at the start of the buffer that are new).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The detail of an `Abandoned` or `Failed` status.
    ///
    /// ```
    /// use cport::{ErrorKind, Port, Status};
    /// use std::io::ErrorKind::ConnectionRefused;
    ///
    /// let port = Port::new()?;
    /// let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?; // nobody listens there now
    /// port.connect(closed, 1)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.status(), Status::Failed);
    /// assert_eq!(c.error().map(|e| e.kind()), Some(ErrorKind::Os(ConnectionRefused)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn error(&self) -> Option<&Error> {
        self.extra.as_ref().and_then(|x| x.error.as_ref())
    }

    /// `Ok(bytes)` for `Ok` and `Eof`; otherwise the error, with a kind matching the status.
    ///
    /// ```
    /// use cport::{ErrorKind, Port, Request};
    /// use std::io::Write;
    /// use std::time::Duration;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 8]))?;
    /// peer.write_all(b"abc")?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").result()?, 3);
    /// port.start_io(&isb, Request::read_some(vec![0; 8]).timeout(Duration::from_millis(5)))?;
    /// let timed_out = port.next_completion(None)?.expect("no timeout on the wait");
    /// assert_eq!(timed_out.result().unwrap_err().kind(), ErrorKind::TimedOut);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn result(&self) -> Result<usize> {
        match self.status {
            Status::Ok | Status::Eof => Ok(self.bytes),
            Status::Abandoned | Status::Failed => {
                Err(self.error().cloned().unwrap_or_else(|| self.plain_error(ErrorKind::Abandoned)))
            }
            Status::Cancelled => Err(self.plain_error(ErrorKind::Cancelled)),
            Status::TimedOut => Err(self.plain_error(ErrorKind::TimedOut)),
        }
    }

    fn plain_error(&self, kind: ErrorKind) -> Error {
        let what = match kind {
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::TimedOut => "timed out",
            _ => "abandoned by the peer",
        };
        Error::new(kind, format!("{} on stream {} {what}", self.op, self.token))
    }

    /// The whole buffer of a read, write, recv_from or send_to, as it was given (for a read,
    /// only its first [`bytes`](Completion::bytes) are new: see [`Completion::data`]; for a
    /// [`read_buf`](crate::Request::read_buf), the bytes read).
    pub fn buffer(&self) -> Option<&[u8]> {
        self.buf.as_deref()
    }

    /// The bytes transferred: what a read or recv_from received, or what a write or send_to
    /// sent (`&buffer[..bytes]`). Empty for vectored I/O (see [`Completion::into_data`]) and
    /// for operations without a buffer.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 64]))?;
    /// peer.write_all(b"hi")?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.data(), b"hi");
    /// assert_eq!(c.buffer().map(<[u8]>::len), Some(64), "the whole buffer, to reuse");
    /// assert_eq!(c.into_data(), b"hi".to_vec());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[..self.bytes.min(b.len())],
            None => &[],
        }
    }

    /// The bytes transferred, as a vector of exactly that length (the buffer, truncated; for
    /// vectored I/O the buffers' transferred bytes, joined). Empty for operations without a
    /// buffer.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// peer.write_all(b"abcdef")?;
    /// port.start_io(&isb, Request::read_vectored(vec![vec![0; 4], vec![0; 4]], 6))?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.into_data(), b"abcdef".to_vec());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_data(mut self) -> Vec<u8> {
        match self.buf.take() {
            Some(Buf::Owned(mut b)) => {
                b.truncate(self.bytes);
                return b;
            }
            Some(Buf::Spare(mut v, start)) => {
                v.truncate(start + self.bytes);
                v.drain(..start);
                return v;
            }
            Some(b) => return b[..self.bytes.min(b.len())].to_vec(),
            None => {}
        }
        let mut left = self.bytes;
        let mut out = Vec::with_capacity(left);
        for b in self.take_buffers() {
            let n = left.min(b.len());
            out.extend_from_slice(&b[..n]);
            left -= n;
        }
        out
    }

    /// Takes the whole buffer back out, to reuse it (its length is unchanged: only the first
    /// [`bytes`](Completion::bytes) are new; a [`read_buf`](crate::Request::read_buf)'s vector
    /// comes back grown by the bytes read).
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// let mut buf = vec![0; 64];
    /// for msg in [&b"one"[..], b"two"] {
    ///     port.start_io(&isb, Request::read_some(buf))?;
    ///     peer.write_all(msg)?;
    ///     let mut c = port.next_completion(None)?.expect("no timeout");
    ///     assert_eq!(c.data(), msg);
    ///     buf = c.take_buffer().expect("a read's buffer"); // the same allocation, reused
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_buffer(&mut self) -> Option<Vec<u8>> {
        self.buf.take().and_then(Buf::into_vec)
    }

    /// Takes the buffers of a vectored read or write back out.
    pub fn take_buffers(&mut self) -> Vec<Vec<u8>> {
        let bufs = self.extra.as_mut().map(|x| std::mem::take(&mut x.bufs)).unwrap_or_default();
        bufs.into_iter().filter_map(Buf::into_vec).collect()
    }

    /// Takes the connection an accept produced, ready for
    /// [`Port::assign`](crate::Port::assign), with its peer's address and its fd.
    #[must_use = "dropping the accepted connection closes it"]
    pub fn take_accepted(&mut self) -> Option<Accepted> {
        let x = self.extra.as_mut()?;
        let peer = x.addr;
        x.accepted.take().map(|d| Accepted::new(d, peer))
    }

    /// The peer of an accept, or the sender of a recv_from.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.extra.as_ref().and_then(|x| x.addr)
    }

    /// The value of a post.
    pub fn value(&self) -> u64 {
        self.value
    }
}

/// What ended a wait in [`Port::next`](crate::Port::next).
#[derive(Debug)]
#[must_use = "a `Next` may hold a completion, and dropping it drops the completion's buffers"]
pub enum Next {
    /// A completion.
    Completion(Completion),
    /// [`Port::wakeup`](crate::Port::wakeup) woke the waiting thread.
    Woken,
    /// The timeout passed with nothing to take.
    TimedOut,
}

impl Next {
    /// The completion, if that is what ended the wait.
    pub fn completion(self) -> Option<Completion> {
        match self {
            Next::Completion(c) => Some(c),
            Next::Woken | Next::TimedOut => None,
        }
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("token", &self.token)
            .field("op", &self.op)
            .field("status", &self.status)
            .field("bytes", &self.bytes)
            .field("error", &self.error())
            .finish_non_exhaustive()
    }
}
