//! Ports without workers (`threads(0)`): the threads in `next_completion` take turns polling
//! epoll. Whatever wakes a waiter must also wake the one blocked in `epoll_wait`.

mod util;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cport::{ErrorKind, Op, Port, Request, Status};
use util::next;

fn polling_port() -> Port {
    Port::builder().threads(0).build().unwrap()
}

/// Waits until `n` threads wait in epoll inside `next_completion`.
#[track_caller]
fn wait_for_pollers(port: &Port, n: usize) {
    assert!(util::eventually(|| port.waiters() == n), "{} of {n} threads wait in next_completion", port.waiters());
}

#[test]
fn a_read_completes_for_the_thread_that_polls() {
    let port = polling_port();
    let (a, mut b) = UnixStream::pair().unwrap();
    let isb = port.assign(cport::driver::UnixStream::new(a), 1).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 16])).unwrap();
    let p = port.clone();
    let taker = std::thread::spawn(move || next(&p));
    wait_for_pollers(&port, 1);
    b.write_all(b"hi").unwrap();
    let c = taker.join().unwrap();
    assert_eq!((c.op(), c.status(), c.data()), (Op::Read, Status::Ok, &b"hi"[..]));
}

#[test]
fn a_post_wakes_the_thread_blocked_in_epoll_wait() {
    let port = polling_port();
    let p = port.clone();
    let taker = std::thread::spawn(move || next(&p));
    wait_for_pollers(&port, 1);
    port.post(5, 55).unwrap();
    let c = taker.join().unwrap();
    assert_eq!((c.op(), c.token(), c.value()), (Op::Post, 5, 55));
}

#[test]
fn wakeup_releases_the_polling_thread() {
    let port = polling_port();
    let p = port.clone();
    let taker = std::thread::spawn(move || p.next_completion(None).unwrap().is_none());
    wait_for_pollers(&port, 1);
    port.wakeup();
    assert!(taker.join().unwrap(), "woken without a completion");
}

#[test]
fn a_timeout_ends_the_poll() {
    let port = polling_port();
    let start = Instant::now();
    assert!(port.next_completion(Some(Duration::from_millis(30))).unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn stream_deadlines_fire_while_polling() {
    let port = polling_port();
    let (a, _b) = UnixStream::pair().unwrap();
    let isb = port.assign(cport::driver::UnixStream::new(a), 1).unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 4])).unwrap();
    port.set_timeout(&isb, Some(Duration::from_millis(20))).unwrap();
    let c = next(&port);
    assert_eq!(c.status(), Status::TimedOut);
}

#[test]
fn shutdown_releases_the_polling_thread_and_parked_ones() {
    let port = polling_port();
    let takers: Vec<_> = (0..3)
        .map(|_| {
            let p = port.clone();
            std::thread::spawn(move || p.next_completion(None).map(|c| c.is_some()))
        })
        .collect();
    wait_for_pollers(&port, 3);
    port.shutdown();
    for t in takers {
        assert_eq!(t.join().unwrap().unwrap_err().kind(), ErrorKind::PortClosed);
    }
}

#[test]
fn many_takers_share_posts_while_taking_turns_polling() {
    const POSTS: u64 = 20_000;
    let port = polling_port();
    let takers: Vec<_> = (0..4)
        .map(|_| {
            let p = port.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(c) = p.next_completion(Some(Duration::from_secs(10))).unwrap() {
                    if c.token() == u64::MAX {
                        break;
                    }
                    got.push(c.value());
                }
                got
            })
        })
        .collect();
    for v in 0..POSTS {
        port.post(1, v).unwrap();
    }
    for _ in 0..4 {
        port.post(u64::MAX, 0).unwrap();
    }
    let mut all: Vec<u64> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..POSTS).collect::<Vec<_>>(), "every post delivered exactly once");
}
