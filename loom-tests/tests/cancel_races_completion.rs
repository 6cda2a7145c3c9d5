//! Model 1: cancel racing completion.
//!
//! Interleaving guarded: a read is pending and armed; the peer's data makes the worker take the
//! readiness event and run the read while the model thread calls `cancel`. Whichever gets the
//! stream lock first ends the read; the other must find the side empty. Exactly one
//! completion, its status agrees with what `cancel` returned, and the buffer comes back once.
#![cfg(loom)]

use cport::{Port, Request, Status};
use cport_loom_tests::{drain, model, pair};
use loom::thread;

#[test]
fn cancel_races_completion() {
    model("cancel_races_completion", || {
        let port = Port::builder().threads(1).build().unwrap();
        let (drv, peer) = pair(&port, 100);
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
            Status::Ok => assert_eq!((cancelled, c.data()), (0, &b"x"[..])),
            Status::Cancelled => assert_eq!((cancelled, c.bytes()), (1, 0)),
            s => panic!("unexpected status {s:?}"),
        }
    });
}
