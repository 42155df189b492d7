//! Message size limits for gRPC over any tower service of HTTP requests, as the
//! service config's `maxRequestMessageBytes` and `maxResponseMessageBytes` and
//! grpc-go's `MaxCallSendMsgSize` / `MaxCallRecvMsgSize` define them.
//!
//! [`MessageSize`] reads the length prefix of every message in a request body
//! as it is sent and of every message in a response body as it is received,
//! without buffering either. A message above its limit fails the RPC with
//! `RESOURCE_EXHAUSTED` and grpc-go's wording, `trying to send message larger
//! than max (N vs. M)` or `grpc: received message larger than max (N vs. M)`.
//!
//! The limit for each RPC is chosen as grpc-go chooses it (`getMaxSize` in
//! `rpc_util.go`): the method config's value and the channel's own setting,
//! the smaller of the two when both are set; with neither, the default:
//!
//! | direction | default | source |
//! |---|---|---|
//! | send | 2 GiB − 1 ([`DEFAULT_MAX_SEND`]) | grpc-go `defaultClientMaxSendMessageSize` (`math.MaxInt32`) |
//! | receive | 4 MiB ([`DEFAULT_MAX_RECEIVE`]) | grpc-go `defaultClientMaxReceiveMessageSize` |
//!
//! What differs from grpc-go, and why:
//! - The length checked is the one on the wire, compressed when the message is;
//!   grpc-go also checks the size after decompression, which needs the
//!   decompressor (tonic's decoder does that, with its own
//!   `max_decoding_message_size`).
//! - grpc-go refuses an oversized request message before anything is sent.
//!   Here the request's headers have already left when the body shows the
//!   message's prefix, so the stream is reset (`CANCEL`) and the server sees a
//!   cancelled RPC; the caller gets the same `RESOURCE_EXHAUSTED`.
//!
//! ```
//! use grpc_lb_message_size::MessageSizeLayer;
//! use grpc_lb_service_config::ServiceConfig;
//! use tower::ServiceBuilder;
//!
//! let config: ServiceConfig = r#"{"methodConfig": [{
//!     "name": [{"service": "helloworld.Greeter"}],
//!     "maxRequestMessageBytes": 1024,
//!     "maxResponseMessageBytes": 65536
//! }]}"#.parse()?;
//! let layer = MessageSizeLayer::new(config).max_receive_message_size(16 << 20);
//! # fn channel() -> tower::util::BoxCloneService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, grpc_lb_core::BoxError> { unimplemented!() }
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

mod body;
mod scan;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use grpc_lb_core::BoxError;
use grpc_lb_service_config::ServiceConfig;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use crate::body::LimitedBody;
pub use crate::scan::{Direction, FrameScanner, MessageTooLarge, PREFIX_LEN};

/// The largest request message sent when neither the method config nor the
/// channel sets a limit: grpc-go's `math.MaxInt32`.
pub const DEFAULT_MAX_SEND: usize = i32::MAX as usize;

/// The largest response message received when neither the method config nor
/// the channel sets a limit: grpc-go's 4 MiB.
pub const DEFAULT_MAX_RECEIVE: usize = 4 * 1024 * 1024;

/// Adds [`MessageSize`] to a service.
///
/// ```
/// use grpc_lb_message_size::{MessageSizeLayer, DEFAULT_MAX_RECEIVE};
///
/// let layer = MessageSizeLayer::default().max_send_message_size(1 << 20);
/// let limits = layer.limits_for("/helloworld.Greeter/SayHello");
/// assert_eq!(limits, (1 << 20, DEFAULT_MAX_RECEIVE));
/// ```
#[derive(Clone, Debug, Default)]
pub struct MessageSizeLayer {
    shared: Arc<Settings>,
}

#[derive(Clone, Debug, Default)]
struct Settings {
    config: ServiceConfig,
    max_send: Option<usize>,
    max_receive: Option<usize>,
}

impl MessageSizeLayer {
    /// Limits from `config`'s method configs, with grpc-go's defaults where a
    /// method has none.
    pub fn new(config: ServiceConfig) -> Self {
        MessageSizeLayer {
            shared: Arc::new(Settings {
                config,
                max_send: None,
                max_receive: None,
            }),
        }
    }

    /// The channel's own send limit (grpc-go's `MaxCallSendMsgSize`): used
    /// where no method config sets one, and the smaller one where one does.
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_send = Some(bytes);
        self
    }

    /// The channel's own receive limit (grpc-go's `MaxCallRecvMsgSize`), chosen
    /// like [`max_send_message_size`](Self::max_send_message_size).
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_receive = Some(bytes);
        self
    }

    /// The `(send, receive)` limits for an RPC to `path`
    /// (`/package.Service/Method`).
    pub fn limits_for(&self, path: &str) -> (usize, usize) {
        self.shared.limits_for(path)
    }
}

impl Settings {
    fn limits_for(&self, path: &str) -> (usize, usize) {
        let method = self.config.method_config(path);
        let send = method.and_then(|m| m.max_request_message_bytes());
        let receive = method.and_then(|m| m.max_response_message_bytes());
        (
            choose(send, self.max_send, DEFAULT_MAX_SEND),
            choose(receive, self.max_receive, DEFAULT_MAX_RECEIVE),
        )
    }
}

/// grpc-go's `getMaxSize`: the smaller of the two settings, either alone, or
/// the default.
fn choose(method: Option<u64>, channel: Option<usize>, default: usize) -> usize {
    let method = method.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
    match (method, channel) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => default,
    }
}

impl<S> Layer<S> for MessageSizeLayer {
    type Service = MessageSize<S>;

    fn layer(&self, inner: S) -> MessageSize<S> {
        MessageSize {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Enforces message size limits on every RPC; see the [crate docs](crate).
///
/// ```
/// use bytes::Bytes;
/// use grpc_lb_message_size::MessageSizeLayer;
/// use http_body_util::{BodyExt, Full};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // A server whose reply is one 100-byte message.
/// let server = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
///     let mut reply = vec![0, 0, 0, 0, 100];
///     reply.resize(105, b'x');
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(reply))))
/// });
/// let service = ServiceBuilder::new()
///     .layer(MessageSizeLayer::default().max_receive_message_size(64))
///     .service(server);
///
/// let request = http::Request::post("/helloworld.Greeter/SayHello")
///     .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))?;
/// let response = service.oneshot(request).await?;
/// let error = response.into_body().collect().await.unwrap_err();
/// let status = tonic::Status::from_error(error);
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// assert_eq!(status.message(), "grpc: received message larger than max (100 vs. 64)");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MessageSize<S> {
    inner: S,
    shared: Arc<Settings>,
}

impl<S, B, ResBody> Service<Request<B>> for MessageSize<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<LimitedBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (send, receive) = self.shared.limits_for(request.uri().path());
        let tripped = Arc::new(OnceLock::new());
        let request = request
            .map(|body| tonic::body::Body::new(LimitedBody::sending(body, send, tripped.clone())));
        ResponseFuture {
            inner: self.inner.call(request),
            tripped,
            receive,
        }
    }
}

pin_project! {
    /// The response future of [`MessageSize`]: the inner service's answer with
    /// its body limited, or `RESOURCE_EXHAUSTED` if the request broke its limit.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use grpc_lb_message_size::{MessageSizeLayer, ResponseFuture};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
    /// // A server that reads the whole request before it answers.
    /// let server = tower::service_fn(|request: http::Request<tonic::body::Body>| async {
    ///     request.into_body().collect().await?;
    ///     Ok::<_, tonic::Status>(http::Response::new(Full::new(Bytes::new())))
    /// });
    /// let mut service = MessageSizeLayer::default().max_send_message_size(4).layer(server);
    ///
    /// let request = http::Request::post("/helloworld.Greeter/SayHello")
    ///     .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 5, 1, 2, 3, 4, 5])))?;
    /// let ready = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut service).await?;
    /// let future: ResponseFuture<_> = ready.call(request);
    /// let status = tonic::Status::from_error(future.await.unwrap_err());
    /// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    /// assert_eq!(status.message(), "trying to send message larger than max (5 vs. 4)");
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        tripped: Arc<OnceLock<MessageTooLarge>>,
        receive: usize,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<LimitedBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(too_large) = this.tripped.get() {
            // The request body stopped at the oversized message; whatever the
            // transport made of that, the caller is told why.
            return Poll::Ready(Err(too_large.to_status().into()));
        }
        let receive = *this.receive;
        Poll::Ready(
            result
                .map(|response| response.map(|body| LimitedBody::receiving(body, receive)))
                .map_err(Into::into),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_and_channel_limits_combine_as_grpc_go() {
        assert_eq!(choose(None, None, 7), 7);
        assert_eq!(choose(Some(5), None, 7), 5);
        assert_eq!(choose(None, Some(9), 7), 9);
        assert_eq!(choose(Some(5), Some(3), 7), 3);
        assert_eq!(choose(Some(2), Some(3), 7), 2);
        assert_eq!(choose(Some(u64::MAX), None, 7), usize::MAX);
    }

    #[test]
    fn per_method_limits_come_from_the_service_config() {
        let config: ServiceConfig = r#"{"methodConfig": [
            {"name": [{"service": "a.A"}], "maxRequestMessageBytes": 10},
            {"name": [{}], "maxResponseMessageBytes": 20}
        ]}"#
        .parse()
        .unwrap();
        let layer = MessageSizeLayer::new(config).max_send_message_size(15);
        assert_eq!(layer.limits_for("/a.A/M"), (10, DEFAULT_MAX_RECEIVE));
        assert_eq!(layer.limits_for("/b.B/M"), (15, 20));
        let cloned = layer.clone().max_receive_message_size(1);
        assert_eq!(cloned.limits_for("/b.B/M"), (15, 1));
        assert_eq!(layer.limits_for("/b.B/M"), (15, 20));
    }
}
