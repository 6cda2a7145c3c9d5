//! The protocol engine of the RESP server (parser, keyspace, commands), without the network:
//! bytes in, reply bytes out, each reply checked byte for byte against what Redis 7 sends.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cport_resp_server::commands::Client;
use cport_resp_server::protocol::Fatal;
use cport_resp_server::store::Store;

/// Records the largest single allocation each thread asks for, so a test can check that the
/// parser does not reserve what a client merely claims it will send.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; `note` only updates a
// thread-local counter, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

fn client() -> Client {
    Client::new(Arc::new(Store::new(16)))
}

/// Feeds `input` in one piece; everything must be consumed. Returns the replies.
fn feed(client: &mut Client, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let consumed = client.feed(input, &mut out).unwrap_or_else(|e| panic!("{e} on {:?}", input.escape_ascii()));
    assert_eq!(consumed, input.len(), "unconsumed input in {:?}", input.escape_ascii().to_string());
    out
}

/// Asserts that `input`, on a fresh client, gets exactly `expected`.
#[track_caller]
fn check(input: &str, expected: &str) {
    check_with(&mut client(), input, expected);
}

/// Asserts that `input` gets exactly `expected`, except that an expected integer reply
/// `:~N` (a time to live in seconds) matches any of `N-2..=N`: time passes between a SET and
/// its TTL, and a stall of the test thread must not fail the test.
#[track_caller]
fn check_with(client: &mut Client, input: &str, expected: &str) {
    let out = feed(client, input.as_bytes());
    let got = out.escape_ascii().to_string();
    let matches = got.split("\\r\\n").count() == expected.split("\r\n").count()
        && got.split("\\r\\n").zip(expected.split("\r\n")).all(|(g, e)| match e.strip_prefix(":~") {
            Some(n) => {
                let n: i64 = n.parse().expect("a number after :~");
                g.strip_prefix(':').and_then(|g| g.parse::<i64>().ok()).is_some_and(|m| (n - 2..=n).contains(&m))
            }
            None => g == e.as_bytes().escape_ascii().to_string(),
        });
    assert!(matches, "replies to {input:?}:\n got: {got}\nwant: {}", expected.escape_default());
}

/// A multibulk request.
fn mb(args: &[&[u8]]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        req.extend_from_slice(arg);
        req.extend_from_slice(b"\r\n");
    }
    req
}

// ---------------------------------------------------------------------------------------------
// Commands.

#[test]
fn ping_and_echo() {
    check("PING\r\n", "+PONG\r\n");
    check("ping hello\r\n", "$5\r\nhello\r\n");
    check("PING a b\r\n", "-ERR wrong number of arguments for 'ping' command\r\n");
    check("*1\r\n$4\r\nPING\r\n", "+PONG\r\n");
    check("*2\r\n$4\r\necho\r\n$0\r\n\r\n", "$0\r\n\r\n");
    check("ECHO hi\r\n", "$2\r\nhi\r\n");
    check("ECHO\r\n", "-ERR wrong number of arguments for 'echo' command\r\n");
    check("ECHO a b\r\n", "-ERR wrong number of arguments for 'echo' command\r\n");
}

#[test]
fn set_get_del_exists() {
    let mut c = client();
    check_with(&mut c, "GET k\r\n", "$-1\r\n");
    check_with(&mut c, "SET k hello\r\nGET k\r\nget K\r\n", "+OK\r\n$5\r\nhello\r\n$-1\r\n");
    check_with(&mut c, "SET k \"\"\r\nGET k\r\n", "+OK\r\n$0\r\n\r\n");
    // Binary-safe through multibulk.
    feed(&mut c, &mb(&[b"SET", b"bin\r\n\0", b"a\r\nb\0\xff"]));
    assert_eq!(feed(&mut c, &mb(&[b"GET", b"bin\r\n\0"])), b"$6\r\na\r\nb\0\xff\r\n");
    check_with(&mut c, "EXISTS k\r\nEXISTS k k nope\r\n", ":1\r\n:2\r\n");
    check_with(&mut c, "DEL k k nope\r\nEXISTS k\r\nDEL k\r\n", ":1\r\n:0\r\n:0\r\n");
    check_with(&mut c, "GET\r\n", "-ERR wrong number of arguments for 'get' command\r\n");
    check_with(&mut c, "get a b\r\n", "-ERR wrong number of arguments for 'get' command\r\n");
    check_with(&mut c, "SET k\r\n", "-ERR wrong number of arguments for 'set' command\r\n");
    check_with(&mut c, "DEL\r\n", "-ERR wrong number of arguments for 'del' command\r\n");
    check_with(&mut c, "EXISTS\r\n", "-ERR wrong number of arguments for 'exists' command\r\n");
    // A long value replaced by a short one, and the other way round.
    let long = vec![b'x'; 10_000];
    feed(&mut c, &mb(&[b"SET", b"v", &long]));
    check_with(&mut c, "SET v short\r\nGET v\r\n", "+OK\r\n$5\r\nshort\r\n");
    feed(&mut c, &mb(&[b"SET", b"v", &long]));
    let mut expected = b"$10000\r\n".to_vec();
    expected.extend_from_slice(&long);
    expected.extend_from_slice(b"\r\n");
    assert_eq!(feed(&mut c, b"GET v\r\n"), expected);
}

#[test]
fn set_options() {
    let mut c = client();
    check_with(&mut c, "SET k v NX\r\nSET k w NX\r\nGET k\r\n", "+OK\r\n$-1\r\n$1\r\nv\r\n");
    check_with(&mut c, "SET k w XX\r\nSET other w XX\r\nGET k\r\nEXISTS other\r\n", "+OK\r\n$-1\r\n$1\r\nw\r\n:0\r\n");
    check_with(&mut c, "SET k x GET\r\nSET new y GET\r\nGET new\r\n", "$1\r\nw\r\n$-1\r\n$1\r\ny\r\n");
    check_with(&mut c, "SET k z NX GET\r\nGET k\r\n", "$1\r\nx\r\n$1\r\nx\r\n");
    check_with(
        &mut c,
        "set k v ex 100\r\nTTL k\r\nSET k v2 KEEPTTL\r\nTTL k\r\nSET k v3\r\nTTL k\r\n",
        "+OK\r\n:~100\r\n+OK\r\n:~100\r\n+OK\r\n:-1\r\n",
    );
    check_with(
        &mut c,
        "SET k v PX 100000\r\nTTL k\r\nSET k v EX 5 EX 50\r\nTTL k\r\n",
        "+OK\r\n:~100\r\n+OK\r\n:~50\r\n",
    );
    let syntax = "-ERR syntax error\r\n";
    for bad in [
        "SET k v NX XX",
        "SET k v XX NX",
        "SET k v EX 10 PX 10",
        "SET k v EX",
        "SET k v KEEPTTL EX 5",
        "SET k v EX 5 KEEPTTL",
        "SET k v FOO",
        "SET k v EX abc NX XX",
    ] {
        check_with(&mut c, &format!("{bad}\r\n"), syntax);
    }
    let invalid = "-ERR invalid expire time in 'set' command\r\n";
    for bad in [
        "SET k v EX 0",
        "SET k v PX -1",
        "SET k v EX 9223372036854775",
        "SET k v EX 9223372036854775807",
        "SET k v PX 9223372036854775807",
    ] {
        check_with(&mut c, &format!("{bad}\r\n"), invalid);
    }
    for bad in ["SET k v EX abc", "SET k v PX 1.5", "SET k v EX 01", "SET k v EX \" 5\""] {
        check_with(&mut c, &format!("{bad}\r\n"), "-ERR value is not an integer or out of range\r\n");
    }
    // None of the failed SETs wrote.
    check_with(&mut c, "GET k\r\nTTL k\r\n", "$1\r\nv\r\n:~50\r\n");
}

#[test]
fn set_px_expires() {
    let mut c = client();
    check_with(
        &mut c,
        "SET k v PX 20\r\nSET e v EX 100\r\nSET keep v\r\nGET e\r\n",
        "+OK\r\n+OK\r\n+OK\r\n$1\r\nv\r\n",
    );
    thread::sleep(Duration::from_millis(40));
    check_with(
        &mut c,
        "DBSIZE\r\nEXISTS k\r\nGET k\r\nTTL k\r\nPTTL k\r\nDEL k\r\n",
        ":2\r\n:0\r\n$-1\r\n:-2\r\n:-2\r\n:0\r\n",
    );
    // An expired key does not block NX, and does not count as present for XX or GET.
    check_with(&mut c, "SET x v PX 20\r\nSET y v PX 20\r\nSET z 5 PX 20\r\n", "+OK\r\n+OK\r\n+OK\r\n");
    thread::sleep(Duration::from_millis(40));
    check_with(
        &mut c,
        "SET x w NX GET\r\nSET y w XX\r\nEXISTS y\r\nINCR z\r\nTTL z\r\nGET x\r\n",
        "$-1\r\n$-1\r\n:0\r\n:1\r\n:-1\r\n$1\r\nw\r\n",
    );
    // SET ... KEEPTTL on an expired key leaves no expiry behind.
    check_with(&mut c, "SET q v PX 20\r\n", "+OK\r\n");
    thread::sleep(Duration::from_millis(40));
    check_with(&mut c, "SET q v KEEPTTL\r\nTTL q\r\n", "+OK\r\n:-1\r\n");
}

#[test]
fn expire_ttl_pttl() {
    let mut c = client();
    check_with(
        &mut c,
        "SET t v\r\nTTL t\r\nTTL nope\r\nPTTL nope\r\nPTTL t\r\n",
        "+OK\r\n:-1\r\n:-2\r\n:-2\r\n:-1\r\n",
    );
    check_with(&mut c, "EXPIRE t 100\r\nTTL t\r\n", ":1\r\n:~100\r\n");
    let pttl = feed(&mut c, b"PTTL t\r\n");
    let ms: i64 = std::str::from_utf8(&pttl[1..pttl.len() - 2]).unwrap().parse().unwrap();
    assert!((98_000..=100_000).contains(&ms), "{ms}");
    check_with(
        &mut c,
        "EXPIRE t 100 NX\r\nEXPIRE t 200 XX\r\nTTL t\r\nEXPIRE t 50 GT\r\nEXPIRE t 50 LT\r\nTTL t\r\n",
        ":0\r\n:1\r\n:~200\r\n:0\r\n:1\r\n:~50\r\n",
    );
    check_with(
        &mut c,
        "SET p v\r\nEXPIRE p 10 XX\r\nEXPIRE p 10 GT\r\nEXPIRE p 10 LT\r\nTTL p\r\n",
        "+OK\r\n:0\r\n:0\r\n:1\r\n:~10\r\n",
    );
    check_with(&mut c, "SET n v\r\nEXPIRE n 10 NX\r\nPEXPIRE n 5000\r\nTTL n\r\n", "+OK\r\n:1\r\n:1\r\n:~5\r\n");
    check_with(
        &mut c,
        "EXPIRE t 5 NX XX\r\n",
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
    );
    check_with(&mut c, "EXPIRE t 5 GT LT\r\n", "-ERR GT and LT options at the same time are not compatible\r\n");
    check_with(&mut c, "EXPIRE t 5 FOO\r\n", "-ERR Unsupported option FOO\r\n");
    check_with(&mut c, "EXPIRE t abc\r\n", "-ERR value is not an integer or out of range\r\n");
    check_with(&mut c, "EXPIRE t\r\n", "-ERR wrong number of arguments for 'expire' command\r\n");
    check_with(&mut c, "EXPIRE nope 5\r\n", ":0\r\n");
    check_with(&mut c, "EXPIRE t 9223372036854775807\r\n", "-ERR invalid expire time in 'expire' command\r\n");
    check_with(&mut c, "EXPIRE t -9223372036854775807\r\n", "-ERR invalid expire time in 'expire' command\r\n");
    check_with(&mut c, "PEXPIRE t 9223372036854775807\r\n", "-ERR invalid expire time in 'pexpire' command\r\n");
    // A time in the past deletes the key.
    check_with(
        &mut c,
        "EXPIRE t 0\r\nEXISTS t\r\nSET u v\r\nEXPIRE u -10\r\nGET u\r\nDBSIZE\r\n",
        ":1\r\n:0\r\n+OK\r\n:1\r\n$-1\r\n:2\r\n",
    );
}

#[test]
fn incr_family() {
    let mut c = client();
    check_with(
        &mut c,
        "INCR n\r\nINCR n\r\nDECR n\r\nINCRBY n 10\r\nDECRBY n 3\r\nGET n\r\n",
        ":1\r\n:2\r\n:1\r\n:11\r\n:8\r\n$1\r\n8\r\n",
    );
    check_with(&mut c, "DECR m\r\nDECRBY m -5\r\nINCRBY m -10\r\n", ":-1\r\n:4\r\n:-6\r\n");
    check_with(
        &mut c,
        "SET n 9223372036854775806\r\nINCR n\r\nINCR n\r\nGET n\r\n",
        "+OK\r\n:9223372036854775807\r\n-ERR increment or decrement would overflow\r\n$19\r\n9223372036854775807\r\n",
    );
    check_with(
        &mut c,
        "SET n -9223372036854775808\r\nDECR n\r\nINCRBY n -1\r\n",
        "+OK\r\n-ERR increment or decrement would overflow\r\n-ERR increment or decrement would overflow\r\n",
    );
    check_with(
        &mut c,
        "SET n 5\r\nDECRBY n -9223372036854775808\r\nDECRBY n 9223372036854775807\r\n",
        "+OK\r\n-ERR decrement would overflow\r\n:-9223372036854775802\r\n",
    );
    let not_int = "-ERR value is not an integer or out of range\r\n";
    for value in ["abc", "007", "\" 7\"", "-0", "1.5", "+1", "\"\"", "9223372036854775808", "\"1 \""] {
        check_with(&mut c, &format!("SET s {value}\r\nINCR s\r\n"), &format!("+OK\r\n{not_int}"));
    }
    check_with(&mut c, "INCRBY n abc\r\nINCRBY n 9223372036854775808\r\nDECRBY n x\r\n", &not_int.repeat(3));
    check_with(&mut c, "INCR\r\n", "-ERR wrong number of arguments for 'incr' command\r\n");
    check_with(&mut c, "INCRBY n\r\n", "-ERR wrong number of arguments for 'incrby' command\r\n");
    // INCR keeps the key's expiry.
    check_with(&mut c, "SET t 1 EX 100\r\nINCR t\r\nTTL t\r\n", "+OK\r\n:2\r\n:~100\r\n");
}

#[test]
fn mset_mget_across_shards() {
    let mut c = Client::new(Arc::new(Store::new(7)));
    let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("key:{i}").into_bytes()).collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    let values: Vec<Vec<u8>> = (0..100).map(|i| format!("value-{i}").into_bytes()).collect();
    for (key, value) in keys.iter().zip(&values) {
        mset.push(key);
        mset.push(value);
    }
    assert_eq!(feed(&mut c, &mb(&mset)), b"+OK\r\n");
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|k| &k[..]));
    mget.push(b"missing");
    let mut expected = b"*101\r\n".to_vec();
    for value in &values {
        expected.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
        expected.extend_from_slice(value);
        expected.extend_from_slice(b"\r\n");
    }
    expected.extend_from_slice(b"$-1\r\n");
    assert_eq!(feed(&mut c, &mb(&mget)), expected);
    check_with(&mut c, "DBSIZE\r\n", ":100\r\n");
    check_with(&mut c, "MSET a\r\n", "-ERR wrong number of arguments for 'mset' command\r\n");
    check_with(&mut c, "MSET a b c\r\n", "-ERR wrong number of arguments for 'mset' command\r\n");
    check_with(&mut c, "MSET a 1 a 2\r\nMGET a\r\n", "+OK\r\n*1\r\n$1\r\n2\r\n");
    check_with(&mut c, "MGET\r\n", "-ERR wrong number of arguments for 'mget' command\r\n");
}

#[test]
fn flush_and_dbsize() {
    let mut c = client();
    check_with(
        &mut c,
        "DBSIZE\r\nMSET a 1 b 2 c 3\r\nDBSIZE\r\nFLUSHALL\r\nDBSIZE\r\n",
        ":0\r\n+OK\r\n:3\r\n+OK\r\n:0\r\n",
    );
    check_with(&mut c, "SET a 1\r\nflushdb sync\r\nFLUSHALL ASYNC\r\nDBSIZE\r\n", "+OK\r\n+OK\r\n+OK\r\n:0\r\n");
    check_with(&mut c, "FLUSHALL foo\r\nFLUSHDB a b\r\n", "-ERR syntax error\r\n-ERR syntax error\r\n");
    check_with(&mut c, "DBSIZE x\r\n", "-ERR wrong number of arguments for 'dbsize' command\r\n");
}

#[test]
fn server_commands() {
    let mut c = client();
    check_with(&mut c, "COMMAND\r\nCOMMAND DOCS\r\nCOMMAND DOCS get set\r\n", "*0\r\n*0\r\n*0\r\n");
    let count = feed(&mut c, b"COMMAND COUNT\r\n");
    assert!(count.starts_with(b":") && count.len() > 3, "{:?}", count.escape_ascii().to_string());
    check_with(&mut c, "COMMAND FOO\r\n", "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n");
    check_with(&mut c, "command count x\r\n", "-ERR wrong number of arguments for 'command|count' command\r\n");
    check_with(&mut c, "CONFIG GET save\r\n", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    check_with(&mut c, "config get APPENDONLY\r\n", "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    check_with(&mut c, "CONFIG GET nosuch\r\nCONFIG GET save save\r\n", "*0\r\n*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    check_with(&mut c, "CONFIG GET a*\r\n", "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    check_with(&mut c, "CONFIG GET\r\n", "-ERR wrong number of arguments for 'config|get' command\r\n");
    check_with(&mut c, "CONFIG\r\n", "-ERR wrong number of arguments for 'config' command\r\n");
    check_with(&mut c, "CONFIG foo\r\n", "-ERR unknown subcommand 'foo'. Try CONFIG HELP.\r\n");
    check_with(
        &mut c,
        "SELECT 0\r\nSELECT 16\r\nSELECT -1\r\n",
        "+OK\r\n-ERR DB index is out of range\r\n-ERR DB index is out of range\r\n",
    );
    check_with(&mut c, "SELECT abc\r\n", "-ERR value is not an integer or out of range\r\n");
    check_with(
        &mut c,
        "SELECT 2147483648\r\n",
        "-ERR value is out of range, value must between -2147483648 and 2147483647\r\n",
    );
    check_with(&mut c, "SELECT\r\n", "-ERR wrong number of arguments for 'select' command\r\n");
    check_with(
        &mut c,
        "HELLO 3\r\nHELLO 1\r\n",
        "-NOPROTO unsupported protocol version\r\n-NOPROTO unsupported protocol version\r\n",
    );
    check_with(&mut c, "HELLO abc\r\n", "-ERR Protocol version is not an integer or out of range\r\n");
    check_with(&mut c, "HELLO 2 foo\r\n", "-ERR Syntax error in HELLO option 'foo'\r\n");
    let id = String::from_utf8(feed(&mut c, b"CLIENT ID\r\n")).unwrap();
    let hello = format!(
        "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n{}$2\r\nid\r\n{id}$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        ":2\r\n"
    );
    check_with(&mut c, "HELLO\r\n", &hello);
    check_with(&mut c, "HELLO 2 AUTH default pw SETNAME conn\r\nCLIENT GETNAME\r\n", &format!("{hello}$4\r\nconn\r\n"));
    check_with(&mut c, "CLIENT SETNAME foo\r\nCLIENT GETNAME\r\n", "+OK\r\n$3\r\nfoo\r\n");
    check_with(
        &mut c,
        "CLIENT SETNAME \"a b\"\r\n",
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    );
    check_with(&mut c, "CLIENT SETNAME \"\"\r\nCLIENT GETNAME\r\n", "+OK\r\n$-1\r\n");
    check_with(&mut c, "CLIENT SETINFO lib-name redis-rs\r\nCLIENT SETINFO LIB-VER 1.0\r\n", "+OK\r\n+OK\r\n");
    check_with(&mut c, "CLIENT SETNAME\r\n", "-ERR wrong number of arguments for 'client|setname' command\r\n");
    check_with(&mut c, "CLIENT getname x\r\n", "-ERR wrong number of arguments for 'client|getname' command\r\n");
    check_with(&mut c, "CLIENT FOO\r\n", "-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n");
    check_with(&mut c, "client\r\n", "-ERR wrong number of arguments for 'client' command\r\n");
}

#[test]
fn info() {
    let mut c = client();
    let out = String::from_utf8(feed(&mut c, b"INFO\r\n")).unwrap();
    let (header, body) = out.split_once("\r\n").unwrap();
    assert_eq!(header, format!("${}", body.len() - 2), "bulk length");
    assert!(body.starts_with("# Server\r\nredis_version:7.0.0\r\n"), "{body:?}");
    assert!(body.ends_with("# Keyspace\r\n\r\n"), "{body:?}");
    check_with(
        &mut c,
        "INFO keyspace\r\nSET a 1\r\nSET b 2 EX 100\r\nINFO KEYSPACE\r\nINFO nosuch\r\n",
        "$12\r\n# Keyspace\r\n\r\n+OK\r\n+OK\r\n$44\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n\r\n$0\r\n\r\n",
    );
    let server = String::from_utf8(feed(&mut c, b"INFO server\r\n")).unwrap();
    assert!(server.contains("\r\n# Server\r\nredis_version:7.0.0\r\n") && !server.contains("Keyspace"), "{server:?}");
}

#[test]
fn quit_stops_at_once() {
    let mut c = client();
    let mut out = Vec::new();
    let input = b"PING\r\nQUIT\r\nSET k v\r\n";
    assert_eq!(c.feed(input, &mut out), Ok(12));
    assert_eq!(out, b"+PONG\r\n+OK\r\n");
    assert!(c.wants_close());
    // Nothing more runs.
    assert_eq!(c.feed(b"SET k v\r\n", &mut out), Ok(0));
    let mut c = client();
    check_with(&mut c, "quit x y\r\n", "+OK\r\n");
    assert!(c.wants_close());
    assert!(!client().wants_close());
}

#[test]
fn unknown_commands() {
    check("xyz\r\n", "-ERR unknown command 'xyz', with args beginning with: \r\n");
    check("FOO a b\r\n", "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n");
    check("*1\r\n$0\r\n\r\n", "-ERR unknown command '', with args beginning with: \r\n");
    // Line breaks in the echoed arguments become spaces.
    let out = feed(&mut client(), &mb(&[b"no\r\nsuch", b"x\ny"]));
    assert_eq!(out, b"-ERR unknown command 'no  such', with args beginning with: 'x y' \r\n");
    // Long arguments are cut at 128 bytes.
    let long = "a".repeat(300);
    let out = String::from_utf8(feed(&mut client(), format!("{long} {long} {long}\r\n").as_bytes())).unwrap();
    let a128 = "a".repeat(128);
    assert_eq!(out, format!("-ERR unknown command '{a128}', with args beginning with: '{a128}' \r\n"));
    // A command error does not end the connection: the pipeline goes on.
    check("nope\r\nPING\r\n", "-ERR unknown command 'nope', with args beginning with: \r\n+PONG\r\n");
}

// ---------------------------------------------------------------------------------------------
// Parsing.

#[test]
fn inline_commands() {
    check("PING\n", "+PONG\r\n");
    check("\r\n\n  \r\n\t\r\nPING\n", "+PONG\r\n");
    check("  ECHO \t  hi  \r\n", "$2\r\nhi\r\n");
    check("SET \"x y\" \"a\\x41\\\"b\\n\"\r\nGET 'x y'\r\n", "+OK\r\n$5\r\naA\"b\n\r\n");
    check("ECHO 'it\\'s'\r\n", "$4\r\nit's\r\n");
    check("ECHO \"\"\r\n", "$0\r\n\r\n");
    // A quote may start inside an argument; a NUL ends the line, as in Redis.
    check("ECHO a\"b c\"\r\n", "$4\r\nab c\r\n");
    check("ECHO a\0b c\r\n", "$1\r\na\r\n");
}

#[test]
fn mixed_multibulk_and_inline_pipeline() {
    let mut input = mb(&[b"SET", b"k", b"1"]);
    input.extend_from_slice(b"INCR k\r\n");
    input.extend_from_slice(&mb(&[b"GET", b"k"]));
    input.extend_from_slice(b"*0\r\n*-1\r\n\r\nPING\r\n");
    assert_eq!(feed(&mut client(), &input), b"+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n");
}

#[test]
fn incomplete_requests_are_left_unconsumed() {
    let mut c = client();
    let mut out = Vec::new();
    for partial in [
        "*",
        "*2",
        "*2\r",
        "*2\r\n",
        "*2\r\n$4",
        "*2\r\n$4\r\nECHO\r\n$3\r\nab",
        "*2\r\n$4\r\nECHO\r\n$3\r\nabc\r",
        "PING",
        "PING\r",
    ] {
        assert_eq!(c.feed(partial.as_bytes(), &mut out), Ok(0), "{partial:?}");
    }
    assert_eq!(c.feed(b"PING\r\nPI", &mut out), Ok(6));
    assert_eq!(out, b"+PONG\r\n");
}

/// Requests of every kind, with errors that are not fatal, and none whose reply depends on the
/// time.
fn pipeline() -> Vec<u8> {
    let mut input = Vec::new();
    let mut add = |bytes: &[u8]| input.extend_from_slice(bytes);
    add(&mb(&[b"PING"]));
    add(b"PING\r\n");
    add(&mb(&[b"SET", b"key:1", b"hello world"]));
    add(&mb(&[b"GET", b"key:1"]));
    add(b"SET \"key 2\" 'quoted value'\r\n");
    add(b"get \"key 2\"\n");
    add(&mb(&[b"INCR", b"counter"]));
    add(&mb(&[b"INCRBY", b"counter", b"41"]));
    add(b"DECR counter\r\n");
    add(&mb(&[b"MSET", b"a", b"1", b"b", b"", b"c", b"\r\n\r\n"]));
    add(&mb(&[b"MGET", b"a", b"b", b"c", b"nope"]));
    add(b"\r\n"); // empty inline line
    add(b"*0\r\n");
    add(&mb(&[b"EXISTS", b"a", b"nope", b"a"]));
    add(&mb(&[b"DEL", b"a", b"nope"]));
    add(&mb(&[b"nosuch", b"x"]));
    add(&mb(&[b"GET"]));
    add(&mb(&[b"INCR", b"key:1"]));
    add(&mb(&[b"SET", b"big", &[b'z'; 300]]));
    add(&mb(&[b"GET", b"big"]));
    add(&mb(&[b"SET", b"k", b"v", b"NX", b"GET"]));
    add(&mb(&[b"DBSIZE"]));
    add(&mb(&[b"ECHO", b""]));
    add(b"CONFIG GET save\r\n");
    add(&mb(&[b"TTL", b"counter"]));
    input
}

#[test]
fn pipeline_split_at_every_offset() {
    let input = pipeline();
    let expected = feed(&mut client(), &input);
    assert!(expected.len() > 200);
    for split in 0..=input.len() {
        let mut c = client();
        let mut out = Vec::new();
        let consumed = c.feed(&input[..split], &mut out).unwrap();
        // Exactly how a connection does it: the unconsumed tail, then what arrives next.
        let mut rest = input[consumed..split].to_vec();
        rest.extend_from_slice(&input[split..]);
        let consumed = c.feed(&rest, &mut out).unwrap();
        assert_eq!(consumed, rest.len(), "split at {split}");
        assert_eq!(out, expected, "split at {split}");
    }
}

#[test]
fn byte_at_a_time() {
    let input = pipeline();
    let expected = feed(&mut client(), &input);
    let mut c = client();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for &byte in &input {
        pending.push(byte);
        let consumed = c.feed(&pending, &mut out).unwrap();
        pending.drain(..consumed);
    }
    assert!(pending.is_empty());
    assert_eq!(out, expected);
}

#[test]
fn malformed_requests_are_fatal() {
    let cases: &[(&[u8], &str)] = &[
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*\r\n", "invalid multibulk length"),
        (b"*01\r\n$4\r\nPING\r\n", "invalid multibulk length"),
        (b"*+1\r\n$4\r\nPING\r\n", "invalid multibulk length"),
        (b"*1048577\r\n", "invalid multibulk length"),
        (b"*99999999999999999999\r\n", "invalid multibulk length"),
        (b"*1\rX$4\r\nPING\r\n", "invalid multibulk length"),
        (b"*123456789012345678901234567890", "invalid multibulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$+4\r\nPING\r\n", "invalid bulk length"),
        (b"*1\r\n$\x01\r\n", "invalid bulk length"),
        (b"*1\r\n$536870913\r\n", "invalid bulk length"),
        (b"*1\r\n$600000000\r\n", "invalid bulk length"),
        (b"*1\r\n$4\rxPING\r\n", "invalid bulk length"),
        (b"*1\r\n$1234567890123456789012", "invalid bulk length"),
        (b"*1\r\nfoo\r\n", "expected '$', got 'f'"),
        (b"*2\r\n$4\r\nECHO\r\n:1\r\n", "expected '$', got ':'"),
        (b"*1\r\n\r\n", "expected '$', got '\\r'"),
        (b"*1\r\n$4\r\nPINGXX", "expected CRLF after bulk data"),
        (b"*1\r\n$5\r\nhi\r\n\r\n\r\n", "expected CRLF after bulk data"),
        (b"*1\r\n$2\r\nhi\n\r", "expected CRLF after bulk data"),
        (b"\"unbalanced\r\n", "unbalanced quotes in request"),
        (b"ECHO \"a\"b\r\n", "unbalanced quotes in request"),
        (b"ECHO 'a\r\n", "unbalanced quotes in request"),
        (b"ECHO \"a\\\"\r\n", "unbalanced quotes in request"),
        (b"ECHO a\"b c\"d\r\n", "unbalanced quotes in request"),
    ];
    for &(input, what) in cases {
        let mut c = client();
        let mut out = b"+PONG\r\n".to_vec(); // replies already there stay
        let expected = format!("ERR Protocol error: {what}");
        assert_eq!(c.feed(input, &mut out), Err(Fatal(expected.clone())), "{:?}", input.escape_ascii().to_string());
        assert_eq!(out, format!("+PONG\r\n-{expected}\r\n").as_bytes(), "{:?}", input.escape_ascii().to_string());
    }
    // Requests before the bad one run and keep their replies.
    let mut c = client();
    let mut out = Vec::new();
    assert!(c.feed(b"SET k v\r\nGET k\r\n*x\r\nPING\r\n", &mut out).is_err());
    assert_eq!(out, b"+OK\r\n$1\r\nv\r\n-ERR Protocol error: invalid multibulk length\r\n");
    // An inline line that never ends.
    let mut c = client();
    let mut out = Vec::new();
    let line = vec![b'a'; 64 * 1024];
    assert_eq!(c.feed(&line, &mut out), Ok(0), "64 KiB without a newline is still fine");
    let mut longer = line.clone();
    longer.push(b'a');
    assert_eq!(c.feed(&longer, &mut out), Err(Fatal("ERR Protocol error: too big inline request".into())));
}

#[test]
fn huge_claimed_lengths_are_not_allocated_up_front() {
    let mut c = client();
    let mut out = Vec::new();
    LARGEST.with(|l| l.set(0));
    // A 512 MiB argument announced, three bytes of it sent.
    let mut input = b"*2\r\n$3\r\nSET\r\n$536870912\r\nabc".to_vec();
    assert_eq!(c.feed(&input, &mut out), Ok(0));
    input.extend_from_slice(&[b'x'; 10_000]);
    assert_eq!(c.feed(&input, &mut out), Ok(0));
    // A million arguments announced, one sent.
    let mut c = client();
    assert_eq!(c.feed(b"*1048576\r\n$3\r\nGET\r\n$1\r\nk", &mut out), Ok(0));
    let largest = LARGEST.with(|l| l.get());
    assert!(largest < 64 * 1024, "allocated {largest} bytes at once");
    assert!(out.is_empty());
}

#[test]
fn never_panics_on_garbage() {
    // Mutations of a valid pipeline, and random bytes, fed whole and in random pieces. Any
    // outcome but a panic (or a wrong count of consumed bytes) is fine.
    let valid = pipeline();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const ALPHABET: &[u8] = b"*$\r\n0123456789-+ \"'\\xPINGSETabc\t\0";
    for round in 0..3000 {
        let mut input = if round % 3 == 0 {
            (0..random() % 200).map(|_| ALPHABET[random() as usize % ALPHABET.len()]).collect()
        } else {
            valid.clone()
        };
        for _ in 0..1 + random() % 4 {
            if input.is_empty() {
                break;
            }
            let at = random() as usize % input.len();
            match random() % 3 {
                0 => input[at] = ALPHABET[random() as usize % ALPHABET.len()],
                1 => {
                    input.remove(at);
                }
                _ => input.insert(at, random() as u8),
            }
        }
        let mut c = client();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let take = 1 + random() as usize % 64;
            let end = input.len().min(at + take);
            pending.extend_from_slice(&input[at..end]);
            at = end;
            match c.feed(&pending, &mut out) {
                Ok(consumed) => {
                    assert!(consumed <= pending.len());
                    pending.drain(..consumed);
                }
                Err(_) => break,
            }
            if c.wants_close() {
                break;
            }
        }
    }
}

#[test]
fn concurrent_incr() {
    let store = Arc::new(Store::new(8));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            thread::spawn(move || {
                let mut c = Client::new(store);
                // 100 pipelined INCRs per feed, like a benchmark client with -P 100.
                let batch = "INCR counter\r\n".repeat(100);
                for _ in 0..100 {
                    let mut out = Vec::new();
                    assert_eq!(c.feed(batch.as_bytes(), &mut out), Ok(batch.len()));
                    assert_eq!(out.iter().filter(|&&b| b == b':').count(), 100);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    check_with(&mut Client::new(store.clone()), "GET counter\r\n", "$5\r\n40000\r\n");
    assert_eq!(store.len(), 1);
}
