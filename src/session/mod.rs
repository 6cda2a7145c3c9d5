//! Sessions: protocol engines on top of a port, in the sans-IO style.
//!
//! A protocol engine (a [`Session`], one per connection) never touches a socket. The comms
//! layer, a [`Server`], owns the sockets and all buffering in both directions: it feeds the
//! session the bytes that arrived, keeps whatever the session did not consume and presents it
//! again, prefixed, with the next bytes; it sends what the session queued in its [`Outbox`], in
//! order, and closes the connection when the session asks. The session never blocks.
//!
//! ```no_run
//! use cport::session::{Outbox, Server, Session};
//!
//! /// Echoes every complete line back.
//! struct Lines;
//!
//! impl Session for Lines {
//!     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
//!         // Consume whole lines only; a partial line comes back with the next bytes.
//!         let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
//!         out.send(&data[..end]);
//!         Ok(end)
//!     }
//! }
//!
//! let server = Server::builder().bind("127.0.0.1:7000".parse()?, |_conn| Box::new(Lines))?;
//! println!("listening {}", server.local_addr());
//! server.run()?; // any number of threads may call run(); stop() ends it gracefully
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Back-pressure
//! Output the peer has not taken yet counts against [`Limits`]: once a connection has
//! [`Limits::pause_reading_at`] bytes queued, the server stops reading from it (so a peer
//! that sends requests but does not read the replies is slowed down, not fed); reading resumes
//! when the queue has drained to half of that. Output that keeps growing anyway (sends from
//! other connections, a single huge reply) closes the connection once it passes
//! [`Limits::max_outbox`], with an [`ErrorKind::LimitExceeded`](crate::ErrorKind) error. Input
//! the session leaves unconsumed is bounded the same way by [`Limits::max_input`].
//!
//! # Threads
//! Completions are handled by whichever threads call [`Server::run`], [`Server::poll`] or
//! [`Server::stop`], or by loops placed on a rayon pool with [`Server::run_on`] (on rayon's
//! global pool: [`Server::run_on_global`]). One connection's session is called by one thread
//! at a time; different connections' sessions run in parallel.
//!
//! # Idle connections
//! A connection whose peer sends nothing for [`Limits::idle_timeout`] (off by default) is
//! closed; its session is told [`Closed::IdleTimeout`].

mod conn;
#[cfg(loom)]
pub(crate) mod model;
#[cfg(not(loom))]
mod server;

pub use conn::Connection;
#[cfg(not(loom))]
pub use server::{Builder, Server, Summary};

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// A protocol engine for one connection, fed by a [`Server`].
///
/// Calls for one connection never overlap, and [`Session::closed`] is the last one.
pub trait Session: Send + 'static {
    /// The connection is up; queue a greeting here if the protocol has one.
    ///
    /// # Errors
    /// An error closes the connection at once (nothing queued is sent).
    fn opened(&mut self, out: &mut Outbox<'_>) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// Bytes arrived: `data` is what the session left unconsumed last time followed by the new
    /// bytes. Consume whole messages from the front and return how many bytes that was; what
    /// is left comes back, prefixed, with the next bytes.
    ///
    /// When the server calls again: after a call that consumed something and left bytes, with
    /// the rest and no new bytes — at once while the output has room (or after the peer ended
    /// its input), else once it has drained to half of [`Limits::pause_reading_at`]. So taking
    /// one message per call is enough, and taking all there are saves calls. After a call that
    /// consumed nothing, only when more bytes arrive (a partial message waits for its rest),
    /// unless the call began with [`Connection::queued`] at [`Limits::pause_reading_at`]: a
    /// session may pace itself, leaving whole messages unconsumed while its output (what it
    /// queued in the call plus `Connection::queued`) is that high, and is called again with
    /// them, without new bytes, as soon as the output has room.
    ///
    /// To end the connection after the replies are sent, call [`Outbox::close`] (the way to
    /// report a protocol error to the peer: queue the error reply, then close).
    ///
    /// # Errors
    /// An error closes the connection at once, dropping output not yet sent; other connections
    /// are not affected. Returning more than `data.len()` is treated as an error.
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> Result<usize>;

    /// The connection has ended, for the reason given; called exactly once, last. A peer that
    /// closed its side (unsolicited closure) shows as [`Closed::Peer`] once the output queued
    /// before it has been flushed.
    fn closed(&mut self, why: &Closed) {
        let _ = why;
    }
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closed {
    /// The session (or a [`Connection::close`] call) asked for it; queued output was sent.
    Local,
    /// The peer closed its end, reset the connection or hung up.
    Peer,
    /// The server stopped ([`Server::stop`]); output queued by then was sent unless the stop
    /// timed out.
    Stopped,
    /// An error: the session's own, a limit (`LimitExceeded`), or the socket's.
    Error(Error),
    /// The peer sent nothing for [`Limits::idle_timeout`]; output queued by then was sent.
    IdleTimeout,
}

/// Where a session queues output and asks for the connection to close.
///
/// Bytes are sent in the order they are queued, after whatever was queued before; they go out
/// once the session call returns.
pub struct Outbox<'a> {
    buf: &'a mut Vec<u8>,
    close: bool,
    conn: &'a Connection,
}

/// Shows the connection's id, the bytes queued in this call and whether a close was asked.
impl fmt::Debug for Outbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("connection", &self.conn.id())
            .field("queued", &self.buf.len())
            .field("close", &self.close)
            .finish()
    }
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>, conn: &'a Connection) -> Outbox<'a> {
        Outbox { buf, close: false, conn }
    }

    /// Queues `data` to be sent.
    pub fn send(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The queue itself, to encode replies straight into it (append only).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.buf
    }

    /// Closes the connection once everything queued has been sent; nothing more is read.
    pub fn close(&mut self) {
        self.close = true;
    }

    /// The connection this outbox belongs to: its id and peer, and a handle other threads or
    /// sessions can use to send to it.
    pub fn connection(&self) -> &Connection {
        self.conn
    }

    pub(crate) fn wants_close(&self) -> bool {
        self.close
    }
}

/// Limits that bound what one connection may hold in memory, and how long it may stay idle.
/// Changed at run time with [`Server::set_limits`]; a change applies to the next check on every
/// connection.
///
/// Start from [`Limits::default`] and change what differs with the `with_*` setters, one per
/// field, which chain; the fields can be read (and assigned) directly. New limits may be added
/// in later versions, so the struct cannot be built with a literal outside this crate.
///
/// ```
/// use cport::session::Limits;
/// use std::time::Duration;
///
/// let limits = Limits::default().with_max_outbox(1 << 20).with_linger(Duration::ZERO);
/// assert_eq!((limits.max_outbox, limits.linger), (1 << 20, Duration::ZERO));
/// assert_eq!(limits.read_size, Limits::default().read_size);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Output queued and not yet taken by the peer beyond which the connection is closed with
    /// `LimitExceeded` (default 4 MiB).
    pub max_outbox: usize,
    /// Output queued at which the server stops reading from the connection until half of it
    /// has drained (default 256 KiB).
    pub pause_reading_at: usize,
    /// Input the session left unconsumed beyond which the connection is closed with
    /// `LimitExceeded` (default 16 MiB): a message larger than this can never be received.
    pub max_input: usize,
    /// Bytes read at most per read (default 16 KiB, at most [`MAX_READ_SIZE`]). A session sees
    /// at most this many new bytes per call.
    pub read_size: usize,
    /// Connections at most; an accepted connection beyond it is closed at once and counted
    /// in [`Summary::refused`] (default 100,000).
    pub max_connections: usize,
    /// How long a connection that closes gracefully ([`Closed::Local`], [`Closed::Stopped`],
    /// [`Closed::IdleTimeout`]) lingers after its last byte was sent (default 2 s): its write
    /// side is shut down and what the peer still sends is read and dropped until the peer
    /// closes, so the kernel does not reset the connection and destroy replies the peer has
    /// not read yet (a socket closed with unread input, or receiving input after its close,
    /// answers with a reset). A connection whose peer has already ended its input, with nothing
    /// of it unread, closes at once. Zero: never linger.
    pub linger: Duration,
    /// How long a connection may receive nothing before it is closed (default `None`: no
    /// limit). The session is told [`Closed::IdleTimeout`]; output queued by then is sent,
    /// then the close lingers as a graceful one does (bounded by [`Limits::linger`], not by
    /// this). The time counts while a read is waiting for the peer: from the connection's
    /// start, and again after each read that brought bytes; not while reading is paused for
    /// back-pressure ([`Connection::is_reading_paused`]; a time that runs out with the output
    /// at the pause mark pauses reading instead), nor while a session call runs. Only input
    /// counts: a peer that only reads (a subscriber) must send something within the time. A
    /// change applies to reads started after it: a connection already waiting keeps the old
    /// time until its next bytes. Zero is refused.
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_outbox: 4 << 20,
            pause_reading_at: 256 << 10,
            max_input: 16 << 20,
            read_size: 16 << 10,
            max_connections: 100_000,
            linger: Duration::from_secs(2),
            idle_timeout: None,
        }
    }
}

/// The largest [`Limits::read_size`]: each read allocates a buffer this big.
pub const MAX_READ_SIZE: usize = 64 << 20;

impl Limits {
    /// These limits with [`Limits::max_outbox`] set to `bytes`.
    #[must_use = "with_max_outbox returns the changed limits"]
    pub fn with_max_outbox(mut self, bytes: usize) -> Limits {
        self.max_outbox = bytes;
        self
    }

    /// These limits with [`Limits::pause_reading_at`] set to `bytes`.
    #[must_use = "with_pause_reading_at returns the changed limits"]
    pub fn with_pause_reading_at(mut self, bytes: usize) -> Limits {
        self.pause_reading_at = bytes;
        self
    }

    /// These limits with [`Limits::max_input`] set to `bytes`.
    #[must_use = "with_max_input returns the changed limits"]
    pub fn with_max_input(mut self, bytes: usize) -> Limits {
        self.max_input = bytes;
        self
    }

    /// These limits with [`Limits::read_size`] set to `bytes`.
    #[must_use = "with_read_size returns the changed limits"]
    pub fn with_read_size(mut self, bytes: usize) -> Limits {
        self.read_size = bytes;
        self
    }

    /// These limits with [`Limits::max_connections`] set to `n`.
    #[must_use = "with_max_connections returns the changed limits"]
    pub fn with_max_connections(mut self, n: usize) -> Limits {
        self.max_connections = n;
        self
    }

    /// These limits with [`Limits::linger`] set to `after`.
    #[must_use = "with_linger returns the changed limits"]
    pub fn with_linger(mut self, after: Duration) -> Limits {
        self.linger = after;
        self
    }

    /// These limits with [`Limits::idle_timeout`] set to `after`: a [`Duration`], or `None`
    /// for no limit.
    ///
    /// ```
    /// use cport::session::{Limits, Server};
    /// use std::io::Read;
    /// use std::time::Duration;
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let limits = Limits::default().with_idle_timeout(Duration::from_millis(50));
    /// assert_eq!(limits.idle_timeout, Some(Duration::from_millis(50)));
    /// assert_eq!(limits.clone().with_idle_timeout(None).idle_timeout, None, "no limit");
    ///
    /// let server = Server::builder().limits(limits).bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let runner = {
    ///     let server = server.clone();
    ///     std::thread::spawn(move || server.run())
    /// };
    /// let mut quiet = std::net::TcpStream::connect(server.local_addr())?;
    /// assert_eq!(quiet.read(&mut [0; 1])?, 0, "the server ended the idle connection");
    /// drop(quiet); // the server lingered until now (`Limits::linger`)
    /// assert_eq!(server.stop(Duration::from_secs(5)).idle_closes, 1);
    /// runner.join().expect("no panic")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "with_idle_timeout returns the changed limits"]
    pub fn with_idle_timeout(mut self, after: impl Into<Option<Duration>>) -> Limits {
        self.idle_timeout = after.into();
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.read_size == 0
            || self.max_outbox == 0
            || self.pause_reading_at == 0
            || self.max_input == 0
            || self.idle_timeout == Some(Duration::ZERO)
        {
            return Err(Error::invalid(format!("session limits must not be zero: {self:?}")));
        }
        if self.read_size > MAX_READ_SIZE {
            return Err(Error::invalid(format!(
                "session read_size {} is more than the largest, {MAX_READ_SIZE}",
                self.read_size
            )));
        }
        Ok(())
    }
}

/// `after` from now; a duration too long to represent means "not in this program's life".
pub(crate) fn deadline_after(after: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}
