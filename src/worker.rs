//! The worker loop: wait on epoll, find the stream, do its I/O, complete, re-arm.

use crate::port::{Deliver, Shared};
use crate::sync::Arc;
use crate::sys::Events;

/// Events taken per `epoll_wait`.
pub(crate) const EVENTS_PER_WAIT: usize = 256;

/// Runs one worker until the port is torn down (the stop eventfd becomes readable).
pub(crate) fn run(shared: &Arc<Shared>) {
    let mut events = Events::with_capacity(EVENTS_PER_WAIT);
    loop {
        if shared.selector.wait(&mut events, -1).is_err() {
            // Only EBADF/EINVAL can get here: the epoll fd is gone, so is the port.
            return;
        }
        if shared.dispatch(&events, &mut Deliver::Queue) {
            return;
        }
    }
}
