//! The RESP2 wire format: a resumable request parser (multibulk and inline, any number of
//! pipelined requests per buffer) and the reply encoders.
//!
//! The parser never copies a multibulk argument: it records each one as a byte range of the
//! caller's buffer. It never allocates in proportion to a length the client merely *claims*
//! either: a `$536870912` header costs nothing until the bytes are there, and the argument
//! list grows with the arguments actually received.

use std::fmt;

/// Most arguments one multibulk request may announce (`*<count>`).
pub const MAX_MULTIBULK: i64 = 1024 * 1024;
/// Largest bulk argument (`$<len>`), Redis's default `proto-max-bulk-len`.
pub const MAX_BULK: i64 = 512 * 1024 * 1024;
/// Longest inline request line still waiting for its newline.
pub const MAX_INLINE: usize = 64 * 1024;
/// Argument slots reserved up front for a multibulk request, whatever its count claims.
const MAX_PREALLOC_ARGS: usize = 1024;
/// Longest number a header can hold: `-9223372036854775808`.
const MAX_NUMBER_LEN: usize = 20;

/// A protocol error: the connection cannot be resynchronised and must be closed once the
/// replies produced so far (which end with the error reply) have been sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal(pub String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// What [`Parser::parse`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete request of this many bytes; its arguments are in [`Parser::args`].
    Request(usize),
    /// This many bytes that hold no request (an empty inline line, `*0` or `*-1`).
    Skip(usize),
    /// The request is not complete yet. The parser remembers how far it got, so the same
    /// bytes can be presented again, with more appended, without being parsed twice.
    Incomplete,
}

/// Where a partly received request stands, in offsets from the start of the request.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Nothing parsed yet.
    Start,
    /// An inline line with no newline in its first `scanned` bytes.
    Inline { scanned: usize },
    /// A multibulk request still missing `remaining` arguments, the next at offset `pos`. The
    /// arguments before it are already in `Parser::args`.
    Multibulk { remaining: usize, pos: usize },
}

/// The request parser: one per connection, reused for every request.
#[derive(Debug)]
pub struct Parser {
    state: State,
    /// The arguments of the current request as `(start, end)` ranges, either of the request's
    /// bytes (multibulk) or of `inline` (inline requests, whose arguments may be unescaped).
    args: Vec<(usize, usize)>,
    /// The unescaped arguments of the current inline request.
    inline: Vec<u8>,
    /// Whether the current request is an inline one.
    is_inline: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser waiting for the first byte of a request.
    pub fn new() -> Parser {
        Parser { state: State::Start, args: Vec::new(), inline: Vec::new(), is_inline: false }
    }

    /// Forgets any partly parsed request.
    pub fn reset(&mut self) {
        self.state = State::Start;
        self.args.clear();
    }

    /// Parses the request at the front of `buf`. After [`Parsed::Incomplete`] the next call
    /// must present the same request from its first byte again (with more bytes after it); the
    /// parser then resumes where it stopped. (Should the caller present something shorter, it
    /// starts over rather than trust stale offsets.)
    pub fn parse(&mut self, buf: &[u8]) -> Result<Parsed, Fatal> {
        let Some(&first) = buf.first() else { return Ok(Parsed::Incomplete) };
        match self.state {
            State::Inline { scanned } if scanned <= buf.len() && first != b'*' => self.parse_inline(buf, scanned),
            State::Multibulk { remaining, pos } if pos <= buf.len() && first == b'*' => {
                self.parse_bulks(buf, remaining, pos)
            }
            _ => {
                self.reset();
                if first == b'*' {
                    self.parse_multibulk(buf)
                } else {
                    self.parse_inline(buf, 0)
                }
            }
        }
    }

    /// The arguments of the request [`Parser::parse`] just returned as [`Parsed::Request`];
    /// `request` must be the bytes of that request (or the buffer it starts).
    pub fn args<'a>(&'a self, request: &'a [u8]) -> Args<'a> {
        let buf = if self.is_inline { &self.inline[..] } else { request };
        Args { buf, ranges: &self.args }
    }

    /// `*<count>\r\n`, then the arguments.
    fn parse_multibulk(&mut self, buf: &[u8]) -> Result<Parsed, Fatal> {
        self.is_inline = false;
        let invalid = || protocol_error("invalid multibulk length");
        let Some((count, pos)) = header(buf, 0).map_err(|()| invalid())? else { return Ok(Parsed::Incomplete) };
        if count <= 0 {
            // Like Redis: `*0` and `*-1` (and any negative count) are empty requests.
            return Ok(Parsed::Skip(pos));
        }
        if count > MAX_MULTIBULK {
            return Err(invalid());
        }
        let count = count as usize;
        self.args.reserve(count.min(MAX_PREALLOC_ARGS));
        self.parse_bulks(buf, count, pos)
    }

    /// `$<len>\r\n<len bytes>\r\n`, `remaining` times from `pos`.
    fn parse_bulks(&mut self, buf: &[u8], mut remaining: usize, mut pos: usize) -> Result<Parsed, Fatal> {
        while remaining > 0 {
            let Some(&kind) = buf.get(pos) else { break };
            if kind != b'$' {
                return Err(protocol_error(&format!("expected '$', got '{}'", kind.escape_ascii())));
            }
            let invalid = || protocol_error("invalid bulk length");
            let Some((len, start)) = header(buf, pos).map_err(|()| invalid())? else { break };
            if !(0..=MAX_BULK).contains(&len) {
                return Err(invalid());
            }
            let end = start.saturating_add(len as usize);
            let Some(crlf) = buf.get(end..end.saturating_add(2)) else { break };
            if crlf != b"\r\n" {
                return Err(protocol_error("expected CRLF after bulk data"));
            }
            self.args.push((start, end));
            pos = end + 2;
            remaining -= 1;
        }
        if remaining > 0 {
            self.state = State::Multibulk { remaining, pos };
            return Ok(Parsed::Incomplete);
        }
        self.state = State::Start;
        Ok(Parsed::Request(pos))
    }

    /// A line ending in `\n` (or `\r\n`), split into arguments like Redis's `sdssplitargs`.
    fn parse_inline(&mut self, buf: &[u8], scanned: usize) -> Result<Parsed, Fatal> {
        self.is_inline = true;
        let Some(newline) = buf[scanned..].iter().position(|&b| b == b'\n').map(|i| scanned + i) else {
            if buf.len() > MAX_INLINE {
                return Err(protocol_error("too big inline request"));
            }
            self.state = State::Inline { scanned: buf.len() };
            return Ok(Parsed::Incomplete);
        };
        self.state = State::Start;
        let line = &buf[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.args.clear();
        self.inline.clear();
        if !split_args(line, &mut self.inline, &mut self.args) {
            return Err(protocol_error("unbalanced quotes in request"));
        }
        Ok(if self.args.is_empty() { Parsed::Skip(newline + 1) } else { Parsed::Request(newline + 1) })
    }
}

/// The `ERR Protocol error: ...` that ends a connection.
fn protocol_error(what: &str) -> Fatal {
    Fatal(format!("ERR Protocol error: {what}"))
}

/// Parses the header line at `pos` (a type byte, a decimal number, `\r\n`). Returns the number
/// and the offset just past the line, `Ok(None)` if the line is not complete yet, `Err` if it
/// is malformed. A number is at most 20 characters, so a line is judged after 21 bytes at the
/// latest, however slowly they arrive.
fn header(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, ()> {
    let digits = buf.get(pos + 1..).unwrap_or_default();
    let window = &digits[..digits.len().min(MAX_NUMBER_LEN + 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() > MAX_NUMBER_LEN { Err(()) } else { Ok(None) };
    };
    match digits.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => parse_i64(&digits[..cr]).map(|n| Some((n, pos + 1 + cr + 2))).ok_or(()),
        Some(_) => Err(()),
    }
}

/// Splits an inline line into arguments the way Redis's `sdssplitargs` does: separated by
/// spaces, tabs, `\r` and `\n`; `"double quotes"` with `\n \r \t \b \a \\ \" \xHH` escapes;
/// `'single quotes'` with `\'`. A closing quote must be followed by a separator or the end.
/// The unescaped arguments are appended to `text` and their ranges to `args`. Returns false on
/// unbalanced quotes.
fn split_args(line: &[u8], text: &mut Vec<u8>, args: &mut Vec<(usize, usize)>) -> bool {
    // Redis works on C strings: a NUL byte ends the line.
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    let ends_arg = |next: Option<&u8>| next.is_none_or(|&b| is_space(b));
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p == line.len() {
            return true;
        }
        let start = text.len();
        let (mut in_double, mut in_single) = (false, false);
        while p < line.len() {
            let c = line[p];
            if in_double {
                match (c, line.get(p + 1)) {
                    (b'\\', Some(b'x')) if line.len() > p + 3 && hex_pair(line[p + 2], line[p + 3]).is_some() => {
                        text.extend(hex_pair(line[p + 2], line[p + 3]));
                        p += 3;
                    }
                    (b'\\', Some(&e)) => {
                        text.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => b'\x08',
                            b'a' => b'\x07',
                            other => other,
                        });
                        p += 1;
                    }
                    (b'"', next) => {
                        if !ends_arg(next) {
                            return false;
                        }
                        in_double = false;
                        p += 1;
                        break;
                    }
                    _ => text.push(c),
                }
            } else if in_single {
                match (c, line.get(p + 1)) {
                    (b'\\', Some(b'\'')) => {
                        text.push(b'\'');
                        p += 1;
                    }
                    (b'\'', next) => {
                        if !ends_arg(next) {
                            return false;
                        }
                        in_single = false;
                        p += 1;
                        break;
                    }
                    _ => text.push(c),
                }
            } else {
                match c {
                    b' ' | b'\t' | b'\n' | b'\r' => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => text.push(c),
                }
            }
            p += 1;
        }
        if in_double || in_single {
            return false; // the line ended inside quotes
        }
        args.push((start, text.len()));
    }
}

/// The byte two hex digits spell.
fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(hi)? * 16 + digit(lo)?) as u8)
}

/// Parses a decimal i64 exactly as Redis's `string2ll` does: an optional `-`, then digits with
/// no leading zero (`0` alone is fine, `-0`, `+1`, ` 1` and `01` are not), no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [] | [b'0', ..] => return None,
        _ if digits.len() > 19 => return None,
        _ => {}
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0'); // 19 digits always fit a u64
    }
    if negative {
        // -(2^63) is the one value whose magnitude does not fit in an i64.
        (n <= i64::MIN.unsigned_abs()).then(|| (n as i64).wrapping_neg())
    } else {
        i64::try_from(n).ok()
    }
}

/// The arguments of one request, the command name first.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are no arguments at all (the parser never yields such a request).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i` (0 is the command name); empty if there is no such argument.
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.ranges.get(i).and_then(|&(start, end)| self.buf.get(start..end)).unwrap_or_default()
    }

    /// The arguments from `from` on.
    pub fn rest(&self, from: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        (from..self.len()).map(|i| self.get(i))
    }
}

/// Appends the decimal digits of `n`.
pub fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Appends the decimal digits of `n`, without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `<kind><n>\r\n`: the integer reply and the bulk and array headers.
fn push_line(out: &mut Vec<u8>, kind: u8, n: i64) {
    out.push(kind);
    push_i64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends a simple string reply, `+OK\r\n` for `"OK"`.
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply; `msg` starts with the error code (`ERR`, `NOPROTO`...). Line breaks
/// in it (it may quote the client's arguments) become spaces, as in Redis.
pub fn error(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend(msg.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer reply, `:<n>\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    push_line(out, b':', n);
}

/// Appends a bulk string reply, `$<len>\r\n<data>\r\n`.
pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    push_line(out, b'$', data.len() as i64);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null bulk reply, `$-1\r\n`.
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header, `*<len>\r\n`; the `len` elements follow.
pub fn array(out: &mut Vec<u8>, len: usize) {
    push_line(out, b'*', len as i64);
}
