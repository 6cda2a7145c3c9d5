//! The command table, and [`Client`]: one connection's protocol state, which turns the bytes
//! a client sent into the bytes of the replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::protocol::{self, parse_i64, Args, Fatal, Parsed, Parser};
use super::store::{ExpireCondition, IncrError, SetCondition, SetExpiry, Store, Ttl};

/// The version the server claims to be in `HELLO` and `INFO`.
const VERSION: &str = "7.0.0";

/// One connection's protocol state.
#[derive(Debug)]
pub struct Client {
    parser: Parser,
    session: Session,
}

/// What the commands of one connection share.
#[derive(Debug)]
struct Session {
    store: Arc<Store>,
    /// Unique per connection, for `CLIENT ID` and `HELLO`.
    id: u64,
    /// Set by `CLIENT SETNAME`.
    name: Option<Vec<u8>>,
    /// Set by `QUIT`.
    closing: bool,
}

impl Client {
    /// A new connection's state, serving `store`.
    pub fn new(store: Arc<Store>) -> Client {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Client { parser: Parser::new(), session: Session { store, id, name: None, closing: false } }
    }

    /// Executes every complete request at the front of `input` (multibulk or inline, any number
    /// of them pipelined), appends their replies to `out` in order, and returns how many bytes
    /// it consumed. An incomplete request at the end is left unconsumed: present it again,
    /// from its first byte, with more bytes after it.
    ///
    /// On a protocol error it appends the `-ERR Protocol error: ...` reply and returns it as
    /// `Err`: send `out` and close the connection. After `QUIT` it stops at once, leaving the
    /// rest unconsumed (see [`Client::wants_close`]).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Fatal> {
        let mut consumed = 0;
        while consumed < input.len() && !self.session.closing {
            let rest = &input[consumed..];
            match self.parser.parse(rest) {
                Ok(Parsed::Request(len)) => {
                    execute(&mut self.session, self.parser.args(&rest[..len]), out);
                    consumed += len;
                }
                Ok(Parsed::Skip(len)) => consumed += len,
                Ok(Parsed::Incomplete) => break,
                Err(fatal) => {
                    self.parser.reset();
                    protocol::error(out, fatal.0.as_bytes());
                    return Err(fatal);
                }
            }
        }
        Ok(consumed)
    }

    /// True after `QUIT`: send the replies produced so far, then close.
    pub fn wants_close(&self) -> bool {
        self.session.closing
    }
}

/// A command's handler. It runs after the arity check, so it can count on the arguments the
/// arity guarantees.
type Handler = fn(&mut Session, Args<'_>, &mut Vec<u8>);

/// How many arguments a command takes, its name included (Redis's positive and negative arity).
#[derive(Debug, Clone, Copy)]
enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    fn allows(self, argc: usize) -> bool {
        match self {
            Arity::Exactly(n) => argc == n,
            Arity::AtLeast(n) => argc >= n,
        }
    }
}

/// One entry of the command table.
struct Command {
    /// Lower case, as in Redis's error messages.
    name: &'static str,
    arity: Arity,
    run: Handler,
}

/// Every command, the ones benchmarks hammer first (lookup is a linear scan).
static COMMANDS: &[Command] = &[
    Command { name: "get", arity: Arity::Exactly(2), run: get },
    Command { name: "set", arity: Arity::AtLeast(3), run: set },
    Command { name: "incr", arity: Arity::Exactly(2), run: |s, a, o| incr_by(s, a.get(1), 1, o) },
    Command { name: "ping", arity: Arity::AtLeast(1), run: ping },
    Command { name: "mget", arity: Arity::AtLeast(2), run: mget },
    Command { name: "mset", arity: Arity::AtLeast(3), run: mset },
    Command { name: "del", arity: Arity::AtLeast(2), run: del },
    Command { name: "exists", arity: Arity::AtLeast(2), run: exists },
    Command { name: "decr", arity: Arity::Exactly(2), run: |s, a, o| incr_by(s, a.get(1), -1, o) },
    Command { name: "incrby", arity: Arity::Exactly(3), run: incrby },
    Command { name: "decrby", arity: Arity::Exactly(3), run: decrby },
    Command { name: "echo", arity: Arity::Exactly(2), run: |_, a, o| protocol::bulk(o, a.get(1)) },
    Command { name: "ttl", arity: Arity::Exactly(2), run: |s, a, o| ttl(s, a, o, 1000) },
    Command { name: "pttl", arity: Arity::Exactly(2), run: |s, a, o| ttl(s, a, o, 1) },
    Command { name: "expire", arity: Arity::AtLeast(3), run: |s, a, o| expire(s, a, o, 1000) },
    Command { name: "pexpire", arity: Arity::AtLeast(3), run: |s, a, o| expire(s, a, o, 1) },
    Command { name: "dbsize", arity: Arity::Exactly(1), run: |s, _, o| protocol::integer(o, s.store.len() as i64) },
    Command { name: "flushall", arity: Arity::AtLeast(1), run: flush },
    Command { name: "flushdb", arity: Arity::AtLeast(1), run: flush },
    Command { name: "select", arity: Arity::Exactly(2), run: select },
    Command { name: "quit", arity: Arity::AtLeast(1), run: quit },
    Command { name: "hello", arity: Arity::AtLeast(1), run: hello },
    Command { name: "client", arity: Arity::AtLeast(2), run: client },
    Command { name: "command", arity: Arity::AtLeast(1), run: command },
    Command { name: "config", arity: Arity::AtLeast(2), run: config },
    Command { name: "info", arity: Arity::AtLeast(1), run: info },
];

/// Runs one request and appends its reply.
fn execute(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    let name = args.get(0);
    let Some(command) = COMMANDS.iter().find(|c| name.eq_ignore_ascii_case(c.name.as_bytes())) else {
        return unknown_command(args, out);
    };
    if !command.arity.allows(args.len()) {
        return wrong_arity(command.name, out);
    }
    (command.run)(session, args, out)
}

// ---------------------------------------------------------------------------------------------
// Replies shared by several commands.

const SYNTAX_ERROR: &[u8] = b"ERR syntax error";
const NOT_AN_INTEGER: &[u8] = b"ERR value is not an integer or out of range";

fn ok(out: &mut Vec<u8>) {
    protocol::simple(out, "OK");
}

/// `-ERR wrong number of arguments for 'get' command`; `name` is `config|get` for a subcommand.
fn wrong_arity(name: &str, out: &mut Vec<u8>) {
    protocol::error(out, format!("ERR wrong number of arguments for '{name}' command").as_bytes());
}

/// Redis's reply to an unknown command: its name, then the start of its arguments, quoted.
fn unknown_command(args: Args<'_>, out: &mut Vec<u8>) {
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend(args.get(0).iter().take(128));
    msg.extend_from_slice(b"', with args beginning with: ");
    let start = msg.len();
    for arg in args.rest(1) {
        let room = 128usize.saturating_sub(msg.len() - start);
        if room == 0 {
            break;
        }
        msg.push(b'\'');
        msg.extend(arg.iter().take(room));
        msg.extend_from_slice(b"' ");
    }
    protocol::error(out, &msg);
}

/// `-ERR unknown subcommand 'FOO'. Try CONFIG HELP.`
fn unknown_subcommand(args: Args<'_>, out: &mut Vec<u8>) {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend(args.get(1).iter().take(128));
    msg.extend_from_slice(b"'. Try ");
    msg.extend(args.get(0).to_ascii_uppercase());
    msg.extend_from_slice(b" HELP.");
    protocol::error(out, &msg);
}

/// Case-insensitive comparison of an argument with a keyword.
fn is(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Strings.

fn get(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    session.store.get(args.get(1), |value| bulk_or_null(out, value));
}

fn bulk_or_null(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(value) => protocol::bulk(out, value),
        None => protocol::null(out),
    }
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]`
fn set(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut keep_ttl = false;
    // The `EX`/`PX` argument and its unit in milliseconds.
    let mut expire: Option<(&[u8], i64)> = None;
    // The same checks, in the same order, as Redis's parseExtendedStringArgumentsOrReply: a
    // syntax error anywhere wins over a bad expire time.
    let mut i = 3;
    while i < args.len() {
        let option = args.get(i);
        let unit = if is(option, "EX") {
            1000
        } else if is(option, "PX") {
            1
        } else {
            0
        };
        if is(option, "NX") && condition != SetCondition::IfPresent {
            condition = SetCondition::IfAbsent;
        } else if is(option, "XX") && condition != SetCondition::IfAbsent {
            condition = SetCondition::IfPresent;
        } else if is(option, "GET") {
            get = true;
        } else if is(option, "KEEPTTL") && expire.is_none() {
            keep_ttl = true;
        } else if unit != 0 && !keep_ttl && expire.is_none_or(|(_, u)| u == unit) && i + 1 < args.len() {
            expire = Some((args.get(i + 1), unit));
            i += 1;
        } else {
            return protocol::error(out, SYNTAX_ERROR);
        }
        i += 1;
    }
    let expiry = match expire {
        None if keep_ttl => SetExpiry::Keep,
        None => SetExpiry::Clear,
        Some((arg, unit)) => match parse_i64(arg).map(|n| (n > 0).then(|| deadline(n, unit)).flatten()) {
            None => return protocol::error(out, NOT_AN_INTEGER),
            Some(Some(at)) => SetExpiry::At(at),
            // Not positive, or too far away.
            Some(None) => return protocol::error(out, b"ERR invalid expire time in 'set' command"),
        },
    };
    let written = session.store.set(args.get(1), args.get(2), expiry, condition, |old| {
        if get {
            bulk_or_null(out, old);
        }
    });
    match (get, written) {
        (true, _) => {} // the old value is the reply
        (false, true) => ok(out),
        (false, false) => protocol::null(out),
    }
}

/// The instant `n` units of `unit` milliseconds from now (now itself if that is in the past),
/// or `None` if it overflows Redis's millisecond Unix time, as Redis rejects it.
fn deadline(n: i64, unit: i64) -> Option<Instant> {
    let ms = n.checked_mul(unit)?;
    let unix_now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    ms.checked_add(unix_now_ms)?;
    let now = Instant::now();
    if ms <= 0 {
        return Some(now);
    }
    now.checked_add(Duration::from_millis(ms as u64))
}

fn incrby(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    match parse_i64(args.get(2)) {
        Some(delta) => incr_by(session, args.get(1), delta, out),
        None => protocol::error(out, NOT_AN_INTEGER),
    }
}

fn decrby(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    match parse_i64(args.get(2)) {
        // Its negation does not fit.
        Some(i64::MIN) => protocol::error(out, b"ERR decrement would overflow"),
        Some(delta) => incr_by(session, args.get(1), -delta, out),
        None => protocol::error(out, NOT_AN_INTEGER),
    }
}

fn incr_by(session: &mut Session, key: &[u8], delta: i64, out: &mut Vec<u8>) {
    match session.store.incr_by(key, delta) {
        Ok(n) => protocol::integer(out, n),
        Err(IncrError::NotInteger) => protocol::error(out, NOT_AN_INTEGER),
        Err(IncrError::Overflow) => protocol::error(out, b"ERR increment or decrement would overflow"),
    }
}

/// `MGET key...`. Each key is read on its own (they may be in different shards): unlike Redis
/// the reply is not one atomic snapshot.
fn mget(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    protocol::array(out, args.len() - 1);
    for key in args.rest(1) {
        session.store.get(key, |value| bulk_or_null(out, value));
    }
}

/// `MSET key value...`. Not atomic either: another connection may see some keys set first.
fn mset(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    if args.len() % 2 == 0 {
        return wrong_arity("mset", out);
    }
    for i in (1..args.len()).step_by(2) {
        session.store.set(args.get(i), args.get(i + 1), SetExpiry::Clear, SetCondition::Always, |_| ());
    }
    ok(out);
}

fn del(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    let removed = args.rest(1).filter(|key| session.store.remove(key)).count();
    protocol::integer(out, removed as i64);
}

/// `EXISTS key...`: a key named twice counts twice, as in Redis.
fn exists(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    let found = args.rest(1).filter(|key| session.store.contains(key)).count();
    protocol::integer(out, found as i64);
}

// ---------------------------------------------------------------------------------------------
// Expiry.

/// `TTL` (`unit` 1000) and `PTTL` (`unit` 1): -2 if there is no key, -1 if it does not expire.
fn ttl(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>, unit: u128) {
    let reply = match session.store.ttl(args.get(1)) {
        Ttl::Missing => -2,
        Ttl::Persistent => -1,
        // Rounded to the nearest unit, as Redis does.
        Ttl::Remaining(left) => ((left.as_millis() + unit / 2) / unit) as i64,
    };
    protocol::integer(out, reply);
}

/// `EXPIRE key seconds [NX|XX|GT|LT]` (`unit` 1000) and `PEXPIRE` (`unit` 1). A time in the
/// past deletes the key.
fn expire(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>, unit: i64) {
    let mut condition = ExpireCondition::default();
    for option in args.rest(3) {
        let flag = if is(option, "NX") {
            &mut condition.nx
        } else if is(option, "XX") {
            &mut condition.xx
        } else if is(option, "GT") {
            &mut condition.gt
        } else if is(option, "LT") {
            &mut condition.lt
        } else {
            let mut msg = b"ERR Unsupported option ".to_vec();
            msg.extend_from_slice(option);
            return protocol::error(out, &msg);
        };
        *flag = true;
    }
    if condition.nx && (condition.xx || condition.gt || condition.lt) {
        return protocol::error(out, b"ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if condition.gt && condition.lt {
        return protocol::error(out, b"ERR GT and LT options at the same time are not compatible");
    }
    let Some(n) = parse_i64(args.get(2)) else { return protocol::error(out, NOT_AN_INTEGER) };
    let Some(at) = deadline(n, unit) else {
        let name = if unit == 1 { "pexpire" } else { "expire" };
        return protocol::error(out, format!("ERR invalid expire time in '{name}' command").as_bytes());
    };
    let applied = session.store.expire(args.get(1), at, condition);
    protocol::integer(out, i64::from(applied));
}

// ---------------------------------------------------------------------------------------------
// Server and connection.

/// `PING [message]`
fn ping(_: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    match args.len() {
        1 => protocol::simple(out, "PONG"),
        2 => protocol::bulk(out, args.get(1)),
        _ => wrong_arity("ping", out),
    }
}

/// `FLUSHALL` and `FLUSHDB`, with an optional `ASYNC` or `SYNC` (both flush at once here).
fn flush(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    match args.len() {
        1 => {}
        2 if is(args.get(1), "ASYNC") || is(args.get(1), "SYNC") => {}
        _ => return protocol::error(out, SYNTAX_ERROR),
    }
    session.store.clear();
    ok(out);
}

/// `SELECT index`: there is only database 0.
fn select(_: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    match parse_i64(args.get(1)) {
        None => protocol::error(out, NOT_AN_INTEGER),
        Some(0) => ok(out),
        Some(n) if i32::try_from(n).is_err() => {
            protocol::error(out, b"ERR value is out of range, value must between -2147483648 and 2147483647")
        }
        Some(_) => protocol::error(out, b"ERR DB index is out of range"),
    }
}

fn quit(session: &mut Session, _: Args<'_>, out: &mut Vec<u8>) {
    session.closing = true;
    ok(out);
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: only RESP2 is spoken, so `HELLO 3` gets
/// `-NOPROTO`, which clients take as "stay on RESP2". `AUTH` is accepted as Redis's
/// password-less default user accepts it.
fn hello(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    let mut i = 1;
    if args.len() > 1 {
        match parse_i64(args.get(1)) {
            None => return protocol::error(out, b"ERR Protocol version is not an integer or out of range"),
            Some(2) => {}
            Some(_) => return protocol::error(out, b"NOPROTO unsupported protocol version"),
        }
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        let more = args.len() - 1 - i;
        if is(args.get(i), "AUTH") && more >= 2 {
            i += 3;
        } else if is(args.get(i), "SETNAME") && more >= 1 {
            name = Some(args.get(i + 1));
            i += 2;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(args.get(i));
            msg.push(b'\'');
            return protocol::error(out, &msg);
        }
    }
    if let Some(name) = name {
        if !set_name(session, name, out) {
            return;
        }
    }
    protocol::array(out, 14);
    for (key, value) in [("server", "redis"), ("version", VERSION)] {
        protocol::bulk(out, key.as_bytes());
        protocol::bulk(out, value.as_bytes());
    }
    protocol::bulk(out, b"proto");
    protocol::integer(out, 2);
    protocol::bulk(out, b"id");
    protocol::integer(out, session.id as i64);
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        protocol::bulk(out, key.as_bytes());
        protocol::bulk(out, value.as_bytes());
    }
    protocol::bulk(out, b"modules");
    protocol::array(out, 0);
}

/// `CLIENT SETNAME|GETNAME|SETINFO|ID`.
fn client(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    let sub = args.get(1);
    let (name, arity) = if is(sub, "SETNAME") {
        ("client|setname", 3)
    } else if is(sub, "GETNAME") {
        ("client|getname", 2)
    } else if is(sub, "SETINFO") {
        ("client|setinfo", 4)
    } else if is(sub, "ID") {
        ("client|id", 2)
    } else {
        return unknown_subcommand(args, out);
    };
    if args.len() != arity {
        return wrong_arity(name, out);
    }
    match name {
        "client|setname" => {
            if set_name(session, args.get(2), out) {
                ok(out);
            }
        }
        "client|getname" => bulk_or_null(out, session.name.as_deref()),
        "client|id" => protocol::integer(out, session.id as i64),
        _ => ok(out), // SETINFO (lib-name, lib-ver): noted by nobody
    }
}

/// Sets the connection's name (an empty one clears it); on an invalid name replies with the
/// error and returns false.
fn set_name(session: &mut Session, name: &[u8], out: &mut Vec<u8>) -> bool {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        protocol::error(out, b"ERR Client names cannot contain spaces, newlines or special characters.");
        return false;
    }
    session.name = if name.is_empty() { None } else { Some(name.to_vec()) };
    true
}

/// `COMMAND [COUNT|DOCS|INFO|LIST]`: enough for redis-cli's start-up (an empty `COMMAND DOCS`
/// makes it fall back on its built-in help), not Redis's full command metadata.
fn command(_: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    if args.len() == 1 {
        return protocol::array(out, 0);
    }
    let sub = args.get(1);
    if is(sub, "COUNT") {
        if args.len() != 2 {
            return wrong_arity("command|count", out);
        }
        protocol::integer(out, COMMANDS.len() as i64);
    } else if is(sub, "LIST") {
        protocol::array(out, COMMANDS.len());
        for command in COMMANDS {
            protocol::bulk(out, command.name.as_bytes());
        }
    } else if is(sub, "DOCS") || is(sub, "INFO") {
        protocol::array(out, 0);
    } else {
        unknown_subcommand(args, out);
    }
}

/// The parameters `CONFIG GET` knows; redis-benchmark asks for `save` and `appendonly`.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no"), ("databases", "1")];

/// `CONFIG GET pattern...` (`*` and `?` wildcards): the matching parameters as a flat array of
/// names and values.
fn config(_: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    if !is(args.get(1), "GET") {
        return unknown_subcommand(args, out);
    }
    if args.len() < 3 {
        return wrong_arity("config|get", out);
    }
    let matches = |name: &str| args.rest(2).any(|pattern| glob(pattern, name.as_bytes()));
    protocol::array(out, 2 * CONFIG.iter().filter(|(name, _)| matches(name)).count());
    for (name, value) in CONFIG.iter().filter(|(name, _)| matches(name)) {
        protocol::bulk(out, name.as_bytes());
        protocol::bulk(out, value.as_bytes());
    }
}

/// Case-insensitive glob match with `*` (any run) and `?` (any byte).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, _) => text.is_empty(),
        (Some((b'*', rest)), _) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        (Some(_), None) => false,
        (Some((b'?', rest)), Some((_, text))) => glob(rest, text),
        (Some((p, rest)), Some((t, text))) => p.eq_ignore_ascii_case(t) && glob(rest, text),
    }
}

/// `INFO [section...]`: the `server` and `keyspace` sections, in Redis's format.
fn info(session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
    let everything = args.len() == 1 || args.rest(1).any(|s| is(s, "all") || is(s, "default") || is(s, "everything"));
    let wanted = |section: &str| everything || args.rest(1).any(|s| is(s, section));
    let mut sections = Vec::new();
    if wanted("server") {
        sections.push(format!(
            "# Server\r\nredis_version:{VERSION}\r\nredis_mode:standalone\r\narch_bits:{}\r\nprocess_id:{}\r\n",
            usize::BITS,
            std::process::id()
        ));
    }
    if wanted("keyspace") {
        let mut section = String::from("# Keyspace\r\n");
        let keys = session.store.len();
        if keys > 0 {
            let expires = session.store.volatile_len();
            section += &format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        sections.push(section);
    }
    protocol::bulk(out, sections.join("\r\n").as_bytes());
}
