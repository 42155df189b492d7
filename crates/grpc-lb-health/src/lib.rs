//! Client-side health checking (gRFC A17): a connection counts as READY only
//! while its server says, over `grpc.health.v1.Health/Watch`, that the
//! service is SERVING.
//!
//! [`HealthCheck::spawn`] starts one watch on one connection and publishes
//! what it learns as a [`Connectivity`]:
//!
//! - CONNECTING until the first answer, and again at each restart of the watch;
//! - READY on `SERVING`;
//! - TRANSIENT_FAILURE on any other status (`NOT_SERVING`, `SERVICE_UNKNOWN`),
//!   and when the watch fails, which is then restarted after a backoff (reset
//!   by every answer received);
//! - READY for good when the server does not implement the health service
//!   (`UNIMPLEMENTED`), logged as an error, as A17 and grpc-go do, so that a
//!   server without it is not taken out of rotation.
//!
//! The watch ends when its [`HealthWatch`] is dropped.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use grpc_lb_connect::Http2Connector;
//! use grpc_lb_core::ConnectivityState;
//! use grpc_lb_health::HealthCheck;
//! use tower::ServiceExt;
//!
//! let connection = Http2Connector::<tonic::body::Body>::new()
//!     .oneshot("127.0.0.1:50051".parse()?)
//!     .await?;
//! let mut health = HealthCheck::new("helloworld.Greeter").spawn(connection);
//! let state = health.wait_for_state_change(ConnectivityState::Connecting).await;
//! println!("the backend is {state}");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use grpc_lb_backoff::{Backoff, BackoffConfig};
use grpc_lb_core::{BoxError, Connectivity, ConnectivityState, SharedError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What to watch and how to retry: a service name (empty for the server as a
/// whole, as `healthCheckConfig.serviceName` says) and the backoff between
/// failed watches, gRPC's connection backoff by default as in grpc-go.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_backoff::BackoffConfig;
/// use grpc_lb_connect::Http2Connector;
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_health::HealthCheck;
/// use tonic_health::ServingStatus;
/// use tower::ServiceExt;
///
/// # async fn serve_health() -> (std::net::SocketAddr, tonic_health::server::HealthReporter) {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     let (reporter, service) = tonic_health::server::health_reporter();
/// #     tokio::spawn(
/// #         tonic::transport::Server::builder()
/// #             .add_service(service)
/// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// #     );
/// #     (addr, reporter)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let (addr, reporter) = serve_health().await; // a tonic server with grpc.health.v1
/// reporter.set_service_status("helloworld.Greeter", ServingStatus::Serving).await;
///
/// let connection = Http2Connector::<tonic::body::Body>::new().oneshot(addr).await?;
/// let retry_fast = BackoffConfig::try_from_secs_f64(0.1, 1.6, 0.2, 5.0, 20.0)?;
/// let mut health = HealthCheck::new("helloworld.Greeter").backoff(retry_fast).spawn(connection);
///
/// // CONNECTING until the server's first answer, then READY while it is SERVING.
/// let state = health.wait_for_state_change(ConnectivityState::Connecting).await;
/// assert_eq!(state, ConnectivityState::Ready);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HealthCheck {
    service_name: String,
    backoff: BackoffConfig,
}

/// One running watch; dropping it stops the watch.
///
/// ```
/// use grpc_lb_connect::Http2Connector;
/// use grpc_lb_core::ConnectivityState::{Connecting, Ready, TransientFailure};
/// use grpc_lb_health::HealthCheck;
/// use tonic_health::ServingStatus;
/// use tower::ServiceExt;
///
/// # async fn serve_health() -> (std::net::SocketAddr, tonic_health::server::HealthReporter) {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     let (reporter, service) = tonic_health::server::health_reporter();
/// #     tokio::spawn(
/// #         tonic::transport::Server::builder()
/// #             .add_service(service)
/// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// #     );
/// #     (addr, reporter)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let (addr, reporter) = serve_health().await;
/// reporter.set_serving::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>().await;
/// let connection = Http2Connector::<tonic::body::Body>::new().oneshot(addr).await?;
///
/// // The empty name asks about the server as a whole.
/// let mut health = HealthCheck::new("").spawn(connection);
/// let mut states = health.watch();
/// states.wait_for(|c| c.state == Ready).await?;
///
/// // The server stops serving: the connection is no longer fit for calls.
/// reporter.set_service_status("", ServingStatus::NotServing).await;
/// let failed = states.wait_for(|c| c.state == TransientFailure).await?.clone();
/// assert_eq!(
///     failed.last_error.unwrap().to_string(),
///     r#"health check of service "": NOT_SERVING"#,
/// );
/// assert_eq!(health.state(), TransientFailure);
/// # let _ = Connecting;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HealthWatch {
    state: watch::Receiver<Connectivity>,
    /// Woken by the watch task after each change, for [`HealthWatch::poll_changed`].
    waker: Arc<AtomicWaker>,
    /// Whether `poll_changed` has reported the end of the watch.
    end_seen: bool,
    task: JoinHandle<()>,
}

/// Why a watch is not SERVING: the status the server sent.
///
/// ```
/// use grpc_lb_connect::Http2Connector;
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_health::{HealthCheck, NotServing};
/// use tonic_health::ServingStatus;
/// use tower::ServiceExt;
///
/// # async fn serve_health() -> (std::net::SocketAddr, tonic_health::server::HealthReporter) {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     let (reporter, service) = tonic_health::server::health_reporter();
/// #     tokio::spawn(
/// #         tonic::transport::Server::builder()
/// #             .add_service(service)
/// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// #     );
/// #     (addr, reporter)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let (addr, reporter) = serve_health().await;
/// reporter.set_service_status("helloworld.Greeter", ServingStatus::NotServing).await;
/// let connection = Http2Connector::<tonic::body::Body>::new().oneshot(addr).await?;
///
/// let mut health = HealthCheck::new("helloworld.Greeter").spawn(connection);
/// let state = health.wait_for_state_change(ConnectivityState::Connecting).await;
/// assert_eq!(state, ConnectivityState::TransientFailure);
/// let error = health.connectivity().last_error.unwrap();
/// assert!(error.is::<NotServing>());
/// assert!(error.to_string().ends_with("NOT_SERVING"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NotServing {
    service: String,
    status: ServingStatus,
}

impl fmt::Display for NotServing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "health check of service {:?}: {}",
            self.service,
            self.status.as_str_name()
        )
    }
}

impl std::error::Error for NotServing {}

/// The health watch itself failed; it is retried after a backoff.
///
/// ```
/// use grpc_lb_connect::Http2Connector;
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_health::{HealthCheck, WatchFailed};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // An HTTP/2 server that answers every request with 503: an overloaded proxy,
/// // say. (A 404 would read as UNIMPLEMENTED: no health service, so healthy.)
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(async move {
///     let (stream, _) = listener.accept().await?;
///     let unavailable = hyper::service::service_fn(|_| async {
///         let mut response = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
///         *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
///         Ok::<_, std::convert::Infallible>(response)
///     });
///     hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
///         .serve_connection(hyper_util::rt::TokioIo::new(stream), unavailable)
///         .await
///         .map_err(std::io::Error::other)
/// });
///
/// let connection = Http2Connector::<tonic::body::Body>::new().oneshot(addr).await?;
/// let mut health = HealthCheck::new("").spawn(connection);
/// let state = health.wait_for_state_change(ConnectivityState::Connecting).await;
/// assert_eq!(state, ConnectivityState::TransientFailure);
/// assert!(health.connectivity().last_error.unwrap().is::<WatchFailed>());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WatchFailed {
    service: String,
    status: tonic::Status,
}

impl fmt::Display for WatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "health check of service {:?} failed: {:?}: {}",
            self.service,
            self.status.code(),
            self.status.message()
        )
    }
}

impl std::error::Error for WatchFailed {}

impl HealthCheck {
    /// Watches `service_name` with the default backoff.
    pub fn new(service_name: impl Into<String>) -> Self {
        HealthCheck {
            service_name: service_name.into(),
            backoff: BackoffConfig::default(),
        }
    }

    /// Replaces the backoff between failed watches.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Starts watching over `connection` on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn<S>(&self, connection: S) -> HealthWatch
    where
        S: GrpcService<Body> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        S::ResponseBody: Send + 'static,
        S::ResponseBody: http_body::Body<Data = bytes::Bytes>,
        <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    {
        let (publish, state) = watch::channel(Connectivity::new(ConnectivityState::Connecting));
        let waker = Arc::new(AtomicWaker::new());
        let task = tokio::spawn(run(self.clone(), connection, publish, waker.clone()));
        HealthWatch {
            state,
            waker,
            end_seen: false,
            task,
        }
    }
}

impl HealthWatch {
    /// The connection's health as a connectivity state, with the reason when
    /// it is not READY.
    pub fn connectivity(&self) -> Connectivity {
        self.state.borrow().clone()
    }

    /// The connection's health as a connectivity state.
    pub fn state(&self) -> ConnectivityState {
        self.state.borrow().state
    }

    /// A receiver that sees every change.
    pub fn watch(&self) -> watch::Receiver<Connectivity> {
        self.state.clone()
    }

    /// `Ready` once after each change since the last call (read the new value
    /// with [`connectivity`](Self::connectivity)), and once when the watch
    /// ends for good (the server does not implement the health service);
    /// `Pending` otherwise, waking the task on the next change. This is how a
    /// task that drives many watches, such as a channel's worker, follows them
    /// without a future per watch.
    ///
    /// ```no_run
    /// # async fn run(connection: grpc_lb_connect::Http2Connection<tonic::body::Body>) {
    /// use std::future::poll_fn;
    /// use grpc_lb_health::HealthCheck;
    ///
    /// let mut health = HealthCheck::new("").spawn(connection);
    /// poll_fn(|cx| health.poll_changed(cx)).await;
    /// println!("now {}", health.state());
    /// # }
    /// ```
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        match self.state.has_changed() {
            Ok(true) => {
                self.state.borrow_and_update();
                Poll::Ready(())
            }
            Ok(false) => Poll::Pending,
            // The task ended after its last change; report that once.
            Err(_) if !self.end_seen => {
                self.end_seen = true;
                Poll::Ready(())
            }
            Err(_) => Poll::Pending,
        }
    }

    /// Waits until the state is no longer `from`, and returns the new one.
    pub async fn wait_for_state_change(&mut self, from: ConnectivityState) -> ConnectivityState {
        let changed = self
            .state
            .wait_for(|c| c.state != from)
            .await
            .map(|c| c.state);
        // An error means the task ended (the health service is unimplemented):
        // what it last said is final.
        changed.unwrap_or_else(|_| self.state())
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<S>(
    check: HealthCheck,
    connection: S,
    publish: watch::Sender<Connectivity>,
    waker: Arc<AtomicWaker>,
) where
    S: GrpcService<Body> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::ResponseBody: Send + 'static,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes>,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let set = |state: ConnectivityState, error: Option<SharedError>| {
        let changed = publish.send_if_modified(|current| {
            let changed = current.state != state || current.last_error.is_some() != error.is_some();
            *current = Connectivity {
                state,
                last_error: error,
            };
            changed
        });
        if changed {
            waker.wake();
        }
    };
    let mut client = HealthClient::new(connection);
    let mut backoff = Backoff::new(check.backoff);
    loop {
        set(ConnectivityState::Connecting, None);
        let request = HealthCheckRequest {
            service: check.service_name.clone(),
        };
        let failure = match client.watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(answer)) => {
                            backoff.reset();
                            let status = answer.status();
                            if status == ServingStatus::Serving {
                                set(ConnectivityState::Ready, None);
                            } else {
                                let reason = NotServing {
                                    service: check.service_name.clone(),
                                    status,
                                };
                                set(ConnectivityState::TransientFailure, Some(Arc::new(reason)));
                            }
                        }
                        Ok(None) => break tonic::Status::unavailable("health watch ended"),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        if failure.code() == Code::Unimplemented {
            tracing::error!(
                service = %check.service_name,
                "server does not implement grpc.health.v1.Health; health checking is off for this connection"
            );
            set(ConnectivityState::Ready, None);
            return;
        }
        let reason = WatchFailed {
            service: check.service_name.clone(),
            status: failure,
        };
        tracing::debug!(%reason, "health watch failed; retrying after a backoff");
        set(ConnectivityState::TransientFailure, Some(Arc::new(reason)));
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
