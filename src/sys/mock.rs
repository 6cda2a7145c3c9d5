//! The loom stand-in for epoll: a oneshot selector whose "kernel" is driven by the model.
//!
//! Same interface as `sys::epoll`. Readiness is level-triggered and set by the model through
//! [`Kernel`] (usually from inside a model driver, under that driver's own lock, so readiness
//! always matches the driver's state). An event is delivered only to a registration that is
//! armed and whose interest meets the readiness (a hang-up is always reported, as with
//! epoll); delivery disarms it (oneshot), and exactly one waiting thread takes it.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use super::{Event, Interest, POKE_TOKEN, STOP_TOKEN, TIMER_TOKEN};
use crate::sync::{lock, Arc, Condvar, Mutex};

/// Level readiness of one fake fd.
#[derive(Clone, Copy, Debug, Default)]
struct Readiness {
    readable: bool,
    writable: bool,
    hangup: bool,
}

/// One registration: the token epoll data would carry, the interest, and whether it is armed.
#[derive(Clone, Copy, Debug)]
struct Reg {
    fd: RawFd,
    token: u64,
    interest: Interest,
    armed: bool,
}

#[derive(Default)]
struct Table {
    regs: Vec<Reg>,
    ready: Vec<(RawFd, Readiness)>,
    stopped: bool,
    /// Teardowns of the port (`Selector::torn_down`).
    teardowns: usize,
    timer_deadline: Option<Instant>,
    timer_armed: bool,
    timer_fired: bool,
    poked: bool,
}

impl Table {
    fn readiness(&self, fd: RawFd) -> Readiness {
        self.ready.iter().find(|(f, _)| *f == fd).map(|(_, r)| *r).unwrap_or_default()
    }

    fn readiness_mut(&mut self, fd: RawFd) -> &mut Readiness {
        if let Some(i) = self.ready.iter().position(|(f, _)| *f == fd) {
            return &mut self.ready[i].1;
        }
        self.ready.push((fd, Readiness::default()));
        &mut self.ready.last_mut().expect("just pushed").1
    }
}

struct State {
    table: Mutex<Table>,
    cv: Condvar,
}

/// The model's handle on the stand-in kernel of one port (see `Port::kernel`).
#[derive(Clone)]
pub struct Kernel {
    state: Arc<State>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").finish_non_exhaustive()
    }
}

impl Kernel {
    /// Sets the level readiness of `fd`; waiting workers see it at once.
    pub fn set_ready(&self, fd: RawFd, readable: bool, writable: bool) {
        let mut t = lock(&self.state.table);
        let r = t.readiness_mut(fd);
        r.readable = readable;
        r.writable = writable;
        drop(t);
        self.state.cv.notify_all();
    }

    /// Reports a hang-up on `fd` (always delivered to an armed registration).
    pub fn hang_up(&self, fd: RawFd) {
        lock(&self.state.table).readiness_mut(fd).hangup = true;
        self.state.cv.notify_all();
    }

    /// Makes the timer fire if it is programmed (model time does not pass by itself).
    pub fn fire_timer(&self) {
        let mut t = lock(&self.state.table);
        if t.timer_deadline.is_some() {
            t.timer_fired = true;
        }
        drop(t);
        self.state.cv.notify_all();
    }

    /// How many times the port was torn down (the models check: exactly once).
    pub fn teardowns(&self) -> usize {
        lock(&self.state.table).teardowns
    }

    /// Whether `fd` is registered (not deregistered).
    pub fn is_registered(&self, fd: RawFd) -> bool {
        lock(&self.state.table).regs.iter().any(|r| r.fd == fd)
    }
}

/// Events taken by one `wait`.
pub(crate) struct Events {
    list: Vec<Event>,
}

impl Events {
    pub(crate) fn with_capacity(cap: usize) -> Events {
        Events { list: Vec::with_capacity(cap.max(1)) }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list.iter().copied()
    }
}

/// The stand-in selector.
pub(crate) struct Selector {
    state: Arc<State>,
}

impl Selector {
    pub(crate) fn new() -> io::Result<Selector> {
        Ok(Selector { state: Arc::new(State { table: Mutex::new(Table::default()), cv: Condvar::new() }) })
    }

    /// The model's handle on this selector's kernel.
    pub(crate) fn kernel(&self) -> Kernel {
        Kernel { state: self.state.clone() }
    }

    pub(crate) fn register(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut t = lock(&self.state.table);
        if t.regs.iter().any(|r| r.fd == fd) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        t.regs.push(Reg { fd, token, interest: Interest::NONE, armed: true });
        drop(t);
        self.state.cv.notify_all();
        Ok(())
    }

    pub(crate) fn arm(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut t = lock(&self.state.table);
        match t.regs.iter_mut().find(|r| r.fd == fd) {
            Some(r) => *r = Reg { fd, token, interest, armed: true },
            None => t.regs.push(Reg { fd, token, interest, armed: true }),
        }
        drop(t);
        self.state.cv.notify_all();
        Ok(())
    }

    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        let mut t = lock(&self.state.table);
        t.regs.retain(|r| r.fd != fd);
        t.ready.retain(|(f, _)| *f != fd);
        Ok(())
    }

    /// Takes every deliverable event, disarming each registration it came from; blocks while
    /// there is none unless `timeout_ms` is 0.
    pub(crate) fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        events.list.clear();
        let mut t = lock(&self.state.table);
        loop {
            if t.stopped {
                events.list.push(Event { token: STOP_TOKEN, readable: true, writable: false, hangup: false });
                return Ok(());
            }
            if t.poked {
                events.list.push(Event { token: POKE_TOKEN, readable: true, writable: false, hangup: false });
            }
            if t.timer_armed && t.timer_fired {
                t.timer_armed = false;
                events.list.push(Event { token: TIMER_TOKEN, readable: true, writable: false, hangup: false });
            }
            for i in 0..t.regs.len() {
                let reg = t.regs[i];
                if !reg.armed {
                    continue;
                }
                let r = t.readiness(reg.fd);
                let readable = reg.interest.readable && r.readable;
                let writable = reg.interest.writable && r.writable;
                if readable || writable || r.hangup {
                    t.regs[i].armed = false;
                    events.list.push(Event { token: reg.token, readable, writable, hangup: r.hangup });
                }
            }
            if !events.list.is_empty() || timeout_ms == 0 {
                return Ok(());
            }
            t = self.state.cv.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(crate) fn stop(&self) -> io::Result<()> {
        lock(&self.state.table).stopped = true;
        self.state.cv.notify_all();
        Ok(())
    }

    pub(crate) fn set_timer(&self, deadline: Option<Instant>) -> io::Result<()> {
        let mut t = lock(&self.state.table);
        t.timer_deadline = deadline;
        t.timer_armed = true;
        if deadline.is_none() {
            t.timer_fired = false;
        }
        drop(t);
        self.state.cv.notify_all();
        Ok(())
    }

    /// The port's teardown ran (counted for the models).
    pub(crate) fn torn_down(&self) {
        lock(&self.state.table).teardowns += 1;
    }

    pub(crate) fn poke(&self) {
        lock(&self.state.table).poked = true;
        self.state.cv.notify_all();
    }

    pub(crate) fn ack_poke(&self) {
        lock(&self.state.table).poked = false;
    }

    pub(crate) fn ack_timer(&self) {
        lock(&self.state.table).timer_fired = false;
    }
}
