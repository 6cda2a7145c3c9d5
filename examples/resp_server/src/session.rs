//! The glue between cport's session layer and the protocol engine: one [`Resp`] session per
//! connection, and [`serve`], which makes the server.

use std::net::SocketAddr;
use std::sync::Arc;

use cport::session::{Limits, Outbox, Server, Session};

use super::commands::Client;
use super::store::Store;

/// Shards of the keyspace: a few per thread keeps lock contention negligible.
const SHARDS: usize = 64;

/// One connection: the protocol state of its client.
pub struct Resp {
    client: Client,
}

impl Session for Resp {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        match self.client.feed(data, out.buffer()) {
            Ok(used) => {
                if self.client.wants_close() {
                    // QUIT: the +OK is queued; send it and close.
                    out.close();
                }
                Ok(used)
            }
            Err(_protocol_error) => {
                // The `-ERR Protocol error: ...` reply is queued: send it, then close, as Redis
                // does. The rest of the input is not looked at.
                out.close();
                Ok(data.len())
            }
        }
    }
}

/// A server on `addr` with an empty keyspace. Threads that call `run` on it (or a clone)
/// handle its connections.
pub fn serve(addr: SocketAddr) -> cport::Result<Server> {
    let store = Arc::new(Store::new(SHARDS));
    // A request may carry a value of up to 512 MiB, as in Redis; the server takes that much
    // unconsumed input per connection and no more.
    let limits = Limits::default().with_max_input(513 << 20);
    Server::builder().limits(limits).bind(addr, move |_conn| Box::new(Resp { client: Client::new(store.clone()) }))
}
