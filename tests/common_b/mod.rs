//! Shared helpers for the cancel, timeout, close/deassign, teardown, bad-input, pipe/UDP and
//! EMFILE tests.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cport::{Completion, Port};

/// The hang guard: no single wait in these tests may take longer.
pub const GUARD: Duration = Duration::from_secs(10);

/// Serialises the tests of one binary that count process-wide resources (fds, threads).
pub fn serial(m: &'static Mutex<()>) -> MutexGuard<'static, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next completion, or a panic after the hang guard.
pub fn next(port: &Port) -> Completion {
    match port.next_completion(Some(GUARD)) {
        Ok(Some(c)) => c,
        Ok(None) => panic!("no completion within {GUARD:?}"),
        Err(e) => panic!("next_completion failed: {e}"),
    }
}

/// Asserts that no completion arrives within `d`.
pub fn assert_quiet(port: &Port, d: Duration) {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match port.next_completion(Some(left)) {
            Ok(None) if Instant::now() >= until => return,
            Ok(None) => continue, // a wakeup from elsewhere: keep waiting out the window
            Ok(Some(c)) => panic!("unexpected completion {c:?}"),
            Err(e) => panic!("next_completion failed: {e}"),
        }
    }
}

/// A connected pair of Unix stream sockets (blocking).
pub fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

/// Bytes queued for reading on `fd` (FIONREAD).
pub fn pending_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD on fd {fd}: {}", std::io::Error::last_os_error());
    usize::try_from(n).expect("FIONREAD is never negative")
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

/// Polls `f` until it holds or the hang guard passes; returns whether it held.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + GUARD;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    f()
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

/// The raw fd of anything that has one.
pub fn raw(x: &impl AsRawFd) -> RawFd {
    x.as_raw_fd()
}

/// Raises the soft RLIMIT_NOFILE to at least `want` (up to the hard limit); returns the new
/// soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < want {
        lim.rlim_cur = want.min(lim.rlim_max);
        // SAFETY: setrlimit reads one rlimit from `lim`.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
    lim.rlim_cur
}
