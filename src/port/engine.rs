//! The I/O engine: what happens to a stream when epoll reports it ready, when a request
//! finishes, and when a completion is taken. Every move of a request happens under its
//! stream's lock; see ARCHITECTURE.md, "ISB states", "Re-arm" and "Cancel, timeout, close".

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::stats::Counter;
use super::timers::TimerKind;
use super::{wait, Deliver, Shared, ACCEPT_BACKOFF};
use crate::completion::{Completion, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::isb::{self, Inner, Isb, Pending, Step, Stream};
use crate::request::{Op, Side};
use crate::sync::{Arc, Ordering};
use crate::sys::{Events, Interest, POKE_TOKEN, STOP_TOKEN, TIMER_TOKEN};
use crate::token::Token;

impl Shared {
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

    pub(crate) fn stream(&self, token: Token) -> Option<Arc<Stream>> {
        self.streams.get(token)
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

    /// Moves `side`'s request forward and completes it if it finished.
    pub(crate) fn advance(
        &self,
        stream: &Arc<Stream>,
        inner: &mut Inner,
        side: Side,
        hangup: bool,
        how: &mut Deliver<'_>,
    ) {
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
        if let Some(x) = p.req.extra.as_mut() {
            x.progress = None;
        }
        if let Some((id, _)) = p.timer.take() {
            self.disarm_timer(id);
        }
        stream.finish(side, inner);
        *p
    }

    /// Completes `side`'s request with `status`.
    pub(crate) fn finish(
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
    pub(crate) fn end_all(
        &self,
        stream: &Arc<Stream>,
        inner: &mut Inner,
        status: Status,
        how: &mut Deliver<'_>,
    ) -> usize {
        self.end_sides(stream, inner, &[Side::Read, Side::Write], status, how)
    }

    /// Completes the pending requests of `sides` with `status`; returns how many.
    pub(crate) fn end_sides(
        &self,
        stream: &Arc<Stream>,
        inner: &mut Inner,
        sides: &[Side],
        status: Status,
        how: &mut Deliver<'_>,
    ) -> usize {
        let mut n = 0;
        for &side in sides {
            if inner.pending[side as usize].is_some() {
                self.finish(stream, inner, side, status, None, how);
                n += 1;
            }
        }
        n
    }

    /// Arms epoll for what the stream still waits for, unless it already is. See
    /// ARCHITECTURE.md, "Re-arm": both sides' interest always goes in together.
    pub(crate) fn rearm(&self, stream: &Arc<Stream>, inner: &mut Inner, how: &mut Deliver<'_>) {
        let want = inner.interest();
        if want.is_none() || inner.armed.covers(want) {
            return;
        }
        let Some(fd) = inner.driver.as_ref().map(|d| d.fd().as_raw_fd()) else { return };
        self.count(how, Counter::Rearms);
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

    /// Counts `c` on the counters `how` names (the dispatching thread's), or this thread's.
    pub(crate) fn count(&self, how: &Deliver<'_>, c: Counter) {
        match how {
            Deliver::Local(_, counters) => counters.add(c, 1),
            _ => wait::with_counters(self, |x| x.add(c, 1)),
        }
    }

    /// Delivers a completion as `how` says.
    pub(crate) fn deliver(&self, c: Completion, how: &mut Deliver<'_>) {
        match how {
            Deliver::Queue => self.wait.inject(c, self),
            Deliver::Local(queue, _) => queue.push(c),
            Deliver::Hand(slot) if slot.is_none() => {
                wait::with_counters(self, |x| {
                    x.add(Counter::Inline, 1);
                    x.add(Counter::of(c.status), 1);
                });
                self.processed(&c, &mut Deliver::Queue);
                **slot = Some(c);
            }
            Deliver::Hand(_) => self.wait.inject(c, self),
        }
    }

    /// A completion was taken: its side becomes PROCESSED, and a Close waiting for that is
    /// delivered as `how` says.
    pub(crate) fn processed(&self, c: &Completion, how: &mut Deliver<'_>) {
        if let (Some(isb), Some(side)) = (&c.isb, c.op.side()) {
            isb.stream.processed(side);
            if c.op == Op::Accept && c.value > 0 {
                self.next_accept(&isb.stream, c.value as usize - 1, how);
            }
            if c.op == Op::Signal && c.status == Status::Ok {
                self.next_signal(&isb.stream, how);
            }
            self.deliver_close(&isb.stream, how);
        }
    }

    /// Starts the next accept of an `accept_many` series, its predecessor's completion having
    /// just been taken: unless the stream was released, the port is shutting down, or another
    /// I/O took the read side meanwhile (the series then ends, as documented).
    fn next_accept(&self, stream: &Arc<Stream>, more: usize, how: &mut Deliver<'_>) {
        let mut inner = stream.lock();
        #[cfg(loom)]
        let look = !crate::sync::planted("next_accept_unchecked");
        #[cfg(not(loom))]
        let look = true;
        // Planted bug `next_accept_unchecked`: start it whether or not the stream is released.
        if look && (inner.driver.is_none() || self.state.load(Ordering::SeqCst) != super::OPEN) {
            return;
        }
        if !stream.begin(Side::Read, &inner) {
            return;
        }
        let mut req = crate::request::Request::accept();
        req.extra().more_accepts = more;
        inner.pending[Side::Read as usize] = Some(Box::new(isb::Pending::new(req)));
        if inner.backoff.is_none() {
            self.advance(stream, &mut inner, Side::Read, false, how);
        }
        self.rearm(stream, &mut inner, how);
    }

    /// Starts the next read of a `Port::signals` stream, its predecessor's completion having
    /// just been taken: unless the stream was released, the port is shutting down, or another
    /// I/O took the read side meanwhile.
    fn next_signal(&self, stream: &Arc<Stream>, how: &mut Deliver<'_>) {
        let mut inner = stream.lock();
        if inner.driver.is_none() || self.state.load(Ordering::SeqCst) != super::OPEN {
            return;
        }
        if !stream.begin(Side::Read, &inner) {
            return;
        }
        let req = crate::request::Request::new(crate::request::Kind::Signal { signo: 0 });
        inner.pending[Side::Read as usize] = Some(Box::new(isb::Pending::new(req)));
        self.advance(stream, &mut inner, Side::Read, false, how);
        self.rearm(stream, &mut inner, how);
    }

    /// Delivers the stream's Close completion if a close is pending and every other
    /// completion of the stream has been taken. Called by `close` (after it cancelled what was
    /// pending) and by every taker (after marking its side PROCESSED): a Dekker pair on the
    /// side states and the close state, so at least one of them sees both sides PROCESSED
    /// with the close pending, and the CAS lets exactly one deliver. So the Close completion
    /// is the stream's last, whichever queues its other completions sit in.
    fn deliver_close(&self, stream: &Arc<Stream>, how: &mut Deliver<'_>) {
        #[cfg(any(loom, cport_plant))]
        let undeferred = crate::sync::planted("close_not_deferred");
        #[cfg(not(any(loom, cport_plant)))]
        let undeferred = false;
        // Planted bug `close_not_deferred`: deliver the Close while the stream's other
        // completions may still sit, untaken, in another thread's queue.
        if stream.close_state() != isb::CLOSE_PENDING
            || (!undeferred
                && (stream.side_state(Side::Read) != isb::PROCESSED
                    || stream.side_state(Side::Write) != isb::PROCESSED))
        {
            return;
        }
        if stream.close_claim() {
            let c = Completion::new(stream.user_token, Some(Isb { stream: stream.clone() }), Op::Close, Status::Ok);
            self.deliver(c, how);
            self.wait.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Deassigns (and, with `close`, queues a Close completion for) the stream.
    /// Returns the detached driver, for the caller to drop (closing its fd) or to take the fd
    /// back from.
    pub(crate) fn release(&self, stream: &Arc<Stream>, close: bool) -> Result<Option<Box<dyn crate::driver::Driver>>> {
        let mut inner = stream.lock();
        let Some(fd) = inner.driver.as_ref().map(|d| d.fd().as_raw_fd()) else {
            let what = if close { "close" } else { "deassign" };
            return Err(Error::new(
                ErrorKind::NotAssigned,
                format!("{what} on stream {}: not assigned", stream.label()),
            ));
        };
        #[cfg(loom)]
        let check = !crate::sync::planted("close_unchecked");
        #[cfg(not(loom))]
        let check = true;
        // Planted bug `close_unchecked`: queue the Close completion whatever the state.
        if check && close && self.state.load(Ordering::SeqCst) != super::OPEN {
            // The Close completion would come after `PortClosed` (or race it): refuse, as
            // every call that would queue a completion of its own is refused after shutdown.
            // Checked under the stream lock, so a close that saw OPEN queues before shutdown's
            // cancel pass reaches this stream (ARCHITECTURE.md, "Shutdown", step 1).
            return Err(Error::new(
                ErrorKind::PortClosed,
                format!(
                    "close on stream {}: the port was shut down (deassign releases the stream without a completion)",
                    stream.label()
                ),
            ));
        }
        #[cfg(any(loom, cport_plant))]
        if close && crate::sync::planted("close_before_cancel") {
            // Planted bug: the Close completion goes out before the cancellations.
            self.deliver(
                Completion::new(stream.user_token, Some(Isb { stream: stream.clone() }), Op::Close, Status::Ok),
                &mut Deliver::Queue,
            );
            self.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue);
            let _ = self.selector.deregister(fd);
            if let Some(mut d) = inner.driver.take() {
                d.detach();
            }
            drop(inner);
            self.streams.remove(stream.token);
            return Ok(None);
        }
        self.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue);
        let _ = self.selector.deregister(fd);
        for id in [inner.deadline.take(), inner.backoff.take()].into_iter().flatten() {
            self.disarm_timer(id.0);
        }
        let mut driver = inner.driver.take();
        if let Some(d) = driver.as_mut() {
            d.detach();
        }
        inner.armed = Interest::NONE;
        if close {
            // The Close completion waits until the stream's other completions are taken.
            self.wait.in_flight.fetch_add(1, Ordering::SeqCst);
            stream.close_pend();
        }
        drop(inner);
        self.streams.remove(stream.token);
        if close {
            self.deliver_close(stream, &mut Deliver::Queue);
        }
        Ok(driver)
    }
}

/// The accept errors after which a listener rests ([`ACCEPT_BACKOFF`](super::ACCEPT_BACKOFF)):
/// out of fds (EMFILE, ENFILE) or out of kernel memory (ENOBUFS, ENOMEM).
fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
