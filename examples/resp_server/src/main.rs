//! A Redis-protocol (RESP2) server on cport's session layer: PING, ECHO, SET (EX/PX/NX/XX),
//! GET, DEL, EXISTS, INCR/DECR(BY), MGET, MSET, EXPIRE/TTL, FLUSHALL, DBSIZE, COMMAND and the
//! few server commands the stock clients send at start, over a sharded in-memory map. Inline
//! and multibulk requests, pipelined.
//!
//! ```text
//! cargo run --release -p cport-resp-server -- [ADDR] [--threads N]   # default 127.0.0.1:6380
//! redis-cli -p 6380 set greeting hello
//! redis-benchmark -p 6380 -t ping,set,get -P 16 -q
//! ```
//!
//! Prints `listening <addr>` first. The protocol engine (`commands.rs`, `protocol.rs`,
//! `store.rs`, this package's library) knows nothing of sockets: cport's [`Server`] owns them
//! and all buffering, feeds each connection's [`Session`] the bytes that arrived, keeps the
//! unconsumed tail of a request split across reads, and sends the replies in order.

use cport_resp_server::session;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:6380".to_string();
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => threads = args.next().and_then(|n| n.parse().ok()).ok_or("--threads needs a number")?,
            "-h" | "--help" => {
                println!("usage: resp_server [ADDR] [--threads N]");
                return Ok(());
            }
            other => addr = other.to_string(),
        }
    }

    let server = session::serve(addr.parse()?)?;
    println!("listening {}", server.local_addr());

    // `threads` threads handle connections: they wait in the port's epoll themselves, do the
    // I/O and run the sessions.
    let runners: Vec<_> = (1..threads.max(1))
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || server.run())
        })
        .collect();
    server.run()?;
    for r in runners {
        r.join().map_err(|_| "server thread panicked")??;
    }
    Ok(())
}
