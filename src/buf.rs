//! [`Buf`]: the bytes of one request, owned by it (a `Vec`), or, for the C API, the caller's
//! memory, which the caller keeps valid and leaves alone until the completion gives it back.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// One buffer of a request.
pub(crate) enum Buf {
    /// A buffer the request owns (every buffer the Rust API makes).
    Owned(Vec<u8>),
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
            Buf::Owned(v) => Some(v),
            Buf::Borrowed(_) => None,
        }
    }
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
            // SAFETY: as for `deref`; and `&mut self` makes this the only reference the request
            // hands out.
            Buf::Borrowed(b) => unsafe { std::slice::from_raw_parts_mut(b.ptr.as_ptr(), b.len) },
        }
    }
}
