//! The ISB (I/O synchronization block): one assigned stream, its two sides and their state
//! machine, and the step that moves a pending request forward. No syscalls here: the driver
//! does the I/O. See ARCHITECTURE.md, "ISB states".
//!
//! Each side (read, write) is always in one of three states:
//!
//! ```text
//!   PROCESSED --start_io--> BUSY --finish--> COMPLETED --next_completion--> PROCESSED
//! ```
//!
//! Every move but the last happens with the stream's lock held; the last is a single store by
//! the thread that took the completion off the queue.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::buf::Buf;
use crate::completion::{Completion, Status};
use crate::driver::Driver;
use crate::error::Error;
use crate::request::{ConnectTo, Extra, Kind, Op, Request, Side};
use crate::sync::{lock, Arc, AtomicU8, Mutex, MutexGuard, Ordering, Peek};
use crate::sys::Interest;
use crate::timer::TimerId;
use crate::token::Token;

/// A new I/O may be started on the side.
pub(crate) const PROCESSED: u8 = 0;
/// An I/O is in progress on the side.
pub(crate) const BUSY: u8 = 1;
/// The side's I/O finished and its completion is queued, not yet taken.
pub(crate) const COMPLETED: u8 = 2;

/// No close is pending.
pub(crate) const CLOSE_NONE: u8 = 0;
/// `close` released the stream; its Close completion waits until the stream's other
/// completions are taken.
pub(crate) const CLOSE_PENDING: u8 = 1;
/// The Close completion was delivered.
pub(crate) const CLOSE_DONE: u8 = 2;

/// A handle to one stream assigned to a port: pass it to the port's I/O calls.
///
/// Cloning is cheap (a reference count). An ISB stays valid as a value after its stream is
/// deassigned or closed; using it then gives a `NotAssigned` error. Completions carry the ISB
/// of their stream. ISBs compare and hash by the stream they name, so an ISB can key a map of
/// per-stream state.
///
/// ```
/// use cport::{driver, Port};
/// use std::collections::HashMap;
/// use std::os::unix::net::UnixStream;
///
/// let port = Port::new()?;
/// let (ours, _peer) = UnixStream::pair()?;
/// let isb = port.assign(driver::UnixStream::new(ours), 7)?;
/// assert_eq!(isb.token(), 7);
/// assert!(isb.is_assigned() && isb.fd().is_some());
///
/// #[allow(clippy::mutable_key_type)] // the identity hashed never changes
/// let mut names = HashMap::new();
/// names.insert(isb.clone(), "first");
/// assert_eq!(names[&isb], "first");
///
/// port.close(&isb)?;
/// assert!(!isb.is_assigned() && isb.fd().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Isb {
    pub(crate) stream: Arc<Stream>,
}

impl Isb {
    /// The token given at assign.
    pub fn token(&self) -> u64 {
        self.stream.user_token
    }

    /// The stream's slot and generation, as the port's table knows it (the C API's handle).
    #[cfg(feature = "ffi")]
    pub(crate) fn key(&self) -> u64 {
        self.stream.token.to_u64()
    }

    /// Whether the stream is still assigned (not deassigned, closed or torn down).
    pub fn is_assigned(&self) -> bool {
        lock(&self.stream.inner).driver.is_some()
    }

    /// The number of the stream's fd while it is assigned. Only a number: once the stream is
    /// released (by any thread) the fd closes and the number may be reused by another file.
    /// To use the fd (socket options, `getsockopt`), borrow it with [`Isb::with_fd`].
    pub fn fd(&self) -> Option<RawFd> {
        let inner = lock(&self.stream.inner);
        inner.driver.as_ref().map(|d| d.fd().as_raw_fd())
    }

    /// Runs `f` with the stream's fd, borrowed for the call: the stream's lock is held
    /// meanwhile, so the fd can neither close nor be reused. For socket options through
    /// `socket2::SockRef` (keepalive, linger, buffer sizes) without `unsafe`. `f` must not call
    /// the port about this stream (its lock is held: that would deadlock); keep it short.
    ///
    /// ```
    /// use socket2::SockRef;
    ///
    /// let port = cport::Port::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let isb = port.connect(listener.local_addr()?, 1)?;
    /// isb.with_fd(|fd| SockRef::from(&fd).set_keepalive(true))??;
    /// assert!(isb.with_fd(|fd| SockRef::from(&fd).keepalive())??);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `NotAssigned` once the stream is released (`f` is not called).
    pub fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> crate::Result<R> {
        let inner = lock(&self.stream.inner);
        match inner.driver.as_ref() {
            Some(d) => Ok(f(d.fd())),
            None => Err(Error::new(
                crate::ErrorKind::NotAssigned,
                format!("with_fd on stream {}: not assigned", self.stream.label()),
            )),
        }
    }

    /// The address of the peer of the stream's IPv4 or IPv6 socket.
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let isb = port.connect(listener.local_addr()?, 1)?;
    /// port.next_completion(None)?.expect("the connect");
    /// assert_eq!(isb.peer_addr()?, listener.local_addr()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Isb::local_addr`]; `Os(NotConnected)` for a socket not connected.
    pub fn peer_addr(&self) -> crate::Result<std::net::SocketAddr> {
        self.addr("peer_addr", |s| s.peer_addr())
    }

    /// The local address of the stream's IPv4 or IPv6 socket: for a listener bound to port 0
    /// ([`Port::listen`](crate::Port::listen)), the port the kernel picked.
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// let listener = port.listen("127.0.0.1:0".parse()?, 0)?;
    /// let addr = listener.local_addr()?;
    /// assert_eq!(addr.ip().to_string(), "127.0.0.1");
    /// assert_ne!(addr.port(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `NotAssigned` once the stream is released; `InvalidInput` if it is not an IPv4/IPv6
    /// socket; `Os` if the OS refuses.
    pub fn local_addr(&self) -> crate::Result<std::net::SocketAddr> {
        self.addr("local_addr", |s| s.local_addr())
    }

    /// One of the socket's addresses, read by `get` with the stream's lock held.
    fn addr(
        &self,
        call: &str,
        get: impl FnOnce(&socket2::SockRef<'_>) -> std::io::Result<socket2::SockAddr>,
    ) -> crate::Result<std::net::SocketAddr> {
        let inner = lock(&self.stream.inner);
        let Some(d) = inner.driver.as_ref() else {
            return Err(Error::new(
                crate::ErrorKind::NotAssigned,
                format!("{call} of stream {}: not assigned", self.stream.label()),
            ));
        };
        let what = || format!("{call} of {}", self.stream.describe(&inner));
        // The driver, and so its fd, stays while the stream's lock is held.
        let addr = get(&socket2::SockRef::from(&d.fd())).map_err(|e| Error::from_io(&e, what()))?;
        addr.as_socket().ok_or_else(|| Error::invalid(format!("{}: not an IPv4 or IPv6 socket", what())))
    }
}

impl PartialEq for Isb {
    fn eq(&self, other: &Isb) -> bool {
        Arc::ptr_eq(&self.stream, &other.stream)
    }
}

impl Eq for Isb {}

/// Hashes the stream's identity, as `PartialEq` compares it: an ISB can key a map. (Clippy's
/// `mutable_key_type` lint flags such a map because the stream behind the ISB has state that
/// changes; the identity hashed and compared never does, so allowing the lint there is safe.)
impl std::hash::Hash for Isb {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.stream), state);
    }
}

impl fmt::Debug for Isb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Isb").field("token", &self.stream.user_token).field("slot", &self.stream.token).finish()
    }
}

/// The shared part of an ISB.
pub(crate) struct Stream {
    /// Identity of the owning port (the address of its shared state).
    pub(crate) port_key: usize,
    /// Slot and generation: what epoll and the timers carry to find this stream.
    pub(crate) token: Token,
    /// The user's token.
    pub(crate) user_token: u64,
    /// The token is a C caller's user pointer (messages print it so).
    pub(crate) c_token: bool,
    /// PROCESSED / BUSY / COMPLETED per side.
    sides: [AtomicU8; 2],
    /// CLOSE_NONE / CLOSE_PENDING / CLOSE_DONE.
    close: AtomicU8,
    /// Everything else, under the stream's lock.
    pub(crate) inner: Mutex<Inner>,
}

/// One request in progress and how far it got.
pub(crate) struct Pending {
    pub(crate) req: Request,
    /// Bytes transferred so far.
    pub(crate) done: usize,
    /// The request's own timeout ([`Request::timeout`]) on the port's wheel, once armed.
    pub(crate) timer: Option<(TimerId, u32)>,
}

impl Pending {
    pub(crate) fn new(req: Request) -> Pending {
        Pending { req, done: 0, timer: None }
    }
}

/// The locked part of a stream.
pub(crate) struct Inner {
    /// `None` once deassigned or closed.
    pub(crate) driver: Option<Box<dyn Driver>>,
    /// The request pending on each side, boxed so an idle stream stays small (in place, two
    /// requests would double the bytes per idle connection; a box costs a malloc and a free
    /// from the thread's cache per I/O).
    pub(crate) pending: [Option<Box<Pending>>; 2],
    /// What epoll is (as far as we know) armed for. Cleared when an event is taken.
    pub(crate) armed: Interest,
    /// The deadline timer and its sequence number, if one is set.
    pub(crate) deadline: Option<(TimerId, u32)>,
    /// The accept back-off timer after the OS ran out of fds or memory (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM), if running: the read side is neither tried nor armed until it fires.
    pub(crate) backoff: Option<(TimerId, u32)>,
    /// The last read step drained the stream; see [`Inner::step`].
    pub(crate) drained: bool,
}

/// What one step of a pending request came to.
pub(crate) enum Step {
    /// Not finished; wait for readiness.
    Pending,
    /// Finished with this status; the completion is built from the request.
    Done(Status, Option<io::Error>),
    /// An accept produced a stream.
    Accepted(Box<dyn Driver>, Option<std::net::SocketAddr>),
    /// A recv_from got a datagram from this address.
    Received(std::net::SocketAddr),
}

impl Stream {
    pub(crate) fn new(port_key: usize, token: Token, label: Label, driver: Box<dyn Driver>) -> Stream {
        Stream {
            port_key,
            token,
            user_token: label.token,
            c_token: label.c,
            sides: [AtomicU8::new(PROCESSED), AtomicU8::new(PROCESSED)],
            close: AtomicU8::new(CLOSE_NONE),
            inner: Mutex::new(Inner {
                driver: Some(driver),
                pending: [None, None],
                armed: Interest::NONE,
                deadline: None,
                backoff: None,
                drained: false,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The side's state (PROCESSED, BUSY or COMPLETED).
    pub(crate) fn side_state(&self, side: Side) -> u8 {
        self.sides[side as usize].peek()
    }

    /// PROCESSED -> BUSY, with the lock held. False when the side is not PROCESSED.
    pub(crate) fn begin(&self, side: Side, _locked: &Inner) -> bool {
        self.sides[side as usize].compare_exchange(PROCESSED, BUSY, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// BUSY -> COMPLETED, with the lock held, just before the completion is queued.
    pub(crate) fn finish(&self, side: Side, _locked: &Inner) {
        self.sides[side as usize].store(COMPLETED, Ordering::Release);
    }

    /// COMPLETED -> PROCESSED, by the thread that took the completion. SeqCst: a Dekker pair
    /// with `close_pend` (see `Shared::deliver_close`).
    pub(crate) fn processed(&self, side: Side) {
        let _ = self.sides[side as usize].compare_exchange(COMPLETED, PROCESSED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The close state (CLOSE_NONE, CLOSE_PENDING or CLOSE_DONE).
    pub(crate) fn close_state(&self) -> u8 {
        self.close.peek()
    }

    /// Marks a close pending, with the lock held, after the stream was released.
    pub(crate) fn close_pend(&self) {
        self.close.set(CLOSE_PENDING);
    }

    /// Claims the delivery of the Close completion; true for exactly one caller.
    pub(crate) fn close_claim(&self) -> bool {
        self.close.compare_exchange(CLOSE_PENDING, CLOSE_DONE, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// A description for messages: "tcp stream 7 (fd 5)".
    pub(crate) fn describe(&self, inner: &Inner) -> String {
        match &inner.driver {
            Some(d) => format!("{} {} (fd {})", d.name(), self.label(), d.fd().as_raw_fd()),
            None => format!("stream {}", self.label()),
        }
    }

    /// How messages name this stream (see [`Label`]).
    pub(crate) fn label(&self) -> Label {
        Label { token: self.user_token, c: self.c_token }
    }
}

/// How messages name a stream: by its token ("stream 7"), or, on a port of the C API, whose
/// tokens are the callers' user pointers, by that pointer ("stream of user 0x1234"), so that
/// it is not taken for an fd or a handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Label {
    pub(crate) token: u64,
    pub(crate) c: bool,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.c, self.token) {
            (false, t) => write!(f, "{t}"),
            (true, 0) => f.write_str("of user NULL"),
            (true, t) => write!(f, "of user {t:#x}"),
        }
    }
}

impl Inner {
    /// What epoll should watch for, given the pending requests.
    pub(crate) fn interest(&self) -> Interest {
        Interest {
            readable: self.pending[Side::Read as usize].is_some() && self.backoff.is_none(),
            writable: self.pending[Side::Write as usize].is_some(),
        }
    }

    /// Runs the pending request of `side` as far as the driver lets it without blocking.
    /// `hangup` says epoll reported a hang-up or error: an I/O that would still block then
    /// ends as `Abandoned` rather than waiting for an event that will not come.
    pub(crate) fn step(&mut self, side: Side, hangup: bool) -> Step {
        let (Some(driver), Some(p)) = (self.driver.as_mut(), self.pending[side as usize].as_mut()) else {
            return Step::Pending;
        };
        let before = p.done;
        let mut step = run(driver.as_mut(), p);
        if hangup && matches!(step, Step::Pending) && p.done > before {
            // A short transfer stops before the call that would say EAGAIN; after a hang-up
            // that call says what is left instead (end of stream after the last bytes, EPIPE),
            // so make it rather than call the I/O abandoned.
            step = run(driver.as_mut(), p);
        }
        if side == Side::Read {
            // Drained: the last read came up short (or would block). The next read then waits
            // for readiness instead of trying a recv that would only say EAGAIN.
            self.drained = match (&step, &p.req.kind) {
                (Step::Pending, _) => true,
                (Step::Done(Status::Ok, _), Kind::Read { max, .. }) => p.done < *max,
                (Step::Done(Status::Ok, _), Kind::ReadVectored { bufs, .. }) => {
                    p.done < bufs.iter().map(|b| b.len()).sum()
                }
                _ => false,
            };
        }
        match step {
            Step::Pending if hangup => Step::Done(Status::Abandoned, None),
            s => s,
        }
    }
}

/// How a read that hit end of stream after `done` bytes ends: `Ok` only if it already had its
/// `min` and got something.
fn eof_status(done: usize, min: usize) -> Status {
    if done >= min && done > 0 {
        Status::Ok
    } else {
        Status::Eof
    }
}

fn io_status(e: &io::Error) -> Status {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            Status::Abandoned
        }
        _ => Status::Failed,
    }
}

fn report(extra: &mut Option<Box<Extra>>, done: usize) {
    if let Some(f) = extra.as_mut().and_then(|x| x.progress.as_mut()) {
        f(done);
    }
}

/// One driver call of a byte-stream request (read, write, vectored or not): its result, the
/// bytes it asked for, the total at which the request is done, and whether it is a read.
fn transfer(driver: &mut dyn Driver, kind: &mut Kind, done: usize) -> Option<(io::Result<usize>, usize, usize, bool)> {
    Some(match kind {
        Kind::Read { buf: Buf::Spare(v, _), min, max } => {
            (crate::buf::read_spare(driver, v, *max - done), *max - done, *min, true)
        }
        Kind::Read { buf, min, max } => (driver.read(&mut buf[done..*max]), *max - done, *min, true),
        Kind::ReadVectored { bufs, min } => {
            let asked = bufs.iter().map(|b| b.len()).sum::<usize>() - done;
            (driver.read_vectored(&mut slices_mut(bufs, done)), asked, *min, true)
        }
        Kind::Write { buf } => (driver.write(&buf[done..]), buf.len() - done, buf.len(), false),
        Kind::WriteVectored { bufs } => {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            (driver.write_vectored(&slices(bufs, done)), total - done, total, false)
        }
        _ => return None,
    })
}

/// One step of a request against a driver.
fn run(driver: &mut dyn Driver, p: &mut Pending) -> Step {
    let Pending { req, done, .. } = p;
    let Request { kind, extra: progress } = req;
    loop {
        let err: io::Error = if let Some((result, asked, finish_at, reading)) = transfer(driver, kind, *done) {
            match result {
                Ok(0) if reading => return Step::Done(eof_status(*done, finish_at), None),
                Ok(n) => {
                    *done += n;
                    if *done >= finish_at {
                        return Step::Done(Status::Ok, None);
                    }
                    report(progress, *done);
                    if n < asked {
                        // Short: the socket is drained (or its send buffer full). Wait for
                        // readiness instead of a speculative call that would say EAGAIN.
                        return Step::Pending;
                    }
                    continue;
                }
                Err(e) => e,
            }
        } else {
            match kind {
                Kind::Accept => match driver.accept() {
                    Ok((d, addr)) => return Step::Accepted(d, addr),
                    // The connection died in the backlog: try the next one.
                    Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                    Err(e) => e,
                },
                Kind::Signal { signo } => {
                    let mut record = [0u8; crate::sys::signals::SIGINFO];
                    match driver.read(&mut record) {
                        Ok(n) if n == record.len() => {
                            *signo = crate::sys::signals::signo(&record);
                            return Step::Done(Status::Ok, None);
                        }
                        Ok(n) => io::Error::new(io::ErrorKind::InvalidData, format!("a signal record of {n} bytes")),
                        Err(e) => e,
                    }
                }
                Kind::Connect { to: Some(to) } => match connect(driver, to) {
                    Ok(()) => return Step::Done(Status::Ok, None),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                        // Started: it is done when the socket becomes writable.
                        if let Kind::Connect { to } = kind {
                            *to = None;
                        }
                        return Step::Pending;
                    }
                    // Not "in progress": a Unix socket's full backlog (EAGAIN) is a failure.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Step::Done(Status::Failed, Some(e));
                    }
                    Err(e) => e,
                },
                Kind::Connect { to: None } => match driver.finish_connect() {
                    Ok(()) => return Step::Done(Status::Ok, None),
                    Err(e) => e,
                },
                Kind::RecvFrom { buf } => match driver.recv_from(buf) {
                    Ok((n, addr)) => {
                        *done = n;
                        return Step::Received(addr);
                    }
                    Err(e) => e,
                },
                Kind::SendTo { buf, addr } => match driver.send_to(buf, *addr) {
                    Ok(n) => {
                        *done = n;
                        return Step::Done(Status::Ok, None);
                    }
                    Err(e) => e,
                },
                Kind::Read { .. } | Kind::ReadVectored { .. } | Kind::Write { .. } | Kind::WriteVectored { .. } => {
                    unreachable!("byte-stream requests go through `transfer`")
                }
            }
        };
        match err.kind() {
            io::ErrorKind::WouldBlock if matches!(kind, Kind::Read { min: 0, .. }) => {
                return Step::Done(Status::Ok, None)
            }
            io::ErrorKind::WouldBlock => return Step::Pending,
            io::ErrorKind::Interrupted => continue,
            _ => return Step::Done(io_status(&err), Some(err)),
        }
    }
}

/// Starts a `Request::connect` (a bad path never gets here: `validate` refuses it).
fn connect(driver: &mut dyn Driver, to: &ConnectTo) -> io::Result<()> {
    match to {
        ConnectTo::Addr(addr) => {
            // A socket connected already (by an earlier connect, whose completion may have
            // been a timeout or a cancel) is refused as such: the kernel would answer the
            // first `connect` after a nonblocking one finished with success, whatever the
            // address.
            if socket2::SockRef::from(&driver.fd()).peer_addr().is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EISCONN));
            }
            driver.connect(addr)
        }
        ConnectTo::BadPath => Err(io::Error::new(io::ErrorKind::InvalidInput, "connect_unix: bad path")),
    }
}

/// The unfilled parts of `bufs`, skipping the first `skip` bytes.
fn slices_mut(bufs: &mut [Buf], mut skip: usize) -> Vec<IoSliceMut<'_>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs.iter_mut() {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(IoSliceMut::new(&mut b[skip..]));
        skip = 0;
    }
    out
}

/// The unsent parts of `bufs`, skipping the first `skip` bytes.
fn slices(bufs: &[Buf], mut skip: usize) -> Vec<IoSlice<'_>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(IoSlice::new(&b[skip..]));
        skip = 0;
    }
    out
}

/// Builds the completion of a finished request.
pub(crate) fn completion(isb: Isb, op: Op, pending: Pending, status: Status, error: Option<Error>) -> Completion {
    let token = isb.stream.user_token;
    let mut c = Completion::new(token, Some(isb), op, status);
    c.bytes = pending.done;
    if op == Op::Accept && matches!(status, Status::Ok | Status::Failed) {
        // The accepts of `accept_many` still to come: the next starts when this is taken.
        // An accept ended by cancel, close, a timeout or a hang-up ends the series.
        c.value = pending.req.extra.as_ref().map_or(0, |x| x.more_accepts) as u64;
    }
    if error.is_some() {
        c.extra().error = error;
    }
    match pending.req.kind {
        Kind::Read { buf, .. } | Kind::Write { buf } | Kind::RecvFrom { buf } | Kind::SendTo { buf, .. } => {
            c.buf = Some(buf)
        }
        Kind::ReadVectored { bufs, .. } | Kind::WriteVectored { bufs } => c.extra().bufs = bufs,
        Kind::Signal { signo } => c.value = u64::from(signo),
        Kind::Accept | Kind::Connect { .. } => {}
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_skip_across_buffers() {
        let bufs: Vec<Buf> = vec![vec![1u8; 3].into(), vec![2u8; 2].into(), vec![3u8; 4].into()];
        let s = slices(&bufs, 4);
        assert_eq!(s.len(), 2);
        assert_eq!(&*s[0], &[2u8][..]);
        assert_eq!(s[1].len(), 4);
        assert!(slices(&bufs, 9).is_empty());
    }

    /// A scripted driver: each call returns the next scripted result. (It owns an fd only
    /// because every driver has one; nothing waits on it.)
    struct Script {
        reads: Vec<io::Result<usize>>,
        null: std::fs::File,
    }

    impl Driver for Script {
        fn name(&self) -> &'static str {
            "script"
        }
        fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
            std::os::fd::AsFd::as_fd(&self.null)
        }
        fn supports(&self, _: Op) -> bool {
            true
        }
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let r = self.reads.remove(0);
            if let Ok(n) = r {
                buf[..n].fill(7);
            }
            r
        }
    }

    fn pending(req: Request) -> Pending {
        Pending::new(req)
    }

    #[test]
    fn read_waits_for_min_and_reports_progress() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut p = pending(Request::read(vec![0; 10], 4..=10).on_progress(move |n| s2.lock().unwrap().push(n)));
        let mut d = Script {
            null: std::fs::File::open("/dev/null").unwrap(),
            reads: vec![Ok(1), Err(io::ErrorKind::WouldBlock.into()), Ok(2), Ok(3)],
        };
        assert!(matches!(run(&mut d, &mut p), Step::Pending));
        assert_eq!(p.done, 1);
        assert!(matches!(run(&mut d, &mut p), Step::Pending), "would block");
        assert!(matches!(run(&mut d, &mut p), Step::Pending), "a short read of 2 drains: no speculative read");
        assert!(matches!(run(&mut d, &mut p), Step::Done(Status::Ok, None)));
        assert_eq!(p.done, 6);
        assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
    }

    #[test]
    fn read_eof_before_min_is_eof() {
        let mut p = pending(Request::read(vec![0; 10], 5..=10));
        let mut d = Script { null: std::fs::File::open("/dev/null").unwrap(), reads: vec![Ok(2), Ok(0)] };
        assert!(matches!(run(&mut d, &mut p), Step::Pending));
        assert!(matches!(run(&mut d, &mut p), Step::Done(Status::Eof, None)));
        assert_eq!(p.done, 2);
    }

    #[test]
    fn reset_is_abandoned_and_other_errors_fail() {
        let mut p = pending(Request::read_some(vec![0; 4]));
        let mut d = Script {
            null: std::fs::File::open("/dev/null").unwrap(),
            reads: vec![
                Err(io::Error::from_raw_os_error(libc::ECONNRESET)),
                Err(io::Error::from_raw_os_error(libc::EIO)),
            ],
        };
        assert!(matches!(run(&mut d, &mut p), Step::Done(Status::Abandoned, Some(_))));
        assert!(matches!(run(&mut d, &mut p), Step::Done(Status::Failed, Some(_))));
    }
}
