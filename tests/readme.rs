//! The README's `no_run` code blocks, run: each is copied here between markers, a test checks
//! the copy is the README's text exactly, and another runs it against real clients (the
//! servers on port 0 instead of a fixed one, stopped by the test).

use std::io::{Read, Write};
use std::net::TcpStream;

/// The README's echo server, verbatim.
#[rustfmt::skip]
#[allow(dead_code, unused_imports, clippy::all)]
mod echo {
// README echo: begin
use cport::{signal, Op, Port, Status};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = Port::new()?;
    port.signals(&[signal::SIGINT, signal::SIGTERM], 0)?; // first: the threads inherit the mask
    let listener = port.listen("127.0.0.1:7878".parse()?, 0)?;
    port.accept_many(&listener, usize::MAX)?;
    std::thread::scope(|s| (0..4).for_each(|_| { s.spawn(|| serve(&port)); }));
    Ok(())
}

fn serve(port: &Port) {
    while let Ok(Some(mut c)) = port.next_completion(None) { // ends with PortClosed (no wakeups here)
        let Some(isb) = c.isb().cloned() else { continue };
        let ok = match (c.op(), c.status()) {
            (Op::Signal, _) => { port.shutdown(); true } // Ctrl-C: pending I/O ends cancelled
            (Op::Accept, Status::Ok) => { // `isb` is the listener: set the new connection up
                if let Some(Ok(conn)) = c.take_accepted().map(|conn| port.assign(conn, 1)) {
                    let _ = port.read_buf(&conn, Vec::with_capacity(4096), 1..=4096); // refused only at shutdown
                }
                true
            }
            (Op::Read, Status::Ok) => port.write(&isb, c.into_data()).is_ok(), // echo what came
            (Op::Write, Status::Ok) => { let mut buf = c.into_data(); buf.clear(); port.read_buf(&isb, buf, 1..=4096).is_ok() }
            (Op::Read | Op::Write, _) => false, // end of stream, reset, error, cancel
            _ => true,
        };
        if !ok { let _ = port.close(&isb); }
    }
}
// README echo: end

/// Runs the copy: `serve` is private to this module.
pub(super) fn run(port: &Port) {
    serve(port)
}
}

/// The README's session server's session, verbatim (the lines after it bind and run it).
#[cfg(feature = "session")]
#[rustfmt::skip]
#[allow(dead_code, unused_imports, clippy::all)]
mod upper {
// README session: begin
use cport::session::{Outbox, Server, Session};

struct Upper;

impl Session for Upper {
    fn receive(&mut self, data: &[u8], out: &mut Outbox<'_>) -> cport::Result<usize> {
        out.send(&data.to_ascii_uppercase());
        Ok(data.len()) // consumed everything
    }
}
// README session: end

/// The copy's session, for the test.
pub(super) fn session() -> Box<dyn Session> {
    Box::new(Upper)
}
}

/// The text between `// README <name>: begin` and `end` in this file.
fn copy(name: &str) -> String {
    let me = include_str!("readme.rs");
    let begin = format!("// README {name}: begin\n");
    let end = format!("// README {name}: end\n");
    let from = me.find(&begin).expect("begin marker") + begin.len();
    let to = me[from..].find(&end).expect("end marker") + from;
    me[from..to].to_string()
}

/// The code of the README's `no_run` block that follows `heading`.
fn readme_block(heading: &str) -> String {
    let readme = include_str!("../README.md");
    let at = readme.find(heading).expect("the heading");
    let open = "```rust,no_run\n";
    let from = readme[at..].find(open).expect("the block") + at + open.len();
    let to = readme[from..].find("```\n").expect("its end") + from;
    readme[from..to].to_string()
}

#[test]
fn the_copies_are_the_readmes_code() {
    assert_eq!(copy("echo"), readme_block("A TCP echo server on the raw port API"), "tests/readme.rs: update the copy");
    let session = readme_block("A session-based server in a few lines");
    assert!(session.starts_with(&copy("session")), "tests/readme.rs: update the session copy");
    assert!(session.contains("Server::builder().bind("), "the session block binds a server");
}

#[test]
fn the_readme_echo_server_echoes_and_stops() {
    let port = cport::Port::new().unwrap();
    let listener = port.listen("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let addr = listener.local_addr().unwrap();
    port.accept_many(&listener, usize::MAX).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| echo::run(&port));
        }
        // Clients come and go, some reset at once: the listener keeps accepting throughout.
        for round in 0..50u32 {
            let mut c = TcpStream::connect(addr).unwrap();
            if round % 5 == 4 {
                socket2::SockRef::from(&c).set_linger(Some(std::time::Duration::ZERO)).unwrap();
                drop(c);
                continue;
            }
            let msg: Vec<u8> = (0..1000 + round * 37).map(|i| (i * 7 + round) as u8).collect();
            c.write_all(&msg).unwrap();
            let mut back = vec![0; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg, "round {round}");
        }
        // What the Signal arm does: the port shuts down and every thread's loop ends.
        port.shutdown();
    });
}

#[cfg(feature = "session")]
#[test]
fn the_readme_session_server_answers_in_upper_case() {
    use cport::session::Server;
    let server = Server::builder().bind("127.0.0.1:0".parse().unwrap(), |_conn| upper::session()).unwrap();
    let runner = {
        let server = server.clone();
        std::thread::spawn(move || server.run())
    };
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    c.write_all(b"hello").unwrap();
    let mut back = [0; 5];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"HELLO");
    server.stop(std::time::Duration::from_secs(5));
    runner.join().unwrap().unwrap();
}
