//! The RESP server's engine, shared by the `resp_server` binary (`src/main.rs`) and the tests
//! (`tests/`): the wire format ([`protocol`]), the keyspace ([`store`]) and the commands
//! ([`commands`]), which know nothing of sockets, and the glue to cport's session layer
//! ([`session`]), which makes the server.
#![deny(missing_docs)]

pub mod commands;
pub mod protocol;
pub mod session;
pub mod store;
