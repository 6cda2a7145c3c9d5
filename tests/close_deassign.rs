//! Close and deassign with I/O pending, and fd-number reuse right after a deassign.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use cport::{driver, Completion, ErrorKind, Isb, Op, Port, Request, Status};
use util::{assert_quiet, next, pair, raw, serial, spin, Rng, GUARD};

/// The fd-reuse test needs the fd numbers that a deassign frees not to be taken by other
/// tests of this binary running at the same time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Every call on a released ISB is `NotAssigned`, and start_io gives the buffer back.
fn assert_released(port: &Port, isb: &Isb) {
    assert!(!isb.is_assigned());
    assert_eq!(isb.fd(), None);
    let e = port.start_io(isb, Request::read_some(vec![9; 10])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAssigned, "{e}");
    assert!(e.to_string().contains("not assigned"), "{e}");
    assert_eq!(e.into_request().into_buffer().unwrap(), vec![9; 10]);
    let e = port.write(isb, b"abc".to_vec()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAssigned, "{e}");
    assert_eq!(e.into_request().into_buffer().unwrap(), b"abc");
    for (what, r) in [
        ("cancel", port.cancel(isb).map(|_| ())),
        ("set_timeout", port.set_timeout(isb, Some(Duration::from_millis(1)))),
        ("deassign", port.deassign(isb)),
        ("close", port.close(isb)),
    ] {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::NotAssigned, "{what}: {e}");
        assert!(e.message().contains("not assigned"), "{what}: {e}");
    }
}

/// The peer of a released stream sees end of stream: the port closed our end.
fn assert_peer_sees_eof(peer: &mut UnixStream) {
    peer.set_read_timeout(Some(GUARD)).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(peer.read(&mut b).unwrap(), 0, "our end is still open");
}

#[test]
fn close_interrupts_a_pending_read_which_completes_before_the_close() {
    let _g = serial(&SERIAL);
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 21).unwrap();
    port.start_io(&isb, Request::read_some(vec![3; 32])).unwrap();
    assert_eq!(port.streams(), 1);

    port.close(&isb).unwrap();
    let mut first = next(&port);
    assert_eq!((first.token(), first.op(), first.status()), (21, Op::Read, Status::Cancelled));
    assert_eq!(first.take_buffer().unwrap(), vec![3; 32]);
    let second = next(&port);
    assert_eq!((second.token(), second.op(), second.status()), (21, Op::Close, Status::Ok));
    assert_eq!(second.isb(), Some(&isb));
    assert!(second.result().is_ok());

    assert_eq!(port.streams(), 0);
    assert_released(&port, &isb);
    assert_peer_sees_eof(&mut peer);
    assert_quiet(&port, Duration::from_millis(30));
}

#[test]
fn close_with_a_read_and_a_write_pending() {
    let _g = serial(&SERIAL);
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 22).unwrap();
    // Far more than the socketpair buffers: it stays pending while nobody reads.
    port.write(&isb, vec![7u8; 8 << 20]).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 16])).unwrap();

    port.close(&isb).unwrap();
    let cs: Vec<Completion> = (0..3).map(|_| next(&port)).collect();
    let ops: Vec<(Op, Status)> = cs.iter().map(|c| (c.op(), c.status())).collect();
    assert_eq!(ops[2], (Op::Close, Status::Ok), "close is the stream's last completion: {ops:?}");
    let mut firsts = [ops[0], ops[1]];
    firsts.sort_by_key(|(op, _)| op.name());
    assert_eq!(firsts, [(Op::Read, Status::Cancelled), (Op::Write, Status::Cancelled)]);
    for mut c in cs.into_iter().take(2) {
        let b = c.take_buffer().unwrap();
        if c.op() == Op::Write {
            assert_eq!(b.len(), 8 << 20);
            assert!(c.bytes() < b.len());
        }
    }
    assert_released(&port, &isb);
    // The peer gets what was sent, then end of stream.
    peer.set_read_timeout(Some(GUARD)).unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert!(got.len() < 8 << 20 && got.iter().all(|&b| b == 7));
    assert_quiet(&port, Duration::from_millis(30));
}

#[test]
fn deassign_with_pending_io_cancels_it_and_gives_buffers_back() {
    let _g = serial(&SERIAL);
    let port = Port::builder().threads(2).build().unwrap();
    let (ours, mut peer) = pair();
    let isb = port.assign(driver::UnixStream::new(ours), 23).unwrap();
    port.write(&isb, vec![1u8; 8 << 20]).unwrap();
    port.start_io(&isb, Request::read_vectored(vec![vec![4; 10], vec![5; 20]], 30)).unwrap();

    port.deassign(&isb).unwrap();
    // Both completions are queued by the time deassign returns.
    let mut cs = Vec::new();
    while let Some(c) = port.try_next_completion().unwrap() {
        cs.push(c);
    }
    assert_eq!(cs.len(), 2, "{cs:?}");
    cs.sort_by_key(|c| c.op().name());
    assert_eq!((cs[0].op(), cs[0].status()), (Op::ReadVectored, Status::Cancelled));
    assert_eq!((cs[1].op(), cs[1].status()), (Op::Write, Status::Cancelled));
    assert_eq!(cs[0].take_buffers(), vec![vec![4; 10], vec![5; 20]]);
    assert_eq!(cs[1].take_buffer().unwrap().len(), 8 << 20);
    assert!(cs.iter().all(|c| c.token() == 23));

    assert_eq!(port.streams(), 0);
    assert_released(&port, &isb);
    // Deassign queues no Close completion.
    assert_quiet(&port, Duration::from_millis(50));
    peer.set_read_timeout(Some(GUARD)).unwrap();
    let mut sink = Vec::new();
    peer.read_to_end(&mut sink).unwrap();
}

/// Deassign a stream while its peer writes, open a new stream that most likely gets the same
/// fd number, and assign it with another token: no completion of the old stream arrives after
/// the deassign, and the new stream's traffic carries only the new token.
#[test]
fn fd_number_reuse_right_after_deassign() {
    let _g = serial(&SERIAL);
    const ROUNDS: u64 = 300;
    let port = Port::builder().threads(2).build().unwrap();

    let (go_tx, go_rx) = mpsc::channel::<(UnixStream, u64)>();
    let (done_tx, done_rx) = mpsc::channel::<UnixStream>();
    let writer = std::thread::spawn(move || {
        for (mut peer, delay) in go_rx {
            spin(delay);
            // The other end may already be closed by the deassign.
            let _ = peer.write_all(b"old");
            done_tx.send(peer).unwrap();
        }
    });

    let (first, mut first_peer) = pair();
    let mut old = port.assign(driver::UnixStream::new(first), 0).unwrap();
    let mut rng = Rng::new(99);
    let mut reused = 0;
    let (mut old_ok, mut old_cancelled) = (0, 0);
    for round in 0..ROUNDS {
        let old_token = old.token();
        let new_token = round + 1;
        assert_eq!(old_token, round);
        let marker = 1_000_000 + round;
        let old_fd = old.fd().unwrap();

        port.start_io(&old, Request::read_some(vec![0; 8])).unwrap();
        go_tx.send((first_peer, rng.below(10_000))).unwrap();
        spin(rng.below(10_000));
        port.deassign(&old).unwrap();
        // Right away: the freed fd number is the lowest free one.
        let (a, b) = pair();
        let (ours, mut new_peer) = if raw(&a) == old_fd { (a, b) } else { (b, a) };
        let new = port.assign(driver::UnixStream::new(ours), new_token).unwrap();
        if new.fd() == Some(old_fd) {
            reused += 1;
        }
        // Everything of the old stream was queued before deassign returned (in the queue of
        // the thread that produced it: completions of different threads are not ordered
        // against each other, so the marker post may come first).
        port.post(marker, round).unwrap();
        port.start_io(&new, Request::read_exact(vec![0; 3])).unwrap();
        new_peer.write_all(b"new").unwrap();

        let (mut old_seen, mut marker_seen, mut new_seen) = (0, false, false);
        while !(marker_seen && new_seen && old_seen == 1) {
            let c = next(&port);
            if c.token() == old_token && c.op() != Op::Post {
                assert_eq!(old_seen, 0, "round {round}: the old read completed twice: {c:?}");
                assert_eq!(c.op(), Op::Read, "round {round}");
                match c.status() {
                    Status::Ok => {
                        assert_eq!(c.data(), &b"old"[..c.bytes()], "round {round}");
                        old_ok += 1;
                    }
                    Status::Cancelled => old_cancelled += 1,
                    s => panic!("round {round}: old read ended {s:?}"),
                }
                old_seen += 1;
            } else if c.op() == Op::Post {
                assert_eq!((c.token(), c.value()), (marker, round), "round {round}");
                marker_seen = true;
            } else {
                assert_eq!(c.token(), new_token, "round {round}: a completion with a stale token: {c:?}");
                assert_eq!((c.op(), c.status(), c.data()), (Op::Read, Status::Ok, &b"new"[..]), "round {round}");
                new_seen = true;
            }
        }
        assert_eq!(old_seen, 1, "round {round}: the old read completed {old_seen} times");
        drop(done_rx.recv_timeout(GUARD).expect("writer stalled"));
        // The new stream becomes the next round's old one.
        old = new;
        first_peer = new_peer;
    }
    drop(go_tx);
    writer.join().unwrap();
    port.deassign(&old).unwrap();
    assert_quiet(&port, Duration::from_millis(50));
    eprintln!("{ROUNDS} rounds: fd reused {reused} times; old read ok {old_ok}, cancelled {old_cancelled}");
    assert!(reused >= ROUNDS / 2, "the fd number was reused in only {reused} of {ROUNDS} rounds");
}

/// An ISB keys a map: equal ISBs (clones, the one a completion carries) hash alike.
#[test]
fn an_isb_keys_a_map() {
    use std::collections::HashMap;
    let port = cport::Port::builder().threads(0).build().unwrap();
    let (a, _pa) = util::pair();
    let (b, _pb) = util::pair();
    let ia = port.assign(cport::driver::UnixStream::new(a), 1).unwrap();
    let ib = port.assign(cport::driver::UnixStream::new(b), 1).unwrap();
    // An ISB's hash is its stream's identity, which never changes (see `Isb`'s docs).
    #[allow(clippy::mutable_key_type)]
    let mut names = HashMap::new();
    names.insert(ia.clone(), "a");
    names.insert(ib.clone(), "b");
    assert_eq!(names.len(), 2, "same token, different streams");
    port.close(&ia).unwrap();
    let c = util::next(&port);
    assert_eq!(names.get(c.isb().expect("a Close carries its ISB")), Some(&"a"));
    assert_eq!(names[&ib], "b");
}
