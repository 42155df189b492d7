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
/// Counting: a call is started when it is sent. One whose response future
/// fails is finished at once as `client_failed_to_send`; one with a response
/// (any status) is finished as `known_received` when its response body ends
/// or is dropped, which is the end of the RPC (grpc-go counts at the call's
/// `Done`).
///
/// ```
/// use grpc_lb_grpclb::{ClientStatsRecorder, LbToken};
/// use http_body_util::{BodyExt, Full};
/// use tower::{Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let echo_token = tower::service_fn(|request: http::Request<()>| async move {
///     let token = request.headers()["lb-token"].to_str().unwrap().to_owned();
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(token))))
/// });
/// let stats = ClientStatsRecorder::new();
/// let mut backend = LbToken::new(echo_token, Some("token-a"), Some(stats.clone()));
/// let response = backend.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(body, "token-a");
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
    type Response = http::Response<LbTokenBody<RB>>;
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

impl<F, RB, E> Future for LbTokenFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<LbTokenBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let stats = this.stats.take();
        Poll::Ready(match result {
            Ok(response) => Ok(response.map(|inner| LbTokenBody { inner, stats })),
            Err(error) => {
                if let Some(stats) = stats {
                    stats.call_finished(CallOutcome::FailedToSend);
                }
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// The response body of an [`LbToken`] call: the call is counted as
    /// finished when the body ends, fails or is dropped ([`LbToken`]'s
    /// example reads one).
    #[derive(Debug)]
    pub struct LbTokenBody<B> {
        #[pin]
        inner: B,
        stats: Option<ClientStatsRecorder>,
    }

    impl<B> PinnedDrop for LbTokenBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(stats) = this.project().stats.take() {
                stats.call_finished(CallOutcome::KnownReceived);
            }
        }
    }
}

impl<B> LbTokenBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: http_body::Body> http_body::Body for LbTokenBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if matches!(frame, None | Some(Err(_))) {
            if let Some(stats) = this.stats.take() {
                stats.call_finished(CallOutcome::KnownReceived);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
