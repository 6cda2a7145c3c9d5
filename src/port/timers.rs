//! Stream deadlines, accept back-offs and user timers ([`Port::timer`](crate::Port::timer)) on
//! the port's timing wheel, and the timerfd that fires at the earliest of them. See
//! ARCHITECTURE.md, "Token lifetime" (timers carry the token and a sequence number, so a
//! replaced timer that fires does nothing) and "Timers".

use std::time::Instant;

use super::{Deliver, Shared, OPEN};
use crate::completion::{Completion, Status};
use crate::error::{Error, Result};
use crate::request::{Op, Side};
use crate::sync::{lock, Ordering};
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
    /// A user timer (`Port::timer`): the key's token names its slot in `UserTimers`.
    User,
}

/// A user timer armed on the wheel: what its completion carries.
struct UserTimer {
    token: u64,
    value: u64,
    wheel: TimerId,
}

/// The user timers of a port: slots with generations (so a handle of a timer that ended
/// names nothing), under one lock, which orders a timer's three ends (it fires, it is
/// cancelled, shutdown cancels it) so that exactly one of them makes its completion.
#[derive(Default)]
pub(crate) struct UserTimers {
    slots: Vec<(u32, Option<UserTimer>)>,
    free: Vec<u32>,
}

/// A timer made by [`Port::timer`](crate::Port::timer) or
/// [`Port::timer_at`](crate::Port::timer_at), to cancel it with
/// [`Port::cancel_timer`](crate::Port::cancel_timer). A copy names the same timer; once the
/// timer has ended (fired or cancelled) its handle names nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timer {
    /// The port's serial number.
    port: usize,
    token: Token,
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
    /// Arms a user timer (see `Port::timer_at`).
    pub(crate) fn user_timer(&self, token: u64, value: u64, at: Instant) -> Result<Timer> {
        let mut users = lock(&self.user_timers);
        // Checked under the lock that shutdown's cancel pass takes: a timer armed here is in
        // that pass, or is refused.
        if self.state.load(Ordering::SeqCst) != OPEN {
            return Err(Error::closed());
        }
        let slot = match users.free.pop() {
            Some(s) => s,
            None => {
                users.slots.push((0, None));
                (users.slots.len() - 1) as u32
            }
        };
        let gen = users.slots[slot as usize].0;
        let key = Token { slot, gen };
        let (wheel, _) = self.arm_timer(at, key, TimerKind::User);
        users.slots[slot as usize].1 = Some(UserTimer { token, value, wheel });
        Ok(Timer { port: self.key(), token: key })
    }

    /// Ends user timer `t` as `status` if it is still armed (under the lock), and delivers its
    /// completion. Returns whether it was.
    fn end_user_timer(
        &self,
        users: &mut UserTimers,
        t: Token,
        status: Status,
        how: &mut Deliver<'_>,
        disarm: bool,
    ) -> bool {
        let Some((gen, slot)) = users.slots.get_mut(t.slot as usize) else { return false };
        if *gen != t.gen || slot.is_none() {
            return false;
        }
        let timer = slot.take().expect("checked");
        *gen = Token::next_gen(*gen);
        users.free.push(t.slot);
        if disarm {
            self.disarm_timer(timer.wheel);
        }
        let mut c = Completion::new(timer.token, None, Op::Timer, status);
        c.value = timer.value;
        #[cfg(cport_plant)]
        if status == Status::Cancelled && crate::sync::planted("lost_timer_cancel") {
            // Planted bug (for the storm): a cancelled timer's completion vanishes.
            return true;
        }
        self.deliver(c, how);
        true
    }

    /// `Port::cancel_timer`.
    pub(crate) fn cancel_user_timer(&self, timer: &Timer, how: &mut Deliver<'_>) -> Result<bool> {
        if timer.port != self.key() {
            return Err(Error::invalid("cancel_timer: the timer belongs to another port"));
        }
        let mut users = lock(&self.user_timers);
        #[cfg(loom)]
        if crate::sync::planted("timer_cancel_unlocked") {
            // Planted bug: look under the lock, end it after letting go (time to fire meanwhile).
            let armed =
                users.slots.get(timer.token.slot as usize).is_some_and(|(g, s)| *g == timer.token.gen && s.is_some());
            drop(users);
            if !armed {
                return Ok(false);
            }
            crate::sync::yield_now();
            let mut users = lock(&self.user_timers);
            let (gen, slot) = &mut users.slots[timer.token.slot as usize];
            let value = slot.as_ref().map_or(0, |t| t.value);
            let token = slot.as_ref().map_or(0, |t| t.token);
            *slot = None;
            *gen = Token::next_gen(*gen);
            drop(users);
            let mut c = Completion::new(token, None, Op::Timer, Status::Cancelled);
            c.value = value;
            self.deliver(c, how);
            return Ok(true);
        }
        Ok(self.end_user_timer(&mut users, timer.token, Status::Cancelled, how, true))
    }

    /// Shutdown: every user timer still armed ends `Cancelled`.
    pub(crate) fn cancel_user_timers(&self) {
        let mut users = lock(&self.user_timers);
        let armed: Vec<Token> = users
            .slots
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| t.is_some())
            .map(|(i, (gen, _))| Token { slot: i as u32, gen: *gen })
            .collect();
        for t in armed {
            self.end_user_timer(&mut users, t, Status::Cancelled, &mut Deliver::Queue, true);
        }
    }

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
            if key.kind == TimerKind::User {
                // The wheel already dropped it: nothing to disarm.
                let mut users = lock(&self.user_timers);
                self.end_user_timer(&mut users, key.token, Status::Ok, how, false);
                continue;
            }
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
