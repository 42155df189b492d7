//! A call's deadline and its timer, shared by the response future and the
//! response body it hands the deadline on to.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};

/// When a call must end, and the timer that wakes it then. The timer is made
/// at the first wait, so that a call that ends at once (it failed, never left
/// the client, or its whole response was in the socket) makes none, and it
/// moves with the deadline from the response future to the body, so a call
/// makes it at most once. Boxed, so that the futures holding it stay `Unpin`.
#[derive(Default)]
pub(crate) struct Deadline {
    at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    pub(crate) fn new(at: Option<Instant>) -> Self {
        Deadline { at, timer: None }
    }

    /// The deadline has passed (never, without one).
    pub(crate) fn has_passed(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// Registers `cx` to be woken at the deadline; true once it has passed.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.at else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// The call is over: no deadline, no timer.
    pub(crate) fn clear(&mut self) {
        *self = Deadline::default();
    }

    /// Hands the deadline, with its timer if made, to what reads on.
    pub(crate) fn take(&mut self) -> Deadline {
        std::mem::take(self)
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.at, f)
    }
}
