//! [`Buf`]: the bytes of one request, owned by it (a `Vec`), or, for the C API, the caller's
//! memory, which the caller keeps valid and leaves alone until the completion gives it back;
//! and [`read_spare`], the one place where the port reads into memory not yet initialised.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use crate::driver::Driver;

/// One buffer of a request.
pub(crate) enum Buf {
    /// A buffer the request owns (every buffer the Rust API makes).
    Owned(Vec<u8>),
    /// A vector read into past its length ([`Request::read_buf`](crate::Request::read_buf)):
    /// its bytes from the second field on are the ones read so far (the vector grows as they
    /// come, see [`read_spare`]); those before were there already.
    Spare(Vec<u8>, usize),
    /// Memory the request borrows from a C caller (see [`Buf::borrowed`]).
    #[cfg_attr(not(feature = "ffi"), allow(dead_code))]
    Borrowed(Borrowed),
}

/// The caller's memory: where it starts and how long it is.
pub(crate) struct Borrowed {
    ptr: NonNull<u8>,
    len: usize,
}

impl Borrowed {
    /// Where the memory starts.
    #[cfg_attr(not(feature = "ffi"), allow(dead_code))]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// How long it is.
    #[cfg_attr(not(feature = "ffi"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

// SAFETY: a `Borrowed` is made only by `Buf::borrowed`, whose caller promises that the memory
// stays valid and is touched by nobody else until the request's completion (or refusal) hands
// it back; so whichever thread runs the I/O may use it, as an owned buffer could be.
unsafe impl Send for Borrowed {}

impl Buf {
    /// `len` bytes at `ptr`, lent by a C caller.
    ///
    /// # Safety
    /// `ptr` points to `len` bytes that stay valid, and that nothing else reads or writes,
    /// until the request's completion, or its refusal, has been handed back to the caller.
    #[cfg(feature = "ffi")]
    pub(crate) unsafe fn borrowed(ptr: NonNull<u8>, len: usize) -> Buf {
        Buf::Borrowed(Borrowed { ptr, len })
    }

    /// The owned buffer, if it is one.
    pub(crate) fn into_vec(self) -> Option<Vec<u8>> {
        match self {
            Buf::Owned(v) | Buf::Spare(v, _) => Some(v),
            Buf::Borrowed(_) => None,
        }
    }
}

/// Reads at most `want` bytes from `driver` into the spare capacity of `v` (past its length)
/// and appends them: `v.len()` grows by the count returned. A driver whose reads are plain
/// `read(2)` calls on its fd ([`Driver::plain_reads`]) is bypassed, and the kernel writes into
/// the spare capacity as it is, so nothing is zero-filled first; any other driver gets the
/// `want` bytes zeroed, then its own `read` (what a caller of `Request::read` pays anyway).
///
/// `want` is at most `v.capacity() - v.len()` (`Request::validate` checked it against the
/// capacity the request began with; the length grows only by what was read since).
pub(crate) fn read_spare(driver: &mut dyn Driver, v: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    let want = want.min(v.capacity() - v.len());
    if !driver.plain_reads() {
        let len = v.len();
        v.resize(len + want, 0);
        let r = driver.read(&mut v[len..]);
        let got = r.as_ref().map_or(0, |&n| n.min(want));
        v.truncate(len + got);
        return r;
    }
    let fd = driver.fd().as_raw_fd();
    let spare = &mut v.spare_capacity_mut()[..want];
    // The system call itself, not libc's `read`, which is a thread cancellation point and
    // costs two more atomic steps per call (cport never cancels threads).
    // SAFETY: `spare` is `want` bytes of memory `v` owns and that nothing else refers to (we
    // hold `&mut v`); read(2) writes at most `want` bytes into it and reads none of it (it may
    // be uninitialised); `fd` is borrowed from the driver, which keeps it open for the call.
    let n = unsafe { libc::syscall(libc::SYS_read, fd, spare.as_mut_ptr(), want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(want);
    // SAFETY: read(2) returned `n`: it wrote the first `n` bytes of the spare capacity, right
    // after the length, so they are initialised; and `len + n <= capacity`.
    unsafe { v.set_len(v.len() + n) };
    Ok(n)
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        Buf::Owned(v)
    }
}

impl Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Buf::Owned(v) => v,
            Buf::Spare(v, start) => &v[*start..],
            // SAFETY: valid for `len` bytes and not written by anyone else while the request
            // holds it (the promise of `Buf::borrowed`).
            Buf::Borrowed(b) => unsafe { std::slice::from_raw_parts(b.ptr.as_ptr(), b.len) },
        }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Buf::Owned(v) => v,
            Buf::Spare(v, start) => &mut v[*start..],
            // SAFETY: as for `deref`; and `&mut self` makes this the only reference the request
            // hands out.
            Buf::Borrowed(b) => unsafe { std::slice::from_raw_parts_mut(b.ptr.as_ptr(), b.len) },
        }
    }
}
