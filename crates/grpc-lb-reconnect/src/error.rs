//! Errors produced by the reconnect layer itself.

use std::fmt;
use std::time::Duration;

/// A connection attempt did not finish within its deadline.
///
/// Each attempt is bounded by `max(min_connect_timeout, current backoff)`, as in
/// grpc-go's `addrConn.resetTransport`.
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_reconnect::{error::ConnectTimeout, Reconnect};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // A server that never answers the handshake.
/// let connector = tower::service_fn(|_: &'static str| async {
///     std::future::pending::<()>().await;
///     Ok::<_, Infallible>(tower::service_fn(|()| async { Ok::<_, Infallible>(()) }))
/// });
/// let mut subchannel = Reconnect::new(connector, "blackhole");
/// let handle = subchannel.handle();
/// tokio::spawn(std::future::poll_fn(move |cx| {
///     subchannel.drive::<()>(cx);
///     std::task::Poll::<()>::Pending
/// }));
///
/// handle.connect();
/// let mut watch = handle.watch();
/// let failed = watch
///     .wait_for(|c| c.state == ConnectivityState::TransientFailure)
///     .await
///     .unwrap();
/// let error = failed.last_error.as_ref().unwrap();
/// let timeout = error.downcast_ref::<ConnectTimeout>().unwrap();
/// // The first attempt gets max(min_connect_timeout, 1 s backoff) = 20 s.
/// assert_eq!(timeout.timeout(), Duration::from_secs(20));
/// # }
/// ```
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
///
/// ```
/// use std::convert::Infallible;
/// use grpc_lb_reconnect::{error::NotReady, Reconnect};
/// use tower::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let connector = tower::service_fn(|_: &'static str| async {
///     Ok::<_, Infallible>(tower::service_fn(|()| async { Ok::<_, Infallible>(()) }))
/// });
/// let mut subchannel = Reconnect::new(connector, "backend-1");
///
/// // Not connected, and nobody asked poll_ready: the request fails, nothing panics.
/// let error = subchannel.call(()).await.unwrap_err();
/// assert!(error.is::<NotReady>());
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotReady;

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("reconnecting service called before poll_ready returned Ready")
    }
}

impl std::error::Error for NotReady {}
