//! The loom models of cport: one race per test, each driving the real `Port` through its public
//! API with the stand-in selector as the kernel. Each names the interleaving it guards and the
//! planted bug (`CPORT_PLANT=...`, see `check-plants.sh`) that it must catch.
#![cfg(loom)]

use std::time::Duration;

use cport::{ErrorKind, Op, Port, Request, Status};
use cport_loom_tests::{drain, listener, model, pair, windowed};
use loom::thread;

fn port() -> Port {
    Port::builder().threads(1).build().unwrap()
}

/// Model 1: Cancel racing completion. A read is pending and armed; the peer's data makes the worker
/// take the event and run the read while this thread calls `cancel`. Whoever gets the stream
/// lock first ends the read; the other finds the side empty. Exactly one completion, its status
/// agrees with what `cancel` returned, the buffer comes back once.
/// Plant `cancel_toctou`: cancel counts the I/Os to cancel before taking the lock.
#[test]
fn cancel_races_completion() {
    model("cancel_races_completion", || {
        let port = port();
        let (drv, peer) = pair(&port);
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();

        let sender = thread::spawn(move || peer.send(b"x"));
        let cancelled = port.cancel(&isb).unwrap();
        sender.join().unwrap();

        let done = drain(&port);
        assert_eq!(done.len(), 1, "one started read, one completion: {done:?}");
        let c = &done[0];
        assert_eq!(c.buffer().map(<[u8]>::len), Some(4), "the buffer comes back");
        match c.status() {
            Status::Ok => {
                assert_eq!((cancelled, c.data()), (0, &b"x"[..]), "cancel's answer agrees with the completion")
            }
            Status::Cancelled => {
                assert_eq!((cancelled, c.bytes()), (1, 0), "cancel's answer agrees with the completion")
            }
            s => panic!("unexpected status {s:?}"),
        }
    });
}

/// Model 2: Timeout racing completion and cancel. The deadline has passed and the timer fires on the
/// worker while the peer's data arrives and this thread cancels: one winner, one completion.
/// Plant `timeout_keeps_io`: the deadline reports a timeout but leaves the I/O pending.
#[test]
fn timeout_races_completion_and_cancel() {
    model("timeout_races_completion_and_cancel", || {
        let port = port();
        let kernel = port.kernel();
        let (drv, peer) = pair(&port);
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
        port.set_timeout(&isb, Some(Duration::ZERO)).unwrap();
        // Model time does not pass; wall time must, past the wheel's tick (1 µs under loom),
        // for the deadline to count as expired when the worker polls the wheel.
        std::thread::sleep(Duration::from_micros(20));

        let timer = thread::spawn(move || kernel.fire_timer());
        let sender = thread::spawn(move || peer.send(b"x"));
        let cancelled = port.cancel(&isb).unwrap();
        timer.join().unwrap();
        sender.join().unwrap();

        let done = drain(&port);
        assert_eq!(done.len(), 1, "one started read, one completion: {done:?}");
        let c = &done[0];
        assert_eq!(c.buffer().map(<[u8]>::len), Some(4));
        let agrees = "cancel's answer agrees with the completion";
        match c.status() {
            Status::Ok => assert_eq!((cancelled, c.data()), (0, &b"x"[..]), "{agrees}"),
            Status::Cancelled => assert_eq!(cancelled, 1, "{agrees}"),
            Status::TimedOut => assert_eq!((cancelled, c.bytes()), (0, 0), "{agrees}"),
            s => panic!("unexpected status {s:?}"),
        }
    });
}

/// Model 2b: a request's own timeout (`Request::timeout`) racing completion and cancel, as
/// model 2 races the stream's deadline: one winner, one completion, its status agreeing with
/// what `cancel` returned. Plant `request_timeout_keeps_io`: the timeout is reported and the
/// request left pending.
#[test]
fn request_timeout_races_completion_and_cancel() {
    model("request_timeout_races_completion_and_cancel", || {
        let port = port();
        let kernel = port.kernel();
        let (drv, peer) = pair(&port);
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4]).timeout(Duration::ZERO)).unwrap();
        // As in model 2: wall time must pass the wheel's tick for the timeout to be due.
        std::thread::sleep(Duration::from_micros(20));

        let timer = thread::spawn(move || kernel.fire_timer());
        let sender = thread::spawn(move || peer.send(b"x"));
        let cancelled = port.cancel(&isb).unwrap();
        timer.join().unwrap();
        sender.join().unwrap();

        let done = drain(&port);
        assert_eq!(done.len(), 1, "one started read, one completion: {done:?}");
        let c = &done[0];
        assert_eq!(c.buffer().map(<[u8]>::len), Some(4));
        let agrees = "cancel's answer agrees with the completion";
        match c.status() {
            Status::Ok => assert_eq!((cancelled, c.data()), (0, &b"x"[..]), "{agrees}"),
            Status::Cancelled => assert_eq!(cancelled, 1, "{agrees}"),
            Status::TimedOut => assert_eq!((cancelled, c.bytes()), (0, 0), "{agrees}"),
            s => panic!("unexpected status {s:?}"),
        }
    });
}

/// Model 2c: `cancel_read` racing the read's completion while a write is pending on the other
/// side (the peer takes nothing, so it stays pending). The read ends once, agreeing with
/// `cancel_read`'s answer; the write is not touched: it is still pending afterwards (a
/// `cancel_write` then ends it). Plant `cancel_side_ends_both`: a one-side cancel ends both sides.
#[test]
fn cancel_read_leaves_the_write_pending() {
    model("cancel_read_leaves_the_write_pending", || {
        let port = port();
        let (drv, peer) = windowed(&port, 0);
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::write(b"w".to_vec())).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();

        let sender = thread::spawn(move || peer.send(b"x"));
        let cancelled = port.cancel_read(&isb).unwrap();
        sender.join().unwrap();
        assert_eq!(port.cancel_write(&isb).unwrap(), 1, "the write is still pending after cancel_read");

        let done = drain(&port);
        let ops: Vec<(Op, Status)> = done.iter().map(|c| (c.op(), c.status())).collect();
        assert_eq!(ops.len(), 2, "{ops:?}");
        let read = done.iter().find(|c| c.op() == Op::Read).expect("the read's completion");
        match read.status() {
            Status::Ok => assert_eq!((cancelled, read.data()), (0, &b"x"[..]), "cancel_read's answer agrees"),
            Status::Cancelled => assert_eq!(cancelled, 1, "cancel_read's answer agrees"),
            s => panic!("unexpected status {s:?}"),
        }
        assert!(ops.contains(&(Op::Write, Status::Cancelled)), "the write ends once, cancelled: {ops:?}");
    });
}

/// Model 2d: an `accept_many` series racing a close. Another thread takes the first accept's
/// completion, which starts the next accept of the series, while this thread closes the
/// listener. Either the next accept started first (the close then cancels it: one Cancelled
/// completion) or the close came first (it never starts); either way the Close completion is
/// the listener's last and comes once. The taker's thread ends with the Close in its queue,
/// which moves to the shared queue while this thread drains. Plants `next_accept_unchecked`
/// (the next accept starts without a look at whether the stream was released, so it is never
/// ended, and the drain waits for the Close forever) and `drain_misses_a_move` (shutdown's last
/// look checks the queues before `in_flight` and ignores moves: the Close, moving from the
/// leaving thread's queue, falls between the looks and `PortClosed` comes first).
#[test]
fn accept_series_races_close() {
    model("accept_series_races_close", || {
        let port = Port::builder().threads(0).build().unwrap();
        let (lis, dialer) = listener(&port);
        let isb = port.assign(lis, 1).unwrap();
        dialer.connect();
        port.accept_many(&isb, 3).unwrap();

        let p = port.clone();
        let taker = thread::spawn(move || {
            let c = p.next_completion(None).unwrap().expect("no timeout");
            (c.op(), c.status(), c.value())
        });
        port.close(&isb).unwrap();
        let first = taker.join().unwrap();
        let done = drain(&port);

        assert_eq!(first, (Op::Accept, Status::Ok, 2), "the first accept, two more to come");
        let ops: Vec<(Op, Status)> = done.iter().map(|c| (c.op(), c.status())).collect();
        assert!(
            ops == vec![(Op::Close, Status::Ok)]
                || ops == vec![(Op::Accept, Status::Cancelled), (Op::Close, Status::Ok)],
            "the started accept ends before the close, the Close comes last and once: {ops:?}"
        );
    });
}

/// Model 3a: Close racing a readiness event the worker is handling. The read either completes or is
/// cancelled, but always before the Close completion, which is the stream's last; the fd is
/// deregistered. Plant `close_before_cancel`: Close is queued before the cancellations.
#[test]
fn close_races_readiness() {
    model("close_races_readiness", || {
        let port = port();
        let kernel = port.kernel();
        let (drv, peer) = pair(&port);
        let fd = peer.fd();
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();

        let sender = thread::spawn(move || peer.send(b"x"));
        port.close(&isb).unwrap();
        sender.join().unwrap();

        let done = drain(&port);
        let ops: Vec<(Op, Status)> = done.iter().map(|c| (c.op(), c.status())).collect();
        assert_eq!(done.len(), 2, "{ops:?}");
        assert_eq!(ops[0].0, Op::Read, "the read ends before the close: {ops:?}");
        assert!(matches!(ops[0].1, Status::Ok | Status::Cancelled), "{ops:?}");
        assert_eq!(ops[1], (Op::Close, Status::Ok));
        assert!(!kernel.is_registered(fd));
        assert_eq!(port.start_io(&isb, Request::read_some(vec![0; 1])).unwrap_err().kind(), ErrorKind::NotAssigned);
    });
}

/// Model 3b: Deassign racing a readiness event, then the slot is reused at once. The worker may hold
/// the old stream's event (slot 0, generation 0) when the new stream takes slot 0 with
/// generation 1: the stale event must not touch the new stream, whose driver is read only by
/// the try in `start_io` (it is never made readable). A third stream, made readable after the
/// first, is handled by the same worker after any event of the first, so once its read
/// completes the stale event is behind us. Plant `no_generation`: the table finds a slot's
/// occupant whatever its generation.
#[test]
fn reused_slot_gets_no_stale_event() {
    model("reused_slot_gets_no_stale_event", || {
        let port = port();
        let (a, peer_a) = pair(&port);
        let isb_a = port.assign(a, 1).unwrap();
        port.start_io(&isb_a, Request::read_some(vec![0; 4])).unwrap();
        let (c, peer_c) = pair(&port);
        let isb_c = port.assign(c, 3).unwrap();
        port.start_io(&isb_c, Request::read_some(vec![0; 4])).unwrap();

        let sender = thread::spawn(move || {
            peer_a.send(b"a");
            peer_c.send(b"c");
        });
        port.deassign(&isb_a).unwrap();
        let (b, peer_b) = pair(&port);
        let isb_b = port.assign(b, 2).unwrap();
        port.start_io(&isb_b, Request::read_some(vec![0; 4])).unwrap();

        let mut tokens = Vec::new();
        while !tokens.contains(&3) {
            tokens.push(port.next_completion(None).unwrap().expect("no timeout").token());
        }
        sender.join().unwrap();
        assert_eq!(peer_b.reads(), 1, "the new stream saw a stale event");
        assert_eq!(tokens.iter().filter(|t| **t == 1).count(), 1, "the old read ends once: {tokens:?}");
        assert!(!tokens.contains(&2), "the new read is still pending: {tokens:?}");

        let rest: Vec<(u64, Status)> = drain(&port).iter().map(|c| (c.token(), c.status())).collect();
        assert_eq!(rest, vec![(2, Status::Cancelled)], "the new read ends at shutdown");
        drop((isb_b, isb_c));
    });
}

/// Model 4: Two threads in `next_completion` while the worker pushes a completion and this thread
/// calls `wakeup`: the completion goes to exactly one of them, the wakeup releases the other,
/// nobody sleeps forever. Plant `lost_wakeup`: a waiter parks without re-checking the queue
/// after registering as a sleeper.
#[test]
fn waiters_race_worker_and_wakeup() {
    model("waiters_race_worker_and_wakeup", || {
        let port = port();
        let (drv, peer) = pair(&port);
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();

        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let p = port.clone();
                thread::spawn(move || p.next_completion(None).unwrap())
            })
            .collect();
        peer.send(b"x");
        port.wakeup();
        let got: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();

        let completions: Vec<_> = got.iter().flatten().collect();
        assert_eq!(completions.len(), 1, "exactly one waiter gets the completion: {got:?}");
        assert_eq!(completions[0].data(), b"x");
        assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1, "the other is woken: {got:?}");
    });
}

/// Model 5: Last `dec_ref` racing the worker completing an I/O and a thread parked in
/// `next_completion`. Shutdown then the drop on this thread race the waiter, whose drop may be
/// the last: the waiter drains the read's single completion (Ok or Cancelled) before
/// `PortClosed`, teardown stops and joins the worker whoever runs it, and loom's leak check
/// passes. Plants `closed_before_cancel` (waiters told the port is closed before the
/// cancellations are queued) and `pollers_not_stopped` (shutdown does not stop a thread
/// blocked in epoll, so teardown's join, or the waiter, waits forever).
#[test]
fn last_dec_ref_races_worker_and_waiter() {
    model("last_dec_ref_races_worker_and_waiter", || {
        let port = port();
        let kernel = port.kernel();
        let (drv, peer) = pair(&port);
        let fd = peer.fd();
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();

        let p = port.clone();
        let waiter = thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match p.next_completion(None) {
                    Ok(Some(c)) => got.push((c.op(), c.status())),
                    Ok(None) => {}
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::PortClosed);
                        break;
                    }
                }
            }
            drop(p);
            got
        });
        let sender = thread::spawn(move || peer.send(b"x"));
        port.shutdown();
        drop(port);
        sender.join().unwrap();
        let got = waiter.join().unwrap();

        assert_eq!(got.len(), 1, "the read's completion is drained before PortClosed: {got:?}");
        assert!(matches!(got[0], (Op::Read, Status::Ok | Status::Cancelled)), "{got:?}");
        assert!(!kernel.is_registered(fd), "teardown deregistered the stream");
        assert_eq!(kernel.teardowns(), 1, "torn down exactly once");
        assert!(!isb.is_assigned());
    });
}

/// Model 6: Concurrent `inc_ref`/`dec_ref` from several threads: the port is torn down exactly once,
/// by whichever drop is last (the stream is deregistered, the worker joined, nothing leaks).
/// Plant `racy_refcount`: a decrement made of a load and a store.
#[test]
fn concurrent_inc_ref_dec_ref() {
    model("concurrent_inc_ref_dec_ref", || {
        let port = port();
        let kernel = port.kernel();
        let (drv, peer) = pair(&port);
        let fd = peer.fd();
        let isb = port.assign(drv, 7).unwrap();
        let a = port.inc_ref();
        let b = port.clone();
        let t1 = thread::spawn(move || {
            let c = a.inc_ref();
            a.dec_ref();
            c.dec_ref();
        });
        let t2 = thread::spawn(move || b.dec_ref());
        port.dec_ref();
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(kernel.teardowns(), 1, "torn down exactly once");
        assert!(!kernel.is_registered(fd), "the last dec_ref tore the port down");
        assert!(!isb.is_assigned());
    });
}

/// Model 7: `post` racing `shutdown` while a thread drains: a post that returned `Ok` is delivered
/// before `PortClosed`; one that lost the race returns `PortClosed` to the poster. Never
/// silently lost. Plant `post_unguarded`: post pushes without telling shutdown it is under way.
#[test]
fn post_races_shutdown() {
    model("post_races_shutdown", || {
        let port = port();
        let p = port.clone();
        let poster = thread::spawn(move || match p.post(9, 99) {
            Ok(()) => true,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::PortClosed);
                false
            }
        });
        let done = drain(&port);
        let posted = poster.join().unwrap();
        let values: Vec<u64> = done.iter().map(|c| c.value()).collect();
        assert_eq!(
            values,
            if posted { vec![99] } else { vec![] },
            "a post that returned Ok is delivered once before PortClosed (posted: {posted})"
        );
    });
}

/// Model 8: two waiters on a port without workers (one waits in epoll, one parks) while this
/// thread posts and calls `wakeup`: the post goes to exactly one of them, the wakeup releases
/// the other, nobody waits forever. Plants `poller_blocks_blind` (the poller blocks in epoll
/// without looking again after marking itself blocked, so a wakeup made just before the mark
/// is neither seen nor poked) and `wakeup_left_to_searcher` (a wakeup made while a woken thread
/// is still looking is left to that thread, which takes the post instead).
#[test]
fn waiters_race_post_and_wakeup() {
    model("waiters_race_post_and_wakeup", || {
        let port = Port::builder().threads(0).build().unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let p = port.clone();
                thread::spawn(move || p.next_completion(None).unwrap().map(|c| c.value()))
            })
            .collect();
        port.post(1, 42).unwrap();
        port.wakeup();
        let mut got: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![None, Some(42)], "one post, one wakeup");
    });
}

/// Model 9: two posts while one waiter waits in epoll and one is parked. The first post wakes
/// the parked one, which then counts as looking for work, so the second post wakes nobody: a
/// woken thread that stops looking with work still queued passes the look on. Each waiter gets
/// one post. Plant `no_pass_on`: the last woken thread to stop looking wakes nobody.
#[test]
fn searcher_passes_the_look_on() {
    model("searcher_passes_the_look_on", || {
        let port = Port::builder().threads(0).build().unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let p = port.clone();
                thread::spawn(move || p.next_completion(None).unwrap().map(|c| c.value()))
            })
            .collect();
        port.post(1, 1).unwrap();
        port.post(1, 2).unwrap();
        let mut got: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![Some(1), Some(2)], "each waiter gets one post");
    });
}

/// Model 9b: local delivery. This thread serves the port (it took a completion: between two
/// calls it is a handler) while another waiter waits. The handler starts a read whose data is
/// already there, so it finishes inside `start_io`: its completion goes to the handler's own
/// queue and comes back at the handler's next call, whatever the other waiter does (nobody
/// else may take it: a handler back soon keeps its queue); a wakeup then releases the other.
/// Plant `no_local_delivery`: the handler's completion goes to the shared queue, where the other
/// waiter, woken for it, may take it first.
#[test]
fn a_handlers_io_comes_back_to_it() {
    model("a_handlers_io_comes_back_to_it", || {
        let port = Port::builder().threads(0).build().unwrap();
        let (drv, peer) = pair(&port);
        let isb = port.assign(drv, 7).unwrap();
        peer.send(b"ab");
        port.post(1, 0).unwrap();
        assert_eq!(port.next_completion(None).unwrap().map(|c| c.token()), Some(1));
        let p = port.clone();
        let other = thread::spawn(move || p.next_completion(None).unwrap().map(|c| c.token()));
        port.start_io(&isb, Request::read_exact(vec![0; 2])).unwrap();
        let mine = port.next_completion(Some(Duration::ZERO)).unwrap().map(|c| c.token());
        port.wakeup();
        let theirs = other.join().unwrap();
        assert_eq!((mine, theirs), (Some(7), None), "the handler's own read comes back to it");
    });
}

/// Model 9c: a user timer racing its cancel and shutdown. The timer's deadline has passed and
/// the timerfd fires on the worker while this thread cancels the timer and then shuts the port
/// down: whichever of the three gets the timers' lock first ends it; exactly one completion,
/// before `PortClosed`, and `Cancelled` if `cancel_timer` said it ended it. Plant
/// `timer_cancel_unlocked`: the cancel looks under the lock but ends the timer after letting
/// go, so a fire in between completes it a second time.
#[test]
fn timer_races_cancel_and_shutdown() {
    model("timer_races_cancel_and_shutdown", || {
        let port = port();
        let kernel = port.kernel();
        let timer = port.timer(7, 42, Duration::ZERO).unwrap();
        // Wall time must pass the wheel's tick (1 µs under loom) for the timer to be due.
        std::thread::sleep(Duration::from_micros(20));
        let firer = thread::spawn(move || kernel.fire_timer());
        let cancelled = port.cancel_timer(&timer).unwrap();
        let done = drain(&port);
        firer.join().unwrap();
        assert_eq!(done.len(), 1, "one timer, one completion: {done:?}");
        let c = &done[0];
        assert_eq!((c.op(), c.token(), c.value()), (Op::Timer, 7, 42));
        if cancelled {
            assert_eq!(c.status(), Status::Cancelled, "cancel's answer agrees with the completion");
        } else {
            assert_eq!(c.status(), Status::Ok, "not cancelled: it fired (shutdown came after)");
        }
    });
}

/// Model 10: `connect` racing `shutdown` while this thread drains. A connect that returned an
/// ISB has its one completion before `PortClosed`; one that lost the race is refused with
/// `PortClosed`. (The connect fails at once, deterministically: nothing listens at the path.)
/// Plant `connect_unchecked`: the connect is started without looking at the port's state
/// again after its stream was assigned, so shutdown's cancel pass can miss it.
#[test]
fn connect_races_shutdown() {
    model("connect_races_shutdown", || {
        let port = Port::builder().threads(0).build().unwrap();
        let p = port.clone();
        let connector = thread::spawn(move || match p.connect_unix("/nonexistent/cport-loom.sock", 5) {
            Ok(isb) => Some(isb),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::PortClosed);
                None
            }
        });
        let done = drain(&port);
        let isb = connector.join().unwrap();
        let got: Vec<(u64, Op)> = done.iter().map(|c| (c.token(), c.op())).collect();
        match isb {
            Some(_) => assert_eq!(got, vec![(5, Op::Connect)], "a started connect completes before PortClosed"),
            None => assert_eq!(got, vec![], "a refused connect queues nothing"),
        }
    });
}

/// Model 11: `close` racing `shutdown` while this thread drains, with a read pending. The read
/// is cancelled once; a close that returned `Ok` has its Close completion, after the read's,
/// before `PortClosed`; a refused close (`PortClosed`) queues nothing. Plant
/// `close_unchecked`: close queues its completion whatever the port's state.
#[test]
fn close_races_shutdown() {
    model("close_races_shutdown", || {
        let port = port();
        let (drv, _peer) = pair(&port);
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
        let p = port.clone();
        let closer = thread::spawn(move || match p.close(&isb) {
            Ok(()) => true,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::PortClosed);
                false
            }
        });
        let done = drain(&port);
        let closed = closer.join().unwrap();
        let got: Vec<(Op, Status)> = done.iter().map(|c| (c.op(), c.status())).collect();
        let mut want = vec![(Op::Read, Status::Cancelled)];
        if closed {
            want.push((Op::Close, Status::Ok));
        }
        assert_eq!(got, want, "closed: {closed}; every completion before PortClosed, Close last");
    });
}

/// Model 12: no stranding. One epoll wait gives a waiter two completions; it returns one and
/// its thread ends, while another waiter waits in `next_completion`. What the first left in its
/// queue must reach the second (the leaving thread's context hands its queue to the shared
/// one and wakes a waiter). Plant `retire_keeps_work`: a thread that leaves for good keeps what
/// its queue held.
#[test]
fn no_completion_stranded_when_its_taker_leaves() {
    model("no_completion_stranded_when_its_taker_leaves", || {
        let port = Port::builder().threads(0).build().unwrap();
        let (a, peer_a) = pair(&port);
        let (b, peer_b) = pair(&port);
        let isb_a = port.assign(a, 1).unwrap();
        let isb_b = port.assign(b, 2).unwrap();
        port.start_io(&isb_a, Request::read_some(vec![0; 4])).unwrap();
        port.start_io(&isb_b, Request::read_some(vec![0; 4])).unwrap();
        peer_a.send(b"a");
        peer_b.send(b"b");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let p = port.clone();
                thread::spawn(move || p.next_completion(None).unwrap().expect("no timeout").token())
            })
            .collect();
        let mut got: Vec<u64> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![1, 2], "each read's completion reaches a waiter");
        drop((isb_a, isb_b));
    });
}

/// Model 13: a stream is closed while its read's completion sits, untaken, in the worker's
/// queue. The Close completion waits until that completion has been taken (the taker delivers
/// it), so the Close is the stream's last whichever queue each sits in, and each comes once.
/// Plant `close_not_deferred`: close delivers its completion at once, into the shared queue,
/// which a taker looks at before other threads' queues.
#[test]
fn close_waits_for_the_streams_last_completion() {
    model("close_waits_for_the_streams_last_completion", || {
        let port = port();
        let (drv, peer) = pair(&port);
        let isb = port.assign(drv, 7).unwrap();
        port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
        let sender = thread::spawn(move || peer.send(b"x"));
        sender.join().unwrap();
        port.close(&isb).unwrap();
        let done = drain(&port);
        let ops: Vec<(Op, Status)> = done.iter().map(|c| (c.op(), c.status())).collect();
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(
            matches!(ops[0], (Op::Read, Status::Ok | Status::Cancelled)),
            "the read ends before the close: {ops:?}"
        );
        assert_eq!(ops[1], (Op::Close, Status::Ok), "the Close completion is the stream's last: {ops:?}");
    });
}

/// Model 14: shutdown races a waiter woken for a post. Each of two waiters takes completions
/// until `PortClosed`: the post is taken exactly once before, and both end (nobody parks after
/// shutdown woke everyone). Plant `searcher_misses_close`: the look before parking ignores
/// shutdown.
#[test]
fn shutdown_races_a_searcher() {
    model("shutdown_races_a_searcher", || {
        let port = Port::builder().threads(0).build().unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let p = port.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        match p.next_completion(None) {
                            Ok(Some(c)) => got.push(c.value()),
                            Ok(None) => {}
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::PortClosed);
                                return got;
                            }
                        }
                    }
                })
            })
            .collect();
        port.post(1, 5).unwrap();
        port.shutdown();
        let got: Vec<u64> = waiters.into_iter().flat_map(|w| w.join().unwrap()).collect();
        assert_eq!(got, vec![5], "the post is taken once, before PortClosed");
    });
}
