//! `start_io_inline`: an I/O that finishes at once comes straight back to the caller, queued
//! for nobody; one that has to wait completes through the queue as usual.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use cport::{ErrorKind, Op, Port, Request, Status};
use util::{next, port};

fn assigned(port: &Port) -> (cport::Isb, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (port.assign(cport::driver::UnixStream::new(a), 9).unwrap(), b)
}

#[test]
fn a_write_with_room_comes_back_at_once_and_queues_nothing() {
    let port = port(1);
    let (isb, mut peer) = assigned(&port);
    let c = port.start_io_inline(&isb, Request::write(b"hello".to_vec())).unwrap().expect("room in the buffer");
    assert_eq!((c.op(), c.status(), c.bytes(), c.token()), (Op::Write, Status::Ok, 5, 9));
    assert!(port.try_next_completion().unwrap().is_none(), "nothing was queued");
    // The side is free again at once: no completion is left to take.
    let again = port.start_io_inline(&isb, Request::write(b"!".to_vec())).unwrap();
    assert!(again.is_some());
    let mut got = [0; 6];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello!");
}

#[test]
fn a_read_with_data_waiting_comes_back_at_once() {
    let port = port(1);
    let (isb, mut peer) = assigned(&port);
    peer.write_all(b"ab").unwrap();
    let c = port.start_io_inline(&isb, Request::read_some(vec![0; 8])).unwrap().expect("data was there");
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"ab"[..]));
}

#[test]
fn a_read_that_must_wait_completes_through_the_queue() {
    let port = port(1);
    let (isb, mut peer) = assigned(&port);
    assert!(port.start_io_inline(&isb, Request::read_some(vec![0; 8])).unwrap().is_none());
    assert_eq!(
        port.start_io_inline(&isb, Request::read_some(vec![0; 8])).unwrap_err().kind(),
        ErrorKind::Busy,
        "the pending read holds the side"
    );
    peer.write_all(b"late").unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.data()), (Op::Read, &b"late"[..]));
}

#[test]
fn a_refused_start_gives_the_buffer_back() {
    let port = port(1);
    let (isb, _peer) = assigned(&port);
    port.deassign(&isb).unwrap();
    let e = port.start_io_inline(&isb, Request::write(vec![7; 3])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAssigned);
    assert_eq!(e.into_request().into_buffer(), Some(vec![7; 3]));
}

#[test]
fn works_on_a_polling_port_too() {
    let port = port(0);
    let (isb, mut peer) = assigned(&port);
    assert!(port.start_io_inline(&isb, Request::write(b"x".to_vec())).unwrap().is_some());
    let mut b = [0; 1];
    peer.read_exact(&mut b).unwrap();
    assert!(port.start_io_inline(&isb, Request::read_some(vec![0; 4])).unwrap().is_none());
    peer.write_all(b"y").unwrap();
    assert_eq!(next(&port).data(), b"y");
}
