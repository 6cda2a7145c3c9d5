//! The epoll selector: one epoll instance, an eventfd that tells workers to stop and a timerfd
//! that fires at the earliest armed deadline. See ARCHITECTURE.md, "Re-arm".

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::{Event, Interest, POKE_TOKEN, STOP_TOKEN, TIMER_TOKEN};

/// The epoll bits for `interest`, always oneshot. Both sides' bits always go in together:
/// arming one side must never drop the other.
fn epoll_bits(interest: Interest) -> u32 {
    let mut bits = libc::EPOLLONESHOT as u32;
    if interest.readable {
        bits |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    }
    if interest.writable {
        bits |= libc::EPOLLOUT as u32;
    }
    bits
}

/// A buffer of events filled by [`Selector::wait`].
pub(crate) struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    pub(crate) fn with_capacity(cap: usize) -> Events {
        Events { buf: vec![libc::epoll_event { events: 0, u64: 0 }; cap.max(1)], len: 0 }
    }

    /// Events the last wait returned.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|e| {
            let bits = e.events;
            Event {
                token: e.u64,
                readable: bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32 != 0,
                writable: bits & libc::EPOLLOUT as u32 != 0,
                hangup: bits & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
            }
        })
    }
}

/// The epoll instance shared by all workers.
pub(crate) struct Selector {
    epoll: OwnedFd,
    stop: OwnedFd,
    timer: OwnedFd,
    poke: OwnedFd,
}

impl Selector {
    pub(crate) fn new() -> io::Result<Selector> {
        // SAFETY: epoll_create1 takes no pointers.
        let epfd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epfd was just returned by the kernel and is owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
        let efd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: as above, a fresh fd.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let tfd = syscall!(timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK))?;
        // SAFETY: as above, a fresh fd.
        let timer = unsafe { OwnedFd::from_raw_fd(tfd) };
        let pfd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: as above, a fresh fd.
        let poke = unsafe { OwnedFd::from_raw_fd(pfd) };
        let sel = Selector { epoll, stop, timer, poke };
        // Level-triggered and never read: once written, every worker sees it on every wait.
        sel.ctl(libc::EPOLL_CTL_ADD, sel.stop.as_raw_fd(), libc::EPOLLIN as u32, STOP_TOKEN)?;
        sel.ctl(libc::EPOLL_CTL_ADD, sel.timer.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLONESHOT) as u32, TIMER_TOKEN)?;
        // Level-triggered; the poller that takes it reads it empty.
        sel.ctl(libc::EPOLL_CTL_ADD, sel.poke.as_raw_fd(), libc::EPOLLIN as u32, POKE_TOKEN)?;
        Ok(sel)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event that outlives the call; a bad fd is an error, not UB.
        syscall!(epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev)).map(drop)
    }

    /// Arms `fd` (oneshot) for `interest`: `EPOLL_CTL_MOD`, falling back to `EPOLL_CTL_ADD` when
    /// the fd is not registered yet (`ENOENT`).
    pub(crate) fn arm(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let bits = epoll_bits(interest);
        match self.ctl(libc::EPOLL_CTL_MOD, fd, bits, token) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.ctl(libc::EPOLL_CTL_ADD, fd, bits, token),
            r => r,
        }
    }

    /// Adds `fd` to the interest list, disarmed (oneshot with no events; hang-ups may still
    /// be reported once). Fails with `EEXIST` for an fd already registered and `EPERM` for
    /// one epoll cannot watch.
    pub(crate) fn register(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, epoll_bits(Interest::NONE), token)
    }

    /// Removes `fd` from the interest list. `ENOENT` (never armed) is not an error.
    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// Waits for events; `timeout_ms` of -1 waits forever. EINTR returns zero events.
    pub(crate) fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        let cap = events.buf.len() as libc::c_int;
        // The system call itself, not libc's wrapper: the wrapper is a thread cancellation point,
        // which costs two more atomic steps per call; cport never cancels threads.
        // epoll_pwait with no signal mask is epoll_wait (and exists on every architecture).
        // SAFETY: the buffer holds `cap` initialised epoll_events and outlives the call; a null
        // mask is allowed.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                self.epoll.as_raw_fd(),
                events.buf.as_mut_ptr(),
                cap,
                timeout_ms,
                std::ptr::null::<libc::sigset_t>(),
                // The kernel's signal set size (not libc's); unused with a null mask.
                8usize,
            )
        };
        let r = if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n) };
        match r {
            Ok(n) => {
                events.len = n as usize;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.len = 0;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Makes every worker's `wait` return, now and forever after (teardown).
    pub(crate) fn stop(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        syscall!(write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8)).map(drop)
    }

    /// Makes a thread blocked in `wait` return (see `Shared::poke`).
    pub(crate) fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. EAGAIN (counter full) still leaves it readable.
        let _ = syscall!(write(self.poke.as_raw_fd(), (&one as *const u64).cast(), 8));
    }

    /// Empties the poke eventfd so it stops being readable.
    pub(crate) fn ack_poke(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer. EAGAIN (already read) is fine.
        let _ = syscall!(read(self.poke.as_raw_fd(), buf.as_mut_ptr().cast(), 8));
    }

    /// Programs the timerfd to fire at `deadline` (None disarms) and re-arms its oneshot event.
    pub(crate) fn set_timer(&self, deadline: Option<Instant>) -> io::Result<()> {
        let mut spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        };
        if let Some(d) = deadline {
            // Relative time; a deadline already passed fires after the smallest delay.
            let left = d.saturating_duration_since(Instant::now());
            let left = left.max(std::time::Duration::from_nanos(1));
            spec.it_value.tv_sec = left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t;
            spec.it_value.tv_nsec = left.subsec_nanos() as libc::c_long;
        }
        // SAFETY: spec is a valid itimerspec; a null old-value pointer is allowed.
        syscall!(timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()))?;
        self.ctl(libc::EPOLL_CTL_MOD, self.timer.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLONESHOT) as u32, TIMER_TOKEN)
    }

    /// Consumes the timerfd's expiry count so it stops being readable.
    pub(crate) fn ack_timer(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer. EAGAIN (already read) is fine.
        let _ = syscall!(read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), 8));
    }
}
