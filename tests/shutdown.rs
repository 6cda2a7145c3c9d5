//! The shutdown contract (crate docs, "Shutdown"): a call racing `shutdown` either happens
//! before it, and its completion comes before `PortClosed`, or is refused; after a waiter has
//! seen `PortClosed`, nothing is ever queued again.

mod util;

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cport::{driver, Completion, ErrorKind, Op, Port, Request, Status};
use util::{pair, Rng, GUARD};

/// Takes completions until `PortClosed`; panics if that takes longer than the hang guard.
fn drain_until_closed(port: &Port) -> Vec<Completion> {
    let mut got = Vec::new();
    loop {
        match port.next_completion(Some(GUARD)) {
            Ok(Some(c)) => got.push(c),
            Ok(None) => panic!("neither a completion nor PortClosed within {GUARD:?}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::PortClosed, "{e}");
                return got;
            }
        }
    }
}

/// Rounds of: one thread connects in a loop, another shuts the port down after a few
/// connects, this thread takes completions until `PortClosed`. Every connect that returned an
/// ISB must have had its one completion by then; one that lost the race is refused. Most
/// rounds connect over Unix-domain sockets, which spend no local ports (`connect` and
/// `connect_unix` share the code that starts the connect); every fifth uses TCP.
fn connects_race_shutdown(threads: usize, rounds: usize) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let addr = tcp.local_addr().unwrap();
    let path = util::socket_path("connect-race");
    let unix = UnixListener::bind(&path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let mut rng = Rng::new(0x5eed_c0de ^ threads as u64);
    let mut late = Vec::new();
    for round in 0..rounds {
        let port = Port::builder().threads(threads).build().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let use_tcp = round % 5 == 0;
        let connector = {
            let (port, started, path) = (port.clone(), started.clone(), path.clone());
            std::thread::spawn(move || {
                let mut isbs = Vec::new();
                loop {
                    if isbs.len() >= 64 {
                        // Enough to race with: wait for the shutdown rather than fill the
                        // listener's backlog (a connect to a full Unix backlog fails EAGAIN).
                        while !port.is_shut_down() {
                            std::thread::yield_now();
                        }
                    }
                    let token = isbs.len() as u64;
                    let r = if use_tcp { port.connect(addr, token) } else { port.connect_unix(&path, token) };
                    match r {
                        Ok(isb) => {
                            isbs.push(isb);
                            started.store(isbs.len(), Ordering::Release);
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::PortClosed, "{e}");
                            return isbs;
                        }
                    }
                }
            })
        };
        let after = 1 + rng.below(4) as usize;
        let shutter = {
            let (port, started) = (port.clone(), started.clone());
            std::thread::spawn(move || {
                while started.load(Ordering::Acquire) < after {
                    std::hint::spin_loop();
                }
                port.shutdown();
            })
        };
        let got = drain_until_closed(&port);
        shutter.join().unwrap();
        let isbs = connector.join().unwrap();

        let mut matched = 0;
        for isb in &isbs {
            let mine: Vec<_> = got.iter().filter(|c| c.isb() == Some(isb)).collect();
            match mine.as_slice() {
                [c] => {
                    assert_eq!(c.op(), Op::Connect);
                    assert!(matches!(c.status(), Status::Ok | Status::Cancelled), "round {round}: {c:?}");
                    matched += 1;
                }
                [] => late.push((round, isb.token())),
                more => panic!("round {round}: connect {} completed {} times: {more:?}", isb.token(), more.len()),
            }
        }
        assert_eq!(matched, got.len(), "round {round}: completions of no connect: {got:?}");
        assert_eq!(port.try_next_completion().unwrap_err().kind(), ErrorKind::PortClosed);
        drop(isbs);
        drop(port);
        while tcp.accept().is_ok() {}
        while unix.accept().is_ok() {}
    }
    let _ = std::fs::remove_file(&path);
    assert!(late.is_empty(), "{} connects had no completion before PortClosed (round, token): {late:?}", late.len());
}

#[test]
fn connect_racing_shutdown_completes_before_port_closed_with_workers() {
    connects_race_shutdown(2, 400);
}

#[test]
fn connect_racing_shutdown_completes_before_port_closed_when_polling() {
    connects_race_shutdown(0, 400);
}

/// After `PortClosed`, every call that would queue a completion of its own is refused, and
/// the calls that only release work and queue nothing.
fn calls_after_port_closed(threads: usize) {
    let port = Port::builder().threads(threads).build().unwrap();
    let (ours, _peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 1).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    let (ours2, _peer2) = pair();
    let isb2 = port.assign(driver::UnixStream::new(ours2), 2).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    port.shutdown();
    let got = drain_until_closed(&port);
    let got: Vec<_> = got.iter().map(|c| (c.token(), c.op(), c.status())).collect();
    assert_eq!(got, vec![(1, Op::Read, Status::Cancelled)]);

    let closed = |r: cport::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::PortClosed, "{what}: {e}");
        assert!(e.message().contains("shut down"), "{what}: {e}");
    };
    closed(port.close(&isb), "close");
    assert!(isb.is_assigned(), "a refused close leaves the stream assigned");
    closed(port.set_timeout(&isb, Some(Duration::from_millis(1))), "set_timeout");
    closed(port.post(7, 7), "post");
    closed(port.connect(addr, 3).map(drop), "connect");
    closed(port.connect_unix("/nonexistent/cport.sock", 4).map(drop), "connect_unix");
    let e = port.start_io(&isb, Request::write(b"late".to_vec())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PortClosed);
    assert_eq!(e.into_request().into_buffer().unwrap(), b"late");
    assert_eq!(port.cancel(&isb).unwrap(), 0, "shutdown cancelled the read already");
    port.wakeup();
    // The calls that release work.
    port.deassign(&isb).unwrap();
    assert!(!isb.is_assigned());
    port.deassign(&isb2).unwrap();

    for _ in 0..3 {
        assert_eq!(port.try_next_completion().unwrap_err().kind(), ErrorKind::PortClosed);
    }
    assert_eq!(port.next_completion(Some(Duration::from_millis(5))).unwrap_err().kind(), ErrorKind::PortClosed);
    assert_eq!(port.streams(), 0);
}

#[test]
fn after_port_closed_nothing_is_queued_with_workers() {
    calls_after_port_closed(2);
}

#[test]
fn after_port_closed_nothing_is_queued_when_polling() {
    calls_after_port_closed(0);
}

/// A close racing shutdown: either it is refused with `PortClosed`, or its Close completion
/// (after the cancelled read) is taken before `PortClosed`.
#[test]
fn close_racing_shutdown_is_refused_or_completes_before_port_closed() {
    let mut rng = Rng::new(77);
    for threads in [2, 0] {
        for round in 0..200 {
            let port = Port::builder().threads(threads).build().unwrap();
            let (ours, _peer) = pair();
            let isb = port.assign(driver::UnixStream::new(ours), 1).unwrap();
            port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
            let skew = rng.below(2000);
            let closer = {
                let (port, isb) = (port.clone(), isb.clone());
                std::thread::spawn(move || {
                    util::spin(skew);
                    port.close(&isb)
                })
            };
            port.shutdown();
            let got = drain_until_closed(&port);
            let closed = closer.join().unwrap();
            let ops: Vec<_> = got.iter().map(|c| (c.op(), c.status())).collect();
            match closed {
                Ok(()) => assert_eq!(
                    ops,
                    vec![(Op::Read, Status::Cancelled), (Op::Close, Status::Ok)],
                    "round {round}, threads {threads}"
                ),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::PortClosed, "{e}");
                    assert_eq!(ops, vec![(Op::Read, Status::Cancelled)], "round {round}, threads {threads}");
                    port.deassign(&isb).unwrap();
                }
            }
            assert_eq!(port.try_next_completion().unwrap_err().kind(), ErrorKind::PortClosed);
        }
    }
}
