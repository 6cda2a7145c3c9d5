//! cport in one process: an echo server on one [`Port`] and a closed-loop client on another.
//!
//! ```text
//! cargo run --release --example demo [-- --secs S --conns C --threads N]
//! ```
//!
//! Defaults: 3 seconds, 32 connections, N = the number of CPUs (handler threads per port calling
//! [`Port::next_completion`], which do the I/O themselves: the ports have no workers).
//!
//! - The server listens on 127.0.0.1 (any free port) and echoes, as `examples/echo_server.rs`
//!   does: accept -> read up to 16 KiB -> write those bytes back -> read again.
//! - The client opens C connections with [`Port::connect`]. Each one writes a 64-byte message
//!   that names the connection and a sequence number, reads the echo with
//!   [`Request::read_exact`], checks it, and sends the next, until the time is up; then it
//!   closes its stream.
//!
//! A progress line on stderr shows the messages echoed so far. The summary on stdout gives the
//! connections, messages, messages per second and every completion each port delivered, by
//! status. The exit code is 0 only if every echo came back intact and every connection ended
//! cleanly.

use std::error::Error;
use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cport::{Completion, ErrorKind, Isb, Op, Port, Request, Status};

const USAGE: &str = "usage: demo [--secs S] [--conns C] [--threads N]";
const MSG_LEN: usize = 64;
const SERVER_BUF: usize = 16 * 1024;
/// How long the client's connections get to finish their last echo and close at the end.
const DRAIN: Duration = Duration::from_secs(5);

struct Args {
    run_for: Duration,
    conns: usize,
    threads: usize,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("demo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments; `None` for `--help`.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = Args { run_for: Duration::from_secs(3), conns: 32, threads };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--secs" | "--conns" | "--threads" => {}
            _ => return Err(format!("unexpected argument {flag:?}")),
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = || format!("bad value {value:?} for {flag}");
        match flag.as_str() {
            "--secs" => {
                let secs = value.parse().ok().and_then(|s| Duration::try_from_secs_f64(s).ok());
                args.run_for = secs.filter(|d| !d.is_zero()).ok_or_else(bad)?;
            }
            "--conns" => args.conns = value.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?,
            "--threads" => args.threads = value.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?,
            _ => unreachable!("checked above"),
        }
    }
    Ok(Some(args))
}

/// Completions seen on one port, by status.
#[derive(Default)]
struct Tally([AtomicU64; 7]);

const STATUS_NAMES: [&str; 7] = ["Ok", "Eof", "Cancelled", "TimedOut", "Abandoned", "Failed", "(other)"];

impl Tally {
    fn count(&self, status: Status) {
        let i = match status {
            Status::Ok => 0,
            Status::Eof => 1,
            Status::Cancelled => 2,
            Status::TimedOut => 3,
            Status::Abandoned => 4,
            Status::Failed => 5,
            _ => 6, // `Status` is non-exhaustive
        };
        self.0[i].fetch_add(1, Relaxed);
    }

    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Relaxed)
    }
}

/// Starts `threads` handler threads that take completions from `port` until it is shut down.
fn handlers(
    port: &Port,
    threads: usize,
    handle: impl Fn(&Port, Completion) + Send + Sync + 'static,
) -> Vec<JoinHandle<()>> {
    let handle = Arc::new(handle);
    (0..threads)
        .map(|_| {
            let (port, handle) = (port.clone(), handle.clone());
            thread::spawn(move || loop {
                match port.next_completion(None) {
                    Ok(Some(c)) => handle(&port, c),
                    Ok(None) => continue,
                    Err(_) => break, // shut down and drained
                }
            })
        })
        .collect()
}

fn run(args: &Args) -> Result<bool, Box<dyn Error>> {
    // The server.
    let server = Port::new()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let lis = server.assign(cport::driver::TcpListener::new(listener), 0)?;
    server.accept(&lis)?;
    let server_tally = Arc::new(Tally::default());
    let next_id = AtomicU64::new(1);
    let tally = server_tally.clone();
    let server_threads = handlers(&server, args.threads, move |port, c| {
        tally.count(c.status());
        echo(port, c, &next_id);
    });

    // The client.
    let client = Arc::new(Client {
        stop: AtomicBool::new(false),
        seq: (0..args.conns).map(|_| AtomicU64::new(0)).collect(),
        messages: AtomicU64::new(0),
        mismatches: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        open: AtomicUsize::new(args.conns),
        tally: Tally::default(),
    });
    let client_port = Port::new()?;
    let c = client.clone();
    let client_threads = handlers(&client_port, args.threads, move |port, done| c.handle(port, done));
    let start = Instant::now();
    for token in 0..args.conns {
        if let Err(e) = client_port.connect(addr, token as u64) {
            eprintln!("demo: connection {token}: {e:#}");
            client.failures.fetch_add(1, Relaxed);
            client.open.fetch_sub(1, Relaxed);
        }
    }

    // Progress, about four times a second, until the time is up.
    let run_for = args.run_for;
    let progress = |client: &Client| {
        let (t, n) = (start.elapsed().as_secs_f64(), client.messages.load(Relaxed));
        eprint!("\r{t:6.2} s  {n:>10} messages  {:>9.0} msgs/s ", n as f64 / t);
    };
    while start.elapsed() < run_for && client.open.load(Relaxed) > 0 {
        thread::sleep(Duration::from_millis(250).min(run_for.saturating_sub(start.elapsed())));
        progress(&client);
    }

    // Stop: each connection closes after its current echo. Then shut both ports down; the
    // handler threads drain what is left and return.
    client.stop.store(true, Relaxed);
    let drained = wait_until(|| client.open.load(Relaxed) == 0);
    let elapsed = start.elapsed();
    progress(&client);
    eprintln!();
    client_port.shutdown();
    join(client_threads);
    // Wait for the server to see every connection end (only the listener left).
    wait_until(|| server.streams() <= 1);
    server.shutdown();
    join(server_threads);
    drop((client_port, server));

    // The summary.
    let messages = client.messages.load(Relaxed);
    let mismatches = client.mismatches.load(Relaxed);
    let failures = client.failures.load(Relaxed);
    let unfinished = client.open.load(Relaxed);
    println!("connections     {}", args.conns);
    println!("threads         {} per port (in next_completion, no workers)", args.threads);
    println!("seconds         {:.2}", elapsed.as_secs_f64());
    println!("messages        {messages} ({MSG_LEN} bytes each way)");
    println!("messages/s      {:.0}", messages as f64 / elapsed.as_secs_f64());
    println!("bad echoes      {mismatches}");
    println!("failed conns    {failures}");
    if !drained {
        println!("unfinished      {unfinished} connections still open after {DRAIN:?}");
    }
    println!();
    println!("{:<12}{:>12}{:>12}{:>12}", "completions", "server", "client", "total");
    for (i, name) in STATUS_NAMES.iter().enumerate() {
        let (s, c) = (server_tally.get(i), client.tally.get(i));
        if s + c > 0 || i < 6 {
            println!("{name:<12}{s:>12}{c:>12}{:>12}", s + c);
        }
    }
    let ok = mismatches == 0 && failures == 0 && drained && messages > 0;
    println!("\n{}", if ok { "every echo matched" } else { "FAILED" });
    std::io::stdout().flush()?;
    Ok(ok)
}

/// Polls `done` until it holds or [`DRAIN`] passes; returns whether it held.
fn wait_until(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + DRAIN;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

fn join(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        let _ = t.join();
    }
}

// ----- The server: the loop of examples/echo_server.rs -----

/// Decides what one finished server operation leads to.
fn echo(port: &Port, mut c: Completion, next_id: &AtomicU64) {
    let Some(isb) = c.isb().cloned() else { return };
    match (c.op(), c.status()) {
        (Op::Accept, Status::Cancelled) => {} // the port is shutting down
        (Op::Accept, Status::Ok) => {
            let stream = c.take_accepted().expect("a successful accept carries its stream");
            match port.assign(stream, next_id.fetch_add(1, Relaxed)) {
                Ok(conn) => {
                    start(port, &conn, Request::read_some(vec![0; SERVER_BUF]));
                }
                Err(e) => eprintln!("\ndemo server: {e:#}"),
            }
            start(port, &isb, Request::accept());
        }
        (Op::Accept, _) => {
            if let Err(e) = c.result() {
                eprintln!("\ndemo server: {e:#}");
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
            buf.resize(SERVER_BUF, 0);
            start(port, &isb, Request::read_some(buf));
        }
        (Op::Close, _) => {}
        _ => close(port, &isb), // Eof, Abandoned, Failed, Cancelled, TimedOut
    }
}

/// Starts `req`; if the port refuses, closes the stream.
fn start(port: &Port, isb: &Isb, req: Request) -> bool {
    match port.start_io(isb, req) {
        Ok(()) => true,
        Err(e) => {
            if e.kind() != ErrorKind::PortClosed {
                eprintln!("\ndemo: {e:#}");
            }
            close(port, isb);
            false
        }
    }
}

fn close(port: &Port, isb: &Isb) {
    match port.close(isb) {
        Err(e) if e.kind() != ErrorKind::NotAssigned => eprintln!("\ndemo: {e:#}"),
        _ => {}
    }
}

// ----- The client -----

/// The client's shared state. Token `i` is connection `i`; each connection has one I/O in
/// flight at a time: connect, then write, read, write, read, ...
struct Client {
    stop: AtomicBool,
    /// The sequence number of the message each connection has in flight.
    seq: Vec<AtomicU64>,
    /// Echoes that came back intact.
    messages: AtomicU64,
    /// Echoes that came back wrong.
    mismatches: AtomicU64,
    /// Connections that ended other than by our close after the time was up.
    failures: AtomicU64,
    /// Connections not closed yet.
    open: AtomicUsize,
    tally: Tally,
}

/// The message `seq` of connection `conn`: both numbers, then a pattern derived from them.
fn message(conn: u64, seq: u64) -> [u8; MSG_LEN] {
    let mut m = [0; MSG_LEN];
    m[..8].copy_from_slice(&conn.to_le_bytes());
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut x = conn.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    for b in &mut m[16..] {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        *b = (x >> 56) as u8;
    }
    m
}

impl Client {
    fn handle(&self, port: &Port, mut c: Completion) {
        self.tally.count(c.status());
        let Some(isb) = c.isb().cloned() else { return };
        let conn = c.token();
        let seq = &self.seq[conn as usize];
        match (c.op(), c.status()) {
            (Op::Connect, Status::Ok) => {
                self.send(port, &isb, message(conn, 0).to_vec());
            }
            (Op::Write, Status::Ok) => {
                // The message is out: read the echo into the same buffer.
                let buf = c.take_buffer().expect("a write gives its buffer back");
                if !start(port, &isb, Request::read_exact(buf)) {
                    self.failures.fetch_add(1, Relaxed);
                }
            }
            (Op::Read, Status::Ok) => {
                let n = seq.load(Relaxed);
                if c.data() != message(conn, n) {
                    eprintln!("\ndemo: connection {conn}: echo {n} came back wrong");
                    self.mismatches.fetch_add(1, Relaxed);
                    close(port, &isb);
                    return;
                }
                self.messages.fetch_add(1, Relaxed);
                if self.stop.load(Relaxed) {
                    close(port, &isb);
                    return;
                }
                seq.store(n + 1, Relaxed);
                let mut buf = c.take_buffer().expect("a read gives its buffer back");
                buf.copy_from_slice(&message(conn, n + 1));
                self.send(port, &isb, buf);
            }
            (Op::Close, _) => {
                self.open.fetch_sub(1, Relaxed);
            }
            (op, status) => {
                // Eof, Abandoned, Failed, TimedOut, or Cancelled by a shutdown.
                match c.result() {
                    Err(e) => eprintln!("\ndemo: connection {conn}: {op} ended {status:?}: {e:#}"),
                    Ok(n) => eprintln!("\ndemo: connection {conn}: {op} ended {status:?} after {n} bytes"),
                }
                self.failures.fetch_add(1, Relaxed);
                close(port, &isb);
            }
        }
    }

    fn send(&self, port: &Port, isb: &Isb, msg: Vec<u8>) {
        if !start(port, isb, Request::write(msg)) {
            self.failures.fetch_add(1, Relaxed);
        }
    }
}
