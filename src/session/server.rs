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
    /// How long a loop on a rayon pool waits in the port before it lets the pool run other
    /// work.
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
/// or by loops on a rayon pool ([`Server::run_on`]); the port does the I/O in those threads
/// (it has no workers unless [`Builder::threads`] asks for some). Cloning gives another handle
/// to the same server; when the last handle is dropped without [`Server::stop`], the port is
/// shut down and every session is told [`Closed::Stopped`].
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
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = limits;
        self
    }

    /// Worker threads of the server's port (default 0: the threads that handle completions do
    /// the I/O themselves, which is what an embedding in a pool wants).
    pub fn threads(mut self, n: usize) -> Builder {
        self.threads = n;
        self
    }

    /// How long each loop placed with [`Server::run_on`] waits for I/O before it yields to the
    /// pool's other work (default 2 ms). Longer saves idle wake-ups; shorter lets other work
    /// in the pool start sooner.
    pub fn pool_slice(mut self, slice: Duration) -> Builder {
        self.slice = slice;
        self
    }

    /// Whether accepted connections get `TCP_NODELAY` (default true): each session call's
    /// output goes out as one write, and with Nagle's algorithm on, a second small write waits
    /// for the peer's delayed acknowledgement (tens of milliseconds).
    pub fn nodelay(mut self, on: bool) -> Builder {
        self.nodelay = on;
        self
    }

    /// Listens on `addr` (port 0: any free port) and starts accepting; `factory` makes the
    /// session of each connection.
    ///
    /// # Errors
    /// `Os` if the address cannot be bound; `InvalidInput` for zero limits.
    pub fn bind<F>(self, addr: SocketAddr, factory: F) -> Result<Server>
    where
        F: Fn(&Connection) -> Box<dyn Session> + Send + Sync + 'static,
    {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| Error::from_io(&e, format!("bind {addr}")))?;
        self.listen(listener, factory)
    }

    /// Listens on `ip` at the first free port of `range` (seed 004's port restriction).
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
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// What a peer needs to connect to this server: the listening address, or every local
    /// address with the server's port when it listens on all of them (0.0.0.0 or ::).
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
    pub fn connections(&self) -> usize {
        self.read_table().len
    }

    /// Handles to every open connection (to broadcast, or to close some).
    pub fn connection_list(&self) -> Vec<Connection> {
        self.read_table().conns()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        Limits::clone(&self.shared.common.limits.load())
    }

    /// Replaces the limits; every connection uses the new ones from its next check on.
    ///
    /// # Errors
    /// `InvalidInput` for a zero limit (the old limits stay).
    pub fn set_limits(&self, limits: Limits) -> Result<()> {
        limits.check()?;
        self.shared.common.limits.store(limits);
        Ok(())
    }

    /// Replaces the session factory; connections accepted from now on get sessions from it.
    pub fn set_factory<F>(&self, factory: F)
    where
        F: Fn(&Connection) -> Box<dyn Session> + Send + Sync + 'static,
    {
        self.shared.factory.store(Arc::new(FactoryCell(Box::new(factory))));
    }

    /// What the server has done so far.
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
            forced: get(&s.forced),
            bytes_in: get(&s.bytes_in),
            bytes_out: get(&s.bytes_out),
            peak_outbox: get(&s.peak_outbox),
        }
    }

    /// Whether [`Server::stop`] has finished.
    pub fn is_stopped(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) == STOPPED
    }

    /// Handles completions until the server has stopped. Any number of threads may run this
    /// at once.
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
    /// loop waits in the port at most [`Builder::pool_slice`] at a time, then lets the pool run
    /// other work ([`rayon::yield_now`]) before it goes on. Returns at once.
    pub fn run_on(&self, pool: &rayon::ThreadPool, loops: usize) {
        for _ in 0..loops.max(1) {
            let server = self.clone();
            pool.spawn(move || server.pool_loop());
        }
    }

    fn pool_loop(&self) {
        while !self.is_stopped() {
            match self.poll(Some(self.shared.slice)) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::PortClosed => return,
                Err(_) => {
                    self.shared.loop_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            rayon::yield_now();
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
                self.write_table().remove(c.token());
                self.shared.common.stats.closed.fetch_add(1, Ordering::Relaxed);
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
