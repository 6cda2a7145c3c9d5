//! The RESP server (`src/`) driven by the stock Redis clients: `redis-cli` (one command per
//! process, and `--pipe` mass insertion) and `redis-benchmark`.
//!
//! Needs Debian's `redis-tools` (`./test.sh` installs it). The server is the package's own
//! code (its library), on a free port, run by two threads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use cport_resp_server::session;

fn tool(name: &str) -> String {
    let found = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{name} not found: install Debian's redis-tools (apt-get install redis-tools)");
    name.to_string()
}

/// The package's server, run by two threads, stopped on drop.
struct Server {
    server: cport::session::Server,
    runners: Vec<std::thread::JoinHandle<cport::Result<()>>>,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let summary = self.server.stop(Duration::from_secs(5));
        for r in self.runners.drain(..) {
            r.join().expect("server thread panicked").expect("server thread failed");
        }
        if !std::thread::panicking() {
            assert_eq!(summary.forced, 0, "{summary:?}");
        }
    }
}

fn start() -> Server {
    let server = session::serve("127.0.0.1:0".parse().unwrap()).expect("start the RESP server");
    let runners = (0..2)
        .map(|_| {
            let s = server.clone();
            std::thread::spawn(move || s.run())
        })
        .collect();
    let port = server.local_addr().port();
    Server { server, runners, port }
}

/// Runs `redis-cli -p PORT args...` and returns its stdout, asserting it succeeded.
fn cli(server: &Server, args: &[&str]) -> String {
    let out = Command::new(tool("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 reply")
}

#[test]
fn redis_cli_commands() {
    let s = start();
    // Replies as redis-cli prints them when its output is not a terminal (checked against
    // redis-server 7.0): an error reply is followed by an empty line.
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "PONG\n"),
        (&["PING", "hello world"], "hello world\n"),
        (&["ECHO", "x y"], "x y\n"),
        (&["SET", "k", "v1"], "OK\n"),
        (&["GET", "k"], "v1\n"),
        (&["SET", "k", "v2", "NX"], "\n"),
        (&["SET", "k", "v2", "XX"], "OK\n"),
        (&["GET", "k"], "v2\n"),
        (&["GET", "missing"], "\n"),
        (&["INCR", "n"], "1\n"),
        (&["INCR", "n"], "2\n"),
        (&["DECR", "n"], "1\n"),
        (&["INCRBY", "n", "41"], "42\n"),
        (&["INCR", "k"], "ERR value is not an integer or out of range\n\n"),
        (&["MSET", "a", "1", "b", "2", "c", "3"], "OK\n"),
        (&["MGET", "a", "b", "nope", "c"], "1\n2\n\n3\n"),
        (&["EXISTS", "a", "b", "nope"], "2\n"),
        (&["DEL", "a", "b", "nope"], "2\n"),
        (&["EXISTS", "a"], "0\n"),
        (&["SET", "t", "x", "EX", "100"], "OK\n"),
        // A time to live: 98 to 100 (a stall between the two redis-cli runs may eat a second).
        (&["TTL", "t"], "~100\n"),
        (&["SET", "t", "x", "PX", "0"], "ERR invalid expire time in 'set' command\n\n"),
        (&["DBSIZE"], "4\n"), // k, n, c, t
        (&["GET"], "ERR wrong number of arguments for 'get' command\n\n"),
        (&["NOSUCH", "arg"], "ERR unknown command 'NOSUCH', with args beginning with: 'arg' \n\n"),
        (&["FLUSHALL"], "OK\n"),
        (&["DBSIZE"], "0\n"),
    ];
    for (args, want) in cases {
        let got = cli(&s, args);
        match want.strip_prefix('~') {
            Some(n) => {
                let (n, m): (i64, i64) = (n.trim().parse().unwrap(), got.trim().parse().unwrap_or(-99));
                assert!((n - 2..=n).contains(&m), "redis-cli {args:?}: {got:?}, want about {n}");
            }
            None => assert_eq!(got, *want, "redis-cli {args:?}"),
        }
    }
    // COMMAND is what redis-cli asks at start for its hints; it must answer, not error.
    assert!(!cli(&s, &["COMMAND", "DOCS"]).contains("ERR"));
}

#[test]
fn redis_cli_pipe_mass_insert() {
    let s = start();
    let mut input = String::new();
    for i in 0..10_000 {
        let (k, v) = (format!("key:{i}"), format!("value:{i}"));
        input += &format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len());
    }
    let mut child = Command::new(tool("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &s.port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run redis-cli --pipe");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "redis-cli --pipe failed: {text}");
    assert!(text.contains("errors: 0, replies: 10000"), "{text}");
    assert_eq!(cli(&s, &["DBSIZE"]), "10000\n");
    assert_eq!(cli(&s, &["GET", "key:9999"]), "value:9999\n");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    let s = start();
    let port = s.port.to_string();
    const N: usize = 20_000;
    for pipeline in ["1", "16"] {
        let out = Command::new(tool("redis-benchmark"))
            .args(["-h", "127.0.0.1", "-p", &port, "-c", "20", "-n", &N.to_string(), "-P", pipeline])
            .args(["-t", "ping,set,get,incr,mset", "--csv", "-e"])
            .output()
            .expect("run redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "redis-benchmark -P {pipeline}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("ERR") && !text.to_lowercase().contains("error"), "{text}");
        let rows: Vec<&str> = text.lines().skip(1).collect();
        let tests: Vec<&str> = rows.iter().map(|r| r.split(',').next().unwrap().trim_matches('"')).collect();
        assert_eq!(tests, ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"], "{text}");
        for row in rows {
            let rps: f64 = row.split(',').nth(1).unwrap().trim_matches('"').parse().unwrap();
            assert!(rps > 0.0, "{row}");
        }
    }
    // Every INCR of both runs reached the one counter key: no request was lost or doubled.
    assert_eq!(cli(&s, &["GET", "counter:__rand_int__"]), format!("{}\n", 2 * N));
    // SET's value is redis-benchmark's 3-byte payload.
    assert_eq!(cli(&s, &["GET", "key:__rand_int__"]).trim_end().len(), 3);
}

#[test]
fn malformed_input_gets_an_error_and_only_that_connection_closes() {
    let s = start();
    let mut good = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for garbage in [&b"*1\r\n$abc\r\n"[..], b"*2\r\n$3\r\nGET\r\nxx", b"*1\r\n$-7\r\n", b"*x\r\n"] {
        let mut bad = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A pipelined request before the garbage is answered first.
        bad.write_all(b"PING\r\n").unwrap();
        bad.write_all(garbage).unwrap();
        let mut reply = Vec::new();
        bad.read_to_end(&mut reply).expect("the server closes the connection");
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("+PONG\r\n-ERR Protocol error"), "{garbage:?} -> {reply:?}");

        good.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let mut pong = [0; 7];
        good.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
    }
}

#[test]
fn quit_replies_then_closes() {
    let s = start();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"SET a 1\r\nQUIT\r\nGET a\r\n").unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"+OK\r\n+OK\r\n");
}
