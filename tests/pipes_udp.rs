//! Native fds (pipes through `driver::Fd`) and UDP (`recv_from` / `send_to`) on the port.

mod util;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::Duration;

use cport::{driver, Op, Port, Request, Status};
use util::{assert_quiet, next, pipe, GUARD};

const READER: u64 = 1;
const WRITER: u64 = 2;

/// A megabyte through a pipe (64 KiB of buffer), written and read through the port.
#[test]
fn a_pipe_read_and_written_through_the_port() {
    let port = Port::builder().threads(2).build().unwrap();
    let (r, w) = pipe();
    let reader = port.assign(driver::Fd::new(r), READER).unwrap();
    let writer = port.assign(driver::Fd::new(w), WRITER).unwrap();

    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    port.write(&writer, data.clone()).unwrap();
    port.start_io(&reader, Request::read(vec![0; 50_000], 1..=50_000)).unwrap();

    let mut got = Vec::with_capacity(data.len());
    let mut write_done = false;
    while !(write_done && got.len() == data.len()) {
        let mut c = next(&port);
        match (c.token(), c.op()) {
            (WRITER, Op::Write) => {
                assert!(!write_done, "the write completed twice");
                assert_eq!((c.status(), c.bytes()), (Status::Ok, data.len()));
                assert_eq!(c.take_buffer().unwrap(), data, "the write's buffer comes back intact");
                write_done = true;
            }
            (READER, Op::Read) => {
                assert_eq!(c.status(), Status::Ok);
                assert!(c.bytes() >= 1);
                got.extend_from_slice(c.data());
                assert!(got.len() <= data.len(), "read more than was written");
                if got.len() < data.len() {
                    port.start_io(&reader, Request::read(c.take_buffer().unwrap(), 1..=50_000)).unwrap();
                }
            }
            other => panic!("unexpected completion {other:?}: {c:?}"),
        }
    }
    assert!(got == data, "the bytes differ");

    // Vectored both ways.
    port.start_io(&writer, Request::write_vectored(vec![b"ab".to_vec(), Vec::new(), b"cde".to_vec()])).unwrap();
    let mut c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::WriteVectored, Status::Ok, 5));
    assert_eq!(c.take_buffers().len(), 3);
    port.start_io(&reader, Request::read_vectored(vec![vec![0; 1], vec![0; 4]], 5)).unwrap();
    let mut c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::ReadVectored, Status::Ok, 5));
    assert_eq!(c.take_buffers(), vec![b"a".to_vec(), b"bcde".to_vec()]);

    // Closing the write end: the pending read sees end of stream.
    port.start_io(&reader, Request::read_some(vec![0; 16])).unwrap();
    port.close(&writer).unwrap();
    let mut ends = [next(&port), next(&port)];
    ends.sort_by_key(|c| c.token());
    assert_eq!((ends[0].op(), ends[0].status(), ends[0].bytes()), (Op::Read, Status::Eof, 0));
    assert_eq!((ends[1].op(), ends[1].status()), (Op::Close, Status::Ok));
    assert_quiet(&port, Duration::from_millis(30));
}

/// A pipe whose other end is a plain blocking fd outside the port, both directions.
#[test]
fn a_pipe_end_against_a_plain_peer() {
    let port = Port::builder().threads(2).build().unwrap();
    let (r, w) = pipe();
    let reader = port.assign(driver::Fd::new(r), READER).unwrap();
    let mut w = std::fs::File::from(w);
    let fd = reader.fd().unwrap();
    port.read(&reader, vec![0; 6], 6..=6).unwrap();
    // Fed a byte at a time: completes only once all six arrived. After each of the first five,
    // once the worker has taken the byte out of the pipe, the read is still in progress.
    for (i, b) in b"abcdef".iter().enumerate() {
        w.write_all(&[*b]).unwrap();
        if i == 5 {
            break;
        }
        assert!(util::eventually(|| util::pending_bytes(fd) == 0), "byte {i} was never read");
        let e = port.start_io(&reader, Request::read_some(vec![0; 1])).unwrap_err();
        assert!(e.error().message().contains("in progress"), "byte {i}: completed before min: {e}");
        assert!(port.try_next_completion().unwrap().is_none(), "byte {i}: completed before min");
    }
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"abcdef"[..]));
    drop(w);
    port.start_io(&reader, Request::read_some(vec![0; 6])).unwrap();
    assert_eq!(next(&port).status(), Status::Eof);

    let (r, w) = pipe();
    let writer = port.assign(driver::Fd::new(w), WRITER).unwrap();
    let reading = std::thread::spawn(move || {
        let mut all = Vec::new();
        std::fs::File::from(r).read_to_end(&mut all).unwrap();
        all
    });
    port.write(&writer, vec![9u8; 300_000]).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status(), c.bytes()), (Op::Write, Status::Ok, 300_000));
    port.deassign(&writer).unwrap();
    assert_eq!(reading.join().unwrap(), vec![9u8; 300_000]);

    // A write to a pipe whose reader is gone is Abandoned, not a crash.
    let (r, w) = pipe();
    drop(r);
    let writer = port.assign(driver::Fd::new(w), WRITER).unwrap();
    port.write(&writer, b"nobody".to_vec()).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Write, Status::Abandoned), "{c:?}");
    assert!(c.error().is_some());
}

#[test]
fn udp_send_to_and_recv_from_between_two_sockets() {
    let port = Port::builder().threads(2).build().unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let a = port.assign(driver::UdpSocket::new(a), 10).unwrap();
    let b = port.assign(driver::UdpSocket::new(b), 20).unwrap();

    // b waits first, then a sends.
    port.start_io(&b, Request::recv_from(vec![0; 64])).unwrap();
    port.start_io(&a, Request::send_to(b"hello b".to_vec(), b_addr)).unwrap();
    let mut got = [next(&port), next(&port)];
    got.sort_by_key(|c| c.token());
    assert_eq!((got[0].op(), got[0].status(), got[0].bytes()), (Op::SendTo, Status::Ok, 7));
    assert_eq!(got[0].buffer(), Some(&b"hello b"[..]));
    assert_eq!((got[1].op(), got[1].status(), got[1].data()), (Op::RecvFrom, Status::Ok, &b"hello b"[..]));
    assert_eq!(got[1].addr(), Some(a_addr), "recv_from reports the sender");

    // The other way, with the datagram already there when the receive starts.
    port.start_io(&b, Request::send_to(b"hi a".to_vec(), a_addr)).unwrap();
    assert_eq!(next(&port).op(), Op::SendTo);
    port.start_io(&a, Request::recv_from(vec![0; 64])).unwrap();
    let c = next(&port);
    assert_eq!((c.token(), c.op(), c.data(), c.addr()), (10, Op::RecvFrom, &b"hi a"[..], Some(b_addr)));

    // Datagram boundaries are kept, and a longer datagram is truncated to the buffer.
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    plain.send_to(b"first", b_addr).unwrap();
    plain.send_to(b"second-and-longer", b_addr).unwrap();
    port.start_io(&b, Request::recv_from(vec![0; 64])).unwrap();
    let c = next(&port);
    assert_eq!((c.data(), c.addr()), (&b"first"[..], Some(plain.local_addr().unwrap())));
    port.start_io(&b, Request::recv_from(vec![0; 6])).unwrap();
    let c = next(&port);
    assert_eq!(c.data(), b"second");

    // Receive and send are on different sides: both may be pending at once.
    port.start_io(&b, Request::recv_from(vec![0; 8])).unwrap();
    port.start_io(&b, Request::send_to(b"x".to_vec(), plain.local_addr().unwrap())).unwrap();
    assert_eq!(next(&port).op(), Op::SendTo);
    plain.set_read_timeout(Some(GUARD)).unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = plain.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"x"[..], b_addr));
    plain.send_to(b"back", b_addr).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.data()), (Op::RecvFrom, &b"back"[..]));
    assert_quiet(&port, Duration::from_millis(30));
}
