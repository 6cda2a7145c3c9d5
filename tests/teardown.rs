//! Dropping the last handle and `shutdown`: no hang, no leaked fd, thread or request, and the
//! documented completions and errors.
//!
//! These tests count fds and threads of the whole process, so they run one at a time.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cport::{driver, ErrorKind, Op, Port, Request, Status};
use util::{eventually, next, open_fds, pair, serial, threads_named, GUARD};

static SERIAL: Mutex<()> = Mutex::new(());

const WORKER: &str = "cport-worker";

/// Drops `port` on another thread and waits for that at most the hang guard.
fn drop_with_guard(port: Port) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        port.dec_ref();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(GUARD).expect("dropping the last port handle hung");
    t.join().unwrap();
}

/// A request whose progress callback holds a clone of `tracker`: when the port drops the
/// request (its buffers included), the clone goes too.
fn tracked(req: Request, tracker: &Arc<()>) -> Request {
    let t = tracker.clone();
    req.on_progress(move |_| {
        let _ = &t;
    })
}

#[test]
fn dropping_the_last_handle_with_io_pending_is_prompt_and_leaks_nothing() {
    let _g = serial(&SERIAL);
    let fds_before = open_fds();
    let workers_before = threads_named(WORKER);
    let tracker = Arc::new(());

    let port = Port::builder().threads(4).build().unwrap();
    assert!(eventually(|| threads_named(WORKER) == workers_before + 4), "workers did not start");

    // Streams with reads pending, half of them with a write too large to finish.
    let mut peers: Vec<UnixStream> = Vec::new();
    let mut isbs = Vec::new();
    for i in 0..40 {
        let (ours, peer) = pair();
        let isb = port.assign(driver::UnixStream::new(ours), i).unwrap();
        port.start_io(&isb, tracked(Request::read_some(vec![0; 256]), &tracker)).unwrap();
        if i % 2 == 0 {
            port.start_io(&isb, tracked(Request::write(vec![1; 4 << 20]), &tracker)).unwrap();
        }
        peers.push(peer);
        isbs.push(isb);
    }
    // Some reads finish and their completions are never taken.
    for peer in peers.iter_mut().take(10) {
        peer.write_all(b"data").unwrap();
    }
    // A deadline far away.
    port.set_timeout(&isbs[39], Some(Duration::from_secs(60))).unwrap();
    // An accept pending with no connection, and an accept that finished but is never taken:
    // its accepted stream must be closed by the teardown.
    let idle = TcpListener::bind("127.0.0.1:0").unwrap();
    let idle = port.assign(driver::TcpListener::new(idle), 100).unwrap();
    port.accept(&idle).unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let busy = port.assign(driver::TcpListener::new(busy), 101).unwrap();
    port.accept(&busy).unwrap();
    let mut client = TcpStream::connect(busy_addr).unwrap();
    // Posts nobody takes.
    for i in 0..100 {
        port.post(1000 + i, i).unwrap();
    }
    // Wait until the finished I/O is queued (the accept and the ten reads), without taking it.
    assert!(eventually(|| Arc::strong_count(&tracker) <= 1 + 60 - 10));
    assert_eq!(port.timers(), 1);
    drop((isbs, idle, busy));

    drop_with_guard(port);

    // Every request (and so every buffer) was dropped.
    assert_eq!(Arc::strong_count(&tracker), 1, "requests leaked");
    // Our ends were closed: the peers see end of stream.
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.set_read_timeout(Some(GUARD)).unwrap();
        let mut sink = Vec::new();
        peer.read_to_end(&mut sink).unwrap_or_else(|e| panic!("peer {i}: {e}"));
    }
    // So was the accepted stream nobody took: end of stream, or a reset if the worker had not
    // accepted it yet and the connection died with the listener's backlog.
    client.set_read_timeout(Some(GUARD)).unwrap();
    match client.read(&mut [0u8; 8]) {
        Ok(n) => assert_eq!(n, 0, "the accepted stream was not closed"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "the accepted stream was not closed: {e}"),
    }
    drop((peers, client));

    assert_eq!(open_fds(), fds_before, "fds leaked: {:?}", util::fd_list());
    assert!(eventually(|| threads_named(WORKER) == workers_before), "worker threads left behind");
}

#[test]
fn dropping_a_clone_does_not_tear_down() {
    let _g = serial(&SERIAL);
    let workers_before = threads_named(WORKER);
    let port = Port::builder().threads(2).build().unwrap();
    assert!(eventually(|| threads_named(WORKER) == workers_before + 2));
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 5).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();

    let clone = port.clone();
    let again = clone.inc_ref();
    drop(clone);
    again.dec_ref();
    std::thread::spawn({
        let p = port.clone();
        move || drop(p)
    })
    .join()
    .unwrap();

    assert!(!port.is_shut_down());
    assert_eq!(threads_named(WORKER), workers_before + 2, "a clone's drop stopped workers");
    assert!(isb.is_assigned());
    peer.write_all(b"still").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"still"[..]));
    port.post(1, 2).unwrap();
    assert_eq!(next(&port).value(), 2);

    drop_with_guard(port);
    assert!(eventually(|| threads_named(WORKER) == workers_before));
}

#[test]
fn shutdown_cancels_pending_io_then_reports_port_closed() {
    let _g = serial(&SERIAL);
    let fds_before = open_fds();
    let port = Port::builder().threads(2).build().unwrap();
    let mut peers = Vec::new();
    let mut isbs = Vec::new();
    for i in 0..3 {
        let (ours, peer) = pair();
        let isb = port.assign(driver::UnixStream::new(ours), i).unwrap();
        port.start_io(&isb, Request::read_some(vec![i as u8; 16])).unwrap();
        peers.push(peer);
        isbs.push(isb);
    }
    let lis = TcpListener::bind("127.0.0.1:0").unwrap();
    let lis = port.assign(driver::TcpListener::new(lis), 50).unwrap();
    port.accept(&lis).unwrap();
    port.post(77, 7).unwrap();

    port.shutdown();
    assert!(port.is_shut_down());
    port.shutdown(); // a second call does nothing

    // Waiters drain what was queued: the post and one Cancelled completion per pending I/O.
    let mut got = Vec::new();
    loop {
        match port.next_completion(Some(GUARD)) {
            Ok(Some(c)) => got.push(c),
            Ok(None) => panic!("no completion and no PortClosed within {GUARD:?}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::PortClosed, "{e}");
                break;
            }
        }
    }
    assert_eq!(got.len(), 5, "{got:?}");
    let post = got.iter().find(|c| c.op() == Op::Post).expect("the queued post");
    assert_eq!((post.token(), post.value(), post.status()), (77, 7, Status::Ok));
    let accept = got.iter().find(|c| c.op() == Op::Accept).expect("the accept");
    assert_eq!((accept.token(), accept.status()), (50, Status::Cancelled));
    for i in 0..3u64 {
        let mut reads = got.iter_mut().filter(|c| c.op() == Op::Read && c.token() == i);
        let c = reads.next().unwrap_or_else(|| panic!("no completion for read {i}"));
        assert_eq!(c.status(), Status::Cancelled);
        assert_eq!(c.take_buffer().unwrap(), vec![i as u8; 16]);
        assert!(reads.next().is_none(), "read {i} completed twice");
    }

    // From now on: PortClosed everywhere, and refused requests give their buffers back.
    for _ in 0..3 {
        assert_eq!(port.next_completion(Some(Duration::from_millis(10))).unwrap_err().kind(), ErrorKind::PortClosed);
    }
    assert_eq!(port.try_next_completion().unwrap_err().kind(), ErrorKind::PortClosed);
    assert_eq!(port.next_completions(&mut Vec::new(), 4, None).unwrap_err().kind(), ErrorKind::PortClosed);
    let e = port.post(1, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PortClosed);
    assert!(e.message().contains("shut down"), "{e}");
    let e = port.start_io(&isbs[0], Request::read_some(vec![42; 9])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PortClosed, "{e}");
    assert_eq!(e.into_request().into_buffer().unwrap(), vec![42; 9]);
    let e = port.write(&isbs[1], b"late".to_vec()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PortClosed, "{e}");
    assert_eq!(e.into_request().into_buffer().unwrap(), b"late");
    let (extra, _extra_peer) = pair();
    let e = port.assign(driver::UnixStream::new(extra), 9).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PortClosed, "{e}");
    // Streams stay assigned until deassigned or the last handle goes.
    assert!(isbs[2].is_assigned());
    port.deassign(&isbs[2]).unwrap();
    assert!(!isbs[2].is_assigned());

    drop((isbs, lis, _extra_peer));
    drop_with_guard(port);
    drop(peers);
    assert_eq!(open_fds(), fds_before, "fds leaked: {:?}", util::fd_list());
}

#[test]
fn threads_parked_in_next_completion_return_on_shutdown() {
    let _g = serial(&SERIAL);
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, _peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 8).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();

    const WAITERS: usize = 3;
    let (tx, rx) = mpsc::channel();
    for _ in 0..WAITERS {
        let p = port.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut taken = Vec::new();
            let end = loop {
                match p.next_completion(None) {
                    Ok(Some(c)) => taken.push((c.token(), c.op(), c.status())),
                    Ok(None) => continue,
                    Err(e) => break e.kind(),
                }
            };
            tx.send((taken, end)).unwrap();
        });
    }
    assert!(eventually(|| port.waiters() == WAITERS), "waiters did not park: {}", port.waiters());

    port.shutdown();
    let mut all = Vec::new();
    for _ in 0..WAITERS {
        let (taken, end) = rx.recv_timeout(GUARD).expect("a parked waiter did not return after shutdown");
        assert_eq!(end, ErrorKind::PortClosed);
        all.extend(taken);
    }
    assert_eq!(all, vec![(8, Op::Read, Status::Cancelled)], "the pending read completes exactly once");
    assert!(eventually(|| port.waiters() == 0));
    drop(isb);
    drop_with_guard(port);
}
