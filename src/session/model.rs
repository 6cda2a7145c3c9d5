//! One session connection hosted the way [`Server`](super) hosts its connections, for the loom
//! models (only in `cfg(loom)` builds, where the server itself, with its listener and real
//! sockets, is not compiled). The model assigns a stand-in stream, opens the connection on it
//! and hands every completion the port returns to [`Host::handle`], as a server's `run` loop
//! does; the connection's protocol (`conn.rs`) is the production one.

use super::conn::{Common, Connection, Stats};
use super::{Limits, Session};
use crate::completion::Completion;
use crate::driver::Driver;
use crate::error::Result;
use crate::port::Port;
use crate::request::Op;
use crate::sync::{Arc, Swap};

/// One connection of a session server, on a stream of the model's.
pub struct Host {
    conn: Connection,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("connection", &self.conn).finish()
    }
}

impl Host {
    /// Assigns `driver` to `port` under `token` and opens a connection on it with `session`:
    /// the session's `opened` runs and the first read starts, as for an accepted connection.
    ///
    /// # Errors
    /// `InvalidInput` for zero limits; what [`Port::assign`] returns.
    pub fn open(
        port: &Port,
        driver: impl Driver,
        token: u64,
        limits: Limits,
        session: Box<dyn Session>,
    ) -> Result<Host> {
        limits.check()?;
        let isb = port.assign(driver, token)?;
        let common = Arc::new(Common { port: port.clone(), limits: Swap::new(limits), stats: Stats::default() });
        let conn = Connection::new(token, isb, None, common);
        conn.set_session(session);
        conn.open();
        Ok(Host { conn })
    }

    /// The connection's handle (`send`, `close`, `queued`, ...).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Handles one of the connection's completions as the server does. Returns true for its
    /// Close completion, the last.
    pub fn handle(&self, c: Completion) -> bool {
        match c.op() {
            Op::Read => self.conn.on_read(c),
            Op::Write => self.conn.on_write(c),
            Op::Close => {
                self.conn.on_close();
                return true;
            }
            _ => {}
        }
        false
    }

    /// A graceful stop of this connection, as `Server::stop` makes one: flush, then close.
    pub fn stop(&self) {
        self.conn.stop();
    }
}
