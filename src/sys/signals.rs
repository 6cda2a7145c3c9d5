//! Signals as an fd: `pthread_sigmask` and `signalfd`, for [`Port::signals`](crate::Port::signals),
//! and the mask of cport's own threads.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A signal set of `signals`; `InvalidInput` for a number that is not a signal one can block
/// (`SIGKILL` and `SIGSTOP` cannot be).
fn set_of(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut set = unsafe { set.assume_init() };
    for &s in signals {
        if s == libc::SIGKILL || s == libc::SIGSTOP {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("signal {s} cannot be blocked")));
        }
        // SAFETY: a valid set; an invalid signal number is EINVAL, checked below.
        if unsafe { libc::sigaddset(&mut set, s) } != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{s} is not a signal number")));
        }
    }
    Ok(set)
}

/// A nonblocking, close-on-exec signalfd that reads `signals` (once they are blocked: see
/// [`block`]).
pub(crate) fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    if signals.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no signals given"));
    }
    let set = set_of(signals)?;
    // SAFETY: -1 asks for a new fd; a valid set.
    let fd = syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
    // SAFETY: a new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks `signals` in the calling thread (threads it starts from now on inherit the mask).
pub(crate) fn block(signals: &[i32]) -> io::Result<()> {
    let set = set_of(signals)?;
    // SAFETY: a valid set; a null old mask is allowed.
    let err = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

/// Every signal that can be blocked, blocked in the calling thread while this lives, and the
/// thread's mask as it was put back when it drops. cport starts its own threads (the workers)
/// inside one, so they begin life with every signal blocked (a thread inherits its creator's
/// mask): a signal meant for the program goes to one of the program's threads, never to one
/// of cport's, not even in the moment after one starts.
pub(crate) struct BlockAll {
    old: libc::sigset_t,
}

impl BlockAll {
    pub(crate) fn new() -> BlockAll {
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises `all`; pthread_sigmask takes a valid set and writes
        // the previous mask into `old`. (SIGKILL, SIGSTOP and glibc's own signals are left
        // alone by the kernel and glibc.) It cannot fail with these arguments.
        unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), old.as_mut_ptr());
        }
        // SAFETY: written by pthread_sigmask just above.
        BlockAll { old: unsafe { old.assume_init() } }
    }
}

impl Drop for BlockAll {
    fn drop(&mut self) {
        // SAFETY: the mask saved in `new`; a null old-mask pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// The size of one record a signalfd read returns.
pub(crate) const SIGINFO: usize = std::mem::size_of::<libc::signalfd_siginfo>();

/// The signal number of a signalfd record (`ssi_signo`, its first field).
pub(crate) fn signo(record: &[u8; SIGINFO]) -> u32 {
    u32::from_ne_bytes([record[0], record[1], record[2], record[3]])
}
