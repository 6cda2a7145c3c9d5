//! Local delivery and bounded fairness, counted in completions taken (never in time).
//!
//! A handler's I/O that finishes at once goes to the handler's own queue (`Stats::local`),
//! nobody is woken for it, and it comes back at the handler's next call. However much the
//! queues hold, a thread that takes completions looks at epoll at least once every 31 of them
//! (`Stats::forced_polls`) and at the shared injector at least once every 31, so a stream
//! armed in epoll, or a completion another thread queued, waits behind a bounded number of
//! others.

mod util;

use std::io::Write;
use std::os::unix::net::UnixStream;

use cport::{driver, Isb, Op, Port, Request};
use util::{next, port};

/// The documented bounds (`Stats::forced_polls`, ARCHITECTURE.md "Dispatch and wake-up").
const POLL_EVERY: usize = 31;
const INJECTOR_EVERY: usize = 31;
/// Hot streams: each read of one finds a byte at once, so its next read, started by the
/// handler, finishes inside `start_io` and cycles through the queues without epoll.
const HOT: usize = 50;
/// Takes after which a stream that never came is a failure (the old dispatch never polled
/// while the queues held work).
const GIVE_UP: usize = 100_000;

/// `HOT` streams whose peers have written plenty, each with a 1-byte read pending (finished
/// at once: its completion is queued in this thread's own queue), and their peers.
fn hot_streams(port: &Port) -> Vec<(Isb, UnixStream)> {
    // A completion taken first makes this thread one that serves the port.
    port.post(0, 0).unwrap();
    assert_eq!(next(port).op(), Op::Post);
    (0..HOT)
        .map(|i| {
            let (ours, mut peer) = UnixStream::pair().expect("socketpair");
            peer.write_all(&[7u8; 60_000]).expect("filling the hot stream");
            let isb = port.assign(driver::UnixStream::new(ours), 1000 + i as u64).expect("assign");
            port.start_io(&isb, Request::read_exact(vec![0; 1])).expect("hot read");
            (isb, peer)
        })
        .collect()
}

/// Handles completions as an echo-like handler does (a hot stream's read: start the next
/// read), until `done` says the awaited completion came; returns how many were taken before
/// it.
fn take_until(port: &Port, mut done: impl FnMut(&cport::Completion) -> bool) -> usize {
    for taken in 0..GIVE_UP {
        let c = next(port);
        if done(&c) {
            return taken;
        }
        assert_eq!(c.op(), Op::Read, "only the hot reads cycle: {c:?}");
        let isb = c.isb().expect("a read has its stream").clone();
        port.start_io(&isb, Request::read_exact(c.into_data())).expect("the next hot read");
    }
    panic!("the awaited completion never came in {GIVE_UP} takes while hot streams cycled");
}

#[test]
fn a_handlers_io_that_finishes_at_once_comes_back_to_it_and_wakes_nobody() {
    let port = port(0);
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let isb = port.assign(driver::UnixStream::new(ours), 1).unwrap();
    peer.write_all(b"abcd").unwrap();
    port.post(0, 0).unwrap();
    // Now this thread serves the port: between two calls, it is a handler.
    assert_eq!(next(&port).op(), Op::Post);
    let before = port.stats();
    port.start_io(&isb, Request::read_exact(vec![0; 2])).unwrap();
    port.post(0, 1).unwrap();
    let after = port.stats();
    assert_eq!(after.local - before.local, 2, "the read and the post went to this thread's queue");
    assert_eq!(after.injected, before.injected, "nothing went to the shared queue");
    assert_eq!(after.futex_wakes + after.eventfd_pokes, before.futex_wakes + before.eventfd_pokes, "nobody woken");
    let c = next(&port);
    assert_eq!((c.op(), c.data()), (Op::Read, &b"ab"[..]), "in the order they finished");
    assert_eq!(next(&port).value(), 1);

    // A thread that does not wait on the port puts its completions in the shared queue.
    let p = port.clone();
    std::thread::spawn(move || p.start_io(&isb, Request::read_exact(vec![0; 2])).unwrap()).join().unwrap();
    assert_eq!(port.stats().injected - after.injected, 1);
    assert_eq!(next(&port).data(), b"cd");
}

#[test]
fn an_armed_stream_is_served_within_the_bound_while_hot_streams_cycle() {
    let port = port(0);
    let hot = hot_streams(&port);
    let (cold, mut cold_peer) = UnixStream::pair().unwrap();
    let cold = port.assign(driver::UnixStream::new(cold), 1).unwrap();
    port.start_io(&cold, Request::read_exact(vec![0; 3])).unwrap();
    // Get the hot streams cycling through this thread's own queue.
    let injected = port.stats().injected;
    take_until(&port, |_| port.stats().local > (3 * HOT) as u64);
    assert_eq!(port.stats().injected, injected, "the hot streams cycle through this thread's own queue");
    for round in 0..5 {
        // The cold stream's data arrives; epoll has it at once. It must come within one forced
        // poll, plus the completions queued before it.
        cold_peer.write_all(b"hey").unwrap();
        let polls = port.stats().forced_polls;
        let taken = take_until(&port, |c| c.token() == 1);
        assert!(
            taken <= POLL_EVERY + HOT + 1,
            "round {round}: the armed stream waited behind {taken} completions (bound {})",
            POLL_EVERY + HOT + 1
        );
        assert!(port.stats().forced_polls > polls, "a forced poll found it");
        port.start_io(&cold, Request::read_exact(vec![0; 3])).unwrap();
    }
    drop(hot);
}

#[test]
fn the_injector_is_served_within_the_bound_while_the_own_queue_stays_full() {
    let port = port(0);
    let _hot = hot_streams(&port);
    let injected = port.stats().injected;
    take_until(&port, |_| port.stats().local > (3 * HOT) as u64);
    assert_eq!(port.stats().injected, injected, "the hot streams cycle through this thread's own queue");
    for round in 0..5u64 {
        // Posted by a thread that does not wait on the port: into the shared injector.
        let p = port.clone();
        std::thread::spawn(move || p.post(2, round).unwrap()).join().unwrap();
        let taken = take_until(&port, |c| c.token() == 2);
        assert!(
            taken <= INJECTOR_EVERY,
            "round {round}: the injector's completion waited behind {taken} others (bound {INJECTOR_EVERY})"
        );
    }
}
