//! Stream deadlines and accept back-offs on the port's timing wheel, and the timerfd that
//! fires at the earliest of them. See ARCHITECTURE.md, "Token lifetime" (timers carry the
//! token and a sequence number, so a replaced timer that fires does nothing).

use std::time::Instant;

use super::{Deliver, Shared};
use crate::request::Side;
use crate::sync::lock;
use crate::timer::{TimerId, Wheel};
use crate::token::Token;

/// Which timer of a stream fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// The deadline of `set_timeout`.
    Deadline,
    /// The accept back-off after the OS ran out of fds or memory (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM).
    Backoff,
    /// The timeout of the request pending on this side (`Request::timeout`).
    Request(Side),
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
    pub(crate) wheel: Wheel<TimerKey>,
    programmed: Option<Instant>,
    seq: u32,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        #[cfg(not(loom))]
        let wheel = Wheel::new(Instant::now());
        // Under loom a fine wheel: a model waits a few microseconds of real time for a deadline
        // to pass, in every one of its executions.
        #[cfg(loom)]
        let wheel = Wheel::with_params(Instant::now(), std::time::Duration::from_micros(1), 64);
        Timers { wheel, programmed: None, seq: 0 }
    }
}

impl Shared {
    /// Arms a timer of `kind` for the stream, reprogramming the timerfd if it is now the
    /// earliest. Returns the wheel id and the sequence number the key carries.
    pub(crate) fn arm_timer(&self, deadline: Instant, token: Token, kind: TimerKind) -> (TimerId, u32) {
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

    pub(crate) fn disarm_timer(&self, id: TimerId) {
        lock(&self.timers).wheel.remove(id);
    }

    /// The timerfd fired: expire due timers, reprogram, and act on each.
    pub(crate) fn on_timer(&self, how: &mut Deliver<'_>) {
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
                    let isb = crate::isb::Isb { stream: stream.clone() };
                    let c = crate::completion::Completion::new(
                        stream.user_token,
                        Some(isb),
                        crate::request::Op::Read,
                        crate::completion::Status::TimedOut,
                    );
                    self.deliver(c, how);
                }
                continue;
            }
            let mut inner = stream.lock();
            match key.kind {
                TimerKind::Deadline if inner.deadline.map(|d| d.1) == Some(key.seq) => {
                    inner.deadline = None;
                    self.end_all(&stream, &mut inner, crate::completion::Status::TimedOut, how);
                }
                TimerKind::Request(side)
                    if inner.pending[side as usize].as_ref().and_then(|p| p.timer).map(|t| t.1) == Some(key.seq) =>
                {
                    // The wheel already dropped this timer: do not disarm it again.
                    if let Some(p) = inner.pending[side as usize].as_mut() {
                        p.timer = None;
                    }
                    #[cfg(loom)]
                    if crate::sync::planted("request_timeout_keeps_io") {
                        // Planted bug: the timeout is reported, and the request left pending.
                        let isb = crate::isb::Isb { stream: stream.clone() };
                        let op = inner.pending[side as usize].as_ref().map_or(crate::request::Op::Read, |p| p.req.op());
                        let c = crate::completion::Completion::new(
                            stream.user_token,
                            Some(isb),
                            op,
                            crate::completion::Status::TimedOut,
                        );
                        self.deliver(c, how);
                        continue;
                    }
                    self.finish(&stream, &mut inner, side, crate::completion::Status::TimedOut, None, how);
                    self.rearm(&stream, &mut inner, how);
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
}
