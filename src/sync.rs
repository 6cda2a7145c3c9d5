//! The one switch between std's synchronization primitives and loom's.
//!
//! Every atomic, lock, `Arc` and thread spawn of cport goes through this module, so that the
//! loom models in `loom-tests/` (built with `RUSTFLAGS="--cfg loom"`) check the production code.
//! Nothing else in the crate names `std::sync` or `std::thread` directly.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(not(loom))]
pub(crate) use std::thread;

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(loom)]
pub(crate) use loom::thread;

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

/// Whether the bug named `name` is planted in this run (loom builds, and `cfg(cport_plant)`
/// builds for the storm test): the loom models in `loom-tests/` and the storm in
/// `tests/storm.rs` must catch each one. Selected at run time by `CPORT_PLANT=name`, so one
/// build serves every plant; production builds contain no planted code at all.
#[cfg(any(loom, cport_plant))]
pub(crate) fn planted(name: &str) -> bool {
    std::env::var("CPORT_PLANT").is_ok_and(|v| v == name)
}
