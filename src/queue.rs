//! The completion queue: a facade over crossbeam-deque's `Injector` (many producers, many
//! consumers, FIFO). Under `cfg(loom)` a `Mutex<VecDeque>` stands in, with the same interface,
//! because loom cannot see inside crossbeam.

#[cfg(not(loom))]
mod imp {
    use crossbeam_deque::{Injector, Steal};

    /// A FIFO queue any thread can push to and pop from.
    pub(crate) struct Queue<T> {
        inner: Injector<T>,
    }

    impl<T> Queue<T> {
        pub(crate) fn new() -> Self {
            Queue { inner: Injector::new() }
        }

        pub(crate) fn push(&self, item: T) {
            self.inner.push(item);
        }

        /// Takes the oldest item. `Steal::Retry` (a concurrent pop got in the way) is retried
        /// here, so `None` really means empty.
        pub(crate) fn pop(&self) -> Option<T> {
            loop {
                match self.inner.steal() {
                    Steal::Success(item) => return Some(item),
                    Steal::Empty => return None,
                    Steal::Retry => crate::sync::spin_hint(),
                }
            }
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.inner.is_empty()
        }
    }
}

#[cfg(loom)]
mod imp {
    use std::collections::VecDeque;

    use crate::sync::{lock, Mutex};

    /// The loom stand-in: same interface, every access visible to the model checker.
    pub(crate) struct Queue<T> {
        inner: Mutex<VecDeque<T>>,
    }

    impl<T> Queue<T> {
        pub(crate) fn new() -> Self {
            Queue { inner: Mutex::new(VecDeque::new()) }
        }

        pub(crate) fn push(&self, item: T) {
            lock(&self.inner).push_back(item);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            lock(&self.inner).pop_front()
        }

        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.inner).is_empty()
        }
    }
}

pub(crate) use imp::Queue;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Queue;
    use std::sync::Arc;

    #[test]
    fn fifo() {
        let q = Queue::new();
        for i in 0..10 {
            q.push(i);
        }
        assert!(!q.is_empty());
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn mpmc_every_item_once() {
        const PER: usize = 10_000;
        let q = Arc::new(Queue::new());
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
                        match q.pop() {
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
        all.extend(std::iter::from_fn(|| q.pop()));
        all.sort_unstable();
        assert_eq!(all, (0..4 * PER).collect::<Vec<_>>());
    }
}
