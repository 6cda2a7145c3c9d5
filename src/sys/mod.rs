//! Every call into the operating system that cport makes itself lives here.
//!
//! - [`epoll`]: the [`Selector`] (epoll instance, the stop eventfd, the timer timerfd).
//! - [`socket`]: what `std::net` lacks: nonblocking connect, socket-type checks, `SO_ERROR`.
//!
//! The rest of the crate (ISB state machine, queues, sleep/wake) makes no syscall; the built-in
//! drivers do their reads and writes through `std`'s socket and file types or through [`socket`].

pub(crate) mod epoll;
pub(crate) mod socket;

pub(crate) use epoll::{Events, Interest, Selector};
