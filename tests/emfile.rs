//! A listener that runs out of fds (EMFILE) reports it as a Failed accept completion, rests
//! instead of spinning, and accepts again once fds are free.
//!
//! Lowers RLIMIT_NOFILE for the whole process, so it is the only test in this binary.

mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cport::{driver, ErrorKind, Op, Port, Status};
use cport_testkit::{nofile, set_nofile, NoFile};
use util::{next, GUARD};

/// ACCEPT_BACKOFF in src/port.rs.
const BACKOFF: Duration = Duration::from_millis(50);

/// Restores the fd limit even if the test fails half-way.
struct Restore(NoFile);

impl Drop for Restore {
    fn drop(&mut self) {
        set_nofile(self.0).expect("restoring RLIMIT_NOFILE");
    }
}

fn expect_emfile(c: &cport::Completion) {
    assert_eq!((c.token(), c.op(), c.status()), (1, Op::Accept, Status::Failed), "{c:?}");
    let e = c.error().expect("a Failed completion carries its error");
    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
    assert!(matches!(e.kind(), ErrorKind::Os(_)), "{e}");
    assert!(e.message().contains("accept"), "{e}");
}

#[test]
fn accept_on_emfile_fails_rests_and_recovers() {
    let port = Port::builder().threads(2).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let lis = port.assign(driver::TcpListener::new(listener), 1).unwrap();
    // The connection waits in the backlog: the client's socket exists before fds run out.
    let mut client = TcpStream::connect(addr).unwrap();

    // Lower the soft limit just above the lowest free fd number, then fill what is left
    // below it. (The limit caps new fd numbers; fds already open above it, such as ones
    // inherited from the parent, stay open.)
    let saved = nofile().expect("reading RLIMIT_NOFILE");
    let _restore = Restore(saved);
    let open: Vec<i32> = util::fd_list().iter().map(|(fd, _)| *fd).collect();
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    set_nofile(NoFile { soft: lowest_free as libc::rlim_t + 8, ..saved }).expect("lowering RLIMIT_NOFILE");
    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("filling the fd table: {e}"),
        }
        assert!(fillers.len() < 100, "the fd limit does not bite: {:?}", util::fd_list());
    }

    // The accept fails at once with EMFILE.
    let t0 = Instant::now();
    port.accept(&lis).unwrap();
    let c = next(&port);
    expect_emfile(&c);
    drop(c);
    assert_eq!(port.timers(), 1, "the back-off timer is armed");

    // Accepting again does not spin: each retry waits out the back-off, so five more
    // failures take at least five back-offs.
    for _ in 0..5 {
        port.accept(&lis).unwrap();
        expect_emfile(&next(&port));
    }
    assert!(t0.elapsed() >= BACKOFF * 5, "six EMFILE failures in {:?}", t0.elapsed());

    // Counted over a window: a few failures at most, not thousands.
    let window = Instant::now();
    let mut failures = 0;
    while window.elapsed() < Duration::from_millis(300) {
        port.accept(&lis).unwrap();
        expect_emfile(&next(&port));
        failures += 1;
    }
    assert!(failures <= 8, "{failures} EMFILE completions in {:?}: the listener spins", window.elapsed());

    // Free the fds and raise the limit back: the pending accept succeeds on its next try,
    // with the connection that waited in the backlog.
    port.accept(&lis).unwrap();
    drop(fillers);
    drop(_restore);
    let mut c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Accept, Status::Ok), "{c:?} {:?}", c.error());
    assert_eq!(c.addr(), Some(client.local_addr().unwrap()));
    let conn = port.assign(c.take_accepted().unwrap(), 2).unwrap();
    port.write(&conn, b"back".to_vec()).unwrap();
    assert_eq!(next(&port).status(), Status::Ok);
    client.set_read_timeout(Some(GUARD)).unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");

    // And it keeps accepting.
    port.accept(&lis).unwrap();
    let mut other = TcpStream::connect(addr).unwrap();
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Accept, Status::Ok));
    other.write_all(b"x").unwrap();
    assert!(util::eventually(|| port.timers() == 0));
}
