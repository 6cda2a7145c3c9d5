//! The echo servers, each run in a child process by the hidden `serve <kind> <threads>`
//! subcommand. Each binds 127.0.0.1 on an ephemeral port with a backlog of 4096, prints
//! `listening <addr>` as its first line on stdout once it is ready, and echoes until killed.
//! Two kinds are external programs, which print the same first line (see [`external`]):
//! `cport`, the shipped example `examples/echo_server.rs` (built into
//! `target/release/examples/echo_server` by `cargo build --release --example echo_server`),
//! run as `echo_server 127.0.0.1:0 --threads <threads>`; and `cport-c`, the C echo server on
//! cport's C API (`examples/c/echo_server.c`, built into `target/c/echo_server` by
//! `examples/c/build.sh`), run as `echo_server 127.0.0.1:0 <threads>`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use cport::{Completion, ErrorKind, Isb, Op, Port, Request, Status};

use crate::sys;

/// Every server reads up to this much at a time.
const BUF: usize = 16 * 1024;
/// Listen backlog (the kernel caps it at net.core.somaxconn).
const BACKLOG: libc::c_int = 4096;

/// The server kinds: `serve` runs all but `cport` and `cport-c`, which are programs of their
/// own (see [`external`]).
pub const KINDS: [&str; 7] = ["cport", "cport-inline", "cport-workers", "cport-c", "tokio", "epoll", "threads"];

/// The kind whose server is the shipped example `examples/echo_server.rs`, not this binary.
pub const EXAMPLE_KIND: &str = "cport";

/// The kind whose server is the C echo server, not this binary.
pub const C_KIND: &str = "cport-c";

/// The tuned cport servers of this file, which answer `stats` (see [`reports_stats`]).
pub const TUNED_KINDS: [&str; 2] = ["cport-inline", "cport-workers"];

/// The kinds whose thread count `--threads LIST` varies (one server per count).
pub const THREADED_KINDS: [&str; 2] = [EXAMPLE_KIND, "cport-inline"];

/// A server kind that is a program of its own rather than this binary's `serve`.
pub struct External {
    pub kind: &'static str,
    /// The program.
    pub exe: PathBuf,
    /// What it is built from: the program is stale when any of these is newer.
    pub sources: Vec<PathBuf>,
    /// The command that builds it (from the workspace root).
    pub build: &'static str,
    /// The variable that overrides `exe`.
    pub env: &'static str,
    /// What it is, for messages.
    pub what: &'static str,
    /// Whether the bench refuses to run it when stale (else it warns): the example is rebuilt
    /// in seconds by cargo, the C server needs a C toolchain.
    pub stale_fails: bool,
}

impl External {
    /// Its arguments for a server with `threads` threads in `next_completion`.
    pub fn args(&self, threads: usize) -> Vec<String> {
        let t = threads.max(1).to_string();
        let addr = "127.0.0.1:0".to_string();
        if self.kind == C_KIND {
            vec![addr, t]
        } else {
            vec![addr, "--threads".into(), t]
        }
    }
}

/// The program that serves `kind`, when it is not this binary.
pub fn external(kind: &str) -> Option<External> {
    let root = workspace_root();
    let exe = |env: &str, default: &str| std::env::var_os(env).map_or_else(|| root.join(default), PathBuf::from);
    match kind {
        EXAMPLE_KIND => Some(External {
            kind: EXAMPLE_KIND,
            exe: exe("CPORT_ECHO_SERVER", "target/release/examples/echo_server"),
            sources: vec![root.join("examples/echo_server.rs"), root.join("src")],
            build: "cargo build --release --example echo_server -p cport",
            env: "CPORT_ECHO_SERVER",
            what: "the shipped example examples/echo_server.rs",
            stale_fails: true,
        }),
        C_KIND => Some(External {
            kind: C_KIND,
            exe: c_server(),
            sources: c_server_sources(),
            build: "examples/c/build.sh",
            env: "CPORT_C_ECHO_SERVER",
            what: "the C echo server examples/c/echo_server.c",
            stale_fails: false,
        }),
        _ => None,
    }
}

/// Where `examples/c/build.sh` puts the C echo server: `target/c/echo_server` of the workspace
/// (or `$CPORT_C_ECHO_SERVER`).
fn c_server() -> PathBuf {
    match std::env::var_os("CPORT_C_ECHO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/c/echo_server"),
    }
}

/// The workspace root (this package is `benches/echo_bench` in it).
fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The sources the C echo server is built from, to warn when the binary is older than they
/// are: the C file and the crate's `src/` (the C API and everything under it).
fn c_server_sources() -> Vec<PathBuf> {
    let root = workspace_root();
    vec![root.join("examples/c/echo_server.c"), root.join("src")]
}

/// Whether a server of `kind` answers `stats` with cport's counters (the tuned servers of
/// this file; the example and the C server do not read their stdin).
pub fn reports_stats(kind: &str) -> bool {
    TUNED_KINDS.contains(&kind)
}

/// One of cport's counters: its name (in the report, with `_` as a space) and how to read it.
pub struct Counter {
    pub name: &'static str,
    pub get: fn(&cport::Stats) -> u64,
}

/// The cport counters a server reports when the bench writes `stats` to its stdin, in the
/// order of its `stats ...` reply line. The report shows each per message (`completions` and
/// `events` as events per epoll wait), in this order: a new counter is one line here.
pub const COUNTERS: &[Counter] = &[
    Counter { name: "completions", get: |s| s.completions() },
    Counter { name: "epoll_waits", get: |s| s.epoll_waits },
    Counter { name: "events", get: |s| s.events },
    Counter { name: "rearms", get: |s| s.rearms },
    Counter { name: "inline", get: |s| s.inline },
    Counter { name: "steals", get: |s| s.steals },
    Counter { name: "parks", get: |s| s.parks },
    Counter { name: "futex_wakes", get: |s| s.futex_wakes },
    Counter { name: "eventfd_pokes", get: |s| s.eventfd_pokes },
    Counter { name: "rescues", get: |s| s.rescues },
    Counter { name: "local", get: |s| s.local },
    Counter { name: "injected", get: |s| s.injected },
    Counter { name: "forced_polls", get: |s| s.forced_polls },
];

/// Runs server `kind` until killed. `threads` is the number of `next_completion` threads for
/// the cport kinds (0: the number of CPUs); the other kinds ignore it.
pub fn main(kind: &str, threads: usize) -> Result<(), String> {
    sys::die_with_parent();
    let _ = cport_testkit::raise_nofile(libc::RLIM_INFINITY);
    let listener = bind_loopback().map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    match kind {
        // Tuned, in the default configuration: no workers, the handler threads poll epoll
        // themselves and do the I/O inline.
        "cport-inline" => serve_cport(listener, addr, if threads == 0 { sys::nproc() } else { threads }, 0),
        // The same with as many dedicated workers as handlers.
        "cport-workers" => {
            let n = if threads == 0 { sys::nproc() } else { threads };
            serve_cport(listener, addr, n, n)
        }
        "tokio" => serve_tokio(listener, addr),
        "epoll" => serve_epoll(listener, addr),
        "threads" => serve_threads(listener, addr),
        EXAMPLE_KIND | C_KIND => {
            let exe = external(kind).map(|x| x.exe.display().to_string()).unwrap_or_default();
            Err(format!("{kind} is the program {exe}, which the bench runs itself"))
        }
        _ => Err(format!("unknown server kind {kind:?} (known: {})", KINDS.join(", "))),
    }
}

/// Tells the parent where to connect: the first line on stdout.
fn announce(addr: SocketAddr) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {addr}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A listening TCP socket on 127.0.0.1, ephemeral port, backlog `BACKLOG` (std's is 128).
fn bind_loopback() -> std::io::Result<TcpListener> {
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    cport_testkit::set_reuseaddr(fd)?;
    // SAFETY: sockaddr_in is plain old data; zeroed is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = 0;
    sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a valid sockaddr_in of `len` bytes that outlives the call.
    if unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen takes integers only.
    if unsafe { libc::listen(fd, BACKLOG) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpListener::from(owned))
}

// ---------------------------------------------------------------------------------------------
// cport

/// The listener's token; connections count up from 1.
const LISTENER: u64 = 0;
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Connections per chunk of the spare-buffer table, and chunks (so up to 262,144 connections).
const CHUNK: usize = 1024;
const CHUNKS: usize = 256;

/// One spare buffer per connection, found by token without a global lock. `Request::write`
/// sends a whole `Vec`, so echoing `n` bytes of a 16 KiB read buffer needs a `Vec` of length
/// `n`: truncating the read buffer would force a 16 KiB memset to grow it back for the next
/// read. Instead the bytes are copied into the connection's spare (write) buffer, and the read
/// buffer waits in the slot until the write completes. No allocation once warm.
struct Spares {
    chunks: Vec<OnceLock<Chunk>>,
}

/// `CHUNK` spare buffers, allocated when the first of their tokens is used.
type Chunk = Box<[Mutex<Vec<u8>>]>;

impl Spares {
    fn new() -> Spares {
        Spares { chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect() }
    }

    fn slot(&self, token: u64) -> Option<&Mutex<Vec<u8>>> {
        let t = usize::try_from(token).ok()?;
        let chunk = self.chunks.get(t / CHUNK)?;
        Some(&chunk.get_or_init(|| (0..CHUNK).map(|_| Mutex::new(Vec::new())).collect())[t % CHUNK])
    }
}

fn serve_cport(listener: TcpListener, addr: SocketAddr, handlers: usize, workers: usize) -> Result<(), String> {
    let port = Port::builder().threads(workers).build().map_err(|e| e.to_string())?;
    report_stats(&port)?;
    let lis = port.assign(cport::driver::TcpListener::new(listener), LISTENER).map_err(|e| e.to_string())?;
    port.accept(&lis).map_err(|e| e.to_string())?;
    let spares: &'static Spares = Box::leak(Box::new(Spares::new()));
    let threads: Vec<_> = (0..handlers)
        .map(|i| {
            let port = port.clone();
            thread::Builder::new()
                .name(format!("handler-{i}"))
                .spawn(move || loop {
                    match port.next_completion(None) {
                        Ok(Some(c)) => {
                            // An I/O that finishes at once hands its completion straight back.
                            let mut next = Some(c);
                            while let Some(c) = next {
                                next = handle(&port, spares, c);
                            }
                        }
                        Ok(None) => continue,
                        Err(_) => break,
                    }
                })
                .map_err(|e| format!("spawning handler {i}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    announce(addr)?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Answers `stats` lines on stdin with a `stats ...` line of the port's counters (see
/// `COUNTERS`), so that the bench can show what each message cost.
fn report_stats(port: &Port) -> Result<(), String> {
    let port = port.clone();
    thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { return };
                if line.trim() != "stats" {
                    continue;
                }
                let s = port.stats();
                let text: Vec<String> = COUNTERS.iter().map(|c| (c.get)(&s).to_string()).collect();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "stats {}", text.join(" ")).and_then(|()| out.flush());
            }
        })
        .map(drop)
        .map_err(|e| format!("spawning the stats thread: {e}"))
}

/// What one completion leads to: accept -> assign + read; read -> write the same bytes;
/// write -> next read; anything else -> close. Returns the completion of an I/O it started
/// that finished at once.
fn handle(port: &Port, spares: &Spares, mut c: Completion) -> Option<Completion> {
    match (c.op(), c.status()) {
        (Op::Read, Status::Ok) if c.bytes() > 0 => {
            let n = c.bytes();
            let rbuf = c.take_buffer().expect("a read gives its buffer back");
            let wbuf = match spares.slot(c.token()) {
                Some(slot) => {
                    let mut spare = slot.lock().unwrap_or_else(|e| e.into_inner());
                    let mut w = std::mem::replace(&mut *spare, rbuf);
                    w.clear();
                    w.extend_from_slice(&spare[..n]);
                    w
                }
                None => {
                    let mut b = rbuf;
                    b.truncate(n);
                    b
                }
            };
            let isb = c.isb()?;
            start(port, isb, Request::write(wbuf))
        }
        (Op::Write, Status::Ok) => {
            let wbuf = c.take_buffer().expect("a write gives its buffer back");
            let rbuf = match spares.slot(c.token()) {
                Some(slot) => std::mem::replace(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()), wbuf),
                None => {
                    let mut b = wbuf;
                    b.resize(BUF, 0);
                    b
                }
            };
            let isb = c.isb()?;
            start(port, isb, Request::read_some(rbuf))
        }
        (Op::Accept, Status::Cancelled) => None,
        (Op::Accept, status) => {
            let accepted = c.take_accepted();
            let lis = c.isb()?;
            // The listener's next accept goes through the queue: its completion is for
            // whichever thread is free, and it must not nest inside this one.
            if let Err(e) = port.start_io(lis, Request::accept()) {
                eprintln!("cport server: accept: {e:#}");
            }
            if status != Status::Ok {
                if let Err(e) = c.result() {
                    eprintln!("cport server: accept: {e:#}");
                }
                return None;
            }
            let stream = accepted?;
            // Errors are ignored: a closed peer is handled by the I/O path.
            let _ = stream.set_nodelay(true);
            match port.assign_boxed(stream.into_driver(), NEXT_ID.fetch_add(1, Ordering::Relaxed)) {
                Ok(conn) => start(port, &conn, Request::read_some(vec![0; BUF])),
                Err(e) => {
                    eprintln!("cport server: assign: {e:#}");
                    None
                }
            }
        }
        (Op::Close, _) => {
            if let Some(slot) = spares.slot(c.token()) {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Vec::new();
            }
            None
        }
        _ => {
            if let Some(isb) = c.isb() {
                close(port, isb);
            }
            None
        }
    }
}

/// Starts `req`; an I/O that finishes at once gives its completion back (nothing queued, no
/// thread woken).
fn start(port: &Port, isb: &Isb, req: Request) -> Option<Completion> {
    match port.start_io_inline(isb, req) {
        Ok(done) => done,
        Err(e) => {
            if e.kind() != ErrorKind::PortClosed {
                eprintln!("cport server: {e:#}");
            }
            close(port, isb);
            None
        }
    }
}

fn close(port: &Port, isb: &Isb) {
    if let Err(e) = port.close(isb) {
        if e.kind() != ErrorKind::NotAssigned {
            eprintln!("cport server: {e:#}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tokio

fn serve_tokio(listener: TcpListener, addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let lis = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        announce(addr)?;
        loop {
            match lis.accept().await {
                Ok((mut s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; BUF];
                        loop {
                            let n = match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
                Err(e) => {
                    eprintln!("tokio server: accept: {e:#}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// raw epoll: the floor

/// The listener's epoll data (connections use their fd).
const LISTEN_DATA: u64 = u64::MAX;

/// One connection of the epoll server: a fixed buffer and what a partial write left in it.
struct EConn {
    buf: Box<[u8]>,
    /// Bytes `buf[off..len]` still to send.
    off: usize,
    len: usize,
}

enum Flow {
    /// Sent everything; go on reading.
    Done,
    /// The socket's send buffer is full: wait for EPOLLOUT.
    Blocked,
    /// Error: close.
    Failed,
}

/// Writes `buf[*off..len]`, advancing `off`.
fn write_out(fd: RawFd, buf: &[u8], off: &mut usize, len: usize) -> Flow {
    while *off < len {
        let rest = &buf[*off..len];
        // SAFETY: writes from a live slice of `rest.len()` bytes.
        let w = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if w > 0 {
            *off += w as usize;
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => return Flow::Blocked,
            Some(libc::EINTR) => continue,
            _ => return Flow::Failed,
        }
    }
    Flow::Done
}

impl EConn {
    /// Services one edge-triggered event; returns true when the connection must be closed.
    /// Reads until EAGAIN, or until a short read when the event carries no hang-up: on a
    /// stream socket a short read means the socket was drained, and data arriving after it
    /// raises a new edge, so the EAGAIN read would only cost a syscall.
    fn service(&mut self, fd: RawFd, hangup: bool) -> bool {
        if self.off < self.len {
            match write_out(fd, &self.buf, &mut self.off, self.len) {
                Flow::Done => {}
                Flow::Blocked => return false,
                Flow::Failed => return true,
            }
        }
        loop {
            // SAFETY: reads at most `buf.len()` bytes into the connection's own buffer.
            let r = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if r == 0 {
                return true;
            }
            if r < 0 {
                return match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => false,
                    Some(libc::EINTR) => continue,
                    _ => true,
                };
            }
            let n = r as usize;
            self.off = 0;
            self.len = n;
            match write_out(fd, &self.buf, &mut self.off, n) {
                Flow::Done => {}
                Flow::Blocked => return false,
                Flow::Failed => return true,
            }
            if n < self.buf.len() && !hangup {
                return false;
            }
        }
    }
}

fn epoll_add(ep: RawFd, fd: RawFd, events: u32, data: u64) -> Result<(), String> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid epoll_event that outlives the call.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(os_err("epoll_ctl ADD"));
    }
    Ok(())
}

fn serve_epoll(listener: TcpListener, addr: SocketAddr) -> Result<(), String> {
    let lfd = listener.as_raw_fd();
    cport_testkit::set_nonblocking(lfd).map_err(|e| e.to_string())?;
    // SAFETY: epoll_create1 takes an integer.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(os_err("epoll_create1"));
    }
    epoll_add(ep, lfd, libc::EPOLLIN as u32, LISTEN_DATA)?;
    let conn_bits = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
    let hup_bits = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut conns: Vec<Option<EConn>> = Vec::new();
    announce(addr)?;
    loop {
        // SAFETY: the events buffer holds `events.len()` initialised entries and outlives the call.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as libc::c_int, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_err("epoll_wait"));
        }
        for ev in &events[..n as usize] {
            let (bits, data) = (ev.events, ev.u64);
            if data == LISTEN_DATA {
                loop {
                    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
                    // SAFETY: null address pointers are allowed; the rest are integers.
                    let fd = unsafe { libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
                    if fd < 0 {
                        let e = std::io::Error::last_os_error();
                        match e.raw_os_error() {
                            Some(libc::EAGAIN) => break,
                            Some(libc::EINTR | libc::ECONNABORTED) => continue,
                            _ => {
                                eprintln!("epoll server: accept: {e:#}");
                                break;
                            }
                        }
                    }
                    let _ = cport_testkit::set_nodelay(fd);
                    let i = fd as usize;
                    if conns.len() <= i {
                        conns.resize_with(i + 1, || None);
                    }
                    conns[i] = Some(EConn { buf: vec![0; BUF].into_boxed_slice(), off: 0, len: 0 });
                    if let Err(e) = epoll_add(ep, fd, conn_bits, fd as u64) {
                        eprintln!("epoll server: {e:#}");
                        conns[i] = None;
                        // SAFETY: `fd` is ours, from accept4.
                        unsafe { libc::close(fd) };
                    }
                }
                continue;
            }
            let fd = data as RawFd;
            let Some(Some(conn)) = conns.get_mut(fd as usize) else { continue };
            if conn.service(fd, bits & hup_bits != 0) {
                conns[fd as usize] = None;
                // SAFETY: `fd` is ours, from accept4; closing removes it from the epoll set.
                unsafe { libc::close(fd) };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// thread per connection

fn serve_threads(listener: TcpListener, addr: SocketAddr) -> Result<(), String> {
    announce(addr)?;
    loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nodelay(true);
                let spawned = thread::Builder::new().spawn(move || {
                    let mut buf = vec![0u8; BUF];
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
                if let Err(e) = spawned {
                    eprintln!("threads server: spawn: {e:#}");
                }
            }
            Err(e) => {
                eprintln!("threads server: accept: {e:#}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
