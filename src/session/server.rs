//! [`Server`]: a listener, one [`Session`] per accepted connection, all on one port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::conn::{inside_session, Common, Connection, Stats};
use super::{Closed, Limits, Session};
use crate::completion::{Completion, Status};
use crate::driver;
use crate::error::{Error, ErrorKind, Result};
use crate::isb::Isb;
use crate::net::{HostDescription, PortRange};
use crate::port::Port;
use crate::request::Op;
use crate::sync::{lock, Arc, AtomicU8, AtomicUsize, Mutex, Ordering, RwLock, StatSize, Swap};

/// Token of the listener's completions (connections' tokens are slot | generation << 32, and
/// slots stay far below this).
const LISTENER: u64 = u64::MAX - 16;
/// Completions taken per wait.
const BATCH: usize = 32;
/// How long `stop` waits between looks at the connection count.
const STOP_TICK: Duration = Duration::from_millis(10);
/// How long `stop` waits for the Close completions of connections it closed by force.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// The longest a loop on a rayon pool waits in the port while the pool has nothing else to run
/// (unless `Builder::pool_slice` is longer): about how often an idle port's standby looks.
const POOL_IDLE_WAIT: Duration = Duration::from_millis(100);

/// Server states, in order.
const RUNNING: u8 = 0;
/// Not accepting; connections flush and close.
const STOPPING: u8 = 1;
/// Every connection is gone and the port is shut down.
const STOPPED: u8 = 2;

thread_local! {
    /// Each thread's buffer for a batch of completions in [`Server::poll`].
    static BATCH_BUF: std::cell::Cell<Vec<Completion>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Makes the session of each new connection.
type Factory = dyn Fn(&Connection) -> Box<dyn Session> + Send + Sync;

/// Wrapper so the factory can live in an `ArcSwap` (which needs a sized type).
struct FactoryCell(Box<Factory>);

/// What a server did, from [`Server::stop`] (final) or [`Server::summary`] (so far).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Connections accepted and given a session.
    pub accepted: usize,
    /// Connections refused because [`Limits::max_connections`] were open.
    pub refused: usize,
    /// Connections that have ended.
    pub closed: usize,
    /// Connections open right now.
    pub open: usize,
    /// Connections that ended on an error (the session's or the socket's, not limits).
    pub errors: usize,
    /// Connections closed for passing a limit ([`ErrorKind::LimitExceeded`]).
    pub limit_closes: usize,
    /// Connections closed because the peer sent nothing for [`Limits::idle_timeout`]
    /// ([`Closed::IdleTimeout`]).
    pub idle_closes: usize,
    /// Connections `stop` closed by force because they had not flushed in time.
    pub forced: usize,
    /// Bytes received.
    pub bytes_in: usize,
    /// Bytes sent.
    pub bytes_out: usize,
    /// The most output any connection had queued at once.
    pub peak_outbox: usize,
}

/// A slot of the connection table; the generation changes each time the slot is reused.
struct Slot {
    generation: u32,
    conn: Option<Connection>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
}

impl Table {
    fn token(slot: u32, generation: u32) -> u64 {
        u64::from(generation) << 32 | u64::from(slot)
    }

    /// Reserves a slot; its token names the connection until it is removed.
    fn reserve(&mut self) -> u64 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { generation: 0, conn: None });
                (self.slots.len() - 1) as u32
            }
        };
        self.len += 1;
        Table::token(slot, self.slots[slot as usize].generation)
    }

    fn get(&self, token: u64) -> Option<&Connection> {
        let index = (token & u64::from(u32::MAX)) as u32;
        let slot = self.slots.get(index as usize)?;
        if Table::token(index, slot.generation) != token {
            return None;
        }
        slot.conn.as_ref()
    }

    fn fill(&mut self, token: u64, conn: Connection) {
        self.slots[(token & u64::from(u32::MAX)) as usize].conn = Some(conn);
    }

    /// Frees the slot of `token` (reserved or filled); false if it is not current.
    fn remove(&mut self, token: u64) -> Option<Connection> {
        let index = (token & u64::from(u32::MAX)) as u32;
        let slot = self.slots.get_mut(index as usize)?;
        if Table::token(index, slot.generation) != token {
            return None;
        }
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        slot.conn.take()
    }

    fn conns(&self) -> Vec<Connection> {
        self.slots.iter().filter_map(|s| s.conn.clone()).collect()
    }
}

struct Shared {
    common: Arc<Common>,
    listener: Isb,
    local_addr: SocketAddr,
    table: RwLock<Table>,
    factory: ArcSwap<FactoryCell>,
    state: AtomicU8,
    /// Serializes `stop` and holds its result.
    stopped: Mutex<Option<Summary>>,
    /// How long a loop on a rayon pool first waits in the port before it lets the pool run
    /// other work (the wait grows while the pool has nothing else to run).
    slice: Duration,
    /// Set `TCP_NODELAY` on accepted connections.
    nodelay: bool,
    /// Loops that ended on an unexpected error (counted in the summary's errors).
    loop_errors: AtomicUsize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone without a finished stop: shut the port down and end every
        // session, so no session (which may hold handles of others) outlives the server.
        // Close the sockets now: Connection handles the application still holds keep the port
        // (and with it every stream) alive.
        let _ = self.common.port.close(&self.listener);
        let conns = std::mem::take(&mut *self.table.write().unwrap_or_else(|p| p.into_inner())).conns();
        for conn in &conns {
            conn.abort(Closed::Stopped);
        }
        self.common.port.shutdown();
        for conn in &conns {
            conn.discard(Closed::Stopped);
        }
    }
}

/// A TCP server: a listener on a port of its own, and one [`Session`] per accepted connection.
///
/// Completions are handled by the threads that call [`Server::run`] (or [`Server::poll`]),
/// or by loops on a rayon pool ([`Server::run_on`], [`Server::run_on_global`]); the port does
/// the I/O in those threads (it has no workers unless [`Builder::threads`] asks for some).
/// Cloning gives another handle to the same server; when the last handle is dropped without
/// [`Server::stop`], the port is shut down and every session is told [`Closed::Stopped`].
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.shared.local_addr).finish()
    }
}

/// Configures a [`Server`]: limits, worker threads, and where it listens.
#[derive(Debug)]
pub struct Builder {
    limits: Limits,
    threads: usize,
    slice: Duration,
    nodelay: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder { limits: Limits::default(), threads: 0, slice: Duration::from_millis(2), nodelay: true }
    }
}

impl Builder {
    /// The memory limits of each connection (default [`Limits::default`]).
    ///
    /// ```
    /// use cport::session::{Limits, Server};
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let limits = Limits::default().with_max_connections(100).with_max_outbox(1 << 20);
    /// let server = Server::builder().limits(limits.clone()).bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// assert_eq!(server.limits(), limits);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a builder does nothing until `bind` or `listen` is called"]
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = limits;
        self
    }

    /// Worker threads of the server's port (default 0: the threads that handle completions do
    /// the I/O themselves, which is what an embedding in a pool wants).
    ///
    /// ```
    /// use cport::session::Server;
    /// use std::io::{Read, Write};
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// // With a worker the I/O moves on its own; a thread still has to handle the completions.
    /// let server = Server::builder().threads(1).bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let runner = {
    ///     let server = server.clone();
    ///     std::thread::spawn(move || server.run())
    /// };
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// client.write_all(b"hi")?;
    /// let mut got = [0; 2];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"HI");
    /// drop(client);
    /// server.stop(std::time::Duration::from_secs(5));
    /// runner.join().expect("no panic")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a builder does nothing until `bind` or `listen` is called"]
    pub fn threads(mut self, n: usize) -> Builder {
        self.threads = n;
        self
    }

    /// How long each loop placed with [`Server::run_on`] first waits for I/O before it lets
    /// the pool run other work (default 2 ms). While the pool has nothing else to run, each
    /// wait is twice the last (from the slice, or 1 ms if it is zero), up to 100 ms or the
    /// slice if longer, so an idle loop wakes about ten times a second, as an idle
    /// [`Server::run`] does. A loop that has just run other work looks at the port again
    /// without waiting, then starts over from the slice. I/O ends a wait at once whatever its
    /// length; the wait bounds how long work spawned into a pool whose every thread runs a loop
    /// waits for one (a pool with more threads than loops runs it on a free thread at once).
    ///
    /// ```
    /// use cport::session::Server;
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
    /// let server = Server::builder().pool_slice(Duration::from_millis(10)).bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    /// server.run_on(&pool, 1); // waits of 10 ms, growing to 100 ms while all is idle
    /// assert_eq!(pool.install(|| 6 * 7), 42);
    /// server.stop(Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a builder does nothing until `bind` or `listen` is called"]
    pub fn pool_slice(mut self, slice: Duration) -> Builder {
        self.slice = slice;
        self
    }

    /// Whether accepted connections get `TCP_NODELAY` (default true): each session call's
    /// output goes out as one write, and with Nagle's algorithm on, a second small write waits
    /// for the peer's delayed acknowledgement (tens of milliseconds).
    ///
    /// ```
    /// use cport::session::Server;
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// // Nagle's algorithm stays on for accepted connections.
    /// let server = Server::builder().nodelay(false).bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// # drop(server);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a builder does nothing until `bind` or `listen` is called"]
    pub fn nodelay(mut self, on: bool) -> Builder {
        self.nodelay = on;
        self
    }

    /// Listens on `addr` (port 0: any free port) and starts accepting; `factory` makes the
    /// session of each connection.
    ///
    /// ```
    /// use cport::{session::Server, ErrorKind};
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// // The address is taken now.
    /// let taken = Server::builder().bind(server.local_addr(), |_| Box::new(Upper)).unwrap_err();
    /// assert_eq!(taken.kind(), ErrorKind::Os(std::io::ErrorKind::AddrInUse));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Os` if the address cannot be bound; `InvalidInput` for zero limits.
    pub fn bind<F>(self, addr: SocketAddr, factory: F) -> Result<Server>
    where
        F: Fn(&Connection) -> Box<dyn Session> + Send + Sync + 'static,
    {
        let listener = crate::sys::socket::listen_tcp(addr).map_err(|e| Error::from_io(&e, format!("bind {addr}")))?;
        self.listen(listener, factory)
    }

    /// Listens on `ip` at the first free port of `range`, for a server that a firewall admits
    /// only on some ports.
    ///
    /// ```
    /// use cport::{net::PortRange, session::Server};
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let range: PortRange = "40000-59999".parse()?;
    /// let server = Server::builder().bind_in_range("127.0.0.1".parse()?, &range, |_| Box::new(Upper))?;
    /// assert!(range.contains(server.local_addr().port()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Os(AddrInUse)` when every port of the range is taken; otherwise as [`Builder::bind`].
    pub fn bind_in_range<F>(self, ip: IpAddr, range: &PortRange, factory: F) -> Result<Server>
    where
        F: Fn(&Connection) -> Box<dyn Session> + Send + Sync + 'static,
    {
        let listener = range.bind_tcp(ip)?;
        self.listen(listener, factory)
    }

    /// Like [`Builder::bind`], on a listener bound already (a port from a
    /// [`PortRange`](crate::net::PortRange), an inherited socket).
    ///
    /// ```
    /// use cport::session::Server;
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?; // set options on it first if need be
    /// let addr = listener.local_addr()?;
    /// let server = Server::builder().listen(listener, |_| Box::new(Upper))?;
    /// assert_eq!(server.local_addr(), addr);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Builder::bind`].
    pub fn listen<F>(self, listener: std::net::TcpListener, factory: F) -> Result<Server>
    where
        F: Fn(&Connection) -> Box<dyn Session> + Send + Sync + 'static,
    {
        self.limits.check()?;
        let local_addr = listener.local_addr().map_err(|e| Error::from_io(&e, "listener address"))?;
        let port = Port::builder().threads(self.threads).build()?;
        let listener = port.assign(driver::TcpListener::new(listener), LISTENER)?;
        let shared = Arc::new(Shared {
            common: Arc::new(Common { port, limits: Swap::new(self.limits), stats: Stats::default() }),
            listener,
            local_addr,
            table: RwLock::new(Table::default()),
            factory: ArcSwap::from_pointee(FactoryCell(Box::new(factory))),
            state: AtomicU8::new(RUNNING),
            stopped: Mutex::new(None),
            slice: self.slice,
            nodelay: self.nodelay,
            loop_errors: AtomicUsize::new(0),
        });
        let server = Server { shared };
        server.accept();
        Ok(server)
    }
}

impl Server {
    /// A builder with the default limits and no worker threads.
    ///
    /// ```
    /// use cport::session::{Limits, Server};
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let server = Server::builder()
    ///     .limits(Limits::default().with_max_connections(1000))
    ///     .bind("127.0.0.1:0".parse()?, |_conn| Box::new(Upper))?;
    /// assert_eq!(server.connections(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a builder does nothing until `bind` or `listen` is called"]
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The address the server listens on.
    ///
    /// ```
    /// use cport::session::Server;
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// assert_ne!(server.local_addr().port(), 0, "the port the kernel picked");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// What a peer needs to connect to this server: the listening address, or every local
    /// address with the server's port when it listens on all of them (0.0.0.0 or ::).
    ///
    /// ```
    /// use cport::session::Server;
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let description = server.host_description()?;
    /// assert_eq!(description.addrs(), [server.local_addr()]);
    /// let text = description.to_string(); // "127.0.0.1:<port>", for the peer
    /// # drop(text);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`HostDescription::local`].
    pub fn host_description(&self) -> Result<HostDescription> {
        let addr = self.shared.local_addr;
        if addr.ip().is_unspecified() {
            HostDescription::local(addr.port())
        } else {
            HostDescription::new(vec![addr])
        }
    }

    /// Connections open right now.
    ///
    /// ```
    /// use cport::session::Server;
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let client = std::net::TcpStream::connect(server.local_addr())?;
    /// while server.connections() == 0 {
    ///     server.poll(Some(Duration::from_millis(10)))?; // accepts it
    /// }
    /// assert_eq!(server.connections(), 1);
    /// # drop(client);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connections(&self) -> usize {
        self.read_table().len
    }

    /// Handles to every open connection (to broadcast, or to close some).
    ///
    /// ```
    /// use cport::session::Server;
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// while server.connections() == 0 {
    ///     server.poll(Some(Duration::from_millis(10)))?;
    /// }
    /// for conn in server.connection_list() {
    ///     assert_eq!(conn.peer_addr(), Some(client.local_addr()?));
    ///     conn.send(b"news\n")?; // a broadcast
    /// }
    /// server.poll(Some(Duration::from_millis(10)))?;
    /// let mut got = [0; 5];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"news\n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connection_list(&self) -> Vec<Connection> {
        self.read_table().conns()
    }

    /// The limits in force.
    ///
    /// ```
    /// use cport::session::{Limits, Server};
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// assert_eq!(server.limits(), Limits::default());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limits(&self) -> Limits {
        Limits::clone(&self.shared.common.limits.load())
    }

    /// Replaces the limits; every connection uses the new ones from its next check on.
    ///
    /// ```
    /// use cport::{session::Server, ErrorKind};
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// server.set_limits(server.limits().with_max_connections(10))?;
    /// assert_eq!(server.limits().max_connections, 10);
    /// let zero = server.set_limits(server.limits().with_read_size(0)).unwrap_err();
    /// assert_eq!(zero.kind(), ErrorKind::InvalidInput);
    /// assert_eq!(server.limits().read_size, 16 << 10, "the old limits stay");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for a zero limit (the old limits stay).
    pub fn set_limits(&self, limits: Limits) -> Result<()> {
        limits.check()?;
        self.shared.common.limits.store(limits);
        Ok(())
    }

    /// Replaces the session factory; connections accepted from now on get sessions from it.
    ///
    /// ```
    /// use cport::session::{Outbox, Server, Session};
    /// use std::io::Read;
    ///
    /// /// Greets with its version, then ignores what it receives.
    /// struct Greeter(&'static [u8]);
    ///
    /// impl Session for Greeter {
    ///     fn opened(&mut self, out: &mut Outbox<'_>) -> cport::Result<()> {
    ///         out.send(self.0);
    ///         Ok(())
    ///     }
    ///     fn receive(&mut self, data: &[u8], _out: &mut Outbox<'_>) -> cport::Result<usize> {
    ///         Ok(data.len())
    ///     }
    /// }
    ///
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Greeter(b"v1\n")))?;
    /// server.set_factory(|_| Box::new(Greeter(b"v2\n")));
    /// let runner = {
    ///     let server = server.clone();
    ///     std::thread::spawn(move || server.run())
    /// };
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// let mut got = [0; 3];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"v2\n");
    /// drop(client);
    /// server.stop(std::time::Duration::from_secs(5));
    /// runner.join().expect("no panic")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_factory<F>(&self, factory: F)
    where
        F: Fn(&Connection) -> Box<dyn Session> + Send + Sync + 'static,
    {
        self.shared.factory.store(Arc::new(FactoryCell(Box::new(factory))));
    }

    /// What the server has done so far.
    ///
    /// ```
    /// use cport::session::Server;
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let client = std::net::TcpStream::connect(server.local_addr())?;
    /// while server.summary().accepted == 0 {
    ///     server.poll(Some(Duration::from_millis(10)))?;
    /// }
    /// let so_far = server.summary();
    /// assert_eq!((so_far.accepted, so_far.open, so_far.closed), (1, 1, 0));
    /// # drop(client);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn summary(&self) -> Summary {
        let s = &self.shared.common.stats;
        let get = |c: &StatSize| c.load(Ordering::Relaxed);
        Summary {
            accepted: get(&s.accepted),
            refused: get(&s.refused),
            closed: get(&s.closed),
            open: self.connections(),
            errors: get(&s.errors) + get(&self.shared.loop_errors),
            limit_closes: get(&s.limit_closes),
            idle_closes: get(&s.idle_closes),
            forced: get(&s.forced),
            bytes_in: get(&s.bytes_in),
            bytes_out: get(&s.bytes_out),
            peak_outbox: get(&s.peak_outbox),
        }
    }

    /// The counters of the server's port ([`Port::stats`](crate::Port::stats)): what the
    /// threads running the server did there, such as how often they waited in epoll or parked
    /// (take two readings apart to see what a message, or an idle second, costs).
    ///
    /// ```
    /// use cport::session::Server;
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let before = server.port_stats();
    /// server.poll(Some(Duration::from_millis(1)))?; // nothing comes: one wait in epoll
    /// assert!(server.port_stats().epoll_waits > before.epoll_waits);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn port_stats(&self) -> crate::Stats {
        self.shared.common.port.stats()
    }

    /// Whether [`Server::stop`] has finished.
    ///
    /// ```
    /// use cport::session::Server;
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// assert!(!server.is_stopped());
    /// server.stop(Duration::from_secs(1));
    /// assert!(server.is_stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) == STOPPED
    }

    /// Handles completions until the server has stopped. Any number of threads may run this
    /// at once.
    ///
    /// ```
    /// use cport::session::Server;
    /// use std::io::{Read, Write};
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let runners: Vec<_> = (0..2)
    ///     .map(|_| {
    ///         let server = server.clone();
    ///         std::thread::spawn(move || server.run())
    ///     })
    ///     .collect();
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// client.write_all(b"ping")?;
    /// let mut got = [0; 4];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"PING");
    /// drop(client);
    /// server.stop(Duration::from_secs(5)); // ends `run` in both threads
    /// for r in runners {
    ///     r.join().expect("no panic")?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Only an unexpected error of the port; `stop` ending the server is `Ok`.
    pub fn run(&self) -> Result<()> {
        while !self.is_stopped() {
            match self.poll(None) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::PortClosed => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: no limit) for completions and handles those that are
    /// there, a batch at most; returns how many it handled (0 on timeout). For loops of one's
    /// own.
    ///
    /// ```
    /// use cport::session::Server;
    /// use std::io::{Read, Write};
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// client.write_all(b"abc")?;
    /// // A loop of one's own: here, until the reply has been handled.
    /// while server.summary().bytes_out < 3 {
    ///     server.poll(Some(Duration::from_millis(10)))?;
    /// }
    /// let mut got = [0; 3];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"ABC");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `PortClosed` once the server has stopped; `InvalidInput` when called from inside a
    /// session call (it could wait on that very connection).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<usize> {
        if inside_session() {
            return Err(Error::invalid("Server::poll (or run) called from inside a session call"));
        }
        // The batch buffer is the thread's own, reused from call to call (taken out while in
        // use, so a nested call on this thread would just allocate its own).
        let mut batch = BATCH_BUF.with(|b| b.take());
        let got = self.shared.common.port.next_completions(&mut batch, BATCH, timeout);
        for c in batch.drain(..) {
            self.handle(c);
        }
        BATCH_BUF.with(|b| b.set(batch));
        got
    }

    /// Places `loops` loops (at least one) on `pool` that handle completions until the server
    /// stops, so an application with a rayon pool needs no threads of its own for them. Each
    /// loop handles a batch of completions, or waits in the port for one (as long as
    /// [`Builder::pool_slice`] says), then lets the pool run other work ([`rayon::yield_now`])
    /// before it goes on. Returns at once.
    ///
    /// ```
    /// use cport::session::Server;
    /// use std::io::{Read, Write};
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
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// server.run_on(&pool, 1);
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// client.write_all(b"pool")?;
    /// let mut got = [0; 4];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"POOL");
    /// drop(client);
    /// server.stop(Duration::from_secs(5)); // the loop ends with the server
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_on(&self, pool: &rayon::ThreadPool, loops: usize) {
        for _ in 0..loops.max(1) {
            let server = self.clone();
            pool.spawn(move || server.pool_loop());
        }
    }

    /// Like [`Server::run_on`], on rayon's global pool (the one `rayon::spawn` and parallel
    /// iterators use outside any other pool). Called from a thread of another pool, it places
    /// the loops on that pool instead, as `rayon::spawn` does.
    ///
    /// ```
    /// use cport::session::Server;
    /// use std::io::{Read, Write};
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// server.run_on_global(1);
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// client.write_all(b"global")?;
    /// let mut got = [0; 6];
    /// client.read_exact(&mut got)?;
    /// assert_eq!(&got, b"GLOBAL");
    /// drop(client);
    /// server.stop(Duration::from_secs(5)); // the loop ends with the server
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_on_global(&self, loops: usize) {
        for _ in 0..loops.max(1) {
            let server = self.clone();
            rayon::spawn(move || server.pool_loop());
        }
    }

    /// A loop on a rayon pool: a batch of completions (or a wait for one), then one piece of
    /// the pool's other work, until the server stops. The wait is the slice at first, doubles
    /// while the pool has nothing else to run (so an idle loop costs about what an idle `run`
    /// does), and is zero after the pool ran something, which may have left more.
    fn pool_loop(&self) {
        let slice = self.shared.slice;
        let first = if slice.is_zero() { Duration::from_millis(1) } else { slice };
        let longest = POOL_IDLE_WAIT.max(first);
        let mut wait = slice;
        while !self.is_stopped() {
            match self.poll(Some(wait)) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::PortClosed => return,
                Err(_) => {
                    self.shared.loop_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            wait = match rayon::yield_now() {
                Some(rayon::Yield::Executed) => Duration::ZERO,
                Some(rayon::Yield::Idle) | None => wait.saturating_mul(2).clamp(first, longest),
            };
        }
    }

    /// Stops gracefully: stops accepting, lets every connection flush what it has queued and
    /// closes it (sessions see [`Closed::Stopped`]); connections that have not flushed within
    /// `timeout` are closed by force. Then shuts the port down, which ends [`Server::run`] in
    /// every thread, and returns the summary. Handles completions itself while it waits, so it
    /// works with or without other threads running the server. Calling it again returns the
    /// same summary.
    ///
    /// Called from inside a session call, where waiting could wait for that very connection,
    /// it only begins the stop ([`Server::begin_stop`]) and returns the summary so far.
    ///
    /// ```
    /// use cport::session::Server;
    /// use std::io::Write;
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
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let mut client = std::net::TcpStream::connect(server.local_addr())?;
    /// client.write_all(b"bye")?;
    /// drop(client);
    /// while server.summary().closed == 0 {
    ///     server.poll(Some(Duration::from_millis(10)))?;
    /// }
    /// let summary = server.stop(Duration::from_secs(5));
    /// assert_eq!((summary.accepted, summary.closed, summary.open, summary.bytes_in), (1, 1, 0, 3));
    /// assert_eq!(server.stop(Duration::ZERO), summary, "the same summary again");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(&self, timeout: Duration) -> Summary {
        if inside_session() {
            self.begin_stop();
            return self.summary();
        }
        let mut done = lock(&self.shared.stopped);
        if let Some(summary) = done.as_ref() {
            return summary.clone();
        }
        self.begin_stop();
        let deadline = super::deadline_after(timeout);
        self.drive_until_empty(deadline);
        if self.connections() > 0 {
            for conn in self.connection_list() {
                if conn.abort(Closed::Stopped) {
                    self.shared.common.stats.forced.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.drive_until_empty(Instant::now() + ABORT_GRACE);
        }
        self.shared.state.store(STOPPED, Ordering::SeqCst);
        self.shared.common.port.shutdown();
        // Sessions of connections whose Close completion never came (a session stuck in a
        // call) are ended here so nothing outlives the stop.
        let left = std::mem::take(&mut *self.write_table());
        for conn in left.conns() {
            conn.discard(Closed::Stopped);
        }
        let summary = self.summary();
        *done = Some(summary.clone());
        summary
    }

    /// Begins a graceful stop without waiting: stops accepting and asks every connection to
    /// flush and close. The threads running the server finish it: once the last connection is
    /// gone the port is shut down and [`Server::run`] returns everywhere. [`Server::stop`]
    /// waits for it, forces connections that take too long, and gives the summary. Safe to
    /// call from a session.
    ///
    /// ```
    /// use cport::session::Server;
    /// # use cport::session::{Outbox, Session};
    /// # struct Upper;
    /// # impl Session for Upper {
    /// #     fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
    /// #         out.send(&data.to_ascii_uppercase());
    /// #         Ok(data.len())
    /// #     }
    /// # }
    ///
    /// let server = Server::builder().bind("127.0.0.1:0".parse()?, |_| Box::new(Upper))?;
    /// let runner = {
    ///     let server = server.clone();
    ///     std::thread::spawn(move || server.run())
    /// };
    /// server.begin_stop(); // returns at once; the running thread finishes the stop
    /// runner.join().expect("no panic")?;
    /// assert!(server.is_stopped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_stop(&self) {
        if self.shared.state.compare_exchange(RUNNING, STOPPING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let _ = self.shared.common.port.close(&self.shared.listener);
        for conn in self.connection_list() {
            conn.stop();
        }
    }

    fn drive_until_empty(&self, deadline: Instant) {
        loop {
            if self.connections() == 0 {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            if self.poll(Some((deadline - now).min(STOP_TICK))).is_err() {
                return;
            }
        }
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.shared.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.shared.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, c: Completion) {
        if c.token() == LISTENER {
            self.on_accept(c);
            return;
        }
        let Some(conn) = self.read_table().get(c.token()).cloned() else {
            return;
        };
        match c.op() {
            Op::Read => conn.on_read(c),
            Op::Write => conn.on_write(c),
            Op::Close => {
                conn.on_close();
                // Counted before the slot is freed: `stop` takes its summary once the table is
                // empty, and must find every close counted.
                self.shared.common.stats.closed.fetch_add(1, Ordering::Relaxed);
                self.write_table().remove(c.token());
                self.finish_stop_if_done();
            }
            _ => {}
        }
    }

    /// Starts accepting, taking every connection that is already waiting.
    fn accept(&self) {
        let port = &self.shared.common.port;
        while self.shared.state.load(Ordering::SeqCst) == RUNNING {
            match port.start_io_inline(&self.shared.listener, crate::request::Request::accept()) {
                Ok(Some(c)) => self.accepted(c),
                // Pending (its completion comes through the queue), or the listener is closed.
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn on_accept(&self, c: Completion) {
        match c.op() {
            Op::Accept => {
                self.accepted(c);
                self.accept();
            }
            // The listener closed: a stop began.
            Op::Close => self.finish_stop_if_done(),
            _ => {}
        }
    }

    /// A stop that began ([`Server::begin_stop`]) is over once the last connection is gone:
    /// shut the port down, which ends `run` in every thread even if nobody calls `stop`.
    fn finish_stop_if_done(&self) {
        if self.shared.state.load(Ordering::SeqCst) == STOPPING && self.connections() == 0 {
            self.shared.state.store(STOPPED, Ordering::SeqCst);
            self.shared.common.port.shutdown();
        }
    }

    fn accepted(&self, mut c: Completion) {
        let stats = &self.shared.common.stats;
        match c.status() {
            Status::Ok => {}
            // Stopping.
            Status::Cancelled => return,
            // EMFILE and the like: the port rests the listener before it accepts again.
            _ => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let Some(stream) = c.take_accepted() else { return };
        if self.shared.nodelay {
            // Best effort: a socket without the option still works, only slower.
            let _ = stream.set_nodelay(true);
        }
        if self.shared.state.load(Ordering::SeqCst) != RUNNING {
            return;
        }
        let limits = self.shared.common.limits.load();
        let token = {
            let mut table = self.write_table();
            if table.len >= limits.max_connections {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            table.reserve()
        };
        let isb = match self.shared.common.port.assign_boxed(stream.into_driver(), token) {
            Ok(isb) => isb,
            Err(_) => {
                self.write_table().remove(token);
                stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let conn = Connection::new(token, isb, c.addr(), self.shared.common.clone());
        let session = (self.shared.factory.load().0)(&conn);
        conn.set_session(session);
        self.write_table().fill(token, conn.clone());
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        conn.open();
        if self.shared.state.load(Ordering::SeqCst) != RUNNING {
            // A stop began while this connection was being set up and did not see it.
            conn.stop();
        }
    }
}
