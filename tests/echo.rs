//! Echo round trips with many threads taking completions from one port: every completion is
//! handled by whichever thread gets it, both ends of every connection go through the port.

mod util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use cport::{Completion, Op, Port, Request, Status};
use util::{assigned_pair, next, port, tcp_pair};

const CONNS: usize = 32;
const ROUNDS: usize = 200;
const TAKERS: usize = 8;
/// Token of the posts that tell the takers to stop.
const STOP: u64 = u64::MAX;

/// Client message of round `r` on connection `c`: its length and bytes vary with both.
fn message(c: usize, r: usize) -> Vec<u8> {
    let len = 1 + (c * 7 + r * 13) % 300;
    util::pattern((c * 1_000 + r) as u64, len)
}

fn server_token(c: usize) -> u64 {
    (c as u64) << 1
}

fn client_token(c: usize) -> u64 {
    ((c as u64) << 1) | 1
}

struct State {
    /// Round each client is in (only ever touched by the thread handling that client's
    /// completion, one at a time, since a client has one I/O in flight).
    rounds: Vec<AtomicUsize>,
    /// Round trips whose echo was checked.
    echoed: AtomicUsize,
    /// Bytes the server side echoed.
    server_bytes: AtomicUsize,
    /// Clients that finished all their rounds.
    finished: AtomicUsize,
    /// Completions handled, per taker thread.
    handled: Vec<AtomicUsize>,
    /// The first failure, if any (a taker records it and stops the rest).
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
}

impl State {
    fn fail(&self, port: &Port, why: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(why);
        }
        self.failed.store(true, Ordering::SeqCst);
        for _ in 0..TAKERS {
            let _ = port.post(STOP, 0);
        }
    }
}

/// Handles one completion; returns false when the taker should stop.
fn handle(port: &Port, st: &State, mut c: Completion) -> bool {
    if c.op() == Op::Post {
        return c.token() != STOP;
    }
    if c.status() != Status::Ok {
        st.fail(port, format!("unexpected completion {c:?}: {:?}", c.error()));
        return false;
    }
    let isb = c.isb().expect("an I/O completion carries its ISB").clone();
    let conn = (c.token() >> 1) as usize;
    let is_client = c.token() & 1 == 1;
    let started = match (is_client, c.op()) {
        // Server: echo what arrived, then read again once the echo is out.
        (false, Op::Read) => {
            let mut buf = c.take_buffer().unwrap();
            buf.truncate(c.bytes());
            st.server_bytes.fetch_add(c.bytes(), Ordering::Relaxed);
            port.write(&isb, buf)
        }
        (false, Op::Write) => port.start_io(&isb, Request::read_some(vec![0; 512])),
        // Client: after sending, read the echo of exactly what was sent.
        (true, Op::Write) => port.start_io(&isb, Request::read_exact(vec![0; c.bytes()])),
        (true, Op::Read) => {
            let r = st.rounds[conn].load(Ordering::Relaxed);
            let want = message(conn, r);
            if c.data() != &want[..] {
                st.fail(port, format!("conn {conn} round {r}: echo {:?} != sent {:?}", c.data(), want));
                return false;
            }
            st.echoed.fetch_add(1, Ordering::Relaxed);
            let r = r + 1;
            st.rounds[conn].store(r, Ordering::Relaxed);
            if r == ROUNDS {
                if st.finished.fetch_add(1, Ordering::SeqCst) + 1 == CONNS {
                    for _ in 0..TAKERS {
                        port.post(STOP, 0).unwrap();
                    }
                }
                return true;
            }
            port.write(&isb, message(conn, r))
        }
        (_, op) => {
            st.fail(port, format!("unexpected operation {op} in {c:?}"));
            return false;
        }
    };
    if let Err(e) = started {
        st.fail(port, format!("starting the next I/O of token {} failed: {e}", c.token()));
        return false;
    }
    true
}

#[test]
fn eight_threads_echo_32_connections_200_round_trips() {
    echo_32_connections(2);
}

/// The same with no workers: the eight takers poll epoll themselves, one at a time.
#[test]
fn eight_polling_threads_echo_32_connections_200_round_trips() {
    echo_32_connections(0);
}

fn echo_32_connections(workers: usize) {
    let port = port(workers);
    let mut streams = Vec::new();
    for c in 0..CONNS {
        let (server, client) = tcp_pair();
        let s = port.assign(cport::driver::TcpStream::new(server), server_token(c)).unwrap();
        let k = port.assign(cport::driver::TcpStream::new(client), client_token(c)).unwrap();
        streams.push((s, k));
    }
    assert_eq!(port.streams(), 2 * CONNS);
    let st = State {
        rounds: (0..CONNS).map(|_| AtomicUsize::new(0)).collect(),
        echoed: AtomicUsize::new(0),
        server_bytes: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        handled: (0..TAKERS).map(|_| AtomicUsize::new(0)).collect(),
        failure: Mutex::new(None),
        failed: AtomicBool::new(false),
    };
    for (c, (s, k)) in streams.iter().enumerate() {
        port.start_io(s, Request::read_some(vec![0; 512])).unwrap();
        port.write(k, message(c, 0)).unwrap();
    }
    std::thread::scope(|scope| {
        for t in 0..TAKERS {
            let (port, st) = (&port, &st);
            scope.spawn(move || loop {
                let c = next(port);
                st.handled[t].fetch_add(1, Ordering::Relaxed);
                if !handle(port, st, c) {
                    break;
                }
            });
        }
    });
    if let Some(why) = st.failure.lock().unwrap().take() {
        panic!("{why}");
    }
    assert!(!st.failed.load(Ordering::SeqCst));
    assert_eq!(st.echoed.load(Ordering::SeqCst), CONNS * ROUNDS, "every round trip is echoed once");
    assert_eq!(st.finished.load(Ordering::SeqCst), CONNS);
    for (c, r) in st.rounds.iter().enumerate() {
        assert_eq!(r.load(Ordering::SeqCst), ROUNDS, "connection {c}");
    }
    let sent: usize = (0..CONNS).flat_map(|c| (0..ROUNDS).map(move |r| message(c, r).len())).sum();
    assert_eq!(st.server_bytes.load(Ordering::SeqCst), sent, "the server read every byte sent, once");
    // At least 4 I/O completions per round trip (client write, server read, server write,
    // client read), minus the server writes of the final round that may still be queued,
    // plus one stop post per taker.
    let handled: usize = st.handled.iter().map(|h| h.load(Ordering::SeqCst)).sum();
    assert!(handled >= CONNS * ROUNDS * 4 - CONNS + TAKERS, "{handled} completions handled");
    // Whatever is still queued can only be a server's write of the final round.
    while let Some(c) = port.try_next_completion().unwrap() {
        assert_eq!((c.op(), c.status(), c.token() & 1), (Op::Write, Status::Ok, 0), "leftover {c:?}");
    }
}

#[test]
fn echo_with_blocking_std_clients() {
    echo_with_std_clients(2);
}

/// The same with no workers and the takers polling.
#[test]
fn polling_echo_with_blocking_std_clients() {
    echo_with_std_clients(0);
}

fn echo_with_std_clients(workers: usize) {
    use std::io::{Read, Write};
    const CLIENTS: usize = 8;
    const TRIPS: usize = 100;
    let port = port(workers);
    let mut peers = Vec::new();
    for c in 0..CLIENTS {
        let (isb, peer) = assigned_pair(&port, c as u64);
        port.start_io(&isb, Request::read_some(vec![0; 256])).unwrap();
        peers.push(peer);
    }
    let stop = AtomicBool::new(false);
    let echoed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // Servers: 4 threads take whatever completion comes and echo it.
        for _ in 0..4 {
            let (port, stop, echoed) = (&port, &stop, &echoed);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(mut c) = port.next_completion(Some(std::time::Duration::from_millis(20))).unwrap() else {
                        continue;
                    };
                    assert_eq!(c.status(), Status::Ok, "{c:?}");
                    let isb = c.isb().unwrap().clone();
                    match c.op() {
                        Op::Read => {
                            let mut buf = c.take_buffer().unwrap();
                            buf.truncate(c.bytes());
                            echoed.fetch_add(c.bytes(), Ordering::Relaxed);
                            port.write(&isb, buf).unwrap();
                        }
                        Op::Write => port.start_io(&isb, Request::read_some(vec![0; 256])).unwrap(),
                        op => panic!("unexpected {op}"),
                    }
                }
            });
        }
        let clients: Vec<_> = peers
            .iter_mut()
            .enumerate()
            .map(|(c, peer)| {
                scope.spawn(move || {
                    peer.set_read_timeout(Some(util::GUARD)).unwrap();
                    let mut total = 0;
                    for r in 0..TRIPS {
                        let msg = message(c, r);
                        peer.write_all(&msg).unwrap();
                        let mut back = vec![0; msg.len()];
                        peer.read_exact(&mut back).expect("echo within the guard");
                        assert_eq!(back, msg, "client {c} trip {r}");
                        total += msg.len();
                    }
                    total
                })
            })
            .collect();
        let sent: usize = clients.into_iter().map(|h| h.join().unwrap()).sum();
        stop.store(true, Ordering::SeqCst);
        assert!(sent > 0);
        // `echoed` counts bytes the port read; by now every echo was received, so all of them.
        let want: usize = (0..CLIENTS).flat_map(|c| (0..TRIPS).map(move |r| message(c, r).len())).sum();
        assert_eq!(sent, want);
        assert_eq!(echoed.load(Ordering::SeqCst), want);
    });
}
