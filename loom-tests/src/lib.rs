//! The harness of cport's loom models: a fake full-duplex stream whose "kernel" is the port's
//! stand-in selector. The models themselves are in `tests/`, one race per test.
//!
//! Build and run with `RUSTFLAGS="--cfg loom" cargo test -p cport-loom-tests --release`
//! (see README.md). Without `cfg(loom)` this crate is empty.
#![cfg(loom)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use cport::model::Kernel;
use cport::{Driver, Op, Port};
use loom::sync::{Arc, Mutex};

/// What the two ends of a fake stream share. Readiness is always changed under this lock, so
/// the stand-in kernel's view never disagrees with the data.
#[derive(Default)]
struct Wire {
    /// Bytes the peer sent that the port has not read.
    inbox: VecDeque<u8>,
    /// The peer closed its end.
    eof: bool,
    /// Calls of `read` on the driver.
    reads: usize,
    /// Bytes the port wrote.
    outbox: Vec<u8>,
}

/// The driver end of a fake stream, given to `Port::assign`.
pub struct MockStream {
    fd: RawFd,
    wire: Arc<Mutex<Wire>>,
    kernel: Kernel,
}

/// The model's end of a fake stream.
#[derive(Clone)]
pub struct Peer {
    fd: RawFd,
    wire: Arc<Mutex<Wire>>,
    kernel: Kernel,
}

/// A fake stream with fd number `fd` on `port`'s stand-in kernel: the driver and the peer.
pub fn pair(port: &Port, fd: RawFd) -> (MockStream, Peer) {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let kernel = port.kernel();
    // Writable from the start, like a fresh socket.
    kernel.set_ready(fd, false, true);
    (MockStream { fd, wire: wire.clone(), kernel: kernel.clone() }, Peer { fd, wire, kernel })
}

impl Peer {
    /// Sends bytes to the port's end and makes it readable.
    pub fn send(&self, bytes: &[u8]) {
        let mut w = self.wire.lock().unwrap();
        w.inbox.extend(bytes);
        self.kernel.set_ready(self.fd, true, true);
    }

    /// Closes the peer's end: the port's reads see end of stream.
    pub fn close(&self) {
        let mut w = self.wire.lock().unwrap();
        w.eof = true;
        self.kernel.set_ready(self.fd, true, true);
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

    fn fd(&self) -> RawFd {
        self.fd
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
            self.kernel.set_ready(self.fd, false, true);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(w.inbox.len());
        for (dst, src) in buf.iter_mut().zip(w.inbox.drain(..n)) {
            *dst = src;
        }
        let still = !w.inbox.is_empty() || w.eof;
        self.kernel.set_ready(self.fd, still, true);
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wire.lock().unwrap().outbox.extend_from_slice(buf);
        Ok(buf.len())
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
