//! HTTP/1.1: a bounded pool of connections to one endpoint, for REST backends
//! behind the same resolvers, balancers and reconnect layer as gRPC.
//!
//! HTTP/1.1 carries one request at a time on a connection, so where an HTTP/2
//! subchannel holds one connection, an HTTP/1.1 subchannel holds a pool:
//! [`Http1Connector`] connects the first connection (which proves the endpoint
//! reachable) and returns an [`Http1Pool`], which opens more as requests
//! overlap, up to a bound per endpoint, and reuses each once its response has
//! been read to the end.
//!
//! **Readiness.** The pool is ready while its endpoint is reachable: it reports
//! itself closed (an error from `poll_ready`, and a wake-up of the task that
//! watches it) when opening a new connection fails, or when its last
//! connection has closed. The reconnect layer above then goes IDLE and
//! reconnects, backing off if that fails, exactly as for a lost HTTP/2
//! connection; a dead endpoint never looks ready. Requests beyond the bound
//! wait inside `call` for a connection to come free, so a balancer is never
//! told "not ready" for load alone.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> Result<(), grpc_lb_core::BoxError> {
//! use grpc_lb_connect::Http1Connector;
//! use http_body_util::Empty;
//! use tower_service::Service;
//!
//! let mut connector = Http1Connector::<Empty<bytes::Bytes>>::new().with_max_connections(8);
//! let mut pool = connector.call("127.0.0.1:8080".parse::<std::net::SocketAddr>()?).await?;
//! let request = http::Request::get("/health").body(Empty::new())?;
//! std::future::poll_fn(|cx| pool.poll_ready(cx)).await?;
//! let response = pool.call(request).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use grpc_lb_core::{BoxError, SharedError, TransportError};
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::connector::default_authority;
use crate::error::{ConnectError, ConnectionClosed, Step};
use crate::io::{Io, TcpConnector};
use crate::state::ConnectionState;

/// The default bound on connections (and so on requests in flight) per
/// endpoint.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;

/// Connects an HTTP/1.1 [`Http1Pool`] to a target, over any transport
/// ([`TcpConnector`] by default). See the [module docs](self).
///
/// ```
/// use grpc_lb_connect::Http1Connector;
/// use http_body_util::Empty;
/// use tower_service::Service;
///
/// # async fn hello_server() -> std::net::SocketAddr {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (mut socket, _) = listener.accept().await.unwrap();
/// #             tokio::spawn(async move {
/// #                 // One read per request is enough for these small GETs.
/// #                 let mut buf = [0u8; 4096];
/// #                 while let Ok(n) = socket.read(&mut buf).await {
/// #                     let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
/// #                     if n == 0 || socket.write_all(reply).await.is_err() {
/// #                         break;
/// #                     }
/// #                 }
/// #             });
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let addr = hello_server().await; // an HTTP/1.1 server on loopback
/// let mut connector = Http1Connector::<Empty<bytes::Bytes>>::new().with_max_connections(4);
/// let pool = connector.call(addr).await?;
/// assert_eq!(pool.peer(), addr.to_string());
/// assert_eq!(pool.connections(), 1); // the one that proved the endpoint reachable
/// # Ok(())
/// # }
/// ```
pub struct Http1Connector<B, C = TcpConnector> {
    transport: C,
    settings: Arc<Settings>,
    _body: PhantomData<fn(B)>,
}

#[derive(Clone, Debug)]
struct Settings {
    authority: Option<Authority>,
    scheme: Option<Scheme>,
    max_connections: usize,
}

impl<B> Http1Connector<B> {
    /// A connector over TCP, with at most [`DEFAULT_MAX_CONNECTIONS`]
    /// connections per endpoint.
    pub fn new() -> Self {
        Http1Connector {
            transport: TcpConnector::new(),
            settings: Arc::new(Settings {
                authority: None,
                scheme: None,
                max_connections: DEFAULT_MAX_CONNECTIONS,
            }),
            _body: PhantomData,
        }
    }
}

impl<B> Default for Http1Connector<B> {
    fn default() -> Self {
        Http1Connector::new()
    }
}

impl<B, C> Http1Connector<B, C> {
    /// Runs HTTP/1.1 over this transport instead: any `Service<Target>` whose
    /// response is an [`Io`] stream (TLS with ALPN `http/1.1`, Unix sockets,
    /// yours).
    pub fn with_transport<C2>(self, transport: C2) -> Http1Connector<B, C2> {
        Http1Connector {
            transport,
            settings: self.settings,
            _body: PhantomData,
        }
    }

    /// Sends this `Host` instead of the target, on requests that have none.
    pub fn with_authority(mut self, authority: Authority) -> Self {
        Arc::make_mut(&mut self.settings).authority = Some(authority);
        self
    }

    /// The scheme of the endpoint (`https` over TLS); kept for completeness,
    /// since HTTP/1.1 requests go out in origin form.
    pub fn with_scheme(mut self, scheme: Scheme) -> Self {
        Arc::make_mut(&mut self.settings).scheme = Some(scheme);
        self
    }

    /// At most `max` connections, and so requests in flight, per endpoint
    /// (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.settings).max_connections = max.max(1);
        self
    }

    /// The transport connector.
    pub fn get_ref(&self) -> &C {
        &self.transport
    }

    /// The transport connector, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.transport
    }

    /// The transport connector, consuming this one.
    pub fn into_inner(self) -> C {
        self.transport
    }
}

impl<B, C: Clone> Clone for Http1Connector<B, C> {
    fn clone(&self) -> Self {
        Http1Connector {
            transport: self.transport.clone(),
            settings: self.settings.clone(),
            _body: PhantomData,
        }
    }
}

impl<B, C: fmt::Debug> fmt::Debug for Http1Connector<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Connector")
            .field("transport", &self.transport)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Opens one more connection to the pool's endpoint.
type Dial<B> = Arc<
    dyn Fn(
            Arc<Health>,
        ) -> Pin<Box<dyn Future<Output = Result<SendRequest<B>, ConnectError>> + Send>>
        + Send
        + Sync,
>;

impl<B, C, T> Service<T> for Http1Connector<B, C>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    C: Service<T> + Clone + Send + Sync + 'static,
    C::Response: Io,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    T: fmt::Display + Clone + Send + Sync + 'static,
{
    type Response = Http1Pool<B>;
    type Error = ConnectError;
    type Future = Http1ConnectFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.transport
            .poll_ready(cx)
            .map_err(|e| ConnectError::new("".into(), Step::NotReady, Some(e.into())))
    }

    fn call(&mut self, target: T) -> Self::Future {
        let peer: Arc<str> = target.to_string().into();
        let settings = self.settings.clone();
        // The first connection uses the transport that was polled ready; the
        // pool's later ones, a clone polled ready by each dial.
        let first = self.transport.call(target.clone());
        let first = async move { first.await.map_err(Into::into) };
        let transport = self.transport.clone();
        let dial_peer = peer.clone();
        let dial: Dial<B> = Arc::new(move |health| {
            let mut transport = transport.clone();
            let target = target.clone();
            let peer = dial_peer.clone();
            Box::pin(async move {
                poll_fn(|cx| transport.poll_ready(cx))
                    .await
                    .map_err(|e| ConnectError::new(peer.clone(), Step::NotReady, Some(e.into())))?;
                let io = transport.call(target);
                handshake(peer, async move { io.await.map_err(Into::into) }, health).await
            })
        });
        Http1ConnectFuture {
            inner: Box::pin(async move {
                let health = Arc::new(Health::default());
                let send = handshake(peer.clone(), first, health.clone()).await?;
                Ok(Http1Pool::new(peer, send, dial, health, &settings))
            }),
        }
    }
}

/// Connects the transport and runs the HTTP/1.1 handshake, spawning the task
/// that drives the connection and counts it in `health` while it lives.
async fn handshake<B, F, I>(
    peer: Arc<str>,
    io: F,
    health: Arc<Health>,
) -> Result<SendRequest<B>, ConnectError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = Result<I, BoxError>>,
    I: Io,
{
    let io = io
        .await
        .map_err(|e| ConnectError::new(peer.clone(), Step::Connect, Some(e)))?;
    let (send, connection) = http1::Builder::new()
        .handshake::<_, B>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::new(peer.clone(), Step::Handshake, Some(e.into())))?;
    health.live.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        let result = connection.await;
        tracing::debug!(%peer, ?result, "HTTP/1.1 connection closed");
        if health.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last connection: nothing shows the endpoint alive any more.
            let cause = match result {
                Err(error) => Arc::new(error) as SharedError,
                Ok(()) => Arc::new(AllClosed) as SharedError,
            };
            health.closed.close(Some(cause));
        }
    });
    Ok(send)
}

/// The pool's liveness, shared with its connections' tasks (which hold no
/// connection, so no cycle keeps a dropped pool's connections open).
#[derive(Debug, Default)]
struct Health {
    live: AtomicUsize,
    closed: ConnectionState,
}

/// The cause of a pool closing when its last connection closed cleanly.
#[derive(Debug)]
struct AllClosed;

impl fmt::Display for AllClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("every HTTP/1.1 connection to the endpoint has closed")
    }
}

impl std::error::Error for AllClosed {}

/// The future of [`Http1Connector`]: resolves to a pool once its first
/// connection is up.
///
/// ```
/// use grpc_lb_connect::{http1::Http1ConnectFuture, Http1Connector};
/// use http_body_util::Empty;
/// use tower_service::Service;
///
/// # async fn hello_server() -> std::net::SocketAddr {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (mut socket, _) = listener.accept().await.unwrap();
/// #             tokio::spawn(async move {
/// #                 // One read per request is enough for these small GETs.
/// #                 let mut buf = [0u8; 4096];
/// #                 while let Ok(n) = socket.read(&mut buf).await {
/// #                     let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
/// #                     if n == 0 || socket.write_all(reply).await.is_err() {
/// #                         break;
/// #                     }
/// #                 }
/// #             });
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let addr = hello_server().await;
/// let mut connector = Http1Connector::<Empty<bytes::Bytes>>::new();
/// let connecting: Http1ConnectFuture<_> = connector.call(addr);
/// let pool = connecting.await?;
/// assert!(!pool.is_closed());
/// # Ok(())
/// # }
/// ```
pub struct Http1ConnectFuture<B> {
    inner: Pin<Box<dyn Future<Output = Result<Http1Pool<B>, ConnectError>> + Send>>,
}

impl<B> fmt::Debug for Http1ConnectFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1ConnectFuture").finish_non_exhaustive()
    }
}

impl<B> Future for Http1ConnectFuture<B> {
    type Output = Result<Http1Pool<B>, ConnectError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

// ===== impl Http1Pool =====

/// HTTP/1.1 connections to one endpoint: a `tower::Service` that sends each
/// request on an idle connection, or a new one while under the bound, or
/// waits for one to come free. See the [module docs](self).
///
/// Clones share the pool. `poll_ready` fails with [`ConnectionClosed`] once
/// the endpoint is gone (a new connection failed, or the last one closed), and
/// then wakes the task that last polled the original (not a clone): the
/// subchannel learns of it with no request in flight.
///
/// ```
/// use std::future::poll_fn;
/// use grpc_lb_connect::Http1Connector;
/// use http_body_util::{BodyExt, Empty};
/// use tower_service::Service;
///
/// # async fn hello_server() -> std::net::SocketAddr {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (mut socket, _) = listener.accept().await.unwrap();
/// #             tokio::spawn(async move {
/// #                 // One read per request is enough for these small GETs.
/// #                 let mut buf = [0u8; 4096];
/// #                 while let Ok(n) = socket.read(&mut buf).await {
/// #                     let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
/// #                     if n == 0 || socket.write_all(reply).await.is_err() {
/// #                         break;
/// #                     }
/// #                 }
/// #             });
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let addr = hello_server().await;
/// let mut pool = Http1Connector::<Empty<bytes::Bytes>>::new().call(addr).await?;
///
/// // Two requests at once need two connections: HTTP/1.1 carries one at a time.
/// poll_fn(|cx| pool.poll_ready(cx)).await?;
/// let first = pool.call(http::Request::get("/a").body(Empty::new())?);
/// poll_fn(|cx| pool.poll_ready(cx)).await?;
/// let second = pool.call(http::Request::get("/b").body(Empty::new())?);
/// let (first, second) = tokio::try_join!(first, second)?;
/// assert_eq!(pool.connections(), 2);
/// assert_eq!(pool.in_flight(), 2);
///
/// // Read to the end, each response hands its connection back for reuse.
/// assert_eq!(first.into_body().collect().await?.to_bytes(), "hello");
/// assert_eq!(second.into_body().collect().await?.to_bytes(), "hello");
/// assert_eq!((pool.in_flight(), pool.idle()), (0, 2));
/// # Ok(())
/// # }
/// ```
pub struct Http1Pool<B> {
    shared: Arc<Pool<B>>,
    watcher: bool,
}

struct Pool<B> {
    peer: Arc<str>,
    authority: Authority,
    idle: Mutex<Vec<SendRequest<B>>>,
    permits: Arc<Semaphore>,
    max: usize,
    dial: Dial<B>,
    health: Arc<Health>,
}

impl<B> Http1Pool<B> {
    fn new(
        peer: Arc<str>,
        first: SendRequest<B>,
        dial: Dial<B>,
        health: Arc<Health>,
        settings: &Settings,
    ) -> Self {
        let authority = match &settings.authority {
            Some(authority) => authority.clone(),
            None => default_authority(&peer),
        };
        Http1Pool {
            shared: Arc::new(Pool {
                peer,
                authority,
                idle: Mutex::new(vec![first]),
                permits: Arc::new(Semaphore::new(settings.max_connections)),
                max: settings.max_connections,
                dial,
                health,
            }),
            watcher: true,
        }
    }

    /// The peer, as its target was written.
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// True once the pool has closed: a new connection failed, or the last
    /// one closed.
    pub fn is_closed(&self) -> bool {
        self.shared.health.closed.is_closed()
    }

    /// Connections open now, idle or busy.
    pub fn connections(&self) -> usize {
        self.shared.health.live.load(Ordering::Acquire)
    }

    /// Idle connections, ready for a request.
    pub fn idle(&self) -> usize {
        self.shared.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    /// Requests in flight (each on a connection of its own).
    pub fn in_flight(&self) -> usize {
        self.shared.max - self.shared.permits.available_permits()
    }

    fn closed_error(&self) -> ConnectionClosed {
        closed_error(&self.shared)
    }
}

fn closed_error<B>(pool: &Pool<B>) -> ConnectionClosed {
    ConnectionClosed::new(pool.peer.clone(), pool.health.closed.cause())
}

impl<B> Clone for Http1Pool<B> {
    /// A handle on the same pool; it reports the pool closed like the
    /// original but wakes no one.
    fn clone(&self) -> Self {
        Http1Pool {
            shared: self.shared.clone(),
            watcher: false,
        }
    }
}

impl<B> fmt::Debug for Http1Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Pool")
            .field("peer", &self.shared.peer)
            .field("connections", &self.connections())
            .field("in_flight", &self.in_flight())
            .field("max", &self.shared.max)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<B> Service<Request<B>> for Http1Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<PooledBody<B>>;
    type Error = BoxError;
    type Future = Http1ResponseFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let closed = &self.shared.health.closed;
        if closed.is_closed() {
            return Poll::Ready(Err(self.closed_error().into()));
        }
        if self.watcher {
            closed.register_watcher(cx.waker());
            if closed.is_closed() {
                return Poll::Ready(Err(self.closed_error().into()));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let pool = self.shared.clone();
        Http1ResponseFuture {
            inner: Box::pin(send(pool, request)),
        }
    }
}

/// Takes an idle connection (or opens one, within the bound) and sends.
async fn send<B>(
    pool: Arc<Pool<B>>,
    request: Request<B>,
) -> Result<Response<PooledBody<B>>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let permit = pool
        .permits
        .clone()
        .acquire_owned()
        .await
        .expect("the pool's semaphore is never closed");
    let mut connection = loop {
        let idle = pool.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(mut connection) => {
                // A connection the server closed while idle is dropped.
                if poll_fn(|cx| connection.poll_ready(cx)).await.is_ok() {
                    break connection;
                }
            }
            None => {
                if pool.health.closed.is_closed() {
                    return Err(TransportError::new(closed_error(&pool)).into());
                }
                match (pool.dial)(pool.health.clone()).await {
                    Ok(connection) => break connection,
                    Err(error) => {
                        let error: SharedError = Arc::new(error);
                        pool.health.closed.close(Some(error.clone()));
                        return Err(TransportError::new(SharedCause(error)).into());
                    }
                }
            }
        }
    };
    let request = origin_form(request, &pool.authority);
    let response = connection.send_request(request).await.map_err(|error| {
        if error.is_user() {
            BoxError::from(error)
        } else {
            TransportError::new(error).into()
        }
    })?;
    let slot = Slot {
        connection,
        _permit: permit,
        pool: Arc::downgrade(&pool),
    };
    Ok(response.map(|body| PooledBody {
        body,
        slot: Some(slot),
    }))
}

/// HTTP/1.1 requests go out in origin form (`/path?query`) with a `Host`.
fn origin_form<B>(request: Request<B>, authority: &Authority) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(HOST) {
        let host = parts.uri.authority().unwrap_or(authority).as_str();
        if let Ok(value) = HeaderValue::from_str(host) {
            parts.headers.insert(HOST, value);
        }
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
    }
    Request::from_parts(parts, body)
}

/// A shared connect error as the cause of a failed request.
#[derive(Debug)]
struct SharedCause(SharedError);

impl fmt::Display for SharedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The response future of [`Http1Pool`] (boxed: it may wait for a
/// connection, open one, then send).
///
/// ```
/// use std::future::poll_fn;
/// use grpc_lb_connect::{http1::Http1ResponseFuture, Http1Connector};
/// use http_body_util::Empty;
/// use tower_service::Service;
///
/// # async fn hello_server() -> std::net::SocketAddr {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (mut socket, _) = listener.accept().await.unwrap();
/// #             tokio::spawn(async move {
/// #                 // One read per request is enough for these small GETs.
/// #                 let mut buf = [0u8; 4096];
/// #                 while let Ok(n) = socket.read(&mut buf).await {
/// #                     let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
/// #                     if n == 0 || socket.write_all(reply).await.is_err() {
/// #                         break;
/// #                     }
/// #                 }
/// #             });
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let addr = hello_server().await;
/// let mut pool = Http1Connector::<Empty<bytes::Bytes>>::new().call(addr).await?;
/// poll_fn(|cx| pool.poll_ready(cx)).await?;
/// let future: Http1ResponseFuture<_> = pool.call(http::Request::get("/").body(Empty::new())?);
/// assert_eq!(future.await?.status(), http::StatusCode::OK);
/// # Ok(())
/// # }
/// ```
pub struct Http1ResponseFuture<B> {
    inner: Pin<Box<dyn Future<Output = PoolResult<B>> + Send>>,
}

type PoolResult<B> = Result<Response<PooledBody<B>>, BoxError>;

impl<B> fmt::Debug for Http1ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1ResponseFuture")
            .finish_non_exhaustive()
    }
}

impl<B> Future for Http1ResponseFuture<B> {
    type Output = PoolResult<B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

// ===== impl PooledBody =====

/// The connection a response was read from, and its place in the bound,
/// until the body has been read.
struct Slot<B> {
    connection: SendRequest<B>,
    _permit: OwnedSemaphorePermit,
    pool: Weak<Pool<B>>,
}

impl<B> Slot<B> {
    /// The response was read to its end: the connection can take another
    /// request.
    fn release(self) {
        if let Some(pool) = self.pool.upgrade() {
            if !pool.health.closed.is_closed() && !self.connection.is_closed() {
                if let Ok(mut idle) = pool.idle.lock() {
                    idle.push(self.connection);
                }
            }
        }
    }
}

/// A response body from an [`Http1Pool`]: hyper's body, which hands its
/// connection back to the pool once read to the end. Dropped before the end,
/// it closes the connection instead (HTTP/1.1 cannot skip the rest).
///
/// ```
/// use std::future::poll_fn;
/// use grpc_lb_connect::{http1::PooledBody, Http1Connector};
/// use http_body_util::{BodyExt, Empty};
/// use tower_service::Service;
///
/// # async fn hello_server() -> std::net::SocketAddr {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         loop {
/// #             let (mut socket, _) = listener.accept().await.unwrap();
/// #             tokio::spawn(async move {
/// #                 // One read per request is enough for these small GETs.
/// #                 let mut buf = [0u8; 4096];
/// #                 while let Ok(n) = socket.read(&mut buf).await {
/// #                     let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
/// #                     if n == 0 || socket.write_all(reply).await.is_err() {
/// #                         break;
/// #                     }
/// #                 }
/// #             });
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let addr = hello_server().await;
/// let mut pool = Http1Connector::<Empty<bytes::Bytes>>::new().call(addr).await?;
/// poll_fn(|cx| pool.poll_ready(cx)).await?;
/// let response = pool.call(http::Request::get("/").body(Empty::new())?).await?;
/// let body: PooledBody<_> = response.into_body();
/// assert_eq!(pool.idle(), 0); // the connection belongs to the body until it is read
/// assert_eq!(body.collect().await?.to_bytes(), "hello");
/// assert_eq!(pool.idle(), 1);
/// # Ok(())
/// # }
/// ```
pub struct PooledBody<B> {
    body: Incoming,
    slot: Option<Slot<B>>,
}

impl<B> fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl<B> Body for PooledBody<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => {
                if let Some(slot) = self.slot.take() {
                    slot.release();
                }
            }
            Some(Err(_)) => self.slot = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // A body with nothing left to read (an empty one its reader never
        // polled) still frees its connection.
        if let Some(slot) = self.slot.take() {
            if self.body.is_end_stream() {
                slot.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        let authority = Authority::from_static("api.internal:8080");
        let request = origin_form(
            Request::get("http://other.example/users?id=1")
                .body(())
                .unwrap(),
            &authority,
        );
        assert_eq!(request.uri(), "/users?id=1");
        assert_eq!(request.headers()[HOST], "other.example");

        let request = origin_form(Request::get("/health").body(()).unwrap(), &authority);
        assert_eq!(request.uri(), "/health");
        assert_eq!(request.headers()[HOST], "api.internal:8080");

        let mut request = Request::get("/").body(()).unwrap();
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_static("kept"));
        assert_eq!(origin_form(request, &authority).headers()[HOST], "kept");
    }
}
