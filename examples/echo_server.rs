//! A TCP echo server on one cport [`Port`]: every byte a client sends comes back. The
//! README's server, with arguments and messages.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDR] [--threads N]
//! ```
//!
//! ADDR defaults to 127.0.0.1:7878 (port 0: any free port). The first line on stdout is
//! `listening <addr>`, with the address bound. Ctrl-C (or SIGTERM) stops it gracefully: the
//! signal arrives as a completion ([`Port::signals`]), the port shuts down, every pending I/O
//! comes back cancelled, and the handler threads end once they have taken the last completion.
//!
//! N handler threads (default: one per CPU) loop on [`Port::next_completion`]; they also do
//! the socket I/O (the port has no workers: the fastest configuration). Each completion carries
//! the ISB of its stream, so the handlers keep no table of connections; one accept series keeps
//! the listener accepting; each connection has one I/O in flight and one buffer, which goes
//! round: a read into its spare capacity (no zero-filling), the write of what came, then,
//! emptied, the next read.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;

use cport::{signal, Completion, Op, Port, Status};

const BUF: usize = 16 * 1024;
/// Tokens: the listener, the signals, then the connections.
const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
static NEXT_ID: AtomicU64 = AtomicU64::new(2);
const USAGE: &str = "usage: echo_server [ADDR] [--threads N]   (ADDR defaults to 127.0.0.1:7878)";

fn serve(addr: SocketAddr, threads: usize) -> cport::Result<()> {
    let port = Port::new()?;
    // First, before any thread starts: the threads inherit the signal mask.
    port.signals(&[signal::SIGINT, signal::SIGTERM], SIGNALS)?;
    let listener = port.listen(addr, LISTENER)?;
    port.accept_many(&listener, usize::MAX)?;
    println!("listening {}", listener.local_addr()?);
    let _ = std::io::stdout().flush();
    thread::scope(|s| {
        for _ in 0..threads {
            // `PortClosed` after the shutdown and the last completion ends the loop.
            s.spawn(|| {
                while let Ok(next) = port.next_completion(None) {
                    if let Some(c) = next {
                        handle(&port, c);
                    }
                }
            });
        }
    });
    println!("stopped");
    Ok(())
}

/// What one finished operation leads to.
fn handle(port: &Port, mut c: Completion) {
    let Some(isb) = c.isb().cloned() else { return };
    let ok = match (c.op(), c.status()) {
        (Op::Signal, Status::Ok) => {
            eprintln!("echo_server: signal {}: stopping", c.value());
            port.shutdown(); // pending I/O ends cancelled; then every loop gets PortClosed
            true
        }
        (Op::Accept, Status::Ok) => {
            // `isb` is the listener: set the new connection up (a refused one is closed).
            let Some(conn) = c.take_accepted() else { return };
            let _ = conn.set_nodelay(true);
            match port.assign(conn, NEXT_ID.fetch_add(1, Relaxed)) {
                Ok(conn) => {
                    // Refused only once the port is shutting down, which ends the stream anyway.
                    let _ = port.read_buf(&conn, Vec::with_capacity(BUF), 1..=BUF);
                }
                Err(e) => report(Some(e)),
            }
            true
        }
        (Op::Accept, _) => {
            report(c.result().err()); // EMFILE: the port rests the listener
            true
        }
        (Op::Read, Status::Ok) => port.write(&isb, c.into_data()).is_ok(), // echo what came
        (Op::Write, Status::Ok) => {
            let mut buf = c.into_data(); // what was written: read into it again
            buf.clear();
            port.read_buf(&isb, buf, 1..=BUF).is_ok()
        }
        (Op::Read | Op::Write, _) => false, // end of stream, reset, error, or cancelled at shutdown
        _ => true,                          // Close completions, the series' end at shutdown
    };
    if !ok {
        let _ = port.close(&isb);
    }
}

fn report(e: Option<cport::Error>) {
    if let Some(e) = e.filter(|e| !matches!(e.kind(), cport::ErrorKind::PortClosed | cport::ErrorKind::Cancelled)) {
        eprintln!("echo_server: {e:#}");
    }
}

fn main() -> ExitCode {
    let (addr, threads) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("echo_server: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(addr, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The address and the handler count; `None` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<(SocketAddr, usize)>, String> {
    let mut addr = None;
    let mut threads = thread::available_parallelism().map_or(1, |n| n.get());
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        } else if arg == "--threads" {
            let n = args.next().ok_or("--threads needs a value")?;
            threads = n.parse().ok().filter(|&n| n > 0).ok_or(format!("bad thread count {n:?}"))?;
        } else if arg.starts_with('-') || addr.is_some() {
            return Err(format!("unexpected argument {arg:?}"));
        } else {
            let found = arg.to_socket_addrs().ok().and_then(|mut a| a.next());
            addr = Some(found.ok_or(format!("bad address {arg:?}"))?);
        }
    }
    Ok(Some((addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7878))), threads)))
}
