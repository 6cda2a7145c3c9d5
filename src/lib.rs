//! # cport: an I/O completion port for Linux
//!
//! Start an I/O on a stream; any of many threads picks up its completion with
//! [`Port::next_completion`], in the order operations finish.
//!
//! - A [`Port`] owns one epoll instance. The threads in `next_completion` wait in it one at a
//!   time, do the nonblocking I/O of what it reports, and return the completions: the thread
//!   that handles an event returns its completion (no thread hop) and keeps the rest of the
//!   batch for its next calls. A parked thread is woken only when work is left that its owner
//!   will not get to soon. Dedicated workers ([`Builder::threads`]) are optional extra pollers
//!   for programs whose handlers are slow; without them, I/O moves while some thread is in
//!   `next_completion`.
//! - Streams are registered with `EPOLLONESHOT`: epoll reports a stream once, then not again
//!   until cport re-arms it, which it does only while an I/O is pending; so one thread at a
//!   time services a stream, and an idle stream costs no wake-ups.
//! - A stream is attached with [`Port::assign`] through a [`Driver`] (built-ins in
//!   [`driver`]: TCP, Unix-domain, UDP, any native fd) and named by its [`Isb`]. Each stream
//!   is full duplex: one read-side and one write-side I/O may be pending at once.
//! - Every I/O that was started ends in exactly one completion: success, end of stream,
//!   error, peer hang-up, cancel, close, timeout, deassign or shutdown. Buffers are owned
//!   by the request and come back in the completion. A stream's Close completion is its last.
//! - Order: completions come in the order their I/O finished as seen by each thread that
//!   dispatches them; completions dispatched by different threads are not ordered against each
//!   other. [`Port::start_io_inline`] hands an I/O that finished at once straight back instead
//!   of queueing it; [`Port::stats`] counts what the port did.
//! - Beside streams: user completions ([`Port::post`]), timers ([`Port::timer`]: one
//!   completion each, when it fires or is cancelled) and signals ([`Port::signals`]: one
//!   completion per signal), so a program's whole event loop is one `next_completion` loop.
//!
//! ```
//! use cport::{Port, Request, Op};
//! use std::net::{TcpListener, TcpStream};
//! use std::io::{Read, Write};
//!
//! let port = Port::new()?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let lis = port.assign(cport::driver::TcpListener::new(listener), 0)?;
//! port.accept(&lis)?;
//!
//! let mut client = TcpStream::connect(addr)?;
//! let mut c = port.next_completion(None)?.unwrap();
//! assert_eq!(c.op(), Op::Accept);
//! let conn = port.assign(c.take_accepted().unwrap(), 1)?;
//!
//! client.write_all(b"ping")?;
//! port.start_io(&conn, Request::read_exact(vec![0; 4]))?;
//! let mut c = port.next_completion(None)?.unwrap();
//! port.write(&conn, c.take_buffer().unwrap())?; // echo it back
//! let c = port.next_completion(None)?.unwrap();
//! assert_eq!((c.op(), c.bytes()), (Op::Write, 4));
//! let mut back = [0; 4];
//! client.read_exact(&mut back)?;
//! assert_eq!(&back, b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Shutdown
//!
//! [`Port::shutdown`] (or dropping the last handle) ends a port in this order: new work is
//! refused, every pending I/O completes as `Cancelled`, the waiters drain what is queued, and
//! then [`Port::next_completion`] returns `PortClosed`. No completion is ever queued after a
//! waiter has seen `PortClosed`, so a loop that stops on `PortClosed` has seen the last
//! completion of every I/O that was started. From the moment shutdown begins, each call does
//! this:
//!
//! | call | once shutdown has begun |
//! | --- | --- |
//! | `start_io`, `start_io_inline`, `read`, `read_buf`, `write`, `accept` | `PortClosed`; the request comes back in the `StartError` |
//! | `assign`, `assign_boxed`, `listen`, `listen_unix`, `signals` | `PortClosed`; the driver is dropped (its fd closes) |
//! | `connect`, `connect_timeout`, `connect_unix`, `connect_in_range` | `PortClosed`, also when shutdown begins during the call; the socket is closed |
//! | `post`, `timer`, `timer_at` | `PortClosed`; nothing is queued (every timer armed before ends `Cancelled`) |
//! | `cancel_timer` | `Ok(false)` once shutdown's cancel pass has ended every timer (before it, a cancel still ends its timer, before `PortClosed`) |
//! | `close` | `PortClosed`; the stream stays assigned (its Close completion would come after `PortClosed`) |
//! | `set_timeout` | `PortClosed` (nothing is left to time out) |
//! | `cancel` | works: returns 0 once shutdown has cancelled the stream's I/O |
//! | `deassign` | works: releases the stream and closes its fd, queueing nothing |
//! | `shutdown_write`, `inc_ref`/`dec_ref` | work as before |
//! | `wakeup`, `shutdown` | nothing more happens: waiters that find the queue empty return `PortClosed` |
//! | `next_completion` and friends | the completions still queued, then `PortClosed` every time |
//!
//! A call racing `shutdown` either happens before it (its completion is queued before
//! `PortClosed`) or is refused: every check of the port's state is made under the lock that
//! shutdown's cancel pass takes (ARCHITECTURE.md, "Shutdown").
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms)]
#![warn(missing_debug_implementations)]
// Loom builds leave out the session server and the real selector: what only they use is unused.
#![cfg_attr(loom, allow(dead_code))]

#[cfg(not(target_os = "linux"))]
compile_error!("cport runs on Linux only: it is built on epoll, eventfd and timerfd");

mod buf;
mod completion;
pub mod driver;
mod error;
#[cfg(feature = "ffi")]
mod ffi;
mod isb;
pub mod net;
mod port;
mod queue;
mod request;
#[cfg(feature = "session")]
#[cfg_attr(docsrs, doc(cfg(feature = "session")))]
pub mod session;
mod sync;
mod sys;
mod timer;
mod token;

/// What the loom models drive (only in `cfg(loom)` builds): the stand-in kernel, and one
/// session connection hosted the way a `Server` hosts it.
#[cfg(loom)]
pub mod model {
    #[cfg(feature = "session")]
    pub use crate::session::model::Host;
    pub use crate::sys::mock::Kernel;
}

/// Signal numbers for [`Port::signals`] (the platform's values, as `libc` has them).
pub mod signal {
    /// Interrupt from the terminal (Ctrl-C).
    pub const SIGINT: i32 = libc::SIGINT;
    /// Termination request (`kill`'s default, service managers' stop).
    pub const SIGTERM: i32 = libc::SIGTERM;
    /// Hang-up of the controlling terminal; by convention, "reload the configuration".
    pub const SIGHUP: i32 = libc::SIGHUP;
    /// Quit from the terminal (Ctrl-\).
    pub const SIGQUIT: i32 = libc::SIGQUIT;
    /// User-defined signal 1.
    pub const SIGUSR1: i32 = libc::SIGUSR1;
    /// User-defined signal 2.
    pub const SIGUSR2: i32 = libc::SIGUSR2;
    /// The terminal's window size changed.
    pub const SIGWINCH: i32 = libc::SIGWINCH;
    /// A child process stopped or ended.
    pub const SIGCHLD: i32 = libc::SIGCHLD;
}

pub use completion::{Completion, Next, Status};
pub use driver::Driver;
pub use error::{Error, ErrorKind, Result, StartError};
pub use isb::Isb;
pub use port::{Builder, Port, Stats, Timer, MAX_THREADS};
pub use request::{Op, Progress, Request};

// What the docs promise about threads, checked at compile time: a handle or value that is
// meant to cross threads has to stay able to.
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    const fn clone<T: Clone>() {}

    send::<Port>();
    sync::<Port>();
    clone::<Port>();
    send::<Isb>();
    sync::<Isb>();
    send::<Completion>();
    send::<Next>();
    send::<Request>();
    send::<Error>();
    sync::<Error>();
    send::<StartError>();
    send::<Stats>();
    sync::<Stats>();
    send::<driver::TcpStream>();
    send::<driver::TcpListener>();
    send::<driver::UnixStream>();
    send::<driver::UnixListener>();
    send::<driver::UdpSocket>();
    send::<driver::Fd>();
    send::<driver::Accepted>();
    send::<Box<dyn Driver>>();
    send::<net::HostDescription>();
    sync::<net::HostDescription>();
    send::<net::PortRange>();
    sync::<net::PortRange>();
    #[cfg(feature = "session")]
    {
        send::<session::Connection>();
        sync::<session::Connection>();
        send::<session::Limits>();
        sync::<session::Limits>();
    }
    #[cfg(all(feature = "session", not(loom)))]
    {
        send::<session::Server>();
        sync::<session::Server>();
        clone::<session::Server>();
        send::<session::Summary>();
    }
};

/// The README's usage example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
