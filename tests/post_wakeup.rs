//! User completions posted from many threads, `wakeup`, waits with a timeout, and the batch
//! form `next_completions`.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cport::{ErrorKind, Op, Port, Status};
use util::{eventually, next, port, GUARD};

#[test]
fn posts_from_8_threads_are_each_delivered_exactly_once_to_4_takers() {
    const POSTERS: u64 = 8;
    const PER: u64 = 10_000;
    const TOTAL: usize = (POSTERS * PER) as usize;
    let port = port(1);
    let taken = AtomicUsize::new(0);
    let got: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        for t in 0..POSTERS {
            let port = &port;
            s.spawn(move || {
                for i in 0..PER {
                    port.post(t, t * PER + i).unwrap();
                }
            });
        }
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let (port, taken) = (&port, &taken);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let until = Instant::now() + GUARD;
                    while taken.load(Ordering::SeqCst) < TOTAL {
                        assert!(
                            Instant::now() < until,
                            "only {} of {TOTAL} posts arrived",
                            taken.load(Ordering::SeqCst)
                        );
                        if let Some(c) = port.next_completion(Some(Duration::from_millis(20))).unwrap() {
                            assert_eq!((c.op(), c.status(), c.bytes()), (Op::Post, Status::Ok, 0));
                            assert!(c.isb().is_none(), "a post belongs to no stream");
                            mine.push((c.token(), c.value()));
                            taken.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    mine
                })
            })
            .collect();
        takers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut values: Vec<u64> = Vec::with_capacity(TOTAL);
    for mine in &got {
        // (Takers share the queue by taking batches and stealing from each other, so one
        // taker may see a poster's values out of order; with one taker they come in order:
        // `one_taker_gets_posts_in_order`.)
        for &(token, value) in mine {
            assert_eq!(value / PER, token, "the value came with its own token");
            values.push(value);
        }
    }
    assert_eq!(values.len(), TOTAL, "no post lost or delivered twice");
    values.sort_unstable();
    assert!(values.iter().copied().eq(0..TOTAL as u64), "every value exactly once");
    assert!(port.try_next_completion().unwrap().is_none());
}

#[test]
fn one_taker_gets_posts_in_order() {
    let port = port(0);
    for v in 0..1000 {
        port.post(1, v).unwrap();
    }
    let got: Vec<u64> = (0..1000).map(|_| next(&port).value()).collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>(), "one queue, one taker: first in, first out");
}

/// Runs `next_completion(None)` on a helper thread; returns its result channel.
fn blocked_waiter(
    port: &Port,
) -> (mpsc::Receiver<cport::Result<Option<cport::Completion>>>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let p = port.clone();
    let h = std::thread::spawn(move || {
        let _ = tx.send(p.next_completion(None));
    });
    (rx, h)
}

/// Receives the waiter's result within the hang guard; on a hang, unblocks it with a post
/// first so the test fails instead of hanging.
fn waiter_result(
    port: &Port,
    rx: &mpsc::Receiver<cport::Result<Option<cport::Completion>>>,
    what: &str,
) -> Option<cport::Completion> {
    match rx.recv_timeout(GUARD) {
        Ok(r) => r.expect("next_completion failed"),
        Err(_) => {
            port.post(u64::MAX, 0).unwrap();
            panic!("{what}: the waiter did not return within {GUARD:?}");
        }
    }
}

#[test]
fn wakeup_releases_a_thread_blocked_without_timeout() {
    let port = port(1);
    let (rx, h) = blocked_waiter(&port);
    assert!(eventually(|| port.waiters() == 1), "the waiter parks");
    assert!(rx.try_recv().is_err(), "a parked waiter has not returned");
    port.wakeup();
    let r = waiter_result(&port, &rx, "wakeup");
    assert!(r.is_none(), "a woken waiter returns no completion, got {r:?}");
    h.join().unwrap();
    assert_eq!(port.waiters(), 0);
    // The wakeup was used up by that waiter: the next wait runs its whole timeout (a wakeup
    // left over would end it at once).
    let t = Instant::now();
    assert!(port.next_completion(Some(Duration::from_millis(30))).unwrap().is_none());
    assert!(t.elapsed() >= Duration::from_millis(30), "a wakeup was left over: the wait ended after {:?}", t.elapsed());
}

#[test]
fn wakeup_releases_exactly_one_of_two_waiters() {
    let port = port(1);
    let (rx1, h1) = blocked_waiter(&port);
    let (rx2, h2) = blocked_waiter(&port);
    assert!(eventually(|| port.waiters() == 2));
    port.wakeup();
    assert!(eventually(|| port.waiters() == 1), "one waiter left the stack");
    // Exactly one has returned, with nothing.
    let start = Instant::now();
    let mut first = None;
    while first.is_none() && start.elapsed() < GUARD {
        first = rx1.try_recv().ok().map(|r| (1, r)).or_else(|| rx2.try_recv().ok().map(|r| (2, r)));
        std::thread::sleep(Duration::from_millis(1));
    }
    let (which, r) = first.expect("one waiter returns");
    assert!(r.unwrap().is_none());
    let other = if which == 1 { &rx2 } else { &rx1 };
    assert!(other.try_recv().is_err(), "the other waiter still waits");
    // A post releases the other one, with the post.
    port.post(5, 55).unwrap();
    let c = waiter_result(&port, other, "post").expect("the post");
    assert_eq!((c.op(), c.token(), c.value()), (Op::Post, 5, 55));
    h1.join().unwrap();
    h2.join().unwrap();
}

#[test]
fn wakeup_with_nobody_waiting_makes_the_next_wait_return_at_once() {
    let port = port(1);
    assert_eq!(port.waiters(), 0);
    port.wakeup();
    // A wait without a timeout would block forever but for the saved wakeup.
    let (rx, h) = blocked_waiter(&port);
    let r = waiter_result(&port, &rx, "saved wakeup");
    assert!(r.is_none(), "got {r:?}");
    h.join().unwrap();
    // One wakeup releases one wait: the next one times out.
    let t = Instant::now();
    assert!(port.next_completion(Some(Duration::from_millis(50))).unwrap().is_none());
    assert!(t.elapsed() >= Duration::from_millis(50), "the second wait ran its full timeout");
}

#[test]
fn wakeup_does_not_hide_a_queued_completion() {
    let port = port(1);
    port.post(1, 11).unwrap();
    port.wakeup();
    // A completion that is there is taken first; the wakeup then ends the next wait.
    let c = next(&port);
    assert_eq!(c.value(), 11);
    let (rx, h) = blocked_waiter(&port);
    let r = waiter_result(&port, &rx, "saved wakeup after a completion");
    assert!(r.is_none(), "got {r:?}");
    h.join().unwrap();
}

#[test]
fn next_completion_times_out_after_at_least_the_timeout() {
    let port = port(1);
    for ms in [0u64, 1, 100, 250] {
        let d = Duration::from_millis(ms);
        let t = Instant::now();
        assert!(port.next_completion(Some(d)).unwrap().is_none());
        assert!(t.elapsed() >= d, "returned after {:?}, before the timeout {d:?}", t.elapsed());
    }
    assert!(port.try_next_completion().unwrap().is_none());
    assert_eq!(port.waiters(), 0, "a waiter that timed out left the stack");
    // A post that arrives while a thread waits with a timeout is delivered to it.
    let p = port.clone();
    let h = std::thread::spawn(move || p.next_completion(Some(GUARD)).unwrap());
    assert!(eventually(|| port.waiters() == 1));
    port.post(3, 33).unwrap();
    let c = h.join().unwrap().expect("the post, before the timeout");
    assert_eq!((c.token(), c.value()), (3, 33));
}

#[test]
fn next_completions_takes_up_to_max_and_leaves_the_rest() {
    let port = port(1);
    for v in 0..10 {
        port.post(v, v * 10).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(port.next_completions(&mut out, 4, Some(GUARD)).unwrap(), 4);
    assert_eq!(out.iter().map(|c| c.value()).collect::<Vec<_>>(), vec![0, 10, 20, 30], "in queue order");
    assert_eq!(port.next_completions(&mut out, 4, Some(GUARD)).unwrap(), 4);
    assert_eq!(out.len(), 8, "appended, not replaced");
    // Another thread takes one of the two left; the batch then gets only what remains.
    let c = next(&port);
    assert_eq!(c.value(), 80);
    assert_eq!(port.next_completions(&mut out, 4, Some(GUARD)).unwrap(), 1);
    assert_eq!(out.iter().map(|c| c.value()).collect::<Vec<_>>(), vec![0, 10, 20, 30, 40, 50, 60, 70, 90]);
    assert!(port.try_next_completion().unwrap().is_none(), "nothing left");
    // Nothing queued: the batch waits like next_completion, and returns 0 on timeout.
    let t = Instant::now();
    assert_eq!(port.next_completions(&mut out, 4, Some(Duration::from_millis(30))).unwrap(), 0);
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(out.len(), 9);
    // ... and returns 0 on wakeup, at once (not after its timeout).
    port.wakeup();
    let t = Instant::now();
    assert_eq!(port.next_completions(&mut out, 4, Some(GUARD)).unwrap(), 0);
    assert!(t.elapsed() < GUARD / 2, "the wakeup was lost: the batch waited {:?}", t.elapsed());
    assert_eq!(port.next_completions(&mut out, 0, Some(GUARD)).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn batches_from_several_threads_share_the_queue_without_loss() {
    const N: u64 = 20_000;
    let port = port(1);
    for v in 0..N {
        port.post(0, v).unwrap();
    }
    let taken = AtomicUsize::new(0);
    let all: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let (port, taken) = (&port, &taken);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut out = Vec::new();
                    while taken.load(Ordering::SeqCst) < N as usize {
                        let n = port.next_completions(&mut out, 64, Some(Duration::from_millis(20))).unwrap();
                        assert!(n <= 64 && n == out.len(), "took {n}, appended {}", out.len());
                        taken.fetch_add(n, Ordering::SeqCst);
                        mine.extend(out.drain(..).map(|c| c.value()));
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut all = all;
    assert_eq!(all.len(), N as usize);
    all.sort_unstable();
    assert!(all.iter().copied().eq(0..N));
}

/// `Port::next` says what ended the wait: a completion, a wakeup, or the timeout.
#[test]
fn next_tells_a_wakeup_from_a_timeout() {
    let port = Port::builder().threads(0).build().unwrap();
    assert!(matches!(port.next(Some(Duration::from_millis(5))).unwrap(), cport::Next::TimedOut));
    port.wakeup();
    assert!(matches!(port.next(None).unwrap(), cport::Next::Woken), "a wakeup, with no timeout given");
    port.post(3, 33).unwrap();
    port.wakeup();
    match port.next(None).unwrap() {
        cport::Next::Completion(c) => assert_eq!((c.token(), c.value()), (3, 33), "queued completions come first"),
        other => panic!("expected the post, got {other:?}"),
    }
    assert!(matches!(port.next(Some(Duration::ZERO)).unwrap(), cport::Next::Woken));
    assert!(port.next(Some(Duration::ZERO)).unwrap().completion().is_none());
}
