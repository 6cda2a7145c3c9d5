//! How threads in `next_completion` park, and who wakes them. See ARCHITECTURE.md,
//! "Sleep and wake-up".
//!
//! Parked waiters sit on a LIFO stack: a new completion wakes the most recently parked one
//! (its cache is warmest), and exactly one. The lost wake-up race is closed by a Dekker-style
//! pair of sequentially consistent operations:
//!
//! - the producer pushes its completion, then reads `state` (sleepers and spinner) with a
//!   read-modify-write;
//! - the waiter increments the sleeper count (under the stack lock), then (fence) re-checks
//!   the queue.
//!
//! At least one of the two sees the other: either the producer sees sleepers and pops a
//! waiter from the stack (the lock orders that after the waiter's push), or the waiter's
//! re-check sees the completion and does not park.

use std::time::Instant;

use crate::sync::{fence, lock, Arc, AtomicUsize, Condvar, Mutex, Ordering};

/// Parked, nobody has woken it yet.
const WAITING: u8 = 0;
/// Popped off the stack by a producer: a completion was pushed for it.
const NOTIFIED: u8 = 1;
/// Popped off the stack by `wakeup()`: return without a completion.
const WOKEN: u8 = 2;

/// Why [`Sleep::park`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The ready check passed before parking, or a producer woke us: look again.
    Ready,
    /// `wakeup()` was called for us (or before us, with nobody parked).
    Wakeup,
    /// The deadline passed.
    TimedOut,
}

/// One parked thread.
struct Parker {
    state: Mutex<u8>,
    cv: Condvar,
}

/// The set of parked waiters of one port.
pub(crate) struct Sleep {
    /// Parked waiters, most recent last.
    idle: Mutex<Vec<Arc<Parker>>>,
    /// `idle.len()`, readable without the lock by producers.
    /// The number of parked waiters (`idle.len()`, readable without the lock), plus
    /// `SPINNING` while a waiter spins on the queue before parking (at most one does): while
    /// one spins, a producer wakes nobody. What the spinner leaves behind, it hands on when it
    /// leaves `next_completion` (see `Port::next_completion`). One word, so a producer reads
    /// both with one read-modify-write.
    state: AtomicUsize,
    /// `wakeup()` calls that found nobody parked; the next waiter that would park consumes one.
    wakeups: AtomicUsize,
    /// Parkers of waiters that left, reused so parking allocates nothing.
    spare: Mutex<Vec<Arc<Parker>>>,
}

/// The bit of `Sleep::state` set while a waiter spins.
const SPINNING: usize = 1 << (usize::BITS - 1);

/// Parkers kept for reuse.
const SPARE_PARKERS: usize = 64;

impl Sleep {
    pub(crate) fn new() -> Sleep {
        Sleep {
            idle: Mutex::new(Vec::new()),
            state: AtomicUsize::new(0),
            wakeups: AtomicUsize::new(0),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Becomes the spinner if nobody is; returns whether this thread may spin.
    pub(crate) fn try_spin(&self) -> bool {
        self.state.fetch_or(SPINNING, Ordering::SeqCst) & SPINNING == 0
    }

    /// Stops spinning.
    pub(crate) fn end_spin(&self) {
        self.state.fetch_and(!SPINNING, Ordering::SeqCst);
    }

    fn parker(&self) -> Arc<Parker> {
        match lock(&self.spare).pop() {
            Some(p) => {
                *lock(&p.state) = WAITING;
                p
            }
            None => Arc::new(Parker { state: Mutex::new(WAITING), cv: Condvar::new() }),
        }
    }

    fn recycle(&self, p: Arc<Parker>) {
        // A waker may still hold a clone for a moment: only reuse a parker nobody else holds.
        if Arc::strong_count(&p) == 1 {
            let mut spare = lock(&self.spare);
            if spare.len() < SPARE_PARKERS {
                spare.push(p);
            }
        }
    }

    /// Parks the calling thread until a producer or `wakeup()` wakes it or `deadline` passes.
    /// `ready` is the caller's "is there anything for me" check (queue non-empty or port
    /// closed); it is re-run after registering, so a completion pushed meanwhile is not missed.
    pub(crate) fn park(&self, ready: impl Fn() -> bool, deadline: Option<Instant>) -> Wake {
        if self.take_wakeup() {
            return Wake::Wakeup;
        }
        let parker = self.parker();
        {
            let mut idle = lock(&self.idle);
            self.state.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            #[cfg(loom)]
            let recheck = !crate::sync::planted("lost_wakeup");
            #[cfg(not(loom))]
            let recheck = true;
            // Planted bug `lost_wakeup`: park without re-checking after registering.
            if recheck && (ready() || self.wakeups.load(Ordering::SeqCst) > 0) {
                self.state.fetch_sub(1, Ordering::SeqCst);
                drop(idle);
                self.recycle(parker);
                return if self.take_wakeup() { Wake::Wakeup } else { Wake::Ready };
            }
            idle.push(parker.clone());
        }
        let mut state = lock(&parker.state);
        loop {
            let woke = match *state {
                NOTIFIED => Some(Wake::Ready),
                WOKEN => Some(Wake::Wakeup),
                _ => None,
            };
            if let Some(w) = woke {
                drop(state);
                self.recycle(parker);
                return w;
            }
            match deadline {
                None => state = parker.cv.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    state = parker.cv.wait_timeout(state, d - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
        drop(state);
        // Timed out: leave the stack, unless a waker popped us meanwhile, in which case its
        // notification is ours to honour.
        let mut idle = lock(&self.idle);
        if let Some(pos) = idle.iter().position(|p| Arc::ptr_eq(p, &parker)) {
            idle.remove(pos);
            self.state.fetch_sub(1, Ordering::SeqCst);
            return Wake::TimedOut;
        }
        drop(idle);
        let how = *lock(&parker.state);
        if how == WOKEN {
            Wake::Wakeup
        } else {
            Wake::Ready
        }
    }

    /// Consumes a `wakeup()` that found nobody parked, if there is one.
    pub(crate) fn take_wakeup(&self) -> bool {
        self.wakeups.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// Pops the most recently parked waiter, if any.
    fn pop(&self) -> Option<Arc<Parker>> {
        let mut idle = lock(&self.idle);
        let p = idle.pop()?;
        self.state.fetch_sub(1, Ordering::SeqCst);
        Some(p)
    }

    fn wake(p: &Parker, how: u8) {
        *lock(&p.state) = how;
        p.cv.notify_one();
    }

    /// Called after pushing a completion: wakes exactly one parked waiter, unless there is
    /// none or a spinning waiter will take the completion. Returns whether it woke one.
    pub(crate) fn notify_one(&self) -> bool {
        // A read-modify-write, not a load: it reads the latest value whatever the memory model
        // checker makes of fences, which keeps the Dekker pairs with `park` and `end_spin`
        // sound under loom as well as on hardware.
        let st = self.state.fetch_add(0, Ordering::SeqCst);
        if st & !SPINNING == 0 || st & SPINNING != 0 {
            return false;
        }
        match self.pop() {
            Some(p) => {
                Sleep::wake(&p, NOTIFIED);
                true
            }
            None => false,
        }
    }

    /// Wakes every parked waiter (shutdown).
    pub(crate) fn notify_all(&self) {
        fence(Ordering::SeqCst);
        while let Some(p) = self.pop() {
            Sleep::wake(&p, NOTIFIED);
        }
    }

    /// Makes one parked waiter return without a completion; with nobody parked, the next
    /// waiter that would park returns at once instead. Returns whether it woke a parked one.
    pub(crate) fn wakeup(&self) -> bool {
        let mut idle = lock(&self.idle);
        match idle.pop() {
            Some(p) => {
                self.state.fetch_sub(1, Ordering::SeqCst);
                drop(idle);
                Sleep::wake(&p, WOKEN);
                true
            }
            None => {
                self.wakeups.fetch_add(1, Ordering::SeqCst);
                false
            }
        }
    }

    /// `wakeup()` calls not yet consumed.
    pub(crate) fn wakeups_pending(&self) -> usize {
        self.wakeups.load(Ordering::SeqCst)
    }

    /// Number of parked waiters.
    pub(crate) fn sleepers(&self) -> usize {
        self.state.load(Ordering::SeqCst) & !SPINNING
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn ready_check_prevents_parking() {
        let s = Sleep::new();
        assert_eq!(s.park(|| true, None), Wake::Ready);
        assert_eq!(s.sleepers(), 0);
    }

    #[test]
    fn deadline_expires() {
        let s = Sleep::new();
        let d = Instant::now() + Duration::from_millis(20);
        assert_eq!(s.park(|| false, Some(d)), Wake::TimedOut);
        assert!(Instant::now() >= d);
        assert_eq!(s.sleepers(), 0);
    }

    #[test]
    fn wakeup_before_park_is_kept() {
        let s = Sleep::new();
        s.wakeup();
        assert_eq!(s.park(|| false, None), Wake::Wakeup);
        let d = Instant::now() + Duration::from_millis(5);
        assert_eq!(s.park(|| false, Some(d)), Wake::TimedOut);
    }

    #[test]
    fn notify_wakes_the_most_recent_waiter() {
        let s = Arc::new(Sleep::new());
        let flag = Arc::new(AtomicBool::new(false));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut hs = Vec::new();
        for i in 0..2 {
            let (s2, f2, o2) = (s.clone(), flag.clone(), order.clone());
            hs.push(std::thread::spawn(move || {
                let w = s2.park(|| f2.load(Ordering::SeqCst), None);
                o2.lock().unwrap().push(i);
                w
            }));
            while s.sleepers() != i + 1 {
                std::thread::yield_now();
            }
        }
        s.notify_one();
        while order.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        assert_eq!(*order.lock().unwrap(), vec![1], "LIFO: the last parked waiter goes first");
        s.wakeup();
        for h in hs {
            assert_ne!(h.join().unwrap(), Wake::TimedOut);
        }
    }
}
