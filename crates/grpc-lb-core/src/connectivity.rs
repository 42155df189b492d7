use std::fmt;

use crate::SharedError;

/// The connectivity state of a subchannel or a channel.
///
/// These are the states of gRPC's `doc/connectivity-semantics-and-api.md`. Their
/// [`Display`](fmt::Display) form is the spelling used by gRPC's logs and APIs
/// (`TRANSIENT_FAILURE`), so that logs from this crate read like grpc-go's.
///
/// ```
/// use grpc_lb_core::ConnectivityState;
///
/// let state = ConnectivityState::TransientFailure;
/// assert_eq!(state.as_str(), "TRANSIENT_FAILURE");
/// assert_eq!(format!("[{state:>18}]"), "[ TRANSIENT_FAILURE]");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectivityState {
    /// No connection, and none being made: the next use starts one.
    Idle,
    /// A connection attempt is under way.
    Connecting,
    /// Connected; requests can be sent.
    Ready,
    /// The last attempt failed; waiting out the backoff before the next.
    TransientFailure,
    /// Closed for good.
    Shutdown,
}

impl ConnectivityState {
    /// The name gRPC gives this state, e.g. `"TRANSIENT_FAILURE"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectivityState::Idle => "IDLE",
            ConnectivityState::Connecting => "CONNECTING",
            ConnectivityState::Ready => "READY",
            ConnectivityState::TransientFailure => "TRANSIENT_FAILURE",
            ConnectivityState::Shutdown => "SHUTDOWN",
        }
    }
}

impl fmt::Display for ConnectivityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A connectivity state together with the error that explains it.
///
/// This is what subchannels and channels publish on their `tokio::sync::watch`
/// channels. `last_error` is kept after a failure so that a fail-fast caller can
/// answer `UNAVAILABLE` with the real cause rather than a generic message.
///
/// ```
/// use grpc_lb_core::{Connectivity, ConnectivityState};
/// use std::sync::Arc;
///
/// let (publish, watch) = tokio::sync::watch::channel(Connectivity::default());
/// assert_eq!(watch.borrow().state, ConnectivityState::Idle);
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// publish.send_replace(Connectivity {
///     state: ConnectivityState::TransientFailure,
///     last_error: Some(Arc::new(refused)),
/// });
/// let seen = watch.borrow();
/// assert_eq!(seen.state, ConnectivityState::TransientFailure);
/// assert_eq!(seen.last_error.as_ref().unwrap().to_string(), "connection refused");
/// ```
#[derive(Clone, Debug)]
pub struct Connectivity {
    /// The current state.
    pub state: ConnectivityState,
    /// The most recent connection error, if any has happened.
    pub last_error: Option<SharedError>,
}

impl Connectivity {
    /// A state with no error attached.
    pub const fn new(state: ConnectivityState) -> Self {
        Connectivity {
            state,
            last_error: None,
        }
    }
}

impl Default for Connectivity {
    fn default() -> Self {
        Connectivity::new(ConnectivityState::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_grpc_spelling() {
        let names: Vec<String> = [
            ConnectivityState::Idle,
            ConnectivityState::Connecting,
            ConnectivityState::Ready,
            ConnectivityState::TransientFailure,
            ConnectivityState::Shutdown,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "IDLE",
                "CONNECTING",
                "READY",
                "TRANSIENT_FAILURE",
                "SHUTDOWN"
            ]
        );
    }
}
