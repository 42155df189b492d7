//! One backend of the server list: its calls carry the backend's `lb-token`
//! and are counted for the load report.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use grpc_lb_core::{Connectivity, Subchannel};
use http::HeaderValue;
use tokio::sync::watch;
use tower_service::Service;

use crate::stats::{CallOutcome, ClientStatsRecorder};

/// The metadata key that carries a backend's load-balance token.
pub const LB_TOKEN_KEY: &str = "lb-token";

/// A backend service whose calls carry its `lb-token` and are counted in the
/// client stats; a fallback backend (no token) is passed through as it is,
/// and not counted, as grpc-go counts only the picks of its server-list
/// picker.
///
/// It forwards [`Subchannel`] to the service it wraps, so a balancer reads a
/// reconnecting subchannel's state through it.
///
/// Counting: a call is started when it is sent; it finishes when its
/// response future does: with a response (any status) it is
/// `known_received`, with an error `client_failed_to_send`.
///
/// ```
/// use grpc_lb_grpclb::{ClientStatsRecorder, LbToken};
/// use tower::{Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let echo_token = tower::service_fn(|request: http::Request<()>| async move {
///     let token = request.headers()["lb-token"].to_str().unwrap().to_owned();
///     Ok::<_, std::convert::Infallible>(http::Response::new(token))
/// });
/// let stats = ClientStatsRecorder::new();
/// let mut backend = LbToken::new(echo_token, Some("token-a"), Some(stats.clone()));
/// let response = backend.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// assert_eq!(response.into_body(), "token-a");
/// let report = stats.take();
/// assert_eq!((report.num_calls_started, report.num_calls_finished_known_received), (1, 1));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LbToken<S> {
    inner: S,
    token: Option<HeaderValue>,
    stats: Option<ClientStatsRecorder>,
}

impl<S> LbToken<S> {
    /// Wraps `inner`: calls carry `token` (if it is a valid metadata value)
    /// and are counted in `stats`.
    pub fn new(inner: S, token: Option<&str>, stats: Option<ClientStatsRecorder>) -> Self {
        let token = token.and_then(|token| match HeaderValue::from_str(token) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!("grpclb: a load-balance token is not valid metadata; not sent");
                None
            }
        });
        LbToken {
            inner,
            token,
            stats,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The token sent, if any.
    pub fn token(&self) -> Option<&HeaderValue> {
        self.token.as_ref()
    }
}

impl<S, B, RB> Service<http::Request<B>> for LbToken<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LbTokenFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token {
            request.headers_mut().insert(LB_TOKEN_KEY, token.clone());
        }
        if let Some(stats) = &self.stats {
            stats.call_started();
        }
        LbTokenFuture {
            inner: self.inner.call(request),
            stats: self.stats.clone(),
        }
    }
}

impl<S, Req> Subchannel<Req> for LbToken<S>
where
    S: Subchannel<Req>,
{
    fn connectivity(&self) -> watch::Receiver<Connectivity> {
        self.inner.connectivity()
    }

    fn poll_connectivity(&mut self, cx: &mut Context<'_>) -> Connectivity {
        self.inner.poll_connectivity(cx)
    }

    fn connect(&mut self) {
        self.inner.connect()
    }

    fn disconnect(&mut self) {
        self.inner.disconnect()
    }

    fn request_resolution(&self) {
        self.inner.request_resolution()
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`LbToken`]: counts the call's end.
    #[derive(Debug)]
    pub struct LbTokenFuture<F> {
        #[pin]
        inner: F,
        stats: Option<ClientStatsRecorder>,
    }
}

impl<F, T, E> Future for LbTokenFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(stats) = this.stats.take() {
            stats.call_finished(match &result {
                Ok(_) => CallOutcome::KnownReceived,
                Err(_) => CallOutcome::FailedToSend,
            });
        }
        Poll::Ready(result)
    }
}
