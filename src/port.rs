//! [`Port`]: the counted handle, its builder, and every call a program makes on it.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::completion::{Completion, Status};
use crate::driver::{self, Driver};
use crate::error::{Error, ErrorKind, Result, StartError};
use crate::isb::{self, Inner, Isb, Pending, Step, Stream};
use crate::queue::Queue;
use crate::request::{Kind, Op, Request, Side};
use crate::sleep::{Sleep, Wake};
use crate::sync::{fence, lock, spin_hint, thread, Arc, AtomicU8, AtomicUsize, Mutex, Ordering, RwLock};
use crate::sys::socket::{self, Connecting};
use crate::sys::{Events, Interest, Selector, POKE_TOKEN, STOP_TOKEN, TIMER_TOKEN};
use crate::timer::{TimerId, Wheel};
use crate::token::{Slab, Token};
use crate::worker;

/// The port accepts new I/O.
const OPEN: u8 = 0;
/// `shutdown` began: new I/O is refused, pending I/O is being cancelled.
const CLOSING: u8 = 1;
/// Every completion the port will ever produce is queued; waiters that find the queue empty
/// return `PortClosed`.
const CLOSED: u8 = 2;

/// The most worker threads a port may have.
pub const MAX_THREADS: usize = 1024;

/// The bit of `Shared::posting` that refuses new posts.
const GATE_CLOSED: usize = 1 << (usize::BITS - 1);

/// How long a listener rests after accept failed for lack of fds (EMFILE, ENFILE) before it
/// tries again: the error is reported once per rest, never in a spin.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Tries of the queue before a waiter parks: a completion often arrives within a few hundred
/// nanoseconds, much less than the cost of parking and being woken.
/// (One under loom, where every try is a scheduling point the model checker must explore.)
const SPIN_TRIES: u32 = if cfg!(loom) { 1 } else { 256 };

/// Which timer of a stream fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// The deadline of `set_timeout`.
    Deadline,
    /// The accept back-off after EMFILE/ENFILE.
    Backoff,
}

/// What the timer wheel carries: the stream, which timer, and that timer's sequence number
/// (so a timer replaced after it fired but before it was handled is recognised as stale).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimerKey {
    token: Token,
    kind: TimerKind,
    seq: u32,
}

/// The timer wheel and what the timerfd is programmed for.
pub(crate) struct Timers {
    wheel: Wheel<TimerKey>,
    programmed: Option<Instant>,
    seq: u32,
}

/// The state every handle and worker shares.
pub(crate) struct Shared {
    pub(crate) selector: Selector,
    queue: Queue<Completion>,
    sleep: Sleep,
    streams: RwLock<Slab<Arc<Stream>>>,
    timers: Mutex<Timers>,
    /// Live `Port` handles (the reference count of seed 003).
    handles: AtomicUsize,
    /// OPEN, CLOSING or CLOSED.
    state: AtomicU8,
    /// The post gate: the number of `post` calls between their check and their push, plus
    /// `GATE_CLOSED` once shutdown began. One word, so post and shutdown need no Dekker pair.
    posting: AtomicUsize,
    workers: Mutex<Vec<thread::JoinHandle<()>>>,
    threads: usize,
    /// No workers (`threads(0)`): the threads in `next_completion` wait in `epoll_wait`
    /// themselves (see ARCHITECTURE.md, "Polling waiters").
    polling: bool,
    /// Threads in, or about to enter, `epoll_wait` in `next_completion`: a completion pushed
    /// now must poke one of them.
    pollers: AtomicUsize,
    /// Event buffers of polling waiters, reused.
    event_bufs: Mutex<Vec<Events>>,
}

/// Where the completion of a finished request goes.
pub(crate) enum Deliver<'a> {
    /// Into the queue, waking a waiter.
    Queue,
    /// Into the queue without waking anyone: a polling waiter dispatching events takes one of
    /// them itself and, leaving `next_completion`, pokes another for the rest.
    Quiet,
    /// Back to the caller of `start_io_inline`, not queued (the first one; any other goes to
    /// the queue).
    Hand(&'a mut Option<Completion>),
}

/// An I/O completion port: one epoll instance, worker threads that do the I/O, and a queue of
/// completions that any number of threads take with [`Port::next_completion`].
///
/// `Port` is a counted handle: [`Clone`] (or [`Port::inc_ref`]) adds a reference, dropping
/// (or [`Port::dec_ref`]) removes one. When the last handle goes, the port shuts down, wakes
/// and joins its workers, deassigns every stream (closing their fds), drops every completion
/// still queued (freeing its buffers) and closes the epoll instance. Dropping the last handle
/// never hangs on pending I/O: it is cancelled.
///
/// A `Port` is `Send + Sync`; every method can be called from any thread at any time,
/// including while other threads wait in `next_completion`.
///
/// # Examples
///
/// ```
/// use cport::{Port, Request, Status};
/// use std::os::unix::net::UnixStream;
///
/// let port = Port::builder().threads(2).build()?;
/// let (a, mut b) = UnixStream::pair()?;
/// let isb = port.assign(cport::driver::UnixStream::new(a), 42)?;
/// port.start_io(&isb, Request::read_some(vec![0; 64]))?;
/// std::io::Write::write_all(&mut b, b"hello")?;
/// let done = port.next_completion(None)?.expect("no timeout was given");
/// assert_eq!((done.token(), done.status(), done.data()), (42, Status::Ok, &b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Port {
    shared: Arc<Shared>,
}

/// Configures a [`Port`].
#[derive(Clone, Debug, Default)]
pub struct Builder {
    threads: Option<usize>,
}

impl Builder {
    /// Number of worker threads waiting on epoll. Default: the number of CPUs.
    ///
    /// `0` means no workers: the threads in `next_completion` drive the I/O themselves, one of
    /// them at a time waiting on epoll, like a progress engine. It saves a thread hop per
    /// completion, but I/O then moves only while some thread is in `next_completion`.
    pub fn threads(mut self, n: usize) -> Builder {
        self.threads = Some(n);
        self
    }

    /// Creates the port and starts its workers.
    ///
    /// # Errors
    /// `InvalidInput` for more than `MAX_THREADS` threads; `Os` when epoll, an eventfd, the
    /// timerfd or a thread cannot be created.
    pub fn build(self) -> Result<Port> {
        let threads = match self.threads {
            Some(n) if n > MAX_THREADS => {
                return Err(Error::invalid(format!("{n} worker threads is more than the limit of {MAX_THREADS}")))
            }
            Some(n) => n,
            None => thread_count(),
        };
        let selector = Selector::new().map_err(|e| Error::from_io(&e, "creating the epoll selector"))?;
        let shared = Arc::new(Shared {
            selector,
            queue: Queue::new(),
            sleep: Sleep::new(),
            streams: RwLock::new(Slab::new()),
            timers: Mutex::new(Timers { wheel: Wheel::new(Instant::now()), programmed: None, seq: 0 }),
            handles: AtomicUsize::new(1),
            state: AtomicU8::new(OPEN),
            posting: AtomicUsize::new(0),
            workers: Mutex::new(Vec::with_capacity(threads)),
            threads,
            polling: threads == 0,
            pollers: AtomicUsize::new(0),
            event_bufs: Mutex::new(Vec::new()),
        });
        let port = Port { shared };
        for i in 0..threads {
            let s = port.shared.clone();
            let spawned = thread::Builder::new().name(format!("cport-worker-{i}")).spawn(move || worker::run(&s));
            match spawned {
                Ok(h) => lock(&port.shared.workers).push(h),
                // Dropping `port` tears down the workers already started.
                Err(e) => return Err(Error::from_io(&e, format!("spawning worker thread {i}"))),
            }
        }
        Ok(port)
    }
}

#[cfg(not(loom))]
fn thread_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(loom)]
fn thread_count() -> usize {
    1
}

impl Port {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A port with the default settings.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> Result<Port> {
        Port::builder().build()
    }

    /// Adds a reference: the same as `clone`.
    pub fn inc_ref(&self) -> Port {
        self.clone()
    }

    /// Removes a reference: the same as `drop`. The last one tears the port down.
    pub fn dec_ref(self) {
        drop(self)
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Number of assigned streams.
    pub fn streams(&self) -> usize {
        read_slab(&self.shared.streams).len()
    }

    /// Attaches `driver`'s stream to the port. `token` comes back in every completion of the
    /// stream.
    ///
    /// # Errors
    /// `InvalidInput` if the driver refuses the fd (a pipe given to a socket driver, a socket
    /// of the wrong kind) or epoll cannot watch it (a regular file, an fd already assigned);
    /// `PortClosed` after shutdown.
    pub fn assign(&self, driver: impl Driver, token: u64) -> Result<Isb> {
        self.assign_boxed(Box::new(driver), token)
    }

    /// [`Port::assign`] for a boxed driver, such as the one an accept completion carries.
    ///
    /// # Errors
    /// As [`Port::assign`].
    pub fn assign_boxed(&self, mut driver: Box<dyn Driver>, token: u64) -> Result<Isb> {
        let name = driver.name();
        // A driver refusing the fd (not a socket, the wrong kind) says `InvalidInput`, which
        // `from_io` keeps as bad input rather than an OS failure.
        driver.attach().map_err(|e| Error::from_io(&e, format!("assign {name} {token}")))?;
        let fd = driver.fd();
        if fd < 0 {
            return Err(Error::invalid(format!("assign {name} {token}: the driver has no fd ({fd})")));
        }
        let key = self.shared.key();
        let stream = {
            let mut slab = write_slab(&self.shared.streams);
            if self.shared.state.load(Ordering::SeqCst) != OPEN {
                drop(slab);
                driver.detach();
                return Err(Error::closed());
            }
            let t = slab.insert_with(|t| Arc::new(Stream::new(key, t, token, driver)));
            slab.get(t).expect("just inserted")
        };
        if let Err(e) = self.shared.selector.register(fd, stream.token.to_u64()) {
            let mut inner = stream.lock();
            if let Some(mut d) = inner.driver.take() {
                d.detach();
            }
            drop(inner);
            write_slab(&self.shared.streams).remove(stream.token);
            let why = match e.raw_os_error() {
                Some(libc::EEXIST) => "the fd is already assigned to this port".to_string(),
                Some(libc::EPERM) => "epoll cannot watch this kind of fd (a regular file or directory?)".to_string(),
                _ => e.to_string(),
            };
            return Err(Error::new(ErrorKind::InvalidInput, format!("assign {name} {token} (fd {fd}): {why}")));
        }
        Ok(Isb { stream })
    }

    /// Opens a nonblocking TCP connection to `addr` and assigns it. The connect completes
    /// (as `Op::Connect` on the returned ISB) once the connection is up or has failed; a
    /// refused connection is a `Failed` completion whose error kind is
    /// `Os(ConnectionRefused)`.
    ///
    /// # Errors
    /// `Os` if no socket can be created; `PortClosed` once shutdown has begun (also when it
    /// begins during the call: the socket is closed and nothing is queued).
    pub fn connect(&self, addr: SocketAddr, token: u64) -> Result<Isb> {
        let c = socket::connect_tcp(addr).map_err(|e| Error::from_io(&e, format!("connect to {addr}")))?;
        self.start_connect(c, |fd| Box::new(driver::TcpStream::known(fd)), token)
    }

    /// [`Port::connect`] for a Unix-domain stream socket at `path`.
    ///
    /// # Errors
    /// `InvalidInput` for a path that is empty, too long or holds a NUL byte; otherwise as
    /// [`Port::connect`].
    pub fn connect_unix(&self, path: impl AsRef<Path>, token: u64) -> Result<Isb> {
        let path = path.as_ref();
        let c = socket::connect_unix(path).map_err(|e| Error::from_io(&e, format!("connect to {}", path.display())))?;
        self.start_connect(c, |fd| Box::new(driver::UnixStream::known(fd)), token)
    }

    /// [`Port::connect`] from a local port in `range` (see [`PortRange`](crate::net::PortRange)):
    /// the socket is bound to the first port of the range that is free, on the unspecified
    /// address of `addr`'s family (so the kernel still picks the source address), before the
    /// nonblocking connect starts. Use it where a firewall admits only some ports. The connect
    /// completes as for [`Port::connect`].
    ///
    /// # Errors
    /// `Os(AddrInUse)`, with a message naming the range, when every port of `range` is in use;
    /// `Os` for any other failure to create or bind the socket; `PortClosed` as for
    /// [`Port::connect`].
    pub fn connect_in_range(&self, addr: SocketAddr, range: &crate::net::PortRange, token: u64) -> Result<Isb> {
        let c = socket::connect_tcp_from(addr, range.first(), range.last())
            .map_err(|e| Error::from_io(&e, format!("connect to {addr} from a local port in {range}")))?;
        self.start_connect(c, |fd| Box::new(driver::TcpStream::known(fd)), token)
    }

    fn start_connect(
        &self,
        c: Connecting,
        wrap: impl FnOnce(std::os::fd::OwnedFd) -> Box<dyn Driver>,
        token: u64,
    ) -> Result<Isb> {
        let (fd, outcome) = match c {
            Connecting::Done(fd) => (fd, Some(Ok(()))),
            Connecting::InProgress(fd) => (fd, None),
            Connecting::Failed(fd, e) => (fd, Some(Err(e))),
        };
        let isb = self.assign_boxed(wrap(fd), token)?;
        let stream = &isb.stream;
        let mut inner = stream.lock();
        #[cfg(loom)]
        let check = !crate::sync::planted("connect_unchecked");
        #[cfg(not(loom))]
        let check = true;
        // Planted bug `connect_unchecked`: start the connect without looking at the state again.
        if check && self.shared.state.load(Ordering::SeqCst) != OPEN {
            // Shutdown began after the assign, and its cancel pass may be past this stream: a
            // connect started now could complete after `PortClosed`. Refuse it as `assign`
            // would have (see ARCHITECTURE.md, "Shutdown", step 1); nobody has the ISB yet.
            drop(inner);
            let _ = self.shared.release(stream, false);
            return Err(Error::closed());
        }
        if !stream.begin(Side::Write, &inner) {
            return Err(Error::new(ErrorKind::Busy, "connect on a busy stream"));
        }
        inner.pending[Side::Write as usize] =
            Some(Box::new(Pending { req: Request { kind: Kind::Connect, progress: None }, done: 0 }));
        match outcome {
            Some(Ok(())) => self.shared.finish(stream, &mut inner, Side::Write, Status::Ok, None, &mut Deliver::Queue),
            Some(Err(e)) => {
                let status =
                    if e.kind() == std::io::ErrorKind::ConnectionReset { Status::Abandoned } else { Status::Failed };
                self.shared.finish(stream, &mut inner, Side::Write, status, Some(e), &mut Deliver::Queue)
            }
            None => self.shared.rearm(stream, &mut inner, &mut Deliver::Queue),
        }
        drop(inner);
        Ok(isb)
    }

    /// Starts `req` on `isb`'s stream. Exactly one completion follows, whatever happens next
    /// (success, error, peer hang-up, cancel, close, timeout, deassign, shutdown).
    ///
    /// An I/O that can finish at once (data already buffered, room in the send buffer) does
    /// so here, without waiting for epoll; its completion still goes through the queue.
    ///
    /// # Errors
    /// The request comes back inside the [`StartError`], with its buffers:
    /// `InvalidInput` for bad arguments, an operation the driver does not support, or an ISB
    /// of another port; `NotAssigned` for a deassigned or closed stream; `Busy` when the side
    /// (read or write) already has an I/O or an untaken completion; `PortClosed` after
    /// shutdown.
    pub fn start_io(&self, isb: &Isb, req: Request) -> std::result::Result<(), StartError> {
        self.start(isb, req, &mut Deliver::Queue)
    }

    fn start(&self, isb: &Isb, req: Request, how: &mut Deliver<'_>) -> std::result::Result<(), StartError> {
        let stream = &isb.stream;
        let token = stream.user_token;
        if stream.port_key != self.shared.key() {
            return Err(StartError::new(
                Error::invalid(format!("{} on stream {token}: the ISB belongs to another port", req.op())),
                req,
            ));
        }
        if let Err(why) = req.validate() {
            return Err(StartError::new(Error::invalid(format!("{why} (stream {token})")), req));
        }
        let op = req.op();
        let Some(side) = op.side().filter(|_| op != Op::Connect) else {
            return Err(StartError::new(Error::invalid(format!("{op} cannot be started with start_io")), req));
        };
        let mut inner = stream.lock();
        let Some(driver) = inner.driver.as_ref() else {
            return Err(StartError::new(not_assigned(op, token), req));
        };
        if self.shared.state.load(Ordering::SeqCst) != OPEN {
            return Err(StartError::new(Error::closed(), req));
        }
        if !driver.supports(op) {
            let e = Error::invalid(format!("{op} on {}: the driver does not support it", stream.describe(&inner)));
            return Err(StartError::new(e, req));
        }
        if !stream.begin(side, &inner) {
            let what = if stream.side_state(side) == isb::BUSY {
                "has an I/O in progress"
            } else {
                "has a completion not yet taken"
            };
            let side_name = if side == Side::Read { "read" } else { "write" };
            let e = Error::new(
                ErrorKind::Busy,
                format!("{op} on {}: the {side_name} side {what}", stream.describe(&inner)),
            );
            return Err(StartError::new(e, req));
        }
        let poll_read = matches!(req.kind, Kind::Read { min: 0, .. });
        inner.pending[side as usize] = Some(Box::new(Pending { req, done: 0 }));
        // Try the I/O at once unless it cannot succeed: an accept resting after EMFILE, or a
        // read on a stream the last read drained (readiness will tell when data is there).
        let skip = match op {
            Op::Accept => inner.backoff.is_some(),
            Op::Read | Op::ReadVectored => inner.drained && !poll_read,
            _ => false,
        };
        if !skip {
            self.shared.advance(stream, &mut inner, side, false, how);
        }
        self.shared.rearm(stream, &mut inner, &mut Deliver::Queue);
        Ok(())
    }

    /// Like [`Port::start_io`], but an I/O that finishes at once is not queued: its completion
    /// comes back here (`Ok(Some)`), and no thread is woken for it (IOCP's "skip completion
    /// port on success"). `Ok(None)`: the I/O is pending and its completion will come through
    /// `next_completion` as usual. A thread that handles a completion and starts the next I/O
    /// on the same stream (an echo's write) saves a queue trip and a wake-up this way.
    ///
    /// # Errors
    /// As [`Port::start_io`].
    pub fn start_io_inline(&self, isb: &Isb, req: Request) -> std::result::Result<Option<Completion>, StartError> {
        let mut done = None;
        self.start(isb, req, &mut Deliver::Hand(&mut done))?;
        Ok(done)
    }

    /// Starts a read of `min..=max` bytes: [`Request::read`].
    ///
    /// # Errors
    /// As [`Port::start_io`].
    pub fn read(
        &self,
        isb: &Isb,
        buf: Vec<u8>,
        range: std::ops::RangeInclusive<usize>,
    ) -> std::result::Result<(), StartError> {
        self.start_io(isb, Request::read(buf, range))
    }

    /// Starts a write of the whole buffer: [`Request::write`].
    ///
    /// # Errors
    /// As [`Port::start_io`].
    pub fn write(&self, isb: &Isb, buf: Vec<u8>) -> std::result::Result<(), StartError> {
        self.start_io(isb, Request::write(buf))
    }

    /// Starts an accept: [`Request::accept`].
    ///
    /// # Errors
    /// As [`Port::start_io`].
    pub fn accept(&self, isb: &Isb) -> std::result::Result<(), StartError> {
        self.start_io(isb, Request::accept())
    }

    /// Cancels the I/O pending on `isb` (both sides). Each cancelled I/O still queues exactly
    /// one completion, with status `Cancelled`; an I/O that had already finished keeps its
    /// own completion. Returns how many I/Os were cancelled.
    ///
    /// After [`Port::shutdown`] it still works and returns 0: shutdown cancelled everything
    /// (or, while it runs, whichever of the two gets the stream first ends the I/O, and its
    /// completion still comes before `PortClosed`).
    ///
    /// # Errors
    /// `InvalidInput` for an ISB of another port, `NotAssigned` for a deassigned one.
    pub fn cancel(&self, isb: &Isb) -> Result<usize> {
        let stream = self.own(isb, Op::Read)?;
        #[cfg(loom)]
        if crate::sync::planted("cancel_toctou") {
            // Planted bug: count what to cancel from the side states before taking the lock; by
            // the time the lock is held the count may be stale (an I/O finished meanwhile).
            let busy = [Side::Read, Side::Write].into_iter().filter(|s| stream.side_state(*s) == isb::BUSY).count();
            let mut inner = stream.lock();
            self.shared.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue);
            return Ok(busy);
        }
        let mut inner = stream.lock();
        if inner.driver.is_none() {
            return Err(Error::new(
                ErrorKind::NotAssigned,
                format!("cancel on stream {}: not assigned", stream.user_token),
            ));
        }
        Ok(self.shared.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue))
    }

    /// Sets the stream's deadline: I/O still pending `after` from now ends as `TimedOut`.
    /// `None` clears the deadline. The deadline fires once; set it again for the next I/O.
    ///
    /// # Errors
    /// `InvalidInput` for an ISB of another port, `NotAssigned` for a deassigned one,
    /// `PortClosed` once shutdown has begun (nothing is left to time out).
    pub fn set_timeout(&self, isb: &Isb, after: Option<Duration>) -> Result<()> {
        let stream = self.own(isb, Op::Read)?;
        let mut inner = stream.lock();
        if inner.driver.is_none() {
            return Err(Error::new(
                ErrorKind::NotAssigned,
                format!("set_timeout on stream {}: not assigned", stream.user_token),
            ));
        }
        if self.shared.state.load(Ordering::SeqCst) != OPEN {
            return Err(Error::new(
                ErrorKind::PortClosed,
                format!("set_timeout on stream {}: the port was shut down", stream.user_token),
            ));
        }
        if let Some((id, _)) = inner.deadline.take() {
            self.shared.disarm_timer(id);
        }
        if let Some(after) = after {
            let deadline = Instant::now()
                .checked_add(after)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(u32::MAX.into()));
            inner.deadline = Some(self.shared.arm_timer(deadline, stream.token, TimerKind::Deadline));
        }
        Ok(())
    }

    /// Detaches the stream: its pending I/O completes as `Cancelled` (buffers come back),
    /// then the driver is detached and dropped (closing the fd) and the ISB becomes invalid.
    /// No completion of the stream is queued after this returns, even if the fd number is
    /// reused at once by a new stream. It works after [`Port::shutdown`] too: that is how a
    /// stream is released before the last handle goes (it queues nothing then).
    ///
    /// # Errors
    /// `InvalidInput` for an ISB of another port, `NotAssigned` if already deassigned.
    pub fn deassign(&self, isb: &Isb) -> Result<()> {
        let stream = self.own(isb, Op::Close)?;
        self.shared.release(stream, false)
    }

    /// Shuts down the sending direction of a socket stream (`shutdown(SHUT_WR)`): the peer
    /// reads end of stream after the bytes already sent, and reads on this side go on. A server
    /// does this before it closes a connection whose peer may still be sending, so that the
    /// kernel does not answer unread data with a reset that destroys replies in flight.
    ///
    /// # Errors
    /// `Busy` while a write is pending on the stream; `NotAssigned` for a closed stream;
    /// `InvalidInput` for an ISB of another port; `Os` for a stream that is not a socket.
    pub fn shutdown_write(&self, isb: &Isb) -> Result<()> {
        let stream = self.own(isb, Op::Write)?;
        let inner = stream.lock();
        let Some(driver) = inner.driver.as_ref() else {
            return Err(not_assigned(Op::Write, stream.user_token));
        };
        if stream.side_state(Side::Write) == isb::BUSY {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("shutdown_write on {}: a write is in progress", stream.describe(&inner)),
            ));
        }
        socket::shutdown_write(driver.fd())
            .map_err(|e| Error::from_io(&e, format!("shutdown_write on {}", stream.describe(&inner))))
    }

    /// Closes the stream: pending reads and writes complete as `Cancelled`, then the fd is
    /// closed and an `Op::Close` completion with status `Ok` is queued, the stream's last.
    /// The ISB is then invalid, as after [`Port::deassign`].
    ///
    /// # Errors
    /// `InvalidInput` for an ISB of another port, `NotAssigned` if already closed.
    /// `PortClosed` once shutdown has begun: its completion would come after `PortClosed`, so
    /// nothing is done; [`Port::deassign`] (or dropping the last handle) releases the stream.
    pub fn close(&self, isb: &Isb) -> Result<()> {
        let stream = self.own(isb, Op::Close)?;
        self.shared.release(stream, true)
    }

    fn own<'a>(&self, isb: &'a Isb, op: Op) -> Result<&'a Arc<Stream>> {
        if isb.stream.port_key != self.shared.key() {
            return Err(Error::invalid(format!(
                "{op} on stream {}: the ISB belongs to another port",
                isb.stream.user_token
            )));
        }
        Ok(&isb.stream)
    }

    /// Queues a user completion (`Op::Post`, status `Ok`) carrying `token` and `value`
    /// (IOCP's `PostQueuedCompletionStatus`).
    ///
    /// # Errors
    /// `PortClosed` after shutdown: then nothing was queued.
    pub fn post(&self, token: u64, value: u64) -> Result<()> {
        let s = &self.shared;
        #[cfg(loom)]
        if crate::sync::planted("post_unguarded") {
            // Planted bug: check the state and push without telling shutdown a post is under way.
            if s.state.load(Ordering::SeqCst) != OPEN {
                return Err(Error::closed());
            }
            let mut c = Completion::new(token, None, Op::Post, Status::Ok);
            c.value = value;
            s.push(c);
            return Ok(());
        }
        // Enter the gate unless shutdown closed it (see ARCHITECTURE.md, "Shutdown", step 2).
        let mut cur = s.posting.load(Ordering::Acquire);
        loop {
            if cur & GATE_CLOSED != 0 {
                return Err(Error::closed());
            }
            match s.posting.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let mut c = Completion::new(token, None, Op::Post, Status::Ok);
        c.value = value;
        s.push(c);
        s.posting.fetch_sub(1, Ordering::Release);
        Ok(())
    }

    /// Waits for the next completion, at most `timeout` (`None`: no limit).
    ///
    /// Returns `Ok(None)` when the timeout passed or [`Port::wakeup`] woke this thread. Any
    /// number of threads may wait at once; each completion goes to exactly one of them, in
    /// the order completions were queued.
    ///
    /// # Errors
    /// `PortClosed` once the port is shut down and every completion has been taken.
    pub fn next_completion(&self, timeout: Option<Duration>) -> Result<Option<Completion>> {
        let got = self.wait_next(timeout);
        // Hand on what is left. This thread takes one thing (a completion or a wakeup), but the
        // wake-up that brought it here may have been meant for others too: a poke read by one
        // polling waiter, or completions pushed while this thread spun (their producers woke
        // nobody). So if more is left, wake the next waiter; it does the same in turn.
        #[cfg(loom)]
        let hand_on = !crate::sync::planted("no_hand_on");
        #[cfg(not(loom))]
        let hand_on = true;
        let s = &self.shared;
        if hand_on && (!s.queue.is_empty() || (s.polling && s.sleep.wakeups_pending() > 0)) {
            if s.polling {
                s.poke();
            } else {
                s.sleep.notify_one();
            }
        }
        got
    }

    fn wait_next(&self, timeout: Option<Duration>) -> Result<Option<Completion>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let s = &self.shared;
        loop {
            if let Some(c) = s.take() {
                return Ok(Some(c));
            }
            if s.state.load(Ordering::SeqCst) == CLOSED {
                // A completion may have been queued between the take and the state check.
                return s.take().map(Some).ok_or_else(Error::closed);
            }
            let trying = timeout == Some(Duration::ZERO);
            // A try does not wait, so it does not spin either; nor does a polling waiter (its
            // completions come from its own epoll_wait, and others poke it; ARCHITECTURE.md).
            if !trying && !s.polling && s.sleep.try_spin() {
                for _ in 0..SPIN_TRIES {
                    spin_hint();
                    if !s.queue.is_empty() {
                        break;
                    }
                }
                let got = s.take();
                s.sleep.end_spin();
                if let Some(c) = got {
                    return Ok(Some(c));
                }
            }
            if trying || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(s.take());
            }
            if s.polling {
                if s.sleep.take_wakeup() {
                    return Ok(None);
                }
                s.poll(deadline);
                continue;
            }
            let ready = || !s.queue.is_empty() || s.state.load(Ordering::SeqCst) == CLOSED;
            match s.sleep.park(ready, deadline) {
                Wake::Ready => continue,
                Wake::Wakeup => return Ok(None),
                Wake::TimedOut => return Ok(s.take()),
            }
        }
    }

    /// Takes a completion if one is queued, without waiting.
    ///
    /// # Errors
    /// As [`Port::next_completion`].
    pub fn try_next_completion(&self) -> Result<Option<Completion>> {
        self.next_completion(Some(Duration::ZERO))
    }

    /// Waits like [`Port::next_completion`] for the first completion, then takes up to `max`
    /// in all without waiting again, appending them to `out` and leaving the rest for other
    /// threads (GetQueuedCompletionStatusEx). Returns how many were appended (0 on timeout or
    /// wakeup).
    ///
    /// # Errors
    /// `InvalidInput` for `max == 0`; otherwise as [`Port::next_completion`].
    pub fn next_completions(&self, out: &mut Vec<Completion>, max: usize, timeout: Option<Duration>) -> Result<usize> {
        if max == 0 {
            return Err(Error::invalid("next_completions with max 0"));
        }
        let Some(first) = self.next_completion(timeout)? else {
            return Ok(0);
        };
        out.push(first);
        let mut n = 1;
        while n < max {
            match self.shared.take() {
                Some(c) => out.push(c),
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }

    /// Makes one thread blocked in `next_completion` return `Ok(None)` at once; with none
    /// blocked, the next one that would block returns at once instead (seed 004's wakeup).
    pub fn wakeup(&self) {
        if !self.shared.sleep.wakeup() {
            self.shared.poke();
        }
    }

    /// Shuts the port down: new I/O, assigns and posts are refused with `PortClosed`, every
    /// pending I/O completes as `Cancelled`, and waiters drain the queued completions; after
    /// the last one, `next_completion` returns `PortClosed`, and no completion is ever queued
    /// after that. Streams stay assigned until deassigned or the last handle is dropped.
    /// Calling it again does nothing. What every call does from then on is listed in one
    /// table in the crate docs ("Shutdown").
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// The stand-in kernel of this port, for the loom models.
    #[cfg(loom)]
    pub fn kernel(&self) -> crate::model::Kernel {
        self.shared.selector.kernel()
    }

    /// Number of threads waiting in `next_completion` right now: parked, or, on a port
    /// without workers, waiting in epoll for I/O (counted from just before their wait).
    pub fn waiters(&self) -> usize {
        self.shared.sleep.sleepers() + self.shared.pollers.load(Ordering::SeqCst)
    }

    /// Number of armed timers (stream deadlines and accept back-offs).
    pub fn timers(&self) -> usize {
        lock(&self.shared.timers).wheel.len()
    }

    /// Whether [`Port::shutdown`] was called (or began).
    pub fn is_shut_down(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) != OPEN
    }
}

fn not_assigned(op: Op, token: u64) -> Error {
    Error::new(
        ErrorKind::NotAssigned,
        format!("{op} on stream {token}: the stream is not assigned (deassigned or closed)"),
    )
}

fn read_slab<T>(l: &RwLock<T>) -> crate::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_slab<T>(l: &RwLock<T>) -> crate::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Clone for Port {
    fn clone(&self) -> Port {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Port { shared: self.shared.clone() }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        #[cfg(loom)]
        let last = if crate::sync::planted("racy_refcount") {
            // Planted bug: a decrement that is not one atomic step.
            let n = self.shared.handles.load(Ordering::SeqCst);
            self.shared.handles.store(n - 1, Ordering::SeqCst);
            n == 1
        } else {
            self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1
        };
        #[cfg(not(loom))]
        let last = self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1;
        if !last {
            return;
        }
        let shared = self.shared.clone();
        if shared.is_worker_thread() {
            // The last handle went away on a worker (inside a driver or progress callback,
            // with a stream locked): tear down from a fresh thread so that nothing waits for
            // the lock this thread holds or joins itself.
            let _ = thread::Builder::new().name("cport-teardown".into()).spawn(move || shared.teardown());
        } else {
            shared.teardown();
        }
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("threads", &self.shared.threads)
            .field("streams", &self.streams())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl Shared {
    /// The identity ISBs carry to recognise their port.
    fn key(&self) -> usize {
        self as *const Shared as usize
    }

    fn is_worker_thread(&self) -> bool {
        let me = thread::current().id();
        lock(&self.workers).iter().any(|h| h.thread().id() == me)
    }

    /// Queues a completion and wakes one waiter.
    fn push(&self, c: Completion) {
        self.queue.push(c);
        if self.polling {
            self.poke();
        } else {
            self.sleep.notify_one();
        }
    }

    /// Delivers a completion as `how` says.
    fn deliver(&self, c: Completion, how: &mut Deliver<'_>) {
        match how {
            Deliver::Queue => self.push(c),
            Deliver::Quiet => self.queue.push(c),
            Deliver::Hand(slot) if slot.is_none() => {
                if let (Some(isb), Some(side)) = (&c.isb, c.op.side()) {
                    isb.stream.processed(side);
                }
                **slot = Some(c);
            }
            Deliver::Hand(_) => self.push(c),
        }
    }

    /// Wakes one thread blocked in `epoll_wait` in `next_completion`, if any (polling ports).
    /// Dekker with `poll`: the caller changed the queue (or the wakeups) first; `poll` counts
    /// itself in `pollers` first, then looks at the queue. One of the two sees the other.
    fn poke(&self) {
        // A read-modify-write reads the latest count whatever a checker makes of fences.
        if self.polling && self.pollers.fetch_add(0, Ordering::SeqCst) > 0 {
            self.selector.poke();
        }
    }

    /// A polling waiter's turn: unless there is something to take already, wait on epoll (at
    /// most until `deadline`) like a worker and dispatch what came, queueing completions
    /// without waking anyone (see `next_completion` for who wakes whom). See ARCHITECTURE.md,
    /// "Polling waiters".
    fn poll(&self, deadline: Option<Instant>) {
        let mut events =
            lock(&self.event_bufs).pop().unwrap_or_else(|| Events::with_capacity(crate::worker::EVENTS_PER_WAIT));
        #[cfg(loom)]
        let late = crate::sync::planted("poller_counts_late");
        #[cfg(not(loom))]
        let late = false;
        if !late {
            self.pollers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
        }
        let idle =
            self.queue.is_empty() && self.state.load(Ordering::SeqCst) != CLOSED && self.sleep.wakeups_pending() == 0;
        if late {
            // Planted bug: counted as polling only after looking at the queue.
            self.pollers.fetch_add(1, Ordering::SeqCst);
        }
        let waited = idle && self.selector.wait(&mut events, timeout_ms(deadline)).is_ok();
        self.pollers.fetch_sub(1, Ordering::SeqCst);
        if waited {
            self.dispatch(&events, &mut Deliver::Quiet);
        }
        lock(&self.event_bufs).push(events);
    }

    /// Acts on events taken from epoll; returns true when the stop event was among them.
    pub(crate) fn dispatch(&self, events: &Events, how: &mut Deliver<'_>) -> bool {
        let mut stop = false;
        for ev in events.iter() {
            match ev.token {
                STOP_TOKEN => stop = true,
                TIMER_TOKEN => self.on_timer(how),
                POKE_TOKEN => self.selector.ack_poke(),
                t => {
                    if let Some(token) = Token::from_u64(t) {
                        self.on_ready(token, ev.readable, ev.writable, ev.hangup, how);
                    }
                }
            }
        }
        stop
    }

    /// Takes a completion; its side becomes PROCESSED.
    fn take(&self) -> Option<Completion> {
        let c = self.queue.pop()?;
        if let (Some(isb), Some(side)) = (&c.isb, c.op.side()) {
            isb.stream.processed(side);
        }
        Some(c)
    }

    fn stream(&self, token: Token) -> Option<Arc<Stream>> {
        read_slab(&self.streams).get(token)
    }

    /// Moves `side`'s request forward and completes it if it finished.
    fn advance(&self, stream: &Arc<Stream>, inner: &mut Inner, side: Side, hangup: bool, how: &mut Deliver<'_>) {
        match inner.step(side, hangup) {
            Step::Pending => {}
            Step::Done(status, err) => {
                if let (Some(e), Some(p)) = (&err, &inner.pending[side as usize]) {
                    if p.req.op() == Op::Accept && is_fd_exhaustion(e) {
                        let id = self.arm_timer(Instant::now() + ACCEPT_BACKOFF, stream.token, TimerKind::Backoff);
                        inner.backoff = Some(id);
                    }
                }
                self.finish(stream, inner, side, status, err, how);
            }
            Step::Accepted(d, addr) => {
                let p = self.take_pending(stream, inner, side);
                let mut c = isb::completion(Isb { stream: stream.clone() }, Op::Accept, p, Status::Ok, None);
                let x = c.extra();
                x.accepted = Some(d);
                x.addr = addr;
                self.deliver(c, how);
            }
            Step::Received(addr) => {
                let p = self.take_pending(stream, inner, side);
                let mut c = isb::completion(Isb { stream: stream.clone() }, Op::RecvFrom, p, Status::Ok, None);
                c.extra().addr = Some(addr);
                self.deliver(c, how);
            }
        }
    }

    /// Takes `side`'s request off the stream and marks the side COMPLETED.
    fn take_pending(&self, stream: &Stream, inner: &mut Inner, side: Side) -> Pending {
        let mut p = inner.pending[side as usize].take().expect("finishing a side with no pending request");
        // Progress callbacks end with their request: drop it now (it may own anything).
        p.req.progress = None;
        stream.finish(side, inner);
        *p
    }

    /// Completes `side`'s request with `status`.
    fn finish(
        &self,
        stream: &Arc<Stream>,
        inner: &mut Inner,
        side: Side,
        status: Status,
        err: Option<std::io::Error>,
        how: &mut Deliver<'_>,
    ) {
        let p = self.take_pending(stream, inner, side);
        let op = p.req.op();
        if matches!(status, Status::Cancelled | Status::TimedOut) {
            if let Some(d) = inner.driver.as_mut() {
                d.cancel(op);
            }
        }
        let err = err.map(|e| Error::from_io(&e, format!("{op} on {}", stream.describe(inner))));
        let c = isb::completion(Isb { stream: stream.clone() }, op, p, status, err);
        #[cfg(cport_plant)]
        if status == Status::Cancelled && side == Side::Write && crate::sync::planted("lost_cancel") {
            // Planted bug (for the storm): a cancelled write's completion, and its buffer, vanish.
            return;
        }
        self.deliver(c, how);
    }

    /// Completes every pending request of the stream with `status`; returns how many.
    fn end_all(&self, stream: &Arc<Stream>, inner: &mut Inner, status: Status, how: &mut Deliver<'_>) -> usize {
        let mut n = 0;
        for side in [Side::Read, Side::Write] {
            if inner.pending[side as usize].is_some() {
                self.finish(stream, inner, side, status, None, how);
                n += 1;
            }
        }
        n
    }

    /// Arms epoll for what the stream still waits for, unless it already is. See
    /// ARCHITECTURE.md, "Re-arm": both sides' interest always goes in together.
    fn rearm(&self, stream: &Arc<Stream>, inner: &mut Inner, how: &mut Deliver<'_>) {
        let want = inner.interest();
        if want.is_none() || inner.armed.covers(want) {
            return;
        }
        let Some(fd) = inner.driver.as_ref().map(|d| d.fd()) else { return };
        match self.selector.arm(fd, stream.token.to_u64(), want) {
            Ok(()) => inner.armed = want,
            Err(e) => {
                // Nothing will ever report readiness: fail what waits for it.
                for side in [Side::Read, Side::Write] {
                    let waits = if side == Side::Read { want.readable } else { want.writable };
                    if waits {
                        let err = std::io::Error::new(e.kind(), format!("arming epoll: {e}"));
                        self.finish(stream, inner, side, Status::Failed, Some(err), how);
                    }
                }
            }
        }
    }

    /// Deassigns (and, with `close`, queues a Close completion for) the stream.
    fn release(&self, stream: &Arc<Stream>, close: bool) -> Result<()> {
        let mut inner = stream.lock();
        let Some(fd) = inner.driver.as_ref().map(|d| d.fd()) else {
            let what = if close { "close" } else { "deassign" };
            return Err(Error::new(
                ErrorKind::NotAssigned,
                format!("{what} on stream {}: not assigned", stream.user_token),
            ));
        };
        #[cfg(loom)]
        let check = !crate::sync::planted("close_unchecked");
        #[cfg(not(loom))]
        let check = true;
        // Planted bug `close_unchecked`: queue the Close completion whatever the state.
        if check && close && self.state.load(Ordering::SeqCst) != OPEN {
            // The Close completion would come after `PortClosed` (or race it): refuse, as
            // every call that would queue a completion of its own is refused after shutdown.
            // Checked under the stream lock, so a close that saw OPEN queues before shutdown's
            // cancel pass reaches this stream (ARCHITECTURE.md, "Shutdown", step 1).
            return Err(Error::new(
                ErrorKind::PortClosed,
                format!(
                    "close on stream {}: the port was shut down (deassign releases the stream without a completion)",
                    stream.user_token
                ),
            ));
        }
        #[cfg(any(loom, cport_plant))]
        if close && crate::sync::planted("close_before_cancel") {
            // Planted bug: the Close completion goes out before the cancellations.
            self.push(Completion::new(stream.user_token, Some(Isb { stream: stream.clone() }), Op::Close, Status::Ok));
            self.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue);
            let _ = self.selector.deregister(fd);
            if let Some(mut d) = inner.driver.take() {
                d.detach();
            }
            drop(inner);
            write_slab(&self.streams).remove(stream.token);
            return Ok(());
        }
        self.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue);
        let _ = self.selector.deregister(fd);
        for id in [inner.deadline.take(), inner.backoff.take()].into_iter().flatten() {
            self.disarm_timer(id.0);
        }
        if let Some(mut d) = inner.driver.take() {
            d.detach();
        }
        inner.armed = Interest::NONE;
        if close {
            self.push(Completion::new(stream.user_token, Some(Isb { stream: stream.clone() }), Op::Close, Status::Ok));
        }
        drop(inner);
        write_slab(&self.streams).remove(stream.token);
        Ok(())
    }

    /// Arms a timer of `kind` for the stream, reprogramming the timerfd if it is now the
    /// earliest. Returns the wheel id and the sequence number the key carries.
    fn arm_timer(&self, deadline: Instant, token: Token, kind: TimerKind) -> (TimerId, u32) {
        let mut t = lock(&self.timers);
        t.seq = t.seq.wrapping_add(1);
        let seq = t.seq;
        let id = t.wheel.insert(deadline, TimerKey { token, kind, seq });
        let next = t.wheel.next_deadline();
        if next.is_some() && (t.programmed.is_none() || next < t.programmed) {
            t.programmed = next;
            let _ = self.selector.set_timer(next);
        }
        (id, seq)
    }

    fn disarm_timer(&self, id: TimerId) {
        lock(&self.timers).wheel.remove(id);
    }

    /// The timerfd fired: expire due timers, reprogram, and act on each.
    fn on_timer(&self, how: &mut Deliver<'_>) {
        self.selector.ack_timer();
        let mut due = Vec::new();
        {
            let mut t = lock(&self.timers);
            t.wheel.poll_expired(Instant::now(), &mut due);
            let next = t.wheel.next_deadline();
            t.programmed = next;
            let _ = self.selector.set_timer(next);
        }
        for key in due {
            let Some(stream) = self.stream(key.token) else { continue };
            #[cfg(loom)]
            if crate::sync::planted("timeout_keeps_io") && key.kind == TimerKind::Deadline {
                // Planted bug: the deadline reports the timeout but leaves the I/O pending, so
                // whatever ends it later (data, cancel, shutdown) completes it a second time.
                let inner = stream.lock();
                if inner.deadline.map(|d| d.1) == Some(key.seq) && inner.pending[Side::Read as usize].is_some() {
                    let isb = Isb { stream: stream.clone() };
                    self.push(Completion::new(stream.user_token, Some(isb), Op::Read, Status::TimedOut));
                }
                continue;
            }
            let mut inner = stream.lock();
            match key.kind {
                TimerKind::Deadline if inner.deadline.map(|d| d.1) == Some(key.seq) => {
                    inner.deadline = None;
                    self.end_all(&stream, &mut inner, Status::TimedOut, how);
                }
                TimerKind::Backoff if inner.backoff.map(|d| d.1) == Some(key.seq) => {
                    inner.backoff = None;
                    self.advance(&stream, &mut inner, Side::Read, false, how);
                    self.rearm(&stream, &mut inner, how);
                }
                _ => {}
            }
        }
    }

    /// A readiness event for `token`.
    fn on_ready(&self, token: Token, readable: bool, writable: bool, hangup: bool, how: &mut Deliver<'_>) {
        let Some(stream) = self.stream(token) else { return };
        let mut inner = stream.lock();
        if inner.driver.is_none() {
            return;
        }
        // Oneshot: the kernel disarmed the fd when it delivered this event.
        inner.armed = Interest::NONE;
        if (readable || hangup) && inner.backoff.is_none() {
            self.advance(&stream, &mut inner, Side::Read, hangup, how);
        }
        if writable || hangup {
            self.advance(&stream, &mut inner, Side::Write, hangup, how);
        }
        self.rearm(&stream, &mut inner, how);
    }

    /// See ARCHITECTURE.md, "Shutdown".
    fn shutdown(&self) {
        // 1. Refuse new I/O, assigns and posts.
        if self.state.compare_exchange(OPEN, CLOSING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        // 2. Close the post gate, then wait out posts already inside it: their completions must
        //    be queued before waiters may conclude the port is empty. Gate and count share one
        //    word, so a post either entered before the bit was set (and is waited for) or sees it.
        self.posting.fetch_or(GATE_CLOSED, Ordering::AcqRel);
        while self.posting.load(Ordering::Acquire) & !GATE_CLOSED != 0 {
            spin_hint();
        }
        #[cfg(loom)]
        if crate::sync::planted("closed_before_cancel") {
            // Planted bug: waiters are told the port is closed before the cancellations are queued.
            self.state.store(CLOSED, Ordering::SeqCst);
            self.sleep.notify_all();
        }
        // 3. Cancel every pending I/O. Each stream's lock orders this after any start_io that
        //    saw OPEN, and completions are queued under that lock.
        let streams = read_slab(&self.streams).values();
        for stream in &streams {
            let mut inner = stream.lock();
            self.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue);
        }
        // 4. Every completion the port will produce is queued: let waiters drain and leave.
        self.state.store(CLOSED, Ordering::SeqCst);
        self.sleep.notify_all();
        if self.polling {
            // Level-triggered and never read: every polling waiter wakes and sees CLOSED.
            let _ = self.selector.stop();
        }
    }

    /// The last handle is gone. See ARCHITECTURE.md, "Shutdown".
    fn teardown(&self) {
        self.shutdown();
        // 5. Stop the workers and join them (none of them is this thread).
        #[cfg(loom)]
        if crate::sync::planted("join_before_stop") {
            // Planted bug: join the workers before telling them to stop.
            let workers = std::mem::take(&mut *lock(&self.workers));
            for h in workers {
                let _ = h.join();
            }
        }
        let _ = self.selector.stop();
        let workers = std::mem::take(&mut *lock(&self.workers));
        for h in workers {
            let _ = h.join();
        }
        // 6. Deassign every stream: detach the driver, close the fd.
        let streams = write_slab(&self.streams).drain();
        for stream in &streams {
            let mut inner = stream.lock();
            if let Some(fd) = inner.driver.as_ref().map(|d| d.fd()) {
                let _ = self.selector.deregister(fd);
            }
            if let Some(mut d) = inner.driver.take() {
                d.detach();
            }
        }
        // 7. Drop every completion nobody will take (their buffers and accepted streams).
        while self.queue.pop().is_some() {}
        // 8. The epoll, eventfd and timerfd close when the last Arc<Shared> drops, which is
        //    the caller's.
    }
}

/// The `epoll_wait` timeout for `deadline`: -1 for none, else milliseconds rounded up (so the
/// wait never ends before the deadline), capped at `i32::MAX`.
fn timeout_ms(deadline: Option<Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            let ms = left.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
