//! The session layer over real loopback TCP: sessions fed by a `Server`, exact replies whatever
//! the read boundaries, errors and limits that close one connection only, back-pressure, the
//! reasons `closed` is given (once), graceful and forced stops, run-time changes of the factory
//! and the limits, idle timeouts, and a server run on a rayon pool (its own or the global one).
//!
//! Nothing here asserts on timing: waits poll a condition with the hang guard of `util`.
#![cfg(feature = "session")]

mod util;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cport::session::{Closed, Connection, Limits, Outbox, Server, Session, Summary};
use cport::{Error, ErrorKind};
use util::{eventually, pattern, read_pattern, small_rcvbuf, GUARD};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

// ---- what the sessions saw ----

/// What the sessions of one server saw, for the test to assert on. Sessions are told apart by
/// their peer's address (the client's `local_addr`).
#[derive(Default)]
struct Probe {
    /// Every connection the factory made a session for, in order.
    conns: Mutex<Vec<Connection>>,
    /// Every `closed` call: (peer, reason).
    closed: Mutex<Vec<(SocketAddr, Closed)>>,
    /// Every `receive` call: (peer, data.len(), bytes consumed; 0 for an error).
    receives: Mutex<Vec<(SocketAddr, usize, usize)>>,
}

impl Probe {
    /// The handle of the connection whose peer is `peer`, once the factory has seen it.
    #[track_caller]
    fn conn(&self, peer: SocketAddr) -> Connection {
        let find = || self.conns.lock().unwrap().iter().find(|c| c.peer_addr() == Some(peer)).cloned();
        wait("the server to accept the client", || find().is_some());
        find().unwrap()
    }

    fn closed_of(&self, peer: SocketAddr) -> Vec<Closed> {
        self.closed.lock().unwrap().iter().filter(|(p, _)| *p == peer).map(|(_, why)| why.clone()).collect()
    }

    /// The reason `closed` was given for `peer`, once it was called.
    #[track_caller]
    fn wait_closed(&self, peer: SocketAddr) -> Closed {
        wait("the session's closed call", || !self.closed_of(peer).is_empty());
        self.closed_of(peer).remove(0)
    }

    /// (data.len(), consumed) of every receive call of `peer`'s session, in order.
    fn receives_of(&self, peer: SocketAddr) -> Vec<(usize, usize)> {
        self.receives.lock().unwrap().iter().filter(|(p, ..)| *p == peer).map(|&(_, n, used)| (n, used)).collect()
    }

    fn receive_count(&self) -> usize {
        self.receives.lock().unwrap().len()
    }
}

/// A protocol: what a session does, without the recording.
trait Proto: Send + 'static {
    fn greet(&mut self, out: &mut Outbox<'_>) -> cport::Result<()> {
        let _ = out;
        Ok(())
    }

    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize>;

    fn closed(&mut self, conn_id: u64) {
        let _ = conn_id;
    }
}

/// A session: a protocol plus the recording into the probe.
struct Probed<P> {
    probe: Arc<Probe>,
    peer: SocketAddr,
    id: u64,
    proto: P,
}

impl<P: Proto> Session for Probed<P> {
    fn opened(&mut self, out: &mut Outbox<'_>) -> cport::Result<()> {
        self.proto.greet(out)
    }

    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let got = self.proto.receive(data, out);
        let used = *got.as_ref().unwrap_or(&0);
        self.probe.receives.lock().unwrap().push((self.peer, data.len(), used));
        got
    }

    fn closed(&mut self, why: &Closed) {
        self.proto.closed(self.id);
        self.probe.closed.lock().unwrap().push((self.peer, why.clone()));
    }
}

type Factory = Box<dyn Fn(&Connection) -> Box<dyn Session> + Send + Sync>;

/// A factory of `make()` sessions that record into `probe`.
fn factory<P: Proto>(probe: &Arc<Probe>, make: impl Fn() -> P + Send + Sync + 'static) -> Factory {
    let probe = probe.clone();
    Box::new(move |conn: &Connection| {
        probe.conns.lock().unwrap().push(conn.clone());
        let peer = conn.peer_addr().expect("a TCP connection has a peer address");
        Box::new(Probed { probe: probe.clone(), peer, id: conn.id(), proto: make() })
    })
}

// ---- protocols ----

/// The error the line protocol returns on a "boom" line.
fn boom() -> Error {
    Error::new(ErrorKind::Os(io::ErrorKind::Other), "boom line")
}

/// Replies `prefix` + line + "\n" to every complete line ("\n"-terminated); "boom" is an error.
struct Lines {
    prefix: &'static [u8],
    greeting: &'static [u8],
}

fn lines(prefix: &'static [u8]) -> impl Fn() -> Lines + Send + Sync + 'static {
    move || Lines { prefix, greeting: b"" }
}

impl Proto for Lines {
    fn greet(&mut self, out: &mut Outbox<'_>) -> cport::Result<()> {
        out.send(self.greeting);
        Ok(())
    }

    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let mut used = 0;
        while let Some(end) = data[used..].iter().position(|&b| b == b'\n') {
            let line = &data[used..used + end];
            if line == b"boom" {
                return Err(boom());
            }
            let buf = out.buffer();
            buf.extend_from_slice(self.prefix);
            buf.extend_from_slice(line);
            buf.push(b'\n');
            used += end + 1;
        }
        Ok(used)
    }
}

/// Frames of one length byte and that many payload bytes; replies "ok:" + payload + "\n".
struct Frames;

impl Proto for Frames {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let mut used = 0;
        while let Some(&len) = data.get(used) {
            let end = used + 1 + usize::from(len);
            if end > data.len() {
                break;
            }
            out.send(b"ok:");
            out.send(&data[used + 1..end]);
            out.send(b"\n");
            used = end;
        }
        Ok(used)
    }
}

/// Encodes frames of the given payload sizes; returns (wire bytes, the replies they get).
fn frames(sizes: &[usize], seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut replies = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let payload = pattern(seed + i as u64, size);
        wire.push(u8::try_from(size).unwrap());
        wire.extend_from_slice(&payload);
        replies.extend_from_slice(b"ok:");
        replies.extend_from_slice(&payload);
        replies.push(b'\n');
    }
    (wire, replies)
}

/// Claims one byte more than it was given.
struct Greedy;

impl Proto for Greedy {
    fn receive(&mut self, data: &[u8], _out: &mut Outbox<'_>) -> cport::Result<usize> {
        Ok(data.len() + 1)
    }
}

/// Never consumes anything.
struct Hoard;

impl Proto for Hoard {
    fn receive(&mut self, _data: &[u8], _out: &mut Outbox<'_>) -> cport::Result<usize> {
        Ok(0)
    }
}

/// The seed of the pattern `Bulk` replies with.
const BULK_SEED: u64 = 0xB01C;

/// On its first bytes, queues `size` bytes of the pattern seeded by `BULK_SEED` (and asks to
/// close if `close`); consumes everything.
struct Bulk {
    size: usize,
    close: bool,
    sent: bool,
}

fn bulk(size: usize, close: bool) -> impl Fn() -> Bulk + Send + Sync + 'static {
    move || Bulk { size, close, sent: false }
}

impl Proto for Bulk {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        if !self.sent {
            self.sent = true;
            out.send(&pattern(BULK_SEED, self.size));
            if self.close {
                out.close();
            }
        }
        Ok(data.len())
    }
}

/// Queues a greeting, then fails in `opened`.
struct FailOpen;

impl Proto for FailOpen {
    fn greet(&mut self, out: &mut Outbox<'_>) -> cport::Result<()> {
        out.send(b"you should not see this\n");
        Err(boom())
    }

    fn receive(&mut self, data: &[u8], _out: &mut Outbox<'_>) -> cport::Result<usize> {
        Ok(data.len())
    }
}

/// On a "quit" line: replies "bye" and closes through its own `Connection` handle (not the
/// outbox); other lines get "re:" + line.
struct QuitByHandle;

impl Proto for QuitByHandle {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let used = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in data[..used].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if line == b"quit" {
                out.send(b"bye\n");
                out.connection().close();
            } else {
                out.send(b"re:");
                out.send(line);
                out.send(b"\n");
            }
        }
        Ok(used)
    }
}

/// On a "work" line: says it has begun, waits for the test's go, then replies "done".
struct Gate {
    entered: mpsc::Sender<()>,
    go: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl Proto for Gate {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let used = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for _work in data[..used].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.entered.send(()).unwrap();
            self.go.lock().unwrap().recv_timeout(GUARD).expect("the test's go");
            out.send(b"done\n");
        }
        Ok(used)
    }
}

/// The size of a `Fanout` reply.
const BLOCK: usize = 64 * KIB;

/// Replies to every request byte with a block of `BLOCK` bytes: the request's index (u32 LE)
/// followed by the request byte repeated. One request per call at most, so that it is the
/// server that paces it (use it with a `read_size` of 1).
struct Fanout {
    next: u32,
}

impl Proto for Fanout {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        for &b in data {
            let buf = out.buffer();
            buf.extend_from_slice(&self.next.to_le_bytes());
            buf.resize(buf.len() + BLOCK - 4, b);
            self.next += 1;
        }
        Ok(data.len())
    }
}

/// The members of a chat room: every line a member sends goes to the others, with
/// `Connection::send`, from inside the sender's session.
#[derive(Default)]
struct Room {
    members: Mutex<Vec<Connection>>,
}

struct Member {
    room: Arc<Room>,
}

impl Proto for Member {
    fn greet(&mut self, out: &mut Outbox<'_>) -> cport::Result<()> {
        self.room.members.lock().unwrap().push(out.connection().clone());
        Ok(())
    }

    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        let used = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in data[..used].split_inclusive(|&b| b == b'\n') {
            for m in self.room.members.lock().unwrap().iter() {
                if m != out.connection() {
                    m.send(line).expect("sending to a member");
                }
            }
        }
        Ok(used)
    }

    fn closed(&mut self, conn_id: u64) {
        self.room.members.lock().unwrap().retain(|m| m.id() != conn_id);
    }
}

// ---- the server and its clients ----

/// A server and the threads running it.
struct Running {
    server: Server,
    threads: Vec<JoinHandle<cport::Result<()>>>,
}

impl Running {
    /// Binds a server with `limits` on a free loopback port and runs it on `threads` threads.
    fn start(limits: Limits, threads: usize, factory: Factory) -> Running {
        let server = Server::builder()
            .limits(limits)
            .bind("127.0.0.1:0".parse().unwrap(), move |c: &Connection| factory(c))
            .expect("binding the server");
        let threads = (0..threads)
            .map(|_| {
                let s = server.clone();
                std::thread::spawn(move || s.run())
            })
            .collect();
        Running { server, threads }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the server; checks that every run thread returned `Ok`.
    fn stop(self, timeout: Duration) -> Summary {
        let summary = self.server.stop(timeout);
        assert!(self.server.is_stopped());
        for t in self.threads {
            t.join().expect("a run thread panicked").expect("run returned an error");
        }
        summary
    }
}

/// Waits for `cond`, failing the test after the hang guard.
#[track_caller]
fn wait(what: &str, cond: impl FnMut() -> bool) {
    assert!(eventually(cond), "waited {GUARD:?} for {what}");
}

/// A blocking client with the hang guard as read and write timeouts, and TCP_NODELAY.
fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.set_write_timeout(Some(GUARD)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn peer_of(s: &TcpStream) -> SocketAddr {
    s.local_addr().unwrap()
}

#[track_caller]
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    if let Err(e) = s.read_exact(&mut buf) {
        panic!("reading {n} bytes: {e}");
    }
    buf
}

/// The peer's end of the stream: `read` returns 0, or the connection was reset.
#[track_caller]
fn expect_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {}
        Ok(n) => panic!("expected the end of the stream, got {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            panic!("expected the end of the stream, but it stayed open for {GUARD:?}")
        }
        Err(e) => panic!("expected the end of the stream, got {e}"),
    }
}

/// Sends `line` and checks the reply of a `Lines` session with `prefix`.
#[track_caller]
fn round_trip(s: &mut TcpStream, prefix: &str, line: &str) {
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let want = format!("{prefix}{line}\n");
    let got = read_n(s, want.len());
    assert_eq!(String::from_utf8_lossy(&got), want);
}

fn error_kind(why: &Closed) -> Option<ErrorKind> {
    match why {
        Closed::Error(e) => Some(e.kind()),
        _ => None,
    }
}

// ---- the tests ----

#[test]
fn echo_lines() {
    const CLIENTS: usize = 4;
    const LINES: usize = 300;
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"")));
    let addr = running.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = client(addr);
                let text: String =
                    (0..LINES).map(|i| format!("client {c} line {i} {}\n", "x".repeat(i % 23))).collect();
                let bytes = text.as_bytes();
                // The first lines one at a time, the rest pipelined in writes that cut lines.
                let mut at = 0;
                for _ in 0..20 {
                    let end = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
                    s.write_all(&bytes[at..end]).unwrap();
                    assert_eq!(read_n(&mut s, end - at), &bytes[at..end]);
                    at = end;
                }
                let rest = &bytes[at..];
                for chunk in rest.chunks(37 + c) {
                    s.write_all(chunk).unwrap();
                }
                assert_eq!(read_n(&mut s, rest.len()), rest, "client {c}: echoes differ");
                (peer_of(&s), bytes.len())
            })
        })
        .collect();
    let results: Vec<(SocketAddr, usize)> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let total: usize = results.iter().map(|r| r.1).sum();
    wait("every connection to close", || running.server.summary().closed == CLIENTS);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.accepted, CLIENTS, "{summary:?}");
    assert_eq!(summary.closed, CLIENTS, "{summary:?}");
    assert_eq!(summary.open, 0, "{summary:?}");
    assert_eq!(summary.bytes_in, total, "{summary:?}");
    assert_eq!(summary.bytes_out, total, "{summary:?}");
    assert_eq!((summary.errors, summary.limit_closes, summary.refused, summary.forced), (0, 0, 0, 0), "{summary:?}");
    for (peer, _) in results {
        assert_eq!(probe.closed_of(peer), vec![Closed::Peer], "closed reasons of {peer}");
    }
}

#[test]
fn byte_at_a_time_delivery() {
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_read_size(1);
    let running = Running::start(limits, 2, factory(&probe, || Frames));
    let sizes: Vec<usize> = (0..50).map(|i| (i * 7) % 13).collect();
    let (wire, replies) = frames(&sizes, 2);
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    s.write_all(&wire).unwrap();
    assert_eq!(read_n(&mut s, replies.len()), replies, "replies differ");
    drop(s);
    assert_eq!(probe.wait_closed(peer), Closed::Peer);

    let calls = probe.receives_of(peer);
    assert_eq!(calls.len(), wire.len(), "one receive per byte sent");
    let mut left = 0;
    for (i, &(len, used)) in calls.iter().enumerate() {
        assert_eq!(len, left + 1, "call {i}: {left} bytes left unconsumed before, so {} expected", left + 1);
        assert!(used <= len);
        left = len - used;
    }
    assert_eq!(left, 0, "the last frame was consumed");
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.bytes_in, wire.len());
    assert_eq!(summary.bytes_out, replies.len());
}

#[test]
fn pipelined_frames_split_at_every_offset() {
    let sizes = [0, 1, 5, 17, 2, 30, 3, 0, 9, 12, 4, 1];
    let (wire, replies) = frames(&sizes, 3);
    assert!((80..=120).contains(&wire.len()), "{}", wire.len());
    for read_size in [1, 3, Limits::default().read_size] {
        let probe = Arc::new(Probe::default());
        let running = Running::start(Limits::default().with_read_size(read_size), 2, factory(&probe, || Frames));
        for k in 0..=wire.len() {
            let base = running.server.summary().bytes_in;
            let mut s = client(running.addr());
            if k > 0 {
                s.write_all(&wire[..k]).unwrap();
                // Let the server read the first part by itself, so the split is real.
                wait("the server to read the first part", || running.server.summary().bytes_in >= base + k);
            }
            if k < wire.len() {
                s.write_all(&wire[k..]).unwrap();
            }
            let got = read_n(&mut s, replies.len());
            assert!(got == replies, "read_size {read_size}, split at {k}: replies differ");
        }
        let summary = running.stop(Duration::from_secs(5));
        assert_eq!(summary.bytes_in, wire.len() * (wire.len() + 1), "read_size {read_size}");
        assert_eq!(summary.bytes_out, replies.len() * (wire.len() + 1), "read_size {read_size}");
        assert_eq!(summary.errors, 0);
    }
}

#[test]
fn session_error_closes_only_its_connection() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"re:")));
    let mut b = client(running.addr());
    round_trip(&mut b, "re:", "b before");
    let mut a = client(running.addr());
    round_trip(&mut a, "re:", "a before");
    a.write_all(b"boom\n").unwrap();
    expect_eof(&mut a);
    assert_eq!(probe.wait_closed(peer_of(&a)), Closed::Error(boom()));
    round_trip(&mut b, "re:", "b after");
    let mut c = client(running.addr());
    round_trip(&mut c, "re:", "c after");
    round_trip(&mut b, "re:", "b again");
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.errors, 1, "{summary:?}");
    assert_eq!((summary.accepted, summary.closed, summary.forced), (3, 3, 0), "{summary:?}");
    assert_eq!(probe.closed_of(peer_of(&a)), vec![Closed::Error(boom())]);
    assert_eq!(probe.closed_of(peer_of(&b)), vec![Closed::Stopped]);
    assert_eq!(probe.closed_of(peer_of(&c)), vec![Closed::Stopped]);
    expect_eof(&mut b);
    expect_eof(&mut c);
}

#[test]
fn consuming_more_than_given_is_an_error() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 1, factory(&probe, || Greedy));
    let mut s = client(running.addr());
    s.write_all(b"abc").unwrap();
    expect_eof(&mut s);
    let why = probe.wait_closed(peer_of(&s));
    assert_eq!(error_kind(&why), Some(ErrorKind::InvalidInput), "{why:?}");
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.errors, 1, "{summary:?}");
    assert_eq!(probe.closed_of(peer_of(&s)).len(), 1);
}

#[test]
fn peer_that_never_reads_is_throttled() {
    const REQUESTS: usize = 1000;
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_pause_reading_at(256 * KIB).with_max_outbox(MIB).with_read_size(1);
    let running = Running::start(limits.clone(), 2, factory(&probe, || Fanout { next: 0 }));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    let requests: Vec<u8> = (0..REQUESTS).map(|i| (i % 251) as u8).collect();
    s.write_all(&requests).unwrap();
    // Half-closed: the end of the requests must not end the replies still owed.
    s.shutdown(Shutdown::Write).unwrap();
    let conn = probe.conn(peer);

    // Wait until the server has stopped reading: its output reached the mark. (It may resume
    // while the kernel still takes output, but never takes every request: the replies to all
    // of them are far more than the kernel's buffers and the mark hold.)
    let mut taken = 0;
    wait("reading to pause", || {
        taken = probe.receive_count();
        conn.is_reading_paused()
    });
    let summary = running.server.summary();
    assert!(summary.peak_outbox <= limits.max_outbox, "{summary:?}");
    assert_eq!(summary.limit_closes, 0, "{summary:?}");
    assert!(conn.is_open(), "the connection was closed: {:?}", probe.closed_of(peer));
    assert!(probe.closed_of(peer).is_empty());
    assert!(taken < REQUESTS, "reading did not pause: {taken} requests taken");

    // Now take everything.
    let mut block = vec![0u8; BLOCK];
    for (i, &req) in requests.iter().enumerate() {
        if let Err(e) = s.read_exact(&mut block) {
            panic!("reading reply {i}: {e}");
        }
        assert_eq!(block[..4], (i as u32).to_le_bytes(), "reply {i} is out of order");
        assert!(block[4..].iter().all(|&b| b == req), "reply {i} has wrong bytes");
    }
    expect_eof(&mut s);
    assert_eq!(probe.wait_closed(peer), Closed::Peer);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.bytes_in, REQUESTS, "{summary:?}");
    assert_eq!(summary.bytes_out, REQUESTS * BLOCK, "{summary:?}");
    assert!(summary.peak_outbox <= limits.max_outbox, "{summary:?}");
    assert_eq!((summary.limit_closes, summary.errors), (0, 0), "{summary:?}");
}

#[test]
fn sends_past_the_limit_close_with_limit_exceeded() {
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_max_outbox(MIB);
    let running = Running::start(limits, 2, factory(&probe, lines(b"re:")));
    let idle = client(running.addr());
    small_rcvbuf(util::raw(&idle), 64 * KIB);
    let idle_peer = peer_of(&idle);
    let conn = probe.conn(idle_peer);
    let mut reader = client(running.addr());
    round_trip(&mut reader, "re:", "before");

    let chunk = pattern(7, 64 * KIB);
    let mut sent = 0usize;
    let err = loop {
        match conn.send(&chunk) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 4096, "256 MiB queued to a peer that does not read, and no error");
        if sent % 4 == 0 {
            round_trip(&mut reader, "re:", &format!("during {sent}"));
        }
    };
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    assert_eq!(probe.wait_closed(idle_peer), Closed::Error(err.clone()));
    assert!(!conn.is_open());
    assert_eq!(conn.send(b"more").map_err(|e| e.kind()), Err(ErrorKind::NotAssigned));
    round_trip(&mut reader, "re:", "after");
    assert_eq!(running.server.summary().limit_closes, 1);

    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.limit_closes, summary.errors, summary.forced), (1, 0, 0), "{summary:?}");
    assert_eq!(probe.closed_of(idle_peer).len(), 1);
    assert_eq!(probe.closed_of(peer_of(&reader)), vec![Closed::Stopped]);
    drop(idle);
}

#[test]
fn input_limit_closes() {
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_max_input(KIB);
    let running = Running::start(limits, 1, factory(&probe, || Hoard));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    s.write_all(&pattern(8, 4 * KIB)).unwrap();
    expect_eof(&mut s);
    let why = probe.wait_closed(peer);
    assert_eq!(error_kind(&why), Some(ErrorKind::LimitExceeded), "{why:?}");
    assert!(!probe.receives_of(peer).is_empty());
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.limit_closes, summary.errors), (1, 0), "{summary:?}");
    assert_eq!(probe.closed_of(peer).len(), 1);
}

#[test]
fn opened_greets_and_peer_close_is_reported() {
    let probe = Arc::new(Probe::default());
    let running =
        Running::start(Limits::default(), 2, factory(&probe, || Lines { prefix: b"re:", greeting: b"hello\n" }));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    // The request goes out before the greeting is read: the greeting must still come first.
    s.write_all(b"ping\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let want = b"hello\nre:ping\n";
    assert_eq!(String::from_utf8_lossy(&read_n(&mut s, want.len())), String::from_utf8_lossy(want));
    expect_eof(&mut s);
    assert_eq!(probe.wait_closed(peer), Closed::Peer);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(probe.closed_of(peer), vec![Closed::Peer], "closed exactly once");
    assert_eq!((summary.accepted, summary.closed, summary.errors), (1, 1, 0), "{summary:?}");
}

#[test]
fn peer_reset_is_reported_as_peer() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"re:")));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    round_trip(&mut s, "re:", "hi");
    util::reset(s);
    assert_eq!(probe.wait_closed(peer), Closed::Peer);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(probe.closed_of(peer), vec![Closed::Peer], "closed exactly once");
    assert_eq!(summary.errors, 0, "{summary:?}");
}

#[test]
fn outbox_close_flushes_then_closes() {
    const SIZE: usize = 2 * MIB;
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, bulk(SIZE, true)));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    s.write_all(b"x").unwrap();
    assert_eq!(read_pattern(&mut s, BULK_SEED, SIZE, 64 * KIB, Duration::ZERO), SIZE);
    expect_eof(&mut s);
    assert_eq!(probe.wait_closed(peer), Closed::Local);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.forced, summary.errors, summary.bytes_out), (0, 0, SIZE), "{summary:?}");
    assert_eq!(probe.closed_of(peer).len(), 1);
}

/// A peer that sent more than the session read before it closed: the reply queued before the
/// close must still arrive whole (the documented way to report a protocol error).
#[test]
fn outbox_close_with_unread_input_still_delivers() {
    // More than the kernel's send and receive buffers can hold, so the close comes while the
    // client is still reading.
    const SIZE: usize = 8 * MIB;
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_max_outbox(2 * SIZE);
    let running = Running::start(limits, 2, factory(&probe, bulk(SIZE, true)));
    let mut s = client(running.addr());
    small_rcvbuf(util::raw(&s), 64 * KIB);
    let peer = peer_of(&s);
    s.write_all(b"x").unwrap();
    let conn = probe.conn(peer);
    // The session has asked to close and the reply is not all sent: the server reads no more.
    wait("the session to ask to close", || !conn.is_open());
    assert!(conn.queued() > 0, "the reply went out before the client read any of it");
    // A pipelined request the server will never read.
    s.write_all(b"next request\n").unwrap();
    let got = read_pattern(&mut s, BULK_SEED, SIZE, 64 * KIB, Duration::ZERO);
    assert_eq!(got, SIZE, "the reply was cut short after {got} of {SIZE} bytes");
    expect_eof(&mut s);
    assert_eq!(probe.wait_closed(peer), Closed::Local);
    running.stop(Duration::from_secs(5));
}

/// The server's end of the connection to `peer`: `None` once closed, else whether its sending
/// side is shut down (TCP state FIN_WAIT1 or FIN_WAIT2).
fn server_end_shut(peer: SocketAddr) -> Option<bool> {
    let fd = socket_with_peer(peer)?;
    // SAFETY: all-zero bytes are a valid tcp_info.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`; a stale fd just fails.
    let r = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
    };
    const FIN_WAIT1: u8 = 4;
    const FIN_WAIT2: u8 = 5;
    Some(r == 0 && matches!(info.tcpi_state, FIN_WAIT1 | FIN_WAIT2))
}

/// The session replies and closes while nothing is unread, and the client's next request
/// arrives only after that decision, with most of the reply still in the server's send queue.
/// The server must not have closed its socket: input arriving at a closed socket is answered
/// with a reset, which destroys the reply still queued. It lingers instead: its sending side is
/// shut down, and what still comes is read and dropped until the client closes.
#[test]
fn a_request_arriving_after_a_graceful_close_does_not_reset_the_reply() {
    const SIZE: usize = MIB;
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 1, factory(&probe, bulk(SIZE, true)));
    let mut s = client(running.addr());
    small_rcvbuf(util::raw(&s), 64 * KIB);
    let peer = peer_of(&s);
    s.write_all(b"x").unwrap();
    let conn = probe.conn(peer);
    // The whole reply is handed to the kernel and the server has decided how to close:
    // closed the socket (nothing of it left in this process) or shut its sending side.
    wait("the server to close or shut its sending side", || {
        !conn.is_open() && conn.queued() == 0 && server_end_shut(peer) != Some(false)
    });
    s.write_all(b"a late request\n").unwrap();
    let got = read_pattern(&mut s, BULK_SEED, SIZE, 64 * KIB, Duration::ZERO);
    assert_eq!(got, SIZE, "the reply was cut short after {got} of {SIZE} bytes");
    expect_eof(&mut s);
    drop(s);
    assert_eq!(probe.wait_closed(peer), Closed::Local);
    running.stop(Duration::from_secs(5));
}

#[test]
fn graceful_stop_flushes_pending_output() {
    const SIZE: usize = 8 * MIB;
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_max_outbox(2 * SIZE);
    let running = Running::start(limits, 2, factory(&probe, bulk(SIZE, false)));
    let addr = running.addr();
    let mut s = client(addr);
    small_rcvbuf(util::raw(&s), 64 * KIB);
    let peer = peer_of(&s);
    s.write_all(b"x").unwrap();
    let conn = probe.conn(peer);
    wait("the reply to be queued", || conn.queued() > 0);

    let handle = running.server.clone();
    let server = running.server.clone();
    let stopper = std::thread::spawn(move || server.stop(Duration::from_secs(10)));
    wait("the stop to begin", || !conn.is_open());
    assert!(conn.queued() > 0, "the reply went out before the client read any of it");
    assert_eq!(read_pattern(&mut s, BULK_SEED, SIZE, 64 * KIB, Duration::ZERO), SIZE);
    expect_eof(&mut s);
    let summary = stopper.join().expect("stop panicked");
    assert_eq!((summary.forced, summary.closed, summary.errors), (0, 1, 0), "{summary:?}");
    assert_eq!(summary.bytes_out, SIZE, "{summary:?}");
    assert_eq!(probe.closed_of(peer), vec![Closed::Stopped]);
    // Stopping again returns the same summary; the run threads ended well.
    assert_eq!(running.stop(Duration::from_secs(1)), summary);
    assert_eq!(handle.poll(Some(Duration::ZERO)).map_err(|e| e.kind()), Err(ErrorKind::PortClosed));
    assert_eq!((handle.connections(), handle.connection_list().len()), (0, 0));

    expect_not_served(addr);
}

#[test]
fn stop_times_out_and_forces() {
    const SIZE: usize = 8 * MIB;
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_max_outbox(2 * SIZE);
    let running = Running::start(limits, 2, factory(&probe, bulk(SIZE, false)));
    let s = client(running.addr());
    small_rcvbuf(util::raw(&s), 64 * KIB);
    let peer = peer_of(&s);
    (&s).write_all(b"x").unwrap();
    let conn = probe.conn(peer);
    wait("the reply to be queued", || conn.queued() > 0);
    let summary = running.stop(Duration::from_millis(200));
    assert_eq!(summary.forced, 1, "{summary:?}");
    assert_eq!((summary.closed, summary.open), (1, 0), "{summary:?}");
    assert_eq!(probe.closed_of(peer), vec![Closed::Stopped]);
    drop(s);
}

#[test]
fn run_on_rayon_pool() {
    use rayon::prelude::*;

    const LINES: usize = 500;
    let probe = Arc::new(Probe::default());
    let sentinel = Arc::new(());
    let make = factory(&probe, lines(b""));
    let held = sentinel.clone();
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap(), move |c: &Connection| {
            let _ = &held;
            make(c)
        })
        .unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    server.run_on(&pool, 2);
    let addr = server.local_addr();
    let clients: Vec<_> = (0..2)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = client(addr);
                for i in 0..LINES {
                    round_trip(&mut s, "", &format!("client {c} line {i}"));
                }
            })
        })
        .collect();
    // The pool still runs other work while the loops serve the clients.
    let sum: u64 = pool.install(|| (0..1000u64).into_par_iter().sum());
    assert_eq!(sum, 499_500);
    let (tx, rx) = mpsc::channel();
    pool.spawn(move || tx.send(6 * 7).unwrap());
    assert_eq!(rx.recv_timeout(GUARD), Ok(42));
    for c in clients {
        c.join().expect("client failed");
    }
    wait("both connections to close", || server.summary().closed == 2);
    let summary = server.stop(Duration::from_secs(5));
    assert_eq!((summary.accepted, summary.closed, summary.errors), (2, 2, 0), "{summary:?}");
    // The loops end after the stop: they drop their handles, and with ours the server goes.
    drop(server);
    wait("the pool loops to let go of the server", || Arc::strong_count(&sentinel) == 1);
    assert_eq!(pool.install(|| (0..10u32).into_par_iter().map(|x| x * 2).sum::<u32>()), 90);
}

#[test]
fn set_factory_and_limits_at_run_time() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"a:")));
    let mut one = client(running.addr());
    round_trip(&mut one, "a:", "first");
    let make_b = factory(&probe, lines(b"b:"));
    running.server.set_factory(move |c: &Connection| make_b(c));
    let mut two = client(running.addr());
    round_trip(&mut two, "b:", "second");
    round_trip(&mut one, "a:", "first again");

    let old = running.server.limits();
    assert_eq!(old, Limits::default());
    let err = running.server.set_limits(old.clone().with_read_size(0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(running.server.limits(), old, "a refused change left its mark");
    let new = old.with_max_input(64);
    running.server.set_limits(new.clone()).unwrap();
    assert_eq!(running.server.limits(), new);

    // The new input limit applies to new and old connections alike.
    let mut three = client(running.addr());
    round_trip(&mut three, "b:", "third");
    for s in [&mut one, &mut three] {
        s.write_all(&[b'z'; 200]).unwrap();
        expect_eof(s);
        let why = probe.wait_closed(peer_of(s));
        assert_eq!(error_kind(&why), Some(ErrorKind::LimitExceeded), "{why:?}");
    }
    round_trip(&mut two, "b:", "short lines still pass");
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.limit_closes, summary.accepted), (2, 3), "{summary:?}");
}

#[test]
fn max_connections_refuses() {
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_max_connections(2);
    let running = Running::start(limits, 2, factory(&probe, lines(b"re:")));
    let mut one = client(running.addr());
    round_trip(&mut one, "re:", "one");
    let mut two = client(running.addr());
    round_trip(&mut two, "re:", "two");
    let mut three = client(running.addr());
    expect_eof(&mut three);
    wait("the refusal to be counted", || running.server.summary().refused == 1);
    assert_eq!(running.server.connections(), 2);

    drop(one);
    wait("the first connection to end", || running.server.connections() == 1);
    let mut four = client(running.addr());
    round_trip(&mut four, "re:", "four");
    round_trip(&mut two, "re:", "two again");
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.accepted, summary.refused, summary.closed), (3, 1, 3), "{summary:?}");
    assert_eq!(probe.conns.lock().unwrap().len(), 3, "a refused connection got a session");
}

#[test]
fn bad_limits_are_rejected() {
    let zeroed: [fn(&mut Limits); 6] = [
        |l| l.read_size = 0,
        |l| l.max_outbox = 0,
        |l| l.pause_reading_at = 0,
        |l| l.max_input = 0,
        |l| l.read_size = usize::MAX,
        |l| l.idle_timeout = Some(Duration::ZERO),
    ];
    for (i, zero) in zeroed.iter().enumerate() {
        let mut limits = Limits::default();
        zero(&mut limits);
        let err = Server::builder()
            .limits(limits)
            .bind("127.0.0.1:0".parse().unwrap(), |_: &Connection| -> Box<dyn Session> {
                Box::new(Probed { probe: Arc::default(), peer: "127.0.0.1:1".parse().unwrap(), id: 0, proto: Hoard })
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "case {i}: {err}");
    }
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap(), |_: &Connection| -> Box<dyn Session> {
            Box::new(Probed { probe: Arc::default(), peer: "127.0.0.1:1".parse().unwrap(), id: 0, proto: Hoard })
        })
        .unwrap();
    let err = server.set_limits(Limits::default().with_idle_timeout(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(server.limits().idle_timeout, None, "the old limits stay");
}

#[test]
fn connection_send_after_close_fails() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"re:")));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    round_trip(&mut s, "re:", "hi");
    let conn = probe.conn(peer);
    assert!(conn.is_open());
    assert_eq!(conn.peer_addr(), Some(peer));
    conn.send(b"pushed\n").unwrap();
    assert_eq!(read_n(&mut s, 7), b"pushed\n");
    drop(s);
    assert_eq!(probe.wait_closed(peer), Closed::Peer);
    assert!(!conn.is_open());
    let err = conn.send(b"late\n").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAssigned, "{err}");
    conn.close();
    assert_eq!(conn.queued(), 0);
    running.stop(Duration::from_secs(5));
    assert_eq!(probe.closed_of(peer).len(), 1);
}

#[test]
fn sessions_send_to_each_other() {
    const MEMBERS: usize = 4;
    const LINES: usize = 100;
    let probe = Arc::new(Probe::default());
    let room = Arc::new(Room::default());
    let r = room.clone();
    let running = Running::start(Limits::default(), 2, factory(&probe, move || Member { room: r.clone() }));
    let streams: Vec<TcpStream> = (0..MEMBERS).map(|_| client(running.addr())).collect();
    wait("every member to join", || room.members.lock().unwrap().len() == MEMBERS);
    let threads: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, mut s)| {
            std::thread::spawn(move || {
                let text: String = (0..LINES).map(|i| format!("{c} {i}\n")).collect();
                s.write_all(text.as_bytes()).unwrap();
                let mut got = String::new();
                let mut buf = [0u8; 4096];
                while got.matches('\n').count() < (MEMBERS - 1) * LINES {
                    let n = s.read(&mut buf).expect("reading the room");
                    assert!(n > 0, "the room closed on member {c}");
                    got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
                }
                let mut next = HashMap::new();
                for line in got.lines() {
                    let (from, i) = line.split_once(' ').unwrap();
                    let (from, i): (usize, usize) = (from.parse().unwrap(), i.parse().unwrap());
                    assert_ne!(from, c, "member {c} got its own line");
                    let want = next.entry(from).or_insert(0);
                    assert_eq!(i, *want, "member {c}: lines of {from} out of order");
                    *want += 1;
                }
                assert_eq!(next.len(), MEMBERS - 1);
                s
            })
        })
        .collect();
    let streams: Vec<TcpStream> = threads.into_iter().map(|t| t.join().expect("a member failed")).collect();
    drop(streams);
    wait("every member to leave", || running.server.summary().closed == MEMBERS);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.errors, summary.limit_closes), (0, 0), "{summary:?}");
    assert!(room.members.lock().unwrap().is_empty());
}

/// A server whose last handle is dropped without `stop`, served by the test thread alone;
/// returns it, the probe and a client that got its greeting.
fn greeted_unstopped_server() -> (Server, Arc<Probe>, TcpStream) {
    let probe = Arc::new(Probe::default());
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap(), factory(&probe, || Lines { prefix: b"", greeting: b"hi\n" }))
        .unwrap();
    let mut s = client(server.local_addr());
    wait("the server to accept", || {
        server.poll(Some(Duration::from_millis(10))).unwrap();
        server.summary().accepted == 1
    });
    assert_eq!(read_n(&mut s, 3), b"hi\n");
    (server, probe, s)
}

/// After the last handle is gone: the session was told, the client sees the end, and the
/// address takes no more connections.
/// A connect to a server that has stopped is refused, or gets end of stream at once.
#[track_caller]
fn expect_not_served(addr: SocketAddr) {
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut late) => {
            late.set_read_timeout(Some(GUARD)).unwrap();
            expect_eof(&mut late);
        }
    }
}

#[track_caller]
fn check_dropped(probe: &Probe, mut s: TcpStream, addr: SocketAddr) {
    assert_eq!(probe.closed_of(peer_of(&s)), vec![Closed::Stopped], "closed once, as Stopped");
    expect_eof(&mut s);
    expect_not_served(addr);
}

#[test]
fn dropping_the_last_handle_tells_sessions() {
    let (server, probe, s) = greeted_unstopped_server();
    let addr = server.local_addr();
    probe.conns.lock().unwrap().clear();
    drop(server);
    check_dropped(&probe, s, addr);
}

/// As above, with a `Connection` handle still held somewhere (a registry of the application,
/// here the probe): a handle "stays valid after the connection ended", it must not keep the
/// server's sockets open.
#[test]
fn dropping_the_last_handle_closes_sockets_despite_connection_handles() {
    let (server, probe, s) = greeted_unstopped_server();
    let addr = server.local_addr();
    assert_eq!(probe.conns.lock().unwrap().len(), 1);
    drop(server);
    check_dropped(&probe, s, addr);
}

#[test]
fn connection_close_from_another_thread_flushes() {
    const SIZE: usize = MIB;
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"re:")));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    round_trip(&mut s, "re:", "hi");
    let conn = probe.conn(peer);
    conn.send(&pattern(BULK_SEED, SIZE)).unwrap();
    conn.close();
    assert!(!conn.is_open());
    assert_eq!(conn.send(b"late").map_err(|e| e.kind()), Err(ErrorKind::NotAssigned));
    assert_eq!(read_pattern(&mut s, BULK_SEED, SIZE, 64 * KIB, Duration::ZERO), SIZE);
    expect_eof(&mut s);
    assert_eq!(probe.wait_closed(peer), Closed::Local);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.forced, summary.errors), (0, 0), "{summary:?}");
}

#[test]
fn opened_error_sends_nothing() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 1, factory(&probe, || FailOpen));
    let mut s = client(running.addr());
    expect_eof(&mut s);
    assert_eq!(probe.wait_closed(peer_of(&s)), Closed::Error(boom()));
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.accepted, summary.errors, summary.bytes_out), (1, 1, 0), "{summary:?}");
}

/// `Connection::close` "closes the connection once everything queued has been sent": called
/// by a session on its own connection after queuing a reply, the reply must still go out.
#[test]
fn connection_close_inside_own_session_keeps_the_reply() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, || QuitByHandle));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    round_trip(&mut s, "re:", "hi");
    s.write_all(b"quit\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(String::from_utf8_lossy(&got), "bye\n", "the reply queued before the close was lost");
    assert_eq!(probe.wait_closed(peer), Closed::Local);
    running.stop(Duration::from_secs(5));
}

/// A stop that begins while a session is handling a request: the reply that call queues is
/// part of what the graceful stop flushes.
#[test]
fn stop_during_a_session_call_keeps_its_reply() {
    let probe = Arc::new(Probe::default());
    let (entered_tx, entered) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let make = move || Gate { entered: entered_tx.clone(), go: go_rx.clone() };
    let running = Running::start(Limits::default(), 2, factory(&probe, make));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    s.write_all(b"work\n").unwrap();
    entered.recv_timeout(GUARD).expect("the session to begin the request");
    running.server.begin_stop();
    go.send(()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(String::from_utf8_lossy(&got), "done\n", "the reply of the request in progress was lost");
    assert_eq!(probe.wait_closed(peer), Closed::Stopped);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.forced, 0, "{summary:?}");
}

/// The fd of this process's socket whose peer is `peer` (the server's end of a client).
fn socket_with_peer(peer: SocketAddr) -> Option<std::os::fd::RawFd> {
    let SocketAddr::V4(peer) = peer else { return None };
    util::fd_list().into_iter().map(|(fd, _)| fd).find(|&fd| {
        // SAFETY: all-zero bytes are a valid sockaddr_in.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: getpeername writes at most `len` bytes into `addr`; a stale fd just fails.
        let r = unsafe { libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) };
        r == 0
            && i32::from(addr.sin_family) == libc::AF_INET
            && u16::from_be(addr.sin_port) == peer.port()
            && u32::from_be(addr.sin_addr.s_addr) == u32::from(*peer.ip())
    })
}

/// A session's replies often go out in several writes (one per call, plus sends from other
/// threads); with Nagle's algorithm on, each write after the first waits for the peer's
/// delayed ACK (about 40 ms on Linux). Accepted connections should have TCP_NODELAY.
#[test]
fn accepted_connections_use_nodelay() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 1, factory(&probe, lines(b"re:")));
    let mut s = client(running.addr());
    round_trip(&mut s, "re:", "hi");
    let fd = socket_with_peer(peer_of(&s)).expect("the server's end of the connection");
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int into `on`; `fd` stays open while `s` is connected.
    let r = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&mut on as *mut libc::c_int).cast(), &mut len)
    };
    assert_eq!(r, 0, "getsockopt: {}", io::Error::last_os_error());
    running.stop(Duration::from_secs(5));
    assert_ne!(on, 0, "the server's socket has Nagle's algorithm on (TCP_NODELAY off)");
}

#[test]
fn many_connections_stress() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 8;
    const REQUESTS: usize = 200;
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"re:")));
    let addr = running.addr();
    let bytes_in = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let bytes_in = bytes_in.clone();
            std::thread::spawn(move || {
                let mut conns: Vec<(TcpStream, Vec<u8>)> = (0..PER_THREAD)
                    .map(|k| {
                        let c = t * PER_THREAD + k;
                        let mut s = client(addr);
                        let text: String = (0..REQUESTS).map(|i| format!("c{c} r{i}\n")).collect();
                        let replies: String = (0..REQUESTS).map(|i| format!("re:c{c} r{i}\n")).collect();
                        s.write_all(text.as_bytes()).unwrap();
                        bytes_in.fetch_add(text.len(), Ordering::Relaxed);
                        (s, replies.into_bytes())
                    })
                    .collect();
                for (k, (s, replies)) in conns.iter_mut().enumerate() {
                    let got = read_n(s, replies.len());
                    assert!(got == *replies, "connection {}: replies differ", t * PER_THREAD + k);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    let total = THREADS * PER_THREAD;
    wait("every connection to close", || running.server.summary().closed == total);
    let summary = running.stop(Duration::from_secs(5));
    eprintln!("{total} connections x {REQUESTS} requests in {:?}", started.elapsed());
    assert_eq!((summary.accepted, summary.closed, summary.errors), (total, total, 0), "{summary:?}");
    assert_eq!(summary.bytes_in, bytes_in.load(Ordering::Relaxed));
    assert_eq!(summary.bytes_out, summary.bytes_in + 3 * total * REQUESTS);
}

/// A server restricted to a port range: it listens inside the range and describes itself
/// with that port.
#[test]
fn server_binds_inside_a_port_range() {
    use cport::net::PortRange;
    // A free port to start the range at (the range leaves room for a few taken ones).
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().min(65_000);
    let range = PortRange::new(first, first + 30).unwrap();
    struct Quiet;
    impl Session for Quiet {
        fn receive(&mut self, data: &[u8], _out: &mut Outbox<'_>) -> cport::Result<usize> {
            Ok(data.len())
        }
    }
    let server = Server::builder()
        .bind_in_range("127.0.0.1".parse().unwrap(), &range, |_c: &Connection| Box::new(Quiet) as Box<dyn Session>)
        .unwrap();
    let port = server.local_addr().port();
    assert!(range.contains(port), "{port} outside {range}");
    let desc = server.host_description().unwrap();
    assert_eq!(desc.addrs(), &[server.local_addr()]);
    assert_eq!(desc.to_string().parse::<cport::net::HostDescription>().unwrap(), desc);
    let summary = server.stop(Duration::from_secs(1));
    assert_eq!(summary.accepted, 0);
}

/// Durations too long to add to the clock are "forever", not a panic.
#[test]
fn huge_durations_do_not_panic() {
    let probe = Arc::new(Probe::default());
    let limits = Limits::default().with_linger(Duration::MAX);
    let running = Running::start(limits, 1, factory(&probe, lines(b"re:")));
    let mut s = client(running.addr());
    round_trip(&mut s, "re:", "hi");
    drop(s);
    let summary = running.stop(Duration::MAX);
    assert_eq!(summary.forced, 0, "{summary:?}");
}

/// A session that stops the server from inside its own call (a SHUTDOWN command) does not
/// deadlock: the stop begins, its reply is still sent, and `run` ends everywhere.
#[test]
fn stop_from_inside_a_session_begins_the_stop() {
    struct Shutdown(Arc<std::sync::OnceLock<Server>>);
    impl Session for Shutdown {
        fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
            let server = self.0.get().expect("server set before clients connect");
            // poll from inside a call is refused rather than waiting on this very connection.
            assert_eq!(server.poll(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
            let summary = server.stop(Duration::from_secs(5));
            assert_eq!(summary.open, 1, "{summary:?}");
            out.send(b"stopping\n");
            Ok(data.len())
        }
    }
    let cell = Arc::new(std::sync::OnceLock::new());
    let c = cell.clone();
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap(), move |_: &Connection| Box::new(Shutdown(c.clone())) as Box<dyn Session>)
        .unwrap();
    cell.set(server.clone()).unwrap();
    let runner = {
        let s = server.clone();
        std::thread::spawn(move || s.run())
    };
    let mut s = client(server.local_addr());
    s.write_all(b"x").unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"stopping\n");
    // The run thread finishes the stop by itself once the connection is gone.
    runner.join().unwrap().unwrap();
    assert!(server.is_stopped());
    let summary = server.stop(Duration::from_secs(5));
    assert_eq!((summary.accepted, summary.closed, summary.forced), (1, 1, 0), "{summary:?}");
}

/// A session may pace itself: it leaves whole requests unconsumed once its output reaches the
/// pause mark, and is called again with them (without new bytes) when the output has drained.
#[test]
fn a_pacing_session_is_fed_again_when_output_drains() {
    paced(false);
}

/// The same when the peer ends its input right after the requests: the deferred ones are
/// still answered before the connection closes.
#[test]
fn a_pacing_session_finishes_after_the_peer_ends_its_input() {
    paced(true);
}

fn paced(half_close: bool) {
    const REPLY: usize = 64 * KIB;
    const REQUESTS: usize = 100;
    const PAUSE: usize = 256 * KIB;
    struct Paced;
    impl Session for Paced {
        fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
            let mut used = 0;
            for _ in data {
                if out.buffer().len() + out.connection().queued() >= PAUSE {
                    break; // enough in flight: the rest waits in the tail
                }
                out.send(&[b'r'; REPLY]);
                used += 1;
            }
            Ok(used)
        }
    }
    let limits = Limits::default().with_pause_reading_at(PAUSE).with_max_outbox(4 * PAUSE);
    let conn: Arc<Mutex<Option<Connection>>> = Arc::default();
    let keep = conn.clone();
    let server = Server::builder()
        .limits(limits)
        .bind("127.0.0.1:0".parse().unwrap(), move |c: &Connection| {
            *keep.lock().unwrap() = Some(c.clone());
            Box::new(Paced) as Box<dyn Session>
        })
        .unwrap();
    let runner = {
        let s = server.clone();
        std::thread::spawn(move || s.run())
    };
    let mut s = client(server.local_addr());
    // Every request in one write: no more bytes come after it.
    s.write_all(&[b'q'; REQUESTS]).unwrap();
    if half_close {
        s.shutdown(Shutdown::Write).unwrap();
        // Not reading yet: the kernel's buffers fill and output queues in the server, so the
        // session defers requests after the peer has ended its input.
        small_rcvbuf(util::raw(&s), 64 * KIB);
        wait("output to queue in the server", || conn.lock().unwrap().as_ref().is_some_and(|c| c.queued() > 0));
    }
    let mut got = 0;
    let mut buf = vec![0; 64 * KIB];
    while got < REQUESTS * REPLY {
        let n = s.read(&mut buf).expect("all replies arrive (no stall with requests left in the tail)");
        assert!(n > 0, "closed after {got} bytes");
        assert!(buf[..n].iter().all(|&b| b == b'r'));
        got += n;
    }
    if half_close {
        expect_eof(&mut s);
    }
    let summary = server.stop(Duration::from_secs(5));
    assert_eq!(summary.bytes_out, REQUESTS * REPLY, "{summary:?}");
    assert!(summary.peak_outbox <= PAUSE + REPLY, "{summary:?}");
    assert_eq!(summary.limit_closes, 0, "{summary:?}");
    runner.join().unwrap().unwrap();
}

/// Issue 14's race, made deterministic. A session paces itself (it consumes nothing while its
/// output is at the pause mark). One of its calls begins with the output at the mark (a send
/// from outside the session put it there) and consumes nothing; while the call runs, the peer
/// reads everything and the output drains (a write completes on the other run thread). No new
/// bytes will come: the session must be fed its unconsumed requests again once the output has
/// room, or the peer, which pipelined them, waits for its replies forever.
#[test]
fn a_session_that_paced_is_fed_again_when_its_output_drained_during_the_call() {
    const PAUSE: usize = 64 * KIB;
    const FILL: usize = 8 * MIB;
    struct Gate {
        paced: Mutex<mpsc::Sender<()>>,
        go: Mutex<mpsc::Receiver<()>>,
        once: std::sync::atomic::AtomicBool,
    }
    struct Pacer(Arc<Gate>);
    impl Session for Pacer {
        fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
            if out.connection().queued() >= PAUSE {
                if !self.0.once.swap(true, Ordering::SeqCst) {
                    // Hold this call until the test has seen the output drain.
                    self.0.paced.lock().unwrap().send(()).unwrap();
                    self.0.go.lock().unwrap().recv_timeout(GUARD).expect("the test lets the call end");
                }
                return Ok(0);
            }
            let mut used = 0;
            while let Some(end) = data[used..].iter().position(|&b| b == b'\n') {
                out.send(b"ok\n");
                used += end + 1;
            }
            Ok(used)
        }
    }
    let (paced_tx, paced_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        paced: Mutex::new(paced_tx),
        go: Mutex::new(go_rx),
        once: std::sync::atomic::AtomicBool::new(false),
    });
    let conn: Arc<Mutex<Option<Connection>>> = Arc::default();
    let keep = conn.clone();
    let limits = Limits::default().with_pause_reading_at(PAUSE).with_max_outbox(2 * FILL);
    let factory: Factory = Box::new(move |c: &Connection| {
        *keep.lock().unwrap() = Some(c.clone());
        Box::new(Pacer(gate.clone())) as Box<dyn Session>
    });
    let running = Running::start(limits, 2, factory);
    let mut s = client(running.addr());
    small_rcvbuf(util::raw(&s), 64 * KIB);
    wait("the server to accept the client", || conn.lock().unwrap().is_some());
    let server_conn = conn.lock().unwrap().clone().unwrap();
    // The output at the mark: far more than the kernel's buffers take while nobody reads.
    server_conn.send(&vec![b'f'; FILL]).unwrap();
    assert!(server_conn.queued() >= PAUSE);
    s.write_all(b"req\nreq\nreq\n").unwrap();
    paced_rx.recv_timeout(GUARD).expect("the session is called with the output at the mark");
    // While that call runs: the peer reads everything, and the output drains.
    assert_eq!(read_n(&mut s, FILL), vec![b'f'; FILL]);
    wait("the output to drain", || server_conn.queued() == 0);
    go_tx.send(()).unwrap();
    assert_eq!(read_n(&mut s, 9), b"ok\nok\nok\n", "the requests left in the tail are served");
    running.stop(Duration::from_secs(5));
}

// ---- idle timeouts ----

/// The limits of the idle-timeout tests: `after` without bytes closes a connection.
fn idle_limits(after: Duration) -> Limits {
    Limits::default().with_idle_timeout(after)
}

/// A connection that receives nothing for `Limits::idle_timeout` is closed: its reply to the
/// last request is sent first, the session is told `IdleTimeout` once, and the summary counts
/// it (not as an error). A connection that never sends is closed the same way.
#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(idle_limits(Duration::from_millis(100)), 2, factory(&probe, lines(b"re:")));
    let mut talker = client(running.addr());
    round_trip(&mut talker, "re:", "first");
    round_trip(&mut talker, "re:", "second");
    let mut silent = client(running.addr());
    for s in [&mut talker, &mut silent] {
        expect_eof(s);
        let peer = peer_of(s);
        // The server lingers after its end of stream until the client closes.
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(probe.wait_closed(peer), Closed::IdleTimeout);
    }
    assert_eq!(running.server.summary().idle_closes, 2);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.idle_closes, summary.closed, summary.errors, summary.forced), (2, 2, 0, 0), "{summary:?}");
    assert_eq!(probe.closed.lock().unwrap().len(), 2, "closed is called once per connection");
}

/// A connection whose reading is paused for back-pressure (its peer does not take the replies)
/// is not idle by its peer's fault: it stays open however long the pause lasts (here: past
/// another connection's idle timeout that began after the pause), and its time counts again
/// once reading resumes.
#[test]
fn a_connection_paused_for_back_pressure_is_not_timed_out() {
    const REQUESTS: usize = 300;
    let probe = Arc::new(Probe::default());
    let limits =
        idle_limits(Duration::from_millis(100)).with_pause_reading_at(64 * KIB).with_max_outbox(MIB).with_read_size(1);
    let running = Running::start(limits, 2, factory(&probe, || Fanout { next: 0 }));
    let mut s = client(running.addr());
    small_rcvbuf(util::raw(&s), 64 * KIB);
    let peer = peer_of(&s);
    let requests: Vec<u8> = (0..REQUESTS).map(|i| (i % 251) as u8).collect();
    s.write_all(&requests).unwrap();
    let conn = probe.conn(peer);
    wait("reading to pause", || conn.is_reading_paused());

    // A whole idle timeout passes while paused: another connection's, begun after the pause.
    let mut other = client(running.addr());
    expect_eof(&mut other);
    other.shutdown(Shutdown::Write).unwrap();
    assert_eq!(probe.wait_closed(peer_of(&other)), Closed::IdleTimeout);
    assert!(probe.closed_of(peer).is_empty(), "a paused connection was closed: {:?}", probe.closed_of(peer));
    assert!(conn.is_open() && conn.is_reading_paused());

    // Take every reply: reading resumes, the requests are served, then the time runs out.
    let mut block = vec![0u8; BLOCK];
    for (i, &req) in requests.iter().enumerate() {
        if let Err(e) = s.read_exact(&mut block) {
            panic!("reading reply {i}: {e}");
        }
        assert_eq!(block[..4], (i as u32).to_le_bytes(), "reply {i} is out of order");
        assert!(block[4..].iter().all(|&b| b == req), "reply {i} has wrong bytes");
    }
    expect_eof(&mut s);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(probe.wait_closed(peer), Closed::IdleTimeout);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.idle_closes, summary.limit_closes, summary.errors), (2, 0, 0), "{summary:?}");
}

/// Sends from elsewhere take a connection's output to the pause mark while its read waits for
/// the peer, who reads nothing: when the idle time runs out, the peer is behind on our output,
/// not idle, so reading pauses instead of the connection closing. Once the peer has taken the
/// output, reading resumes and the time counts again.
#[test]
fn an_idle_timeout_with_the_output_at_the_pause_mark_pauses_reading() {
    const FILL: usize = 8 * MIB;
    // Long enough for the test to queue the output before it runs out.
    const IDLE: Duration = Duration::from_millis(500);
    let probe = Arc::new(Probe::default());
    let limits = idle_limits(IDLE).with_pause_reading_at(64 * KIB).with_max_outbox(2 * FILL);
    let running = Running::start(limits, 2, factory(&probe, || Lines { prefix: b"re:", greeting: b"hello\n" }));
    let mut s = client(running.addr());
    small_rcvbuf(util::raw(&s), 64 * KIB);
    let peer = peer_of(&s);
    // The greeting was written in the same hold of the connection's output lock that started
    // the first read: once it arrives, the read is waiting, and the send below comes after.
    assert_eq!(read_n(&mut s, 6), b"hello\n");
    let conn = probe.conn(peer);
    conn.send(&vec![b'f'; FILL]).unwrap();
    assert!(!conn.is_reading_paused(), "the read was waiting when the output reached the mark");
    wait("the idle time to run out and reading to pause", || conn.is_reading_paused());
    assert_eq!(running.server.port_stats().timed_out, 1, "the read ended on its idle timeout");
    assert!(conn.is_open() && probe.closed_of(peer).is_empty(), "closed: {:?}", probe.closed_of(peer));

    assert_eq!(read_n(&mut s, FILL), vec![b'f'; FILL]);
    round_trip(&mut s, "re:", "reading resumed");
    expect_eof(&mut s);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(probe.wait_closed(peer), Closed::IdleTimeout);
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.idle_closes, summary.errors), (1, 0), "{summary:?}");
}

/// `set_limits` changes the idle timeout of reads started after it: a connection already
/// waiting keeps the time it began with until its next bytes; new connections and the next
/// read of old ones use the new one. `None` turns it off the same way.
#[test]
fn idle_timeout_changes_apply_to_new_reads() {
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, lines(b"re:")));
    let short = running.server.limits().with_idle_timeout(Duration::from_millis(100));
    let closes_idle = |s: &mut TcpStream| {
        expect_eof(s);
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(probe.wait_closed(peer_of(s)), Closed::IdleTimeout);
    };

    let mut old = client(running.addr());
    round_trip(&mut old, "re:", "before the change");
    running.server.set_limits(short.clone()).unwrap();
    let mut new = client(running.addr());
    closes_idle(&mut new);
    assert!(probe.closed_of(peer_of(&old)).is_empty(), "a read started before the change timed out");
    round_trip(&mut old, "re:", "its next read has the new time");
    closes_idle(&mut old);

    // Off again: a connection that began without it is not closed.
    running.server.set_limits(short.clone().with_idle_timeout(None)).unwrap();
    let mut unbounded = client(running.addr());
    round_trip(&mut unbounded, "re:", "no limit");
    running.server.set_limits(short).unwrap();
    let mut bounded = client(running.addr());
    closes_idle(&mut bounded);
    assert!(probe.closed_of(peer_of(&unbounded)).is_empty(), "a read started without the limit timed out");
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.idle_closes, 3, "{summary:?}");
    assert_eq!(probe.closed_of(peer_of(&unbounded)), vec![Closed::Stopped]);
}

/// Lingering closes have their own limit, `Limits::linger`, not the idle timeout: an idle
/// close lingers like any graceful one, and so does a close that comes while a read with an
/// idle timeout is waiting (that read ends on the timeout during the linger; the linger goes
/// on). A lingering read that ended the linger early would close the socket, and the kernel
/// would answer the peer's late bytes with a reset.
#[test]
fn lingering_closes_are_bounded_by_the_linger_not_the_idle_timeout() {
    const IDLE: Duration = Duration::from_millis(300);
    let probe = Arc::new(Probe::default());
    let limits = idle_limits(IDLE).with_linger(GUARD * 3);
    let running = Running::start(limits.clone(), 2, factory(&probe, lines(b"re:")));
    // Closed for idling: the server shuts its sending side and lingers.
    let mut idle = client(running.addr());
    expect_eof(&mut idle);
    assert_eq!(server_end_shut(peer_of(&idle)), Some(true), "the server shut its sending side and lingers");
    // Closed by the application while its next read, with an idle timeout, waits.
    let mut closed = client(running.addr());
    round_trip(&mut closed, "re:", "hi");
    probe.conn(peer_of(&closed)).close();
    expect_eof(&mut closed);

    // More than an idle time passes for both: another connection's, longer, begun after.
    running.server.set_limits(limits.with_idle_timeout(IDLE * 3)).unwrap();
    let mut other = client(running.addr());
    expect_eof(&mut other);
    for s in [&mut idle, &mut closed] {
        let peer = peer_of(s);
        assert_eq!(server_end_shut(peer), Some(true), "the linger ended early: {:?}", probe.closed_of(peer));
        assert!(probe.closed_of(peer).is_empty());
        // Late bytes are read and dropped, not answered with a reset.
        s.write_all(b"late\n").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).map_err(|e| e.kind()), Ok(0), "the end of stream, no reset");
    }
    for (s, why) in [(idle, Closed::IdleTimeout), (closed, Closed::Local), (other, Closed::IdleTimeout)] {
        let peer = peer_of(&s);
        drop(s);
        assert_eq!(probe.wait_closed(peer), why);
    }
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!((summary.idle_closes, summary.closed, summary.forced), (2, 3, 0), "{summary:?}");
}

// ---- loops on rayon pools ----

/// An idle loop on a pool costs about what an idle `run` does: over a stretch in which nothing
/// happens (half a second, measured by a read timing out on a port of the test's own), it
/// waits in the server's port a handful of times, not once per `pool_slice` (2 ms: ~250 waits
/// of two `epoll_wait` calls each). It still serves, and still lets the pool run other work.
#[test]
fn an_idle_pool_loop_sleeps_like_run() {
    use cport::{Port, Request, Status};

    const STRETCH: Duration = Duration::from_millis(500);
    let probe = Arc::new(Probe::default());
    let make = factory(&probe, lines(b"re:"));
    let server = Server::builder().bind("127.0.0.1:0".parse().unwrap(), move |c: &Connection| make(c)).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    server.run_on(&pool, 1);
    let mut s = client(server.local_addr());
    round_trip(&mut s, "re:", "before");

    let clock = Port::builder().threads(0).build().unwrap();
    let (ours, _quiet) = std::os::unix::net::UnixStream::pair().unwrap();
    let timer = clock.assign(cport::driver::UnixStream::new(ours), 1).unwrap();
    let before = server.port_stats();
    clock.start_io(&timer, Request::read_some(vec![0; 1]).timeout(STRETCH)).unwrap();
    let c = clock.next_completion(Some(GUARD)).unwrap().expect("the stretch ends");
    assert_eq!(c.status(), Status::TimedOut);
    let after = server.port_stats();
    let waits = (after.epoll_waits - before.epoll_waits) + (after.parks - before.parks);
    // Doubling from 2 ms to 100 ms: about 10 waits (20 epoll_waits) in the stretch.
    assert!(waits <= 60, "an idle loop waited {waits} times in {STRETCH:?}: {before:?} -> {after:?}");

    let (tx, rx) = mpsc::channel();
    pool.spawn(move || tx.send(6 * 7).unwrap());
    assert_eq!(rx.recv_timeout(GUARD), Ok(42), "the pool runs other work beside an idle loop");
    round_trip(&mut s, "re:", "after");
    drop(s);
    wait("the connection to close", || server.summary().closed == 1);
    let summary = server.stop(Duration::from_secs(5));
    assert_eq!((summary.accepted, summary.errors), (1, 0), "{summary:?}");
}

/// `run_on_global` places the loops on rayon's global pool: they serve, the pool runs other
/// work meanwhile, and they let go of the server once it stops.
#[test]
fn run_on_rayon_global_pool() {
    let probe = Arc::new(Probe::default());
    let sentinel = Arc::new(());
    let make = factory(&probe, lines(b"g:"));
    let held = sentinel.clone();
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap(), move |c: &Connection| {
            let _ = &held;
            make(c)
        })
        .unwrap();
    server.run_on_global(2);
    let mut s = client(server.local_addr());
    for i in 0..50 {
        round_trip(&mut s, "g:", &format!("line {i}"));
    }
    let (tx, rx) = mpsc::channel();
    rayon::spawn(move || tx.send(6 * 7).unwrap());
    assert_eq!(rx.recv_timeout(GUARD), Ok(42), "the global pool runs other work beside the loops");
    drop(s);
    wait("the connection to close", || server.summary().closed == 1);
    let summary = server.stop(Duration::from_secs(5));
    assert_eq!((summary.accepted, summary.closed, summary.errors), (1, 1, 0), "{summary:?}");
    drop(server);
    wait("the pool loops to let go of the server", || Arc::strong_count(&sentinel) == 1);
}

// ---- when `receive` is called again ----

/// `Session::receive`'s rule: a call that consumed something and left bytes is followed by
/// another with the rest, without new bytes, so a session may take one message per call; a
/// call that consumed nothing (a partial message) is called again only when more bytes come.
#[test]
fn a_session_may_take_one_message_per_call() {
    /// Replies to the first whole line only.
    struct OneLine;
    impl Proto for OneLine {
        fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
            let Some(end) = data.iter().position(|&b| b == b'\n') else { return Ok(0) };
            out.send(b"re:");
            out.send(&data[..=end]);
            Ok(end + 1)
        }
    }
    let probe = Arc::new(Probe::default());
    let running = Running::start(Limits::default(), 2, factory(&probe, || OneLine));
    let mut s = client(running.addr());
    let peer = peer_of(&s);
    s.write_all(b"a\nbb\nccc\npart").unwrap();
    assert_eq!(read_n(&mut s, 18), b"re:a\nre:bb\nre:ccc\n");
    wait("the call on the partial line", || probe.receives_of(peer).len() == 4);
    s.write_all(b"ial\n").unwrap();
    assert_eq!(read_n(&mut s, 11), b"re:partial\n");
    // One read of the 13 bytes, then a call per line with the rest; the partial line waited
    // for its end.
    assert_eq!(probe.receives_of(peer), [(13, 2), (11, 3), (8, 4), (4, 0), (8, 8)], "(data, consumed) per call");
    let summary = running.stop(Duration::from_secs(5));
    assert_eq!(summary.errors, 0, "{summary:?}");
}
