//! `completion_port.h`: the `completion_port_*` calls of the epoll module cport grew from, with
//! their callbacks and OK / ERROR / ABANDONED results, on top of a [`Port`]. A program written
//! against that module links against this one instead.
//!
//! Shape: one port with one thread of its own that waits in `next_completion` (doing the I/O
//! itself) and runs every callback, one at a time, as the original's worker did. The caller
//! keeps its socket: the port works on a duplicate, closed by `completion_port_remove` or the
//! last `completion_port_dec_ref`. Unlike the original, every accepted request ends in exactly
//! one callback: a request still pending when its socket is removed or the port goes gets
//! `COMPLETION_PORT_CLOSING`.
//!
//! Hang-up watches (`EPOLLRDHUP`) live in an epoll instance of their own, which the port
//! watches as one more stream (`Watches`, a driver whose read is a nonblocking `epoll_wait`):
//! a watched socket fires there on the peer's hang-up even with no receive pending.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::{driver_for, lend, set_last};
use crate::completion::{Completion, Status};
use crate::driver::Driver;
use crate::error::ErrorKind;
use crate::isb::Isb;
use crate::request::{Kind, Op, Request};
use crate::Port;

/// A socket, as the original API names it.
pub type SocketHandle = c_int;

/// The callback of one request: `(context, action, result, amount transferred)`.
pub type OnEventComplete = Option<unsafe extern "C" fn(*mut c_void, c_int, c_int, i32)>;

/// Actions (the callback's second argument).
pub const COMPLETION_PORT_EPOLL_EPOLLRDHUP: c_int = 0;
/// A receive finished.
pub const COMPLETION_PORT_EPOLL_EPOLLIN: c_int = 1;
/// A send finished.
pub const COMPLETION_PORT_EPOLL_EPOLLOUT: c_int = 2;
/// The request ended unfinished: its socket was removed or the port went away.
pub const COMPLETION_PORT_CLOSING: c_int = 3;

/// Results (the callback's third argument).
pub const COMPLETION_PORT_RESULT_OK: c_int = 0;
/// The OS reported an error.
pub const COMPLETION_PORT_RESULT_ERROR: c_int = 1;
/// The peer hung up or reset, or the request was ended by remove or teardown.
pub const COMPLETION_PORT_RESULT_ABANDONED: c_int = 2;

/// A buffer of the caller's, lent until the request's callback.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EpollBufferData {
    /// The memory.
    pub buffer: *mut c_void,
    /// Its length in bytes.
    pub length: u32,
}

/// One request for `completion_port_add`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CompletionPortIngressData {
    /// `EPOLLIN` (receive into the buffer), `EPOLLOUT` (send all of it) or `EPOLLRDHUP`
    /// (tell when the peer hangs up).
    pub epoll_op: c_int,
    /// The caller's socket (it stays the caller's).
    pub socket: SocketHandle,
    /// Called once when the request ends.
    pub event_callback: OnEventComplete,
    /// Its first argument.
    pub event_callback_ctx: *mut c_void,
    /// The buffer of a receive or send.
    pub buffer_data: EpollBufferData,
}

/// A callback and its context, called on the port's thread.
#[derive(Clone, Copy)]
struct Callback {
    f: unsafe extern "C" fn(*mut c_void, c_int, c_int, i32),
    ctx: *mut c_void,
}

// SAFETY: the header asks that a context may be used from the port's thread; it is only
// passed back to the callback there.
unsafe impl Send for Callback {}

impl Callback {
    fn call(self, action: c_int, result: c_int, amount: i32) {
        // SAFETY: a callback the caller gave, called with its own context, as documented.
        unsafe { (self.f)(self.ctx, action, result, amount) }
    }
}

/// One socket's requests.
#[derive(Default)]
struct Entry {
    receive: Option<Callback>,
    send: Option<Callback>,
    hangup: Option<Callback>,
    /// The hang-up watch's own duplicate of the socket, registered in the watch epoll.
    watch: Option<OwnedFd>,
    removed: bool,
}

impl Entry {
    fn finished(&self) -> bool {
        self.removed && self.receive.is_none() && self.send.is_none() && self.hangup.is_none()
    }
}

/// What the port knows of one of the caller's sockets.
struct Known {
    token: u64,
    /// The stream of the port's duplicate.
    isb: Isb,
    /// The socket's identity (device and inode), to tell it from a new socket that got the
    /// same number after the caller closed it without `completion_port_remove`.
    id: (u64, u64),
}

#[derive(Default)]
struct Table {
    /// The caller's socket -> the stream of its duplicate.
    sockets: HashMap<c_int, Known>,
    /// Stream token -> requests. An entry outlives its socket's removal until its last
    /// callback ran.
    entries: HashMap<u64, Entry>,
    next_token: u64,
    /// The last reference went: requests are refused, removes do nothing.
    closed: bool,
}

struct Shared {
    port: Port,
    table: Mutex<Table>,
    /// The epoll instance of the hang-up watches (its events carry the sockets' tokens) and
    /// the port's stream that watches it.
    watches: Arc<OwnedFd>,
    watches_isb: Isb,
    /// The handle, when its last reference was dropped by a callback: freed by the port's
    /// thread once it has run its last callback, so that later callbacks may still pass it.
    orphan: Mutex<Option<Orphan>>,
}

/// A `CompletionPort` box left to the port's thread.
struct Orphan(*mut CompletionPort);

// SAFETY: the box is only freed, once, by the port's thread.
unsafe impl Send for Orphan {}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // A callback never runs under the lock, so a poisoned lock only means a panic in
        // this file's own bookkeeping: keep going with the table as it is.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The port's thread: takes completions and runs their callbacks until the port is
    /// shut down and drained, then ends the hang-up watches left.
    fn run(&self) {
        loop {
            match self.port.next_completion(None) {
                Ok(Some(c)) => {
                    // A panic here is a bug of this file; the thread keeps serving the others.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.dispatch(c))).is_err() {
                        set_last("completion port thread: internal error (a panic); please report it");
                    }
                }
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::PortClosed => break,
                Err(e) => {
                    set_last(&format!("completion port thread: {e:#}"));
                    break;
                }
            }
        }
        let left: Vec<Callback> = {
            let mut t = self.table();
            t.closed = true;
            t.sockets.clear();
            let entries: Vec<Entry> = t.entries.drain().map(|(_, e)| e).collect();
            entries
                .into_iter()
                .flat_map(|mut e| {
                    self.unwatch(e.watch.take());
                    [e.receive, e.send, e.hangup]
                })
                .flatten()
                .collect()
        };
        for cb in left {
            cb.call(COMPLETION_PORT_CLOSING, COMPLETION_PORT_RESULT_ABANDONED, 0);
        }
        let orphan = self.orphan.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Orphan(cp)) = orphan {
            // SAFETY: the box whose last reference a callback dropped; nothing runs after
            // this thread's callbacks, which are over.
            drop(unsafe { Box::from_raw(cp) });
        }
    }

    fn dispatch(&self, c: Completion) {
        let token = c.token();
        if token == WATCHES {
            self.on_watches(c);
            return;
        }
        let (status, amount) = (c.status(), i32::try_from(c.bytes()).unwrap_or(i32::MAX));
        let receive = match c.op() {
            Op::Read => true,
            Op::Write => false,
            Op::Post => {
                // Posted by remove: the hang-up watch of a removed socket ends.
                let cb = self.take(token, |e| e.hangup.take());
                if let Some(cb) = cb {
                    cb.call(COMPLETION_PORT_CLOSING, COMPLETION_PORT_RESULT_ABANDONED, 0);
                }
                return;
            }
            _ => return,
        };
        // The completion holds the caller's buffer only as a loan: dropping it frees nothing.
        drop(c);
        let hung_up = matches!(status, Status::Eof | Status::Abandoned);
        let (cb, watch) = {
            let mut t = self.table();
            let Some(e) = t.entries.get_mut(&token) else { return };
            let cb = if receive { e.receive.take() } else { e.send.take() };
            let watch = if hung_up { self.end_watch(e) } else { None };
            if e.finished() {
                t.entries.remove(&token);
            }
            (cb, watch)
        };
        let action = match (status, receive) {
            (Status::Cancelled, _) => COMPLETION_PORT_CLOSING,
            (_, true) => COMPLETION_PORT_EPOLL_EPOLLIN,
            (_, false) => COMPLETION_PORT_EPOLL_EPOLLOUT,
        };
        let result = match status {
            Status::Ok | Status::Eof => COMPLETION_PORT_RESULT_OK,
            Status::Abandoned | Status::Cancelled => COMPLETION_PORT_RESULT_ABANDONED,
            Status::TimedOut | Status::Failed => COMPLETION_PORT_RESULT_ERROR,
        };
        if let Some(cb) = cb {
            cb.call(action, result, amount);
        }
        if let Some(w) = watch {
            w.call(COMPLETION_PORT_EPOLL_EPOLLRDHUP, COMPLETION_PORT_RESULT_ABANDONED, 0);
        }
    }

    /// The watch epoll reported hang-ups: their watches end (`EPOLLRDHUP`, `ABANDONED`), and
    /// the port watches the watch epoll again.
    fn on_watches(&self, c: Completion) {
        let status = c.status();
        let failed = c.error().map(|e| format!("{e:#}"));
        let data = c.into_data();
        for t in data.chunks_exact(8) {
            let token = u64::from_ne_bytes(t.try_into().expect("8 bytes"));
            if let Some(cb) = self.take(token, |e| self.end_watch(e)) {
                cb.call(COMPLETION_PORT_EPOLL_EPOLLRDHUP, COMPLETION_PORT_RESULT_ABANDONED, 0);
            }
        }
        if let Some(why) = failed {
            // Not expected (an epoll_wait on an epoll fd fails only for a bad argument): said
            // on the thread's last error, and the watching goes on.
            set_last(&format!("completion port thread: the hang-up watches: {why}"));
        }
        if status != Status::Cancelled {
            // Refused only once the port shuts down; the thread then ends the watches left.
            let _ = self.port.read(&self.watches_isb, vec![0; WATCH_BATCH * 8], 8..=WATCH_BATCH * 8);
        }
    }

    /// Ends `e`'s hang-up watch, if any (see `unwatch`), and returns its callback.
    fn end_watch(&self, e: &mut Entry) -> Option<Callback> {
        self.unwatch(e.watch.take());
        e.hangup.take()
    }

    /// Takes a watch's duplicate out of the watch epoll, then closes it (in that order: a
    /// registration outlives its fd while the caller's socket keeps the file open).
    fn unwatch(&self, fd: Option<OwnedFd>) {
        if let Some(fd) = fd {
            let _ = epoll_ctl(&self.watches, libc::EPOLL_CTL_DEL, fd.as_fd(), 0, 0);
        }
    }

    fn take(&self, token: u64, f: impl FnOnce(&mut Entry) -> Option<Callback>) -> Option<Callback> {
        let mut t = self.table();
        let e = t.entries.get_mut(&token)?;
        let cb = f(e);
        if e.finished() {
            t.entries.remove(&token);
        }
        cb
    }

    /// The stream of the caller's `socket`, assigned (as a duplicate) on first use. A known
    /// number that now names another socket (the caller closed the old one without
    /// `completion_port_remove`, and the number was reused) is the new socket: the old one is
    /// removed first, so nothing meant for the new socket reaches the old one's peer.
    fn stream(&self, t: &mut Table, socket: c_int) -> Result<(u64, Isb, bool), String> {
        if socket < 0 {
            return Err(format!("bad socket {socket}"));
        }
        // SAFETY: only borrowed during this call, for fstat and the duplicate; a closed
        // number fails in both.
        let fd = unsafe { BorrowedFd::borrow_raw(socket) };
        let id = identity(fd).map_err(|e| format!("socket {socket}: {e}"))?;
        if let Some(k) = t.sockets.get(&socket) {
            if k.id == id {
                return Ok((k.token, k.isb.clone(), false));
            }
            self.forget(t, socket);
        }
        let dup = fd.try_clone_to_owned().map_err(|e| format!("socket {socket}: {e}"))?;
        let token = t.next_token;
        let isb = self.port.assign_boxed(driver_for(dup), token).map_err(|e| format!("socket {socket}: {e:#}"))?;
        t.next_token += 1;
        t.sockets.insert(socket, Known { token, isb: isb.clone(), id });
        t.entries.insert(token, Entry::default());
        Ok((token, isb, true))
    }

    fn add(&self, d: &CompletionPortIngressData) -> Result<(), String> {
        let f = d.event_callback.ok_or("no event_callback")?;
        let cb = Callback { f, ctx: d.event_callback_ctx };
        let known = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP;
        let op = d.epoll_op;
        if op & !known != 0 || op == 0 || (op & libc::EPOLLIN != 0 && op & libc::EPOLLOUT != 0) {
            return Err(format!("epoll_op {op:#x}: want one of EPOLLIN, EPOLLOUT, EPOLLRDHUP"));
        }
        // The buffer is checked before the socket is looked at: a refused request leaves no
        // trace.
        let io = if op & (libc::EPOLLIN | libc::EPOLLOUT) != 0 {
            let len = d.buffer_data.length as usize;
            if len > i32::MAX as usize {
                return Err(format!("buffer_data.length {len}: more than the callback's amount can say"));
            }
            let buf = lend(d.buffer_data.buffer, len, "completion_port_add").map_err(|_| "bad buffer_data")?;
            let receive = op & libc::EPOLLIN != 0;
            Some(if receive { (true, Kind::Read { buf, min: 1, max: len }) } else { (false, Kind::Write { buf }) })
        } else {
            None
        };
        let mut t = self.table();
        if t.closed {
            return Err("the port is going away".into());
        }
        let (token, isb, created) = self.stream(&mut t, d.socket)?;
        let started = self.start(&mut t, token, &isb, d.socket, io, op & libc::EPOLLRDHUP != 0, cb);
        if started.is_err() && created {
            // The socket was first seen by this call: forget it again.
            t.sockets.remove(&d.socket);
            if let Some(mut e) = t.entries.remove(&token) {
                self.end_watch(&mut e);
            }
            let _ = self.port.deassign(&isb);
        }
        started
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        t: &mut Table,
        token: u64,
        isb: &Isb,
        socket: c_int,
        io: Option<(bool, Kind)>,
        watch: bool,
        cb: Callback,
    ) -> Result<(), String> {
        let entry = t.entries.get_mut(&token).ok_or("the socket is being removed")?;
        if watch && entry.hangup.is_some() {
            return Err(format!("socket {socket}: a hang-up watch is already pending"));
        }
        if let Some((receive, _)) = &io {
            if if *receive { entry.receive.is_some() } else { entry.send.is_some() } {
                let what = if *receive { "receive" } else { "send" };
                return Err(format!("socket {socket}: a {what} is already pending"));
            }
        }
        // The watch's duplicate is registered before the I/O starts, so that a failure to
        // register leaves nothing started. (The table's lock keeps the port's thread from
        // handling its hang-up before the callback is in place.)
        let watch_fd = if watch {
            // A duplicate of the stream's own duplicate: the file `stream` checked by inode,
            // whatever the caller does with its number meanwhile.
            let fd = isb.fd().ok_or_else(|| format!("socket {socket}: the port's duplicate is gone"))?;
            // SAFETY: the stream's fd, borrowed for the `dup`: the stream keeps it open while
            // the table's lock (held here) keeps it assigned.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .map_err(|e| format!("socket {socket}: {e}"))?;
            let bits = (libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
            epoll_ctl(&self.watches, libc::EPOLL_CTL_ADD, fd.as_fd(), bits, token)
                .map_err(|e| format!("socket {socket}: hang-up watch: {e}"))?;
            Some(fd)
        } else {
            None
        };
        if let Some((receive, kind)) = io {
            let slot = if receive { &mut entry.receive } else { &mut entry.send };
            // The callback is in place before the I/O starts (the table's lock keeps the
            // port's thread from looking before this returns anyway).
            *slot = Some(cb);
            if let Err(e) = self.port.start_io(isb, Request::new(kind)) {
                *slot = None;
                self.unwatch(watch_fd);
                return Err(format!("socket {socket}: {:#}", e.error()));
            }
        }
        if watch {
            entry.hangup = Some(cb);
            entry.watch = watch_fd;
        }
        Ok(())
    }

    fn remove(&self, socket: c_int) {
        let mut t = self.table();
        if t.closed {
            return;
        }
        self.forget(&mut t, socket);
    }

    /// Stops using the caller's `socket` (see `remove`).
    fn forget(&self, t: &mut Table, socket: c_int) {
        let Some(Known { token, isb, .. }) = t.sockets.remove(&socket) else { return };
        if let Some(e) = t.entries.get_mut(&token) {
            e.removed = true;
            // The watch leaves the watch epoll now; its callback comes after the post below.
            let fd = e.watch.take();
            self.unwatch(fd);
        }
        // Pending requests end as cancelled (CLOSING on the port's thread); the post ends
        // the hang-up watch there too, after them.
        let _ = self.port.deassign(&isb);
        // Fails only while the port shuts down; its thread then ends every watch left.
        let _ = self.port.post(token, 0);
        if t.entries.get(&token).is_some_and(Entry::finished) {
            t.entries.remove(&token);
        }
    }
}

/// The token of the port's stream that watches the watch epoll (the sockets' tokens count up
/// from 0).
const WATCHES: u64 = u64::MAX;
/// Hang-ups taken from the watch epoll per read.
const WATCH_BATCH: usize = 64;

/// A socket's identity: its device and inode numbers.
fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is borrowed for the call; `st` is a writable `stat` that fstat fills.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

fn epoll_ctl(ep: &OwnedFd, op: c_int, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: both fds are open for the call; `ev` is a valid event that outlives it.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The driver of the port's stream over the watch epoll: an epoll fd is readable while it has
/// events, and a "read" takes them (a nonblocking `epoll_wait`) as the sockets' tokens, 8
/// bytes each.
struct Watches(Arc<OwnedFd>);

impl Driver for Watches {
    fn name(&self) -> &'static str {
        "hang-up watches"
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn supports(&self, op: Op) -> bool {
        op == Op::Read
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; WATCH_BATCH];
        let max = (buf.len() / 8).min(WATCH_BATCH) as c_int;
        // SAFETY: `events` has room for `max <= WATCH_BATCH` events; the fd is open.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, 0) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => {
                for (k, ev) in events[..n as usize].iter().enumerate() {
                    let token = ev.u64;
                    buf[k * 8..k * 8 + 8].copy_from_slice(&token.to_ne_bytes());
                }
                Ok(n as usize * 8)
            }
        }
    }
}

thread_local! {
    /// On a port's thread: the address of that port's `Shared` (0 elsewhere). A mark instead
    /// of `thread::current()`, which allocates a handle for a C program's thread that its
    /// leak checker reports.
    static PORT_THREAD_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What a `COMPLETION_PORT_HANDLE` points to.
pub struct CompletionPort {
    shared: Arc<Shared>,
    refs: AtomicUsize,
    thread: Option<JoinHandle<()>>,
}

/// Creates a completion port with its thread; NULL on failure.
#[no_mangle]
pub extern "C" fn completion_port_create() -> *mut CompletionPort {
    let made = std::panic::catch_unwind(|| {
        let port = Port::new().map_err(|e| format!("{e:#}"))?;
        // SAFETY: epoll_create1 takes no pointers.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(format!("the hang-up watches' epoll: {}", io::Error::last_os_error()));
        }
        // SAFETY: a new fd, owned by nobody else.
        let watches = Arc::new(unsafe { OwnedFd::from_raw_fd(ep) });
        let watches_isb =
            port.assign(Watches(watches.clone()), WATCHES).map_err(|e| format!("the hang-up watches: {e:#}"))?;
        port.read(&watches_isb, vec![0; WATCH_BATCH * 8], 8..=WATCH_BATCH * 8)
            .map_err(|e| format!("the hang-up watches: {:#}", e.error()))?;
        let shared = Arc::new(Shared {
            port,
            table: Mutex::new(Table::default()),
            watches,
            watches_isb,
            orphan: Mutex::new(None),
        });
        let s = shared.clone();
        // The thread starts with every signal blocked: the program's signals go to its own
        // threads, never to this one.
        let _blocked = crate::sys::signals::BlockAll::new();
        let thread = std::thread::Builder::new()
            .name("completion_port".into())
            .spawn(move || {
                PORT_THREAD_OF.with(|t| t.set(Arc::as_ptr(&s) as usize));
                s.run()
            })
            .map_err(|e| format!("completion port thread: {e}"))?;
        Ok::<_, String>(Box::into_raw(Box::new(CompletionPort {
            shared,
            refs: AtomicUsize::new(1),
            thread: Some(thread),
        })))
    });
    match made {
        Ok(Ok(p)) => p,
        Ok(Err(msg)) => {
            set_last(&msg);
            std::ptr::null_mut()
        }
        Err(_) => std::ptr::null_mut(),
    }
}

/// Adds a reference. NULL does nothing.
///
/// # Safety
/// `cp` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn completion_port_inc_ref(cp: *mut CompletionPort) {
    // SAFETY: the caller's promise.
    if let Some(cp) = unsafe { cp.as_ref() } {
        cp.refs.fetch_add(1, Ordering::Relaxed);
    }
}

/// Drops a reference; the last ends every request (`COMPLETION_PORT_CLOSING`), stops the
/// thread and frees the port. NULL does nothing.
///
/// # Safety
/// `cp` is NULL or a live handle, not used through this reference afterwards.
#[no_mangle]
pub unsafe extern "C" fn completion_port_dec_ref(cp: *mut CompletionPort) {
    // SAFETY: the caller's promise.
    let Some(r) = (unsafe { cp.as_ref() }) else { return };
    if r.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let last = std::panic::AssertUnwindSafe(|| {
        // The last reference: from now on requests are refused and removes do nothing (a
        // callback still to run may pass the handle).
        r.shared.table().closed = true;
        r.shared.port.shutdown();
        let on_thread = PORT_THREAD_OF.with(|t| t.get() == Arc::as_ptr(&r.shared) as usize);
        if on_thread {
            // Called by a callback: the thread has callbacks left to run, which may still
            // pass this handle. It frees the box after its last one.
            *r.shared.orphan.lock().unwrap_or_else(|p| p.into_inner()) = Some(Orphan(cp));
            return;
        }
        // SAFETY: the last reference, and not on the port's thread: nobody else uses the box.
        let mut cp = unsafe { Box::from_raw(cp) };
        if let Some(t) = cp.thread.take() {
            let _ = t.join();
        }
    });
    if std::panic::catch_unwind(last).is_err() {
        set_last("completion_port_dec_ref: internal error (a panic); please report it");
    }
}

/// Starts the request `ingress_data` describes. Returns 0, or non-zero (and starts nothing)
/// for a NULL argument, no callback, a bad `epoll_op`, socket or buffer, a request of the same
/// kind already pending on the socket, or a port shutting down.
///
/// # Safety
/// `cp` is NULL or a live handle; `ingress_data` is NULL or points to a request whose buffer
/// stays valid and untouched until its callback.
#[no_mangle]
pub unsafe extern "C" fn completion_port_add(
    cp: *mut CompletionPort,
    ingress_data: *const CompletionPortIngressData,
) -> c_int {
    // SAFETY: the caller's promise.
    let (Some(cp), Some(d)) = (unsafe { cp.as_ref() }, unsafe { ingress_data.as_ref() }) else {
        set_last("completion_port_add: NULL argument");
        return -1;
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cp.shared.add(d))) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            set_last(&format!("completion_port_add: {msg}"));
            -1
        }
        Err(_) => -1,
    }
}

/// Stops using `socket`: its pending requests end with `COMPLETION_PORT_CLOSING` on the port's
/// thread, and the port's duplicate of it is closed (the caller's socket stays open). An
/// unknown socket or NULL does nothing.
///
/// # Safety
/// `cp` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn completion_port_remove(cp: *mut CompletionPort, socket: SocketHandle) {
    // SAFETY: the caller's promise.
    if let Some(cp) = unsafe { cp.as_ref() } {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cp.shared.remove(socket)));
    }
}
