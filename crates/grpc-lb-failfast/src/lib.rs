//! Fail-fast: gRPC's default answer to an RPC made while the connection is down.
//!
//! gRPC's `doc/wait-for-ready.md`: an RPC issued while the channel is in
//! `TRANSIENT_FAILURE` fails at once with `UNAVAILABLE` by default, and RPCs issued
//! while `IDLE`, `CONNECTING` or `READY` wait for a connection. [`FailFast`] wraps a
//! service whose `poll_ready` is `Pending` while it has no connection (such as
//! grpc-lb-reconnect's `Reconnect`) and watches its connectivity: while the state
//! is `TRANSIENT_FAILURE` and the service is not ready, the next call fails at once
//! with a [`tonic::Status`] of code `UNAVAILABLE` whose message carries the last
//! connection error.
//!
//! The failure is returned from `call`, never from `poll_ready`: an error from
//! `poll_ready` would tell a balancer or a `Buffer` that the service is broken for
//! good, when it is only waiting out a backoff.
//!
//! With [`FailFast::wait_for_ready`] set, calls never fail fast and wait for the
//! connection instead (bound them with a deadline).
//!
//! # Examples
//!
//! ```
//! use grpc_lb_core::{Connectivity, ConnectivityState};
//! use grpc_lb_failfast::FailFastLayer;
//! use tower::ServiceBuilder;
//! # let service = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
//!
//! let (_publisher, connectivity) =
//!     tokio::sync::watch::channel(Connectivity::new(ConnectivityState::Idle));
//! let service = ServiceBuilder::new()
//!     .layer(FailFastLayer::new(connectivity))
//!     .service(service);
//! # drop(service);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
mod status;

pub use crate::status::{code_from_h2_reason, to_status, transport_to_status};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use grpc_lb_core::{BoxError, Connectivity, ConnectivityState, SharedError};
use pin_project_lite::pin_project;
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

/// Fails calls fast with `UNAVAILABLE` while the watched connectivity is
/// `TRANSIENT_FAILURE`. See the [crate docs](crate).
///
/// ```
/// use std::sync::Arc;
/// use std::task::{Context, Poll};
/// use grpc_lb_core::{Connectivity, ConnectivityState};
/// use grpc_lb_failfast::FailFast;
/// use tower::{Service, ServiceExt};
///
/// // A service with no connection: never ready, like a subchannel in backoff.
/// struct Disconnected;
///
/// impl tower::Service<()> for Disconnected {
///     type Response = ();
///     type Error = std::convert::Infallible;
///     type Future = std::future::Ready<Result<(), Self::Error>>;
///
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
///         Poll::Pending
///     }
///
///     fn call(&mut self, _: ()) -> Self::Future {
///         unreachable!("never ready")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let (_publisher, connectivity) = tokio::sync::watch::channel(Connectivity {
///     state: ConnectivityState::TransientFailure,
///     last_error: Some(Arc::new(refused)),
/// });
/// let mut service = FailFast::new(Disconnected, connectivity);
///
/// // Ready at once, only to fail the call: UNAVAILABLE with the real cause.
/// let error = service.ready().await.unwrap().call(()).await.unwrap_err();
/// let status = error.downcast_ref::<tonic::Status>().unwrap();
/// assert_eq!(status.code(), tonic::Code::Unavailable);
/// assert_eq!(status.message(), "connection unavailable: connection refused");
/// # }
/// ```
pub struct FailFast<S> {
    inner: S,
    connectivity: watch::Receiver<Connectivity>,
    wait_for_ready: bool,
    /// Set by `poll_ready` when it let a call through only to fail it.
    failing: Option<tonic::Status>,
    /// While `poll_ready` waits without wait-for-ready: the next change of
    /// the watched state, which may be TRANSIENT_FAILURE and fail the call.
    next_state: Option<StateChange>,
}

/// The next change of a connectivity watch: resolves with whether the watch
/// is still open.
type StateChange = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

impl<S: Clone> Clone for FailFast<S> {
    fn clone(&self) -> Self {
        FailFast {
            inner: self.inner.clone(),
            connectivity: self.connectivity.clone(),
            wait_for_ready: self.wait_for_ready,
            failing: self.failing.clone(),
            next_state: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FailFast<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailFast")
            .field("inner", &self.inner)
            .field("state", &self.connectivity.borrow().state)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("failing", &self.failing)
            .finish()
    }
}

impl<S> FailFast<S> {
    /// Wraps `inner`, reading its state from `connectivity`.
    pub fn new(inner: S, connectivity: watch::Receiver<Connectivity>) -> Self {
        FailFast {
            inner,
            connectivity,
            wait_for_ready: false,
            failing: None,
            next_state: None,
        }
    }

    /// Waits for a connection instead of failing fast (gRPC's wait-for-ready).
    pub fn wait_for_ready(mut self, enabled: bool) -> Self {
        self.wait_for_ready = enabled;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The `UNAVAILABLE` status a fail-fast call gets, naming the cause.
///
/// The cause's text (with its own causes, as its `Display` gives them) is the
/// status's message, which is what tonic users read; the status carries no
/// source, so that a report walking the error's chain of sources says each
/// cause once. The cause itself stays on the subchannel's and the channel's
/// connectivity watch (`Connectivity::last_error`), for code that inspects it.
pub fn unavailable(cause: Option<&SharedError>) -> tonic::Status {
    match cause {
        Some(cause) => tonic::Status::unavailable(format!("connection unavailable: {cause}")),
        None => tonic::Status::unavailable("connection unavailable: in TRANSIENT_FAILURE"),
    }
}

impl<S> FailFast<S> {
    /// Ready (to fail the call) once the state is TRANSIENT_FAILURE; until
    /// then Pending, with the task registered for the next state change as
    /// well as for the inner service's readiness, so that a failure that
    /// comes while the call waits ends it.
    fn poll_transient_failure(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            {
                let connectivity = self.connectivity.borrow_and_update();
                if connectivity.state == ConnectivityState::TransientFailure {
                    self.next_state = None;
                    self.failing = Some(unavailable(connectivity.last_error.as_ref()));
                    return Poll::Ready(Ok(()));
                }
            }
            let change = self.next_state.get_or_insert_with(|| {
                // A clone that has seen the state just read: it wakes on the
                // first change after it.
                let mut watch = self.connectivity.clone();
                Box::pin(async move { watch.changed().await.is_ok() })
            });
            match change.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(open) => {
                    self.next_state = None;
                    if !open {
                        // Nobody publishes any more: the state read stays,
                        // and only the inner service can end the wait.
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}
impl<S, Req> Service<Req> for FailFast<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.failing = None;
        match self.inner.poll_ready(cx) {
            Poll::Ready(result) => {
                self.next_state = None;
                Poll::Ready(result.map_err(Into::into))
            }
            Poll::Pending if self.wait_for_ready => Poll::Pending,
            Poll::Pending => self.poll_transient_failure(cx),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.failing.take() {
            Some(status) => ResponseFuture::failed(status),
            None => ResponseFuture::called(self.inner.call(request)),
        }
    }
}

/// Applies [`FailFast`] with a given connectivity watch.
///
/// ```
/// use std::task::{Context, Poll};
/// use std::time::Duration;
/// use grpc_lb_core::{Connectivity, ConnectivityState};
/// use grpc_lb_failfast::FailFastLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// // A service with no connection: never ready, like a subchannel in backoff.
/// struct Disconnected;
///
/// impl tower::Service<()> for Disconnected {
///     type Response = ();
///     type Error = std::convert::Infallible;
///     type Future = std::future::Ready<Result<(), Self::Error>>;
///
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
///         Poll::Pending
///     }
///
///     fn call(&mut self, _: ()) -> Self::Future {
///         unreachable!("never ready")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let (_publisher, connectivity) =
///     tokio::sync::watch::channel(Connectivity::new(ConnectivityState::TransientFailure));
///
/// // With wait-for-ready, the caller waits for a connection instead, bounded by
/// // its own deadline.
/// let service = ServiceBuilder::new()
///     .layer(FailFastLayer::new(connectivity).wait_for_ready(true))
///     .service(Disconnected);
/// let waited = tokio::time::timeout(Duration::from_secs(1), service.oneshot(())).await;
/// assert!(waited.is_err(), "still waiting for a connection after the deadline");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FailFastLayer {
    connectivity: watch::Receiver<Connectivity>,
    wait_for_ready: bool,
}

impl FailFastLayer {
    /// A layer that fails fast while `connectivity` reads `TRANSIENT_FAILURE`.
    pub fn new(connectivity: watch::Receiver<Connectivity>) -> Self {
        FailFastLayer {
            connectivity,
            wait_for_ready: false,
        }
    }

    /// Waits for a connection instead of failing fast.
    pub fn wait_for_ready(mut self, enabled: bool) -> Self {
        self.wait_for_ready = enabled;
        self
    }
}

impl<S> Layer<S> for FailFastLayer {
    type Service = FailFast<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FailFast::new(inner, self.connectivity.clone()).wait_for_ready(self.wait_for_ready)
    }
}

pin_project! {
    /// Response future of [`FailFast`]: the inner service's future with its
    /// error boxed, or the `UNAVAILABLE` status of a call failed fast.
    ///
    /// ```
    /// use grpc_lb_core::{Connectivity, ConnectivityState};
    /// use grpc_lb_failfast::{FailFast, ResponseFuture};
    /// use tower::{Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
    /// let (_publisher, connectivity) =
    ///     tokio::sync::watch::channel(Connectivity::new(ConnectivityState::Ready));
    /// let echo = tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
    /// let mut service = FailFast::new(echo, connectivity);
    /// let future: ResponseFuture<_> = service.ready().await?.call(7);
    /// assert_eq!(future.await?, 7);
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] future: F },
        Failed { status: Option<tonic::Status> },
    }
}

impl<F> ResponseFuture<F> {
    fn called(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
        }
    }

    fn failed(status: tonic::Status) -> Self {
        ResponseFuture {
            kind: Kind::Failed {
                status: Some(status),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => {
                future.poll(cx).map_err(|e| transport_to_status(e.into()))
            }
            KindProj::Failed { status } => {
                let status = status.take().expect("polled after completion");
                Poll::Ready(Err(status.into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use grpc_lb_core::TransportError;
    use tokio_test::{assert_pending, assert_ready_ok};
    use tower_test::mock;

    use super::*;

    fn connectivity(state: ConnectivityState, cause: Option<&str>) -> Connectivity {
        Connectivity {
            state,
            last_error: cause.map(|c| Arc::new(std::io::Error::other(c.to_owned())) as SharedError),
        }
    }

    #[tokio::test]
    async fn transient_failure_fails_the_call_with_the_cause() {
        let (publish, watch) = watch::channel(connectivity(ConnectivityState::Connecting, None));
        let (inner, mut handle) = mock::pair::<(), ()>();
        handle.allow(0);
        let mut svc = mock::Spawn::new(FailFast::new(inner, watch));

        // CONNECTING: wait.
        assert_pending!(svc.poll_ready());
        publish.send_replace(connectivity(
            ConnectivityState::TransientFailure,
            Some("tcp connect to 127.0.0.1:1 failed: Connection refused"),
        ));
        assert_ready_ok!(svc.poll_ready());
        let error = svc.call(()).await.unwrap_err();
        let status = error.downcast::<tonic::Status>().expect("a tonic Status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "connection unavailable: tcp connect to 127.0.0.1:1 failed: Connection refused"
        );
    }

    // Issue 13, defect 7: poll_ready was Pending in CONNECTING without
    // registering on the watch, so a call waiting there never heard of the
    // TRANSIENT_FAILURE that should fail it.
    #[tokio::test]
    async fn fail_fast_poll_ready_is_woken_by_transient_failure() {
        let (publish, watch) = watch::channel(connectivity(ConnectivityState::Idle, None));
        let (inner, mut handle) = mock::pair::<(), ()>();
        handle.allow(0);
        let mut svc = mock::Spawn::new(FailFast::new(inner, watch));
        assert_pending!(svc.poll_ready());
        publish.send_replace(connectivity(ConnectivityState::Connecting, None));
        assert!(svc.is_woken(), "woken by CONNECTING");
        assert_pending!(svc.poll_ready());
        publish.send_replace(connectivity(
            ConnectivityState::TransientFailure,
            Some("refused"),
        ));
        assert!(svc.is_woken(), "woken by TRANSIENT_FAILURE");
        assert_ready_ok!(svc.poll_ready());
        let status = svc.call(()).await.unwrap_err();
        let status = status.downcast::<tonic::Status>().unwrap();
        assert_eq!(status.message(), "connection unavailable: refused");

        // And through the service as tower drives it, from another task.
        let (publish, watch) = watch::channel(connectivity(ConnectivityState::Connecting, None));
        let (inner, mut handle) = mock::pair::<(), ()>();
        handle.allow(0);
        let call = tokio::spawn(tower::ServiceExt::oneshot(FailFast::new(inner, watch), ()));
        tokio::task::yield_now().await;
        publish.send_replace(connectivity(ConnectivityState::TransientFailure, None));
        let error = call.await.unwrap().unwrap_err();
        assert_eq!(
            error.downcast::<tonic::Status>().unwrap().code(),
            tonic::Code::Unavailable
        );
        drop(handle);
    }

    #[tokio::test]
    async fn wait_for_ready_waits_through_transient_failure() {
        let (_publish, watch) = watch::channel(connectivity(
            ConnectivityState::TransientFailure,
            Some("down"),
        ));
        let (inner, mut handle) = mock::pair::<(), ()>();
        handle.allow(0);
        let mut svc = mock::Spawn::new(FailFast::new(inner, watch).wait_for_ready(true));
        assert_pending!(svc.poll_ready());
        handle.allow(1);
        assert!(svc.is_woken());
        assert_ready_ok!(svc.poll_ready());
        let response = svc.call(());
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(());
        response.await.unwrap();
    }

    #[tokio::test]
    async fn transport_failures_become_unavailable() {
        let (_publish, watch) = watch::channel(connectivity(ConnectivityState::Ready, None));
        let (inner, mut handle) = mock::pair::<(), ()>();
        let mut svc = mock::Spawn::new(FailFast::new(inner, watch));
        assert_ready_ok!(svc.poll_ready());
        let response = svc.call(());
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_error(TransportError::new("connection reset by peer"));
        let status = response
            .await
            .unwrap_err()
            .downcast::<tonic::Status>()
            .unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "transport error: connection reset by peer"
        );
    }

    #[tokio::test]
    async fn ready_inner_is_used_even_in_transient_failure() {
        let (_publish, watch) = watch::channel(connectivity(
            ConnectivityState::TransientFailure,
            Some("old"),
        ));
        let (inner, mut handle) = mock::pair::<(), ()>();
        let mut svc = mock::Spawn::new(FailFast::new(inner, watch));
        assert_ready_ok!(svc.poll_ready());
        let response = svc.call(());
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(());
        response.await.unwrap();
    }
}
