//! Scale: heap bytes of cport bookkeeping per assigned idle connection, and accepts per second
//! for a burst of connects.
//!
//! ```text
//! cargo run --release --example scale_bench -- [--conns N[,N...]] [--accepts N] [--threads N]
//! ```
//!
//! Defaults: `--conns 10000,100000 --accepts 10000`, worker threads = CPUs.
//!
//! **Idle connections.** The soft `RLIMIT_NOFILE` is raised to the hard limit first. For each
//! N, N stream drivers are built *before* measuring: N socketpairs (port end plus peer end, 2
//! fds each) when the limit allows, otherwise N `dup`s of one end of one socketpair (1 fd
//! each; every dup is its own fd, epoll registration and cport stream, so cport's bookkeeping
//! is the same). If even N + 64 fds do not fit, N is scaled down and the table says so. Then
//! only the N `Port::assign` calls run between two readings of a counting global allocator
//! (`#[global_allocator]` wrapping `System`): live heap bytes as requested (`Layout::size`),
//! as malloc really reserved (`malloc_usable_size`; glibc adds an 8-byte header to each
//! chunk), and allocations. The connections are idle: assigned, no I/O pending, no deadline.
//! Kernel memory (the socket, epoll's `epitem`) is not counted: it is not cport's heap.
//! The bytes include the stream table's share (a `Vec` that grows by doubling, so the figure
//! depends a little on where N falls between powers of two). A histogram of the allocation
//! sizes made during the assigns shows what each connection costs.
//!
//! **Accept burst.** A `TcpListener` on 127.0.0.1 (backlog raised to `somaxconn`) is assigned
//! to the port with one accept pending. A client thread connects `--accepts` times as fast as
//! it can, closing each socket at once. The benchmark's thread loops on `next_completion`:
//! on an accept it starts the next accept, assigns the new stream and closes it; it stops at
//! the last `Close` completion. The same burst against a blocking `std::net` accept loop (accept,
//! drop) is the baseline.

use std::alloc::{GlobalAlloc, Layout, System};
use std::error::Error;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cport::{Isb, Op, Port, Status};

// ---------------------------------------------------------------------------------------------
// The counting allocator.

/// Live bytes as requested.
static LIVE: AtomicI64 = AtomicI64::new(0);
/// Live bytes as malloc reserved them (`malloc_usable_size`).
static USABLE: AtomicI64 = AtomicI64::new(0);
/// Allocations made (not minus frees).
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Whether the size histogram records.
static TRACK: AtomicBool = AtomicBool::new(false);
/// Largest size the histogram keeps apart; larger ones go in the last bucket.
const HIST_MAX: usize = 4096;
/// Allocations made while tracking, by requested size.
static HIST: [AtomicU64; HIST_MAX + 1] = [const { AtomicU64::new(0) }; HIST_MAX + 1];
/// Bytes of the allocations in the last bucket (sizes `>= HIST_MAX`) while tracking.
static BIG_BYTES: AtomicU64 = AtomicU64::new(0);

/// Counts one allocation (or growth by realloc to `size`) in the histogram, if tracking.
fn histogram(size: usize) {
    if TRACK.load(Ordering::Relaxed) {
        HIST[size.min(HIST_MAX)].fetch_add(1, Ordering::Relaxed);
        if size >= HIST_MAX {
            BIG_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        }
    }
}

struct Counting;

fn usable(p: *mut u8) -> i64 {
    // SAFETY: `p` is a live block from the system allocator (glibc malloc on Linux), which is
    // what malloc_usable_size takes.
    unsafe { libc::malloc_usable_size(p.cast()) as i64 }
}

fn record(p: *mut u8, size: usize) {
    LIVE.fetch_add(size as i64, Ordering::Relaxed);
    USABLE.fetch_add(usable(p), Ordering::Relaxed);
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    histogram(size);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            record(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        USABLE.fetch_sub(usable(ptr), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_usable = usable(ptr);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            USABLE.fetch_add(usable(p) - old_usable, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            histogram(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Heap {
    live: i64,
    usable: i64,
    allocs: u64,
}

fn heap() -> Heap {
    Heap {
        live: LIVE.load(Ordering::SeqCst),
        usable: USABLE.load(Ordering::SeqCst),
        allocs: ALLOCS.load(Ordering::SeqCst),
    }
}

/// VmRSS of this process in bytes.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// fd limit.

/// fds kept free for the port, std and the accept benchmark.
const FD_MARGIN: u64 = 64;

// ---------------------------------------------------------------------------------------------
// Idle connections.

struct IdleRow {
    asked: usize,
    conns: usize,
    mode: &'static str,
    delta: Heap,
    rss: i64,
    assign_ns: f64,
    hist: Vec<(usize, u64)>,
    big_bytes: u64,
}

fn idle(asked: usize, limit: u64, threads: usize, force_pairs: bool) -> Result<IdleRow, Box<dyn Error>> {
    let (conns, pairs) = if force_pairs || (2 * asked as u64 + FD_MARGIN) <= limit {
        let fit = (limit.saturating_sub(FD_MARGIN) / 2) as usize;
        (asked.min(fit), true)
    } else {
        (asked.min(limit.saturating_sub(FD_MARGIN) as usize), false)
    };
    let port = Port::builder().threads(threads).build()?;
    // Everything the measurement must not count is made first.
    let (a, _b) = UnixStream::pair()?;
    let mut peers: Vec<UnixStream> = Vec::with_capacity(if pairs { conns } else { 0 });
    let mut drivers: Vec<cport::driver::UnixStream> = Vec::with_capacity(conns);
    for _ in 0..conns {
        let ours = if pairs {
            let (x, y) = UnixStream::pair()?;
            peers.push(y);
            x
        } else {
            a.try_clone()?
        };
        drivers.push(cport::driver::UnixStream::new(ours));
    }
    let mut isbs: Vec<Isb> = Vec::with_capacity(conns);
    for h in &HIST {
        h.store(0, Ordering::Relaxed);
    }
    BIG_BYTES.store(0, Ordering::Relaxed);
    let (h0, r0) = (heap(), rss());
    TRACK.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    for (i, d) in drivers.drain(..).enumerate() {
        isbs.push(port.assign(d, i as u64)?);
    }
    let took = t0.elapsed();
    TRACK.store(false, Ordering::SeqCst);
    let (h1, r1) = (heap(), rss());
    assert_eq!(port.streams(), conns);
    let mut hist: Vec<(usize, u64)> =
        HIST.iter().enumerate().map(|(size, n)| (size, n.load(Ordering::Relaxed))).filter(|&(_, n)| n > 0).collect();
    let big_bytes = BIG_BYTES.load(Ordering::Relaxed);
    hist.sort_by_key(|&(size, n)| std::cmp::Reverse(if size == HIST_MAX { big_bytes } else { size as u64 * n }));
    drop(isbs);
    drop(port);
    Ok(IdleRow {
        asked,
        conns,
        mode: if pairs { "socketpair" } else { "dup" },
        delta: Heap { live: h1.live - h0.live, usable: h1.usable - h0.usable, allocs: h1.allocs - h0.allocs },
        rss: r1 - r0,
        assign_ns: took.as_nanos() as f64 / conns.max(1) as f64,
        hist,
        big_bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// Accept burst.

/// A listener on 127.0.0.1 with the backlog raised to what the kernel allows.
fn listener() -> std::io::Result<TcpListener> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    // Listening again on a listening socket only changes its backlog (clamped to somaxconn).
    // SAFETY: the fd is the listener's, open for the duration of the call.
    unsafe { libc::listen(l.as_raw_fd(), 65535) };
    Ok(l)
}

/// User + system CPU time of the process (`RUSAGE_SELF`) or of the calling thread
/// (`RUSAGE_THREAD`).
fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage the call writes into.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What the client thread reports: its wall time and its own CPU time.
struct ClientRun {
    wall: Duration,
    cpu: Duration,
}

/// Starts a client thread that waits at the barrier, then connects `n` times to the
/// listener's address, closing each socket at once.
fn client(l: &TcpListener, n: usize, go: Arc<Barrier>) -> std::io::Result<thread::JoinHandle<ClientRun>> {
    let addr = l.local_addr()?;
    Ok(thread::spawn(move || {
        go.wait();
        let (t0, c0) = (Instant::now(), cpu(libc::RUSAGE_THREAD));
        for _ in 0..n {
            drop(TcpStream::connect(addr).expect("connect"));
        }
        ClientRun { wall: t0.elapsed(), cpu: cpu(libc::RUSAGE_THREAD) - c0 }
    }))
}

struct AcceptRow {
    what: &'static str,
    n: usize,
    took: Duration,
    client: ClientRun,
    /// CPU time of every thread but the client's over the burst.
    server_cpu: Duration,
}

fn accept_cport(n: usize, threads: usize) -> Result<AcceptRow, Box<dyn Error>> {
    let port = Port::builder().threads(threads).build()?;
    let l = listener()?;
    let go = Arc::new(Barrier::new(2));
    let h = client(&l, n, go.clone())?;
    let lis = port.assign(cport::driver::TcpListener::new(l), u64::MAX)?;
    port.accept(&lis).map_err(|e| e.to_string())?;
    go.wait();
    let (t0, c0) = (Instant::now(), cpu(libc::RUSAGE_SELF));
    let (mut accepted, mut closed) = (0, 0);
    while closed < n {
        let mut c = port.next_completion(None)?.ok_or("no completion")?;
        match (c.op(), c.status()) {
            (Op::Accept, Status::Ok) => {
                let d = c.take_accepted().ok_or("accept without a stream")?;
                if accepted + 1 < n {
                    port.accept(&lis).map_err(|e| e.to_string())?;
                }
                let isb = port.assign(d, accepted as u64)?;
                port.close(&isb)?;
                accepted += 1;
            }
            (Op::Close, Status::Ok) => closed += 1,
            _ => return Err(format!("unexpected completion {c:?}").into()),
        }
    }
    let (took, total_cpu) = (t0.elapsed(), cpu(libc::RUSAGE_SELF) - c0);
    let client = h.join().map_err(|_| "client panicked")?;
    let server_cpu = total_cpu.saturating_sub(client.cpu);
    Ok(AcceptRow { what: "cport: accept -> assign -> close", n, took, client, server_cpu })
}

fn accept_std(n: usize) -> Result<AcceptRow, Box<dyn Error>> {
    let l = listener()?;
    let go = Arc::new(Barrier::new(2));
    let h = client(&l, n, go.clone())?;
    go.wait();
    let (t0, c0) = (Instant::now(), cpu(libc::RUSAGE_SELF));
    for _ in 0..n {
        drop(l.accept()?);
    }
    let (took, total_cpu) = (t0.elapsed(), cpu(libc::RUSAGE_SELF) - c0);
    let client = h.join().map_err(|_| "client panicked")?;
    let server_cpu = total_cpu.saturating_sub(client.cpu);
    Ok(AcceptRow { what: "std::net blocking: accept -> close", n, took, client, server_cpu })
}

// ---------------------------------------------------------------------------------------------

struct Args {
    conns: Vec<usize>,
    accepts: usize,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        conns: vec![10_000, 100_000],
        accepts: 10_000,
        threads: thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: &str| s.replace('_', "").parse::<usize>().map_err(|e| format!("{flag} {s}: {e}"));
        match flag.as_str() {
            "--conns" => a.conns = value()?.split(',').map(num).collect::<Result<_, _>>()?,
            "--accepts" => a.accepts = num(&value()?)?,
            "--threads" => a.threads = num(&value()?)?.max(1),
            "-h" | "--help" => {
                return Err("usage: scale_bench [--conns N[,N...]] [--accepts N] [--threads N]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn per(total: i64, n: usize) -> f64 {
    total as f64 / n.max(1) as f64
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    // The soft fd limit raised to the hard one.
    let lim = cport_testkit::raise_nofile(libc::RLIM_INFINITY).or_else(|e| {
        eprintln!("raising RLIMIT_NOFILE to the hard limit: {e:#}");
        cport_testkit::nofile()
    });
    let (limit, hard) = lim.map_or((1024, 1024), |l| (l.soft, l.hard));
    println!("RLIMIT_NOFILE: soft {limit}, hard {hard}; worker threads: {}", args.threads);
    let mut rows = Vec::new();
    for &n in &args.conns {
        rows.push(idle(n, limit, args.threads, false)?);
    }
    // Cross-check: real socketpairs (peer ends open) at the largest count that fits, if the
    // rows above used dups.
    if let Some(&n) = args.conns.first() {
        if rows.iter().any(|r| r.mode == "dup") {
            rows.push(idle(n, limit, args.threads, true)?);
        }
    }
    println!();
    println!("### Heap bytes of cport bookkeeping per idle connection (only the `assign` calls)");
    println!();
    println!("| connections | fds | bytes/conn requested | bytes/conn malloc usable | allocs/conn | RSS growth/conn | assign ns |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let scaled = if r.conns < r.asked {
            format!(" (asked {}; scaled down: RLIMIT_NOFILE hard {hard})", r.asked)
        } else {
            String::new()
        };
        println!(
            "| {}{scaled} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.0} |",
            r.conns,
            r.mode,
            per(r.delta.live, r.conns),
            per(r.delta.usable, r.conns),
            r.delta.allocs as f64 / r.conns.max(1) as f64,
            per(r.rss, r.conns),
            r.assign_ns,
        );
    }
    if let Some(r) = rows.first() {
        println!();
        println!(
            "Allocations during the {} assigns, by requested size (largest totals first; reallocs count at their new size):",
            r.conns
        );
        println!();
        println!("| size (B) | count | per conn | bytes/conn |");
        println!("| ---: | ---: | ---: | ---: |");
        for &(size, n) in r.hist.iter().take(8) {
            let label = if size == HIST_MAX { format!(">= {HIST_MAX}") } else { size.to_string() };
            let per_conn = n as f64 / r.conns as f64;
            let bytes = if size == HIST_MAX { r.big_bytes as f64 / r.conns as f64 } else { size as f64 * per_conn };
            println!("| {label} | {n} | {per_conn:.3} | {bytes:.1} |");
        }
    }

    let accepts = [accept_cport(args.accepts, args.threads)?, accept_std(args.accepts)?];
    println!();
    println!("### Accept burst ({} connects from one client thread, loopback TCP)", args.accepts);
    println!();
    println!("| server | accepts | time | accepts/s | server CPU/accept | client wall | client CPU/connect |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for a in &accepts {
        println!(
            "| {} | {} | {:.1} ms | {:.0} | {:.1} µs | {:.1} ms | {:.1} µs |",
            a.what,
            a.n,
            a.took.as_secs_f64() * 1e3,
            a.n as f64 / a.took.as_secs_f64(),
            a.server_cpu.as_secs_f64() * 1e6 / a.n as f64,
            a.client.wall.as_secs_f64() * 1e3,
            a.client.cpu.as_secs_f64() * 1e6 / a.n as f64,
        );
    }
    let ratio = accepts[1].took.as_secs_f64() / accepts[0].took.as_secs_f64();
    let cpu_ratio = accepts[0].server_cpu.as_secs_f64() / accepts[1].server_cpu.as_secs_f64().max(1e-9);
    println!();
    println!("cport / std: accepts/s {ratio:.2}, server CPU per accept {cpu_ratio:.2}");
    println!("(one client thread drives both servers on this machine: when it is the bottleneck, accepts/s is");
    println!("its connect rate, and server CPU per accept is the server-side cost to compare.)");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
