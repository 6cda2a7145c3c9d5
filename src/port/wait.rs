//! Dispatch and wake-up: which thread waits in epoll, which parks, where completions go and
//! who is woken for them. The steps named in comments (W1 ... W9) are defined, with the
//! argument for each fence, in ARCHITECTURE.md, "Dispatch and wake-up".
//!
//! In short: each thread that waits on the port has a context of its own (a FIFO deque and
//! counters), found through a thread-local. A thread with nothing to take becomes the poller
//! (at most one thread blocks in `epoll_wait` at a time) or parks; the poller dispatches what
//! epoll returns into its own deque and hands the completions to its caller one call after
//! the other, so one thread that keeps up does everything and the others stay asleep. A
//! parked thread is woken only when work is left that its owner will not get to soon, and
//! nobody else is already looking for work; one parked thread, the standby, sleeps with a
//! timeout so that work left by a thread that never comes back is taken over.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::stats::{Counter, Counters};
use super::{Deliver, Shared, CLOSED};
use crate::completion::{Completion, Next};
use crate::error::{Error, Result};
use crate::queue::{Injector, Local, Stealer};
use crate::sync::{
    fence, lock, thread_local, Arc, AtomicBool, AtomicU8, AtomicUsize, Condvar, Mutex, Peek, StatCounter,
};
use crate::sys::Events;

use crate::sync::Ordering::SeqCst;
use std::sync::atomic::Ordering::Relaxed;

/// Events taken per `epoll_wait`.
pub(crate) const EVENTS_PER_WAIT: usize = 256;

/// Average time away from the port beyond which a thread's leftovers are worth waking another
/// thread for: several times what a wake-up costs on these machines (4-7 µs, tens at p99).
const WAKE_PAYS_NS: u64 = 50_000;
/// A thread that left the port less than this long ago, and whose visits away are short, is
/// "back soon": what it left is its own to take, and nobody is woken for it.
const SOON_NS: u64 = 1_000_000;
/// One visit in this many measures the time away (the first one included).
const SAMPLE: u32 = 8;
/// How long a waiter at shutdown waits for a completion on its way to a queue (see W9).
const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(1);
/// Fairness, the default of `Builder::poll_interval`: a thread that takes completions does a
/// non-blocking `epoll_wait` (when nobody holds the poll role) at least once every this many
/// completions it takes, however much its queues hold, so a stream armed in epoll waits
/// behind at most this many completions of others (plus what the poll finds before it).
pub(crate) const POLL_EVERY: u32 = 31;
/// Fairness, the default of `Builder::injector_interval`: a thread looks at the shared
/// injector first at least once every this many completions it takes, so completions there do
/// not wait behind its own queue.
pub(crate) const INJECTOR_EVERY: u32 = 31;
/// How long the standby sleeps between looks while other threads are busy.
const STANDBY_BUSY: Duration = Duration::from_millis(2);
/// ... and while they are all idle too (so an idle port costs a wake-up now and then, no more).
const STANDBY_IDLE: Duration = Duration::from_millis(100);

/// Poll role: nobody holds it.
const VACANT: u8 = 0;
/// A waiter holds it and is not blocked (deciding, or dispatching what it got).
const WAITER: u8 = 1;
/// A waiter holds it and is blocked in `epoll_wait`: a poke reaches it.
const WAITER_BLOCKED: u8 = 2;
/// A worker holds it.
const WORKER: u8 = 3;

/// A thread's phase: outside the port (a waiter between two calls).
const AWAY: u8 = 0;
/// Inside, working: taking, stealing, dispatching.
const BUSY: u8 = 1;
/// Inside, with nothing to do: parked, or blocked in `epoll_wait`.
const IDLE: u8 = 2;

/// Parker states: running.
const RUNNING: u8 = 0;
/// Parked, nobody has woken it.
const PARKED: u8 = 1;
/// Woken to look for work; counted in `Wait::searching` until it stops looking (W6).
const WORK: u8 = 2;
/// Woken by `wakeup()`: return without a completion.
const WAKEUP: u8 = 3;
/// Woken to look again (to become the standby, or at shutdown).
const LOOK: u8 = 4;

/// What kind of thread a context belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A thread in `next_completion`: it takes completions.
    Waiter,
    /// A dedicated worker: it polls and dispatches, and never takes a completion.
    Worker,
}

/// What other threads know of one thread waiting on the port.
pub(crate) struct Peer {
    kind: Kind,
    stealer: Stealer<Completion>,
    pub(crate) counters: Counters,
    /// AWAY, BUSY or IDLE.
    phase: AtomicU8,
    /// The thread is gone (its context was dropped): what is in its queue is anyone's.
    gone: AtomicBool,
    /// When it last left the port, in ns since the port's origin (a heuristic: std atomic).
    left_at_ns: StatCounter,
    /// The average of its times away, in ns (a heuristic: std atomic).
    away_ema_ns: StatCounter,
    parker: Mutex<u8>,
    cv: Condvar,
}

impl Peer {
    fn is_waiter(&self) -> bool {
        self.kind == Kind::Waiter && !self.gone.peek()
    }

    /// Away, and expected back soon: what it left is its own, and its absence is no reason to
    /// poll in its place.
    ///
    /// Under loom time does not pass: a thread away is back soon until it is gone (so a
    /// model's executions do not depend on the clock, and the standby's timeout, which loom
    /// does not model, never has to fire).
    fn away_soon(&self, now: &Now<'_>) -> bool {
        self.is_waiter()
            && self.phase.peek() == AWAY
            && (cfg!(loom)
                || (self.away_ema_ns.load(Relaxed) <= WAKE_PAYS_NS
                    && now.ns().saturating_sub(self.left_at_ns.load(Relaxed)) < SOON_NS))
    }

    /// Working inside the port, or away and back soon: the thread will take what its queue
    /// holds and poll when it runs out.
    fn active(&self, now: &Now<'_>) -> bool {
        self.is_waiter() && (self.phase.peek() == BUSY || self.away_soon(now))
    }

    /// Whether others may take from its queue: a worker never takes its own completions, a
    /// thread that is gone never comes back, and one away for long is not back soon. (At
    /// shutdown every queue is open.)
    fn open(&self, now: &Now<'_>) -> bool {
        self.kind == Kind::Worker || self.gone.peek() || (self.phase.peek() == AWAY && !self.away_soon(now))
    }
}

/// The port's clock for one look at the other threads: read once, and only if a look needs it
/// (a thread alone on its port never reads it).
struct Now<'a> {
    wait: &'a Wait,
    ns: std::cell::Cell<Option<u64>>,
}

impl Now<'_> {
    fn new(wait: &Wait) -> Now<'_> {
        Now { wait, ns: std::cell::Cell::new(None) }
    }

    fn ns(&self) -> u64 {
        match self.ns.get() {
            Some(ns) => ns,
            None => {
                let ns = self.wait.now_ns();
                self.ns.set(Some(ns));
                ns
            }
        }
    }
}

/// The port's threads, read without a lock through a versioned snapshot each context keeps.
struct Registry {
    list: Mutex<Arc<Vec<Arc<Peer>>>>,
    version: AtomicUsize,
}

impl Registry {
    fn snapshot(&self) -> (usize, Arc<Vec<Arc<Peer>>>) {
        let l = lock(&self.list);
        (self.version.load(SeqCst), l.clone())
    }

    fn change(&self, f: impl FnOnce(&mut Vec<Arc<Peer>>)) {
        let mut l = lock(&self.list);
        let mut v = Vec::clone(&l);
        f(&mut v);
        *l = Arc::new(v);
        self.version.fetch_add(1, SeqCst);
    }
}

/// What ties thread-local contexts to their port: the port, until it is torn down.
pub(crate) struct Link {
    alive: AtomicBool,
    shared: Mutex<Option<Arc<Shared>>>,
}

impl Link {
    /// Makes the port reachable from contexts.
    pub(crate) fn set(&self, shared: Arc<Shared>) {
        *lock(&self.shared) = Some(shared);
    }

    /// The port is being torn down: contexts let go of it (and of its fds).
    pub(crate) fn cut(&self) {
        self.alive.store(false, SeqCst);
        lock(&self.shared).take();
    }
}

/// The shared half of the wake protocol.
pub(crate) struct Wait {
    /// Completions produced outside a dispatch.
    injector: Injector<Completion>,
    registry: Registry,
    /// Parked threads, most recent last.
    idle: Mutex<Vec<Arc<Peer>>>,
    /// `idle.len()`, readable without the lock.
    parked: AtomicUsize,
    /// Threads woken to look for work that have not found any or given up yet (W6).
    searching: AtomicUsize,
    /// A parked thread sleeps with a timeout (the standby, W8).
    standby: AtomicBool,
    /// VACANT, WAITER, WAITER_BLOCKED or WORKER.
    poll: AtomicU8,
    /// `wakeup()` calls that found no thread to wake.
    wakeups: AtomicUsize,
    /// Completions on their way to a queue, which shutdown's last look must wait for: Close
    /// completions waiting until their stream's other completions are taken, and the queue
    /// of a context being retired.
    pub(crate) in_flight: AtomicUsize,
    /// Moves of a retired context's queue begun so far: shutdown's last look is void if one
    /// began while it looked (see [`Wait::drained`]).
    transits: AtomicUsize,
    /// Counters of threads without a context of this port.
    pub(crate) counters: Counters,
    pub(crate) link: Arc<Link>,
    origin: Instant,
    /// `Builder::poll_interval`.
    poll_every: u32,
    /// `Builder::injector_interval`.
    injector_every: u32,
}

/// Why `park` returned.
enum Woke {
    /// Look again (woken, or the check before sleeping found something).
    Look,
    /// Woken to look for work: this thread counts in `searching` until `stop_searching`.
    Work,
    /// `wakeup()` was for this thread.
    Wakeup,
    /// The caller's deadline passed.
    TimedOut,
}

/// A thread's own context on one port.
pub(crate) struct Ctx {
    link: Arc<Link>,
    pub(crate) queue: Local<Completion>,
    pub(crate) peer: Arc<Peer>,
    pub(crate) events: Events,
    peers: (usize, Arc<Vec<Arc<Peer>>>),
    /// When this thread last left the port (for its average time away).
    left_at: Option<Instant>,
    ema_ns: u64,
    /// Where the next look at other queues starts, so thieves spread.
    next_victim: usize,
    /// Calls of `next_completion` so far (for sampling the time away).
    visits: u32,
    /// Completions taken since this thread last polled (fairness: `Wait::poll_every`).
    since_poll: u32,
    /// Completions taken since the last injector-first turn, modulo `Wait::injector_every`.
    takes: u32,
}

/// A thread's contexts, boxed on purpose: each call moves its context out of the thread-local
/// and back, and a box moves as one pointer.
#[allow(clippy::vec_box)]
type Contexts = Vec<Box<Ctx>>;

#[cfg(not(loom))]
thread_local! {
    /// This thread's contexts, one per port it waits on; checked out during a call.
    static CONTEXTS: RefCell<Contexts> = const { RefCell::new(Vec::new()) };
}

#[cfg(loom)]
thread_local! {
    /// This thread's contexts, one per port it waits on; checked out during a call.
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Vec::new());
}

impl Ctx {
    fn new(shared: &Shared, kind: Kind) -> Ctx {
        let queue = Local::new();
        let peer = Arc::new(Peer {
            kind,
            stealer: queue.stealer(),
            counters: Counters::new(),
            phase: AtomicU8::new(BUSY),
            gone: AtomicBool::new(false),
            left_at_ns: StatCounter::new(0),
            away_ema_ns: StatCounter::new(0),
            parker: Mutex::new(RUNNING),
            cv: Condvar::new(),
        });
        let w = &shared.wait;
        w.registry.change(|v| v.push(peer.clone()));
        Ctx {
            link: w.link.clone(),
            queue,
            peer,
            events: Events::with_capacity(EVENTS_PER_WAIT),
            peers: w.registry.snapshot(),
            left_at: None,
            ema_ns: 0,
            next_victim: 0,
            visits: 0,
            since_poll: 0,
            takes: 0,
        }
    }

    /// The port's threads (this one among them), refreshed when the registry changed.
    fn peers(&mut self, w: &Wait) -> &[Arc<Peer>] {
        if w.registry.version.peek() != self.peers.0 {
            self.peers = w.registry.snapshot();
        }
        &self.peers.1
    }

    /// Whether any of `peers` other than this thread's own meets `f`.
    fn any_other(&mut self, w: &Wait, f: impl Fn(&Peer) -> bool) -> bool {
        let me = Arc::as_ptr(&self.peer);
        self.peers(w).iter().any(|p| !std::ptr::eq(Arc::as_ptr(p), me) && f(p))
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.peer.gone.set(true);
        let shared = lock(&self.link.shared).clone();
        if let Some(shared) = shared {
            shared.wait.retire(self, &shared);
        }
    }
}

/// The context of this thread for `shared`'s port, created on first use. (Boxed: a context is
/// moved out of the thread-local and back twice per call, and a box moves as one pointer.)
pub(crate) fn checkout(shared: &Shared) -> Box<Ctx> {
    borrow_ctx(shared).unwrap_or_else(|| Box::new(Ctx::new(shared, Kind::Waiter)))
}

/// This thread's context for `shared`'s port, if it has one and is not using it (between two
/// calls of `next_completion`: a handler). Give it back with [`checkin`].
pub(crate) fn borrow_ctx(shared: &Shared) -> Option<Box<Ctx>> {
    CONTEXTS
        .try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            let i = c.iter().position(|x| Arc::ptr_eq(&x.link, &shared.wait.link))?;
            Some(c.swap_remove(i))
        })
        .ok()
        .flatten()
}

/// Puts a context back for the next call (a duplicate from a nested call is retired).
pub(crate) fn checkin(ctx: Box<Ctx>) {
    let mut ctx = Some(ctx);
    // `try_with`: at thread exit (a call from another thread-local's destructor) the slot may
    // be gone; the context is then retired at once.
    let dead = CONTEXTS.try_with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return Vec::new() };
        // Contexts of ports torn down meanwhile go now (a thread that waits on one port has
        // no other context to look at).
        let dead: Contexts = if c.is_empty() { Vec::new() } else { extract(&mut c, |x| !x.link.alive.load(SeqCst)) };
        let mine = ctx.take().expect("checked in once");
        if c.iter().any(|x| Arc::ptr_eq(&x.link, &mine.link)) {
            ctx = Some(mine);
        } else {
            c.push(mine);
        }
        dead
    });
    // Dropped outside the borrow: a context's drop looks at the thread-local too.
    drop(dead);
    drop(ctx);
}

fn extract(v: &mut Contexts, pred: impl Fn(&Ctx) -> bool) -> Contexts {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        if pred(&v[i]) {
            out.push(v.swap_remove(i));
        } else {
            i += 1;
        }
    }
    out
}

/// Runs `f` on the counters of this thread's context for the port, or the port's shared ones
/// when this thread has none (or it is checked out).
pub(crate) fn with_counters(shared: &Shared, f: impl FnOnce(&Counters)) {
    let mut f = Some(f);
    // `try_with`: this runs from a context's drop too, which may be the thread-local's own
    // destruction at thread exit.
    let _ = CONTEXTS.try_with(|c| {
        if let Ok(c) = c.try_borrow() {
            if let Some(x) = c.iter().find(|x| Arc::ptr_eq(&x.link, &shared.wait.link)) {
                (f.take().expect("called once"))(&x.peer.counters);
            }
        }
    });
    if let Some(f) = f {
        f(&shared.wait.counters);
    }
}

impl Wait {
    pub(crate) fn new(poll_every: u32, injector_every: u32) -> Wait {
        Wait {
            injector: Injector::new(),
            registry: Registry { list: Mutex::new(Arc::new(Vec::new())), version: AtomicUsize::new(0) },
            idle: Mutex::new(Vec::new()),
            parked: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            standby: AtomicBool::new(false),
            poll: AtomicU8::new(VACANT),
            wakeups: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            transits: AtomicUsize::new(0),
            counters: Counters::new_shared(),
            link: Arc::new(Link { alive: AtomicBool::new(true), shared: Mutex::new(None) }),
            origin: Instant::now(),
            poll_every: poll_every.max(1),
            injector_every: injector_every.max(1),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Every counter of the port, summed. Under the registry's lock: a thread that leaves
    /// moves its counts into the port's own under the same lock (`retire`), so a reading sees
    /// them once, before or after, and never goes down.
    pub(crate) fn stats(&self) -> super::Stats {
        let mut s = super::Stats::default();
        let list = lock(&self.registry.list);
        self.counters.sum_into(&mut s);
        for p in list.iter() {
            p.counters.sum_into(&mut s);
        }
        s
    }

    /// Threads waiting in `next_completion` with nothing to do: parked, or in `epoll_wait`.
    pub(crate) fn idle_waiters(&self) -> usize {
        self.registry.snapshot().1.iter().filter(|p| p.is_waiter() && p.phase.load(SeqCst) == IDLE).count()
    }

    /// Queues a completion produced outside a dispatch and wakes a thread for it if need be.
    pub(crate) fn inject(&self, c: Completion, shared: &Shared) {
        self.injector.push(c);
        with_counters(shared, |x| x.add(Counter::Injected, 1));
        self.notify(shared);
    }

    /// W7: work was published where any waiter may take it (the injector, a worker's queue):
    /// unless a thread is already looking, wake a parked waiter, or else poke the waiter
    /// blocked in `epoll_wait`.
    pub(crate) fn notify(&self, shared: &Shared) {
        fence(SeqCst);
        if self.searching.peek() > 0 {
            return;
        }
        if self.parked.peek() > 0 && self.wake_one(true, WORK, shared) {
            return;
        }
        if self.poll.peek() == WAITER_BLOCKED {
            shared.selector.poke();
            with_counters(shared, |c| c.add(Counter::EventfdPokes, 1));
        }
    }

    /// Wakes the most recently parked thread (a waiter if `waiter_only`, else preferring a
    /// worker for a look) with `how`; false if there was none.
    fn wake_one(&self, waiter_only: bool, how: u8, shared: &Shared) -> bool {
        let p = {
            let mut idle = lock(&self.idle);
            let pick = if waiter_only {
                idle.iter().rposition(|p| p.kind == Kind::Waiter)
            } else {
                idle.iter().rposition(|p| p.kind == Kind::Worker).or(idle.len().checked_sub(1))
            };
            let Some(i) = pick else { return false };
            let p = idle.remove(i);
            self.parked.fetch_sub(1, SeqCst);
            if how == WORK {
                self.searching.fetch_add(1, SeqCst);
            }
            p
        };
        *lock(&p.parker) = how;
        p.cv.notify_one();
        with_counters(shared, |c| c.add(Counter::FutexWakes, 1));
        true
    }

    /// Makes one thread waiting in `next_completion` return `Ok(None)`; with none waiting,
    /// the next one that would wait returns at once.
    pub(crate) fn wakeup(&self, shared: &Shared) {
        #[cfg(loom)]
        if crate::sync::planted("wakeup_left_to_searcher") && self.searching.peek() > 0 {
            // Planted bug: a thread is looking already, so the wakeup is left to it (and lost).
            return;
        }
        let p = {
            let mut idle = lock(&self.idle);
            match idle.iter().rposition(|p| p.kind == Kind::Waiter) {
                Some(i) => {
                    let p = idle.remove(i);
                    self.parked.fetch_sub(1, SeqCst);
                    Some(p)
                }
                None => {
                    // Under the lock: a waiter that registers after this sees the token (W5).
                    self.wakeups.fetch_add(1, SeqCst);
                    None
                }
            }
        };
        match p {
            Some(p) => {
                *lock(&p.parker) = WAKEUP;
                p.cv.notify_one();
                with_counters(shared, |c| c.add(Counter::FutexWakes, 1));
            }
            None => {
                if self.poll.peek() == WAITER_BLOCKED {
                    shared.selector.poke();
                    with_counters(shared, |c| c.add(Counter::EventfdPokes, 1));
                }
            }
        }
    }

    fn take_wakeup(&self) -> bool {
        self.wakeups.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// Wakes every parked thread (shutdown).
    pub(crate) fn notify_all(&self) {
        let all = {
            let mut idle = lock(&self.idle);
            self.parked.store(0, SeqCst);
            std::mem::take(&mut *idle)
        };
        for p in all {
            *lock(&p.parker) = LOOK;
            p.cv.notify_one();
        }
    }

    /// Takes the next completion for `ctx`: its own queue, the injector, then the queues
    /// open to others (every queue at shutdown). Once every `injector_every` takes the
    /// injector comes first, so it is never starved by a queue that stays full.
    fn find(&self, ctx: &mut Ctx, closed: bool) -> Option<Completion> {
        // The injector is taken from one completion at a time, never in a batch into the own
        // queue: then the injector-first turn cannot pass completions the own queue holds
        // from the injector, and what one thread queued there comes out in order. (At
        // shutdown a batch in transit between two queues would also look like empty queues
        // to shutdown's last look, W9.)
        if !closed && ctx.takes == self.injector_every - 1 {
            if let Some(c) = self.injector.steal() {
                return Some(c);
            }
        }
        if let Some(c) = ctx.queue.pop() {
            return Some(c);
        }
        if let Some(c) = self.injector.steal() {
            return Some(c);
        }
        ctx.peers(self);
        let peers = &ctx.peers.1;
        let n = peers.len();
        let now = Now::new(self);
        for k in 0..n {
            let p = &peers[(ctx.next_victim + k) % n];
            if Arc::ptr_eq(p, &ctx.peer) || p.stealer.is_empty() || !(closed || p.open(&now)) {
                continue;
            }
            let stolen = if closed { p.stealer.steal() } else { p.stealer.steal_into(&ctx.queue) };
            if let Some(c) = stolen {
                ctx.next_victim = (ctx.next_victim + k + 1) % n;
                ctx.peer.counters.add(Counter::Steals, 1);
                if p.kind == Kind::Waiter && !closed && !p.gone.load(SeqCst) {
                    // Taken from a waiter that stayed away (W8).
                    ctx.peer.counters.add(Counter::Rescues, 1);
                }
                return Some(c);
            }
        }
        None
    }

    /// Whether anything is waiting that `ctx` could take now.
    fn work_visible(&self, ctx: &mut Ctx) -> bool {
        if !self.injector.is_empty() {
            return true;
        }
        let now = Now::new(self);
        ctx.any_other(self, |p| p.open(&now) && !p.stealer.is_empty())
    }

    /// Whether every queue is empty (W9's look).
    fn all_empty(&self, ctx: &mut Ctx) -> bool {
        self.injector.is_empty() && ctx.peers(self).iter().all(|p| p.stealer.is_empty())
    }

    /// W9, shutdown's last look: nothing is queued anywhere and nothing is on its way to a
    /// queue. A completion on its way is counted in `in_flight` from before it leaves where it
    /// was until after it arrived (a pending Close until it is delivered; a retired context's
    /// queue while it moves into the injector). `in_flight` is read first: zero means every
    /// completion then was in a queue or taken. A queue that starts to move after that read
    /// could still slip between the looks at its old and new places, so such a move (counted
    /// in `transits` when it begins) voids the look.
    fn drained(&self, ctx: &mut Ctx) -> bool {
        #[cfg(loom)]
        let blind = crate::sync::planted("drain_misses_a_move");
        #[cfg(not(loom))]
        let blind = false;
        // Planted bug `drain_misses_a_move`: the queues first, `in_flight` after, no `transits`.
        if blind {
            return self.all_empty(ctx) && self.in_flight.peek() == 0;
        }
        let moves = self.transits.peek();
        if self.in_flight.peek() != 0 {
            return false;
        }
        self.all_empty(ctx) && self.transits.peek() == moves
    }

    /// W2: whether `ctx` should take the poll role now: nobody else is active (working
    /// inside, or away and back soon), so nobody else will poll soon.
    fn may_poll(&self, ctx: &mut Ctx) -> bool {
        if self.poll.peek() != VACANT {
            return false;
        }
        let now = Now::new(self);
        !ctx.any_other(self, |p| p.active(&now))
    }

    fn acquire_poll(&self, role: u8) -> bool {
        self.poll.compare_exchange(VACANT, role, SeqCst, SeqCst).is_ok()
    }

    /// W5: parks `ctx` until woken or `deadline`. Registers first, then looks once more for
    /// anything that should keep it awake.
    fn park(&self, ctx: &mut Ctx, deadline: Option<Instant>, shared: &Shared) -> Woke {
        let peer = ctx.peer.clone();
        let timed;
        {
            let mut idle = lock(&self.idle);
            *lock(&peer.parker) = PARKED;
            peer.phase.set(IDLE);
            self.parked.fetch_add(1, SeqCst);
            fence(SeqCst);
            #[cfg(loom)]
            let recheck = !crate::sync::planted("lost_wakeup");
            #[cfg(not(loom))]
            let recheck = true;
            // Planted bug `lost_wakeup`: park without looking again after registering.
            #[cfg(loom)]
            let sees_close = !crate::sync::planted("searcher_misses_close");
            #[cfg(not(loom))]
            let sees_close = true;
            // Planted bug `searcher_misses_close`: the look before sleeping ignores shutdown.
            let stay_awake = recheck
                && ((sees_close && shared.state.load(SeqCst) == CLOSED)
                    || (peer.kind == Kind::Waiter && self.wakeups.peek() > 0)
                    || (peer.kind == Kind::Waiter && self.work_visible(ctx))
                    || self.may_poll(ctx));
            if stay_awake {
                self.parked.fetch_sub(1, SeqCst);
                *lock(&peer.parker) = RUNNING;
                peer.phase.set(BUSY);
                return Woke::Look;
            }
            // W8: one parked thread sleeps with a timeout while others are active, so that
            // work left by a thread that does not come back is taken over.
            timed = self.standby.compare_exchange(false, true, SeqCst, SeqCst).is_ok();
            idle.push(peer.clone());
        }
        peer.counters.add(Counter::Parks, 1);
        let now = Now::new(self);
        let busy = ctx.any_other(self, |p| p.active(&now));
        // Under loom the standby never times out: the models must not depend on the clock
        // (see `away_soon`).
        let look_at = if timed && !cfg!(loom) {
            Some(Instant::now() + if busy { STANDBY_BUSY } else { STANDBY_IDLE })
        } else {
            None
        };
        let until = match (deadline, look_at) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        };
        let mut state = lock(&peer.parker);
        loop {
            if *state != PARKED {
                break;
            }
            match until {
                None => state = peer.cv.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(u) => {
                    let now = Instant::now();
                    if now >= u {
                        break;
                    }
                    state = peer.cv.wait_timeout(state, u - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
        let woke = *state;
        *state = RUNNING;
        drop(state);
        if timed {
            self.standby.set(false);
        }
        peer.phase.set(BUSY);
        match woke {
            WORK => Woke::Work,
            WAKEUP => Woke::Wakeup,
            LOOK => Woke::Look,
            _ => {
                // Timed out: leave the stack, unless a waker popped us meanwhile, in which
                // case its reason is ours to honour.
                let mut idle = lock(&self.idle);
                if let Some(i) = idle.iter().position(|p| Arc::ptr_eq(p, &peer)) {
                    idle.remove(i);
                    self.parked.fetch_sub(1, SeqCst);
                    drop(idle);
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        Woke::TimedOut
                    } else {
                        // The standby's look (W8).
                        Woke::Look
                    }
                } else {
                    drop(idle);
                    let mut state = lock(&peer.parker);
                    let how = std::mem::replace(&mut *state, RUNNING);
                    match how {
                        WORK => Woke::Work,
                        WAKEUP => Woke::Wakeup,
                        _ => Woke::Look,
                    }
                }
            }
        }
    }

    /// W6: a woken thread stops looking; the last to stop passes the look on when work is
    /// still waiting in the injector ("a woken thread that finds more than it takes wakes
    /// the next").
    fn stop_searching(&self, shared: &Shared) {
        #[cfg(loom)]
        let pass_on = !crate::sync::planted("no_pass_on");
        #[cfg(not(loom))]
        let pass_on = true;
        // Planted bug `no_pass_on`: the last searcher leaves work in the injector to nobody.
        if self.searching.fetch_sub(1, SeqCst) == 1 && pass_on && !self.injector.is_empty() {
            self.notify(shared);
        }
    }

    /// W1: a waiter enters the port.
    fn enter(&self, ctx: &mut Ctx) {
        if let Some(t) = ctx.left_at.take() {
            let away = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            ctx.ema_ns = ctx.ema_ns - ctx.ema_ns / 4 + away / 4;
            ctx.peer.away_ema_ns.store(ctx.ema_ns, Relaxed);
        }
        ctx.peer.phase.set(BUSY);
    }

    /// W3: a waiter leaves the port with a completion for its caller. What it leaves behind
    /// (completions in its queue, the poll role vacant) is its own to come back to, unless
    /// it is slow to come back: then a parked thread is woken to take it. With no standby,
    /// one parked thread is woken to become it.
    fn leave(&self, ctx: &mut Ctx, shared: &Shared) {
        // Time away is sampled, one visit in `SAMPLE` (reading the clock twice per message
        // costs more than the rest of the bookkeeping).
        ctx.visits = ctx.visits.wrapping_add(1);
        // Not under loom: a model's executions must not depend on the clock (the time away
        // then stays 0, a thread that comes back at once).
        if ctx.visits % SAMPLE == 0 && !cfg!(loom) {
            let now = Instant::now();
            ctx.left_at = Some(now);
            ctx.peer.left_at_ns.store(u64::try_from(now.duration_since(self.origin).as_nanos()).unwrap_or(0), Relaxed);
        }
        ctx.peer.phase.set(AWAY);
        let left = ctx.queue.len() > 0;
        self.settle(ctx, left, shared);
    }

    /// W3's decision, for a waiter away from the port: what it leaves (completions in its
    /// queue if `left`, the poll role vacant) is its own to come back to, unless it is slow to
    /// come back: then a parked thread is woken to take it. With no standby, one parked thread
    /// is woken to become it. Called by `leave`, and by a handler that just queued a completion
    /// of its own (local delivery, see [`Shared::producing`]).
    fn settle(&self, ctx: &Ctx, left: bool, shared: &Shared) {
        if !left && self.poll.peek() != VACANT {
            return;
        }
        fence(SeqCst);
        if self.searching.peek() > 0 {
            return;
        }
        let parked = self.parked.peek() > 0;
        if ctx.ema_ns > WAKE_PAYS_NS {
            // Slow to come back: a parked waiter takes what is left (our queue is open to it
            // now) or polls in our place.
            if parked && self.wake_one(true, WORK, shared) {
                return;
            }
        } else if self.standby.peek() {
            return;
        }
        if parked {
            self.wake_one(false, LOOK, shared);
        } else if left && matches!(self.poll.peek(), WAITER_BLOCKED | WORKER) {
            // The only idle thread waits in epoll without a timeout: make it look, so that it
            // becomes the standby.
            shared.selector.poke();
            with_counters(shared, |c| c.add(Counter::EventfdPokes, 1));
        }
    }

    /// A context is dropped (its thread exits, or a nested call's extra context): what its
    /// queue holds goes to the injector, and a waiter is woken for it.
    fn retire(&self, ctx: &mut Ctx, shared: &Shared) {
        let mut moved = false;
        self.in_flight.fetch_add(1, SeqCst);
        self.transits.fetch_add(1, SeqCst);
        #[cfg(loom)]
        let keep = crate::sync::planted("retire_keeps_work");
        #[cfg(not(loom))]
        let keep = false;
        // Planted bug `retire_keeps_work`: a thread that leaves for good keeps what its queue held.
        let mut n = 0;
        while let Some(c) = ctx.queue.pop().filter(|_| !keep) {
            self.injector.push(c);
            n += 1;
        }
        if n > 0 {
            moved = true;
            self.counters.add(Counter::Injected, n);
        }
        self.in_flight.fetch_sub(1, SeqCst);
        let peer = ctx.peer.clone();
        self.registry.change(|v| {
            // Its counts stay the port's (`Port::stats` never goes down).
            self.counters.absorb(&peer.counters);
            v.retain(|p| !Arc::ptr_eq(p, &peer));
        });
        if moved {
            self.notify(shared);
        }
        // Others may have left the polling to this thread, expecting it back: one of them
        // looks again.
        fence(SeqCst);
        if self.searching.peek() == 0 && self.parked.peek() > 0 && self.poll.peek() == VACANT {
            self.wake_one(false, LOOK, shared);
        }
    }

    /// Teardown: every completion still queued anywhere, to be dropped.
    pub(crate) fn drain_all(&self) -> Vec<Completion> {
        let mut out: Vec<Completion> = std::iter::from_fn(|| self.injector.steal()).collect();
        for p in self.registry.snapshot().1.iter() {
            out.extend(std::iter::from_fn(|| p.stealer.steal()));
        }
        out
    }
}

impl Shared {
    /// Runs `f` with where the completions it produces go. A thread that serves this port
    /// (it has a context here and is between two `next_completion` calls: a handler) gets
    /// them in its own queue, for its next call, and nobody is woken for them unless W3's
    /// rule says so (it is slow to come back, or there is no standby); any other thread puts
    /// them in the shared injector (W7).
    pub(crate) fn producing<R>(&self, f: impl FnOnce(&mut Deliver<'_>) -> R) -> R {
        #[cfg(loom)]
        let local = !crate::sync::planted("no_local_delivery");
        #[cfg(not(loom))]
        let local = true;
        // Planted bug `no_local_delivery`: a handler's completions go to the injector.
        let Some(ctx) = local.then(|| borrow_ctx(self)).flatten() else {
            return f(&mut Deliver::Queue);
        };
        let before = ctx.queue.len();
        let r = f(&mut Deliver::Local(&ctx.queue, &ctx.peer.counters));
        let added = ctx.queue.len().saturating_sub(before);
        if added > 0 {
            ctx.peer.counters.add(Counter::Local, added as u64);
            self.wait.settle(&ctx, true, self);
        }
        checkin(ctx);
        r
    }

    /// `next_completion` and its batch form: waits for the first completion as
    /// `next_completion` documents, then takes up to `more` others without waiting.
    pub(crate) fn next(
        &self,
        timeout: Option<Duration>,
        mut batch: Option<(&mut Vec<Completion>, usize)>,
    ) -> Result<Next> {
        let mut ctx = checkout(self);
        self.wait.enter(&mut ctx);
        let got = self.wait_next(&mut ctx, timeout);
        if let (Ok(Next::Completion(_)), Some((out, more))) = (&got, batch.as_mut()) {
            let closed = self.state.load(SeqCst) == CLOSED;
            while out.len() < *more {
                match self.take(&mut ctx, closed) {
                    Some(c) => out.push(c),
                    None => break,
                }
            }
        }
        self.wait.leave(&mut ctx, self);
        checkin(ctx);
        got
    }

    /// Takes a completion for `ctx`; its side becomes PROCESSED (and a Close waiting for that
    /// is delivered into `ctx`'s queue).
    fn take(&self, ctx: &mut Ctx, closed: bool) -> Option<Completion> {
        let c = self.wait.find(ctx, closed)?;
        ctx.takes = if ctx.takes + 1 >= self.wait.injector_every { 0 } else { ctx.takes + 1 };
        ctx.since_poll = ctx.since_poll.saturating_add(1);
        ctx.peer.counters.add(Counter::of(c.status), 1);
        self.processed(&c, &mut Deliver::Local(&ctx.queue, &ctx.peer.counters));
        Some(c)
    }

    fn wait_next(&self, ctx: &mut Ctx, timeout: Option<Duration>) -> Result<Next> {
        let took = |c: Option<Completion>| c.map_or(Next::TimedOut, Next::Completion);
        let w = &self.wait;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let trying = timeout == Some(Duration::ZERO);
        let mut searching = false;
        let mut closing_since = None;
        let result = loop {
            let closed = self.state.load(SeqCst) == CLOSED;
            if !closed && ctx.since_poll >= w.poll_every && w.poll.peek() == VACANT && w.acquire_poll(WAITER) {
                // Fairness: however much the queues hold, streams armed in epoll are looked at
                // at least once every `poll_every` completions this thread takes.
                ctx.peer.counters.add(Counter::ForcedPolls, 1);
                self.poll_once(ctx, 0);
            }
            if let Some(c) = self.take(ctx, closed) {
                break Ok(Next::Completion(c));
            }
            if searching {
                searching = false;
                w.stop_searching(self);
                continue;
            }
            if closed {
                // W9: drain; a completion on its way to a queue (a Close whose stream's last
                // completion is being taken, a leaving thread's queue being moved) keeps the
                // port open a moment longer. Only a lost completion could keep it so for long:
                // after IN_FLIGHT_PATIENCE the port is closed anyway rather than hang.
                if w.drained(ctx) {
                    break Err(Error::closed());
                }
                // Only a lost completion keeps the port from looking drained for long.
                let waited = *closing_since.get_or_insert_with(Instant::now);
                if !cfg!(loom) && waited.elapsed() > IN_FLIGHT_PATIENCE && w.all_empty(ctx) {
                    break Err(Error::closed());
                }
                crate::sync::yield_now();
                continue;
            }
            if w.take_wakeup() {
                break Ok(Next::Woken);
            }
            if trying || deadline.is_some_and(|d| Instant::now() >= d) {
                if w.acquire_poll(WAITER) {
                    self.poll_once(ctx, 0);
                }
                break Ok(took(self.take(ctx, closed)));
            }
            if w.may_poll(ctx) && w.acquire_poll(WAITER) {
                self.poll_as_waiter(ctx, deadline);
                continue;
            }
            match w.park(ctx, deadline, self) {
                Woke::Look => {}
                Woke::Work => searching = true,
                Woke::Wakeup => break Ok(Next::Woken),
                Woke::TimedOut => break Ok(took(self.take(ctx, closed))),
            }
        };
        if searching {
            w.stop_searching(self);
        }
        result
    }

    /// W4: the poll role is this waiter's. It marks itself blocked, looks once more (a
    /// producer that pushed before the mark may have decided not to poke), waits in epoll,
    /// dispatches into its own queue and gives the role up.
    fn poll_as_waiter(&self, ctx: &mut Ctx, deadline: Option<Instant>) {
        let w = &self.wait;
        w.poll.set(WAITER_BLOCKED);
        ctx.peer.phase.set(IDLE);
        fence(SeqCst);
        #[cfg(loom)]
        let blind = crate::sync::planted("poller_blocks_blind");
        #[cfg(not(loom))]
        let blind = false;
        // Planted bug `poller_blocks_blind`: block without looking again after the mark.
        let quiet = blind || (w.wakeups.peek() == 0 && self.state.load(SeqCst) != CLOSED && !w.work_visible(ctx));
        let ms = if quiet { super::timeout_ms(deadline) } else { 0 };
        self.poll_once(ctx, ms);
    }

    /// One `epoll_wait` of at most `ms` and the dispatch of what it returned, by the holder
    /// of the poll role, which it gives up at the end. Returns true on the stop event.
    fn poll_once(&self, ctx: &mut Ctx, ms: i32) -> bool {
        let w = &self.wait;
        ctx.since_poll = 0;
        let waited = self.selector.wait(&mut ctx.events, ms).is_ok();
        ctx.peer.phase.set(BUSY);
        if w.poll.load(SeqCst) == WAITER_BLOCKED {
            w.poll.set(WAITER);
        }
        let mut stop = false;
        if waited {
            let c = &ctx.peer.counters;
            c.add(Counter::EpollWaits, 1);
            c.add(Counter::Events, ctx.events.len() as u64);
            stop = self.dispatch(&ctx.events, &mut Deliver::Local(&ctx.queue, &ctx.peer.counters));
        }
        w.poll.set(VACANT);
        stop
    }

    /// A dedicated worker: polls when nobody else will, parks otherwise, until shutdown.
    pub(crate) fn run_worker(&self) {
        self.mark_worker_thread();
        let mut ctx = Ctx::new(self, Kind::Worker);
        let w = &self.wait;
        loop {
            if self.state.load(SeqCst) == CLOSED {
                break;
            }
            if w.may_poll(&mut ctx) && w.acquire_poll(WORKER) {
                if self.poll_once(&mut ctx, -1) {
                    // The stop event: shutdown is under way.
                    if self.state.load(SeqCst) == CLOSED {
                        break;
                    }
                    crate::sync::spin_hint();
                }
                // What it dispatched is for the waiters: wake one if any is parked (W7).
                if ctx.queue.len() > 0 {
                    w.notify(self);
                }
                continue;
            }
            match w.park(&mut ctx, None, self) {
                Woke::Work => w.stop_searching(self),
                Woke::Look | Woke::Wakeup | Woke::TimedOut => {}
            }
        }
    }
}
