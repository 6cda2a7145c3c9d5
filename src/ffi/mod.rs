//! The C API (`src/ffi/include/cport.h`): the port for C, C++, Zig, Python (ctypes), ...
//!
//! Built with the `ffi` feature into a shared or static library by
//! `cargo rustc -p cport --release --features ffi --crate-type cdylib` (or `staticlib`);
//! `examples/c/build.sh` does it. The header documents every function for C readers; the test
//! `ffi_header_matches_the_rust_side` (in `tests.rs` below) checks it against this file.
//!
//! Shape:
//! - a `cport_port *` is one counted reference to a [`Port`] (`cport_port_inc_ref` returns the
//!   same pointer with one more reference; the last `cport_port_dec_ref` tears the port down);
//! - a `cport_isb` is a value: the port's serial number and the stream's slot and generation.
//!   A stale handle (its stream released) or one of another port is an error code, never a
//!   crash or another stream's I/O;
//! - buffers are the caller's memory, lent to the port from the start of an I/O until its
//!   completion (or refusal) is handed back ([`Buf::borrowed`]);
//! - every call returns a `cport_error` (0 is success); the failing call's message is kept per
//!   thread for `cport_last_error`.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::buf::Buf;
use crate::completion::{Completion, Next, Status};
use crate::driver::{self, Driver};
use crate::error::{Error, ErrorKind};
use crate::isb::Isb;
use crate::request::{Kind, Op, Request};
use crate::sys::socket;
use crate::Port;

pub mod compat;
#[cfg(test)]
mod tests;

/// Error classes (`cport_error`). Stable: values are never reused or renumbered.
pub const CPORT_OK: c_int = 0;
/// The side already has an I/O or an untaken completion.
pub const CPORT_EBUSY: c_int = 1;
/// A bad argument: a null pointer, an empty buffer, `min > max`, an unparsable address, an
/// operation the stream does not support, a handle of another port.
pub const CPORT_EINVAL: c_int = 2;
/// The ISB's stream is not assigned (deassigned, closed, or never existed).
pub const CPORT_ENOTASSIGNED: c_int = 3;
/// The port was shut down.
pub const CPORT_ECLOSED: c_int = 4;
/// A deadline passed; from `cport_next_completion`: the wait timed out.
pub const CPORT_ETIMEDOUT: c_int = 5;
/// The I/O was cancelled.
pub const CPORT_ECANCELLED: c_int = 6;
/// The peer reset or hung up the connection.
pub const CPORT_EABANDONED: c_int = 7;
/// A limit was reached.
pub const CPORT_ELIMIT: c_int = 8;
/// The OS reported an error: see the completion's or the call's `errno`.
pub const CPORT_EOS: c_int = 9;
/// From `cport_next_completion`: `cport_wakeup` woke the thread.
pub const CPORT_EWOKEN: c_int = 10;
/// A bug in cport (a Rust panic); the call did nothing it could not undo.
pub const CPORT_EINTERNAL: c_int = 11;

/// Operations (`cport_op`).
pub const CPORT_OP_READ: c_int = 1;
/// A write of a whole buffer.
pub const CPORT_OP_WRITE: c_int = 2;
/// A vectored read.
pub const CPORT_OP_READV: c_int = 3;
/// A vectored write.
pub const CPORT_OP_WRITEV: c_int = 4;
/// An accept.
pub const CPORT_OP_ACCEPT: c_int = 5;
/// A connect.
pub const CPORT_OP_CONNECT: c_int = 6;
/// A close: the stream's last completion.
pub const CPORT_OP_CLOSE: c_int = 7;
/// A post.
pub const CPORT_OP_POST: c_int = 8;

/// How an I/O ended (`cport_status`).
pub const CPORT_STATUS_OK: c_int = 0;
/// End of stream before the read's minimum.
pub const CPORT_STATUS_EOF: c_int = 1;
/// Cancelled (cancel, close, deassign, shutdown).
pub const CPORT_STATUS_CANCELLED: c_int = 2;
/// A deadline or the request's timeout passed.
pub const CPORT_STATUS_TIMED_OUT: c_int = 3;
/// The peer reset or hung up.
pub const CPORT_STATUS_ABANDONED: c_int = 4;
/// The OS reported an error.
pub const CPORT_STATUS_FAILED: c_int = 5;

/// Options of `cport_create_port` (`cport_options`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CportOptions {
    /// Dedicated worker threads (0: none; the threads waiting in `cport_next_completion` do the
    /// I/O, the fastest configuration).
    pub threads: u32,
    /// Reserved, must be 0.
    pub flags: u32,
}

/// A stream handle (`cport_isb`): the port's serial number and the stream's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CportIsb {
    /// The serial number of the port (never 0 for a real handle).
    pub port: u64,
    /// The stream's slot and generation in the port.
    pub stream: u64,
}

/// A finished operation (`cport_completion`).
#[repr(C)]
#[derive(Debug)]
pub struct CportCompletion {
    /// The user pointer given at assign (or the post's).
    pub user: *mut c_void,
    /// The stream (all zero for a post).
    pub isb: CportIsb,
    /// A `CPORT_OP_*`.
    pub op: c_int,
    /// A `CPORT_STATUS_*`.
    pub status: c_int,
    /// Bytes transferred.
    pub bytes: usize,
    /// The buffer of a read or write, handed back (NULL for other operations and vectored I/O).
    pub buf: *mut c_void,
    /// Its length as given.
    pub buf_len: usize,
    /// The error class of a failed I/O (`CPORT_OK` if it succeeded).
    pub error: c_int,
    /// The OS error number of a failed I/O, or 0.
    pub os_error: c_int,
    /// A post's value; for an accept, how many accepts of its series are still to start.
    pub value: u64,
    /// An accept's new connection, an fd the caller now owns (assign it, or close it); -1
    /// otherwise.
    pub accepted_fd: c_int,
}

/// Serial numbers of ports, so that a handle of one port is never taken for another's.
static PORT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// What a `cport_port *` points to.
pub struct CportPort {
    /// Catches most pointers that are not ports (not all: any other pointer is undefined
    /// behaviour, as the header says).
    magic: u64,
    serial: u64,
    refs: AtomicUsize,
    port: Port,
}

const MAGIC: u64 = 0x6370_6f72_745f_6666; // "cport_ff"

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// `cport_next_completions`' vector, kept between calls.
    static BATCH: RefCell<Vec<Completion>> = const { RefCell::new(Vec::new()) };
}

fn set_last(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

fn class(kind: ErrorKind) -> c_int {
    match kind {
        ErrorKind::Busy => CPORT_EBUSY,
        ErrorKind::InvalidInput => CPORT_EINVAL,
        ErrorKind::NotAssigned => CPORT_ENOTASSIGNED,
        ErrorKind::PortClosed => CPORT_ECLOSED,
        ErrorKind::TimedOut => CPORT_ETIMEDOUT,
        ErrorKind::Cancelled => CPORT_ECANCELLED,
        ErrorKind::Abandoned => CPORT_EABANDONED,
        ErrorKind::LimitExceeded => CPORT_ELIMIT,
        _ => CPORT_EOS,
    }
}

/// Records `e` as this thread's last error and returns its class (and sets `errno`).
fn fail(e: &Error) -> c_int {
    set_last(&format!("{e:#}"));
    if let Some(code) = e.raw_os_error() {
        // SAFETY: `__errno_location` returns this thread's errno, always valid to write.
        unsafe { *libc::__errno_location() = code };
    }
    class(e.kind())
}

fn invalid(msg: &str) -> c_int {
    fail(&Error::invalid(msg.to_string()))
}

/// Runs `f`, turning a panic into `CPORT_EINTERNAL`.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_last("internal error in cport (a panic); please report it");
        CPORT_EINTERNAL
    })
}

/// Runs `f` on the port behind `port` (an error class if there is none), turning a panic
/// into `CPORT_EINTERNAL`.
///
/// # Safety
/// As `port_of`.
unsafe fn on_port(port: *const CportPort, f: impl FnOnce(&CportPort) -> c_int) -> c_int {
    guard(|| {
        // SAFETY: the caller's promise.
        match unsafe { port_of(port) } {
            Ok(p) => f(p),
            Err(e) => e,
        }
    })
}

/// The port behind `p`, or why not.
///
/// # Safety
/// `p` is null or a pointer `cport_create_port` returned whose references are not all gone.
unsafe fn port_of<'a>(p: *const CportPort) -> Result<&'a CportPort, c_int> {
    // SAFETY: the caller's promise; null is checked first.
    match unsafe { p.as_ref() } {
        Some(port) if port.magic == MAGIC => Ok(port),
        Some(_) => Err(invalid("not a cport_port")),
        None => Err(invalid("null cport_port")),
    }
}

impl CportPort {
    fn isb(&self, h: CportIsb, what: &str) -> Result<Isb, c_int> {
        if h.port != self.serial {
            return Err(invalid(&format!("{what}: the ISB belongs to another port (or is not an ISB)")));
        }
        self.port.isb_of(h.stream).ok_or_else(|| {
            fail(&Error::new(ErrorKind::NotAssigned, format!("{what}: the ISB's stream is not assigned")))
        })
    }

    fn handle(&self, isb: &Isb) -> CportIsb {
        CportIsb { port: self.serial, stream: isb.key() }
    }
}

fn write_out<T>(out: *mut T, v: T) -> Result<(), c_int> {
    if out.is_null() {
        return Err(invalid("null output pointer"));
    }
    // SAFETY: not null; the header asks for a pointer to writable memory for one `T`.
    unsafe { out.write(v) };
    Ok(())
}

fn text<'a>(s: *const c_char, what: &str) -> Result<&'a str, c_int> {
    if s.is_null() {
        return Err(invalid(&format!("{what}: null string")));
    }
    // SAFETY: not null; the header asks for a NUL-terminated string.
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| invalid(&format!("{what}: not UTF-8")))
}

fn status(s: Status) -> c_int {
    match s {
        Status::Ok => CPORT_STATUS_OK,
        Status::Eof => CPORT_STATUS_EOF,
        Status::Cancelled => CPORT_STATUS_CANCELLED,
        Status::TimedOut => CPORT_STATUS_TIMED_OUT,
        Status::Abandoned => CPORT_STATUS_ABANDONED,
        Status::Failed => CPORT_STATUS_FAILED,
    }
}

fn op(o: Op) -> c_int {
    match o {
        Op::Read => CPORT_OP_READ,
        Op::Write => CPORT_OP_WRITE,
        Op::ReadVectored => CPORT_OP_READV,
        Op::WriteVectored => CPORT_OP_WRITEV,
        Op::Accept => CPORT_OP_ACCEPT,
        Op::Connect => CPORT_OP_CONNECT,
        Op::Close => CPORT_OP_CLOSE,
        Op::Post => CPORT_OP_POST,
        // Not reachable from C: timers and signals have no C calls.
        Op::Timer => CPORT_OP_POST,
        Op::Signal => CPORT_OP_READ,
        // Not reachable from C: recv_from and send_to have no C calls.
        Op::RecvFrom => CPORT_OP_READ,
        Op::SendTo => CPORT_OP_WRITE,
    }
}

fn to_c(port: &CportPort, mut c: Completion) -> CportCompletion {
    let (error, os_error) = match c.result() {
        Ok(_) => (CPORT_OK, 0),
        Err(e) => (class(e.kind()), e.raw_os_error().unwrap_or(0)),
    };
    let accepted_fd = c.take_accepted().and_then(|a| a.into_driver().into_fd()).map_or(-1, IntoRawFd::into_raw_fd);
    let (buf, buf_len) = match c.buf.take() {
        Some(Buf::Borrowed(b)) => (b.ptr().as_ptr().cast(), b.len()),
        _ => (std::ptr::null_mut(), 0),
    };
    CportCompletion {
        user: c.token() as usize as *mut c_void,
        isb: c.isb().map_or_else(CportIsb::default, |i| port.handle(i)),
        op: op(c.op()),
        status: status(c.status()),
        bytes: c.bytes(),
        buf,
        buf_len,
        error,
        os_error,
        value: c.value(),
        accepted_fd,
    }
}

/// The driver for an fd: a stream, listener or datagram socket, else a plain fd.
fn driver_for(fd: OwnedFd) -> Box<dyn Driver> {
    use socket2::{Domain, Type};
    use std::os::fd::AsFd;
    let kind = socket::socket_kind(fd.as_fd()).ok();
    match kind {
        Some(k) if k.ty == Type::STREAM && k.listening && k.domain == Domain::UNIX => {
            Box::new(driver::UnixListener::from_fd(fd))
        }
        Some(k) if k.ty == Type::STREAM && k.listening => Box::new(driver::TcpListener::from_fd(fd)),
        Some(k) if k.ty == Type::STREAM && k.domain == Domain::UNIX => Box::new(driver::UnixStream::from_fd(fd)),
        Some(k) if k.ty == Type::STREAM => Box::new(driver::TcpStream::from_fd(fd)),
        Some(k) if k.ty == Type::DGRAM && k.is_inet() => Box::new(driver::UdpSocket::new(fd.into())),
        _ => Box::new(driver::Fd::new(fd)),
    }
}

// ---- the port ----

/// Creates a port; NULL on failure (see `cport_last_error`).
///
/// # Safety
/// `options` is null or points to a `cport_options`.
#[no_mangle]
pub unsafe extern "C" fn cport_create_port(options: *const CportOptions) -> *mut CportPort {
    let made = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's promise; null means the defaults.
        let o = unsafe { options.as_ref() }.copied().unwrap_or_default();
        if o.flags != 0 {
            invalid("cport_create_port: flags must be 0");
            return std::ptr::null_mut();
        }
        match Port::builder().threads(o.threads as usize).c_tokens().build() {
            Ok(port) => Box::into_raw(Box::new(CportPort {
                magic: MAGIC,
                serial: PORT_SERIAL.fetch_add(1, Ordering::Relaxed),
                refs: AtomicUsize::new(1),
                port,
            })),
            Err(e) => {
                fail(&e);
                std::ptr::null_mut()
            }
        }
    }));
    made.unwrap_or(std::ptr::null_mut())
}

/// One more reference to `port`; returns `port` (NULL if it is not a port).
///
/// # Safety
/// As `port_of`.
#[no_mangle]
pub unsafe extern "C" fn cport_port_inc_ref(port: *mut CportPort) -> *mut CportPort {
    // SAFETY: the caller's promise.
    match unsafe { port_of(port) } {
        Ok(p) => {
            p.refs.fetch_add(1, Ordering::Relaxed);
            port
        }
        Err(_) => std::ptr::null_mut(),
    }
}

/// Drops one reference; the last one shuts the port down and frees it.
///
/// # Safety
/// As `port_of`; `port` is not used by this caller afterwards.
#[no_mangle]
pub unsafe extern "C" fn cport_port_dec_ref(port: *mut CportPort) {
    // SAFETY: the caller's promise.
    let Ok(p) = (unsafe { port_of(port) }) else { return };
    if p.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the last reference: made by `Box::into_raw` in `cport_create_port`, and
            // nobody else may use it now.
            let mut owned = unsafe { Box::from_raw(port) };
            // A pointer used after this is undefined behaviour, but the magic check then most
            // likely refuses it rather than using freed memory as a port. Volatile: a plain
            // store right before the free may be optimised away.
            // SAFETY: a valid, exclusive place (the box is ours).
            unsafe { std::ptr::write_volatile(&mut owned.magic, 0) };
            owned.port.shutdown();
            drop(owned);
        }));
    }
}

/// Shuts the port down (see the header).
///
/// # Safety
/// As `port_of`.
#[no_mangle]
pub unsafe extern "C" fn cport_shutdown(port: *mut CportPort) -> c_int {
    let run = |p: &CportPort| {
        p.port.shutdown();
        CPORT_OK
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

/// Wakes one waiter.
///
/// # Safety
/// As `port_of`.
#[no_mangle]
pub unsafe extern "C" fn cport_wakeup(port: *mut CportPort) -> c_int {
    let run = |p: &CportPort| {
        p.port.wakeup();
        CPORT_OK
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

/// Posts a user completion.
///
/// # Safety
/// As `port_of`.
#[no_mangle]
pub unsafe extern "C" fn cport_post(port: *mut CportPort, user: *mut c_void, value: u64) -> c_int {
    let run = |p: &CportPort| match p.port.post(user as usize as u64, value) {
        Ok(()) => CPORT_OK,
        Err(e) => fail(&e),
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

// ---- streams ----

/// Assigns an fd; the port owns it from now on.
///
/// # Safety
/// As `port_of`; `out` points to a writable `cport_isb`.
#[no_mangle]
pub unsafe extern "C" fn cport_assign_fd(
    port: *mut CportPort,
    fd: c_int,
    user: *mut c_void,
    out: *mut CportIsb,
) -> c_int {
    guard(|| {
        if fd < 0 {
            return invalid(&format!("cport_assign_fd: bad fd {fd}"));
        }
        // SAFETY: the header says the port takes ownership of `fd`, an open fd the caller
        // owns and will not close, from the call on, whatever it returns (so it is taken first:
        // a failure below closes it).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the caller's promise.
        let p = match unsafe { port_of(port) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        if out.is_null() {
            keep_or_close(p, owned);
            return invalid("cport_assign_fd: null output pointer");
        }
        match p.port.assign_or_return(driver_for(owned), user as usize as u64) {
            Ok(isb) => write_out(out, p.handle(&isb)).map_or_else(|e| e, |()| CPORT_OK),
            Err((e, returned)) => {
                if let Some(fd) = returned.and_then(|d| d.into_fd()) {
                    keep_or_close(p, fd);
                }
                fail(&e)
            }
        }
    })
}

/// The fd of a refused `cport_assign_fd`: closed (the port owns it from the call on), unless
/// one of the port's streams has it (the same fd assigned twice, or late after a shutdown):
/// then it stays open for that stream.
fn keep_or_close(p: &CportPort, fd: OwnedFd) {
    if p.port.holds_fd(std::os::fd::AsRawFd::as_raw_fd(&fd)) {
        let _ = fd.into_raw_fd();
    }
}

/// Binds a listener to `addr` ("host:port"; "unix:PATH" for a Unix socket) and assigns it.
///
/// # Safety
/// As `port_of`; `addr` is a NUL-terminated string; `out` points to a writable `cport_isb`.
#[no_mangle]
pub unsafe extern "C" fn cport_listen(
    port: *mut CportPort,
    addr: *const c_char,
    user: *mut c_void,
    out: *mut CportIsb,
) -> c_int {
    // Nothing of a listener completes before an accept is started: the handle is written after.
    let unix: MakeStream<&str> = |p, a, t, made| p.listen_unix(a, t).inspect(made);
    let ip: MakeStream<std::net::SocketAddr> = |p, a, t, made| p.listen(a, t).inspect(made);
    // SAFETY: the caller's promise.
    unsafe { new_stream(port, addr, user, out, "cport_listen", unix, ip) }
}

/// Starts a connect to `addr` ("host:port"; "unix:PATH"); its completion (`CPORT_OP_CONNECT`)
/// comes on the new stream.
///
/// # Safety
/// As `cport_listen`.
#[no_mangle]
pub unsafe extern "C" fn cport_connect(
    port: *mut CportPort,
    addr: *const c_char,
    user: *mut c_void,
    out: *mut CportIsb,
) -> c_int {
    // The handle is written before the connect starts: a thread may take its completion (and
    // free the block holding `*out` on the stream's CLOSE) before this call returns.
    let unix: MakeStream<&str> = |p, a, t, made| p.connect_unix_then(a.as_ref(), t, made);
    let ip: MakeStream<std::net::SocketAddr> = |p, a, t, made| p.connect_then(a, t, made);
    // SAFETY: the caller's promise.
    unsafe { new_stream(port, addr, user, out, "cport_connect", unix, ip) }
}

/// Makes a stream at an address and calls the last argument with its ISB as soon as it exists
/// (before anything of it can complete).
type MakeStream<A> = fn(&Port, A, u64, &mut dyn FnMut(&Isb)) -> crate::Result<Isb>;

/// `cport_listen` and `cport_connect`: a new stream at `addr`, made by `unix` for
/// "unix:PATH" and by `ip` for "host:port". `*out` is written as soon as the stream exists
/// (see `MakeStream`), and zeroed again if the call then fails.
///
/// # Safety
/// As `cport_listen`.
unsafe fn new_stream(
    port: *mut CportPort,
    addr: *const c_char,
    user: *mut c_void,
    out: *mut CportIsb,
    what: &str,
    unix: MakeStream<&str>,
    ip: MakeStream<std::net::SocketAddr>,
) -> c_int {
    let run = |p: &CportPort| {
        if out.is_null() {
            // Checked before anything is made: a refused call binds and starts nothing.
            return invalid(&format!("{what}: null output pointer"));
        }
        let addr = match text(addr, what) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let mut written = false;
        let mut publish = |isb: &Isb| {
            // SAFETY: not null (checked above); the header asks for a writable `cport_isb`.
            unsafe { out.write(p.handle(isb)) };
            written = true;
        };
        let made = match addr.strip_prefix("unix:") {
            Some(path) => unix(&p.port, path, user as usize as u64, &mut publish),
            None => match parse_addr(addr) {
                Ok(a) => ip(&p.port, a, user as usize as u64, &mut publish),
                Err(e) => return e,
            },
        };
        match made {
            Ok(_) => CPORT_OK,
            Err(e) => {
                if written {
                    // Refused after the stream was made (a shutdown began): it was released
                    // without a completion, so nobody else has seen the handle.
                    // SAFETY: as above.
                    unsafe { out.write(CportIsb::default()) };
                }
                fail(&e)
            }
        }
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

fn parse_addr(addr: &str) -> Result<std::net::SocketAddr, c_int> {
    use std::net::ToSocketAddrs;
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Ok(a),
        _ => Err(invalid(&format!("not an address: {addr:?} (want host:port, or unix:PATH)"))),
    }
}

/// Writes the local address of the stream's socket as text into `buf` (NUL-terminated).
///
/// # Safety
/// As `port_of`; `buf` points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_local_addr(port: *mut CportPort, isb: CportIsb, buf: *mut c_char, len: usize) -> c_int {
    let run = |p: &CportPort| {
        if buf.is_null() {
            return invalid("cport_local_addr: null buffer");
        }
        let isb = match p.isb(isb, "cport_local_addr") {
            Ok(i) => i,
            Err(e) => return e,
        };
        let a = match isb.local_addr() {
            Ok(a) => a.to_string(),
            Err(e) => return fail(&e),
        };
        if len <= a.len() {
            return invalid(&format!("cport_local_addr: the buffer needs {} bytes, not {len}", a.len() + 1));
        }
        // SAFETY: `buf` has `len > a.len()` writable bytes (the caller's promise, checked size).
        unsafe {
            std::ptr::copy_nonoverlapping(a.as_ptr(), buf.cast(), a.len());
            *buf.add(a.len()) = 0;
        }
        CPORT_OK
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

/// Runs `f` on the port and the ISB, or returns why not.
///
/// # Safety
/// As `port_of`.
unsafe fn on_isb(port: *mut CportPort, isb: CportIsb, what: &str, f: impl FnOnce(&CportPort, Isb) -> c_int) -> c_int {
    let run = |p: &CportPort| match p.isb(isb, what) {
        Ok(i) => f(p, i),
        Err(e) => e,
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

fn started(r: std::result::Result<(), crate::StartError>) -> c_int {
    match r {
        Ok(()) => CPORT_OK,
        // The request, with the caller's memory, is dropped here: nothing is freed.
        Err(e) => fail(e.error()),
    }
}

/// One borrowed buffer, or why not.
fn lend(buf: *mut c_void, len: usize, what: &str) -> Result<Buf, c_int> {
    let Some(ptr) = NonNull::new(buf.cast::<u8>()) else {
        return Err(invalid(&format!("{what}: null buffer")));
    };
    if len == 0 || len > isize::MAX as usize {
        return Err(invalid(&format!("{what}: bad buffer length {len}")));
    }
    // SAFETY: the header's contract: `len` bytes at `buf` stay valid and untouched by the
    // caller until the completion (or the refusal returned here) hands them back.
    Ok(unsafe { Buf::borrowed(ptr, len) })
}

/// Starts a read of `min..=max` bytes into `buf`.
///
/// # Safety
/// As `port_of`; `buf` has `max` bytes, lent to the port until the read's completion.
#[no_mangle]
pub unsafe extern "C" fn cport_read(
    port: *mut CportPort,
    isb: CportIsb,
    buf: *mut c_void,
    min: usize,
    max: usize,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_read", |p, i| match lend(buf, max, "cport_read") {
            Ok(buf) => started(p.port.start_io(&i, Request::new(Kind::Read { buf, min, max }))),
            Err(e) => e,
        })
    }
}

/// Starts a write of `len` bytes from `buf`.
///
/// # Safety
/// As `port_of`; `buf` has `len` bytes, lent to the port until the write's completion.
#[no_mangle]
pub unsafe extern "C" fn cport_write(port: *mut CportPort, isb: CportIsb, buf: *const c_void, len: usize) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_write", |p, i| match lend(buf.cast_mut(), len, "cport_write") {
            Ok(buf) => started(p.port.start_io(&i, Request::new(Kind::Write { buf }))),
            Err(e) => e,
        })
    }
}

/// Starts `req` on `i` like `start_io_inline`: `*done` gets the completion of an I/O that
/// finished at once, or `op` 0 when it is pending.
fn start_inline(p: &CportPort, i: &Isb, req: Request, done: *mut CportCompletion, what: &str) -> c_int {
    if done.is_null() {
        return invalid(&format!("{what}: null completion pointer"));
    }
    // `op` 0 ("pending") is written before the I/O starts: once it is pending, another thread
    // may take its completion, and free the memory `done` points into, before this returns.
    // SAFETY: `done` is not null and points to a writable `cport_completion` (the header's
    // contract); only its `op` is promised, so only `op` is written.
    unsafe { std::ptr::addr_of_mut!((*done).op).write(0) };
    match p.port.start_io_inline(i, req) {
        // Finished at once: handed back here, never queued, so nobody else has seen it.
        Ok(Some(c)) => write_out(done, to_c(p, c)).map_or_else(|e| e, |()| CPORT_OK),
        Ok(None) => CPORT_OK,
        Err(e) => fail(e.error()),
    }
}

/// `cport_read` that hands back a read that finished at once in `*done` instead of queueing
/// it (`done->op` 0: pending).
///
/// # Safety
/// As `cport_read`; `done` points to a writable `cport_completion`.
#[no_mangle]
pub unsafe extern "C" fn cport_read_inline(
    port: *mut CportPort,
    isb: CportIsb,
    buf: *mut c_void,
    min: usize,
    max: usize,
    done: *mut CportCompletion,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_read_inline", |p, i| match lend(buf, max, "cport_read_inline") {
            Ok(buf) => start_inline(p, &i, Request::new(Kind::Read { buf, min, max }), done, "cport_read_inline"),
            Err(e) => e,
        })
    }
}

/// `cport_write` that hands back a write that finished at once in `*done` (`done->op` 0:
/// pending).
///
/// # Safety
/// As `cport_write`; `done` points to a writable `cport_completion`.
#[no_mangle]
pub unsafe extern "C" fn cport_write_inline(
    port: *mut CportPort,
    isb: CportIsb,
    buf: *const c_void,
    len: usize,
    done: *mut CportCompletion,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_write_inline", |p, i| match lend(buf.cast_mut(), len, "cport_write_inline") {
            Ok(buf) => start_inline(p, &i, Request::new(Kind::Write { buf }), done, "cport_write_inline"),
            Err(e) => e,
        })
    }
}

fn lend_all(iov: *const libc::iovec, n: c_int, what: &str) -> Result<Vec<Buf>, c_int> {
    if iov.is_null() || n <= 0 || n > 1024 {
        return Err(invalid(&format!("{what}: bad iovec array ({n} entries)")));
    }
    // SAFETY: the header asks for `n` readable iovecs at `iov`; they are copied now.
    let iov = unsafe { std::slice::from_raw_parts(iov, n as usize) };
    iov.iter().filter(|v| v.iov_len > 0).map(|v| lend(v.iov_base, v.iov_len, what)).collect()
}

/// Starts a vectored read of at least `min` bytes.
///
/// # Safety
/// As `port_of`; `iov` points to `n` iovecs (copied during the call) whose memory is lent to
/// the port until the read's completion.
#[no_mangle]
pub unsafe extern "C" fn cport_readv(
    port: *mut CportPort,
    isb: CportIsb,
    iov: *const libc::iovec,
    n: c_int,
    min: usize,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_readv", |p, i| match lend_all(iov, n, "cport_readv") {
            Ok(bufs) => started(p.port.start_io(&i, Request::new(Kind::ReadVectored { bufs, min }))),
            Err(e) => e,
        })
    }
}

/// Starts a vectored write of every byte.
///
/// # Safety
/// As `cport_readv`.
#[no_mangle]
pub unsafe extern "C" fn cport_writev(port: *mut CportPort, isb: CportIsb, iov: *const libc::iovec, n: c_int) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_writev", |p, i| match lend_all(iov, n, "cport_writev") {
            Ok(bufs) => started(p.port.start_io(&i, Request::new(Kind::WriteVectored { bufs }))),
            Err(e) => e,
        })
    }
}

/// Starts `n` accepts, one after another (`n` = 1: one accept).
///
/// # Safety
/// As `port_of`.
#[no_mangle]
pub unsafe extern "C" fn cport_accept(port: *mut CportPort, isb: CportIsb, n: usize) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { on_isb(port, isb, "cport_accept", |p, i| started(p.port.accept_many(&i, n))) }
}

/// Closes the stream: pending I/O cancelled, then a `CPORT_OP_CLOSE` completion, its last.
///
/// # Safety
/// As `port_of`.
#[no_mangle]
pub unsafe extern "C" fn cport_close(port: *mut CportPort, isb: CportIsb) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_close", |p, i| match p.port.close(&i) {
            Ok(()) => CPORT_OK,
            Err(e) => fail(&e),
        })
    }
}

/// Cancels the stream's pending I/O; `*cancelled` (if not NULL) gets how many.
///
/// # Safety
/// As `port_of`; `cancelled` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cport_cancel(port: *mut CportPort, isb: CportIsb, cancelled: *mut usize) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_cancel", |p, i| match p.port.cancel(&i) {
            Ok(n) if cancelled.is_null() => {
                let _ = n;
                CPORT_OK
            }
            Ok(n) => write_out(cancelled, n).map_or_else(|e| e, |()| CPORT_OK),
            Err(e) => fail(&e),
        })
    }
}

/// Sets the stream's deadline `timeout_ms` from now (negative: none).
///
/// # Safety
/// As `port_of`.
#[no_mangle]
pub unsafe extern "C" fn cport_set_timeout(port: *mut CportPort, isb: CportIsb, timeout_ms: i64) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_set_timeout", |p, i| {
            let after = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            match p.port.set_timeout(&i, after) {
                Ok(()) => CPORT_OK,
                Err(e) => fail(&e),
            }
        })
    }
}

/// Deassigns the stream; with `fd` not NULL, hands its fd back in `*fd` instead of closing it.
///
/// # Safety
/// As `port_of`; `fd` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cport_deassign(port: *mut CportPort, isb: CportIsb, fd: *mut c_int) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        on_isb(port, isb, "cport_deassign", |p, i| {
            if fd.is_null() {
                return p.port.deassign(&i).map_or_else(|e| fail(&e), |()| CPORT_OK);
            }
            match p.port.deassign_fd(&i) {
                Ok(owned) => write_out(fd, owned.into_raw_fd()).map_or_else(|e| e, |()| CPORT_OK),
                Err(e) => fail(&e),
            }
        })
    }
}

// ---- completions ----

/// Waits for a completion, at most `timeout_ms` (negative: no limit).
///
/// # Safety
/// As `port_of`; `out` points to a writable `cport_completion`.
#[no_mangle]
pub unsafe extern "C" fn cport_next_completion(
    port: *mut CportPort,
    timeout_ms: c_int,
    out: *mut CportCompletion,
) -> c_int {
    let run = |p: &CportPort| {
        if out.is_null() {
            return invalid("cport_next_completion: null output pointer");
        }
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        match p.port.next(timeout) {
            Ok(Next::Completion(c)) => write_out(out, to_c(p, c)).map_or_else(|e| e, |()| CPORT_OK),
            Ok(Next::Woken) => CPORT_EWOKEN,
            Ok(Next::TimedOut) => CPORT_ETIMEDOUT,
            Err(e) => fail(&e),
        }
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

/// Waits like `cport_next_completion` for the first completion, then takes up to `max` in all
/// without waiting; `*count` gets how many were written to `out`.
///
/// # Safety
/// As `port_of`; `out` points to `max` writable `cport_completion`s; `count` is writable.
#[no_mangle]
pub unsafe extern "C" fn cport_next_completions(
    port: *mut CportPort,
    timeout_ms: c_int,
    out: *mut CportCompletion,
    max: usize,
    count: *mut usize,
) -> c_int {
    if !count.is_null() {
        // Every return but CPORT_OK leaves 0 here, whatever failed (a NULL port too).
        // SAFETY: not null; the header asks for a writable `size_t`.
        unsafe { count.write(0) };
    }
    let run = |p: &CportPort| {
        if out.is_null() || count.is_null() || max == 0 {
            return invalid("cport_next_completions: null pointer or max 0");
        }
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        // The thread's batch vector, reused: no allocation per call once it has grown.
        let mut got = BATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let r = p.port.next_batch(&mut got, max, timeout);
        let n = got.len();
        for (k, c) in got.drain(..).enumerate() {
            // SAFETY: `k < n <= max`, inside the caller's array.
            unsafe { out.add(k).write(to_c(p, c)) };
        }
        BATCH.with(|b| *b.borrow_mut() = got);
        // SAFETY: checked not null above.
        unsafe { count.write(n) };
        match r {
            Ok(Ok(_)) => CPORT_OK,
            Ok(Err(Next::Woken)) => CPORT_EWOKEN,
            Ok(Err(_)) => CPORT_ETIMEDOUT,
            Err(e) => fail(&e),
        }
    };
    // SAFETY: the caller's promise.
    unsafe { on_port(port, run) }
}

// ---- errors ----

/// A static description of an error class.
#[no_mangle]
pub extern "C" fn cport_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        CPORT_OK => c"success",
        CPORT_EBUSY => c"the stream's side already has an I/O or an untaken completion",
        CPORT_EINVAL => c"invalid argument",
        CPORT_ENOTASSIGNED => c"the stream is not assigned",
        CPORT_ECLOSED => c"the port was shut down",
        CPORT_ETIMEDOUT => c"timed out",
        CPORT_ECANCELLED => c"cancelled",
        CPORT_EABANDONED => c"the peer reset or hung up the connection",
        CPORT_ELIMIT => c"a limit was reached",
        CPORT_EOS => c"the operating system reported an error (see errno)",
        CPORT_EWOKEN => c"woken by cport_wakeup",
        CPORT_EINTERNAL => c"internal error in cport",
        _ => c"unknown cport error code",
    };
    s.as_ptr()
}

/// The message of the last call that failed on this thread ("" if none).
#[no_mangle]
pub extern "C" fn cport_last_error() -> *const c_char {
    // The CString lives in this thread's slot until this thread's next failing call.
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}
