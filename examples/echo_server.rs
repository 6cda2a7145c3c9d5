//! A TCP echo server on one cport [`Port`]: every byte a client sends comes back.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDR] [--threads N]
//! ```
//!
//! ADDR defaults to 127.0.0.1:7878 (port 0: any free port). The first line on stdout is
//! `listening <addr>`, with the address bound. Ctrl-C (or SIGTERM) stops it gracefully: the
//! signal arrives as a read completion on a signalfd assigned to the same port, the listener
//! closes, the port shuts down, every pending I/O comes back cancelled, and the handler threads
//! end once they have taken the last completion.
//!
//! N handler threads (default: one per CPU) loop on [`Port::next_completion`]; they also do
//! the socket I/O (the port has no workers: the fastest configuration). Each completion carries
//! the ISB of its stream, so the handlers keep no table of connections; one accept series keeps
//! the listener accepting; each connection has one I/O in flight, so its bytes come back in
//! order.

use std::error::Error;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;

use cport::{driver, Completion, Isb, Op, Port, Status};

const BUF: usize = 16 * 1024;
/// Tokens: the listener, the signals, then the connections.
const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
static NEXT_ID: AtomicU64 = AtomicU64::new(2);
const USAGE: &str = "usage: echo_server [ADDR] [--threads N]   (ADDR defaults to 127.0.0.1:7878)";

fn serve(addr: SocketAddr, threads: usize) -> Result<(), Box<dyn Error>> {
    let stop = stop_signals()?; // before any thread starts: they all inherit the blocked mask
    let port = Port::new()?;
    let listener = port.listen(addr, LISTENER)?;
    port.accept_many(&listener, usize::MAX)?;
    let signals = port.assign(driver::Fd::new(stop), SIGNALS)?;
    port.read(&signals, vec![0; SIGINFO], SIGINFO..=SIGINFO)?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;

    let handlers: Vec<_> = (0..threads)
        .map(|_| {
            let (port, listener) = (port.clone(), listener.clone());
            thread::spawn(move || {
                // `PortClosed` after the shutdown and the last completion ends the loop.
                while let Ok(next) = port.next_completion(None) {
                    if let Some(c) = next {
                        handle(&port, &listener, c);
                    }
                }
            })
        })
        .collect();
    for h in handlers {
        let _ = h.join();
    }
    println!("stopped");
    Ok(())
}

/// What one finished operation leads to. Each connection has one I/O in flight and one buffer,
/// which goes round: a read into its spare capacity (no zero-filling), the write of what came,
/// then, emptied, the next read.
fn handle(port: &Port, listener: &Isb, mut c: Completion) {
    let Some(isb) = c.isb().cloned() else { return };
    let ok = match (c.token(), c.op(), c.status()) {
        (SIGNALS, Op::Read, Status::Ok) => {
            eprintln!("echo_server: stopping");
            let _ = port.close(listener);
            port.shutdown();
            true
        }
        (LISTENER, Op::Accept, Status::Ok) => {
            // A new connection: assign it and read from it (a refused one is closed).
            let Some(conn) = c.take_accepted() else { return };
            let _ = conn.set_nodelay(true);
            match port.assign(conn, NEXT_ID.fetch_add(1, Relaxed)) {
                Ok(conn) if port.read_buf(&conn, Vec::with_capacity(BUF), 1..=BUF).is_err() => {
                    let _ = port.close(&conn);
                }
                Ok(_) => {}
                Err(e) => report(Some(e)),
            }
            true
        }
        (LISTENER, Op::Accept, _) => {
            report(c.result().err()); // EMFILE: the port rests the listener
            true
        }
        (_, Op::Read, Status::Ok) => port.write(&isb, c.into_data()).is_ok(), // echo what came
        (_, Op::Write, Status::Ok) => {
            let mut buf = c.into_data(); // what was written: read into it again
            buf.clear();
            port.read_buf(&isb, buf, 1..=BUF).is_ok()
        }
        (_, Op::Read | Op::Write, _) => false, // end of stream, reset, error, or cancelled at shutdown
        _ => true,                             // Close completions, and the series' end at shutdown
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

/// The size of one signalfd record.
const SIGINFO: usize = std::mem::size_of::<libc::signalfd_siginfo>();

/// SIGINT and SIGTERM as a nonblocking signalfd: blocked in this thread (and so in every thread
/// it starts), they wait there to be read instead of killing the process.
fn stop_signals() -> std::io::Result<OwnedFd> {
    // SAFETY: `set` is plain data that `sigemptyset` initialises before any other use; the
    // calls get valid pointers to it, and a null old-mask pointer, which they allow.
    let fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let err = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if err != 0 {
            return Err(std::io::Error::from_raw_os_error(err));
        }
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `signalfd` just returned this fd, open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
