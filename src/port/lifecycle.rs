//! A port's life: the reference count, the post gate, shutdown and teardown. See
//! ARCHITECTURE.md, "Shutdown and teardown", whose numbered steps the comments follow.

use super::{Deliver, Port, Shared, CLOSED, CLOSING, GATE_CLOSED, OPEN};
use crate::completion::Status;
use crate::error::{Error, Result};
use crate::sync::{lock, spin_hint, thread, thread_local, Ordering};
use std::cell::Cell;
use std::os::fd::AsRawFd;

impl Shared {
    /// Enters the post gate unless shutdown closed it (see ARCHITECTURE.md, "Shutdown", step
    /// 2); `leave_gate` must follow once the post is queued.
    pub(crate) fn enter_gate(&self) -> Result<()> {
        let mut cur = self.posting.load(Ordering::Acquire);
        loop {
            if cur & GATE_CLOSED != 0 {
                return Err(Error::closed());
            }
            match self.posting.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn leave_gate(&self) {
        self.posting.fetch_sub(1, Ordering::Release);
    }

    /// See ARCHITECTURE.md, "Shutdown".
    pub(crate) fn shutdown(&self) {
        // 1. Refuse new I/O, assigns and posts.
        if self.state.compare_exchange(OPEN, CLOSING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        // 2. Close the post gate, then wait out posts already inside it: their completions must
        //    be queued before waiters may conclude the port is empty. Gate and count share one
        //    word, so a post either entered before the bit was set (and is waited for) or sees it.
        self.posting.fetch_or(GATE_CLOSED, Ordering::AcqRel);
        while self.posting.load(Ordering::Acquire) & !GATE_CLOSED != 0 {
            spin_hint();
        }
        #[cfg(loom)]
        if crate::sync::planted("closed_before_cancel") {
            // Planted bug: waiters are told the port is closed before the cancellations are queued.
            self.state.store(CLOSED, Ordering::SeqCst);
            self.wait.notify_all();
        }
        // 3. Cancel every pending I/O. Each stream's lock orders this after any start_io that
        //    saw OPEN, and completions are queued under that lock.
        for stream in &self.streams.values() {
            let mut inner = stream.lock();
            self.end_all(stream, &mut inner, Status::Cancelled, &mut Deliver::Queue);
        }
        //    And every user timer, under the lock that arming one checks the state under.
        self.cancel_user_timers();
        // 4. Every completion the port will produce is queued (or, for a pending Close, is
        //    counted in `pending_closes`): wake every thread; waiters drain and leave, workers
        //    exit. The stop eventfd is level-triggered and never read, so every epoll_wait
        //    from now on returns at once.
        self.state.store(CLOSED, Ordering::SeqCst);
        self.wait.notify_all();
        #[cfg(loom)]
        let tell = !crate::sync::planted("pollers_not_stopped");
        #[cfg(not(loom))]
        let tell = true;
        // Planted bug `pollers_not_stopped`: a thread blocked in epoll is never told.
        if tell {
            let _ = self.selector.stop();
        }
    }

    /// The last handle is gone. See ARCHITECTURE.md, "Shutdown".
    pub(crate) fn teardown(&self) {
        #[cfg(loom)]
        self.selector.torn_down();
        self.shutdown();
        // 5. Join the workers (none of them is this thread); they exit on CLOSED.
        let workers = std::mem::take(&mut *lock(&self.workers));
        for h in workers {
            let _ = h.join();
        }
        // 6. Contexts let go of the port (threads that waited on it keep nothing of it).
        self.wait.link.cut();
        // 7. Deassign every stream: detach the driver, close the fd.
        for stream in &self.streams.drain() {
            let mut inner = stream.lock();
            if let Some(fd) = inner.driver.as_ref().map(|d| d.fd().as_raw_fd()) {
                let _ = self.selector.deregister(fd);
            }
            if let Some(mut d) = inner.driver.take() {
                d.detach();
            }
        }
        // 8. Drop every completion nobody will take (their buffers and accepted streams),
        //    wherever it is queued.
        drop(self.wait.drain_all());
        // The memory the queues' epoch-based reclamation still holds for threads that have
        // exited (the workers just joined among them) is freed now rather than at some later
        // queue operation, which may never come: a C program's leak checker would report it.
        crate::queue::collect_garbage();
        // 9. The epoll, eventfd and timerfd close when the last Arc<Shared> drops, which is
        //    the caller's.
    }

    /// Whether this thread is one of this port's workers (a thread-local mark each worker
    /// sets: `thread::current()` would allocate a handle for a foreign thread, such as a C
    /// program's, that the program's leak checker then reports).
    fn is_worker_thread(&self) -> bool {
        WORKER_OF.with(|w| w.get() == self.key())
    }

    /// Marks this thread as one of this port's workers (for `is_worker_thread`).
    pub(crate) fn mark_worker_thread(&self) {
        WORKER_OF.with(|w| w.set(self.key()));
    }
}

#[cfg(not(loom))]
thread_local! {
    /// The key of the port this thread is a worker of (0: none).
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

#[cfg(loom)]
thread_local! {
    /// The key of the port this thread is a worker of (0: none).
    static WORKER_OF: Cell<usize> = Cell::new(0);
}

impl Clone for Port {
    fn clone(&self) -> Port {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Port { shared: self.shared.clone() }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        #[cfg(loom)]
        let last = if crate::sync::planted("racy_refcount") {
            // Planted bug: a decrement that is not one atomic step.
            let n = self.shared.handles.load(Ordering::SeqCst);
            self.shared.handles.store(n - 1, Ordering::SeqCst);
            n == 1
        } else {
            self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1
        };
        #[cfg(not(loom))]
        let last = self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1;
        if !last {
            return;
        }
        let shared = self.shared.clone();
        if shared.is_worker_thread() {
            // The last handle went away on a worker (inside a driver or progress callback,
            // with a stream locked): tear down from a fresh thread so that nothing waits for
            // the lock this thread holds or joins itself.
            #[cfg(not(loom))]
            let _blocked = crate::sys::signals::BlockAll::new();
            let _ = thread::Builder::new().name("cport-teardown".into()).spawn(move || shared.teardown());
        } else {
            shared.teardown();
        }
    }
}
