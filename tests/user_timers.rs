//! User timers (`Port::timer`, `timer_at`, `cancel_timer`): exactly one completion each, `Ok`
//! when it fires, `Cancelled` when a cancel or shutdown ends it first, none after
//! `PortClosed`. Waits are on completions, never on sleeps; deadlines far enough that a stall
//! of the machine cannot make a test wrong.

mod util;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cport::{ErrorKind, Op, Status};
use util::{next, port};

#[test]
fn a_timer_fires_once_no_earlier_than_asked() {
    let port = port(0);
    let start = Instant::now();
    port.timer(7, 42, Duration::from_millis(20)).unwrap();
    let c = next(&port);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!((c.op(), c.status(), c.token(), c.value()), (Op::Timer, Status::Ok, 7, 42));
    assert!(c.isb().is_none());
    assert_eq!(port.timers(), 0);
    assert!(port.try_next_completion().unwrap().is_none(), "exactly one");
}

#[test]
fn a_cancelled_timer_completes_cancelled_once() {
    let port = port(1);
    let t = port.timer(3, 9, Duration::from_secs(3600)).unwrap();
    assert_eq!(port.timers(), 1);
    assert!(port.cancel_timer(&t).unwrap());
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.token(), c.value()), (Op::Timer, Status::Cancelled, 3, 9));
    assert!(!port.cancel_timer(&t).unwrap(), "a timer that ended");
    assert_eq!(port.timers(), 0);
    // Its slot is reused: the old handle names nothing, the new one its own timer.
    let u = port.timer(4, 0, Duration::from_secs(3600)).unwrap();
    assert_ne!(t, u);
    assert!(!port.cancel_timer(&t).unwrap());
    assert!(port.cancel_timer(&u).unwrap());
    assert_eq!(next(&port).token(), 4);
    // Another port's timer, also one of a port dropped before this one was made (which may
    // sit where the other was in memory).
    let other = util::port(0);
    let e = other.cancel_timer(&u).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let old = {
        let dropped = util::port(0);
        dropped.timer(1, 0, Duration::from_secs(3600)).unwrap()
    };
    let fresh = util::port(0);
    let t = fresh.timer(1, 0, Duration::from_secs(3600)).unwrap();
    assert_ne!(old, t);
    assert_eq!(fresh.cancel_timer(&old).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(fresh.cancel_timer(&t).unwrap());
}

#[test]
fn many_timers_and_cancels_each_end_once() {
    let port = port(1);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut armed = Vec::new();
    for i in 0..2_000u64 {
        let after = Duration::from_micros(rand() % 20_000);
        armed.push((i, port.timer(i, i * 3, after).unwrap()));
    }
    let mut cancelled = HashMap::new();
    for (i, t) in &armed {
        if rand() % 3 == 0 {
            cancelled.insert(*i, port.cancel_timer(t).unwrap());
        }
    }
    let mut seen = HashMap::new();
    while seen.len() < armed.len() {
        let c = next(&port);
        assert_eq!(c.op(), Op::Timer);
        assert_eq!(c.value(), c.token() * 3, "its own value");
        assert!(seen.insert(c.token(), c.status()).is_none(), "timer {} completed twice", c.token());
    }
    for (i, status) in &seen {
        match cancelled.get(i) {
            Some(true) => assert_eq!(*status, Status::Cancelled, "timer {i}: cancel said it ended it"),
            _ => assert_eq!(*status, Status::Ok, "timer {i}: not cancelled, or fired first"),
        }
    }
    assert!(port.try_next_completion().unwrap().is_none());
    assert_eq!(port.timers(), 0);
}

#[test]
fn shutdown_cancels_every_timer_before_port_closed() {
    let port = port(2);
    for i in 0..100 {
        port.timer(i, 0, Duration::from_secs(3600)).unwrap();
    }
    port.shutdown();
    assert_eq!(port.timer(1, 0, Duration::ZERO).unwrap_err().kind(), ErrorKind::PortClosed);
    let mut n = 0;
    loop {
        match port.next_completion(None) {
            Ok(Some(c)) => {
                assert_eq!((c.op(), c.status()), (Op::Timer, Status::Cancelled));
                n += 1;
            }
            Ok(None) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::PortClosed);
                break;
            }
        }
    }
    assert_eq!(n, 100, "every timer ended once, before PortClosed");
    assert_eq!(port.timers(), 0);
}
