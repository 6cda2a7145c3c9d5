//! `Port::stats` only counts up: what a thread counted stays counted after the thread exits.

mod util;

use util::{next, port};

#[test]
fn counts_stay_when_the_threads_that_made_them_exit() {
    let port = port(0);
    let mut last = port.stats();
    for round in 1..=5u64 {
        // A thread takes completions (on its own counters), then exits.
        let p = port.clone();
        std::thread::spawn(move || {
            for v in 0..100 {
                p.post(1, v).unwrap();
                next(&p);
            }
        })
        .join()
        .unwrap();
        let now = port.stats();
        assert_eq!(now.ok, round * 100, "round {round}: every completion taken stays counted");
        assert!(now.ok >= last.ok && now.local >= last.local, "counts only go up: {last:?} then {now:?}");
        last = now;
    }
    // A reader racing threads that come and go never sees a count go down.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (port, stop) = (port.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = port.clone();
                std::thread::spawn(move || {
                    p.post(1, 0).unwrap();
                    next(&p);
                })
                .join()
                .unwrap();
            }
        })
    };
    for _ in 0..2_000 {
        let now = port.stats();
        assert!(now.ok >= last.ok, "ok went down: {} then {}", last.ok, now.ok);
        last = now;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}
