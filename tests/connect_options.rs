//! Connects with options: a timeout of the connect's own (`Port::connect_timeout`,
//! `Request::connect(..).timeout(..)`), host names, a socket the caller prepared
//! (`Request::connect`), and the stream that stays assigned whatever the outcome.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use cport::{driver, ErrorKind, Op, Request, Status};
use socket2::{Domain, Socket, Type};
use util::{next, port};

/// A listener whose accept queue holds one connection (backlog 0) and is never accepted
/// from: the second connection's SYN is dropped, so its connect hangs until a timeout.
fn full_listener() -> (Socket, SocketAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    (l, addr)
}

#[test]
fn a_connect_timeout_ends_with_the_connect_and_spares_the_next_io() {
    let port = port(0);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let isb = port.connect_timeout(listener.local_addr().unwrap(), 1, Duration::from_millis(300)).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Connect, Status::Ok));
    assert_eq!(port.timers(), 0, "the connect's timeout ended with it");
    // The next read has no deadline: it ends with the peer's bytes, however late.
    let (mut conn, _) = listener.accept().unwrap();
    port.start_io(&isb, Request::read_some(vec![0; 8])).unwrap();
    assert_eq!(port.timers(), 0);
    util::assert_quiet(&port, Duration::from_millis(400));
    conn.write_all(b"late").unwrap();
    let c = next(&port);
    assert_eq!((c.status(), c.data()), (Status::Ok, &b"late"[..]));
}

#[test]
fn a_connect_that_hangs_times_out_and_its_stream_stays_assigned() {
    let port = port(1);
    let (_listener, addr) = full_listener();
    // The first connection fills the accept queue.
    let first = port.connect_timeout(addr, 1, Duration::from_secs(10)).unwrap();
    assert_eq!(next(&port).status(), Status::Ok);
    let hung = port.connect_timeout(addr, 2, Duration::from_millis(200)).unwrap();
    let c = next(&port);
    assert_eq!((c.token(), c.op(), c.status()), (2, Op::Connect, Status::TimedOut));
    assert_eq!(c.result().unwrap_err().kind(), ErrorKind::TimedOut);
    assert!(hung.is_assigned(), "a connect that failed leaves its stream assigned");
    assert!(hung.fd().is_some());
    port.close(&hung).unwrap();
    assert_eq!(next(&port).op(), Op::Close);
    // The same through a request's timeout on a socket the caller made.
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let isb = port.assign(driver::TcpStream::from_fd(sock.into()), 3).unwrap();
    port.start_io(&isb, Request::connect(addr).timeout(Duration::from_millis(200))).unwrap();
    let c = next(&port);
    assert_eq!((c.token(), c.op(), c.status()), (3, Op::Connect, Status::TimedOut));
    drop(first);
}

#[test]
fn a_prepared_socket_connects_from_its_own_address() {
    let port = port(0);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.set_keepalive(true).unwrap();
    let local = sock.local_addr().unwrap().as_socket().unwrap();
    let isb = port.assign(driver::TcpStream::from_fd(sock.into()), 1).unwrap();
    port.start_io(&isb, Request::connect(listener.local_addr().unwrap())).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Connect, Status::Ok));
    let (_conn, peer) = listener.accept().unwrap();
    assert_eq!(peer, local);
    assert_eq!(isb.local_addr().unwrap(), local);
    assert_eq!(isb.peer_addr().unwrap(), listener.local_addr().unwrap());
    assert!(isb.with_fd(|fd| socket2::SockRef::from(&fd).keepalive().unwrap()).unwrap());
    // Connected already: another connect, to anywhere, is refused (EISCONN), never reported
    // done (the kernel's first answer after a nonblocking connect finished would be success).
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    port.start_io(&isb, Request::connect(other.local_addr().unwrap())).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Connect, Status::Failed));
    assert_eq!(c.result().unwrap_err().raw_os_error(), Some(libc::EISCONN));
    assert_eq!(isb.peer_addr().unwrap(), listener.local_addr().unwrap());
    // The same after `Port::connect`, which finishes its connect without a second call.
    let made = port.connect(listener.local_addr().unwrap(), 2).unwrap();
    assert_eq!(next(&port).status(), Status::Ok);
    port.start_io(&made, Request::connect(other.local_addr().unwrap())).unwrap();
    assert_eq!(next(&port).status(), Status::Failed);
    port.close(&isb).unwrap();
    assert_eq!(next(&port).op(), Op::Close);
    assert_eq!(isb.with_fd(|_| ()).unwrap_err().kind(), ErrorKind::NotAssigned);
    assert_eq!(isb.peer_addr().unwrap_err().kind(), ErrorKind::NotAssigned);
}

#[test]
fn refused_and_bad_connects() {
    let port = port(0);
    // Nobody listens on a port just closed: refused, reported as a completion.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let isb = port.assign(driver::TcpStream::from_fd(sock.into()), 1).unwrap();
    port.start_io(&isb, Request::connect(addr)).unwrap();
    let c = next(&port);
    assert_eq!(c.status(), Status::Failed);
    assert_eq!(c.result().unwrap_err().kind(), ErrorKind::Os(std::io::ErrorKind::ConnectionRefused));
    // A Unix path that cannot be one: refused at the start, the request back.
    let (ours, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let unix = port.assign(driver::UnixStream::new(ours), 2).unwrap();
    for bad in ["", "a\0b"] {
        let e = port.start_io(&unix, Request::connect_unix(bad)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
    // A driver that cannot connect refuses it up front.
    let (r, _w) = std::io::pipe().unwrap();
    let pipe = port.assign(driver::Fd::new(std::os::fd::OwnedFd::from(r)), 3).unwrap();
    let e = port.start_io(&pipe, Request::connect(addr)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // A name that resolves to nothing is an error, not a panic.
    assert!(port.connect("no-such-host.invalid:80", 4).is_err());
}

#[test]
fn host_names_are_resolved() {
    let port = port(0);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = listener.local_addr().unwrap().port();
    port.connect(("127.0.0.1", p), 1).unwrap();
    assert_eq!(next(&port).status(), Status::Ok);
    // `localhost` may resolve to ::1 first where IPv6 is up; the listener is IPv4 only, so
    // only check that the name resolves and a connect is made.
    let isb = port.connect(format!("localhost:{p}"), 2).unwrap();
    let c = next(&port);
    assert_eq!(c.op(), Op::Connect);
    assert!(isb.is_assigned());
}
