//! Retries for gRPC over any tower service of HTTP requests, as gRFC A6 and
//! grpc-go define them.
//!
//! [`Retry`] sends each RPC again when the service config's `retryPolicy`
//! allows it: the attempt ended with a retryable status before any response
//! headers (a Trailers-Only answer or a failed transport), attempts are left,
//! the server did not push back, the channel's [`RetryThrottle`] is not
//! throttling, and the request body still fits the replay buffer. It waits
//! `min(initialBackoff × multiplier^n, maxBackoff)`, jittered by ±20 %, or as
//! long as the server's `grpc-retry-pushback-ms` says, and never past the
//! RPC's deadline (`grpc-timeout`, re-sent shortened on every attempt).
//!
//! Independently of any policy, an RPC that never left the client is sent
//! again at once, and one a server refused before processing it
//! (`REFUSED_STREAM`, or a graceful `GOAWAY` that excluded its stream) is sent
//! again once: these *transparent* retries are what lets a backend die or
//! drain without failing RPCs it never saw. They count neither as attempts nor
//! against the throttle.
//!
//! ```
//! use grpc_lb_retry::RetryLayer;
//! use grpc_lb_service_config::ServiceConfig;
//! use tower::ServiceBuilder;
//!
//! let config: ServiceConfig = r#"{"methodConfig": [{
//!     "name": [{"service": "helloworld.Greeter"}],
//!     "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
//!                     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
//! }], "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#
//!     .parse()?;
//! let layer = RetryLayer::new(config);
//! # fn channel() -> tower::util::BoxCloneService<http::Request<tonic::body::Body>, http::Response<()>, grpc_lb_core::BoxError> { unimplemented!() }
//! # if false {
//! // `channel` is a grpc_lb::Channel, or any clonable HTTP service.
//! let service = ServiceBuilder::new().layer(layer).service(channel());
//! // let client = GreeterClient::new(service);
//! # let _ = service;
//! # }
//! # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod classify;
mod replay;
mod throttle;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use grpc_lb_core::{grpc_timeout, BoxError};
use grpc_lb_service_config::{RetryPolicy, ServiceConfig};
use http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::{classify, Pushback, Verdict};
pub use crate::classify::{http_status_to_code, transparent_retry, TransparentRetry};
pub use crate::replay::{ReplayBody, ReplayError};
pub use crate::throttle::RetryThrottle;

/// How much of a request body is kept for retries: grpc-go's default
/// `MaxRetryRPCBufferSize`, 256 KiB. A bigger request is committed to the
/// attempt under way once it outgrows it.
pub const DEFAULT_BUFFER_LIMIT: usize = 256 * 1024;

/// How many times in a row an RPC is sent again because it never left the
/// client. grpc-go has no bound but the deadline; one here keeps an RPC
/// without a deadline from circling a channel whose connections keep closing
/// under it.
pub const MAX_NEVER_SENT: u32 = 16;

/// The metadata gRFC A6 adds to every attempt after the first.
const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// Retries RPCs under a service config's retry policies; see the
/// [crate docs](crate).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use grpc_lb_retry::RetryLayer;
/// use http_body_util::{Empty, Full};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // A backend that is UNAVAILABLE (a Trailers-Only answer) for its first RPC.
/// let calls = Arc::new(AtomicU32::new(0));
/// let counted = calls.clone();
/// let backend = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
///     let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
///     async move {
///         let previous = request.headers().get("grpc-previous-rpc-attempts").cloned();
///         let status = if first { "14" } else { "0" };
///         let response = http::Response::builder()
///             .header("content-type", "application/grpc")
///             .header("grpc-status", status)
///             .header("seen-previous-attempts", previous.unwrap_or_else(|| "none".parse().unwrap()))
///             .body(Empty::<Bytes>::new())?;
///         Ok::<_, http::Error>(response)
///     }
/// });
///
/// let config = r#"{"methodConfig": [{
///     "name": [{"service": "helloworld.Greeter"}],
///     "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.1s", "maxBackoff": "1s",
///                     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
/// }]}"#;
/// let service = ServiceBuilder::new()
///     .layer(RetryLayer::new(config.parse()?))
///     .service(backend);
///
/// let request = http::Request::post("http://greeter/helloworld.Greeter/SayHello")
///     .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))?;
/// let response = service.oneshot(request).await?;
/// assert_eq!(response.headers()["grpc-status"], "0");
/// assert_eq!(response.headers()["seen-previous-attempts"], "1");
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # Ok(())
/// # }
/// ```
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Adds [`Retry`] to a service; every service it wraps shares one
/// [`RetryThrottle`], as a channel's RPCs do in grpc-go.
///
/// ```
/// use grpc_lb_retry::RetryLayer;
///
/// let config = r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#;
/// let layer = RetryLayer::with_buffer_limit(config.parse()?, 64 * 1024);
///
/// // Every service this layer wraps draws from the same bucket.
/// let throttle = layer.throttle().expect("the config sets retryThrottling");
/// assert_eq!(throttle.tokens(), 10.0);
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

struct Shared {
    source: Source,
    /// Set from the first config seen: at construction for a fixed config,
    /// at the first RPC for a followed one.
    throttle: OnceLock<Option<RetryThrottle>>,
    buffer_limit: usize,
}

/// Where the retry policies come from.
enum Source {
    Fixed(Arc<ServiceConfig>),
    /// Read again for every RPC, e.g. a channel's config in force.
    Following(Box<dyn Fn() -> Option<Arc<ServiceConfig>> + Send + Sync>),
}

impl Shared {
    fn config(&self) -> Option<Arc<ServiceConfig>> {
        let config = match &self.source {
            Source::Fixed(config) => Some(config.clone()),
            Source::Following(current) => current(),
        };
        self.throttle.get_or_init(|| {
            config
                .as_ref()
                .and_then(|c| c.retry_throttling())
                .map(RetryThrottle::new)
        });
        config
    }

    fn throttle(&self) -> Option<&RetryThrottle> {
        self.throttle.get().and_then(Option::as_ref)
    }
}

impl RetryLayer {
    /// Retries under `config`'s method configs and `retryThrottling`.
    pub fn new(config: ServiceConfig) -> Self {
        Self::with_buffer_limit(config, DEFAULT_BUFFER_LIMIT)
    }

    /// As [`new`](Self::new), keeping at most `bytes` of each request body for
    /// replays instead of [`DEFAULT_BUFFER_LIMIT`].
    pub fn with_buffer_limit(config: ServiceConfig, bytes: usize) -> Self {
        let throttle = OnceLock::from(config.retry_throttling().map(RetryThrottle::new));
        RetryLayer {
            shared: Arc::new(Shared {
                source: Source::Fixed(Arc::new(config)),
                throttle,
                buffer_limit: bytes,
            }),
        }
    }

    /// Retries under whatever config `current` returns when each RPC starts:
    /// a channel's config in force (`move || channel.service_config()`), so
    /// that `retryPolicy` from a resolver's service config is followed as it
    /// changes. `retryThrottling` is taken from the first config seen and
    /// kept (grpc-go builds a new throttle when it changes).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use grpc_lb_retry::RetryLayer;
    /// use grpc_lb_service_config::ServiceConfig;
    ///
    /// let config: Arc<ServiceConfig> = Arc::new(
    ///     r#"{"retryThrottling": {"maxTokens": 4, "tokenRatio": 0.5}}"#.parse()?,
    /// );
    /// let layer = RetryLayer::following(move || Some(config.clone()));
    /// assert!(layer.throttle().is_none(), "no RPC has read a config yet");
    /// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
    /// ```
    pub fn following(
        current: impl Fn() -> Option<Arc<ServiceConfig>> + Send + Sync + 'static,
    ) -> Self {
        RetryLayer {
            shared: Arc::new(Shared {
                source: Source::Following(Box::new(current)),
                throttle: OnceLock::new(),
                buffer_limit: DEFAULT_BUFFER_LIMIT,
            }),
        }
    }

    /// The throttle every wrapped service shares, if the config sets one.
    pub fn throttle(&self) -> Option<&RetryThrottle> {
        self.shared.throttle()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for Retry<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service made ready by `poll_ready` takes the first attempt; the
        // clone left behind makes itself ready for any later one.
        let spare = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, spare.clone());
        ResponseFuture {
            inner: Box::pin(attempts(ready, spare, self.shared.clone(), request)),
        }
    }
}

/// The response future of [`Retry`]: every attempt of one RPC, boxed once per
/// RPC rather than once per attempt.
///
/// ```
/// use bytes::Bytes;
/// use grpc_lb_retry::{ResponseFuture, RetryLayer};
/// use http_body_util::Empty;
/// use tower::{Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let backend = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
/// });
/// let mut service = RetryLayer::new(Default::default()).layer(backend);
/// let request = http::Request::new(Empty::<Bytes>::new());
/// let ready = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut service).await?;
/// let future: ResponseFuture<()> = ready.call(request);
/// assert_eq!(future.await?.status(), http::StatusCode::OK);
/// # Ok(())
/// # }
/// ```
pub struct ResponseFuture<ResBody> {
    inner: Pin<Box<dyn Future<Output = Result<Response<ResBody>, BoxError>> + Send>>,
}

impl<ResBody> Future for ResponseFuture<ResBody> {
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

async fn attempts<S, B, ResBody>(
    ready: S,
    mut spare: S,
    shared: Arc<Shared>,
    request: Request<B>,
) -> Result<Response<ResBody>, BoxError>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let config = shared.config();
    let policy = config
        .as_deref()
        .and_then(|config| config.method_config(parts.uri.path()))
        .and_then(|method| method.retry_policy());
    let deadline = grpc_timeout::parse(&parts.headers).map(|timeout| Instant::now() + timeout);
    let body = ReplayBody::new(body, shared.buffer_limit);
    let mut ready = Some(ready);
    let mut sent = 0u32;
    let mut policy_retries = 0u32;
    let mut retries_since_pushback = 0u32;
    let mut never_sent = 0u32;
    let mut refused_retried = false;
    loop {
        let mut service = match ready.take() {
            Some(service) => service,
            None => {
                std::future::poll_fn(|cx| spare.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                let next = spare.clone();
                std::mem::replace(&mut spare, next)
            }
        };
        let mut attempt = Request::new(tonic::body::Body::new(body.replay()));
        *attempt.method_mut() = parts.method.clone();
        *attempt.uri_mut() = parts.uri.clone();
        *attempt.version_mut() = parts.version;
        *attempt.headers_mut() = parts.headers.clone();
        *attempt.extensions_mut() = parts.extensions.clone();
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            attempt
                .headers_mut()
                .insert(grpc_timeout::HEADER, grpc_timeout::encode(left));
        }
        if sent > 0 {
            attempt
                .headers_mut()
                .insert(PREVIOUS_ATTEMPTS, HeaderValue::from(sent));
        }
        sent += 1;
        let result = service.call(attempt).await.map_err(Into::into);
        let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
        // What the retry policy judges: a transparent retry that is used up
        // falls back to it as UNAVAILABLE, as in grpc-go.
        let (code, pushback) = match classify(&result) {
            Verdict::Done { success } => {
                if success {
                    if let Some(throttle) = shared.throttle() {
                        throttle.record_success();
                    }
                }
                return result;
            }
            Verdict::NeverSent if never_sent < MAX_NEVER_SENT && !past_deadline => {
                never_sent += 1;
                tracing::debug!(
                    never_sent,
                    "request never left the client; sending it again"
                );
                continue;
            }
            Verdict::Unprocessed if !refused_retried && !past_deadline && body.is_replayable() => {
                refused_retried = true;
                tracing::debug!("request refused unprocessed; sending it again once");
                continue;
            }
            Verdict::NeverSent | Verdict::Unprocessed => (tonic::Code::Unavailable, Pushback::None),
            Verdict::Failed { code, pushback } => (code, pushback),
        };
        let Some(delay) = policy_delay(
            policy,
            &shared,
            code,
            pushback,
            policy_retries,
            &mut retries_since_pushback,
        ) else {
            return result;
        };
        if !body.is_replayable() || deadline.is_some_and(|d| Instant::now() + delay >= d) {
            return result;
        }
        drop(result);
        tracing::debug!(
            retry = policy_retries + 1,
            ?delay,
            "retrying under the retry policy"
        );
        tokio::time::sleep(delay).await;
        policy_retries += 1;
    }
}

/// The wait before the next attempt under `policy`, or `None` when the
/// policy does not allow one. Mirrors grpc-go's `shouldRetry`: the throttle
/// is charged only for a retryable code, and pushback resets the backoff.
fn policy_delay(
    policy: Option<&RetryPolicy>,
    shared: &Shared,
    code: tonic::Code,
    pushback: Pushback,
    retries: u32,
    retries_since_pushback: &mut u32,
) -> Option<Duration> {
    let policy = policy?;
    if pushback == Pushback::Refuse {
        if let Some(throttle) = shared.throttle() {
            throttle.record_failure();
        }
        return None;
    }
    if !policy.is_retryable(code) {
        return None;
    }
    if let Some(throttle) = shared.throttle() {
        if throttle.record_failure() {
            return None;
        }
    }
    if retries + 1 >= policy.max_attempts() {
        return None;
    }
    Some(match pushback {
        Pushback::Wait(delay) => {
            *retries_since_pushback = 0;
            delay
        }
        _ => {
            let nominal = policy.nominal_backoff(*retries_since_pushback + 1);
            *retries_since_pushback += 1;
            nominal.mul_f64(0.8 + 0.4 * rand::random::<f64>())
        }
    })
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("buffer_limit", &self.shared.buffer_limit)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("buffer_limit", &self.shared.buffer_limit)
            .field("throttle", &self.shared.throttle())
            .finish_non_exhaustive()
    }
}

impl<ResBody> fmt::Debug for ResponseFuture<ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
