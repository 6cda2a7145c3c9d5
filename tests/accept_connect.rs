//! Accepting many connections on one listener, and connecting through the port: success,
//! refusal, a missing Unix socket path, and a Unix-domain round trip.

mod util;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cport::{driver, Driver, ErrorKind, Op, Request, Status};
use util::{next, port, socket_path};

#[test]
fn one_thousand_accepts_on_one_listener() {
    const N: usize = 1000;
    /// Connections the client may have ahead of the accepts (well inside the backlog, so no
    /// SYN is ever dropped and retried a second later).
    const AHEAD: usize = 32;
    let port = port(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let lis = port.assign(driver::TcpListener::new(listener), 0).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let client = {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut peers = Vec::new();
            for i in 0..N {
                assert!(util::eventually(|| i < accepted.load(Ordering::SeqCst) + AHEAD), "accepts stalled at {i}");
                let s = TcpStream::connect(addr).expect("connect");
                peers.push(s.local_addr().unwrap());
            }
            peers
        })
    };
    port.accept(&lis).unwrap();
    let (mut accepts, mut closes) = (0, 0);
    let mut peers = Vec::new();
    while accepts < N || closes < N {
        let mut c = next(&port);
        match c.op() {
            Op::Accept => {
                assert_eq!((c.status(), c.token()), (Status::Ok, 0), "{c:?}: {:?}", c.error());
                peers.push(c.addr().expect("a TCP accept knows the peer"));
                let d = c.take_accepted().expect("an accept carries the new stream");
                assert_eq!(d.name(), "tcp stream");
                accepts += 1;
                accepted.store(accepts, Ordering::SeqCst);
                let isb = port.assign(d, 1_000 + accepts as u64).unwrap();
                port.close(&isb).unwrap();
                assert!(!isb.is_assigned());
                if accepts < N {
                    port.accept(&lis).unwrap();
                }
            }
            Op::Close => {
                assert_eq!(c.status(), Status::Ok);
                assert!(c.token() > 1_000 && c.token() <= 1_000 + N as u64, "{c:?}");
                closes += 1;
            }
            op => panic!("unexpected {op}: {c:?}"),
        }
    }
    assert_eq!((accepts, closes), (N, N));
    let mut sent = client.join().unwrap();
    assert_eq!(sent.len(), N);
    sent.sort();
    peers.sort();
    assert_eq!(peers, sent, "every connection was accepted exactly once");
    assert_eq!(port.streams(), 1, "only the listener is still assigned");
    util::assert_quiet(&port, Duration::from_millis(30));
}

#[test]
fn connect_to_a_listener_completes_ok_and_carries_data() {
    let port = port(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let isb = port.connect(listener.local_addr().unwrap(), 7).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.token()), (Op::Connect, Status::Ok, 7), "{:?}", c.error());
    assert_eq!(c.isb(), Some(&isb));
    assert!(c.result().is_ok());
    let (mut peer, _) = listener.accept().unwrap();
    port.write(&isb, b"over connect".to_vec()).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Write, Status::Ok, 12));
    let mut got = [0; 12];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over connect");
    peer.write_all(b"back").unwrap();
    port.start_io(&isb, Request::read_exact(vec![0; 4])).unwrap();
    assert_eq!(next(&port).data(), b"back");
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let port = port(2);
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let isb = port.connect(addr, 9).expect("a refused connect is a completion, not a call error");
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.token()), (Op::Connect, Status::Failed, 9), "{c:?}");
    let err = c.error().expect("a failed connect carries its error");
    assert_eq!(err.kind(), ErrorKind::Os(io::ErrorKind::ConnectionRefused), "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    assert!(err.to_string().contains("connect"), "the message says what failed: {err}");
    assert_eq!(c.result().unwrap_err().kind(), ErrorKind::Os(io::ErrorKind::ConnectionRefused));
    assert_eq!(c.isb(), Some(&isb));
    util::assert_quiet(&port, Duration::from_millis(30));
}

#[test]
fn connect_unix_to_a_missing_path_fails_as_a_completion() {
    let port = port(1);
    let dir = std::env::temp_dir().join(format!("cport-missing-{}-{}", std::process::id(), util::unique()));
    let isb = port.connect_unix(dir.join("nobody.sock"), 4).expect("the failure is reported as a completion");
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.token()), (Op::Connect, Status::Failed, 4), "{c:?}");
    let err = c.error().expect("a failed connect carries its error");
    assert_eq!(err.kind(), ErrorKind::Os(io::ErrorKind::NotFound), "{err}");
    assert_eq!(c.isb(), Some(&isb));
    // The port keeps working.
    port.post(1, 2).unwrap();
    assert_eq!(next(&port).value(), 2);
}

#[test]
fn unix_listener_and_stream_round_trip() {
    let port = port(2);
    let path = socket_path("rt");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let lis = port.assign(driver::UnixListener::new(listener), 1).unwrap();
    port.accept(&lis).unwrap();
    let client = port.connect_unix(&path, 2).unwrap();
    let mut server = None;
    let mut connected = false;
    while server.is_none() || !connected {
        let mut c = next(&port);
        assert_eq!(c.status(), Status::Ok, "{c:?}: {:?}", c.error());
        match (c.op(), c.token()) {
            (Op::Accept, 1) => {
                let d = c.take_accepted().unwrap();
                assert_eq!(d.name(), "unix stream");
                assert!(c.addr().is_none(), "a Unix peer has no socket address");
                server = Some(port.assign(d, 3).unwrap());
            }
            (Op::Connect, 2) => connected = true,
            _ => panic!("unexpected {c:?}"),
        }
    }
    let server = server.unwrap();
    port.start_io(&server, Request::read_exact(vec![0; 10])).unwrap();
    port.write(&client, b"hello unix".to_vec()).unwrap();
    let mut echoed = false;
    let mut done = 0;
    while done < 4 {
        let mut c = next(&port);
        assert_eq!(c.status(), Status::Ok, "{c:?}");
        match (c.op(), c.token()) {
            (Op::Write, 2) => port.start_io(&client, Request::read_exact(vec![0; 10])).unwrap(),
            (Op::Read, 3) => {
                assert_eq!(c.data(), b"hello unix");
                port.write(&server, c.take_buffer().unwrap()).unwrap();
            }
            (Op::Write, 3) => echoed = true,
            (Op::Read, 2) => assert_eq!(c.data(), b"hello unix"),
            _ => panic!("unexpected {c:?}"),
        }
        done += 1;
    }
    assert!(echoed);
    port.close(&client).unwrap();
    port.close(&server).unwrap();
    let mut closes = 0;
    while closes < 2 {
        let c = next(&port);
        assert_eq!(c.op(), Op::Close, "{c:?}");
        closes += 1;
    }
    assert_eq!(port.streams(), 1);
    std::fs::remove_file(&path).unwrap();
}

/// `listen` and `accept_many`: one call, and the listener keeps an accept pending while two
/// threads handle what it accepted; each accept is one completion whose value counts down
/// the accepts still to start; the series ends after its last.
#[test]
fn accept_many_keeps_accepting_without_reposting() {
    const N: usize = 40;
    let port = cport::Port::builder().threads(0).build().unwrap();
    let lis = port.listen("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let addr = lis.local_addr().unwrap();
    assert_ne!(addr.port(), 0, "the kernel picked a port");
    port.accept_many(&lis, N).unwrap();
    assert_eq!(port.accept(&lis).unwrap_err().kind(), ErrorKind::Busy, "the series holds the read side");

    let clients = std::thread::spawn(move || (0..N + 1).map(|_| TcpStream::connect(addr).unwrap()).collect::<Vec<_>>());
    let handlers: Vec<_> = (0..2)
        .map(|_| {
            let port = port.clone();
            std::thread::spawn(move || {
                let mut left = Vec::new();
                while let Some(mut c) = port.next_completion(Some(Duration::from_millis(300))).unwrap() {
                    assert_eq!((c.op(), c.status()), (Op::Accept, Status::Ok));
                    assert!(c.addr().is_some(), "the peer's address");
                    drop(c.take_accepted().expect("the accepted stream"));
                    left.push(c.value());
                }
                left
            })
        })
        .collect();
    let clients = clients.join().unwrap();
    let mut left: Vec<u64> = handlers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    left.sort_unstable();
    assert_eq!(left, (0..N as u64).collect::<Vec<_>>(), "N accepts, counting down to the last");
    // The series is over: the connection beyond N waits for an accept started by hand.
    port.accept(&lis).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.value()), (Op::Accept, Status::Ok, 0));
    drop(clients);
}

/// A cancelled accept ends its series: one Cancelled completion, no accept after it; a close
/// ends it too, with the Close completion last.
#[test]
fn cancel_and_close_end_an_accept_series() {
    let port = cport::Port::builder().threads(0).build().unwrap();
    let path = socket_path("series");
    let lis = port.listen_unix(&path, 3).unwrap();
    port.accept_many(&lis, usize::MAX).unwrap();
    let _a = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let mut c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Accept, Status::Ok));
    assert_eq!(c.value(), usize::MAX as u64 - 1);
    drop(c.take_accepted());
    // Taking it started the next accept, which waits.
    assert_eq!(port.cancel(&lis).unwrap(), 1);
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.value()), (Op::Accept, Status::Cancelled, 0));
    let _b = std::os::unix::net::UnixStream::connect(&path).unwrap();
    util::assert_quiet(&port, Duration::from_millis(50));

    port.accept_many(&lis, 5).unwrap();
    let mut c = next(&port);
    assert_eq!((c.status(), c.value()), (Status::Ok, 4), "the connection that waited");
    drop(c.take_accepted());
    port.close(&lis).unwrap();
    let ops: Vec<(Op, Status)> = [next(&port), next(&port)].iter().map(|c| (c.op(), c.status())).collect();
    assert_eq!(ops, vec![(Op::Accept, Status::Cancelled), (Op::Close, Status::Ok)]);
    util::assert_quiet(&port, Duration::from_millis(50));
    let _ = std::fs::remove_file(&path);
}

/// Bad input to the short path: clear errors, nothing started.
#[test]
fn listen_and_accept_many_refuse_bad_input() {
    let port = cport::Port::builder().threads(0).build().unwrap();
    let lis = port.listen("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    assert_eq!(port.accept_many(&lis, 0).unwrap_err().kind(), ErrorKind::InvalidInput);
    let taken = lis.local_addr().unwrap();
    let e = port.listen(taken, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Os(io::ErrorKind::AddrInUse), "{e}");
    assert_eq!(port.listen_unix("", 1).unwrap_err().kind(), ErrorKind::InvalidInput);
    // A NUL would bind the abstract namespace (leading) or a shorter path (inside): refused.
    let cut = socket_path("unix-cut");
    let with_nul = format!("{}\0tail", cut.display());
    for bad in ["\0abstract", with_nul.as_str()] {
        assert_eq!(port.listen_unix(bad, 1).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    assert!(!cut.exists(), "nothing was bound at the path cut at the NUL");
    // Refused after shutdown of a second port: the path is not left bound.
    let closed = cport::Port::new().unwrap();
    closed.shutdown();
    let refused = socket_path("unix-refused");
    assert_eq!(closed.listen_unix(&refused, 1).unwrap_err().kind(), ErrorKind::PortClosed);
    assert!(!refused.exists(), "a refused listen leaves no socket file");
    let path = socket_path("unix-local");
    let ul = port.listen_unix(&path, 2).unwrap();
    assert_eq!(ul.local_addr().unwrap_err().kind(), ErrorKind::InvalidInput, "a Unix socket has no IP address");
    port.deassign(&lis).unwrap();
    assert_eq!(lis.local_addr().unwrap_err().kind(), ErrorKind::NotAssigned);
    let _ = std::fs::remove_file(&path);
}

/// `Port::listen` asks the kernel for a deep accept queue (capped by `net.core.somaxconn`), not
/// std's 128: a burst of connections nobody has accepted yet waits in the queue. Past a full
/// queue the kernel drops each SYN, on every retry while nobody accepts, so with a shallow
/// queue the connections past it never come up.
#[test]
fn a_burst_of_connections_waits_in_the_accept_queue() {
    use socket2::{Domain, Socket, Type};
    const BURST: usize = 300;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let burst = BURST.min(somaxconn);
    let port = cport::Port::new().unwrap();
    let listener = port.listen("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let addr = listener.local_addr().unwrap().into();
    let clients: Vec<Socket> = (0..burst)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None).unwrap();
            match s.connect(&addr) {
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                other => other.unwrap(),
            }
            s
        })
        .collect();
    let mut waiting: Vec<libc::pollfd> = clients
        .iter()
        .map(|s| libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(s), events: libc::POLLOUT, revents: 0 })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !waiting.is_empty() && std::time::Instant::now() < deadline {
        // SAFETY: `waiting` is a live array of pollfds of open sockets.
        let n = unsafe { libc::poll(waiting.as_mut_ptr(), waiting.len() as libc::nfds_t, 100) };
        assert!(n >= 0, "poll: {}", io::Error::last_os_error());
        for p in &waiting {
            assert_eq!(p.revents & (libc::POLLERR | libc::POLLHUP), 0, "a connection failed");
        }
        waiting.retain(|p| p.revents & libc::POLLOUT == 0);
    }
    assert!(waiting.is_empty(), "{} of {burst} connections are still not up after 5 s", waiting.len());
    drop(clients);
}
