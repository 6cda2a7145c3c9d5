//! The storm: several threads start random I/O on many streams of every kind (TCP, Unix, pipes,
//! UDP, listeners, connects, a driver written here) on a worker port and on a polling port,
//! while peers write, read, end and reset, and other threads take completions; then the port is
//! shut down in the middle of it. A second storm runs the session layer the same way. Checked:
//!
//! - every started I/O completes exactly once, before `PortClosed`, and gives its buffers back;
//! - no completion of a stream is taken after its Close completion, none after `PortClosed`;
//! - calls are refused only for a reason the test can see (`Busy` with an I/O outstanding on
//!   the side, `NotAssigned` after close or deassign, `PortClosed` after shutdown);
//! - what the port read is a prefix of what the peer sent (all of it once a read saw end of
//!   stream), what the peer read is exactly what the port's writes sent, datagrams arrive whole
//!   and once;
//! - every post is delivered once; a user driver is attached and detached exactly once;
//! - every user timer (`Port::timer`, `timer_at`, armed with random delays of 0 to 20 ms and
//!   cancelled at random) completes exactly once with its token and value: `Ok` no earlier
//!   than asked and never after a `cancel_timer` that returned true, `Cancelled` only after
//!   one did or shutdown began; `cancel_timer` says true only for a timer not yet taken, and
//!   never once shutdown returned; `timer` is refused only with `PortClosed`, after shutdown;
//! - signals streams (`Port::signals` on `STORM_SIGNAL`, raised for the process by the
//!   operators): every `Ok` completion carries that signal, there are never more of them than
//!   raises (on a stream, than raises since it was made, plus the one that may have been
//!   pending), each series is `Ok`s and then at most one end (`Cancelled` after a cancel, close,
//!   deassign or shutdown; `TimedOut` after a deadline), taken last but for the Close, and
//!   every read the port started ends (a series may end with no `Cancelled` only when its last
//!   `Ok` was taken as the stream was released: see `Rec::signal_reads_unsure`);
//! - no completion is taken by a wait that began after another thread was told `PortClosed`;
//! - fds and threads return to their baseline once the last handle is dropped.
//!
//! `CPORT_STORM_SECS` sets how long each storm runs (default 1); `CPORT_STORM_SEED` replays a
//! seed (the seed of every run is printed, and named in every failure). A seed fixes each
//! thread's choices, not how the threads interleave.

mod util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cport::{driver, Completion, Driver, ErrorKind, Isb, Op, Port, Request, Status, Timer};
use util::{open_fds, pattern, serial, threads_named, Rng};

static SERIAL: Mutex<()> = Mutex::new(());

/// Live streams an operator keeps the pool at.
const POOL: usize = 24;
/// Operators (threads starting I/O and acting as peers) and takers (threads in
/// `next_completion`).
const OPERATORS: usize = 3;
const TAKERS: usize = 2;

/// The signal of the signals streams. Its default action is to be ignored, so a thread that
/// took it the default way would drop it and the process cannot die of it.
const STORM_SIGNAL: i32 = libc::SIGWINCH;

/// Blocks `STORM_SIGNAL` in the process's first thread before `main` (and so before the test
/// harness starts any thread; every thread inherits its creator's mask). Without it the
/// signals streams would see nothing: `kill` on the process checks the first thread's mask,
/// and a signal whose default action is to be ignored, blocked by no thread that could take
/// it, is dropped when it is sent. With it blocked everywhere, a raised signal stays pending
/// for the process until one of the port's signalfds reads it.
#[used]
#[link_section = ".init_array"]
static BLOCK_STORM_SIGNAL: extern "C" fn() = block_storm_signal;

extern "C" fn block_storm_signal() {
    let set = storm_sigset();
    // SAFETY: a valid, initialised set; a null old-mask pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// The set holding `STORM_SIGNAL` alone.
fn storm_sigset() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigaddset takes a valid set and a
    // valid signal number.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), STORM_SIGNAL);
        set.assume_init()
    }
}

/// Takes `STORM_SIGNAL` if it is pending for the process (a storm's raises that no signals
/// stream read), so that the next storm counts only its own. Returns how many were taken.
fn drain_storm_signal() -> usize {
    let set = storm_sigset();
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let mut n = 0;
    // SAFETY: a valid set and timeout; a null siginfo pointer is allowed. The signal is
    // blocked in this thread (`block_storm_signal`), as sigtimedwait requires.
    while unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) } == STORM_SIGNAL {
        n += 1;
    }
    n
}

/// The threads of the process that do not block `STORM_SIGNAL` (from /proc: `SigBlk`).
fn threads_taking_storm_signal() -> Vec<String> {
    let mut open = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .unwrap_or(0);
        if blocked & (1 << (STORM_SIGNAL - 1)) == 0 {
            let name = status.lines().next().unwrap_or("").to_string();
            open.push(format!("{} ({name})", task.file_name().to_string_lossy()));
        }
    }
    open
}

struct Config {
    seed: u64,
    run: Duration,
}

fn config() -> Config {
    let seed = match std::env::var("CPORT_STORM_SEED") {
        Ok(s) => s.parse().expect("CPORT_STORM_SEED must be a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    let secs: f64 = std::env::var("CPORT_STORM_SECS").map_or(1.0, |s| s.parse().expect("CPORT_STORM_SECS"));
    println!("storm seed {seed} (replay with CPORT_STORM_SEED={seed}), {secs} s per storm");
    Config { seed, run: Duration::from_secs_f64(secs) }
}

// ---------------------------------------------------------------------------------------------
// The streams and their ledger.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A TCP pair: ours assigned, the peer a std stream.
    Tcp,
    /// A Unix-domain pair.
    Unix,
    /// Our end of a Unix pair, through the driver written here.
    User,
    /// The read end of a pipe (the peer writes).
    PipeIn,
    /// The write end of a pipe (the peer reads).
    PipeOut,
    /// A UDP socket whose peer is another UDP socket.
    Udp,
    TcpListener,
    UnixListener,
    /// A stream from an accept or a `Port::connect`: no peer the test reads.
    Loose,
    /// A `Port::signals` stream on `STORM_SIGNAL`: the port keeps a read pending; its "peer" is
    /// any operator raising the signal.
    Signals,
}

impl Kind {
    fn ops(self) -> &'static [Op] {
        match self {
            Kind::Tcp | Kind::Unix | Kind::User | Kind::Loose => {
                &[Op::Read, Op::Read, Op::ReadVectored, Op::Write, Op::Write, Op::WriteVectored]
            }
            Kind::PipeIn => &[Op::Read, Op::ReadVectored],
            Kind::PipeOut => &[Op::Write, Op::WriteVectored],
            Kind::Udp => &[Op::RecvFrom, Op::SendTo],
            Kind::TcpListener | Kind::UnixListener => &[Op::Accept],
            // Its driver supports no I/O a request can ask for: refused (`InvalidInput`).
            Kind::Signals => &[Op::Read],
        }
    }
}

/// The test's end of a stream.
enum PeerEnd {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A pipe end (the write end for `PipeIn`, the read end for `PipeOut`).
    Pipe(File),
    Udp(UdpSocket),
    None,
}

impl PeerEnd {
    fn io(&mut self) -> Option<&mut dyn ReadWrite> {
        match self {
            PeerEnd::Tcp(s) => Some(s),
            PeerEnd::Unix(s) => Some(s),
            PeerEnd::Pipe(f) => Some(f),
            PeerEnd::Udp(_) | PeerEnd::None => None,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Released {
    Closed,
    Deassigned,
}

/// An I/O that was started and whose completion has not been taken.
#[derive(Debug)]
struct Outstanding {
    seq: u64,
    op: Op,
    /// The buffer's address (the first buffer's for vectored I/O), 0 for none.
    key: usize,
    bufs: usize,
    len: usize,
}

/// Everything the test knows of one stream, under its own lock.
struct Rec {
    id: u64,
    kind: Kind,
    isb: Isb,
    peer: PeerEnd,
    outstanding: Vec<Outstanding>,
    next_seq: u64,
    /// What the port's reads got, and its writes sent, by start order.
    read_log: BTreeMap<u64, Vec<u8>>,
    write_log: BTreeMap<u64, Vec<u8>>,
    /// What the peer sent and what it read.
    peer_sent: Vec<u8>,
    peer_read: Vec<u8>,
    /// Datagrams (UDP): sent by the peer, by the port, and read by the peer.
    grams_peer_sent: HashSet<Vec<u8>>,
    grams_port_sent: HashSet<Vec<u8>>,
    grams_peer_read: Vec<Vec<u8>>,
    grams_port_read: Vec<Vec<u8>>,
    /// The peer stopped sending (end of stream), went away (closed), or reset the connection.
    peer_fin: bool,
    peer_gone: bool,
    peer_reset: bool,
    /// A read of ours saw end of stream.
    saw_eof: bool,
    /// We shut down our sending side.
    our_fin: bool,
    released: Option<Released>,
    /// The epoch at which the Close completion was recorded (see `Storm::epoch`).
    close_epoch: Option<u64>,
    /// A cancel ended an I/O (`Port::cancel` returned more than 0); a deadline was set.
    cancelled: bool,
    deadline_set: bool,
    /// Signals streams: the `Ok` completions, and `Storm::raises` before the stream was made.
    signals: u64,
    raises_before: u64,
    /// The series' reads known to have started less its completions recorded. Takers record
    /// in any order (a completion taken first may be recorded after the next), so it may dip
    /// below zero for a while; at the end it is 0, or down to `-signal_reads_unsure`.
    signal_reads: i64,
    /// Reads the port may or may not have started: the next read after an `Ok` taken while
    /// the stream's release (or shutdown) was under way starts only if the take came first.
    /// Each ends in one `Cancelled`, or was never started: as `Port::signals` documents, a
    /// release (or shutdown) cancels the read then pending, and an `Ok` still queued then has
    /// none after it, so that series ends with no `Cancelled` (counted in the summary).
    signal_reads_unsure: i64,
    /// The epoch at which the series' end (its one `Cancelled` or `TimedOut`) was recorded.
    series_end: Option<u64>,
}

impl Rec {
    fn new(id: u64, kind: Kind, isb: Isb, peer: PeerEnd) -> Rec {
        Rec {
            id,
            kind,
            isb,
            peer,
            outstanding: Vec::new(),
            next_seq: 0,
            read_log: BTreeMap::new(),
            write_log: BTreeMap::new(),
            peer_sent: Vec::new(),
            peer_read: Vec::new(),
            grams_peer_sent: HashSet::new(),
            grams_port_sent: HashSet::new(),
            grams_peer_read: Vec::new(),
            grams_port_read: Vec::new(),
            peer_fin: false,
            peer_gone: false,
            peer_reset: false,
            saw_eof: false,
            our_fin: false,
            released: None,
            close_epoch: None,
            cancelled: false,
            deadline_set: false,
            signals: 0,
            raises_before: 0,
            signal_reads: 0,
            signal_reads_unsure: 0,
            series_end: None,
        }
    }

    fn outstanding_on(&self, op: Op) -> bool {
        self.outstanding.iter().any(|o| side(o.op) == side(op) && o.op != Op::Close)
    }
}

fn side(op: Op) -> u8 {
    match op {
        Op::Read | Op::ReadVectored | Op::Accept | Op::RecvFrom => 0,
        Op::Write | Op::WriteVectored | Op::Connect | Op::SendTo => 1,
        _ => 2,
    }
}

/// Counts of the driver written here.
#[derive(Default)]
struct DriverCounts {
    made: AtomicUsize,
    attached: AtomicUsize,
    detached: AtomicUsize,
    dropped: AtomicUsize,
    /// Contract breaks seen by a driver (a second detach, a drop after attach without detach).
    broken: Mutex<Vec<String>>,
}

/// A user-written driver: a Unix stream, doing its own reads and writes, counting its life.
struct UserDriver {
    sock: UnixStream,
    counts: Arc<DriverCounts>,
    attached: bool,
    detached: bool,
}

impl UserDriver {
    fn new(sock: UnixStream, counts: &Arc<DriverCounts>) -> UserDriver {
        counts.made.fetch_add(1, SeqCst);
        UserDriver { sock, counts: counts.clone(), attached: false, detached: false }
    }
}

impl Driver for UserDriver {
    fn name(&self) -> &'static str {
        "storm driver"
    }
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.sock)
    }
    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::Read | Op::ReadVectored | Op::Write | Op::WriteVectored)
    }
    fn attach(&mut self) -> io::Result<()> {
        self.sock.set_nonblocking(true)?;
        self.attached = true;
        self.counts.attached.fetch_add(1, SeqCst);
        Ok(())
    }
    fn detach(&mut self) {
        if self.detached {
            self.counts.broken.lock().unwrap().push("detached twice".into());
        }
        self.detached = true;
        self.counts.detached.fetch_add(1, SeqCst);
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.sock.read_vectored(bufs)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_vectored(bufs)
    }
}

impl Drop for UserDriver {
    fn drop(&mut self) {
        if self.attached && !self.detached {
            self.counts.broken.lock().unwrap().push("dropped after attach without detach".into());
        }
        self.counts.dropped.fetch_add(1, SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// User timers and their ledger.

/// A timer the storm made, known by its (token, value), both random.
struct TimerRec {
    /// `None` while `Port::timer` is being called.
    handle: Option<Timer>,
    /// No `Ok` completion may be taken before this.
    not_before: Instant,
    /// Calls of `cancel_timer` on it that returned true.
    cancelled: u32,
    /// Its completions: status, whether shutdown had begun when it was taken, when.
    taken: Vec<(Status, bool, Instant)>,
}

#[derive(Default)]
struct TimerBook {
    made: HashMap<(u64, u64), TimerRec>,
    /// Keys in the order made: cancels pick among the latest, armed or ended.
    order: Vec<(u64, u64)>,
}

// ---------------------------------------------------------------------------------------------
// The storm on a port.

struct Storm {
    port: Port,
    seed: u64,
    recs: RwLock<Vec<Arc<Mutex<Rec>>>>,
    /// Shutdown was called (set just before the call), and returned.
    shut: AtomicBool,
    shut_done: AtomicBool,
    /// A taker was told `PortClosed`: a wait that begins after this must be told it too.
    closed_seen: AtomicBool,
    /// Operators stop.
    stop: AtomicBool,
    /// Bumped when a Close completion is recorded; a taker reads it before it waits. A taker
    /// that read an epoch later than a stream's Close and then takes a completion of that
    /// stream took it after the Close completion was taken, so it was queued after it.
    epoch: AtomicU64,
    /// Posted values: +1 when `post` returned Ok, -1 when its completion was taken.
    posts: Mutex<HashMap<u64, i64>>,
    next_post: AtomicU64,
    driver_counts: Arc<DriverCounts>,
    timers: Mutex<TimerBook>,
    /// `STORM_SIGNAL`s raised (counted before each `kill`), `Ok` signal completions taken,
    /// signals streams made.
    raises: AtomicU64,
    signals_taken: AtomicU64,
    signal_streams: AtomicUsize,
    /// Where `Port::connect` goes: a std listener (accepted by operators), a closed port, a
    /// Unix path with nothing behind it.
    connect_to: SocketAddr,
    connect_listener: TcpListener,
    refused: SocketAddr,
    missing_path: std::path::PathBuf,
    listener_paths: Mutex<Vec<std::path::PathBuf>>,
    /// Clients of our listeners and connections accepted from `connect_listener`, kept alive
    /// (and dropped at random) so the loose streams see data, ends and hang-ups.
    clients: Mutex<Vec<Box<dyn Send>>>,
    /// Breaks of a promise, with their context; the run fails if any.
    broken: Mutex<Vec<String>>,
    started: AtomicUsize,
    completed: AtomicUsize,
}

impl Storm {
    fn fail(&self, what: String) {
        let mut b = self.broken.lock().unwrap();
        if b.len() < 50 {
            b.push(what);
        }
    }

    fn rec(&self, token: u64) -> Option<Arc<Mutex<Rec>>> {
        let recs = self.recs.read().unwrap();
        recs.get(token as usize).cloned()
    }

    /// Assigns a stream made by `make` (given its token) and records it. `first`: the I/O the
    /// call started itself (a Connect from `Port::connect`, the first read of
    /// `Port::signals`), outstanding from the start.
    fn add(&self, kind: Kind, first: Option<Op>, make: impl FnOnce(u64) -> cport::Result<(Isb, PeerEnd)>) {
        // Ids are indices into `recs`: assign under the table's lock, so a completion never
        // names a stream whose record is not there yet.
        let mut recs = self.recs.write().unwrap();
        let id = recs.len() as u64;
        let raises_before = self.raises.load(SeqCst);
        match make(id) {
            Ok((isb, peer)) => {
                let mut rec = Rec::new(id, kind, isb, peer);
                rec.raises_before = raises_before;
                if first == Some(Op::Signal) {
                    rec.signal_reads = 1;
                    self.started.fetch_add(1, SeqCst);
                } else if let Some(op) = first {
                    rec.next_seq = 1;
                    rec.outstanding.push(Outstanding { seq: 0, op, key: 0, bufs: 0, len: 0 });
                    self.started.fetch_add(1, SeqCst);
                }
                if kind == Kind::Signals {
                    self.signal_streams.fetch_add(1, SeqCst);
                }
                recs.push(Arc::new(Mutex::new(rec)));
            }
            Err(e) => {
                if !(e.kind() == ErrorKind::PortClosed && self.shut.load(SeqCst)) {
                    self.fail(format!("assigning a {kind:?} stream: {e}"));
                }
            }
        }
    }

    fn live(&self) -> Vec<Arc<Mutex<Rec>>> {
        self.recs.read().unwrap().iter().filter(|r| r.lock().unwrap().released.is_none()).cloned().collect()
    }

    // ---- operators ----

    fn new_stream(&self, rng: &mut Rng) {
        let port = &self.port;
        if rng.below(32) == 0 {
            return self
                .add(Kind::Signals, Some(Op::Signal), |id| Ok((port.signals(&[STORM_SIGNAL], id)?, PeerEnd::None)));
        }
        match rng.below(9) {
            0 | 1 => self.add(Kind::Tcp, None, |id| {
                let (a, b) = util::tcp_pair();
                b.set_nonblocking(true).unwrap();
                Ok((port.assign(driver::TcpStream::new(a), id)?, PeerEnd::Tcp(b)))
            }),
            2 => self.add(Kind::Unix, None, |id| {
                let (a, b) = util::pair();
                b.set_nonblocking(true).unwrap();
                Ok((port.assign(driver::UnixStream::new(a), id)?, PeerEnd::Unix(b)))
            }),
            3 | 4 => self.add(Kind::User, None, |id| {
                let (a, b) = util::pair();
                b.set_nonblocking(true).unwrap();
                Ok((port.assign(UserDriver::new(a, &self.driver_counts), id)?, PeerEnd::Unix(b)))
            }),
            5 => self.add(Kind::PipeIn, None, |id| {
                let (r, w) = util::pipe();
                cport_testkit::set_nonblocking(w.as_raw_fd()).unwrap();
                Ok((port.assign(driver::Fd::new(r), id)?, PeerEnd::Pipe(File::from(w))))
            }),
            6 => self.add(Kind::PipeOut, None, |id| {
                let (r, w) = util::pipe();
                cport_testkit::set_nonblocking(r.as_raw_fd()).unwrap();
                Ok((port.assign(driver::Fd::new(w), id)?, PeerEnd::Pipe(File::from(r))))
            }),
            7 => self.add(Kind::Udp, None, |id| {
                let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
                let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
                peer.connect(ours.local_addr().unwrap()).unwrap();
                peer.set_nonblocking(true).unwrap();
                Ok((port.assign(driver::UdpSocket::new(ours), id)?, PeerEnd::Udp(peer)))
            }),
            _ => {
                if rng.below(2) == 0 {
                    self.add(Kind::TcpListener, None, |id| {
                        let l = TcpListener::bind("127.0.0.1:0").unwrap();
                        Ok((port.assign(driver::TcpListener::new(l), id)?, PeerEnd::None))
                    })
                } else {
                    let path = util::socket_path("storm");
                    self.listener_paths.lock().unwrap().push(path.clone());
                    self.add(Kind::UnixListener, None, |id| {
                        let l = UnixListener::bind(&path).unwrap();
                        Ok((port.assign(driver::UnixListener::new(l), id)?, PeerEnd::None))
                    })
                }
            }
        }
    }

    fn connect(&self, rng: &mut Rng) {
        let port = &self.port;
        let to = rng.below(4);
        self.add(Kind::Loose, Some(Op::Connect), |id| match to {
            0 | 1 => port.connect(self.connect_to, id).map(|i| (i, PeerEnd::None)),
            2 => port.connect(self.refused, id).map(|i| (i, PeerEnd::None)),
            _ => port.connect_unix(&self.missing_path, id).map(|i| (i, PeerEnd::None)),
        });
        // The std side of the connects that reached the listener: keep some, drop some.
        while let Ok((s, _)) = self.connect_listener.accept() {
            if rng.below(3) != 0 {
                self.clients.lock().unwrap().push(Box::new(s));
            }
        }
    }

    /// One random action of an operator.
    fn act(&self, rng: &mut Rng) {
        // Timers and raised signals come on top of the other actions (cheap calls), whose mix
        // stays as it was: taking their share from the streams' actions made the storm catch
        // the planted `close_not_deferred` less often.
        match rng.below(100) {
            0..=3 => self.arm_timer(rng),
            4..=5 => self.cancel_timer(rng),
            6 => self.raise(),
            _ => {}
        }
        let live = self.live();
        if live.len() < POOL && rng.below(4) == 0 {
            return self.new_stream(rng);
        }
        match rng.below(100) {
            0..=2 => return self.connect(rng),
            3..=5 => return self.post(),
            6 => return self.port.wakeup(),
            7..=9 => return self.churn_clients(rng),
            _ => {}
        }
        let Some(rec) = live.get(rng.below(live.len().max(1) as u64) as usize) else { return };
        let mut r = rec.lock().unwrap();
        if r.released.is_some() {
            return;
        }
        match rng.below(100) {
            0..=44 if r.kind == Kind::Signals && rng.below(4) != 0 => self.raise(),
            0..=44 => {
                let ops = r.kind.ops();
                let op = ops[rng.below(ops.len() as u64) as usize];
                self.start(&mut r, op, rng);
            }
            45..=69 => self.peer_act(&mut r, rng),
            70..=76 => match self.port.cancel(&r.isb) {
                Ok(n) => r.cancelled |= n > 0,
                Err(e) => self.fail(format!("cancel on stream {}: {e}", r.id)),
            },
            77..=84 => {
                let after = match rng.below(4) {
                    0 => None,
                    n => Some(Duration::from_micros(rng.below(500 * n))),
                };
                match self.port.set_timeout(&r.isb, after) {
                    Ok(()) => r.deadline_set |= after.is_some(),
                    Err(e) if e.kind() == ErrorKind::PortClosed && self.shut.load(SeqCst) => {}
                    Err(e) => self.fail(format!("set_timeout on stream {}: {e}", r.id)),
                }
            }
            85..=88 => {
                let seq = r.next_seq;
                match self.port.close(&r.isb) {
                    Ok(()) => {
                        r.released = Some(Released::Closed);
                        r.next_seq += 1;
                        r.outstanding.push(Outstanding { seq, op: Op::Close, key: 0, bufs: 0, len: 0 });
                        self.started.fetch_add(1, SeqCst);
                    }
                    Err(e) if e.kind() == ErrorKind::PortClosed && self.shut.load(SeqCst) => {}
                    Err(e) => self.fail(format!("close on stream {}: {e}", r.id)),
                }
            }
            89..=91 => match self.port.deassign(&r.isb) {
                Ok(()) => r.released = Some(Released::Deassigned),
                Err(e) => self.fail(format!("deassign on stream {}: {e}", r.id)),
            },
            92..=93 if matches!(r.kind, Kind::Tcp | Kind::Unix | Kind::User) && !r.our_fin => {
                match self.port.shutdown_write(&r.isb) {
                    Ok(()) => r.our_fin = true,
                    Err(e) if e.kind() == ErrorKind::Busy => {}
                    // The peer reset the connection: there is no sending side left to shut.
                    Err(e) if r.peer_reset && e.kind() == ErrorKind::Os(io::ErrorKind::NotConnected) => {}
                    Err(e) => self.fail(format!("shutdown_write on stream {}: {e}", r.id)),
                }
            }
            _ => self.peer_act(&mut r, rng),
        }
    }

    /// Raises `STORM_SIGNAL` for the process: some signalfd of the port reads it, once it has a
    /// read pending (every thread blocks it), unless it merges with one already pending.
    fn raise(&self) {
        self.raises.fetch_add(1, SeqCst);
        // SAFETY: kill with this process's id and a valid signal number; its default action is
        // to be ignored, and every thread blocks it (`block_storm_signal`).
        if unsafe { libc::kill(libc::getpid(), STORM_SIGNAL) } != 0 {
            self.fail(format!("raising signal {STORM_SIGNAL}: {}", io::Error::last_os_error()));
        }
    }

    /// Arms a timer with a random token, value and delay (0 to 20 ms; now and then with
    /// `timer_at`, an instant in the past among them).
    fn arm_timer(&self, rng: &mut Rng) {
        let key = (rng.next(), rng.next());
        let after = if rng.below(10) == 0 { Duration::ZERO } else { Duration::from_micros(rng.below(20_001)) };
        let style = rng.below(8);
        let now = Instant::now();
        let at = match style {
            0 => now.checked_sub(Duration::from_millis(1)).unwrap_or(now),
            _ => now + after,
        };
        {
            // In the book before the call: a timer may fire, and be taken, before it returns.
            let mut book = self.timers.lock().unwrap();
            if book.made.contains_key(&key) {
                return;
            }
            book.made.insert(key, TimerRec { handle: None, not_before: at, cancelled: 0, taken: Vec::new() });
            book.order.push(key);
        }
        let shut_done = self.shut_done.load(SeqCst);
        let made = if style < 2 { self.port.timer_at(key.0, key.1, at) } else { self.port.timer(key.0, key.1, after) };
        let mut book = self.timers.lock().unwrap();
        match made {
            Ok(t) => {
                if shut_done {
                    self.fail(format!("timer {:#x}/{:#x} armed after shutdown returned", key.0, key.1));
                }
                book.made.get_mut(&key).expect("in the book").handle = Some(t);
            }
            Err(e) => {
                let rec = book.made.remove(&key).expect("in the book");
                if !rec.taken.is_empty() {
                    self.fail(format!("timer {:#x}/{:#x}: refused ({e}), and completed", key.0, key.1));
                }
                if !(e.kind() == ErrorKind::PortClosed && self.shut.load(SeqCst)) {
                    self.fail(format!("timer refused without a reason: {e}"));
                }
            }
        }
    }

    /// Cancels one of the latest timers made (armed, or already ended).
    fn cancel_timer(&self, rng: &mut Rng) {
        let (key, handle, taken_before) = {
            let book = self.timers.lock().unwrap();
            let n = book.order.len() as u64;
            if n == 0 {
                return;
            }
            let key = book.order[(n - 1 - rng.below(n.min(32))) as usize];
            let Some(TimerRec { handle: Some(handle), taken, .. }) = book.made.get(&key) else { return };
            (key, *handle, !taken.is_empty())
        };
        let shut_done = self.shut_done.load(SeqCst);
        match self.port.cancel_timer(&handle) {
            Ok(true) => {
                let who = format!("timer {:#x}/{:#x}", key.0, key.1);
                if taken_before {
                    self.fail(format!("{who}: cancel_timer said it ended it after its completion was taken"));
                }
                if shut_done {
                    self.fail(format!("{who}: cancel_timer said it ended it after shutdown returned"));
                }
                self.timers.lock().unwrap().made.get_mut(&key).expect("in the book").cancelled += 1;
            }
            Ok(false) => {}
            Err(e) => self.fail(format!("cancel_timer: {e}")),
        }
    }

    fn post(&self) {
        let v = self.next_post.fetch_add(1, SeqCst);
        let mut posts = self.posts.lock().unwrap();
        match self.port.post(u64::MAX, v) {
            Ok(()) => *posts.entry(v).or_default() += 1,
            Err(e) if e.kind() == ErrorKind::PortClosed && self.shut.load(SeqCst) => {}
            Err(e) => self.fail(format!("post: {e}")),
        }
    }

    /// Connects clients to our listeners, drops some clients.
    fn churn_clients(&self, rng: &mut Rng) {
        let mut clients = self.clients.lock().unwrap();
        if !clients.is_empty() && rng.below(2) == 0 {
            let i = rng.below(clients.len() as u64) as usize;
            clients.swap_remove(i);
            return;
        }
        let listeners: Vec<_> = self
            .recs
            .read()
            .unwrap()
            .iter()
            .filter(|r| matches!(r.lock().unwrap().kind, Kind::TcpListener | Kind::UnixListener))
            .cloned()
            .collect();
        let Some(rec) = listeners.get(rng.below(listeners.len().max(1) as u64) as usize) else { return };
        let r = rec.lock().unwrap();
        if r.released.is_some() {
            return;
        }
        let Some(fd) = r.isb.fd() else { return };
        match r.kind {
            Kind::TcpListener => {
                let addr = local_addr_of(fd);
                if let Ok(c) = TcpStream::connect(addr) {
                    if rng.below(4) == 0 {
                        let _ = (&c).write(b"hello");
                    }
                    clients.push(Box::new(c));
                }
            }
            Kind::UnixListener => {
                let path = self.listener_paths.lock().unwrap().iter().find(|p| unix_addr_matches(fd, p)).cloned();
                if let Some(path) = path {
                    if let Ok(c) = UnixStream::connect(path) {
                        clients.push(Box::new(c));
                    }
                }
            }
            _ => {}
        }
    }

    /// Starts `op` on the stream and records it.
    fn start(&self, r: &mut Rec, op: Op, rng: &mut Rng) {
        let seq = r.next_seq;
        let (req, key, bufs, len) = match op {
            Op::Read => {
                let size = size(rng, 4, 64 << 10, 4096);
                let max = 1 + rng.below(size as u64) as usize;
                let min = rng.below(max as u64 + 1) as usize;
                let buf = vec![0u8; size];
                let key = buf.as_ptr() as usize;
                (Request::read(buf, min..=max), key, 1, size)
            }
            Op::ReadVectored => {
                let bufs: Vec<Vec<u8>> =
                    (0..1 + rng.below(3)).map(|_| vec![0u8; 1 + rng.below(2048) as usize]).collect();
                let total: usize = bufs.iter().map(Vec::len).sum();
                let key = bufs[0].as_ptr() as usize;
                let n = bufs.len();
                (Request::read_vectored(bufs, rng.below(total as u64 + 1) as usize), key, n, total)
            }
            Op::Write => {
                let size = size(rng, 4, 256 << 10, 4096);
                let buf = pattern(self.seed ^ (r.id << 32) ^ seq, size);
                let key = buf.as_ptr() as usize;
                (Request::write(buf), key, 1, size)
            }
            Op::WriteVectored => {
                let bufs: Vec<Vec<u8>> = (0..1 + rng.below(3))
                    .map(|i| pattern(self.seed ^ (r.id << 32) ^ (seq << 4) ^ i, 1 + rng.below(8192) as usize))
                    .collect();
                let key = bufs[0].as_ptr() as usize;
                let (n, total) = (bufs.len(), bufs.iter().map(Vec::len).sum());
                (Request::write_vectored(bufs), key, n, total)
            }
            Op::Accept => (Request::accept(), 0, 0, 0),
            Op::RecvFrom => {
                let buf = vec![0u8; 2048];
                let key = buf.as_ptr() as usize;
                (Request::recv_from(buf), key, 1, 2048)
            }
            Op::SendTo => {
                let PeerEnd::Udp(peer) = &r.peer else { return };
                let to = peer.local_addr().unwrap();
                let mut buf = format!("gram {} {} {seq} ", self.seed, r.id).into_bytes();
                buf.extend(pattern(seq, rng.below(600) as usize));
                let (key, len) = (buf.as_ptr() as usize, buf.len());
                (Request::send_to(buf, to), key, 1, len)
            }
            _ => unreachable!("{op:?}"),
        };
        let inline = rng.below(3) == 0;
        let result = if inline {
            self.port.start_io_inline(&r.isb, req)
        } else {
            self.port.start_io(&r.isb, req).map(|()| None)
        };
        match result {
            Ok(done) => {
                if r.kind == Kind::Signals {
                    self.fail(format!("stream {}: {op:?} started on a signals stream", r.id));
                }
                r.next_seq += 1;
                r.outstanding.push(Outstanding { seq, op, key, bufs, len });
                self.started.fetch_add(1, SeqCst);
                if let Some(c) = done {
                    self.record(r, c, u64::MAX);
                }
            }
            Err(e) => {
                let ok = match e.kind() {
                    ErrorKind::Busy => r.outstanding_on(op),
                    ErrorKind::NotAssigned => r.released.is_some(),
                    ErrorKind::PortClosed => self.shut.load(SeqCst),
                    // The driver of a signals stream supports no request.
                    ErrorKind::InvalidInput => r.kind == Kind::Signals,
                    _ => false,
                };
                if !ok {
                    self.fail(format!(
                        "{op:?} on {:?} stream {} refused without a reason: {}",
                        r.kind,
                        r.id,
                        e.error()
                    ));
                }
                // A refused start gives its buffers back.
                let back = e.into_request();
                let back_key = match op {
                    Op::ReadVectored | Op::WriteVectored => {
                        back.into_buffers().first().map_or(0, |b| b.as_ptr() as usize)
                    }
                    _ => back.into_buffer().map_or(0, |b| b.as_ptr() as usize),
                };
                if back_key != key {
                    self.fail(format!("a refused {op:?} on stream {} did not give its buffer back", r.id));
                }
            }
        }
    }

    /// The peer writes, reads, ends or resets.
    fn peer_act(&self, r: &mut Rec, rng: &mut Rng) {
        if r.kind == Kind::Signals {
            return self.raise();
        }
        if r.peer_gone {
            return;
        }
        let choice = rng.below(100);
        if let PeerEnd::Udp(peer) = &r.peer {
            if choice < 50 {
                let mut gram = format!("peer {} {} {} ", self.seed, r.id, r.grams_peer_sent.len()).into_bytes();
                gram.extend(pattern(choice, rng.below(700) as usize));
                if peer.send(&gram).is_ok() {
                    r.grams_peer_sent.insert(gram);
                }
            } else {
                let mut buf = [0u8; 2048];
                while let Ok(n) = peer.recv(&mut buf) {
                    r.grams_peer_read.push(buf[..n].to_vec());
                }
            }
            return;
        }
        // A pipe's peer only writes (PipeIn) or only reads (PipeOut).
        let can_write = !r.peer_fin && r.kind != Kind::PipeOut;
        let can_read = r.kind != Kind::PipeIn;
        match choice {
            0..=49 if can_write => {
                let size = size(rng, 5, 128 << 10, 2048);
                let from = r.peer_sent.len();
                let chunk: Vec<u8> = (0..size).map(|i| util::pattern_byte(self.seed ^ r.id, from + i)).collect();
                let Some(io) = r.peer.io() else { return };
                match io.write(&chunk) {
                    Ok(n) => r.peer_sent.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Our side is gone (deassigned, closed) or reset.
                    Err(_) => {}
                }
            }
            0..=89 if can_read => peer_drain(r),
            90..=95 if can_write => {
                // End of stream from the peer.
                match std::mem::replace(&mut r.peer, PeerEnd::None) {
                    PeerEnd::Tcp(s) => {
                        let _ = s.shutdown(Shutdown::Write);
                        r.peer = PeerEnd::Tcp(s);
                    }
                    PeerEnd::Unix(s) => {
                        let _ = s.shutdown(Shutdown::Write);
                        r.peer = PeerEnd::Unix(s);
                    }
                    // A pipe's write end ends by closing.
                    PeerEnd::Pipe(f) => {
                        drop(f);
                        r.peer_gone = true;
                    }
                    other => r.peer = other,
                }
                r.peer_fin = true;
            }
            96..=99 => {
                // The peer goes away: a reset for TCP, a close otherwise.
                if let PeerEnd::Tcp(s) = &r.peer {
                    util::linger_zero(s);
                    r.peer_reset = true;
                }
                if !matches!(r.peer, PeerEnd::None) {
                    r.peer = PeerEnd::None;
                    r.peer_gone = true;
                }
            }
            _ => {}
        }
    }

    // ---- takers ----

    /// Checks and records one completion, with its stream's lock held. `before` is the epoch
    /// read before the wait that returned it (`u64::MAX`: handed back by `start_io_inline`).
    fn record(&self, r: &mut Rec, mut c: Completion, before: u64) {
        self.completed.fetch_add(1, SeqCst);
        let id = r.id;
        if let Some(e) = r.close_epoch {
            if e < before {
                self.fail(format!("stream {id}: {c:?} taken after the stream's Close completion"));
            }
        }
        let op = c.op();
        if op == Op::Signal {
            return self.record_signal(r, c, before);
        }
        let key = match op {
            Op::ReadVectored | Op::WriteVectored => 0,
            _ => c.buffer().map_or(0, |b| b.as_ptr() as usize),
        };
        let bufs = if matches!(op, Op::ReadVectored | Op::WriteVectored) { c.take_buffers() } else { Vec::new() };
        let key = bufs.first().map_or(key, |b| b.as_ptr() as usize);
        let Some(pos) = r.outstanding.iter().position(|o| o.op == op && o.key == key) else {
            return self.fail(format!("stream {id}: a completion of no started I/O (twice, or never started): {c:?}"));
        };
        let o = r.outstanding.remove(pos);
        let status = c.status();
        if op == Op::Close {
            if status != Status::Ok || r.released != Some(Released::Closed) {
                self.fail(format!("stream {id}: {c:?} for a stream {:?}", r.released));
            }
            r.close_epoch = Some(self.epoch.fetch_add(1, SeqCst));
            return;
        }
        let allowed = match status {
            Status::Ok | Status::Cancelled | Status::TimedOut | Status::Abandoned => true,
            Status::Eof => matches!(op, Op::Read | Op::ReadVectored),
            // A connect to a closed port or a missing path, and any I/O on the stream after
            // that (ENOTCONN, EINVAL); a write after our own shutdown_write, or to a peer
            // gone, may say EPIPE.
            Status::Failed => {
                r.kind == Kind::Loose || matches!(op, Op::Connect | Op::Write | Op::WriteVectored | Op::SendTo)
            }
            _ => false,
        };
        if !allowed {
            self.fail(format!("stream {id} ({:?}): unexpected status: {c:?} {:?}", r.kind, c.error()));
        }
        // The buffers come back, whole.
        let n = c.bytes();
        let data: Vec<u8> = match op {
            Op::Read | Op::Write | Op::RecvFrom | Op::SendTo => match c.take_buffer() {
                Some(b) if b.len() == o.len => b[..n.min(b.len())].to_vec(),
                other => {
                    return self.fail(format!(
                        "stream {id}: {op:?} gave back {:?} bytes of buffer, not {}",
                        other.map(|b| b.len()),
                        o.len
                    ))
                }
            },
            Op::ReadVectored | Op::WriteVectored => {
                if bufs.len() != o.bufs || bufs.iter().map(Vec::len).sum::<usize>() != o.len {
                    return self.fail(format!("stream {id}: {op:?} gave back other buffers"));
                }
                bufs.concat()[..n.min(o.len)].to_vec()
            }
            _ => Vec::new(),
        };
        if n > o.len {
            self.fail(format!("stream {id}: {op:?} says {n} bytes of a {} byte request", o.len));
        }
        match op {
            Op::Read | Op::ReadVectored => {
                if status == Status::Eof {
                    r.saw_eof = true;
                }
                r.read_log.insert(o.seq, data);
            }
            Op::Write | Op::WriteVectored => {
                r.write_log.insert(o.seq, data);
            }
            Op::RecvFrom if status == Status::Ok => r.grams_port_read.push(data),
            Op::SendTo if status == Status::Ok => {
                r.grams_port_sent.insert(data);
            }
            _ => {}
        }
    }

    /// Checks and records a completion of a signals stream's series.
    fn record_signal(&self, r: &mut Rec, c: Completion, before: u64) {
        let id = r.id;
        if r.kind != Kind::Signals {
            return self.fail(format!("stream {id} ({:?}): a signal completion: {c:?}", r.kind));
        }
        if let Some(e) = r.series_end {
            if e < before {
                self.fail(format!("stream {id}: {c:?} taken after the signal series' end was taken"));
            }
        }
        r.signal_reads -= 1;
        match c.status() {
            Status::Ok => {
                r.signals += 1;
                let taken = self.signals_taken.fetch_add(1, SeqCst) + 1;
                let raised = self.raises.load(SeqCst);
                if c.value() != STORM_SIGNAL as u64 {
                    self.fail(format!("stream {id}: a signal completion of signal {}: {c:?}", c.value()));
                }
                if taken > raised {
                    self.fail(format!("{taken} signal completions taken, {raised} signals raised"));
                }
                // One may have been pending when the stream was made, and every raise since
                // adds at most one (a signal raised while one is pending merges with it).
                if r.signals > raised - r.raises_before + 1 {
                    self.fail(format!(
                        "stream {id}: {} signal completions, {} signals raised since it was made",
                        r.signals,
                        raised - r.raises_before
                    ));
                }
                // Taking it started the next read, unless the stream was released or the port
                // shut down first: released under this lock, shut (flagged before shutdown)
                // after this completion was taken, it is started only if the take came first.
                if r.released.is_none() && !self.shut.load(SeqCst) {
                    r.signal_reads += 1;
                    self.started.fetch_add(1, SeqCst);
                } else {
                    r.signal_reads_unsure += 1;
                }
            }
            status => {
                let why = match status {
                    Status::Cancelled => r.cancelled || r.released.is_some() || self.shut.load(SeqCst),
                    Status::TimedOut => r.deadline_set,
                    _ => false,
                };
                if !why {
                    self.fail(format!("stream {id}: a signal series ended for no visible reason: {c:?}"));
                }
                if r.series_end.is_some() {
                    self.fail(format!("stream {id}: a signal series ended twice: {c:?}"));
                }
                r.series_end = Some(self.epoch.fetch_add(1, SeqCst));
            }
        }
    }

    /// Records a timer's completion.
    fn take_timer(&self, c: Completion) {
        let shut = self.shut.load(SeqCst);
        let now = Instant::now();
        if c.isb().is_some() {
            self.fail(format!("a timer completion with an ISB: {c:?}"));
        }
        let mut book = self.timers.lock().unwrap();
        match book.made.get_mut(&(c.token(), c.value())) {
            Some(t) => t.taken.push((c.status(), shut, now)),
            None => self.fail(format!("a timer completion of no timer made (or with another's value): {c:?}")),
        }
    }

    fn take(&self, mut c: Completion, before: u64) {
        if c.op() == Op::Post {
            let mut posts = self.posts.lock().unwrap();
            *posts.entry(c.value()).or_default() -= 1;
            return;
        }
        if c.op() == Op::Timer {
            return self.take_timer(c);
        }
        let Some(rec) = self.rec(c.token()) else {
            return self.fail(format!("a completion of an unknown stream: {c:?}"));
        };
        // An accepted stream is taken out before the lock, and assigned after it.
        let accepted = c.take_accepted();
        let mut r = rec.lock().unwrap();
        self.record(&mut r, c, before);
        drop(r);
        if let Some(d) = accepted {
            self.add(Kind::Loose, None, |id| Ok((self.port.assign(d, id)?, PeerEnd::None)));
        }
    }

    fn taker(&self, rng: &mut Rng) {
        let mut batch = Vec::new();
        loop {
            let before = self.epoch.load(SeqCst);
            let closed_before = self.closed_seen.load(SeqCst);
            let r = if rng.below(4) == 0 {
                self.port
                    .next_completions(&mut batch, 1 + rng.below(8) as usize, Some(Duration::from_millis(20)))
                    .map(|_| None)
            } else {
                self.port.next_completion(Some(Duration::from_millis(20)))
            };
            if closed_before {
                if let Ok(Some(c)) = &r {
                    self.fail(format!("{c:?} taken after another thread was told PortClosed"));
                }
                for c in &batch {
                    self.fail(format!("{c:?} taken after another thread was told PortClosed"));
                }
            }
            match r {
                Ok(Some(c)) => self.take(c, before),
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::PortClosed => {
                    self.closed_seen.store(true, SeqCst);
                    return;
                }
                Err(e) => return self.fail(format!("next_completion: {e}")),
            }
            for c in batch.drain(..) {
                self.take(c, before);
            }
        }
    }
}

/// A size in `1..=small`, or one time in `one_in` in `1..=big`.
fn size(rng: &mut Rng, one_in: u64, big: u64, small: u64) -> usize {
    let limit = if rng.below(one_in) == 0 { big } else { small };
    1 + rng.below(limit) as usize
}

/// The local address of a TCP socket fd (getsockname).
fn local_addr_of(fd: RawFd) -> SocketAddr {
    use std::os::fd::FromRawFd;
    // SAFETY: the fd is open for the duration (its stream's record is locked, so nobody closes
    // it); ManuallyDrop keeps the borrowed fd from being closed here.
    let s = std::mem::ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(fd) });
    s.local_addr().unwrap()
}

/// Whether the Unix socket fd is bound to `path`.
fn unix_addr_matches(fd: RawFd, path: &std::path::Path) -> bool {
    use std::os::fd::FromRawFd;
    // SAFETY: as in `local_addr_of`.
    let s = std::mem::ManuallyDrop::new(unsafe { UnixListener::from_raw_fd(fd) });
    s.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p == path)).unwrap_or(false)
}

/// Reads until the peer has read `want` bytes in all, or reached end of stream, or an error.
/// TCP may still have bytes in flight (a full receive window holds them in our send queue), so
/// its reads block, within the hang guard; pipes and Unix sockets move bytes at once, so what
/// is not queued now will not come. Returns false when the connection was reset, which may
/// destroy bytes in flight.
fn peer_read_until(r: &mut Rec, want: usize) -> bool {
    let tcp = matches!(r.peer, PeerEnd::Tcp(_));
    if let PeerEnd::Tcp(s) = &r.peer {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(util::GUARD)).unwrap();
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if tcp && r.peer_read.len() >= want {
            return true;
        }
        let Some(io) = r.peer.io() else { return true };
        match io.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => r.peer_read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return false,
            // Nothing more queued (or, for TCP, nothing within the guard): compare now.
            Err(_) => return true,
        }
    }
}

/// Reads everything the peer has waiting.
fn peer_drain(r: &mut Rec) {
    let Some(io) = r.peer.io() else { return };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match io.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => r.peer_read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One storm on a port, then the checks.

fn storm_on(threads: usize, cfg: &Config, salt: u64) {
    let _g = serial(&SERIAL);
    let replay = cfg.seed;
    let seed = cfg.seed ^ salt;
    let fds_before = open_fds();
    let threads_before = threads_named("cport-");

    // Every thread blocks the signals streams' signal (see `block_storm_signal`), and none of
    // a storm before is left pending.
    let open = threads_taking_storm_signal();
    assert!(open.is_empty(), "threads that do not block signal {STORM_SIGNAL}: {open:?}");
    drain_storm_signal();

    let connect_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    connect_listener.set_nonblocking(true).unwrap();
    let refused = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let storm = Arc::new(Storm {
        port: Port::builder().threads(threads).build().unwrap(),
        seed,
        recs: RwLock::new(Vec::new()),
        shut: AtomicBool::new(false),
        shut_done: AtomicBool::new(false),
        closed_seen: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
        posts: Mutex::new(HashMap::new()),
        next_post: AtomicU64::new(0),
        driver_counts: Arc::new(DriverCounts::default()),
        timers: Mutex::new(TimerBook::default()),
        raises: AtomicU64::new(0),
        signals_taken: AtomicU64::new(0),
        signal_streams: AtomicUsize::new(0),
        connect_to: connect_listener.local_addr().unwrap(),
        connect_listener,
        refused,
        missing_path: util::socket_path("storm-missing"),
        listener_paths: Mutex::new(Vec::new()),
        clients: Mutex::new(Vec::new()),
        broken: Mutex::new(Vec::new()),
        started: AtomicUsize::new(0),
        completed: AtomicUsize::new(0),
    });

    let takers: Vec<_> = (0..TAKERS as u64)
        .map(|i| {
            let s = storm.clone();
            std::thread::spawn(move || s.taker(&mut Rng::new(seed ^ (0x7a4e << 8) ^ i)))
        })
        .collect();
    let operators: Vec<_> = (0..OPERATORS as u64)
        .map(|i| {
            let s = storm.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (0x0be7 << 8) ^ i);
                let mut acts = 0u64;
                while !s.stop.load(SeqCst) {
                    s.act(&mut rng);
                    acts += 1;
                }
                acts
            })
        })
        .collect();
    // The storm's length (not a wait for a state): then shut down in the middle of it.
    std::thread::sleep(cfg.run);
    storm.shut.store(true, SeqCst);
    storm.port.shutdown();
    storm.shut_done.store(true, SeqCst);
    for t in takers {
        t.join().expect("a taker panicked");
    }
    // Operators went on calling through the shutdown; every call now is refused or releases.
    storm.stop.store(true, SeqCst);
    let acts: u64 = operators.into_iter().map(|t| t.join().expect("an operator panicked")).sum();

    let s = &*storm;
    match s.port.try_next_completion() {
        Err(e) if e.kind() == ErrorKind::PortClosed => {}
        other => s.fail(format!("after PortClosed, try_next_completion gave {other:?}")),
    }
    // After shutdown nothing that would complete is made, and no timer is left to cancel.
    match s.port.timer(1, 2, Duration::ZERO) {
        Err(e) if e.kind() == ErrorKind::PortClosed => {}
        other => s.fail(format!("after shutdown, timer gave {other:?}")),
    }
    match s.port.timer_at(1, 2, Instant::now()) {
        Err(e) if e.kind() == ErrorKind::PortClosed => {}
        other => s.fail(format!("after shutdown, timer_at gave {other:?}")),
    }
    let last_timer = s.timers.lock().unwrap().made.values().find_map(|t| t.handle);
    if let Some(t) = last_timer {
        match s.port.cancel_timer(&t) {
            Ok(false) => {}
            other => s.fail(format!("after shutdown, cancel_timer gave {other:?}")),
        }
    }
    match s.port.signals(&[STORM_SIGNAL], u64::MAX - 1) {
        Err(e) if e.kind() == ErrorKind::PortClosed => {}
        other => s.fail(format!("after shutdown, signals gave {other:?}")),
    }
    let unended = check_ledger(s);
    let timers = check_timers(s);
    let started = s.started.load(SeqCst);
    let recs = s.recs.read().unwrap().len();
    let (raised, delivered) = (s.raises.load(SeqCst), s.signals_taken.load(SeqCst));
    let signal_streams = s.signal_streams.load(SeqCst);
    println!(
        "storm on threads({threads}): {acts} actions, {started} I/Os started, {} completions, {recs} streams; \
         {timers}; signals: {signal_streams} streams, {raised} raised, {delivered} taken, {unended} series \
         ended with no Cancelled (an Ok taken as the stream was released)",
        s.completed.load(SeqCst)
    );
    assert!(started > 200 && recs > POOL, "seed {replay}: the storm did too little ({started} I/Os, {recs} streams)");
    // Deliveries are reliable here (every thread blocks the signal): some must have come.
    if raised >= 20 && signal_streams >= 3 && delivered == 0 {
        s.fail(format!("{raised} signals raised with {signal_streams} signals streams made, and none delivered"));
    }

    let counts = s.driver_counts.clone();
    let paths = std::mem::take(&mut *s.listener_paths.lock().unwrap());
    let broken = std::mem::take(&mut *s.broken.lock().unwrap());
    assert!(
        broken.is_empty(),
        "seed {replay}, threads({threads}): {} broken promises:\n{}",
        broken.len(),
        broken.join("\n")
    );

    // The last handle (and every ISB, peer and client) goes: fds and threads come back.
    drop(storm);
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
    let made = counts.made.load(SeqCst);
    assert_eq!(counts.dropped.load(SeqCst), made, "seed {replay}: user drivers not dropped");
    assert_eq!(counts.attached.load(SeqCst), counts.detached.load(SeqCst), "seed {replay}: attach without detach");
    assert!(counts.broken.lock().unwrap().is_empty(), "seed {replay}: {:?}", counts.broken.lock().unwrap());
    assert_eq!(threads_named("cport-"), threads_before, "seed {replay}: threads left behind");
    assert_eq!(open_fds(), fds_before, "seed {replay}: fds leaked: {:?}", util::fd_list());
}

/// After the storm: every timer made had exactly one completion, and the right one. Returns a
/// summary.
fn check_timers(s: &Storm) -> String {
    let book = s.timers.lock().unwrap();
    let (mut fired, mut cancelled, mut by_cancel) = (0, 0, 0);
    for (key, t) in &book.made {
        let who = format!("timer {:#x}/{:#x}", key.0, key.1);
        if t.cancelled > 1 {
            s.fail(format!("{who}: cancel_timer said it ended it {} times", t.cancelled));
        }
        by_cancel += usize::from(t.cancelled > 0);
        match t.taken.as_slice() {
            [] => s.fail(format!("{who}: a timer made and no completion before PortClosed")),
            [(Status::Ok, _, at)] => {
                fired += 1;
                if t.cancelled > 0 {
                    s.fail(format!("{who}: completed Ok after cancel_timer said it ended it"));
                }
                if *at < t.not_before {
                    s.fail(format!("{who}: fired {:?} early", t.not_before - *at));
                }
            }
            [(Status::Cancelled, shut, _)] => {
                cancelled += 1;
                if t.cancelled == 0 && !shut {
                    s.fail(format!("{who}: Cancelled with no cancel_timer that ended it, before shutdown"));
                }
            }
            [(status, ..)] => s.fail(format!("{who}: completed {status:?}")),
            more => s.fail(format!("{who}: {} completions: {more:?}", more.len())),
        }
    }
    format!("{} timers: {fired} fired, {cancelled} cancelled ({by_cancel} by cancel_timer)", book.made.len())
}

/// After the storm: every started I/O had its completion, every post was delivered once, and
/// the bytes add up. Returns how many signal series ended with no `Cancelled` (see
/// `Rec::signal_reads_unsure`).
fn check_ledger(s: &Storm) -> usize {
    let mut unended = 0;
    for (v, n) in s.posts.lock().unwrap().iter() {
        if *n != 0 {
            s.fail(format!("post {v}: delivered {} times", 1 - n));
        }
    }
    let recs: Vec<_> = s.recs.read().unwrap().clone();
    for rec in recs {
        let mut r = rec.lock().unwrap();
        for o in &r.outstanding {
            s.fail(format!("stream {} ({:?}): {o:?} started and no completion before PortClosed", r.id, r.kind));
        }
        let id = r.id;
        if r.signal_reads > 0 {
            s.fail(format!(
                "stream {id} (Signals): {} signal reads started and no completion before PortClosed",
                r.signal_reads
            ));
        } else if r.signal_reads < -r.signal_reads_unsure {
            s.fail(format!(
                "stream {id} (Signals): {} signal completions more than reads started ({} maybe started)",
                -r.signal_reads, r.signal_reads_unsure
            ));
        }
        if r.kind == Kind::Signals {
            // The unsure reads that did start: counted as started once they are known.
            s.started.fetch_add((-r.signal_reads).max(0) as usize, SeqCst);
            unended += usize::from(r.series_end.is_none());
        }
        match r.kind {
            Kind::Tcp | Kind::Unix | Kind::User | Kind::PipeIn | Kind::PipeOut => {
                let got: Vec<u8> = r.read_log.values().flatten().copied().collect();
                if !r.peer_sent.starts_with(&got) {
                    s.fail(format!(
                        "stream {id} ({:?}): the port read bytes the peer did not send, in that order",
                        r.kind
                    ));
                } else if r.saw_eof && !r.peer_reset && got.len() != r.peer_sent.len() {
                    s.fail(format!(
                        "stream {id} ({:?}): end of stream after {} of the {} bytes sent",
                        r.kind,
                        got.len(),
                        r.peer_sent.len()
                    ));
                }
                // Every write is done: what it sent is in the peer's queue, on its way (TCP), or
                // already read. A reset (our close with input unread) may destroy some of it.
                let sent: Vec<u8> = r.write_log.values().flatten().copied().collect();
                let lossless = peer_read_until(&mut r, sent.len());
                if !r.peer_gone && lossless && r.peer_read != sent {
                    s.fail(format!(
                        "stream {id} ({:?}): the peer read {} bytes, the port's writes sent {} (first difference at {:?})",
                        r.kind,
                        r.peer_read.len(),
                        sent.len(),
                        r.peer_read.iter().zip(&sent).position(|(a, b)| a != b)
                    ));
                }
            }
            Kind::Udp => {
                let mut seen = HashSet::new();
                for g in &r.grams_port_read {
                    if !r.grams_peer_sent.contains(g) || !seen.insert(g) {
                        s.fail(format!("stream {id} (UDP): received a datagram not sent, or twice"));
                    }
                }
                if let PeerEnd::Udp(peer) = &r.peer {
                    let mut buf = [0u8; 2048];
                    let mut more = Vec::new();
                    while let Ok(n) = peer.recv(&mut buf) {
                        more.push(buf[..n].to_vec());
                    }
                    r.grams_peer_read.extend(more);
                }
                let mut seen = HashSet::new();
                for g in &r.grams_peer_read {
                    if !r.grams_port_sent.contains(g) || !seen.insert(g) {
                        s.fail(format!("stream {id} (UDP): the peer got a datagram the port did not send, or twice"));
                    }
                }
            }
            _ => {}
        }
    }
    unended
}

#[test]
fn storm_on_a_worker_port() {
    storm_on(2, &config(), 0x3011);
}

#[test]
fn storm_on_a_polling_port() {
    storm_on(0, &config(), 0x9011);
}

// ---------------------------------------------------------------------------------------------
// The session layer in a storm.
#[cfg(feature = "session")]
mod sessions {
    use super::*;
    use cport::session::{Closed, Limits, Outbox, Server, Session};
    use std::time::Instant;

    #[derive(Default)]
    struct SessionCounts {
        opened: AtomicUsize,
        closed: AtomicUsize,
        dropped: AtomicUsize,
        /// Sessions told `closed` twice, or called after it.
        broken: AtomicUsize,
    }

    /// Echoes what it consumes. The first byte of a connection picks the mode: `E` echoes
    /// everything, `C` echoes the first `CLOSE_AFTER` bytes and then closes. The second picks how
    /// many bytes it consumes at most per call (`BITES`), so unconsumed tails come back prefixed.
    struct Echo {
        counts: Arc<SessionCounts>,
        /// Mode and bite, once the first two bytes are in.
        header: Option<(u8, usize)>,
        seen: usize,
        closed: bool,
    }

    const BITES: [usize; 5] = [1, 7, 100, 4096, usize::MAX];

    const CLOSE_AFTER: usize = 1000;

    impl Session for Echo {
        fn opened(&mut self, _out: &mut Outbox<'_>) -> cport::Result<()> {
            self.counts.opened.fetch_add(1, SeqCst);
            Ok(())
        }

        fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
            if self.closed {
                self.counts.broken.fetch_add(1, SeqCst);
            }
            if self.header.is_none() {
                if data.len() < 2 {
                    return Ok(0);
                }
                self.header = Some((data[0], BITES[usize::from(data[1]) % BITES.len()]));
            }
            let (mode, bite) = self.header.expect("just set");
            let mut n = data.len().min(bite);
            if mode == b'C' {
                n = n.min(CLOSE_AFTER - self.seen);
            }
            out.send(&data[..n]);
            self.seen += n;
            if mode == b'C' && self.seen == CLOSE_AFTER {
                out.close();
                // Whatever comes after is left unconsumed: the connection is closing.
                return Ok(data.len());
            }
            Ok(n)
        }

        fn closed(&mut self, _why: &Closed) {
            if self.closed {
                self.counts.broken.fetch_add(1, SeqCst);
            }
            self.closed = true;
            self.counts.closed.fetch_add(1, SeqCst);
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.counts.dropped.fetch_add(1, SeqCst);
        }
    }

    /// One client connection of the session storm; returns a broken promise, if it saw one.
    fn session_client(addr: SocketAddr, rng: &mut Rng, seed: u64) -> Option<String> {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(util::GUARD)).unwrap();
        let kind = rng.below(10);
        let total = 1 + size(rng, 4, 300_000, 8_000);
        let mut data = pattern(seed, total);
        data[0] = if kind == 9 { b'C' } else { b'E' };
        // A byte a call only for short streams: every call is a write.
        data[1] = if total > 10_000 { 1 + rng.below(4) as u8 } else { rng.below(5) as u8 };
        match kind {
            // Clean: pipelined chunks, half-close, read the whole echo and then end of stream.
            0..=5 | 9 => {
                let mut reader = s.try_clone().unwrap();
                let want = if kind == 9 { total.min(CLOSE_AFTER) } else { total };
                let writer = {
                    let data = data.clone();
                    let mut w = s.try_clone().unwrap();
                    let mut rng = Rng::new(seed ^ 1);
                    std::thread::spawn(move || {
                        let mut at = 0;
                        while at < data.len() {
                            let n = (1 + rng.below(9000) as usize).min(data.len() - at);
                            if w.write_all(&data[at..at + n]).is_err() {
                                return;
                            }
                            at += n;
                        }
                        let _ = w.shutdown(Shutdown::Write);
                    })
                };
                let mut back = Vec::new();
                let r = reader.read_to_end(&mut back);
                let _ = writer.join();
                match r {
                    Ok(_) if back == data[..want] => None,
                    Ok(_) => Some(format!(
                        "mode {}: echo of {} bytes came back as {} bytes (first difference at {:?})",
                        data[0] as char,
                        want,
                        back.len(),
                        back.iter().zip(&data).position(|(a, b)| a != b)
                    )),
                    // Mode C closes with input unread; the server lingers, so no reset is expected.
                    Err(e) => Some(format!("mode {}: reading the echo: {e}", data[0] as char)),
                }
            }
            // Abrupt: send part, then reset or close without reading.
            6 | 7 => {
                let n = (rng.below(total as u64) as usize).max(1);
                let _ = s.write_all(&data[..n]);
                if kind == 6 {
                    util::linger_zero(&s);
                }
                None
            }
            // Idle: connect and go.
            _ => None,
        }
    }

    #[test]
    fn storm_on_sessions() {
        let cfg = config();
        let _g = serial(&SERIAL);
        let replay = cfg.seed;
        let seed = cfg.seed ^ 0x5e55;
        let fds_before = open_fds();
        let threads_before = threads_named("cport-");
        let counts = Arc::new(SessionCounts::default());

        let limits = Limits::default().with_read_size(512).with_linger(Duration::from_secs(5));
        let server = {
            let counts = counts.clone();
            Server::builder()
                .limits(limits.clone())
                .bind("127.0.0.1:0".parse().unwrap(), move |_conn| {
                    Box::new(Echo { counts: counts.clone(), header: None, seen: 0, closed: false })
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let runners: Vec<_> = (0..2)
            .map(|_| {
                let s = server.clone();
                std::thread::spawn(move || s.run())
            })
            .collect();
        let deadline = Instant::now() + cfg.run;
        let clients: Vec<_> = (0..4u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed ^ (i << 40));
                    let mut broken = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        if let Some(b) = session_client(addr, &mut rng, seed ^ (i << 40) ^ n) {
                            broken.push(b);
                        }
                        n += 1;
                    }
                    (n, broken)
                })
            })
            .collect();
        // The read size changes under the connections' feet.
        let mut rng = Rng::new(seed);
        while Instant::now() < deadline {
            let read_size = 1 + rng.below(20_000) as usize;
            server.set_limits(limits.clone().with_read_size(read_size)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut connections = 0;
        let mut broken = Vec::new();
        for c in clients {
            let (n, b) = c.join().unwrap();
            connections += n;
            broken.extend(b);
        }
        let summary = server.stop(util::GUARD);
        for r in runners {
            r.join().unwrap().expect("run ended with an error");
        }
        assert!(broken.is_empty(), "seed {replay}: {} broken promises:\n{}", broken.len(), broken.join("\n"));
        let opened = counts.opened.load(SeqCst);
        println!("session storm: {connections} connections, {summary:?}");
        assert!(connections > 10, "seed {replay}: the storm did too little ({connections} connections)");
        assert_eq!(summary.open, 0, "seed {replay}: {summary:?}");
        assert_eq!(summary.accepted, opened, "seed {replay}: a session per accepted connection: {summary:?}");
        assert_eq!(counts.closed.load(SeqCst), opened, "seed {replay}: closed once per session");
        assert_eq!(counts.broken.load(SeqCst), 0, "seed {replay}: a session called after closed");
        drop(server);
        assert_eq!(counts.dropped.load(SeqCst), opened, "seed {replay}: every session dropped");
        assert_eq!(threads_named("cport-"), threads_before, "seed {replay}: threads left behind");
        assert_eq!(open_fds(), fds_before, "seed {replay}: fds leaked: {:?}", util::fd_list());
    }
}
