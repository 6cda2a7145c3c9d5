//! The loom models of a session connection's protocol (`src/session/conn.rs`, the production
//! code): read, session call, pacing, pause, write completion, resume, close. Each model hosts
//! one connection on a port without workers, the way a server does ([`Host`]); two threads
//! handle its completions (or one handles and one closes) while the peer takes output; then
//! this thread runs the connection to rest and checks what the peer got. Planted bugs
//! (`CPORT_PLANT=...`, see `check-plants.sh`) each make their model's own check fail.
#![cfg(loom)]

use cport::model::Host;
use cport::session::{Closed, Limits};
use cport::Port;
use cport_loom_tests::{drain, handle_one, model, settle, windowed, Pacer};
use loom::thread;

/// The pause mark of the models: two bytes queued stop the reading.
const MARK: usize = 2;

fn limits() -> Limits {
    Limits::default().with_pause_reading_at(MARK).with_read_size(8).with_linger(std::time::Duration::ZERO)
}

/// Session model 1: pipelined requests meet a full output. Another sender has queued two bytes
/// (the pause mark) that the peer has not taken, when two pipelined requests arrive. One thread
/// handles the read: the session, seeing its output at the mark, answers nothing and leaves
/// both requests. Meanwhile the peer takes the output and the other thread handles the write's
/// completion, so the output may drain before, during or after that call. Whichever: the
/// requests are answered without the peer sending more (the call began at the mark, so the
/// session is fed again once the output has room, at once or on the write side's resume).
/// Plants `refeed_needs_progress` (only a call that consumed something is followed by another:
/// the race of issue 14) and `pause_unlocked` (the pause is marked in a second hold of the
/// output lock, so a write that finishes in between resumes nothing: a lost resume).
#[test]
fn paced_requests_are_answered_when_the_output_drains() {
    model("paced_requests_are_answered_when_the_output_drains", || {
        let port = Port::builder().threads(0).build().unwrap();
        // Room for one byte the peer has not taken: the two-byte send stays in flight.
        let (drv, peer) = windowed(&port, 1);
        let (pacer, log) = Pacer::new(MARK);
        let host = std::sync::Arc::new(Host::open(&port, drv, 1, limits(), Box::new(pacer)).unwrap());
        host.connection().send(b"xx").unwrap();
        peer.send(b"ab");

        let (p, h, q) = (port.clone(), host.clone(), peer.clone());
        let other = thread::spawn(move || {
            let took = q.take();
            // Until this thread has nothing left: completions it polled but did not take would
            // wait for its exit, which loom runs only after the join.
            while handle_one(&p, &h) {}
            took
        });
        while handle_one(&port, &host) {}
        let mut got = other.join().unwrap();
        got.extend(settle(&port, &host, &peer));

        let log = log.lock().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            "xxAB",
            "the pipelined requests are answered without the peer sending more (session calls: {:?})",
            log.calls
        );
        drop(log);
        drain(&port);
    });
}

/// Session model 2: a close races a session call. The peer's request is being answered on one
/// thread while another closes the connection (`Connection::close`: after what is queued).
/// Either the close comes first and the request is never shown to the session, or the
/// session's answer, though not queued yet when the close came, is sent before the connection
/// closes: a close after the queue never drops what a running call queues. The session is told
/// `Closed::Local`, once. Plants `close_ignores_call` (an ending connection closes on an empty
/// queue while a session call is running) and `feed_after_close` (the session is called
/// without a look at the connection after the read handler's: a close in between is missed,
/// and the reply is dropped with the closed connection).
#[test]
fn a_reply_is_not_lost_to_a_concurrent_close() {
    model("a_reply_is_not_lost_to_a_concurrent_close", || {
        reply_races_an_end(|host| host.connection().close(), Closed::Local);
    });
}

/// Session model 3: the same race with a server's graceful stop of the connection instead of a
/// close: the session is told `Closed::Stopped`, once, after its answer was sent.
#[test]
fn a_reply_is_not_lost_to_a_concurrent_stop() {
    model("a_reply_is_not_lost_to_a_concurrent_stop", || {
        reply_races_an_end(Host::stop, Closed::Stopped);
    });
}

/// Models 2 and 3: `end` runs on another thread while this one handles the peer's request.
fn reply_races_an_end(end: fn(&Host), why: Closed) {
    let port = Port::builder().threads(0).build().unwrap();
    let (drv, peer) = windowed(&port, usize::MAX);
    let (pacer, log) = Pacer::new(MARK);
    let host = std::sync::Arc::new(Host::open(&port, drv, 1, limits(), Box::new(pacer)).unwrap());
    peer.send(b"a");

    let h = host.clone();
    let ender = thread::spawn(move || end(&h));
    while handle_one(&port, &host) {}
    ender.join().unwrap();
    let got = settle(&port, &host, &peer);

    let log = log.lock().unwrap();
    assert_eq!(log.closed, vec![why], "the session is told why the connection ended, once");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&log.replied),
        "what the session queued before the close is sent"
    );
    drop(log);
    drain(&port);
}
