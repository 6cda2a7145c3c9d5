//! Every call into the operating system that cport makes itself lives here.
//!
//! - `epoll`: the `Selector` (epoll instance, the stop and poke eventfds, the timerfd).
//! - `mock`: the `Selector` of `cfg(loom)` builds instead, a stand-in kernel that the loom
//!   models drive (no syscalls).
//! - [`socket`]: what `std::net` lacks: nonblocking connect, socket-type checks, `SO_ERROR`.
//! - [`netif`]: the host's interface addresses (`getifaddrs`), for [`crate::net`].
//! - [`signals`]: `pthread_sigmask` and `signalfd`, for `Port::signals`.
//!
//! The rest of the crate (ISB state machine, queues, sleep/wake) makes no syscall; the built-in
//! drivers do their reads and writes through `std`'s socket and file types or through [`socket`].

/// Runs a libc call that returns -1 on error, turning that into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller of the macro passes valid arguments, as each use site states.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

#[cfg(not(loom))]
pub(crate) mod epoll;
#[cfg(loom)]
pub(crate) mod mock;
pub(crate) mod netif;
pub(crate) mod signals;
pub(crate) mod socket;

#[cfg(not(loom))]
pub(crate) use epoll::{Events, Selector};
#[cfg(loom)]
pub(crate) use mock::{Events, Selector};

/// Token of the stop eventfd: readable once the port is being torn down.
pub(crate) const STOP_TOKEN: u64 = u64::MAX;
/// Token of the timerfd.
pub(crate) const TIMER_TOKEN: u64 = u64::MAX - 1;
/// Token of the poke eventfd: a thread polling epoll in `next_completion` should look at the
/// completion queue.
pub(crate) const POKE_TOKEN: u64 = u64::MAX - 2;

/// What a stream wants to hear about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Interest {
    /// A read, accept or recv is pending.
    pub(crate) readable: bool,
    /// A write, send or connect is pending.
    pub(crate) writable: bool,
}

impl Interest {
    /// Nothing pending: the stream stays disarmed.
    pub(crate) const NONE: Interest = Interest { readable: false, writable: false };

    pub(crate) fn is_none(self) -> bool {
        !self.readable && !self.writable
    }

    /// True when `self` asks for everything `other` asks for.
    pub(crate) fn covers(self, other: Interest) -> bool {
        (self.readable || !other.readable) && (self.writable || !other.writable)
    }
}

/// One readiness event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// The token the fd was registered with.
    pub(crate) token: u64,
    /// Readable, or the peer shut down its sending side.
    pub(crate) readable: bool,
    /// Writable.
    pub(crate) writable: bool,
    /// Hang-up or error: every pending I/O should be tried, it will fail or see EOF.
    pub(crate) hangup: bool,
}
