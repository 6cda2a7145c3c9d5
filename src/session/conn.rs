//! One connection of a [`Server`](super::Server): its session, its input tail and its output
//! queue, and what each completion does to them.
//!
//! Two locks per connection, always taken in this order: `input` (the session and the bytes
//! it left unconsumed; held while the session runs) before `output` (the queue, the write in
//! flight, the connection's `Life` and its `Read` side). `output` is a leaf: nothing is
//! called under it that could take another connection's lock, so a session may send to any
//! other connection while it runs. The port's own locks are below both.
//!
//! One read and one write are in flight at most. Whether the next read is started is decided
//! under `output`, by the read handler (after the session ran) or by the write handler (when a
//! paused connection has drained), never both: `Read::Paused` marks that no read is in
//! flight and the write side owes one.

use std::fmt;
use std::mem;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Closed, Limits, Outbox, Session};
use crate::completion::{Completion, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::isb::Isb;
use crate::port::Port;
use crate::request::Request;
use crate::sync::{lock, thread_local, Arc, Mutex, Ordering, StatSize, Swap};

/// Spare write buffers larger than this are dropped rather than kept for the next write, so
/// an idle connection does not hold on to the memory of its largest burst.
const SPARE_KEEP: usize = 64 << 10;

/// What every connection of a server shares.
pub(crate) struct Common {
    pub(crate) port: Port,
    pub(crate) limits: Swap<Limits>,
    pub(crate) stats: Stats,
}

/// Counters behind [`Summary`](super::Summary).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) accepted: StatSize,
    pub(crate) refused: StatSize,
    pub(crate) closed: StatSize,
    pub(crate) errors: StatSize,
    pub(crate) limit_closes: StatSize,
    pub(crate) idle_closes: StatSize,
    pub(crate) forced: StatSize,
    pub(crate) bytes_in: StatSize,
    pub(crate) bytes_out: StatSize,
    pub(crate) peak_outbox: StatSize,
}

fn add(counter: &StatSize, n: usize) {
    counter.fetch_add(n, Ordering::Relaxed);
}

struct Input {
    /// `None` only while the factory runs and after `closed` was called.
    session: Option<Box<dyn Session>>,
    /// Bytes the session left unconsumed.
    tail: Vec<u8>,
    /// Where the session's outbox writes during a call; moved to the output queue after it.
    stash: Vec<u8>,
    /// `closed` was called: nothing else reaches the session.
    done: bool,
}

struct Output {
    /// Bytes queued and not yet handed to a write.
    queue: Vec<u8>,
    /// Bytes of the write in flight (0: none).
    in_flight: usize,
    /// The buffer of the last finished write, reused for the next.
    spare: Vec<u8>,
    /// Where the connection is in its life: open, ending, lingering, closed.
    life: Life,
    /// The read side: idle, a read in flight, or paused.
    read: Read,
    /// A session call is running: its output is not in the queue yet, so an ending
    /// connection must not close on an empty queue. A field of its own: a close or a stop from
    /// another thread may come during the call (that is what this guards against), so it is no
    /// state of `life`; and it brackets a call, not a read, so it is no state of `read`.
    in_call: bool,
    /// A read saw the peer's end of stream: it will send nothing more. A field of its own: the
    /// peer may end its input in any state of `life` (while open, after the session asked to
    /// close, in the same call that asks it), and a lingering close still reads after it.
    peer_ended: bool,
}

impl Output {
    fn queued(&self) -> usize {
        self.queue.len() + self.in_flight
    }

    /// Begins to end an open connection, for `why`: it closes once its queue is flushed, and
    /// nothing more is read. False if it was already ending or closed.
    fn begin_ending(&mut self, why: Closed) -> bool {
        if !self.life.is_open() {
            return false;
        }
        self.life = Life::Ending { why, dropped_input: false };
        true
    }
}

/// A connection's life. It only moves forward: `Open` → `Ending` → (`Lingering` →) `Closed`,
/// or from any of them straight to `Closed`.
enum Life {
    /// Reading, calling the session and taking sends.
    Open,
    /// Close once the queue is flushed (and no session call is running), for `why`; no sends
    /// are taken and nothing more is read.
    Ending {
        why: Closed,
        /// Input arrived after the connection began to end and was dropped unread. Set and
        /// read only while ending: it decides whether the close lingers.
        dropped_input: bool,
    },
    /// A graceful close (`why` is `Local`, `Stopped` or `IdleTimeout`) after everything was
    /// sent: the write side is shut down and the read side discards what the peer still sends
    /// until it closes or `until` passes.
    Lingering { why: Closed, until: Instant },
    /// `Port::close` was called (or the stream is gone): nothing more is started. `reason`
    /// is why, until the Close completion reports it to the session.
    Closed { reason: Option<Closed> },
}

impl Life {
    fn is_open(&self) -> bool {
        matches!(self, Life::Open)
    }

    fn is_closed(&self) -> bool {
        matches!(self, Life::Closed { .. })
    }

    /// Whether a session call may begin: the connection is open, or ending only because the
    /// peer ended its input (its last requests are still answered).
    fn takes_calls(&self) -> bool {
        matches!(self, Life::Open | Life::Ending { why: Closed::Peer, .. })
    }
}

/// A connection's read side. At most one read is in flight.
enum Read {
    /// No read in flight, and none owed by the write side.
    Idle,
    /// A read is in flight.
    Pending,
    /// No read is in flight because too much output was queued: the write side restarts
    /// reading once the queue has drained, with the read buffer kept here. A connection
    /// closed while paused stays paused (without the buffer); one that begins a lingering
    /// close while paused reads again, to discard.
    Paused(Option<Vec<u8>>),
}

impl Read {
    /// Leaves `Paused` for `Idle`, returning the buffer kept (`None` if not paused).
    fn unpause(&mut self) -> Option<Vec<u8>> {
        match mem::replace(self, Read::Idle) {
            Read::Paused(buf) => buf,
            other => {
                *self = other;
                None
            }
        }
    }
}

pub(crate) struct Conn {
    id: u64,
    isb: Isb,
    peer: Option<SocketAddr>,
    common: Arc<Common>,
    input: Mutex<Input>,
    output: Mutex<Output>,
}

/// A handle to one connection of a [`Server`](super::Server): its id and peer, and a way to
/// send to it from anywhere (another connection's session, another thread). Cloning is cheap.
///
/// Bytes sent with [`Connection::send`] during one of this connection's own session calls go
/// out before the bytes of that call's outbox; use the outbox there to keep one order.
/// A handle stays valid after the connection ended: sends then fail with `NotAssigned`.
#[derive(Clone)]
pub struct Connection(Arc<Conn>);

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("id", &self.0.id).field("peer", &self.0.peer).finish()
    }
}

impl PartialEq for Connection {
    fn eq(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Connection {}

impl Connection {
    pub(crate) fn new(id: u64, isb: Isb, peer: Option<SocketAddr>, common: Arc<Common>) -> Connection {
        Connection(Arc::new(Conn {
            id,
            isb,
            peer,
            common,
            input: Mutex::new(Input { session: None, tail: Vec::new(), stash: Vec::new(), done: false }),
            output: Mutex::new(Output {
                queue: Vec::new(),
                in_flight: 0,
                spare: Vec::new(),
                life: Life::Open,
                read: Read::Idle,
                in_call: false,
                peer_ended: false,
            }),
        }))
    }

    /// The connection's id, unique among the server's open connections (a slot and a
    /// generation, so an id is not reused soon after its connection ended).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The peer's address, if the listener's family has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer
    }

    /// Bytes queued and not yet taken by the peer.
    pub fn queued(&self) -> usize {
        lock(&self.0.output).queued()
    }

    /// Whether reading from the peer is paused because the output queue reached
    /// [`Limits::pause_reading_at`] (back-pressure); it resumes once the queue has drained to
    /// half of that.
    pub fn is_reading_paused(&self) -> bool {
        matches!(lock(&self.0.output).read, Read::Paused(_))
    }

    /// Whether the connection still takes sends (it is not closing or closed).
    pub fn is_open(&self) -> bool {
        lock(&self.0.output).life.is_open()
    }

    /// Queues `data` to be sent after everything queued before.
    ///
    /// # Errors
    /// `NotAssigned` once the connection is closing or closed; `LimitExceeded` if this send
    /// takes the queue past [`Limits::max_outbox`]: the connection is then closed.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        let limits = self.0.common.limits.load();
        let mut out = lock(&self.0.output);
        if !out.life.is_open() {
            return Err(Error::new(ErrorKind::NotAssigned, format!("send on connection {}: it is closing", self.0.id)));
        }
        let mut data = data.to_vec();
        if !self.enqueue(&mut out, &mut data, &limits) {
            return Err(over_limit(self.0.id, limits.max_outbox));
        }
        self.flush(&mut out);
        Ok(())
    }

    /// Closes the connection once everything queued has been sent. Doing it again, or on a
    /// closed connection, does nothing.
    pub fn close(&self) {
        let mut out = lock(&self.0.output);
        if out.begin_ending(Closed::Local) {
            self.flush(&mut out);
        }
    }

    // ---- what the server calls ----

    pub(crate) fn set_session(&self, session: Box<dyn Session>) {
        lock(&self.0.input).session = Some(session);
    }

    /// The connection is assigned and in the server's table: greet and start reading.
    pub(crate) fn open(&self) {
        let next = {
            let mut input = lock(&self.0.input);
            let Input { session, stash, .. } = &mut *input;
            lock(&self.0.output).in_call = true;
            let call = match session.as_mut() {
                Some(s) => {
                    let mut outbox = Outbox::new(stash, self);
                    let result = in_session(|| s.opened(&mut outbox));
                    Call { result, close: outbox.wants_close(), progressed: false, at_mark: false }
                }
                None => Call::idle(),
            };
            self.after_call(&mut input, call, None)
        };
        if let Some(c) = next {
            self.on_read(c);
        }
    }

    /// Graceful stop: flush, then close; nothing more is read.
    pub(crate) fn stop(&self) {
        let mut out = lock(&self.0.output);
        out.begin_ending(Closed::Stopped);
        self.flush(&mut out);
    }

    /// Closes at once, dropping unsent output.
    pub(crate) fn abort(&self, why: Closed) -> bool {
        let mut out = lock(&self.0.output);
        let was_open = !out.life.is_closed();
        self.end_now(&mut out, why);
        was_open
    }

    /// A read finished (on this thread or through the queue).
    pub(crate) fn on_read(&self, c: Completion) {
        let mut next = Some(c);
        while let Some(mut c) = next.take() {
            let mut input = lock(&self.0.input);
            if input.done {
                return;
            }
            {
                let mut out = lock(&self.0.output);
                if matches!(out.read, Read::Pending) {
                    out.read = Read::Idle;
                }
                // Closing: what arrives now is not for the session. While lingering, read on
                // (and discard) until the peer closes; before that, stop reading.
                match &mut out.life {
                    Life::Open => {}
                    Life::Closed { .. } => return,
                    Life::Ending { dropped_input, .. } => {
                        if c.bytes() > 0 {
                            *dropped_input = true;
                        }
                        continue;
                    }
                    Life::Lingering { .. } => {
                        next = self.linger_read(&mut out, c);
                        continue;
                    }
                }
            }
            match c.status() {
                Status::Ok | Status::Eof => {
                    let n = c.bytes();
                    add(&self.0.common.stats.bytes_in, n);
                    let buf = c.take_buffer().unwrap_or_default();
                    let call = if n > 0 { self.feed(&mut input, &buf[..n.min(buf.len())]) } else { Call::idle() };
                    if c.status() == Status::Eof {
                        // The peer closed its side: send what is queued, then close.
                        let mut out = lock(&self.0.output);
                        out.peer_ended = true;
                        if !call.close {
                            out.begin_ending(Closed::Peer);
                        }
                        drop(out);
                        self.after_call(&mut input, call, None);
                        return;
                    }
                    next = self.after_call(&mut input, call, Some(buf));
                }
                Status::Cancelled => return,
                Status::Abandoned => {
                    drop(input);
                    self.abort(Closed::Peer);
                }
                Status::TimedOut => {
                    // The read's own timeout, `Limits::idle_timeout` (the stream's deadline is
                    // set only while lingering): the peer sent nothing for that long.
                    drop(input);
                    let limits = self.0.common.limits.load();
                    let mut out = lock(&self.0.output);
                    if out.life.is_open() && out.queued() >= limits.pause_reading_at {
                        // Sends from elsewhere took the output to the pause mark while the read
                        // waited: the peer is behind on our output, not idle. Pause as the read
                        // side would have; the write side's drain resumes reading, and the time.
                        out.read = Read::Paused(c.take_buffer());
                        return;
                    }
                    if out.begin_ending(Closed::IdleTimeout) {
                        self.flush(&mut out);
                    }
                    return;
                }
                _ => {
                    drop(input);
                    let e = c.result().err().unwrap_or_else(|| Error::invalid("read failed"));
                    self.abort(Closed::Error(e));
                }
            }
        }
    }

    /// A read finished during a lingering close: read on while the peer sends and time is
    /// left; close on its end of stream, an error, or the deadline. (A read that was in flight
    /// when the linger began may end on its idle timeout first: the linger goes on.)
    fn linger_read(&self, out: &mut Output, mut c: Completion) -> Option<Completion> {
        let Life::Lingering { until, .. } = out.life else {
            return None;
        };
        match c.status() {
            Status::Cancelled => None,
            Status::Ok | Status::TimedOut if Instant::now() < until => self.linger_next(out, until, c.take_buffer()),
            _ => {
                self.end_lingering(out);
                None
            }
        }
    }

    /// Starts the next lingering read; once it is pending, the stream's deadline (which ends
    /// only I/O pending when it fires) is set to `until`.
    fn linger_next(&self, out: &mut Output, until: Instant, buf: Option<Vec<u8>>) -> Option<Completion> {
        let limits = self.0.common.limits.load();
        let next = self.start_read(out, &limits, buf);
        if matches!(out.read, Read::Pending) {
            let now = Instant::now();
            if now >= until {
                self.end_lingering(out);
            } else {
                let _ = self.0.common.port.set_timeout(&self.0.isb, Some(until - now));
            }
        }
        next
    }

    /// Ends a lingering close now, for the reason it was closing.
    fn end_lingering(&self, out: &mut Output) {
        if let Life::Lingering { why, .. } = &out.life {
            let why = why.clone();
            self.end_now(out, why);
        }
    }

    /// A write finished through the queue.
    pub(crate) fn on_write(&self, c: Completion) {
        let limits = self.0.common.limits.load();
        let buf = {
            let mut out = lock(&self.0.output);
            if !self.wrote(&mut out, c) {
                return;
            }
            self.flush(&mut out);
            let resume = matches!(out.read, Read::Paused(_))
                && out.life.is_open()
                && out.queued() < limits.pause_reading_at.div_ceil(2).max(1);
            if !resume {
                return;
            }
            out.read.unpause()
        };
        // Reading resumes. Input the session left unconsumed (it may pace itself by leaving
        // whole messages there while its output is high) is presented again first.
        let mut input = lock(&self.0.input);
        if input.done {
            return;
        }
        let next = if input.tail.is_empty() {
            let mut out = lock(&self.0.output);
            if !out.life.is_open() || !matches!(out.read, Read::Idle) {
                return;
            }
            self.start_read(&mut out, &limits, buf)
        } else {
            let call = self.feed(&mut input, &[]);
            self.after_call(&mut input, call, buf)
        };
        drop(input);
        if let Some(c) = next {
            self.on_read(c);
        }
    }

    /// The Close completion, the stream's last: tell the session, once.
    pub(crate) fn on_close(&self) {
        let mut input = lock(&self.0.input);
        if input.done {
            return;
        }
        input.done = true;
        let why = {
            let mut out = lock(&self.0.output);
            match mem::replace(&mut out.life, Life::Closed { reason: None }) {
                Life::Closed { reason: Some(why) } => why,
                _ => Closed::Local,
            }
        };
        if let Some(mut s) = input.session.take() {
            in_session(|| s.closed(&why));
        }
        input.tail = Vec::new();
        input.stash = Vec::new();
    }

    /// The server is going away without a Close completion: drop the session (breaking any
    /// cycle through it) after telling it.
    pub(crate) fn discard(&self, why: Closed) {
        let mut input = lock(&self.0.input);
        if input.done {
            return;
        }
        input.done = true;
        if let Some(mut s) = input.session.take() {
            in_session(|| s.closed(&why));
        }
    }

    // ---- inside ----

    /// Runs the session on its tail plus `new`.
    fn feed(&self, input: &mut Input, new: &[u8]) -> Call {
        let Input { session, tail, stash, .. } = input;
        let Some(session) = session.as_mut() else {
            return Call::idle();
        };
        let from_tail = !tail.is_empty();
        if from_tail {
            tail.extend_from_slice(new);
        }
        let data: &[u8] = if from_tail { tail } else { new };
        let limits = self.0.common.limits.load();
        let at_mark = {
            let mut out = lock(&self.0.output);
            // The caller looked before this lock: a close (another thread's, a stop) may have
            // come since. The session is not called once the connection is closing, unless
            // only because the peer ended its input (its last requests are still answered).
            #[cfg(loom)]
            let look = !crate::sync::planted("feed_after_close");
            #[cfg(not(loom))]
            let look = true;
            // Planted bug `feed_after_close`: the session is called whatever happened since
            // the caller looked (its reply is then dropped with the closed connection).
            if look && !out.life.takes_calls() {
                return Call::idle();
            }
            out.in_call = true;
            out.queued() >= limits.pause_reading_at
        };
        let mut outbox = Outbox::new(stash, self);
        let got = in_session(|| session.receive(data, &mut outbox));
        let close = outbox.wants_close();
        let mut progressed = false;
        let result = match got {
            Ok(used) if used <= data.len() => {
                progressed = used > 0;
                if from_tail {
                    tail.drain(..used);
                    if tail.is_empty() && tail.capacity() > SPARE_KEEP {
                        *tail = Vec::new();
                    }
                } else {
                    tail.extend_from_slice(&new[used..]);
                }
                Ok(())
            }
            Ok(used) => Err(Error::invalid(format!(
                "session of connection {} consumed {used} bytes of {}",
                self.0.id,
                data.len()
            ))),
            Err(e) => Err(e),
        };
        Call { result, close, progressed, at_mark }
    }

    /// After a session call: act on its verdict, queue its output, start the next read if
    /// one is wanted. Returns the read's completion if it finished at once.
    ///
    /// The re-feed rule (ARCHITECTURE.md, "Sessions", step 1): a call that left bytes is
    /// followed by another with the rest, at once while the output has room (or the peer has
    /// ended its input), else when the output has drained (the connection pauses, and the
    /// write side resumes it) — if the call consumed something, or began with the output at
    /// the pause mark (the session may have been pacing itself, and the output may have
    /// drained while it ran). A call that consumed nothing with room in the output is waiting
    /// for more bytes: it is not called again until they come, so this ends.
    fn after_call(&self, input: &mut Input, mut call: Call, read_buf: Option<Vec<u8>>) -> Option<Completion> {
        loop {
            let limits = self.0.common.limits.load();
            let mut out = lock(&self.0.output);
            // While the session may be called again, its connection must not close on an empty
            // queue (`in_call` stays set through the flush below).
            #[cfg(any(loom, cport_plant))]
            let paced = call.at_mark && !crate::sync::planted("refeed_needs_progress");
            #[cfg(not(any(loom, cport_plant)))]
            let paced = call.at_mark;
            // Planted bug `refeed_needs_progress`: only a call that consumed something is
            // followed by another (the race of issue 14).
            let may_refeed = (call.progressed || paced) && !input.tail.is_empty();
            out.in_call = may_refeed;
            if out.life.is_closed() {
                return None;
            }
            if let Err(e) = call.result {
                input.stash.clear();
                self.end_now(&mut out, Closed::Error(e));
                return None;
            }
            if input.tail.len() > limits.max_input {
                let e = Error::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "connection {}: {} bytes of input not consumed, more than the limit of {}",
                        self.0.id,
                        input.tail.len(),
                        limits.max_input
                    ),
                );
                self.end_now(&mut out, Closed::Error(e));
                return None;
            }
            if !input.stash.is_empty() && !self.enqueue(&mut out, &mut input.stash, &limits) {
                return None;
            }
            if call.close {
                out.begin_ending(Closed::Local);
            }
            self.flush(&mut out);
            if may_refeed && !out.life.is_closed() {
                let peer_done = matches!(out.life, Life::Ending { why: Closed::Peer, .. });
                let room = out.life.is_open() && out.queued() < limits.pause_reading_at;
                if peer_done || room {
                    drop(out);
                    call = self.feed(input, &[]);
                    continue;
                }
                // Not now: let an ending connection close once its queue is empty.
                out.in_call = false;
                self.flush(&mut out);
            }
            if !out.life.is_open() {
                return None;
            }
            if out.queued() >= limits.pause_reading_at {
                #[cfg(loom)]
                if crate::sync::planted("pause_unlocked") {
                    // Planted bug: the pause is marked in a second hold of the lock, so a write
                    // that finished in between found nothing to resume.
                    drop(out);
                    let mut out = lock(&self.0.output);
                    out.read = Read::Paused(read_buf);
                    return None;
                }
                out.read = Read::Paused(read_buf);
                return None;
            }
            return self.start_read(&mut out, &limits, read_buf);
        }
    }

    /// Moves `data` to the end of the queue; false (and the connection closed) if that passes
    /// the limit.
    fn enqueue(&self, out: &mut Output, data: &mut Vec<u8>, limits: &Limits) -> bool {
        let total = out.queued() + data.len();
        if total > limits.max_outbox {
            data.clear();
            self.end_now(out, Closed::Error(over_limit(self.0.id, limits.max_outbox)));
            return false;
        }
        if out.queue.is_empty() {
            mem::swap(&mut out.queue, data);
        } else {
            out.queue.append(data);
        }
        self.0.common.stats.peak_outbox.fetch_max(total, Ordering::Relaxed);
        true
    }

    /// Starts the next write if none is in flight, handling writes that finish at once; closes
    /// a connection that is ending once its queue is empty.
    fn flush(&self, out: &mut Output) {
        loop {
            if out.life.is_closed() || out.in_flight > 0 {
                return;
            }
            if out.queue.is_empty() {
                #[cfg(loom)]
                let in_call = out.in_call && !crate::sync::planted("close_ignores_call");
                #[cfg(not(loom))]
                let in_call = out.in_call;
                // Planted bug `close_ignores_call`: an ending connection closes on an empty
                // queue while a session call, whose output is not queued yet, is running.
                if !in_call && matches!(out.life, Life::Ending { .. }) {
                    self.finish(out);
                }
                return;
            }
            let next = mem::take(&mut out.spare);
            let buf = mem::replace(&mut out.queue, next);
            out.in_flight = buf.len();
            match self.0.common.port.start_io_inline(&self.0.isb, Request::write(buf)) {
                Ok(None) => return,
                Ok(Some(c)) => {
                    if !self.wrote(out, c) {
                        return;
                    }
                }
                Err(e) => {
                    out.in_flight = 0;
                    self.end_now(out, Closed::Error(e.into_parts().0));
                    return;
                }
            }
        }
    }

    /// Everything is sent and the connection is ending: close it. A graceful close (the
    /// session's, a stop or an idle timeout) lingers first unless the peer has ended its input
    /// and nothing of it is unread: shut the write side down and read until the peer closes,
    /// bounded by [`Limits::linger`], because closing a socket with unread input, or input that
    /// arrives after the close, makes the kernel reset the connection, destroying replies the
    /// peer has not read yet. A peer that has not ended its input may send more at any moment,
    /// so an empty receive queue now proves nothing.
    fn finish(&self, out: &mut Output) {
        let (why, dropped_input) = match &out.life {
            Life::Ending { why, dropped_input } => (why.clone(), *dropped_input),
            _ => return,
        };
        let limits = self.0.common.limits.load();
        let graceful = matches!(why, Closed::Local | Closed::Stopped | Closed::IdleTimeout);
        let unread = || {
            dropped_input
                || !out.peer_ended
                || self.0.isb.fd().is_some_and(|fd| crate::sys::socket::bytes_readable(fd).map_or(true, |n| n > 0))
        };
        if !graceful || limits.linger.is_zero() || !unread() || self.0.common.port.shutdown_write(&self.0.isb).is_err()
        {
            self.end_now(out, why);
            return;
        }
        let until = super::deadline_after(limits.linger);
        out.life = Life::Lingering { why, until };
        if matches!(out.read, Read::Pending) {
            // The read in flight is the first lingering read.
            let _ = self.0.common.port.set_timeout(&self.0.isb, Some(limits.linger));
            return;
        }
        // A paused read side reads again, to discard.
        let buf = out.read.unpause();
        let mut next = self.linger_next(out, until, buf);
        while let Some(c) = next.take() {
            next = self.linger_read(out, c);
        }
    }

    /// Accounts for a finished write; false if the connection is over.
    fn wrote(&self, out: &mut Output, mut c: Completion) -> bool {
        out.in_flight = 0;
        match c.status() {
            Status::Ok => {
                add(&self.0.common.stats.bytes_out, c.bytes());
                if let Some(mut buf) = c.take_buffer() {
                    if buf.capacity() <= SPARE_KEEP && out.spare.capacity() == 0 {
                        buf.clear();
                        out.spare = buf;
                    }
                }
                true
            }
            Status::Cancelled => false,
            Status::Abandoned => {
                self.end_now(out, Closed::Peer);
                false
            }
            _ => {
                let e = c.result().err().unwrap_or_else(|| Error::invalid("write failed"));
                self.end_now(out, Closed::Error(e));
                false
            }
        }
    }

    /// Starts the next read; while the connection is open (not lingering), it ends
    /// `TimedOut` after [`Limits::idle_timeout`] without bytes.
    fn start_read(&self, out: &mut Output, limits: &Limits, buf: Option<Vec<u8>>) -> Option<Completion> {
        let mut buf = buf.unwrap_or_default();
        buf.resize(limits.read_size, 0);
        let mut req = Request::read_some(buf);
        if let (Some(after), true) = (limits.idle_timeout, out.life.is_open()) {
            req = req.timeout(after);
        }
        match self.0.common.port.start_io_inline(&self.0.isb, req) {
            Ok(done) => {
                out.read = if done.is_none() { Read::Pending } else { Read::Idle };
                done
            }
            Err(e) => {
                self.end_now(out, Closed::Error(e.into_parts().0));
                None
            }
        }
    }

    /// Closes the stream now (pending I/O completes as cancelled, then the Close completion
    /// comes); the first reason given is the one reported.
    fn end_now(&self, out: &mut Output, why: Closed) {
        if out.life.is_closed() {
            return;
        }
        out.queue = Vec::new();
        out.spare = Vec::new();
        if let Read::Paused(buf) = &mut out.read {
            // Still paused (what `is_reading_paused` reports), without the buffer.
            *buf = None;
        }
        let stats = &self.0.common.stats;
        match &why {
            Closed::Error(e) => match e.kind() {
                ErrorKind::LimitExceeded => add(&stats.limit_closes, 1),
                // The port going away is not this connection's error.
                ErrorKind::PortClosed | ErrorKind::NotAssigned => {}
                _ => add(&stats.errors, 1),
            },
            Closed::IdleTimeout => add(&stats.idle_closes, 1),
            _ => {}
        }
        out.life = Life::Closed { reason: Some(why) };
        // NotAssigned: already closed (or torn down); the Close completion is on its way or the
        // server's teardown discards the session.
        let _ = self.0.common.port.close(&self.0.isb);
    }
}

#[cfg(not(loom))]
thread_local! {
    /// This thread is inside a session call (see [`inside_session`]).
    static IN_SESSION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(loom)]
thread_local! {
    /// This thread is inside a session call (see [`inside_session`]).
    static IN_SESSION: std::cell::Cell<bool> = std::cell::Cell::new(false);
}

/// Runs a session call, marking the thread as inside one.
fn in_session<T>(call: impl FnOnce() -> T) -> T {
    let outer = IN_SESSION.with(|f| f.replace(true));
    let result = call();
    IN_SESSION.with(|f| f.set(outer));
    result
}

/// Whether this thread is inside a session call: waiting for the server there (`stop`,
/// `poll`) could wait for the very connection whose session is running.
pub(crate) fn inside_session() -> bool {
    IN_SESSION.with(|f| f.get())
}

/// What a session call came to.
struct Call {
    result: Result<()>,
    /// The session asked to close after its output.
    close: bool,
    /// The session consumed some input.
    progressed: bool,
    /// The output was at the pause mark when the call began.
    at_mark: bool,
}

impl Call {
    /// No call was made (no session, or no bytes).
    fn idle() -> Call {
        Call { result: Ok(()), close: false, progressed: false, at_mark: false }
    }
}

fn over_limit(id: u64, max: usize) -> Error {
    Error::new(
        ErrorKind::LimitExceeded,
        format!("connection {id}: the peer is not taking its output; more than {max} bytes queued"),
    )
}
