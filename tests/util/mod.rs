//! Shared helpers of the integration tests: ports, connected pairs and pipes, waits with a hang
//! guard, socket options, fd and thread counts.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cport::{Completion, Isb, Port};

/// The hang guard: no single wait in these tests may take longer.
pub const GUARD: Duration = Duration::from_secs(10);

/// A port with `threads` workers.
pub fn port(threads: usize) -> Port {
    Port::builder().threads(threads).build().expect("building a port")
}

/// The next completion, or a panic after the hang guard.
pub fn next(port: &Port) -> Completion {
    match port.next_completion(Some(GUARD)) {
        Ok(Some(c)) => c,
        Ok(None) => panic!("no completion within {GUARD:?} (or an unexpected wakeup)"),
        Err(e) => panic!("next_completion failed: {e}"),
    }
}

/// Asserts that no completion arrives within `d` (a window for "nothing happens yet").
pub fn assert_quiet(port: &Port, d: Duration) {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match port.next_completion(Some(left)) {
            Ok(None) if Instant::now() >= until => return,
            Ok(None) => continue,
            Ok(Some(c)) => panic!("unexpected completion {c:?}"),
            Err(e) => panic!("next_completion failed: {e}"),
        }
    }
}

/// A connected pair of blocking loopback TCP streams.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

/// A connected TCP pair with one end assigned to `port` as `token`; the other end is a
/// blocking std stream (the peer).
pub fn assigned_pair(port: &Port, token: u64) -> (Isb, TcpStream) {
    let (a, b) = tcp_pair();
    let isb = port.assign(cport::driver::TcpStream::new(a), token).expect("assign");
    (isb, b)
}

/// A port with `threads` workers and a connected TCP pair: one end assigned as token 1, the
/// other end the blocking peer.
pub fn port_with_pair(threads: usize) -> (Port, Isb, TcpStream) {
    let port = port(threads);
    let (isb, peer) = assigned_pair(&port, 1);
    (port, isb, peer)
}

/// Shrinks the kernel send buffer of `fd` so that a large write cannot be taken in one go.
pub fn small_sndbuf(fd: RawFd, bytes: usize) {
    cport_testkit::set_send_buffer(fd, bytes).unwrap_or_else(|e| panic!("SO_SNDBUF on fd {fd}: {e}"));
}

/// Shrinks the kernel receive buffer of `fd`.
pub fn small_rcvbuf(fd: RawFd, bytes: usize) {
    cport_testkit::set_recv_buffer(fd, bytes).unwrap_or_else(|e| panic!("SO_RCVBUF on fd {fd}: {e}"));
}

/// Sets `SO_LINGER {on, 0}`: closing the socket then sends a reset instead of a FIN.
pub fn linger_zero(s: &impl AsRawFd) {
    let fd = s.as_raw_fd();
    cport_testkit::set_linger_zero(fd).unwrap_or_else(|e| panic!("SO_LINGER on fd {fd}: {e}"));
}

/// Closes `s` with a reset (RST) instead of an orderly FIN.
pub fn reset(s: TcpStream) {
    linger_zero(&s);
    drop(s);
}

/// The deterministic byte at offset `i` of a test pattern seeded by `seed`.
pub fn pattern_byte(seed: u64, i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 56) as u8 ^ (i as u8)
}

/// `len` bytes of the test pattern seeded by `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern_byte(seed, i)).collect()
}

/// Bytes queued for reading on `fd` (FIONREAD).
pub fn pending_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD on fd {fd}: {}", std::io::Error::last_os_error());
    usize::try_from(n).expect("FIONREAD is never negative")
}

/// Polls `f` until it holds or the hang guard passes; returns whether it held.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + GUARD;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    f()
}

/// Reads from `peer` until `want` bytes arrived, checking them against the pattern seeded by
/// `seed`; sleeps `pause` after every chunk of `chunk` bytes (a slow reader). Returns the
/// number of bytes that matched before the first mismatch or end of stream.
pub fn read_pattern(peer: &mut TcpStream, seed: u64, want: usize, chunk: usize, pause: Duration) -> usize {
    use std::io::Read;
    let mut buf = vec![0u8; chunk];
    let mut got = 0;
    while got < want {
        let n = match peer.read(&mut buf[..chunk.min(want - got)]) {
            Ok(0) | Err(_) => return got,
            Ok(n) => n,
        };
        for (k, &b) in buf[..n].iter().enumerate() {
            if b != pattern_byte(seed, got + k) {
                return got + k;
            }
        }
        got += n;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    got
}

/// A counter shared with a progress callback: the values it was called with.
#[derive(Clone, Default)]
pub struct ProgressLog(pub std::sync::Arc<std::sync::Mutex<Vec<usize>>>);

impl ProgressLog {
    /// A callback for [`cport::Request::on_progress`] that records into this log.
    pub fn callback(&self) -> impl FnMut(usize) + Send + 'static {
        let log = self.0.clone();
        move |n| log.lock().unwrap().push(n)
    }

    /// A snapshot of the values so far.
    pub fn values(&self) -> Vec<usize> {
        self.0.lock().unwrap().clone()
    }
}

/// A process-unique number for temporary names.
pub fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A fresh path for a Unix-domain socket in the temporary directory (not created).
pub fn socket_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cport-{tag}-{}-{}.sock", std::process::id(), unique()))
}

/// The raw fd of anything that has one.
pub fn raw(x: &impl AsRawFd) -> RawFd {
    x.as_raw_fd()
}

/// Serialises the tests of one binary that count process-wide resources (fds, threads).
pub fn serial(m: &'static Mutex<()>) -> MutexGuard<'static, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connected pair of Unix stream sockets (blocking).
pub fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

/// A pipe: (read end, write end), both close-on-exec and blocking.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    // The directory handle read_dir holds is itself one entry: do not count it.
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count() - 1
}

/// The open fds of this process, by number, with what they point at (for failure messages).
pub fn fd_list() -> Vec<(RawFd, String)> {
    let mut v: Vec<(RawFd, String)> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let n: RawFd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
            Some((n, target))
        })
        .collect();
    v.sort();
    v
}

/// Number of threads of this process whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// A small, fast, deterministic pseudo-random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Busy-waits about `n` spin iterations (to skew two racing threads against each other).
pub fn spin(n: u64) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}
