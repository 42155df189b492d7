//! Errors produced by the reconnect layer itself.

use std::fmt;
use std::time::Duration;

/// A connection attempt did not finish within its deadline.
///
/// Each attempt is bounded by `max(min_connect_timeout, current backoff)`, as in
/// grpc-go's `addrConn.resetTransport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTimeout {
    timeout: Duration,
}

impl ConnectTimeout {
    pub(crate) const fn new(timeout: Duration) -> Self {
        ConnectTimeout { timeout }
    }

    /// How long the attempt was allowed to take.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection attempt timed out after {:?}", self.timeout)
    }
}

impl std::error::Error for ConnectTimeout {}

/// `call` was made without a preceding `poll_ready` that returned `Ready(Ok)`.
///
/// This breaks the `tower::Service` contract. It is reported as an error on the
/// response rather than a panic, so a misbehaving caller loses one request, not
/// the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotReady;

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("reconnecting service called before poll_ready returned Ready")
    }
}

impl std::error::Error for NotReady {}
