//! The harness of cport's loom models: a fake full-duplex stream whose "kernel" is the port's
//! stand-in selector. The models themselves are in `tests/`, one race per test.
//!
//! Build and run with `RUSTFLAGS="--cfg loom" cargo test -p cport-loom-tests --release`
//! (see README.md). Without `cfg(loom)` this crate is empty.
#![cfg(loom)]

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use cport::model::{Host, Kernel};
use cport::session::{Closed, Outbox, Session};
use cport::{Driver, Op, Port};
use loom::sync::{Arc, Mutex};

/// What the two ends of a fake stream share. Readiness is always changed under this lock, so
/// the stand-in kernel's view never disagrees with the data.
struct Wire {
    /// Bytes the peer sent that the port has not read.
    inbox: VecDeque<u8>,
    /// The peer closed its end.
    eof: bool,
    /// Calls of `read` on the driver.
    reads: usize,
    /// Bytes the port wrote.
    outbox: Vec<u8>,
    /// How many of them the peer has taken.
    taken: usize,
    /// How many written bytes the stream holds that the peer has not taken (its send buffer):
    /// a write finds room for at most this many.
    window: usize,
}

impl Wire {
    /// Tells the stand-in kernel the stream's readiness.
    fn publish(&self, fd: RawFd, kernel: &Kernel) {
        let readable = !self.inbox.is_empty() || self.eof;
        let writable = self.outbox.len() - self.taken < self.window;
        kernel.set_ready(fd, readable, writable);
    }
}

/// A real fd for a fake stream: `/dev/null`, opened for its number only (the stand-in kernel
/// knows streams by their fd numbers; nothing reads or writes it). Both ends of a fake stream
/// hold it, so its number is not reused while either lives.
type Null = std::sync::Arc<File>;

fn null() -> Null {
    std::sync::Arc::new(File::open("/dev/null").expect("open /dev/null"))
}

/// The driver end of a fake stream, given to `Port::assign` (or `Host::open`).
pub struct MockStream {
    null: Null,
    fd: RawFd,
    wire: Arc<Mutex<Wire>>,
    kernel: Kernel,
}

/// The model's end of a fake stream.
#[derive(Clone)]
pub struct Peer {
    _null: Null,
    fd: RawFd,
    wire: Arc<Mutex<Wire>>,
    kernel: Kernel,
}

/// A fake stream on `port`'s stand-in kernel: the driver and the peer. Writes always find
/// room.
pub fn pair(port: &Port) -> (MockStream, Peer) {
    windowed(port, usize::MAX)
}

/// A fake stream whose writes find room for `window` bytes the peer has not taken
/// ([`Peer::take`]): a write beyond that would block, as on a socket whose peer does not read.
pub fn windowed(port: &Port, window: usize) -> (MockStream, Peer) {
    let null = null();
    let fd = null.as_raw_fd();
    let wire = Wire { inbox: VecDeque::new(), eof: false, reads: 0, outbox: Vec::new(), taken: 0, window };
    let kernel = port.kernel();
    wire.publish(fd, &kernel);
    let wire = Arc::new(Mutex::new(wire));
    (
        MockStream { null: null.clone(), fd, wire: wire.clone(), kernel: kernel.clone() },
        Peer { _null: null, fd, wire, kernel },
    )
}

impl Peer {
    /// The stream's fd number, as the stand-in kernel knows it.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Sends bytes to the port's end and makes it readable.
    pub fn send(&self, bytes: &[u8]) {
        let mut w = self.wire.lock().unwrap();
        w.inbox.extend(bytes);
        w.publish(self.fd, &self.kernel);
    }

    /// Closes the peer's end: the port's reads see end of stream.
    pub fn close(&self) {
        let mut w = self.wire.lock().unwrap();
        w.eof = true;
        w.publish(self.fd, &self.kernel);
    }

    /// Takes what the port wrote and the peer has not taken yet, making room for more writes.
    pub fn take(&self) -> Vec<u8> {
        let mut w = self.wire.lock().unwrap();
        let new = w.outbox[w.taken..].to_vec();
        w.taken = w.outbox.len();
        w.publish(self.fd, &self.kernel);
        new
    }

    /// How many times the driver's `read` was called.
    pub fn reads(&self) -> usize {
        self.wire.lock().unwrap().reads
    }

    /// What the port wrote so far.
    pub fn received(&self) -> Vec<u8> {
        self.wire.lock().unwrap().outbox.clone()
    }
}

impl Driver for MockStream {
    fn name(&self) -> &'static str {
        "mock stream"
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.null.as_fd()
    }

    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::Read | Op::Write)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = self.wire.lock().unwrap();
        w.reads += 1;
        if w.inbox.is_empty() {
            if w.eof {
                return Ok(0);
            }
            w.publish(self.fd, &self.kernel);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(w.inbox.len());
        for (dst, src) in buf.iter_mut().zip(w.inbox.drain(..n)) {
            *dst = src;
        }
        w.publish(self.fd, &self.kernel);
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.wire.lock().unwrap();
        let room = w.window - (w.outbox.len() - w.taken);
        if room == 0 {
            w.publish(self.fd, &self.kernel);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(room);
        w.outbox.extend_from_slice(&buf[..n]);
        if n == room {
            // Full: no longer writable.
            w.publish(self.fd, &self.kernel);
        }
        Ok(n)
    }
}

/// Runs `f` under loom (preemption bound from `LOOM_MAX_PREEMPTIONS`, default 2) and prints
/// how many executions were explored and how long it took.
pub fn model<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let start = std::time::Instant::now();
    b.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f()
    });
    println!(
        "model {name}: {} executions in {:.2?} (preemption bound {:?})",
        runs.load(Ordering::Relaxed),
        start.elapsed(),
        b.preemption_bound
    );
}

/// Shuts `port` down and takes every completion left, until `PortClosed`.
pub fn drain(port: &Port) -> Vec<cport::Completion> {
    port.shutdown();
    let mut out = Vec::new();
    loop {
        match port.next_completion(None) {
            Ok(Some(c)) => out.push(c),
            Ok(None) => continue,
            Err(e) => {
                assert_eq!(e.kind(), cport::ErrorKind::PortClosed);
                return out;
            }
        }
    }
}

/// What a [`Pacer`] did, for the model's checks.
#[derive(Debug, Default)]
pub struct Log {
    /// Every byte the session queued, in order.
    pub replied: Vec<u8>,
    /// Requests it was shown and left unconsumed (pacing), over all calls.
    pub paced: usize,
    /// `closed` calls, with their reasons.
    pub closed: Vec<Closed>,
    /// Each `receive` call: the output queued when it began, the bytes shown, the bytes used.
    pub calls: Vec<(usize, usize, usize)>,
}

/// A session of one-byte requests, each answered with its upper-case byte, that paces itself:
/// it answers a request only while its output (queued plus answered in this call) stays below
/// `mark`, the connection's `pause_reading_at`, and leaves the rest for later.
///
/// Its log is behind a std lock: loom does not see it, which is sound because nothing inside
/// that lock is a loom operation, so no model thread can be switched out while holding it.
pub struct Pacer {
    mark: usize,
    log: std::sync::Arc<std::sync::Mutex<Log>>,
}

impl Pacer {
    /// A pacer for `pause_reading_at = mark`, and its log.
    pub fn new(mark: usize) -> (Pacer, std::sync::Arc<std::sync::Mutex<Log>>) {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Log::default()));
        (Pacer { mark, log: log.clone() }, log)
    }
}

impl Session for Pacer {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let queued = out.connection().queued();
        let mut used = 0;
        while used < data.len() && queued + out.buffer().len() < self.mark {
            out.send(&[data[used].to_ascii_uppercase()]);
            used += 1;
        }
        let mut log = self.log.lock().unwrap();
        log.replied.extend_from_slice(&data[..used].to_ascii_uppercase());
        log.paced += data.len() - used;
        log.calls.push((queued, data.len(), used));
        Ok(used)
    }

    fn closed(&mut self, why: &Closed) {
        self.log.lock().unwrap().closed.push(why.clone());
    }
}

/// Takes one completion if there is one (without waiting) and hands it to `host`. Returns
/// whether there was one.
pub fn handle_one(port: &Port, host: &Host) -> bool {
    match port.try_next_completion() {
        Ok(Some(c)) => {
            host.handle(c);
            true
        }
        Ok(None) => false,
        Err(e) => panic!("the port closed under the connection: {e}"),
    }
}

/// Runs the connection to rest on this thread alone: the peer takes what was written and
/// completions are handled until there are none and nothing is left to write. Returns what
/// the peer took.
pub fn settle(port: &Port, host: &Host, peer: &Peer) -> Vec<u8> {
    let mut took = Vec::new();
    loop {
        took.extend(peer.take());
        if !handle_one(port, host) {
            took.extend(peer.take());
            if !handle_one(port, host) {
                return took;
            }
        }
    }
}

/// What a fake listener and its clients share: connections waiting to be accepted.
struct Backlog {
    waiting: usize,
}

/// The driver end of a fake listening socket: each accept takes one waiting connection (a
/// stream that does nothing, with an fd of its own).
pub struct MockListener {
    null: Null,
    fd: RawFd,
    backlog: Arc<Mutex<Backlog>>,
    kernel: Kernel,
}

/// The model's end of a fake listener: clients connect through it.
#[derive(Clone)]
pub struct Dialer {
    _null: Null,
    fd: RawFd,
    backlog: Arc<Mutex<Backlog>>,
    kernel: Kernel,
}

/// A fake listener on `port`'s stand-in kernel, and its dialer.
pub fn listener(port: &Port) -> (MockListener, Dialer) {
    let null = null();
    let fd = null.as_raw_fd();
    let backlog = Arc::new(Mutex::new(Backlog { waiting: 0 }));
    let kernel = port.kernel();
    kernel.set_ready(fd, false, false);
    (
        MockListener { null: null.clone(), fd, backlog: backlog.clone(), kernel: kernel.clone() },
        Dialer { _null: null, fd, backlog, kernel },
    )
}

impl Dialer {
    /// A client connects: one more connection waits to be accepted.
    pub fn connect(&self) {
        let mut b = self.backlog.lock().unwrap();
        b.waiting += 1;
        self.kernel.set_ready(self.fd, true, false);
    }
}

/// A stream that was accepted and is never read or written in the models.
struct Accepted {
    null: Null,
}

impl Driver for Accepted {
    fn name(&self) -> &'static str {
        "mock accepted stream"
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.null.as_fd()
    }
    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::Read | Op::Write)
    }
}

impl Driver for MockListener {
    fn name(&self) -> &'static str {
        "mock listener"
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.null.as_fd()
    }

    fn supports(&self, op: Op) -> bool {
        op == Op::Accept
    }

    fn accept(&mut self) -> io::Result<(Box<dyn Driver>, Option<std::net::SocketAddr>)> {
        let mut b = self.backlog.lock().unwrap();
        if b.waiting == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        b.waiting -= 1;
        self.kernel.set_ready(self.fd, b.waiting > 0, false);
        Ok((Box::new(Accepted { null: null() }), None))
    }
}
