//! The closed-loop client, the same for every server: one thread, one edge-triggered epoll
//! instance, C connections. Each connection sends a message of S bytes, waits for all S bytes
//! of the echo, records the round trip, and sends the next one. No allocation per message.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::hist::Hist;

/// Time allowed for connecting all connections of a cell.
const CONNECT_BUDGET: Duration = Duration::from_secs(30);
/// A round trip that takes longer than this means the server stalled: the cell fails.
const STALL: Duration = Duration::from_secs(5);
const EVENTS: usize = 1024;

struct Conn {
    stream: TcpStream,
    sent: usize,
    received: usize,
    started: Instant,
}

pub struct Client {
    epoll: RawFd,
    conns: Vec<Conn>,
    msg: Vec<u8>,
    scratch: Vec<u8>,
    events: Vec<libc::epoll_event>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: `epoll` is our own epoll fd, closed once here. The streams close themselves.
        unsafe { libc::close(self.epoll) };
    }
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

impl Client {
    /// Opens `conns` connections to `addr` (before any measurement) and registers them.
    pub fn connect(addr: SocketAddr, conns: usize, size: usize) -> Result<Client, String> {
        // SAFETY: epoll_create1 takes an integer.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(os_err("epoll_create1"));
        }
        let mut client = Client {
            epoll,
            conns: Vec::with_capacity(conns),
            msg: (0..size).map(|i| (i % 251) as u8).collect(),
            scratch: vec![0; size.max(1)],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
        };
        let give_up = Instant::now() + CONNECT_BUDGET;
        for i in 0..conns {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("connected only {i} of {conns} within {CONNECT_BUDGET:?}"));
            }
            let stream = TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(10)))
                .map_err(|e| format!("connect {} of {conns}: {e}", i + 1))?;
            stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            stream.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                u64: i as u64,
            };
            // SAFETY: `ev` is a valid epoll_event that outlives the call.
            if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) } < 0 {
                return Err(os_err("epoll_ctl ADD"));
            }
            client.conns.push(Conn { stream, sent: 0, received: 0, started: Instant::now() });
        }
        // Every connection sends its first message.
        for i in 0..conns {
            client.conns[i].started = Instant::now();
            client.send(i)?;
        }
        Ok(client)
    }

    /// Sends what is left of connection `i`'s message; stops (keeping its place) on EAGAIN.
    fn send(&mut self, i: usize) -> Result<(), String> {
        let c = &mut self.conns[i];
        while c.sent < self.msg.len() {
            let rest = &self.msg[c.sent..];
            // SAFETY: writes from a live slice of `rest.len()` bytes.
            let n = unsafe { libc::write(c.stream.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                c.sent += n as usize;
            } else {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => return Err(format!("send on connection {i}: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Runs the loop for `dur`. Returns the number of round trips that completed meanwhile;
    /// with `hist`, their latencies are recorded in it.
    pub fn run(&mut self, dur: Duration, mut hist: Option<&mut Hist>) -> Result<u64, String> {
        let start = Instant::now();
        let end = start + dur;
        let size = self.msg.len();
        let mut done = 0u64;
        let mut last_progress = start;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(done);
            }
            if now.duration_since(last_progress) > STALL {
                return Err(format!("no echo for {STALL:?}: the server stalled"));
            }
            let timeout_ms = end.duration_since(now).as_millis().clamp(1, 100) as libc::c_int;
            // SAFETY: the events buffer holds EVENTS initialised entries and outlives the call.
            let n =
                unsafe { libc::epoll_wait(self.epoll, self.events.as_mut_ptr(), EVENTS as libc::c_int, timeout_ms) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(os_err("epoll_wait"));
            }
            for k in 0..n as usize {
                let ev = self.events[k];
                let i = ev.u64 as usize;
                let bits = ev.events;
                if self.conns[i].sent < size {
                    self.send(i)?;
                }
                let c = &mut self.conns[i];
                while c.sent == size && c.received < size {
                    let want = size - c.received;
                    // SAFETY: reads at most `want` bytes into the scratch buffer of `size` bytes.
                    let r = unsafe { libc::read(c.stream.as_raw_fd(), self.scratch.as_mut_ptr().cast(), want) };
                    if r > 0 {
                        c.received += r as usize;
                    } else if r == 0 {
                        return Err(format!("connection {i} closed by the server"));
                    } else {
                        let e = std::io::Error::last_os_error();
                        match e.raw_os_error() {
                            Some(libc::EAGAIN) => break,
                            Some(libc::EINTR) => continue,
                            _ => return Err(format!("read on connection {i}: {e}")),
                        }
                    }
                }
                if c.received == size && c.sent == size {
                    let t = Instant::now();
                    if let Some(h) = hist.as_deref_mut() {
                        h.record(t.duration_since(c.started).as_nanos() as u64);
                    }
                    done += 1;
                    last_progress = t;
                    c.sent = 0;
                    c.received = 0;
                    c.started = t;
                    self.send(i)?;
                } else if bits & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    return Err(format!("connection {i} hung up or failed"));
                }
            }
        }
    }
}
