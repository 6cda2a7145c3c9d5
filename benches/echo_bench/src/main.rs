//! Echo benchmark: cport beside tokio, a raw epoll loop (the floor) and thread-per-connection,
//! each driven by the same closed-loop client. See issue 4.
//!
//! ```text
//! cargo build --release --example echo_server -p cport
//! cargo run --release -p cport-echo-bench -- [--quick] [--secs S] [--rounds R] [--out DIR]
//!     [--perf] [--conns 1,16,256,4096] [--sizes 64,4096]
//!     [--servers cport,cport-inline,cport-workers,tokio,epoll,threads] [--threads 1,2,4]
//!     [--client-threads N] [--perf-conns N]
//! ```
//!
//! Each server runs in its own child process, a fresh one per measurement, so its CPU time
//! (utime+stime from /proc/<pid>/stat over the measured window) and peak RSS (VmHWM) are its
//! own. Every server prints `listening <addr>` first. Most are this binary re-executed as
//! `echo_bench serve <kind> <threads>`; two are programs of their own, which the bench runs but
//! does not build (it refuses to start without them, see `server::external`):
//!
//! - `cport` is the shipped example `examples/echo_server.rs`, what a user of cport writes
//!   first: `target/release/examples/echo_server 127.0.0.1:0 --threads <T>` (`Port::new()`, no
//!   workers, T handler threads in `next_completion`, reads and writes through the queue).
//!   Build it with `cargo build --release --example echo_server -p cport`; a binary older than
//!   `examples/echo_server.rs` or anything in `src/` is refused, so the numbers are always the
//!   current code's. `$CPORT_ECHO_SERVER` overrides the path.
//! - `cport-c` is the C echo server on cport's C API, `target/c/echo_server 127.0.0.1:0 <T>`,
//!   built by `examples/c/build.sh` (only a warning when stale). Opt-in (`--servers`).
//!
//! The others: `cport-inline` is the tuned server of `server.rs` (no workers, T threads in
//! `next_completion`, `start_io_inline` and a spare buffer per connection, so an I/O that
//! finishes at once is handled without a queue trip and no allocation once warm);
//! `cport-workers` the same with as many dedicated workers as handlers; `tokio`, `epoll` (one
//! thread, edge-triggered, the floor) and `threads` (a thread per connection). T is the number
//! of CPUs, or, with `--threads 1,2,4`, each of the listed counts in turn for `cport` and
//! `cport-inline`, as servers of their own labelled `cport/1t`, `cport/2t`, ... (to check a
//! latency target at several thread counts in one run).
//!
//! The client lives in this process: N threads (default 1), each an edge-triggered epoll loop
//! over its share of the C connections, each connection sending S bytes and waiting for the
//! whole echo, recording the round trip in a histogram (`hist.rs`, which also keeps the exact
//! maximum). Per measurement: connect all C, warm up 0.3 s, measure for S seconds. The report
//! gives p50, p99, p99.9 and the maximum round trip (the longest any message waited), and the
//! maximum of every round in echo_rounds.csv. The client's own CPU is reported beside every
//! ratio: a client near a whole core per thread is the bottleneck, and then the ratio says
//! little about the servers.
//!
//! Matrix: connections {1, 16, 256, 4096} x sizes {64 B, 4096 B} x servers, plus the
//! oversubscription cells (256 connections, 64 B, `cport` with 2, 8 and 32 threads in
//! `next_completion`). Rounds are interleaved (round 1 runs every server on every cell, then
//! round 2 ...) and the order of the servers within a cell rotates from round to round, so no
//! server always runs first or last; the report gives the median over rounds and how many
//! rounds ran and were kept (and, for the maximum, the worst round too). A failed round is
//! reported, and makes the command exit non-zero. The headline ratios (over tokio and epoll)
//! are `cport`'s (with `--threads`, the first listed count's).
//!
//! `--perf` also attaches `perf stat -e raw_syscalls:sys_enter,context-switches,
//! syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait` (and epoll_pwait/epoll_pwait2) to
//! each server at 16 connections, 64 B, in extra runs outside the matrix, and reports
//! syscalls, context switches, futex calls and epoll_wait calls per message (a tracepoint the
//! kernel lacks is reported as n/a).
//!
//! The tuned servers (`cport-inline`, `cport-workers`) answer `stats` on stdin with cport's
//! counters (`server::COUNTERS`), read before and after the window: the report gives each per
//! message.
//!
//! `cport-c` is the C API's cost made visible: the same configuration as `cport-inline` (no
//! workers, as many threads in `cport_next_completion`, the inline read/write path and
//! TCP_NODELAY); the report gives its CPU per message over `cport-inline`'s per cell.
//!
//! Output in `results/` (or --out): echo.md, echo.csv, echo_rounds.csv, echo.svg (64 B) and
//! echo_4096.svg (4096 B).

mod client;
mod hist;
mod perf;
mod report;
mod server;
mod sys;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use client::Client;
use hist::Hist;

const WARMUP: Duration = Duration::from_millis(300);
/// How long a server may take to print its address.
const STARTUP: Duration = Duration::from_secs(10);
const OVERSUB_THREADS: [usize; 3] = [2, 8, 32];

const USAGE: &str = "usage: echo_bench [--quick] [--secs S] [--rounds R] [--out DIR] [--perf]
                  [--conns 1,16,256,4096] [--sizes 64,4096] [--servers LIST] [--threads LIST]
                  [--client-threads N] [--perf-conns N]
       --servers: any of cport, cport-inline, cport-workers, cport-c, tokio, epoll, threads
                (default: all but cport-c).
                cport is the shipped example target/release/examples/echo_server: build it
                first with `cargo build --release --example echo_server -p cport` (a binary
                older than examples/echo_server.rs or src/ is refused).
                cport-inline is the tuned server (start_io_inline, spare buffers, no workers);
                cport-workers the same with workers.
                cport-c is the C echo server target/c/echo_server: build it first with
                examples/c/build.sh
       --threads 1,2,4: run cport and cport-inline with each of these numbers of threads in
                next_completion, as servers of their own (cport/1t, cport/2t, ...); default:
                one server each, with as many threads as CPUs
       --quick: 1 s per measurement, 1 round, 64 B messages only (about 45 s in all)
       --perf:  also measure syscalls, context switches, futex and epoll_wait calls per message
                with perf stat (16 connections, 64 B, every server, in extra runs)
       --client-threads N: drive the servers with N client threads (default 1)
       --perf-conns N: connections of the perf runs (default 16)";

/// One server configuration: which kind, how many `next_completion` threads (the cport kinds
/// only; 0 for the others).
#[derive(Clone, Debug)]
pub struct Server {
    pub label: String,
    pub kind: &'static str,
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub conns: usize,
    pub size: usize,
}

/// What one measurement gave.
#[derive(Clone, Debug)]
pub struct Measure {
    pub msgs: u64,
    pub secs: f64,
    pub msgs_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// The longest round trip of the window, exactly.
    pub max_us: f64,
    pub cpu_us_per_msg: f64,
    /// CPU of the client threads per round trip (to see whether the client is the bottleneck).
    pub client_us_per_msg: f64,
    /// CPU of the client threads over the window, in cores (1.0: one core busy all the time).
    pub client_cores: f64,
    /// CPU cores busy with other work on the machine during the window (other engineers'
    /// jobs): machine busy time minus this process and the server, over the window.
    pub other_cores: f64,
    pub rss_kib: u64,
    /// cport's counters (`server::COUNTERS`) over the window, per message (cport servers).
    pub per_msg: Option<Vec<f64>>,
}

/// Every round of one server on one cell.
pub struct Entry {
    pub cell: Cell,
    pub server: Server,
    pub oversub: bool,
    pub rounds: Vec<Result<Measure, String>>,
}

/// Syscalls, context switches, futex and epoll_wait calls per message of one server.
pub struct PerfRow {
    pub server: String,
    pub cell: Cell,
    pub result: Result<(Measure, perf::Counts), String>,
}

pub struct Config {
    pub secs: f64,
    pub rounds: usize,
    pub out: PathBuf,
    pub perf: bool,
    pub conns: Vec<usize>,
    pub sizes: Vec<usize>,
    pub servers: Vec<String>,
    pub quick: bool,
    pub client_threads: usize,
    pub perf_conns: usize,
    /// `--threads`: the thread counts of the `server::THREADED_KINDS`, one server each.
    pub threads: Option<Vec<usize>>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let kind = args.get(1).map_or("", String::as_str);
        let threads = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(0);
        return match server::main(kind, threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo_bench serve {kind}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match parse_args(&args) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echo_bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let command = format!(
        "cargo run --release -p cport-echo-bench --{}",
        args.iter().map(|a| format!(" {a}")).collect::<String>()
    );
    match bench(&cfg, &command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_list(v: Option<&String>, what: &str) -> Result<Vec<usize>, String> {
    let v = v.ok_or(format!("{what} needs a value"))?;
    v.split(',').map(|x| x.trim().parse().ok().filter(|&n: &usize| n > 0).ok_or(format!("bad {what} {x:?}"))).collect()
}

fn parse_args(args: &[String]) -> Result<Option<Config>, String> {
    let mut cfg = Config {
        secs: 2.0,
        rounds: 3,
        out: PathBuf::from("results"),
        perf: false,
        conns: vec![1, 16, 256, 4096],
        sizes: vec![64, 4096],
        // cport-c needs a C build of its own (examples/c/build.sh): only when asked for.
        servers: server::KINDS.iter().filter(|&&k| k != server::C_KIND).map(|s| s.to_string()).collect(),
        quick: false,
        client_threads: 1,
        perf_conns: 16,
        threads: None,
    };
    let (mut secs, mut rounds, mut sizes) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => cfg.quick = true,
            "--perf" => cfg.perf = true,
            "--secs" => {
                let v = it.next().ok_or("--secs needs a value")?;
                secs =
                    Some(v.parse().ok().filter(|&s: &f64| s > 0.0 && s <= 600.0).ok_or(format!("bad --secs {v:?}"))?);
            }
            "--rounds" => {
                let v = it.next().ok_or("--rounds needs a value")?;
                rounds = Some(
                    v.parse().ok().filter(|&r: &usize| (1..=100).contains(&r)).ok_or(format!("bad --rounds {v:?}"))?,
                );
            }
            "--out" => cfg.out = PathBuf::from(it.next().ok_or("--out needs a value")?),
            "--perf-conns" => {
                let v = it.next().ok_or("--perf-conns needs a value")?;
                cfg.perf_conns = v.parse().ok().filter(|&n: &usize| n > 0).ok_or(format!("bad --perf-conns {v:?}"))?;
            }
            "--client-threads" => {
                let v = it.next().ok_or("--client-threads needs a value")?;
                cfg.client_threads = v
                    .parse()
                    .ok()
                    .filter(|&n: &usize| (1..=64).contains(&n))
                    .ok_or(format!("bad --client-threads {v:?}"))?;
            }
            "--conns" => cfg.conns = parse_list(it.next(), "--conns")?,
            "--threads" => {
                let mut list = Vec::new();
                for t in parse_list(it.next(), "--threads")? {
                    if t > 1024 {
                        return Err(format!("bad --threads {t} (at most 1024)"));
                    }
                    if !list.contains(&t) {
                        list.push(t);
                    }
                }
                cfg.threads = Some(list);
            }
            "--sizes" => sizes = Some(parse_list(it.next(), "--sizes")?),
            "--servers" => {
                let v = it.next().ok_or("--servers needs a value")?;
                cfg.servers = Vec::new();
                for s in v.split(',').map(str::trim) {
                    if !server::KINDS.contains(&s) {
                        return Err(format!("unknown server {s:?} (known: {})", server::KINDS.join(", ")));
                    }
                    if !cfg.servers.iter().any(|x| x == s) {
                        cfg.servers.push(s.to_string());
                    }
                }
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if cfg.quick {
        cfg.secs = 1.0;
        cfg.rounds = 1;
        cfg.sizes = vec![64];
    }
    cfg.secs = secs.unwrap_or(cfg.secs);
    cfg.rounds = rounds.unwrap_or(cfg.rounds);
    cfg.sizes = sizes.unwrap_or(cfg.sizes);
    if cfg.threads.is_some() && !cfg.servers.iter().any(|s| server::THREADED_KINDS.contains(&s.as_str())) {
        return Err(format!(
            "--threads applies to {}, and --servers has neither",
            server::THREADED_KINDS.join(" and ")
        ));
    }
    Ok(Some(cfg))
}

/// The servers of the main matrix, in the order of `--servers`: one per kind, with `n`
/// threads for the cport kinds, except that with `--threads` each kind of
/// `server::THREADED_KINDS` gives one server per listed count, labelled `<kind>/<T>t`.
fn servers(cfg: &Config, n: usize) -> Vec<Server> {
    let mut out = Vec::new();
    for name in &cfg.servers {
        let kind = kind_of(name);
        match &cfg.threads {
            Some(list) if server::THREADED_KINDS.contains(&kind) => {
                out.extend(list.iter().map(|&t| Server { label: format!("{kind}/{t}t"), kind, threads: t }));
            }
            _ => {
                let threads = if kind.starts_with("cport") { n } else { 0 };
                out.push(Server { label: kind.to_string(), kind, threads });
            }
        }
    }
    out
}

fn kind_of(name: &str) -> &'static str {
    server::KINDS.iter().copied().find(|k| *k == name).unwrap_or(server::EXAMPLE_KIND)
}

/// A server child process; killed and reaped on drop, whatever happened.
struct ServerProc {
    child: Child,
    addr: SocketAddr,
    /// Lines the server prints after its address (its `stats` replies).
    lines: crossbeam_channel::Receiver<std::io::Result<String>>,
    stdin: Option<std::process::ChildStdin>,
    /// A tuned cport server, which answers `stats`.
    counts: bool,
}

impl ServerProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(server: &Server, log: &Path) -> Result<ServerProc, String> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = if let Some(ext) = server::external(server.kind) {
            // The example (`echo_server ADDR --threads T`) or the C echo server (`echo_server
            // ADDR T`): no workers either way.
            let mut cmd = Command::new(&ext.exe);
            cmd.args(ext.args(server.threads));
            // They do not ask for it themselves (`serve` does, `sys::die_with_parent`): the
            // kernel kills them if the bench dies without running `Drop`.
            // SAFETY: the closure only calls prctl, which is async-signal-safe and allocates nothing.
            unsafe {
                cmd.pre_exec(|| {
                    sys::die_with_parent();
                    Ok(())
                });
            }
            cmd
        } else {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let mut cmd = Command::new(exe);
            cmd.args(["serve", server.kind, &server.threads.to_string()]);
            cmd
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("spawning the {} server: {e}", server.label))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let (tx, rx) = crossbeam_channel::unbounded();
        // From here on, dropping `proc` kills the child, on every path.
        let mut proc = ServerProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines: rx,
            stdin,
            counts: server::reports_stats(server.kind),
        };
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let line = match proc.lines.recv_timeout(STARTUP) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(format!("{} server stdout: {e}", server.label)),
            Err(_) => return Err(format!("{} server printed no address within {STARTUP:?}", server.label)),
        };
        let addr = line.trim().strip_prefix("listening ").and_then(|a| a.parse().ok());
        match addr {
            Some(a) => proc.addr = a,
            None => {
                let status = proc.child.try_wait().ok().flatten();
                return Err(format!("{} server said {:?} (exit status {status:?})", server.label, line.trim()));
            }
        }
        Ok(proc)
    }

    /// The server's cport counters (`server::COUNTERS`), for a tuned cport server.
    fn stats(&mut self) -> Result<Option<Vec<u64>>, String> {
        if !self.counts {
            return Ok(None);
        }
        let stdin = self.stdin.as_mut().ok_or("the server's stdin is closed")?;
        stdin.write_all(b"stats\n").and_then(|()| stdin.flush()).map_err(|e| format!("asking for stats: {e}"))?;
        loop {
            match self.lines.recv_timeout(STARTUP) {
                Ok(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("stats ") {
                        let v: Vec<u64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
                        if v.len() == server::COUNTERS.len() {
                            return Ok(Some(v));
                        }
                        return Err(format!("a stats line the bench cannot read: {line:?}"));
                    }
                }
                Ok(Err(e)) => return Err(format!("server stdout: {e}")),
                Err(_) => return Err(format!("no stats from the server within {STARTUP:?}")),
            }
        }
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!("server exited: {st}")),
            Err(e) => Err(format!("server wait: {e}")),
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client thread did over the measured window.
struct Share {
    msgs: u64,
    hist: Hist,
    cpu_ns: u64,
}

/// One measurement: a fresh server, C connections shared by `threads` client threads,
/// warm-up, the measured window.
fn measure(
    server: &Server,
    cell: Cell,
    secs: f64,
    threads: usize,
    log: &Path,
    with_perf: bool,
) -> Result<(Measure, Option<perf::Counts>), String> {
    let mut srv = ServerProc::spawn(server, log)?;
    let pid = srv.pid();
    let threads = threads.min(cell.conns).max(1);
    let mut clients = Vec::with_capacity(threads);
    for t in 0..threads {
        let conns = cell.conns / threads + usize::from(t < cell.conns % threads);
        clients.push(Client::connect(srv.addr, conns, cell.size)?);
    }
    // perf attaches during the warm-up, so the pause its start causes is over by the window.
    let perf =
        if with_perf { Some(perf::Perf::attach(pid, &log.with_file_name(format!("perf-{pid}")))?) } else { None };
    // Every client thread warms up, waits for the window to open (`start`), measures, and
    // reports; the main thread opens the window once all are warm.
    let window = Duration::from_secs_f64(secs);
    let start = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let start = start.clone();
            std::thread::spawn(move || -> Result<Share, String> {
                let warm = client.run(WARMUP, None);
                start.wait();
                warm?;
                let cpu0 = sys::thread_cpu_ns();
                let mut hist = Hist::new();
                let msgs = client.run(window, Some(&mut hist))?;
                Ok(Share { msgs, hist, cpu_ns: sys::thread_cpu_ns().saturating_sub(cpu0) })
            })
        })
        .collect();
    start.wait();
    if let Some(p) = &perf {
        p.enable()?;
    }
    let stats0 = srv.stats()?;
    let cpu0 = sys::proc_cpu_ns(pid).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let me = std::process::id();
    let (busy0, me0) = (sys::machine_busy_ns().unwrap_or(0), sys::proc_cpu_ns(me).unwrap_or(0));
    let t0 = Instant::now();
    let shares: Vec<Result<Share, String>> =
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect();
    let elapsed = t0.elapsed().as_secs_f64();
    let stats1 = srv.stats()?;
    let cpu1 = sys::proc_cpu_ns(pid).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let (busy1, me1) = (sys::machine_busy_ns().unwrap_or(0), sys::proc_cpu_ns(me).unwrap_or(0));
    let counts = match perf {
        Some(p) => Some(p.finish()?),
        None => None,
    };
    let ours = cpu1.saturating_sub(cpu0) + me1.saturating_sub(me0);
    let other_cores = busy1.saturating_sub(busy0).saturating_sub(ours) as f64 / 1e9 / elapsed;
    let rss_kib = sys::proc_hwm_kib(pid).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    srv.check_alive()?;
    drop(srv);
    let (mut msgs, mut client_ns, mut hist) = (0, 0, Hist::new());
    for share in shares {
        let share = share?;
        msgs += share.msgs;
        client_ns += share.cpu_ns;
        hist.merge(&share.hist);
    }
    if msgs == 0 {
        return Err("no round trip completed".into());
    }
    let m = Measure {
        msgs,
        secs: elapsed,
        msgs_per_s: msgs as f64 / elapsed,
        p50_us: hist.quantile(0.50) as f64 / 1000.0,
        p99_us: hist.quantile(0.99) as f64 / 1000.0,
        p999_us: hist.quantile(0.999) as f64 / 1000.0,
        max_us: hist.max() as f64 / 1000.0,
        cpu_us_per_msg: cpu1.saturating_sub(cpu0) as f64 / 1000.0 / msgs as f64,
        client_us_per_msg: client_ns as f64 / 1000.0 / msgs as f64,
        client_cores: client_ns as f64 / 1e9 / elapsed,
        other_cores,
        rss_kib,
        per_msg: match (stats0, stats1) {
            (Some(a), Some(b)) => {
                Some(a.iter().zip(&b).map(|(a, b)| b.saturating_sub(*a) as f64 / msgs as f64).collect())
            }
            _ => None,
        },
    };
    Ok((m, counts))
}

fn bench(cfg: &Config, command: &str) -> Result<(), String> {
    // The soft fd limit raised to the hard one (or as it was, if that fails).
    let nofile =
        cport_testkit::raise_nofile(libc::RLIM_INFINITY).or_else(|_| cport_testkit::nofile()).map_or(0, |l| l.soft);
    let max_conns = cfg.conns.iter().copied().max().unwrap_or(0);
    if (nofile as usize) < max_conns + 64 {
        eprintln!("echo_bench: warning: RLIMIT_NOFILE is {nofile}, too low for {max_conns} connections");
    }
    for kind in &cfg.servers {
        if let Some(ext) = server::external(kind) {
            check_external(&ext)?;
        }
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    let log = cfg.out.join("servers.log");
    let _ = std::fs::write(&log, "");
    let n = sys::nproc();

    // The jobs of one round, in order: every server on cell 1, then cell 2, ...
    let matrix = servers(cfg, n);
    let mut entries: Vec<Entry> = Vec::new();
    for &size in &cfg.sizes {
        for &conns in &cfg.conns {
            for server in &matrix {
                let cell = Cell { conns, size };
                entries.push(Entry { cell, server: server.clone(), oversub: false, rounds: Vec::new() });
            }
        }
    }
    // Oversubscription: the example with more threads in next_completion than CPUs.
    let oversub_cell = Cell { conns: 256, size: 64 };
    let example = server::EXAMPLE_KIND;
    if cfg.servers.iter().any(|s| s == example) && cfg.conns.contains(&256) && cfg.sizes.contains(&64) {
        for t in OVERSUB_THREADS {
            let server = Server { label: format!("{example}-{t}"), kind: example, threads: t };
            entries.push(Entry { cell: oversub_cell, server, oversub: true, rounds: Vec::new() });
        }
    }
    let perf_servers: Vec<&Server> = if cfg.perf { matrix.iter().collect() } else { Vec::new() };
    let perf_events = cfg.perf.then(perf::events);
    if let Some(ev) = &perf_events {
        if !ev.contains("sys_enter_futex") || !ev.contains("sys_enter_epoll") {
            eprintln!("echo_bench: warning: perf cannot count every tracepoint here; counting {ev} (the rest: n/a)");
        }
    }
    let total = (entries.len() * cfg.rounds + perf_servers.len()) as u64;
    let per_job = cfg.secs + WARMUP.as_secs_f64() + 0.3;
    eprintln!(
        "echo_bench: {} measurements of {:.1} s (+0.3 s warm-up) each, about {:.0} s; servers in child processes, log in {}",
        total,
        cfg.secs,
        total as f64 * per_job,
        log.display()
    );

    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {pos}/{len} eta {eta} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let load_start = sys::loadavg();
    let mut failed = 0;
    for round in 1..=cfg.rounds {
        for i in round_order(&entries, round) {
            let e = &mut entries[i];
            pb.set_message(format!(
                "round {round}/{}: {} at {} conns x {} B",
                cfg.rounds, e.server.label, e.cell.conns, e.cell.size
            ));
            let r = measure(&e.server, e.cell, cfg.secs, cfg.client_threads, &log, false).map(|(m, _)| m);
            if let Err(why) = &r {
                failed += 1;
                let (label, conns, size) = (&e.server.label, e.cell.conns, e.cell.size);
                pb.suspend(|| eprintln!("FAILED: {label} at {conns} conns x {size} B, round {round}: {why}"));
            }
            e.rounds.push(r);
            pb.inc(1);
        }
    }
    let mut perf_rows = Vec::new();
    let perf_cell = Cell { conns: cfg.perf_conns, size: 64 };
    for server in perf_servers {
        let label = &server.label;
        pb.set_message(format!("perf stat: {label} at {} conns x 64 B", cfg.perf_conns));
        let r = measure(server, perf_cell, cfg.secs, cfg.client_threads, &log, true)
            .map(|(m, c)| (m, c.expect("perf was asked for")));
        if let Err(why) = &r {
            failed += 1;
            pb.suspend(|| eprintln!("FAILED: perf run of {label}: {why}"));
        }
        perf_rows.push(PerfRow { server: label.clone(), cell: perf_cell, result: r });
        pb.inc(1);
    }
    pb.finish_and_clear();

    let meta = report::Meta {
        load: format!("{} at the start, {} at the end", load_start, sys::loadavg()),
        date: sys::utc_now(),
        machine: sys::machine(),
        command: command.to_string(),
        secs: cfg.secs,
        rounds: cfg.rounds,
        workers: n,
        wall_secs: started.elapsed().as_secs_f64(),
        client_threads: cfg.client_threads,
        threads: cfg.threads.clone(),
        perf_events,
    };
    let md = report::markdown(&meta, &entries, &perf_rows);
    let write = |name: &str, text: &str| {
        let p = cfg.out.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("echo.md", &md)?;
    write("echo.csv", &report::csv(&entries))?;
    write("echo_rounds.csv", &report::rounds_csv(&entries))?;
    let mut charts = Vec::new();
    for (size, name) in [(64, "echo.svg"), (4096, "echo_4096.svg")] {
        if entries.iter().any(|e| e.cell.size == size && !e.oversub) {
            let p = cfg.out.join(name);
            match report::svg(&p, &entries, size) {
                Ok(()) => charts.push(p.display().to_string()),
                Err(e) => eprintln!("echo_bench: chart {}: {e}", p.display()),
            }
        }
    }
    println!("{md}");
    eprintln!("echo_bench: wrote {}/echo.md, echo.csv, echo_rounds.csv {}", cfg.out.display(), charts.join(" "));
    if failed > 0 {
        return Err(format!(
            "{failed} measurement(s) failed (see above and {}); their cells lack rounds",
            log.display()
        ));
    }
    Ok(())
}

/// Fails unless the program of an external server kind (`server::external`: the example, the
/// C echo server) is built; when it is older than its sources, fails for the example (cargo
/// rebuilds it in seconds, and a stale one would measure other code) and warns for the C
/// server. The bench builds neither: run the build command it names, then the bench.
fn check_external(ext: &server::External) -> Result<(), String> {
    let exe = &ext.exe;
    let built = match std::fs::metadata(exe).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => {
            return Err(format!(
                "{}: {e}: the {} server is {}; build it first with `{}` (from the workspace root), or set {} to \
                 its path",
                exe.display(),
                ext.kind,
                ext.what,
                ext.build,
                ext.env
            ));
        }
    };
    let newest = ext.sources.iter().filter_map(|p| newest_mtime(p)).max_by_key(|(t, _)| *t);
    if let Some((_, source)) = newest.filter(|(t, _)| *t > built) {
        let msg = format!(
            "{} is older than its sources ({} changed since): run `{}` to measure the current code",
            exe.display(),
            source.display(),
            ext.build
        );
        if ext.stale_fails {
            return Err(format!("the {} server: {msg}", ext.kind));
        }
        eprintln!("echo_bench: warning: {msg}");
    }
    Ok(())
}

/// The latest modification time of `p` or of any file under it, and which file has it.
fn newest_mtime(p: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let meta = std::fs::metadata(p).ok()?;
    let own = meta.modified().ok().map(|t| (t, p.to_path_buf()));
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(p).ok()?.filter_map(|e| e.ok()).filter_map(|e| newest_mtime(&e.path()));
    children.chain(own).max_by_key(|(t, _)| *t)
}

/// The entries of one round in the order to run them: cell after cell as listed, the servers
/// within a cell rotated by the round number, so that each server runs in each position.
fn round_order(entries: &[Entry], round: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(entries.len());
    let mut i = 0;
    while i < entries.len() {
        let (cell, oversub) = (entries[i].cell, entries[i].oversub);
        let group: Vec<usize> =
            (i..entries.len()).take_while(|&j| entries[j].cell == cell && entries[j].oversub == oversub).collect();
        let k = group.len();
        order.extend((0..k).map(|n| group[(n + round - 1) % k]));
        i += k;
    }
    order
}
