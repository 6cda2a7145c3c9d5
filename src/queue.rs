//! The completion queues: a facade over crossbeam-deque. Each thread that dispatches events
//! owns a [`Local`] deque (FIFO: its owner and thieves both take the oldest first); other
//! threads take from it through its [`Stealer`]; the [`Injector`] holds what is produced
//! outside a dispatch (posts, cancels and closes called from any thread). Under `cfg(loom)` a
//! `Mutex<VecDeque>` stands in for each, with the same interface, because loom cannot see
//! inside crossbeam.

#[cfg(not(loom))]
mod imp {
    use crossbeam_deque::{Steal, Stealer as CbStealer, Worker};

    /// Retries a steal until it succeeds or finds nothing (`Retry`: a concurrent taker got in
    /// the way; it never means empty).
    fn settle<T>(mut f: impl FnMut() -> Steal<T>) -> Option<T> {
        loop {
            match f() {
                Steal::Success(x) => return Some(x),
                Steal::Empty => return None,
                Steal::Retry => crate::sync::spin_hint(),
            }
        }
    }

    /// A thread's own deque.
    pub(crate) struct Local<T> {
        inner: Worker<T>,
    }

    impl<T> Local<T> {
        pub(crate) fn new() -> Self {
            Local { inner: Worker::new_fifo() }
        }

        pub(crate) fn push(&self, item: T) {
            self.inner.push(item);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.inner.pop()
        }

        pub(crate) fn len(&self) -> usize {
            self.inner.len()
        }

        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer { inner: self.inner.stealer() }
        }
    }

    /// Another thread's view of a [`Local`].
    pub(crate) struct Stealer<T> {
        inner: CbStealer<T>,
    }

    impl<T> Stealer<T> {
        pub(crate) fn is_empty(&self) -> bool {
            self.inner.is_empty()
        }

        /// Takes the oldest item, and moves some more into `dest` (about half of what is left).
        pub(crate) fn steal_into(&self, dest: &Local<T>) -> Option<T> {
            settle(|| self.inner.steal_batch_and_pop(&dest.inner))
        }

        /// Takes the oldest item.
        pub(crate) fn steal(&self) -> Option<T> {
            settle(|| self.inner.steal())
        }
    }

    /// The shared FIFO for completions produced outside a dispatch.
    pub(crate) struct Injector<T> {
        inner: crossbeam_deque::Injector<T>,
    }

    impl<T> Injector<T> {
        pub(crate) fn new() -> Self {
            Injector { inner: crossbeam_deque::Injector::new() }
        }

        pub(crate) fn push(&self, item: T) {
            self.inner.push(item);
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.inner.is_empty()
        }

        /// Takes the oldest item (one at a time: see `Wait::find`).
        pub(crate) fn steal(&self) -> Option<T> {
            settle(|| self.inner.steal())
        }
    }
}

#[cfg(loom)]
mod imp {
    use std::collections::VecDeque;

    use crate::sync::{lock, Arc, Mutex};

    /// The loom stand-in of a thread's deque: every access visible to the model checker.
    pub(crate) struct Local<T> {
        inner: Arc<Mutex<VecDeque<T>>>,
    }

    impl<T> Local<T> {
        pub(crate) fn new() -> Self {
            Local { inner: Arc::new(Mutex::new(VecDeque::new())) }
        }

        pub(crate) fn push(&self, item: T) {
            lock(&self.inner).push_back(item);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            lock(&self.inner).pop_front()
        }

        pub(crate) fn len(&self) -> usize {
            lock(&self.inner).len()
        }

        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer { inner: self.inner.clone() }
        }
    }

    pub(crate) struct Stealer<T> {
        inner: Arc<Mutex<VecDeque<T>>>,
    }

    impl<T> Stealer<T> {
        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.inner).is_empty()
        }

        pub(crate) fn steal_into(&self, dest: &Local<T>) -> Option<T> {
            // One item is enough for the models; the batch only saves work on real hardware.
            let _ = dest;
            lock(&self.inner).pop_front()
        }

        pub(crate) fn steal(&self) -> Option<T> {
            lock(&self.inner).pop_front()
        }
    }

    pub(crate) struct Injector<T> {
        inner: Mutex<VecDeque<T>>,
    }

    impl<T> Injector<T> {
        pub(crate) fn new() -> Self {
            Injector { inner: Mutex::new(VecDeque::new()) }
        }

        pub(crate) fn push(&self, item: T) {
            lock(&self.inner).push_back(item);
        }

        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.inner).is_empty()
        }

        pub(crate) fn steal(&self) -> Option<T> {
            lock(&self.inner).pop_front()
        }
    }
}

pub(crate) use imp::{Injector, Local, Stealer};

/// Frees what crossbeam's epoch-based reclamation still holds and nobody needs: the records
/// of threads that have exited, and old deque buffers. It would be freed at some later queue
/// operation of any thread; a port's teardown calls this so that nothing of its threads is
/// left for a leak checker to report when the program ends right after (a few epoch advances,
/// each a pin and a flush: microseconds, once per port).
pub(crate) fn collect_garbage() {
    #[cfg(not(loom))]
    for _ in 0..8 {
        crossbeam_epoch::pin().flush();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Injector, Local};
    use std::sync::Arc;

    #[test]
    fn local_is_fifo_for_owner_and_thief() {
        let q = Local::new();
        for i in 0..10 {
            q.push(i);
        }
        let s = q.stealer();
        assert_eq!(s.steal(), Some(0));
        assert_eq!(q.pop(), Some(1));
        let dest = Local::new();
        assert_eq!(s.steal_into(&dest), Some(2));
        let mut rest: Vec<_> = std::iter::from_fn(|| dest.pop()).collect();
        rest.extend(std::iter::from_fn(|| q.pop()));
        rest.sort_unstable();
        assert_eq!(rest, (3..10).collect::<Vec<_>>());
        assert!(s.is_empty());
    }

    #[test]
    fn injector_mpmc_every_item_once() {
        const PER: usize = 10_000;
        let q = Arc::new(Injector::new());
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || (0..PER).for_each(|i| q.push(p * PER + i)))
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut idle = 0;
                    while idle < 1000 {
                        match q.steal() {
                            Some(v) => {
                                got.push(v);
                                idle = 0
                            }
                            None => {
                                idle += 1;
                                std::thread::yield_now()
                            }
                        }
                    }
                    got
                })
            })
            .collect();
        producers.into_iter().for_each(|h| h.join().unwrap());
        let mut all: Vec<usize> = consumers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.extend(std::iter::from_fn(|| q.steal()));
        all.sort_unstable();
        assert_eq!(all, (0..4 * PER).collect::<Vec<_>>());
    }
}
