use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use grpc_lb_core::{BoxError, NotSent, TransportError};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::ConnectionClosed;
use crate::scaling::Scaling;
use crate::state::{ConnectionState, StreamSlot};

/// One connected HTTP/2 transport, usable as a `tower::Service`.
///
/// `poll_ready` fails with [`ConnectionClosed`] once the transport has gone or
/// the server has sent a GOAWAY (then with a [`GoAway`](crate::error::GoAway)
/// as its cause), and wakes the task that last polled the original handle at
/// that moment, even if it had answered `Ready`: a reconnect layer above
/// learns of the loss with no request in flight, and takes a draining
/// connection out of the picker the moment its GOAWAY is read. Requests
/// already sent go on to their end; a request handed to `call` after that
/// fails at once, unsent, with [`NotSent`] in its error's chain, which a retry
/// layer may send elsewhere.
///
/// Many requests may be in flight at once; HTTP/2 multiplexes them, up to the
/// server's `SETTINGS_MAX_CONCURRENT_STREAMS`. At that limit `poll_ready` is
/// `Pending` (a balancer prefers another endpoint) and wakes the task when a
/// stream frees; a request handed to `call` anyway waits in its future for a
/// stream rather than being refused by the server. A request holds its
/// stream until its response body ([`Http2Body`]) ends or is dropped.
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
    state: Arc<ConnectionState>,
    /// More connections to the same endpoint for the requests this one has
    /// no stream for (gRFC A105); `None` with one connection per endpoint.
    scaling: Option<Arc<Scaling<B>>>,
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
            state: self.state.clone(),
            scaling: self.scaling.clone(),
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
        state: Arc<ConnectionState>,
    ) -> Self {
        Http2Connection {
            send,
            peer,
            scheme,
            authority,
            user_agent: None,
            state,
            scaling: None,
            watcher: true,
        }
    }

    /// Sends `user_agent` as `user-agent` on every request.
    pub(crate) fn with_user_agent(mut self, user_agent: Option<HeaderValue>) -> Self {
        self.user_agent = user_agent;
        self
    }

    pub(crate) fn with_scaling(mut self, scaling: Scaling<B>) -> Self {
        self.scaling = Some(Arc::new(scaling));
        self
    }

    pub(crate) fn into_parts(self) -> (SendRequest<B>, Arc<ConnectionState>) {
        (self.send, self.state)
    }

    pub(crate) fn state(&self) -> &Arc<ConnectionState> {
        &self.state
    }

    /// The peer, as its target was written (`127.0.0.1:50051`,
    /// `unix:/run/greeter.sock`, ...).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// True once the transport has closed.
    pub fn is_closed(&self) -> bool {
        self.state.is_closed() || self.send.is_closed()
    }

    /// True once the server has sent a GOAWAY: the connection takes no new
    /// request, and closes when the requests it had end.
    pub fn is_draining(&self) -> bool {
        self.state.draining().is_some()
    }

    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`, or `None` when it set
    /// none (no limit).
    pub fn max_concurrent_streams(&self) -> Option<usize> {
        Some(self.state.limit()).filter(|&limit| limit != usize::MAX)
    }

    /// Requests holding a stream on this connection now: sent and not yet
    /// answered to the end of their response body.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight()
    }

    /// The HTTP/2 connections open to this endpoint: this one, and those
    /// opened because it was at the server's stream limit (at most
    /// [`Http2Connector::with_max_connections`](crate::Http2Connector::with_max_connections)
    /// in all).
    pub fn connections(&self) -> usize {
        1 + self.scaling.as_ref().map_or(0, |s| s.extra_connections())
    }

    fn closed_error(&self) -> ConnectionClosed {
        closed_error(&self.peer, &self.state)
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
            .field("draining", &self.is_draining())
            .field("in_flight", &self.in_flight())
            .field("max_concurrent_streams", &self.max_concurrent_streams())
            .finish()
    }
}

/// Why the connection takes no request: closed (with its cause), or draining
/// (with the GOAWAY).
fn closed_error(peer: &Arc<str>, state: &ConnectionState) -> ConnectionClosed {
    // The GOAWAY is the root of whatever followed it.
    let cause = state.draining_cause().or_else(|| state.cause());
    ConnectionClosed::new(peer.clone(), cause)
}

fn not_sent(peer: &Arc<str>, state: &ConnectionState) -> BoxError {
    TransportError::new(NotSent::new(closed_error(peer, state))).into()
}

impl<B> Service<Request<B>> for Http2Connection<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Http2Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.state.is_unusable() {
            return Poll::Ready(Err(self.closed_error().into()));
        }
        if self.watcher {
            self.state.register_watcher(cx.waker());
            // The connection may have closed between the check and the registration.
            if self.state.is_unusable() {
                return Poll::Ready(Err(self.closed_error().into()));
            }
        }
        if !self.has_slot() {
            self.state.wait(cx.waker());
            if let Some(scaling) = &self.scaling {
                scaling.wait(cx.waker());
            }
            // A slot may have freed between the check and the registration.
            if !self.has_slot() {
                return Poll::Pending;
            }
        }
        match self.send.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.closed_error().into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.state.is_unusable() {
            let error = not_sent(&self.peer, &self.state);
            return ResponseFuture {
                inner: Box::pin(std::future::ready(Err(error))),
            };
        }
        let (mut parts, body) = request.into_parts();
        parts.uri = self.complete_uri(parts.uri);
        if let Some(user_agent) = &self.user_agent {
            crate::connector::add_user_agent(&mut parts.headers, user_agent);
        }
        let request = Request::from_parts(parts, body);
        let inner: BoxResponseFuture = match self.try_acquire() {
            Some((None, slot)) => {
                let response = self.send.send_request(request);
                Box::pin(async move { answered(response.await, slot) })
            }
            Some((Some(mut extra), slot)) => {
                let response = extra.send_request(request);
                Box::pin(async move { answered(response.await, slot) })
            }
            None => {
                // At the server's limit: wait here for a stream rather than
                // queue in hyper, where h2 would open it at once after a
                // stream ends and the server might still count that one.
                let mut waiting = Waiting {
                    send: self.send.clone(),
                    peer: self.peer.clone(),
                    state: self.state.clone(),
                    scaling: self.scaling.clone(),
                };
                Box::pin(async move {
                    let (extra, slot) = std::future::poll_fn(|cx| waiting.poll_slot(cx)).await?;
                    let mut send = extra.unwrap_or(waiting.send);
                    answered(send.send_request(request).await, slot)
                })
            }
        };
        ResponseFuture { inner }
    }
}

impl<B> Http2Connection<B>
where
    B: Send + 'static,
{
    fn has_slot(&self) -> bool {
        self.state.has_slot() || self.scaling.as_ref().is_some_and(|s| s.has_slot())
    }

    /// A free stream: on this connection (`None`), else on the oldest extra
    /// connection with one.
    fn try_acquire(&self) -> Option<(Option<SendRequest<B>>, StreamSlot)> {
        if let Some(slot) = self.state.try_acquire() {
            return Some((None, slot));
        }
        let (send, slot) = self.scaling.as_ref()?.try_acquire()?;
        Some((Some(send), slot))
    }
}

/// A request waiting for a stream on any connection to the endpoint.
struct Waiting<B> {
    send: SendRequest<B>,
    peer: Arc<str>,
    state: Arc<ConnectionState>,
    scaling: Option<Arc<Scaling<B>>>,
}

impl<B: Send + 'static> Waiting<B> {
    #[allow(clippy::type_complexity)]
    fn poll_slot(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Option<SendRequest<B>>, StreamSlot), BoxError>> {
        loop {
            if self.state.is_unusable() {
                return Poll::Ready(Err(not_sent(&self.peer, &self.state)));
            }
            if let Some(slot) = self.state.try_acquire() {
                return Poll::Ready(Ok((None, slot)));
            }
            if let Some(scaling) = &self.scaling {
                if let Some((send, slot)) = scaling.try_acquire() {
                    return Poll::Ready(Ok((Some(send), slot)));
                }
                scaling.wait(cx.waker());
            }
            self.state.wait(cx.waker());
            let extra_slot = self.scaling.as_ref().is_some_and(|s| s.has_slot());
            if self.state.is_unusable() || self.state.has_slot() || extra_slot {
                continue;
            }
            return Poll::Pending;
        }
    }
}

fn answered(
    result: hyper::Result<Response<Incoming>>,
    slot: StreamSlot,
) -> Result<Response<Http2Body>, BoxError> {
    match result {
        Ok(response) => Ok(response.map(|inner| Http2Body {
            inner,
            slot: Some(slot),
        })),
        Err(error) if error.is_user() => Err(error.into()),
        // Closed, reset or broken under the request: the transport failed.
        Err(error) => {
            let h2 = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<h2::Error>());
            if h2.is_some_and(|e| e.reason() == Some(h2::Reason::REFUSED_STREAM)) {
                slot.refused();
            } else if h2.is_some_and(|e| e.is_go_away() && e.is_remote())
                && slot.connection().go_aways_failed_unwritten_only()
            {
                // Failed by a GOAWAY whose last-stream-id was at least the
                // highest stream written (see `PrefaceWatch`): its HEADERS
                // never left, so it may go again as often as one never sent,
                // not just once as a stream the server saw and refused.
                return Err(TransportError::new(NotSent::new(error)).into());
            }
            Err(TransportError::new(error).into())
        }
    }
}

type BoxResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Http2Body>, BoxError>> + Send>>;

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
    inner: BoxResponseFuture,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Http2Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

pin_project! {
    /// The body of a response from an [`Http2Connection`]: hyper's
    /// [`Incoming`], holding its request's stream until it ends (or fails, or
    /// is dropped), so that the connection counts the streams in use against
    /// the server's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    ///
    /// ```
    /// use grpc_lb_connect::{Http2Body, Http2Connector};
    /// use http_body_util::{BodyExt, Empty};
    /// use tower_service::Service;
    ///
    /// # async fn h2_server() -> std::net::SocketAddr {
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let addr = listener.local_addr().unwrap();
    /// #     tokio::spawn(async move {
    /// #         loop {
    /// #             let (stream, _) = listener.accept().await.unwrap();
    /// #             let hello = hyper::service::service_fn(|_: http::Request<hyper::body::Incoming>| async move {
    /// #                 Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hello"))))
    /// #             });
    /// #             tokio::spawn(
    /// #                 hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
    /// #                     .max_concurrent_streams(1)
    /// #                     .serve_connection(hyper_util::rt::TokioIo::new(stream), hello),
    /// #             );
    /// #         }
    /// #     });
    /// #     addr
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
    /// let addr = h2_server().await; // allows one stream per connection
    /// let mut connection = Http2Connector::<Empty<bytes::Bytes>>::new().call(addr).await?;
    /// assert_eq!(connection.max_concurrent_streams(), Some(1));
    ///
    /// let response = connection.call(http::Request::get("/").body(Empty::new())?).await?;
    /// let body: Http2Body = response.into_body();
    /// assert_eq!(connection.in_flight(), 1); // until the body ends
    /// assert_eq!(body.collect().await?.to_bytes(), "hello");
    /// assert_eq!(connection.in_flight(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub struct Http2Body {
        #[pin]
        inner: Incoming,
        slot: Option<StreamSlot>,
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        // Trailers end the stream (they carry END_STREAM), and gRPC clients
        // stop reading there.
        let ended = match &frame {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                this.slot.take();
                false
            }
            Poll::Pending => false,
        };
        if ended {
            if let Some(slot) = this.slot.take() {
                slot.ended_well();
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl fmt::Debug for Http2Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Body")
            .field("inner", &self.inner)
            .field("holds_stream", &self.slot.is_some())
            .finish()
    }
}
