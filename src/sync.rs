//! The one switch between std's synchronization primitives and loom's.
//!
//! Every atomic, lock, `Arc`, thread spawn and thread-local of cport goes through this module,
//! so that the loom models in `loom-tests/` (built with `RUSTFLAGS="--cfg loom"`) check the
//! production code. Nothing else in the crate names `std::sync` or `std::thread` directly.
//! The exceptions are [`StatCounter`] and [`next_serial`]: statistics and serial numbers order
//! nothing, so they stay std atomics under loom too, and add no states for the model checker
//! to explore.

#[cfg(all(feature = "session", not(loom)))]
pub(crate) use std::sync::RwLock;
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(not(loom))]
pub(crate) use std::{thread, thread_local};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(loom)]
pub(crate) use loom::{thread, thread_local};

/// Reads an atomic that takes part in a Dekker pair: each side writes its own location, then a
/// SeqCst fence, then reads the other side's location, so at least one sees the other. On
/// hardware a SeqCst load after the fence is enough. loom models SeqCst loads as acquire loads,
/// which may miss a store the fences order first; so under loom the read is a read-modify-write
/// that changes nothing, which always reads the latest value. (Both are SeqCst.)
///
/// The writes of such a pair go through [`Peek::set`]: a SeqCst store, which under loom is a
/// swap, because loom orders two locations only through read-modify-writes (a read-modify-write
/// reads the latest value and synchronizes with the one it reads, so two threads that each
/// write one location and then read the other cannot both miss).
pub(crate) trait Peek {
    type Value;
    fn peek(&self) -> Self::Value;
    fn set(&self, v: Self::Value);
}

macro_rules! peek_for {
    ($t:ty, $v:ty, $noop:expr) => {
        impl Peek for $t {
            type Value = $v;
            fn peek(&self) -> $v {
                #[cfg(loom)]
                {
                    let f: fn(&$t) -> $v = $noop;
                    f(self)
                }
                #[cfg(not(loom))]
                {
                    self.load(Ordering::SeqCst)
                }
            }
            fn set(&self, v: $v) {
                #[cfg(loom)]
                {
                    self.swap(v, Ordering::SeqCst);
                }
                #[cfg(not(loom))]
                {
                    self.store(v, Ordering::SeqCst)
                }
            }
        }
    };
}

peek_for!(AtomicUsize, usize, |a| a.fetch_add(0, Ordering::SeqCst));
peek_for!(AtomicU8, u8, |a| a.fetch_add(0, Ordering::SeqCst));
peek_for!(AtomicBool, bool, |a| a.fetch_or(false, Ordering::SeqCst));

/// A statistics counter (see the module docs): a std atomic in every build.
pub(crate) type StatCounter = std::sync::atomic::AtomicU64;

/// The next port serial number: 1, 2, ... in the order ports are built, never reused. A std
/// atomic in every build, like [`StatCounter`]: a number handed out orders nothing.
pub(crate) fn next_serial() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A statistics counter of sizes (see the module docs): a std atomic in every build.
#[cfg(feature = "session")]
pub(crate) type StatSize = std::sync::atomic::AtomicUsize;

/// A read-mostly value that is replaced as a whole (the session limits): `arc_swap::ArcSwap`,
/// whose loads take no lock, in production; a lock around an `Arc` under loom, so the models
/// see every load and store as a point where threads meet.
#[cfg(all(feature = "session", not(loom)))]
pub(crate) struct Swap<T>(arc_swap::ArcSwap<T>);

#[cfg(all(feature = "session", loom))]
pub(crate) struct Swap<T>(Mutex<std::sync::Arc<T>>);

/// What [`Swap::load`] returned.
#[cfg(all(feature = "session", not(loom)))]
pub(crate) struct Loaded<T>(arc_swap::Guard<std::sync::Arc<T>>);

/// What [`Swap::load`] returned.
#[cfg(all(feature = "session", loom))]
pub(crate) struct Loaded<T>(std::sync::Arc<T>);

#[cfg(feature = "session")]
impl<T> std::ops::Deref for Loaded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(feature = "session")]
impl<T> Swap<T> {
    pub(crate) fn new(value: T) -> Swap<T> {
        #[cfg(not(loom))]
        {
            Swap(arc_swap::ArcSwap::from_pointee(value))
        }
        #[cfg(loom)]
        {
            Swap(Mutex::new(std::sync::Arc::new(value)))
        }
    }

    /// The value now (a later `store` does not change what was loaded).
    pub(crate) fn load(&self) -> Loaded<T> {
        #[cfg(not(loom))]
        {
            Loaded(self.0.load())
        }
        #[cfg(loom)]
        {
            Loaded(lock(&self.0).clone())
        }
    }

    /// Replaces the value; loads from now on see the new one.
    pub(crate) fn store(&self, value: T) {
        #[cfg(not(loom))]
        {
            self.0.store(std::sync::Arc::new(value));
        }
        #[cfg(loom)]
        {
            *lock(&self.0) = std::sync::Arc::new(value);
        }
    }
}

/// Locks `m`, ignoring poisoning: cport never leaves shared state half-updated across a panic
/// point, so a poisoned lock still guards consistent data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Spins one iteration of a busy-wait loop (a yield under loom, so models terminate).
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Lets other threads run (a thread waiting for another to finish a short step).
pub(crate) fn yield_now() {
    thread::yield_now();
}

/// Whether the bug named `name` is planted in this run (loom builds, and `cfg(cport_plant)`
/// builds for the storm test): the loom models in `loom-tests/` and the storm in
/// `tests/storm.rs` must catch each one. Selected at run time by `CPORT_PLANT=name`, so one
/// build serves every plant; production builds contain no planted code at all.
#[cfg(any(loom, cport_plant))]
pub(crate) fn planted(name: &str) -> bool {
    std::env::var("CPORT_PLANT").is_ok_and(|v| v == name)
}
