//! Signals as completions (`Port::signals`). Its own test program without the test harness:
//! the signals must be blocked in the first thread, before any other thread starts, or a
//! thread that does not block them could take one the default way and end the process.

use std::time::Duration;

use cport::{signal, ErrorKind, Op, Port, Status};

fn next(port: &Port) -> cport::Completion {
    match port.next_completion(Some(Duration::from_secs(10))) {
        Ok(Some(c)) => c,
        other => panic!("no completion within 10 s: {other:?}"),
    }
}

/// Sends `sig` to this process (any thread that does not block it could take it).
fn raise(sig: i32) {
    // SAFETY: kill with this process's id and a valid signal number.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

/// Whether `sig` is blocked in this thread.
fn blocked(sig: i32) -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: a null new set only reads the mask into `set`; sigismember reads the set.
    unsafe {
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set.as_mut_ptr()), 0);
        libc::sigismember(set.as_ptr(), sig) == 1
    }
}

fn main() {
    // First, in the only thread: the port with a worker (its threads block every signal) and
    // the signals.
    let port = Port::builder().threads(1).build().unwrap();
    let signals = port.signals(&[signal::SIGUSR1, signal::SIGUSR2], 9).unwrap();

    // Bad arguments are refused, and start nothing.
    for bad in [&[][..], &[libc::SIGKILL][..], &[0][..], &[10_000][..]] {
        assert_eq!(port.signals(bad, 1).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
    }

    // Waiting threads started now inherit the mask.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let port = port.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(next) = port.next_completion(None) {
                    if let Some(c) = next {
                        got.push((c.op(), c.status(), c.token(), c.value()));
                    }
                }
                got
            })
        })
        .collect();
    // Every signal is one completion; the next is awaited once it is taken. A signal sent
    // while one of the same number is still pending is merged with it (the kernel keeps one),
    // so each is sent once the previous one came.
    let mut expect = Vec::new();
    for (i, sig) in [signal::SIGUSR1, signal::SIGUSR2, signal::SIGUSR1, signal::SIGUSR1].into_iter().enumerate() {
        let before = port.stats().ok;
        raise(sig);
        while port.stats().ok == before {
            std::thread::yield_now();
        }
        expect.push((Op::Signal, Status::Ok, 9, sig as u64));
        eprintln!("signal {i} ({sig}) taken");
    }
    // Closing the stream ends the series: its pending read is cancelled, then the Close.
    let before = port.stats().completions();
    port.close(&signals).unwrap();
    expect.push((Op::Signal, Status::Cancelled, 9, 0));
    expect.push((Op::Close, Status::Ok, 9, 0));
    while port.stats().completions() < before + 2 {
        std::thread::yield_now();
    }
    port.shutdown();
    let mut got: Vec<_> = waiters.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let key = |c: &(Op, Status, u64, u64)| (c.0 == Op::Close, c.1 == Status::Cancelled);
    got.sort_by_key(key);
    expect.sort_by_key(key);
    // The waiters each keep their order; compare as multisets of kinds, in the order taken.
    assert_eq!(got.len(), expect.len(), "{got:?}");
    let count = |v: &[(Op, Status, u64, u64)], x: &(Op, Status, u64, u64)| v.iter().filter(|y| *y == x).count();
    for e in &expect {
        assert_eq!(count(&got, e), count(&expect, e), "{e:?} in {got:?}");
    }

    // A port shut down with a signal read pending ends it cancelled, before PortClosed.
    let port = Port::new().unwrap();
    port.signals(&[signal::SIGUSR2], 3).unwrap();
    port.shutdown();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.token()), (Op::Signal, Status::Cancelled, 3));
    assert_eq!(port.next_completion(None).unwrap_err().kind(), ErrorKind::PortClosed);
    assert_eq!(port.signals(&[signal::SIGUSR1], 4).unwrap_err().kind(), ErrorKind::PortClosed);
    // A refused call leaves the thread's mask as it was: SIGHUP was never blocked, and is not.
    assert!(!blocked(signal::SIGHUP));
    assert_eq!(port.signals(&[signal::SIGHUP], 5).unwrap_err().kind(), ErrorKind::PortClosed);
    assert!(!blocked(signal::SIGHUP), "a refused call blocked the signal");
    assert!(blocked(signal::SIGUSR2));
    println!("signals: ok");
}
