//! [`Port`]: the counted handle, its builder, and every call a program makes on it.
//!
//! The rooms of the port: `engine.rs` (what events and finished requests do to streams),
//! `wait.rs` (who polls epoll, who parks, who is woken: the wake protocol), `lifecycle.rs`
//! (reference count, post gate, shutdown, teardown), `timers.rs` (deadlines and back-offs),
//! `stats.rs` (the counters behind [`Port::stats`]).

mod engine;
mod lifecycle;
mod stats;
mod timers;
mod wait;

pub use stats::Stats;
pub use timers::Timer;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::completion::{Completion, Next, Status};
use crate::driver::{self, Driver};
use crate::error::{Error, ErrorKind, Result, StartError};
use crate::isb::{self, Isb, Label, Pending, Stream};
use crate::queue::Local;
use crate::request::{Kind, Op, Request, Side};
use crate::sync::{lock, thread, Arc, AtomicU8, AtomicUsize, Mutex, Ordering};
use crate::sys::socket::{self, Connecting};
use crate::sys::Selector;
use crate::token::Table;
use stats::Counters;
use timers::{TimerKind, Timers};

/// The port accepts new I/O.
const OPEN: u8 = 0;
/// `shutdown` began: new I/O is refused, pending I/O is being cancelled.
const CLOSING: u8 = 1;
/// Every completion the port will ever produce is queued; waiters that find nothing left
/// return `PortClosed`.
const CLOSED: u8 = 2;

/// The most worker threads a port may have.
pub const MAX_THREADS: usize = 1024;

/// The bit of `Shared::posting` that refuses new posts.
const GATE_CLOSED: usize = 1 << (usize::BITS - 1);

/// How long a listener rests after accept failed for lack of fds or memory (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM) before it tries again: the error is reported once per rest, never in a
/// spin.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The state every handle, worker and waiting thread shares.
pub(crate) struct Shared {
    pub(crate) selector: Selector,
    streams: Table<Arc<Stream>>,
    timers: Mutex<Timers>,
    /// User timers (`Port::timer`).
    user_timers: Mutex<timers::UserTimers>,
    /// Who waits where, the queues, who is woken (see `wait.rs`).
    wait: wait::Wait,
    /// Live `Port` handles (the reference count).
    handles: AtomicUsize,
    /// OPEN, CLOSING or CLOSED.
    state: AtomicU8,
    /// The post gate: the number of `post` calls between their check and their push, plus
    /// `GATE_CLOSED` once shutdown began. One word, so post and shutdown need no Dekker pair.
    posting: AtomicUsize,
    workers: Mutex<Vec<thread::JoinHandle<()>>>,
    threads: usize,
    /// Tokens are C callers' user pointers (see [`Label`]).
    c_tokens: bool,
    /// This port's number in the process (see `Shared::key`).
    serial: usize,
}

/// Where the completion of a finished request goes.
pub(crate) enum Deliver<'a> {
    /// Produced outside a dispatch (a call from any thread): into the port's shared queue,
    /// waking a thread for it if need be.
    Queue,
    /// Produced by this thread's dispatch: into its own queue (others take from it only when
    /// it is slow to come back), counted on its counters.
    Local(&'a Local<Completion>, &'a Counters),
    /// Back to the caller of `start_io_inline`, not queued (the first one; any other goes to
    /// the shared queue).
    Hand(&'a mut Option<Completion>),
}

/// An I/O completion port: one epoll instance, and a queue of completions that any number of
/// threads take with [`Port::next_completion`]. The threads in `next_completion` do the I/O
/// themselves: one of them at a time waits in epoll, and the one that handles an event is
/// the one that returns its completion, with no thread hop. Dedicated workers
/// ([`Builder::threads`]) are optional extra pollers.
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
/// let port = Port::new()?;
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
#[derive(Clone, Debug)]
pub struct Builder {
    threads: usize,
    poll_interval: u32,
    injector_interval: u32,
    /// Tokens are C callers' user pointers (messages print them so).
    c_tokens: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            threads: 0,
            poll_interval: wait::POLL_EVERY,
            injector_interval: wait::INJECTOR_EVERY,
            c_tokens: false,
        }
    }
}

impl Builder {
    /// Dedicated worker threads, extra pollers besides the threads in `next_completion`.
    /// Default 0, the fastest configuration: the threads in `next_completion` wait in epoll
    /// themselves, one at a time, and the thread that handles an event returns its
    /// completion.
    ///
    /// Workers help programs whose handlers are slow (they keep the I/O moving while every
    /// thread in `next_completion` is busy elsewhere) and programs that start I/O from
    /// threads that never call `next_completion`. A worker sleeps while the threads in
    /// `next_completion` keep up; its completions reach a waiting thread through a wake-up.
    /// Without workers, I/O moves only while some thread is in `next_completion`.
    ///
    /// ```
    /// use cport::{Port, Request, Status};
    /// use std::io::Write;
    ///
    /// // One worker: I/O moves even while no thread waits in the port.
    /// let port = Port::builder().threads(1).build()?;
    /// assert_eq!(port.threads(), 1);
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_exact(vec![0; 3]))?;
    /// peer.write_all(b"abc")?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.status(), c.data()), (Status::Ok, &b"abc"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a builder does nothing until `build` is called"]
    pub fn threads(mut self, n: usize) -> Builder {
        self.threads = n;
        self
    }

    /// Fairness: a thread that takes completions looks at epoll (a non-blocking `epoll_wait`,
    /// when no other thread is polling) at least once every `n` completions it takes, however
    /// much work its queue holds, so a stream armed in epoll waits behind at most `n`
    /// completions of others plus those queued before it. Default 31: a poll that finds
    /// nothing costs about 0.11 µs here (`cargo bench --bench fairness`), 3.6 ns per completion
    /// at 31, under 0.2% of an echoed message, while the wait it bounds is half tokio's
    /// (`event_interval`, 61). Smaller is fairer and dearer. `Port::stats` counts these polls
    /// (`forced_polls`).
    ///
    /// ```
    /// let port = cport::Port::builder().poll_interval(31).build()?;
    /// # drop(port);
    /// # Ok::<(), cport::Error>(())
    /// ```
    #[must_use = "a builder does nothing until `build` is called"]
    pub fn poll_interval(mut self, n: u32) -> Builder {
        self.poll_interval = n;
        self
    }

    /// Fairness: a thread takes a completion from the port's shared queue (posts and I/O of
    /// threads that do not wait on the port, cancels, closes) before its own queue at least
    /// once every `n` completions, so those wait behind at most `n` of its own. Default 31
    /// (tokio's `global_queue_interval`): a look at an empty queue costs two loads, so the
    /// bound sets the interval, the same as for epoll.
    ///
    /// ```
    /// let port = cport::Port::builder().injector_interval(7).build()?;
    /// # drop(port);
    /// # Ok::<(), cport::Error>(())
    /// ```
    #[must_use = "a builder does nothing until `build` is called"]
    pub fn injector_interval(mut self, n: u32) -> Builder {
        self.injector_interval = n;
        self
    }

    /// A port of the C API: its tokens are the callers' user pointers.
    #[cfg(feature = "ffi")]
    pub(crate) fn c_tokens(mut self) -> Builder {
        self.c_tokens = true;
        self
    }

    /// Creates the port and starts its workers.
    ///
    /// ```
    /// use cport::{ErrorKind, Port, MAX_THREADS};
    ///
    /// let port = Port::builder().build()?;
    /// assert_eq!(port.threads(), 0);
    /// let too_many = Port::builder().threads(MAX_THREADS + 1).build().unwrap_err();
    /// assert_eq!(too_many.kind(), ErrorKind::InvalidInput);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for more than `MAX_THREADS` threads; `Os` when epoll, an eventfd, the
    /// timerfd or a thread cannot be created.
    pub fn build(self) -> Result<Port> {
        let threads = self.threads;
        if threads > MAX_THREADS {
            return Err(Error::invalid(format!("{threads} worker threads is more than the limit of {MAX_THREADS}")));
        }
        if self.poll_interval == 0 || self.injector_interval == 0 {
            return Err(Error::invalid("poll_interval and injector_interval must be at least 1"));
        }
        let selector = Selector::new().map_err(|e| Error::from_io(&e, "creating the epoll selector"))?;
        let shared = Arc::new(Shared {
            selector,
            streams: Table::new(),
            timers: Mutex::new(Timers::new()),
            user_timers: Mutex::new(timers::UserTimers::default()),
            wait: wait::Wait::new(self.poll_interval, self.injector_interval),
            handles: AtomicUsize::new(1),
            state: AtomicU8::new(OPEN),
            posting: AtomicUsize::new(0),
            workers: Mutex::new(Vec::with_capacity(threads)),
            threads,
            c_tokens: self.c_tokens,
            serial: crate::sync::next_serial(),
        });
        shared.wait.link.set(shared.clone());
        let port = Port { shared };
        // Workers start with every signal blocked (see `BlockAll`).
        #[cfg(not(loom))]
        let _blocked = crate::sys::signals::BlockAll::new();
        for i in 0..threads {
            let s = port.shared.clone();
            let spawned = thread::Builder::new().name(format!("cport-worker-{i}")).spawn(move || s.run_worker());
            match spawned {
                Ok(h) => lock(&port.shared.workers).push(h),
                // Dropping `port` tears down the workers already started.
                Err(e) => return Err(Error::from_io(&e, format!("spawning worker thread {i}"))),
            }
        }
        Ok(port)
    }
}

impl Port {
    /// A builder with the defaults.
    ///
    /// ```
    /// let port = cport::Port::builder().threads(2).build()?;
    /// assert_eq!(port.threads(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a builder does nothing until `build` is called"]
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A port with the default settings.
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// assert_eq!((port.threads(), port.streams(), port.is_shut_down()), (0, 0, false));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> Result<Port> {
        Port::builder().build()
    }

    /// Adds a reference: the same as `clone`.
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// let other = port.inc_ref();
    /// other.post(1, 42)?; // any handle reaches the same port
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").value(), 42);
    /// other.dec_ref(); // `port` still holds a reference: the port lives on
    /// port.post(2, 0)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "dropping the new handle at once removes the reference again"]
    pub fn inc_ref(&self) -> Port {
        self.clone()
    }

    /// Removes a reference: the same as `drop`. The last one tears the port down.
    ///
    /// ```
    /// use cport::{driver, Port};
    ///
    /// let port = Port::new()?;
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(driver::UnixStream::new(ours), 1)?;
    /// port.dec_ref(); // the last handle: the stream is deassigned and its fd closed
    /// assert!(!isb.is_assigned());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dec_ref(self) {
        drop(self)
    }

    /// Number of dedicated worker threads.
    ///
    /// ```
    /// assert_eq!(cport::Port::builder().threads(3).build()?.threads(), 3);
    /// assert_eq!(cport::Port::new()?.threads(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Number of assigned streams.
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// assert_eq!(port.streams(), 1);
    /// port.deassign(&isb)?;
    /// assert_eq!(port.streams(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn streams(&self) -> usize {
        self.shared.streams.len()
    }

    /// What the port has done so far, summed over its threads (see [`Stats`]). Cheap: each
    /// thread keeps its own counters.
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// port.post(1, 0)?;
    /// port.next_completion(None)?.expect("the post");
    /// let stats = port.stats();
    /// assert_eq!((stats.ok, stats.completions()), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.wait.stats()
    }

    /// Attaches `driver`'s stream to the port. `token` comes back in every completion of the
    /// stream.
    ///
    /// ```
    /// use cport::{driver, ErrorKind, Port};
    /// use std::os::unix::net::UnixStream;
    ///
    /// let port = Port::new()?;
    /// let (a, b) = UnixStream::pair()?;
    /// let isb = port.assign(driver::UnixStream::new(a), 7)?;
    /// assert_eq!((isb.token(), port.streams()), (7, 1));
    /// // The TCP driver refuses a Unix-domain socket (and closes it).
    /// let refused = port.assign(driver::TcpStream::from_fd(b.into()), 8).unwrap_err();
    /// assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    /// ```
    /// use cport::{driver, Driver, Port};
    /// use std::os::unix::net::UnixStream;
    ///
    /// let port = Port::new()?;
    /// let (a, b) = UnixStream::pair()?;
    /// let drivers: Vec<Box<dyn Driver>> =
    ///     vec![Box::new(driver::UnixStream::new(a)), Box::new(driver::Fd::new(b))];
    /// for (token, d) in (1..).zip(drivers) {
    ///     port.assign_boxed(d, token)?;
    /// }
    /// assert_eq!(port.streams(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::assign`].
    pub fn assign_boxed(&self, driver: Box<dyn Driver>, token: u64) -> Result<Isb> {
        self.assign_or_return(driver, token).map_err(|(e, _)| e)
    }

    /// [`Port::assign_boxed`], except that a refused driver comes back with the error instead
    /// of being dropped: the C API, whose callers hand over raw fds, must not close one that
    /// another stream of this port uses (`Port::holds_fd`, asked only on this failure path).
    pub(crate) fn assign_or_return(
        &self,
        mut driver: Box<dyn Driver>,
        token: u64,
    ) -> std::result::Result<Isb, (Error, Option<Box<dyn Driver>>)> {
        let name = driver.name();
        // A driver refusing the fd (not a socket, the wrong kind) says `InvalidInput`, which
        // `from_io` keeps as bad input rather than an OS failure.
        if let Err(e) = driver.attach() {
            let label = self.shared.label(token);
            return Err((Error::from_io(&e, format!("assign {name} (stream {label})")), Some(driver)));
        }
        let fd = driver.fd().as_raw_fd();
        let key = self.shared.key();
        // The state is checked again after the insert: shutdown takes its snapshot of the
        // table after it set CLOSING, so a stream inserted before that is in the snapshot and
        // one whose second look sees CLOSING is removed again (ARCHITECTURE.md, "Shutdown").
        if self.shared.state.load(Ordering::SeqCst) != OPEN {
            driver.detach();
            return Err((Error::closed(), Some(driver)));
        }
        let mut stream = None;
        self.shared.streams.insert_with(|t| {
            let s = Arc::new(Stream::new(key, t, self.shared.label(token), driver));
            stream = Some(s.clone());
            s
        });
        let stream = stream.expect("just inserted");
        // A stream refused after its insert: out of the table again, its driver handed back.
        let undo = |registered: bool| {
            let mut inner = stream.lock();
            if registered {
                let _ = self.shared.selector.deregister(fd);
            }
            let mut driver = inner.driver.take();
            if let Some(d) = driver.as_mut() {
                d.detach();
            }
            drop(inner);
            self.shared.streams.remove(stream.token);
            driver
        };
        if self.shared.state.load(Ordering::SeqCst) != OPEN {
            return Err((Error::closed(), undo(false)));
        }
        if let Err(e) = self.shared.selector.register(fd, stream.token.to_u64()) {
            let driver = undo(false);
            let why = match e.raw_os_error() {
                Some(libc::EEXIST) => "the fd is already assigned to this port".to_string(),
                Some(libc::EPERM) => "epoll cannot watch this kind of fd (a regular file or directory?)".to_string(),
                _ => e.to_string(),
            };
            let label = self.shared.label(token);
            let e = Error::new(ErrorKind::InvalidInput, format!("assign {name} (stream {label}, fd {fd}): {why}"));
            return Err((e, driver));
        }
        // Whatever the driver did: a blocking fd would block the thread that runs its I/O
        // (and with it the port) forever. Set last, once nothing can refuse the stream (a
        // refused fd goes back to its owner as it was); one `fcntl` when it is nonblocking
        // already. No I/O can have started: nobody has the ISB yet.
        let nonblocking = stream.lock().driver.as_ref().map(|d| socket::set_nonblocking(d.fd()));
        if let Some(Err(e)) = nonblocking {
            let driver = undo(true);
            let label = self.shared.label(token);
            let e = Error::from_io(&e, format!("assign {name} (stream {label}): making the fd nonblocking"));
            return Err((e, driver));
        }
        Ok(Isb { stream })
    }

    /// Opens a nonblocking TCP connection to `addr` and assigns it. The connect completes
    /// (as `Op::Connect` on the returned ISB) once the connection is up or has failed; a
    /// refused connection is a `Failed` completion whose error kind is
    /// `Os(ConnectionRefused)`. Whatever the outcome (refused, timed out, cancelled), the
    /// stream stays assigned, its socket open: close or deassign it.
    ///
    /// `addr` is anything [`ToSocketAddrs`] takes (`"example.com:80"`, `("10.0.0.1", 80)`, a
    /// `SocketAddr`); only the first address it resolves to is tried (`localhost` may resolve to
    /// `::1` first, which an IPv4-only listener refuses: name the address you mean). A host
    /// name is resolved by the system's resolver inside this call, which **blocks** the
    /// calling thread (DNS can take seconds): resolve names beforehand where that matters, and
    /// pass addresses. To bound the connect itself, see [`Port::connect_timeout`]; to bind the
    /// socket or set options first, [`Request::connect`].
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    ///
    /// let port = Port::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let isb = port.connect(listener.local_addr()?, 5)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.token(), c.op(), c.status()), (5, Op::Connect, Status::Ok));
    /// let (_conn, peer) = listener.accept()?;
    /// assert_eq!(peer, isb.local_addr()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Os` if the name cannot be resolved or no socket can be created; `InvalidInput` if it
    /// resolves to no address; `PortClosed` once shutdown has begun (also when it begins
    /// during the call: the socket is closed and nothing is queued).
    pub fn connect(&self, addr: impl ToSocketAddrs, token: u64) -> Result<Isb> {
        self.connect_then(resolve(addr)?, token, |_| {})
    }

    /// [`Port::connect`] whose connect ends `TimedOut` if it is not up within `timeout` (a
    /// timeout of the connect's own, like [`Request::timeout`]: it ends with the connect and
    /// never touches the stream's later I/O, unlike a deadline of [`Port::set_timeout`]).
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    /// use std::time::Duration;
    ///
    /// let port = Port::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let isb = port.connect_timeout(listener.local_addr()?, 5, Duration::from_secs(5))?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Connect, Status::Ok));
    /// assert_eq!(port.timers(), 0, "the timeout ended with the connect");
    /// # drop(isb);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::connect`].
    pub fn connect_timeout(&self, addr: impl ToSocketAddrs, token: u64, timeout: Duration) -> Result<Isb> {
        let addr = resolve(addr)?;
        let c = socket::connect_tcp(addr).map_err(|e| Error::from_io(&e, format!("connect to {addr}")))?;
        self.start_connect(c, |fd| Box::new(driver::TcpStream::known(fd)), token, Some(timeout), |_| {})
    }

    /// [`Port::connect`] that calls `assigned` with the new ISB before the connect starts, so
    /// before its completion can be taken (the C API writes the caller's handle there).
    pub(crate) fn connect_then(&self, addr: SocketAddr, token: u64, assigned: impl FnOnce(&Isb)) -> Result<Isb> {
        let c = socket::connect_tcp(addr).map_err(|e| Error::from_io(&e, format!("connect to {addr}")))?;
        self.start_connect(c, |fd| Box::new(driver::TcpStream::known(fd)), token, None, assigned)
    }

    /// [`Port::connect`] for a Unix-domain stream socket at `path`.
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    ///
    /// let path = std::env::temp_dir().join(format!("cport-doc-connect-{}.sock", std::process::id()));
    /// let listener = std::os::unix::net::UnixListener::bind(&path)?;
    /// let port = Port::new()?;
    /// let _isb = port.connect_unix(&path, 1)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Connect, Status::Ok));
    /// drop(listener);
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for a path that is empty, too long or holds a NUL byte; otherwise as
    /// [`Port::connect`].
    pub fn connect_unix(&self, path: impl AsRef<Path>, token: u64) -> Result<Isb> {
        self.connect_unix_then(path.as_ref(), token, |_| {})
    }

    /// [`Port::connect_unix`] with `assigned` as for [`Port::connect_then`].
    pub(crate) fn connect_unix_then(&self, path: &Path, token: u64, assigned: impl FnOnce(&Isb)) -> Result<Isb> {
        let c = socket::connect_unix(path).map_err(|e| Error::from_io(&e, format!("connect to {}", path.display())))?;
        self.start_connect(c, |fd| Box::new(driver::UnixStream::known(fd)), token, None, assigned)
    }

    /// [`Port::connect`] from a local port in `range` (see [`PortRange`](crate::net::PortRange)):
    /// the socket is bound to the first port of the range that is free, on the unspecified
    /// address of `addr`'s family (so the kernel still picks the source address), before the
    /// nonblocking connect starts. Use it where a firewall admits only some ports. The connect
    /// completes as for [`Port::connect`].
    ///
    /// ```
    /// use cport::{net::PortRange, Op, Port, Status};
    ///
    /// let port = Port::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let range: PortRange = "40000-59999".parse()?;
    /// let isb = port.connect_in_range(listener.local_addr()?, &range, 1)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Connect, Status::Ok));
    /// assert!(range.contains(isb.local_addr()?.port()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Os(AddrInUse)`, with a message naming the range, when every port of `range` is in use;
    /// `Os` for any other failure to create or bind the socket; `PortClosed` as for
    /// [`Port::connect`].
    pub fn connect_in_range(&self, addr: SocketAddr, range: &crate::net::PortRange, token: u64) -> Result<Isb> {
        let c = socket::connect_tcp_from(addr, range.first(), range.last())
            .map_err(|e| Error::from_io(&e, format!("connect to {addr} from a local port in {range}")))?;
        self.start_connect(c, |fd| Box::new(driver::TcpStream::known(fd)), token, None, |_| {})
    }

    /// Assigns the connecting socket, calls `assigned` with its ISB, then starts the connect
    /// (or queues the outcome of one that ended at once).
    fn start_connect(
        &self,
        c: Connecting,
        wrap: impl FnOnce(std::os::fd::OwnedFd) -> Box<dyn Driver>,
        token: u64,
        timeout: Option<Duration>,
        assigned: impl FnOnce(&Isb),
    ) -> Result<Isb> {
        let (fd, outcome) = match c {
            Connecting::Done(fd) => (fd, Some(Ok(()))),
            Connecting::InProgress(fd) => (fd, None),
            Connecting::Failed(fd, e) => (fd, Some(Err(e))),
        };
        let isb = self.assign_boxed(wrap(fd), token)?;
        // Before the connect starts: nobody can take its completion yet.
        assigned(&isb);
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
            Some(Box::new(Pending::new(Request { kind: Kind::Connect { to: None }, extra: None })));
        self.shared.producing(|how| match outcome {
            Some(Ok(())) => self.shared.finish(stream, &mut inner, Side::Write, Status::Ok, None, how),
            Some(Err(e)) => {
                let status =
                    if e.kind() == std::io::ErrorKind::ConnectionReset { Status::Abandoned } else { Status::Failed };
                self.shared.finish(stream, &mut inner, Side::Write, status, Some(e), how)
            }
            None => {
                if let (Some(after), Some(p)) = (timeout, inner.pending[Side::Write as usize].as_mut()) {
                    // In progress: its own timeout starts now (as `start` does for a request's).
                    let at = after_now(after);
                    p.timer = Some(self.shared.arm_timer(at, stream.token, TimerKind::Request(Side::Write)));
                }
                self.shared.rearm(stream, &mut inner, how)
            }
        });
        drop(inner);
        Ok(isb)
    }

    /// Starts `req` on `isb`'s stream. Exactly one completion follows, whatever happens next
    /// (success, error, peer hang-up, cancel, close, timeout, deassign, shutdown).
    ///
    /// An I/O that can finish at once (data already buffered, room in the send buffer) does
    /// so here, without waiting for epoll; its completion still goes through the queue.
    ///
    /// ```
    /// use cport::{ErrorKind, Port, Request};
    ///
    /// let port = Port::new()?;
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 16]))?;
    /// // One read at a time per stream: a second is refused, and its buffer comes back.
    /// let refused = port.start_io(&isb, Request::read_some(vec![0; 32])).unwrap_err();
    /// assert_eq!(refused.kind(), ErrorKind::Busy);
    /// assert_eq!(refused.into_request().into_buffer().map(|b| b.len()), Some(32));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The request comes back inside the [`StartError`], with its buffers:
    /// `InvalidInput` for bad arguments, an operation the driver does not support, or an ISB
    /// of another port; `NotAssigned` for a deassigned or closed stream; `Busy` when the side
    /// (read or write) already has an I/O or an untaken completion; `PortClosed` after
    /// shutdown.
    pub fn start_io(&self, isb: &Isb, req: Request) -> std::result::Result<(), StartError> {
        self.shared.producing(|how| self.start(isb, req, how))
    }

    fn start(&self, isb: &Isb, req: Request, how: &mut Deliver<'_>) -> std::result::Result<(), StartError> {
        let stream = &isb.stream;
        let token = stream.label();
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
        let Some(side) = op.side() else {
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
        let timeout = req.timeout_after();
        inner.pending[side as usize] = Some(Box::new(Pending::new(req)));
        // Try the I/O at once unless it cannot succeed: an accept resting after EMFILE and the
        // like, or a read on a stream the last read drained (readiness will tell when data is
        // there).
        let skip = match op {
            Op::Accept => inner.backoff.is_some(),
            Op::Read | Op::ReadVectored => inner.drained && !poll_read,
            _ => false,
        };
        if !skip {
            self.shared.advance(stream, &mut inner, side, false, how);
        }
        if let (Some(after), Some(p)) = (timeout, inner.pending[side as usize].as_mut()) {
            // Still pending: its own timeout starts now.
            let at = after_now(after);
            p.timer = Some(self.shared.arm_timer(at, stream.token, TimerKind::Request(side)));
        }
        self.shared.rearm(stream, &mut inner, how);
        Ok(())
    }

    /// Like [`Port::start_io`], but an I/O that finishes at once is not queued: its completion
    /// comes back here (`Ok(Some)`), and no thread is woken for it (IOCP's "skip completion
    /// port on success"). `Ok(None)`: the I/O is pending and its completion will come through
    /// `next_completion` as usual. A thread that handles a completion and starts the next I/O
    /// on the same stream (an echo's write) saves a queue trip and a wake-up this way.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// // The socket buffer has room: the write is done at once and comes straight back.
    /// let done = port.start_io_inline(&isb, Request::write(b"hi".to_vec()))?.expect("done at once");
    /// assert_eq!(done.bytes(), 2);
    /// // Nothing to read yet: the read is pending, and its completion comes through the queue.
    /// assert!(port.start_io_inline(&isb, Request::read_some(vec![0; 8]))?.is_none());
    /// peer.write_all(b"ok")?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").data(), b"ok");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    /// ```
    /// use std::io::Write;
    ///
    /// let port = cport::Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.read(&isb, vec![0; 64], 2..=64)?; // at least 2 bytes, at most 64
    /// peer.write_all(b"hey")?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").data(), b"hey");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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

    /// Starts a read into the spare capacity of `buf` (`buf.len()..buf.capacity()`), with no
    /// zero-filling: [`Request::read_buf`].
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let port = cport::Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.read_buf(&isb, Vec::with_capacity(64), 1..=64)?;
    /// peer.write_all(b"hey")?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").into_data(), b"hey");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::start_io`].
    pub fn read_buf(
        &self,
        isb: &Isb,
        buf: Vec<u8>,
        range: std::ops::RangeInclusive<usize>,
    ) -> std::result::Result<(), StartError> {
        self.start_io(isb, Request::read_buf(buf, range))
    }

    /// Starts a write of the whole buffer: [`Request::write`].
    ///
    /// ```
    /// use cport::Op;
    /// use std::io::Read;
    ///
    /// let port = cport::Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.write(&isb, b"hello".to_vec())?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.bytes()), (Op::Write, 5));
    /// let mut got = [0; 5];
    /// peer.read_exact(&mut got)?;
    /// assert_eq!(&got, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::start_io`].
    pub fn write(&self, isb: &Isb, buf: Vec<u8>) -> std::result::Result<(), StartError> {
        self.start_io(isb, Request::write(buf))
    }

    /// Starts an accept: [`Request::accept`].
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    ///
    /// let port = Port::new()?;
    /// let listener = port.listen("127.0.0.1:0".parse()?, 0)?;
    /// port.accept(&listener)?;
    /// let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let mut c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status(), c.addr()), (Op::Accept, Status::Ok, Some(client.local_addr()?)));
    /// let conn = port.assign(c.take_accepted().expect("the connection"), 1)?;
    /// # drop(conn);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::start_io`].
    pub fn accept(&self, isb: &Isb) -> std::result::Result<(), StartError> {
        self.start_io(isb, Request::accept())
    }

    /// Starts `n` accepts on a listener, one after another: the first now, and each next one
    /// as soon as the completion of the one before has been taken (by whichever thread takes
    /// it, before it handles the connection), so the listener always has an accept pending
    /// while its connections are handled in parallel, and nobody re-posts by hand. Each accept
    /// ends in exactly one completion (`Op::Accept`); its [`Completion::value`] says how many
    /// of the `n` are still to start. An accept that fails (`Failed`: the OS ran out of fds
    /// or memory, say; the listener then rests for a moment before it tries again) counts as
    /// one of the `n`, and the series goes on. An accept ended by a cancel, close, deadline,
    /// hang-up or shutdown ends the series (those not yet started never start, and complete
    /// nothing); so does another I/O started on the listener's read side meanwhile.
    /// `usize::MAX` accepts until then.
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    ///
    /// let port = Port::new()?;
    /// let listener = port.listen("127.0.0.1:0".parse()?, 0)?;
    /// let addr = listener.local_addr()?;
    /// port.accept_many(&listener, usize::MAX)?;
    /// let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr)).collect::<Result<_, _>>()?;
    /// for i in 0..3 {
    ///     let mut c = port.next_completion(None)?.expect("no timeout");
    ///     assert_eq!((c.op(), c.status()), (Op::Accept, Status::Ok));
    ///     let conn = port.assign(c.take_accepted().expect("an accepted stream"), 100 + i)?;
    ///     # drop(conn);
    /// }
    /// # drop(clients);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for `n == 0`; otherwise as [`Port::start_io`] for the first accept.
    pub fn accept_many(&self, isb: &Isb, n: usize) -> std::result::Result<(), StartError> {
        let mut req = Request::accept();
        if n == 0 {
            let e = Error::invalid(format!("accept_many on stream {}: zero accepts", isb.stream.label()));
            return Err(StartError::new(e, req));
        }
        req.extra().more_accepts = n - 1;
        self.start_io(isb, req)
    }

    /// Binds a TCP listener to `addr` (port 0: the kernel picks one; see
    /// [`Isb::local_addr`]) and assigns it under `token`. Start accepting with
    /// [`Port::accept`] or [`Port::accept_many`]. (To set socket options first, bind it
    /// yourself and assign a [`driver::TcpListener`].)
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// let listener = port.listen("127.0.0.1:0".parse()?, 0)?;
    /// let addr = listener.local_addr()?; // the port the kernel picked
    /// assert_ne!(addr.port(), 0);
    /// port.accept(&listener)?;
    /// let _client = std::net::TcpStream::connect(addr)?;
    /// assert!(port.next_completion(None)?.expect("no timeout").take_accepted().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Os` if the address cannot be bound (`AddrInUse`, `PermissionDenied`, ...);
    /// `PortClosed` after shutdown.
    pub fn listen(&self, addr: SocketAddr, token: u64) -> Result<Isb> {
        let l = socket::listen_tcp(addr).map_err(|e| Error::from_io(&e, format!("listen on {addr}")))?;
        self.assign(driver::TcpListener::new(l), token)
    }

    /// [`Port::listen`] for a Unix-domain stream socket bound at `path` (which must not
    /// exist yet; remove it once the listener is closed).
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    ///
    /// let path = std::env::temp_dir().join(format!("cport-doc-listen-{}.sock", std::process::id()));
    /// let port = Port::new()?;
    /// let listener = port.listen_unix(&path, 0)?;
    /// port.accept(&listener)?;
    /// let _client = std::os::unix::net::UnixStream::connect(&path)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Accept, Status::Ok));
    /// port.deassign(&listener)?;
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for a path that is empty, too long or holds a NUL byte; otherwise as
    /// [`Port::listen`].
    pub fn listen_unix(&self, path: impl AsRef<Path>, token: u64) -> Result<Isb> {
        let path = path.as_ref();
        if path.as_os_str().is_empty() {
            // Linux would "autobind" an empty path to a random abstract address.
            return Err(Error::invalid("listen on an empty Unix socket path"));
        }
        let l = socket::listen_unix(path).map_err(|e| Error::from_io(&e, format!("listen on {}", path.display())))?;
        self.assign(driver::UnixListener::new(l), token).inspect_err(|_| {
            // Refused (the port is shutting down): the bound path would block a retry.
            let _ = std::fs::remove_file(path);
        })
    }

    /// Cancels the I/O pending on `isb` (both sides). Each cancelled I/O still queues exactly
    /// one completion, with status `Cancelled`; an I/O that had already finished keeps its
    /// own completion. Returns how many I/Os were cancelled.
    ///
    /// After [`Port::shutdown`] it still works and returns 0: shutdown cancelled everything
    /// (or, while it runs, whichever of the two gets the stream first ends the I/O, and its
    /// completion still comes before `PortClosed`).
    ///
    /// ```
    /// use cport::{Port, Request, Status};
    ///
    /// let port = Port::new()?;
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 64]))?; // stays pending: the peer is quiet
    /// assert_eq!(port.cancel(&isb)?, 1);
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.status(), Status::Cancelled);
    /// assert_eq!(c.buffer().map(<[u8]>::len), Some(64), "the buffer comes back");
    /// assert_eq!(port.cancel(&isb)?, 0, "nothing left to cancel");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        self.cancel_sides(stream, &[Side::Read, Side::Write], "cancel")
    }

    /// Cancels the I/O pending on the read side of `isb` (a read, vectored read, accept or
    /// recv_from), leaving the write side alone: [`Port::cancel`] for one side. Returns 1 if
    /// an I/O was cancelled, else 0 (nothing was pending, or it had already finished).
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    ///
    /// let port = Port::new()?;
    /// let listener = port.listen("127.0.0.1:0".parse()?, 0)?;
    /// port.accept(&listener)?; // an accept is a read-side I/O
    /// assert_eq!(port.cancel_read(&listener)?, 1);
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Accept, Status::Cancelled));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::cancel`].
    pub fn cancel_read(&self, isb: &Isb) -> Result<usize> {
        let stream = self.own(isb, Op::Read)?;
        self.cancel_sides(stream, &[Side::Read], "cancel_read")
    }

    /// Cancels the I/O pending on the write side of `isb` (a write, vectored write, connect or
    /// send_to), leaving the read side alone. Returns 1 if an I/O was cancelled, else 0.
    ///
    /// ```
    /// use cport::{Port, Request, Status};
    ///
    /// let port = Port::new()?;
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 64]))?; // stays pending: the peer is quiet
    /// assert_eq!(port.cancel_write(&isb)?, 0, "nothing to cancel on the write side");
    /// assert_eq!(port.cancel_read(&isb)?, 1);
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").status(), Status::Cancelled);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::cancel`].
    pub fn cancel_write(&self, isb: &Isb) -> Result<usize> {
        let stream = self.own(isb, Op::Write)?;
        self.cancel_sides(stream, &[Side::Write], "cancel_write")
    }

    fn cancel_sides(&self, stream: &Arc<Stream>, sides: &[Side], what: &str) -> Result<usize> {
        let mut inner = stream.lock();
        if inner.driver.is_none() {
            return Err(Error::new(
                ErrorKind::NotAssigned,
                format!("{what} on stream {}: not assigned", stream.label()),
            ));
        }
        #[cfg(loom)]
        let sides = if crate::sync::planted("cancel_side_ends_both") { &[Side::Read, Side::Write][..] } else { sides };
        // Planted bug `cancel_side_ends_both`: a one-side cancel ends both sides.
        let n = self.shared.end_sides(stream, &mut inner, sides, Status::Cancelled, &mut Deliver::Queue);
        self.shared.rearm(stream, &mut inner, &mut Deliver::Queue);
        Ok(n)
    }

    /// Sets the stream's deadline: I/O still pending `after` from now ends as `TimedOut`.
    /// `None` clears the deadline. The deadline fires once; set it again for the next I/O.
    ///
    /// ```
    /// use cport::{Port, Request, Status};
    /// use std::time::Duration;
    ///
    /// let port = Port::new()?;
    /// let (ours, _quiet_peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 64]))?;
    /// port.set_timeout(&isb, Some(Duration::from_millis(5)))?;
    /// assert_eq!(port.timers(), 1);
    /// let c = port.next_completion(None)?.expect("no timeout on the wait");
    /// assert_eq!(c.status(), Status::TimedOut);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
                format!("set_timeout on stream {}: not assigned", stream.label()),
            ));
        }
        if self.shared.state.load(Ordering::SeqCst) != OPEN {
            return Err(Error::new(
                ErrorKind::PortClosed,
                format!("set_timeout on stream {}: the port was shut down", stream.label()),
            ));
        }
        if let Some((id, _)) = inner.deadline.take() {
            self.shared.disarm_timer(id);
        }
        if let Some(after) = after {
            let deadline = after_now(after);
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
    /// ```
    /// use cport::{ErrorKind, Port, Request, Status};
    /// use std::io::Read;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 64]))?;
    /// port.deassign(&isb)?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").status(), Status::Cancelled);
    /// assert_eq!(peer.read(&mut [0; 8])?, 0, "our end is closed: the peer reads end of stream");
    /// assert_eq!(port.deassign(&isb).unwrap_err().kind(), ErrorKind::NotAssigned);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an ISB of another port, `NotAssigned` if already deassigned.
    pub fn deassign(&self, isb: &Isb) -> Result<()> {
        let stream = self.own(isb, Op::Close)?;
        self.shared.release(stream, false).map(drop)
    }

    /// [`Port::deassign`], handing the stream's fd back open instead of closing it: the
    /// pending I/O completes as `Cancelled`, the fd is removed from epoll (still in the mode
    /// its driver left it, nonblocking for the built-in drivers), and it is the caller's.
    ///
    /// ```
    /// use cport::{driver, Port};
    /// use std::io::{Read, Write};
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(driver::UnixStream::new(ours), 1)?;
    /// let fd = port.deassign_fd(&isb)?;
    /// let mut back = std::os::unix::net::UnixStream::from(fd);
    /// back.set_nonblocking(false)?;
    /// peer.write_all(b"still open")?;
    /// let mut got = [0; 10];
    /// back.read_exact(&mut got)?;
    /// assert_eq!(&got, b"still open");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::deassign`]; `InvalidInput` for a driver that cannot hand its fd back
    /// ([`Driver::into_fd`]: every built-in driver can): the stream is deassigned all the
    /// same, and the fd closed with the driver.
    pub fn deassign_fd(&self, isb: &Isb) -> Result<std::os::fd::OwnedFd> {
        let stream = self.own(isb, Op::Close)?;
        let Some(driver) = self.shared.release(stream, false)? else {
            return Err(Error::new(
                ErrorKind::NotAssigned,
                format!("deassign_fd on stream {}: not assigned", isb.stream.label()),
            ));
        };
        let name = driver.name();
        driver.into_fd().ok_or_else(|| {
            Error::invalid(format!(
                "deassign_fd on stream {}: a {name} cannot hand its fd back; the stream was deassigned and the fd closed",
                isb.stream.label()
            ))
        })
    }

    /// Shuts down the sending direction of a socket stream (`shutdown(SHUT_WR)`): the peer
    /// reads end of stream after the bytes already sent, and reads on this side go on. A server
    /// does this before it closes a connection whose peer may still be sending, so that the
    /// kernel does not answer unread data with a reset that destroys replies in flight.
    ///
    /// ```
    /// use std::io::{Read, Write};
    ///
    /// let port = cport::Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.shutdown_write(&isb)?;
    /// assert_eq!(peer.read(&mut [0; 8])?, 0, "the peer reads end of stream");
    /// // Reads on this side go on.
    /// port.read(&isb, vec![0; 8], 1..=8)?;
    /// peer.write_all(b"late")?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").data(), b"late");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Busy` while a write is pending on the stream; `NotAssigned` for a closed stream;
    /// `InvalidInput` for an ISB of another port; `Os` for a stream that is not a socket.
    pub fn shutdown_write(&self, isb: &Isb) -> Result<()> {
        let stream = self.own(isb, Op::Write)?;
        let inner = stream.lock();
        let Some(driver) = inner.driver.as_ref() else {
            return Err(not_assigned(Op::Write, stream.label()));
        };
        if stream.side_state(Side::Write) == isb::BUSY {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("shutdown_write on {}: a write is in progress", stream.describe(&inner)),
            ));
        }
        socket::shutdown_write(driver.fd().as_raw_fd())
            .map_err(|e| Error::from_io(&e, format!("shutdown_write on {}", stream.describe(&inner))))
    }

    /// Closes the stream: pending reads and writes complete as `Cancelled`, then the fd is
    /// closed and an `Op::Close` completion with status `Ok` is queued, the stream's last.
    /// The ISB is then invalid, as after [`Port::deassign`].
    ///
    /// ```
    /// use cport::{Op, Port, Request, Status};
    ///
    /// let port = Port::new()?;
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 64]))?;
    /// port.close(&isb)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Read, Status::Cancelled));
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Close, Status::Ok)); // the stream's last
    /// assert!(!isb.is_assigned());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an ISB of another port, `NotAssigned` if already closed.
    /// `PortClosed` once shutdown has begun: its completion would come after `PortClosed`, so
    /// nothing is done; [`Port::deassign`] (or dropping the last handle) releases the stream.
    pub fn close(&self, isb: &Isb) -> Result<()> {
        let stream = self.own(isb, Op::Close)?;
        self.shared.release(stream, true).map(drop)
    }

    fn own<'a>(&self, isb: &'a Isb, op: Op) -> Result<&'a Arc<Stream>> {
        if isb.stream.port_key != self.shared.key() {
            return Err(Error::invalid(format!(
                "{op} on stream {}: the ISB belongs to another port",
                isb.stream.label()
            )));
        }
        Ok(&isb.stream)
    }

    /// Queues a user completion (`Op::Post`, status `Ok`) carrying `token` and `value`
    /// (IOCP's `PostQueuedCompletionStatus`).
    ///
    /// ```
    /// use cport::{Op, Port};
    ///
    /// let port = Port::new()?;
    /// port.post(9, 42)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.token(), c.value()), (Op::Post, 9, 42));
    /// assert!(c.isb().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
            s.deliver(c, &mut Deliver::Queue);
            return Ok(());
        }
        s.enter_gate()?;
        let mut c = Completion::new(token, None, Op::Post, Status::Ok);
        c.value = value;
        s.producing(|how| s.deliver(c, how));
        s.leave_gate();
        Ok(())
    }

    /// Signals as completions: `signals` (such as [`signal::SIGINT`](crate::signal::SIGINT)
    /// and [`signal::SIGTERM`](crate::signal::SIGTERM)) are blocked in the calling thread and
    /// delivered to a signalfd the port owns, assigned as a stream under `token`; each signal
    /// sent to the process that arrives is one completion (`Op::Signal`, status `Ok`, its
    /// number in [`Completion::value`]), and the next one is awaited as soon as that
    /// completion is taken. The series ends when the stream is closed or deassigned or the
    /// port shuts down: the read then pending completes `Cancelled` (a signal completion taken
    /// after that starts no new read). Do not set a deadline on the stream
    /// ([`Port::set_timeout`]): it would end the series `TimedOut`.
    ///
    /// Signals sent to the process (by `kill`, the terminal's Ctrl-C, a service manager) come
    /// this way; a signal sent to one thread (`pthread_kill`, `tgkill`, `raise`) does not, since
    /// the thread that reads the signalfd may be another. A signal of the same number sent while
    /// one is still waiting to be read is merged with it (the kernel keeps one of each).
    ///
    /// A signal is blocked only in the thread that calls this and in the threads it starts
    /// afterwards, which inherit its mask: **call it before starting other threads** (as the
    /// first thing in `main`). A thread that does not block the signal may take it the default
    /// way (for `SIGINT` and `SIGTERM`: the process ends). cport's own threads (workers) block
    /// every signal. The signals stay blocked after the stream is released (and after shutdown:
    /// a second Ctrl-C while a program drains is not seen; exit on a timer if that matters).
    /// A refused call leaves the thread's mask as it was.
    ///
    /// ```no_run
    /// use cport::{signal, Op, Port};
    ///
    /// let port = Port::new()?;
    /// let _signals = port.signals(&[signal::SIGINT, signal::SIGTERM], 0)?;
    /// // ... start the threads that take completions ...
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// if c.op() == Op::Signal {
    ///     println!("signal {}: stopping", c.value());
    ///     port.shutdown();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an empty list or a number that is not a signal one can block
    /// (`SIGKILL`, `SIGSTOP`); `Os` if the signalfd cannot be made; `PortClosed` after
    /// shutdown.
    pub fn signals(&self, signals: &[i32], token: u64) -> Result<Isb> {
        let what = || format!("signals {signals:?}");
        // The signals are blocked last, once everything else has worked: a refused call
        // leaves the thread's mask as it was.
        let fd = crate::sys::signals::signalfd(signals).map_err(|e| Error::from_io(&e, what()))?;
        let isb = self.assign(driver::SignalFd::new(fd), token)?;
        let req = Request::new(Kind::Signal { signo: 0 });
        if let Err(e) = self.start_io(&isb, req) {
            let _ = self.deassign(&isb);
            return Err(e.into_parts().0);
        }
        if let Err(e) = crate::sys::signals::block(signals) {
            let _ = self.deassign(&isb);
            return Err(Error::from_io(&e, what()));
        }
        Ok(isb)
    }

    /// A timer: after `after`, a completion (`Op::Timer`, status `Ok`) carrying `token` and
    /// `value` is queued, as for [`Port::post`]. Exactly one completion comes of each timer:
    /// `Ok` when it fires, or `Cancelled` when [`Port::cancel_timer`] or shutdown ends it
    /// first. It lives on the port's timing wheel (arm and cancel are O(1); one timerfd fires
    /// at the earliest deadline) and fires no earlier than `after`, within the wheel's
    /// resolution (1 ms) and the time a thread takes to look. For a periodic task, arm the next
    /// timer when a completion is taken.
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    /// use std::time::Duration;
    ///
    /// let port = Port::new()?;
    /// port.timer(7, 42, Duration::from_millis(5))?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status(), c.token(), c.value()), (Op::Timer, Status::Ok, 7, 42));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `PortClosed` after shutdown (no timer is made).
    pub fn timer(&self, token: u64, value: u64, after: Duration) -> Result<Timer> {
        self.timer_at(token, value, after_now(after))
    }

    /// [`Port::timer`] that fires at `at` (at once if it has passed).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let port = cport::Port::new()?;
    /// let at = Instant::now() + Duration::from_millis(2);
    /// port.timer_at(1, 0, at)?;
    /// port.next_completion(None)?.expect("no timeout");
    /// assert!(Instant::now() >= at);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::timer`].
    pub fn timer_at(&self, token: u64, value: u64, at: Instant) -> Result<Timer> {
        self.shared.user_timer(token, value, at)
    }

    /// Cancels a timer that has not fired: its completion comes at once, with status
    /// `Cancelled`. Returns whether it did; `false` when the timer had already ended (fired,
    /// or cancelled before), and then nothing more comes of it.
    ///
    /// ```
    /// use cport::{Op, Port, Status};
    /// use std::time::Duration;
    ///
    /// let port = Port::new()?;
    /// let t = port.timer(7, 0, Duration::from_secs(60))?;
    /// assert!(port.cancel_timer(&t)?);
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Timer, Status::Cancelled));
    /// assert!(!port.cancel_timer(&t)?, "it has ended");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for a timer of another port. (After shutdown every timer has ended, so
    /// this returns `Ok(false)`.)
    pub fn cancel_timer(&self, timer: &Timer) -> Result<bool> {
        self.shared.producing(|how| self.shared.cancel_user_timer(timer, how))
    }

    /// Waits for the next completion, at most `timeout` (`None`: no limit), and says what
    /// ended the wait: a [`Next::Completion`], [`Next::Woken`] by [`Port::wakeup`], or
    /// [`Next::TimedOut`] (never with `timeout` `None`).
    ///
    /// Any number of threads may wait at once; each completion goes to exactly one of them.
    /// While it waits, the calling thread may poll epoll and do the I/O of what it reports (one
    /// thread at a time does); the completions of that batch it returns from this call and the
    /// next ones, in the order they finished, unless it stays away long, when another thread
    /// takes them over. A thread that stops calling for good may leave them for up to a few
    /// milliseconds; when it exits they are handed on at once.
    ///
    /// ```
    /// use cport::{Next, Port};
    ///
    /// let port = Port::new()?;
    /// port.post(1, 42)?;
    /// port.wakeup();
    /// match port.next(None)? {
    ///     Next::Completion(c) => assert_eq!(c.value(), 42),
    ///     Next::Woken | Next::TimedOut => unreachable!("a queued completion comes first"),
    /// }
    /// assert!(matches!(port.next(None)?, Next::Woken));
    /// # Ok::<(), cport::Error>(())
    /// ```
    ///
    /// # Errors
    /// `PortClosed` once the port is shut down and every completion has been taken.
    pub fn next(&self, timeout: Option<Duration>) -> Result<Next> {
        self.shared.next(timeout, None)
    }

    /// [`Port::next`] as an `Option`: `Ok(None)` when the timeout passed **or** when
    /// [`Port::wakeup`] woke this thread, which can happen with `timeout` `None` too. A loop
    /// that must tell the two apart uses [`Port::next`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let port = cport::Port::new()?;
    /// assert!(port.next_completion(Some(Duration::from_millis(1)))?.is_none(), "timed out");
    /// port.post(1, 7)?;
    /// let c = port.next_completion(Some(Duration::from_millis(1)))?.expect("the post");
    /// assert_eq!(c.value(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Port::next`].
    pub fn next_completion(&self, timeout: Option<Duration>) -> Result<Option<Completion>> {
        Ok(self.shared.next(timeout, None)?.completion())
    }

    /// Takes a completion if one is queued, without waiting.
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// assert!(port.try_next_completion()?.is_none());
    /// port.post(1, 0)?;
    /// assert!(port.try_next_completion()?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    /// ```
    /// let port = cport::Port::new()?;
    /// for value in 0..3 {
    ///     port.post(1, value)?;
    /// }
    /// let mut batch = Vec::new();
    /// let mut taken = 0;
    /// while taken < 3 {
    ///     taken += port.next_completions(&mut batch, 8, None)?;
    /// }
    /// assert_eq!(batch.iter().map(|c| c.value()).collect::<Vec<_>>(), [0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for `max == 0`; otherwise as [`Port::next_completion`].
    pub fn next_completions(&self, out: &mut Vec<Completion>, max: usize, timeout: Option<Duration>) -> Result<usize> {
        Ok(self.next_batch(out, max, timeout)?.unwrap_or(0))
    }

    /// [`Port::next_completions`], saying why a wait that took nothing ended: `Ok(n)` with
    /// `n > 0` completions appended, or `Err` with [`Next::Woken`] or [`Next::TimedOut`].
    pub(crate) fn next_batch(
        &self,
        out: &mut Vec<Completion>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<std::result::Result<usize, Next>> {
        if max == 0 {
            return Err(Error::invalid("next_completions with max 0"));
        }
        let before = out.len();
        match self.shared.next(timeout, Some((&mut *out, before + max - 1)))? {
            Next::Completion(first) => {
                out.insert(before, first);
                Ok(Ok(out.len() - before))
            }
            why => Ok(Err(why)),
        }
    }

    /// Makes one thread waiting in [`Port::next`] return [`Next::Woken`] (`Ok(None)` from
    /// `next_completion`) at once; with none waiting, the next one that would wait returns at
    /// once instead. Completions already queued are taken first. An MPI-style progress loop
    /// uses it to make a waiting thread look at other work.
    ///
    /// ```
    /// use cport::{Next, Port};
    ///
    /// let port = Port::new()?;
    /// let waiter = {
    ///     let port = port.clone();
    ///     std::thread::spawn(move || port.next(None))
    /// };
    /// port.wakeup(); // before or after the thread begins to wait: it returns `Woken` either way
    /// assert!(matches!(waiter.join().expect("no panic")?, Next::Woken));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wakeup(&self) {
        self.shared.wait.wakeup(&self.shared);
    }

    /// Shuts the port down: new I/O, assigns and posts are refused with `PortClosed`, every
    /// pending I/O completes as `Cancelled`, and waiters drain the queued completions; after
    /// the last one, `next_completion` returns `PortClosed`, and no completion is ever queued
    /// after that. Streams stay assigned until deassigned or the last handle is dropped.
    /// Calling it again does nothing. What every call does from then on is listed in one
    /// table in the crate docs ("Shutdown").
    ///
    /// ```
    /// use cport::{ErrorKind, Port};
    ///
    /// let port = Port::new()?;
    /// port.post(1, 0)?;
    /// port.shutdown();
    /// assert_eq!(port.post(2, 0).unwrap_err().kind(), ErrorKind::PortClosed);
    /// // What was queued is still taken, then every wait ends with `PortClosed`.
    /// assert_eq!(port.next_completion(None)?.expect("queued before the shutdown").token(), 1);
    /// assert_eq!(port.next_completion(None).unwrap_err().kind(), ErrorKind::PortClosed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// The stream whose token (`Token::to_u64`) is `token`, if it is assigned to this port.
    #[cfg(feature = "ffi")]
    pub(crate) fn isb_of(&self, token: u64) -> Option<Isb> {
        let stream = self.shared.streams.get(crate::token::Token::from_u64(token)?)?;
        Some(Isb { stream })
    }

    /// Whether one of this port's streams holds the fd number `fd` (a scan of the table: for
    /// the C API's failure paths, which must not close another stream's fd).
    #[cfg(feature = "ffi")]
    pub(crate) fn holds_fd(&self, fd: std::os::fd::RawFd) -> bool {
        self.shared.streams.values().iter().any(|s| s.lock().driver.as_ref().is_some_and(|d| d.fd().as_raw_fd() == fd))
    }

    /// The stand-in kernel of this port, for the loom models.
    #[cfg(loom)]
    pub fn kernel(&self) -> crate::model::Kernel {
        self.shared.selector.kernel()
    }

    /// Number of threads waiting in `next_completion` right now with nothing to do: parked,
    /// or blocked in `epoll_wait` for I/O.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let port = cport::Port::new()?;
    /// let waiter = {
    ///     let port = port.clone();
    ///     std::thread::spawn(move || port.next_completion(None))
    /// };
    /// while port.waiters() == 0 {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// port.post(1, 0)?;
    /// assert!(waiter.join().expect("no panic")?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn waiters(&self) -> usize {
        self.shared.wait.idle_waiters()
    }

    /// Number of armed timers (stream deadlines, requests' timeouts, accept back-offs and
    /// user timers).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let port = cport::Port::new()?;
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.set_timeout(&isb, Some(Duration::from_secs(60)))?;
    /// assert_eq!(port.timers(), 1);
    /// port.set_timeout(&isb, None)?;
    /// assert_eq!(port.timers(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timers(&self) -> usize {
        lock(&self.shared.timers).wheel.len()
    }

    /// Whether [`Port::shutdown`] was called (or began).
    ///
    /// ```
    /// let port = cport::Port::new()?;
    /// assert!(!port.is_shut_down());
    /// port.shutdown();
    /// assert!(port.is_shut_down());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) != OPEN
    }
}

/// The instant `after` from now; a duration past any `Instant` gives one about 136 years away,
/// as good as never.
fn after_now(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(u32::MAX.into()))
}

/// The first address `addr` resolves to (a host name through the system's resolver, which may
/// block).
fn resolve(addr: impl ToSocketAddrs) -> Result<SocketAddr> {
    let mut all = addr.to_socket_addrs().map_err(|e| Error::from_io(&e, "connect: resolving the address"))?;
    all.next().ok_or_else(|| Error::invalid("connect: the address resolved to nothing"))
}

fn not_assigned(op: Op, token: Label) -> Error {
    Error::new(
        ErrorKind::NotAssigned,
        format!("{op} on stream {token}: the stream is not assigned (deassigned or closed)"),
    )
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
    /// The identity ISBs and timers carry to recognise their port: a serial number, never
    /// reused in the process (an address could be, by a port made after this one is freed).
    fn key(&self) -> usize {
        self.serial
    }

    /// How messages name the stream of `token` (see [`Label`]).
    fn label(&self, token: u64) -> Label {
        Label { token, c: self.c_tokens }
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
