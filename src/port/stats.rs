//! What a port has done: counters kept per thread (each written by its own thread, so counting
//! costs no shared write) and summed when [`Port::stats`](crate::Port::stats) reads them.

use crate::completion::Status;
use crate::sync::StatCounter;

/// What a port has done since it was built, summed over its threads. Every field counts up;
/// take two readings and divide their difference by the messages handled to see what one
/// message costs (the echo benchmark does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Completions taken (by `next_completion` and its kin, or handed back by
    /// `start_io_inline`) with status `Ok`, posts included.
    pub ok: u64,
    /// ... with status `Eof`.
    pub eof: u64,
    /// ... with status `Cancelled`.
    pub cancelled: u64,
    /// ... with status `TimedOut`.
    pub timed_out: u64,
    /// ... with status `Abandoned`.
    pub abandoned: u64,
    /// ... with status `Failed`.
    pub failed: u64,
    /// `epoll_wait` calls.
    pub epoll_waits: u64,
    /// Events those calls returned.
    pub events: u64,
    /// `epoll_ctl` calls that re-armed a stream's oneshot registration.
    pub rearms: u64,
    /// I/Os that finished inside `start_io_inline` and came straight back to the caller.
    pub inline: u64,
    /// Completions a thread took from another thread's queue.
    pub steals: u64,
    /// Times a thread parked because there was nothing for it to do.
    pub parks: u64,
    /// Parked threads woken by another thread (a futex wake each).
    pub futex_wakes: u64,
    /// Threads woken out of `epoll_wait` by another thread (an eventfd write each).
    pub eventfd_pokes: u64,
    /// Times the standby took over work a thread left behind and did not come back to.
    pub rescues: u64,
    /// Completions of I/O started (or posted) by a thread between two of its
    /// `next_completion` calls that finished at once: queued in that thread's own queue,
    /// for its next call, with nobody woken.
    pub local: u64,
    /// Completions queued in the port's shared queue (produced by threads that do not wait
    /// on the port, by cancels and closes, or left by a thread that exited).
    pub injected: u64,
    /// Non-blocking `epoll_wait` calls made for fairness: a thread that takes completions
    /// looks at epoll at least once every 31 of them (`Builder::poll_interval`), however much
    /// its queues hold.
    pub forced_polls: u64,
}

impl Stats {
    /// Completions taken, whatever their status.
    pub fn completions(&self) -> u64 {
        self.ok + self.eof + self.cancelled + self.timed_out + self.abandoned + self.failed
    }

    /// Events per `epoll_wait` (0 before the first wait).
    pub fn events_per_wait(&self) -> f64 {
        if self.epoll_waits == 0 {
            0.0
        } else {
            self.events as f64 / self.epoll_waits as f64
        }
    }
}

/// The counters `Stats` is made of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Ok,
    Eof,
    Cancelled,
    TimedOut,
    Abandoned,
    Failed,
    EpollWaits,
    Events,
    Rearms,
    Inline,
    Steals,
    Parks,
    FutexWakes,
    EventfdPokes,
    Rescues,
    Local,
    Injected,
    ForcedPolls,
}

const COUNTERS: usize = Counter::ForcedPolls as usize + 1;

impl Counter {
    pub(crate) fn of(status: Status) -> Counter {
        match status {
            Status::Ok => Counter::Ok,
            Status::Eof => Counter::Eof,
            Status::Cancelled => Counter::Cancelled,
            Status::TimedOut => Counter::TimedOut,
            Status::Abandoned => Counter::Abandoned,
            Status::Failed => Counter::Failed,
        }
    }
}

/// One thread's counters, on cache lines of their own.
#[repr(align(128))]
pub(crate) struct Counters {
    v: [StatCounter; COUNTERS],
    /// Several threads add to these (the port's counters for threads without a context of
    /// their own): an atomic add. Otherwise only the owning thread adds, and a plain load and
    /// store do (readers may see a count a moment late).
    shared: bool,
}

impl Counters {
    /// A thread's own counters.
    pub(crate) fn new() -> Counters {
        Counters { v: std::array::from_fn(|_| StatCounter::new(0)), shared: false }
    }

    /// Counters any thread adds to.
    pub(crate) fn new_shared() -> Counters {
        Counters { shared: true, ..Counters::new() }
    }

    /// Adds `n` to `c`. Relaxed: the counts order nothing.
    pub(crate) fn add(&self, c: Counter, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let v = &self.v[c as usize];
        if self.shared {
            v.fetch_add(n, Relaxed);
        } else {
            v.store(v.load(Relaxed) + n, Relaxed);
        }
    }

    /// Adds `other`'s counts to these (a leaving thread's, kept by the port).
    pub(crate) fn absorb(&self, other: &Counters) {
        for (i, v) in other.v.iter().enumerate() {
            let n = v.load(std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                self.v[i].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Adds these counters into `s`.
    pub(crate) fn sum_into(&self, s: &mut Stats) {
        let g = |c: Counter| self.v[c as usize].load(std::sync::atomic::Ordering::Relaxed);
        s.ok += g(Counter::Ok);
        s.eof += g(Counter::Eof);
        s.cancelled += g(Counter::Cancelled);
        s.timed_out += g(Counter::TimedOut);
        s.abandoned += g(Counter::Abandoned);
        s.failed += g(Counter::Failed);
        s.epoll_waits += g(Counter::EpollWaits);
        s.events += g(Counter::Events);
        s.rearms += g(Counter::Rearms);
        s.inline += g(Counter::Inline);
        s.steals += g(Counter::Steals);
        s.parks += g(Counter::Parks);
        s.futex_wakes += g(Counter::FutexWakes);
        s.eventfd_pokes += g(Counter::EventfdPokes);
        s.rescues += g(Counter::Rescues);
        s.local += g(Counter::Local);
        s.injected += g(Counter::Injected);
        s.forced_polls += g(Counter::ForcedPolls);
    }
}
