use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use grpc_lb_core::{BoxError, SharedError, TransportError};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use tower_service::Service;

use crate::error::ConnectionClosed;

/// Set once by the task that drives the connection, when the connection ends.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    closed: AtomicBool,
    cause: OnceLock<SharedError>,
    waker: AtomicWaker,
}

impl CloseSignal {
    pub(crate) fn close(&self, cause: Option<SharedError>) {
        if let Some(cause) = cause {
            let _ = self.cause.set(cause);
        }
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    pub(crate) fn cause(&self) -> Option<SharedError> {
        self.cause.get().cloned()
    }
}

/// One connected HTTP/2 transport, usable as a `tower::Service`.
///
/// `poll_ready` fails with [`ConnectionClosed`] once the transport has gone, and
/// wakes the task that last polled it at that moment, even if it had answered
/// `Ready`: a reconnect layer above learns of the loss with no request in flight.
///
/// Many requests may be in flight at once; HTTP/2 multiplexes them.
///
/// ```
/// use grpc_lb_connect::Http2Connector;
/// use http_body_util::Empty;
/// use tower_service::Service;
///
/// # async fn h2_server() -> std::net::SocketAddr {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (stream, _) = listener.accept().await.unwrap();
/// #             let echo_authority = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
/// #                 let authority = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
/// #                 Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(authority))))
/// #             });
/// #             tokio::spawn(
/// #                 hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
/// #                     .serve_connection(hyper_util::rt::TokioIo::new(stream), echo_authority),
/// #             );
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let addr = h2_server().await;
/// let mut connection = Http2Connector::<Empty<bytes::Bytes>>::new().call(addr).await?;
/// std::future::poll_fn(|cx| connection.poll_ready(cx)).await?;
///
/// // Clones send on the same connection, from any task.
/// let mut clone = connection.clone();
/// let (a, b) = tokio::try_join!(
///     connection.call(http::Request::get("/a").body(Empty::new())?),
///     clone.call(http::Request::get("/b").body(Empty::new())?),
/// )?;
/// assert_eq!((a.status(), b.status()), (http::StatusCode::OK, http::StatusCode::OK));
/// assert!(!connection.is_closed());
/// # Ok(())
/// # }
/// ```
pub struct Http2Connection<B> {
    send: SendRequest<B>,
    peer: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// Sent as `user-agent`, after the request's own if it has one.
    user_agent: Option<HeaderValue>,
    closed: Arc<CloseSignal>,
    /// Only the original, held by the subchannel, registers for the close wake-up:
    /// clones handed to many callers must not take the one waker slot from it.
    watcher: bool,
}

impl<B> Clone for Http2Connection<B> {
    /// A handle on the same connection for sending requests from another task.
    /// It reports the connection closed like the original but wakes no one.
    fn clone(&self) -> Self {
        Http2Connection {
            send: self.send.clone(),
            peer: self.peer.clone(),
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            user_agent: self.user_agent.clone(),
            closed: self.closed.clone(),
            watcher: false,
        }
    }
}

impl<B> Http2Connection<B> {
    pub(crate) fn new(
        send: SendRequest<B>,
        peer: Arc<str>,
        scheme: Scheme,
        authority: Authority,
        closed: Arc<CloseSignal>,
    ) -> Self {
        Http2Connection {
            send,
            peer,
            scheme,
            authority,
            user_agent: None,
            closed,
            watcher: true,
        }
    }

    /// Sends `user_agent` as `user-agent` on every request.
    pub(crate) fn with_user_agent(mut self, user_agent: Option<HeaderValue>) -> Self {
        self.user_agent = user_agent;
        self
    }

    /// The peer, as its target was written (`127.0.0.1:50051`,
    /// `unix:/run/greeter.sock`, ...).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// True once the transport has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_closed() || self.send.is_closed()
    }

    fn closed_error(&self) -> ConnectionClosed {
        ConnectionClosed::new(self.peer.clone(), self.closed.cause.get().cloned())
    }

    /// Gives a path-only URI (what tonic's generated clients send) a scheme and an
    /// authority, which HTTP/2 requires as pseudo-headers.
    fn complete_uri(&self, uri: Uri) -> Uri {
        if uri.scheme().is_some() && uri.authority().is_some() {
            return uri;
        }
        let mut parts = uri.into_parts();
        parts.scheme.get_or_insert_with(|| self.scheme.clone());
        parts
            .authority
            .get_or_insert_with(|| self.authority.clone());
        parts
            .path_and_query
            .get_or_insert_with(|| PathAndQuery::from_static("/"));
        Uri::from_parts(parts).expect("scheme, authority and path are all set")
    }
}

impl<B> fmt::Debug for Http2Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connection")
            .field("peer", &self.peer)
            .field("authority", &self.authority)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<B> Service<Request<B>> for Http2Connection<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.closed.is_closed() {
            return Poll::Ready(Err(self.closed_error().into()));
        }
        if self.watcher {
            self.closed.waker.register(cx.waker());
            // The connection may have closed between the check and the registration.
            if self.closed.is_closed() {
                return Poll::Ready(Err(self.closed_error().into()));
            }
        }
        match self.send.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.closed_error().into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.complete_uri(parts.uri);
        if let Some(user_agent) = &self.user_agent {
            crate::connector::add_user_agent(&mut parts.headers, user_agent);
        }
        let response = self.send.send_request(Request::from_parts(parts, body));
        ResponseFuture {
            inner: Box::pin(response),
        }
    }
}

/// The response future of [`Http2Connection`].
///
/// hyper's request future cannot be named, so it is boxed here, which is the same
/// one allocation per request that tonic's own `Channel` makes.
///
/// ```
/// use grpc_lb_connect::{Http2Connector, ResponseFuture};
/// use http_body_util::Empty;
/// use tower_service::Service;
///
/// # async fn h2_server() -> std::net::SocketAddr {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (stream, _) = listener.accept().await.unwrap();
/// #             let echo_authority = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
/// #                 let authority = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
/// #                 Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(authority))))
/// #             });
/// #             tokio::spawn(
/// #                 hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
/// #                     .serve_connection(hyper_util::rt::TokioIo::new(stream), echo_authority),
/// #             );
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let addr = h2_server().await;
/// let mut connection = Http2Connector::<Empty<bytes::Bytes>>::new().call(addr).await?;
/// std::future::poll_fn(|cx| connection.poll_ready(cx)).await?;
/// let future: ResponseFuture = connection.call(http::Request::get("/").body(Empty::new())?);
/// assert_eq!(future.await?.status(), http::StatusCode::OK);
/// # Ok(())
/// # }
/// ```
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = hyper::Result<Response<Incoming>>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx).map_err(|error| {
            if error.is_user() {
                error.into()
            } else {
                // Closed, reset or broken under the request: the transport failed.
                TransportError::new(error).into()
            }
        })
    }
}
