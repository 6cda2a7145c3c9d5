//! cport's errors as other code takes them: `source()` is the OS error, `?` converts both
//! ways, and a cancel is never taken for a call to retry.

mod util;

use std::error::Error as _;
use std::io;
use std::net::TcpListener;

use cport::{Error, ErrorKind, Op, Request, Status};
use util::{next, port};

/// The `io::Error` behind `e`, found the way error reporters find it.
fn os_source(e: &Error) -> &io::Error {
    e.source().and_then(|s| s.downcast_ref::<io::Error>()).unwrap_or_else(|| panic!("{e:?} has no io::Error source"))
}

#[test]
fn a_refused_connect_has_the_errno_as_its_source() {
    let port = port(1);
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    port.connect(addr, 1).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Connect, Status::Failed), "{c:?}");
    let e = c.result().unwrap_err();
    let io = os_source(&e);
    assert_eq!((io.raw_os_error(), io.kind()), (Some(libc::ECONNREFUSED), io::ErrorKind::ConnectionRefused));
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    // Back into an io::Error for code that speaks io::Result.
    let back: io::Error = e.into();
    assert_eq!(back.raw_os_error(), Some(libc::ECONNREFUSED));
}

#[test]
fn a_connect_to_a_missing_unix_path_has_the_errno_as_its_source() {
    let port = port(1);
    let path = util::socket_path("missing");
    port.connect_unix(&path, 2).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Connect, Status::Failed), "{c:?}");
    let e = c.error().expect("a failed connect carries its error");
    assert_eq!(e.kind(), ErrorKind::Os(io::ErrorKind::NotFound));
    assert_eq!(os_source(e).raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn a_path_no_socket_can_have_is_invalid_input_with_its_io_error() {
    let port = port(1);
    let e = port.connect_unix("a\0b", 3).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(os_source(&e).kind(), io::ErrorKind::InvalidInput);
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_cancelled_read_is_not_interrupted() {
    let port = port(1);
    let (isb, _peer) = util::assigned_pair(&port, 4);
    port.start_io(&isb, Request::read_some(vec![0; 16])).unwrap();
    assert_eq!(port.cancel(&isb).unwrap(), 1);
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Read, Status::Cancelled), "{c:?}");
    let e = c.result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(e.source().is_none(), "nothing in the OS failed");
    // A loop that retries on Interrupted must not take a cancel for a call to make again.
    fn as_io(r: cport::Result<usize>) -> io::Result<usize> {
        Ok(r?)
    }
    let io = as_io(c.result()).unwrap_err();
    assert_ne!(io.kind(), io::ErrorKind::Interrupted);
    assert_eq!(io.kind(), io::ErrorKind::Other);
    let inner = io.get_ref().and_then(|p| p.downcast_ref::<Error>()).expect("the cport::Error rides along");
    assert_eq!(inner.kind(), ErrorKind::Cancelled);
}
