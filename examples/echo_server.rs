//! A TCP echo server on one cport [`Port`]: every byte a client sends comes back.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDR] [--threads N]
//! ```
//!
//! ADDR defaults to 127.0.0.1:7878 (use port 0 for any free port). The first line on stdout is
//! `listening <addr>`, with the address actually bound.
//!
//! As many handler threads as CPUs loop on [`Port::next_completion`] and decide what to start
//! next; by default they also do the socket I/O (the port has no workers: the fastest
//! configuration). `--threads N` runs N handler threads and gives the port N dedicated workers
//! too, for handlers that would be slow. Each completion carries the ISB of its stream, so the
//! handlers keep no table of connections:
//!
//! - accept done: assign the new stream (token = a fresh connection id), start a read of up to
//!   16 KiB on it, and start the next accept. A failed accept (EMFILE, say) is reported and the
//!   accept started again; the port backs off by itself.
//! - read done with data: write back exactly the bytes that arrived.
//! - write done: reuse its buffer for the next read.
//! - end of stream, peer reset, error or cancel: close the stream. Its `Close` completion,
//!   the last one of the stream, needs nothing.
//!
//! A connection has a single I/O in flight at a time, so its bytes come back in order.

use std::error::Error;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use cport::{Completion, ErrorKind, Isb, Op, Port, Request, Status};

const BUF_SIZE: usize = 16 * 1024;
const USAGE: &str = "usage: echo_server [ADDR] [--threads N]   (ADDR defaults to 127.0.0.1:7878)";

/// Connection ids: the listener is token 0, connections count up from 1.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn main() -> ExitCode {
    let (addr, threads, workers) = match parse_args(std::env::args().skip(1)) {
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
    match serve(addr, threads, workers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The address, the handler count and the worker count; `None` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<(SocketAddr, usize, usize)>, String> {
    let mut addr = None;
    let mut handlers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = 0;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        } else if arg == "--threads" {
            let n = args.next().ok_or("--threads needs a value")?;
            handlers = n.parse().ok().filter(|&n| n > 0).ok_or(format!("bad thread count {n:?}"))?;
            workers = handlers;
        } else if arg.starts_with('-') || addr.is_some() {
            return Err(format!("unexpected argument {arg:?}"));
        } else {
            let found = arg.to_socket_addrs().ok().and_then(|mut a| a.next());
            addr = Some(found.ok_or(format!("bad address {arg:?}"))?);
        }
    }
    Ok(Some((addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7878))), handlers, workers)))
}

fn serve(addr: SocketAddr, threads: usize, workers: usize) -> Result<(), Box<dyn Error>> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let port = Port::builder().threads(workers).build()?;
    let lis = port.assign(cport::driver::TcpListener::new(listener), 0)?;
    port.accept(&lis)?;
    println!("listening {local}");
    std::io::stdout().flush()?;

    let handlers: Vec<_> = (0..threads)
        .map(|_| {
            let port = port.clone();
            thread::spawn(move || loop {
                match port.next_completion(None) {
                    Ok(Some(c)) => handle(&port, c),
                    Ok(None) => continue, // woken by Port::wakeup
                    Err(_) => break,      // the port was shut down
                }
            })
        })
        .collect();
    for h in handlers {
        let _ = h.join();
    }
    Ok(())
}

/// Decides what one finished operation leads to.
fn handle(port: &Port, mut c: Completion) {
    let Some(isb) = c.isb().cloned() else { return }; // a post: we make none
    match (c.op(), c.status()) {
        (Op::Accept, Status::Cancelled) => {} // the port is shutting down
        (Op::Accept, Status::Ok) => {
            let stream = c.take_accepted().expect("a successful accept carries its stream");
            match port.assign(stream, NEXT_ID.fetch_add(1, Ordering::Relaxed)) {
                Ok(conn) => start(port, &conn, Request::read_some(vec![0; BUF_SIZE])),
                Err(e) => eprintln!("echo_server: {e}"), // dropping the stream closed it
            }
            start(port, &isb, Request::accept());
        }
        (Op::Accept, _) => {
            if let Err(e) = c.result() {
                eprintln!("echo_server: {e}");
            }
            start(port, &isb, Request::accept());
        }
        (Op::Read, Status::Ok) if c.bytes() > 0 => {
            let mut buf = c.take_buffer().expect("a read gives its buffer back");
            buf.truncate(c.bytes());
            start(port, &isb, Request::write(buf));
        }
        (Op::Write, Status::Ok) => {
            let mut buf = c.take_buffer().expect("a write gives its buffer back");
            buf.resize(BUF_SIZE, 0);
            start(port, &isb, Request::read_some(buf));
        }
        (Op::Close, _) => {}
        _ => close(port, &isb), // Eof, Abandoned, Failed, Cancelled, TimedOut
    }
}

fn start(port: &Port, isb: &Isb, req: Request) {
    if let Err(e) = port.start_io(isb, req) {
        if e.kind() != ErrorKind::PortClosed {
            eprintln!("echo_server: {e}");
        }
        close(port, isb);
    }
}

fn close(port: &Port, isb: &Isb) {
    match port.close(isb) {
        Err(e) if e.kind() != ErrorKind::NotAssigned => eprintln!("echo_server: {e}"),
        _ => {}
    }
}
