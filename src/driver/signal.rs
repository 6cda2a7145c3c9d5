//! The driver of a [`Port::signals`](crate::Port::signals) stream: a signalfd the port owns.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::Driver;
use crate::request::Op;

/// A signalfd: each read takes one pending signal's record.
pub(crate) struct SignalFd {
    file: std::fs::File,
}

impl SignalFd {
    pub(crate) fn new(fd: OwnedFd) -> SignalFd {
        SignalFd { file: fd.into() }
    }
}

impl Driver for SignalFd {
    fn name(&self) -> &'static str {
        "signals"
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
    fn into_fd(self: Box<Self>) -> Option<OwnedFd> {
        Some(self.file.into())
    }
    fn supports(&self, op: Op) -> bool {
        op == Op::Signal
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }
}
