//! Shared helpers for the echo, read-range, write, accept/connect, hang-up and post/wakeup
//! tests: ports, connected loopback pairs, waits with a hang guard, socket options.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
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

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt reads one c_int from the pointer, which points at `value`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt({level}, {name}) on fd {fd}: {}", std::io::Error::last_os_error());
}

/// Shrinks the kernel send buffer of `fd` so that a large write cannot be taken in one go.
pub fn small_sndbuf(fd: RawFd, bytes: usize) {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes as libc::c_int);
}

/// Shrinks the kernel receive buffer of `fd`.
pub fn small_rcvbuf(fd: RawFd, bytes: usize) {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes as libc::c_int);
}

/// Sets `SO_LINGER {on, 0}`: closing the socket then sends a reset instead of a FIN.
pub fn linger_zero(s: &impl AsRawFd) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    let fd = s.as_raw_fd();
    // SAFETY: setsockopt reads one `linger` from the pointer, which points at `l`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER on fd {fd}: {}", std::io::Error::last_os_error());
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
