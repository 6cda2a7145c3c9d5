//! Cancel: racing completion, with nothing pending, giving buffers back, and racing an accept
//! without leaking the accepted fd.

mod util;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use cport::{driver, Op, Port, Request, Status};
use util::{next, pair, pending_bytes, raw, serial, spin, Rng, GUARD};

/// The fd-counting test must not see fds that other tests of this binary open meanwhile: every
/// test of this binary holds this lock.
static SERIAL: Mutex<()> = Mutex::new(());

/// 10,000 rounds: a read is started, a peer thread writes one byte while the main thread
/// cancels. Each round the read completes exactly once, Ok with the byte or Cancelled, and
/// the bytes in the socket always add up.
#[test]
fn cancel_races_completion_10000_rounds() {
    let _g = serial(&SERIAL);
    const ROUNDS: usize = 10_000;
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    // A second handle on our end, to look at what is queued in the socket.
    let probe = ours.try_clone().unwrap();
    let isb = port.assign(driver::UnixStream::new(ours), 7).unwrap();

    let (go_tx, go_rx) = mpsc::channel::<u64>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for delay in go_rx {
            spin(delay);
            peer.write_all(b"x").unwrap();
            done_tx.send(()).unwrap();
        }
        peer
    });

    let mut rng = Rng::new(0x5eed);
    let span = 2_000;
    let mut backlog = 0usize; // bytes written but not yet read through the port
    let (mut ok, mut cancelled, mut cancel_hits) = (0usize, 0usize, 0usize);
    for round in 0..ROUNDS {
        port.start_io(&isb, Request::read_some(vec![0; 1])).unwrap();
        // Skew the two threads against each other by a random amount, either way.
        let (writer_delay, our_delay) = (rng.below(span), rng.below(span));
        go_tx.send(writer_delay).unwrap();
        spin(our_delay);
        let n = port.cancel(&isb).unwrap();
        assert!(n <= 1, "round {round}: cancel reported {n} I/Os for one pending read");
        cancel_hits += n;
        done_rx.recv_timeout(GUARD).expect("writer stalled");
        backlog += 1;

        let c = next(&port);
        assert_eq!((c.token(), c.op()), (7, Op::Read), "round {round}");
        match c.status() {
            Status::Ok => {
                assert_eq!(n, 0, "round {round}: cancel said it cancelled, yet the read completed Ok");
                assert_eq!((c.bytes(), c.data()), (1, &b"x"[..]), "round {round}");
                backlog -= 1;
                ok += 1;
            }
            Status::Cancelled => {
                assert_eq!(n, 1, "round {round}: a Cancelled completion that cancel did not report");
                assert_eq!(c.bytes(), 0, "round {round}");
                cancelled += 1;
            }
            s => panic!("round {round}: unexpected status {s:?}"),
        }
        // Exactly once: the completion is queued before cancel returns, and nothing follows.
        if let Some(extra) = port.try_next_completion().unwrap() {
            panic!("round {round}: a second completion {extra:?}");
        }
        // A cancelled read consumed nothing: every byte not read through the port is still there.
        assert_eq!(pending_bytes(raw(&probe)), backlog, "round {round}: bytes lost or invented");
        // Read what a cancel left behind, through the port, so that the next round starts
        // with an empty socket and can race again.
        if backlog > 0 {
            port.start_io(&isb, Request::read_some(vec![0; 16])).unwrap();
            let c = next(&port);
            assert_eq!((c.status(), c.data()), (Status::Ok, &b"x"[..]), "round {round}: the left-over byte");
            backlog -= 1;
        }
    }
    drop(go_tx);
    writer.join().unwrap();
    assert_eq!(ok + cancelled, ROUNDS);
    assert_eq!(cancel_hits, cancelled);

    // Drain what cancelled reads left behind, through the port.
    let mut drained = 0;
    while drained < backlog {
        port.start_io(&isb, Request::read_some(vec![0; 4096])).unwrap();
        let c = next(&port);
        assert_eq!(c.status(), Status::Ok);
        assert!(c.data().iter().all(|&b| b == b'x'));
        drained += c.bytes();
    }
    assert_eq!(drained, backlog);
    assert_eq!(pending_bytes(raw(&probe)), 0);
    util::assert_quiet(&port, Duration::from_millis(50));
    eprintln!("{ROUNDS} rounds: {ok} completed Ok, {cancelled} cancelled");
}

#[test]
fn cancel_with_nothing_pending_returns_zero() {
    let _g = serial(&SERIAL);
    let port = Port::builder().threads(1).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 1).unwrap();
    assert_eq!(port.cancel(&isb).unwrap(), 0);
    assert_eq!(port.cancel(&isb).unwrap(), 0);

    // Nor does cancel touch an I/O that already finished: its completion is Ok.
    peer.write_all(b"ab").unwrap();
    port.start_io(&isb, Request::read_exact(vec![0; 2])).unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"ab"[..]));
    assert_eq!(port.cancel(&isb).unwrap(), 0);
    util::assert_quiet(&port, Duration::from_millis(30));

    // A finished write, its completion not yet taken, is not cancelled either.
    // (A small write to an empty socket finishes inside start_io.)
    port.write(&isb, b"hello".to_vec()).unwrap();
    assert_eq!(port.cancel(&isb).unwrap(), 0);
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Write, Status::Ok, 5));
    assert!(port.try_next_completion().unwrap().is_none());
}

#[test]
fn cancelled_read_gives_its_buffer_back() {
    let _g = serial(&SERIAL);
    let port = Port::builder().threads(1).build().unwrap();
    let (ours, _peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 3).unwrap();

    let mut buf = Vec::with_capacity(1000);
    buf.extend_from_slice(&[0xAB; 700]);
    let ptr = buf.as_ptr();
    port.start_io(&isb, Request::read(buf, 1..=700)).unwrap();
    assert_eq!(port.cancel(&isb).unwrap(), 1);
    let mut c = next(&port);
    assert_eq!((c.token(), c.op(), c.status(), c.bytes()), (3, Op::Read, Status::Cancelled, 0));
    assert_eq!(c.data(), &[] as &[u8]);
    assert_eq!(c.result().unwrap_err().kind(), cport::ErrorKind::Cancelled);
    let back = c.take_buffer().expect("the buffer comes back");
    assert_eq!((back.len(), back.capacity()), (700, 1000));
    assert_eq!(back.as_ptr(), ptr, "the very same allocation");
    assert!(back.iter().all(|&b| b == 0xAB), "an unfilled buffer is untouched");

    // A cancelled vectored read gives all its buffers back.
    port.start_io(&isb, Request::read_vectored(vec![vec![1; 3], vec![2; 5]], 8)).unwrap();
    assert_eq!(port.cancel(&isb).unwrap(), 1);
    let mut c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::ReadVectored, Status::Cancelled));
    assert_eq!(c.take_buffers(), vec![vec![1; 3], vec![2; 5]]);

    // The side is free again: a new read works.
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    assert_eq!(port.cancel(&isb).unwrap(), 1);
    assert_eq!(next(&port).status(), Status::Cancelled);
}

/// An accept cancelled while a connection arrives: whichever wins, the accepted fd is never
/// leaked (it is either in the completion, or still in the listener's backlog).
#[test]
fn cancel_racing_accept_leaks_no_fd() {
    let _g = serial(&SERIAL);
    const ROUNDS: usize = 300;
    let port = Port::builder().threads(2).build().unwrap();
    let before = util::open_fds();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let lis = port.assign(driver::TcpListener::new(listener), 9).unwrap();

    let (go_tx, go_rx) = mpsc::channel::<u64>();
    let (conn_tx, conn_rx) = mpsc::channel::<TcpStream>();
    let connector = std::thread::spawn(move || {
        for delay in go_rx {
            spin(delay);
            conn_tx.send(TcpStream::connect(addr).unwrap()).unwrap();
        }
    });

    let mut rng = Rng::new(42);
    let mut clients = Vec::new();
    let (mut accepted, mut cancelled, mut drained) = (0usize, 0usize, 0usize);
    for round in 0..ROUNDS {
        port.accept(&lis).unwrap();
        go_tx.send(rng.below(20_000)).unwrap();
        spin(rng.below(20_000));
        let n = port.cancel(&lis).unwrap();
        clients.push(conn_rx.recv_timeout(GUARD).expect("connector stalled"));
        let mut c = next(&port);
        assert_eq!((c.token(), c.op()), (9, Op::Accept), "round {round}");
        match c.status() {
            Status::Ok => {
                assert_eq!(n, 0, "round {round}");
                accepted += 1;
                // Half of the accepted streams are taken and dropped here, half go with the
                // completion's drop.
                if round % 2 == 0 {
                    let d = c.take_accepted().expect("an Ok accept carries the stream");
                    assert!(util::fd_list().iter().any(|(fd, _)| *fd == std::os::fd::AsRawFd::as_raw_fd(&d)));
                }
            }
            Status::Cancelled => {
                assert_eq!(n, 1, "round {round}");
                assert!(c.take_accepted().is_none(), "round {round}: a cancelled accept carries no stream");
                cancelled += 1;
            }
            s => panic!("round {round}: unexpected status {s:?}"),
        }
        drop(c);
        assert!(port.try_next_completion().unwrap().is_none(), "round {round}: a second completion");
        // A cancelled accept left its connection in the backlog: accept it now, so that the
        // next round's accept has to wait for its own connection and can race again.
        if accepted + drained < round + 1 {
            port.accept(&lis).unwrap();
            let mut c = next(&port);
            assert_eq!((c.op(), c.status()), (Op::Accept, Status::Ok), "round {round}: the left-over connection");
            drop(c.take_accepted().expect("an Ok accept carries the stream"));
            drained += 1;
        }
    }
    drop(go_tx);
    connector.join().unwrap();
    assert_eq!(accepted + cancelled, ROUNDS);

    // Every connection was accepted exactly once: by its round or by the drain after it.
    assert_eq!(accepted + drained, ROUNDS);
    // Every accepted fd is closed already: only the listener and the clients are open.
    assert_eq!(util::open_fds(), before + 1 + clients.len(), "{:?}", util::fd_list());
    port.deassign(&lis).unwrap();
    drop(clients);
    assert_eq!(util::open_fds(), before, "{:?}", util::fd_list());
    eprintln!("{ROUNDS} rounds: {accepted} accepted, {cancelled} cancelled");
}

/// `cancel_read` and `cancel_write` end one side's I/O and leave the other pending.
#[test]
fn cancel_one_side_leaves_the_other() {
    let _g = serial(&SERIAL);
    let port = cport::Port::builder().threads(0).build().unwrap();
    let (ours, mut peer) = util::pair();
    let isb = port.assign(cport::driver::UnixStream::new(ours), 5).unwrap();
    // Much more than a socketpair buffers: the write stays pending with nobody reading.
    port.start_io(&isb, cport::Request::write(vec![3u8; 8 << 20])).unwrap();
    port.start_io(&isb, cport::Request::read_some(vec![0; 16])).unwrap();

    assert_eq!(port.cancel_write(&isb).unwrap(), 1);
    let c = util::next(&port);
    assert_eq!((c.op(), c.status()), (cport::Op::Write, cport::Status::Cancelled));
    assert_eq!(port.cancel_write(&isb).unwrap(), 0, "nothing left on the write side");

    // The read is still pending and still works.
    std::io::Write::write_all(&mut peer, b"still here").unwrap();
    let c = util::next(&port);
    assert_eq!((c.op(), c.status(), c.data()), (cport::Op::Read, cport::Status::Ok, &b"still here"[..]));

    port.start_io(&isb, cport::Request::read_some(vec![0; 16])).unwrap();
    assert_eq!(port.cancel_read(&isb).unwrap(), 1);
    let c = util::next(&port);
    assert_eq!((c.op(), c.status()), (cport::Op::Read, cport::Status::Cancelled));
    assert_eq!(port.cancel_read(&isb).unwrap(), 0);

    // Errors as for cancel.
    port.deassign(&isb).unwrap();
    assert_eq!(port.cancel_read(&isb).unwrap_err().kind(), cport::ErrorKind::NotAssigned);
    let other = cport::Port::new().unwrap();
    assert_eq!(other.cancel_write(&isb).unwrap_err().kind(), cport::ErrorKind::InvalidInput);
}
