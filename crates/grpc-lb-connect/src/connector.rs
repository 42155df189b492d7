use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_core::{BoxError, SharedError};
use http::uri::{Authority, Scheme};
use http_body::Body;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service;

use crate::connection::Http2Connection;
use crate::error::{ConnectError, Step};
use crate::io::{Io, TcpConnector};
use crate::keepalive::{Keepalive, KeepaliveConfig};
use crate::preface::{Preface, PrefaceWatch};
use crate::scaling::{OpenConnection, Scaling, MAX_CONNECTIONS_CAP};
use crate::state::ConnectionState;

/// Connects over a transport and HTTP/2 (prior knowledge).
///
/// The transport is any connector whose response is an [`Io`] stream
/// ([`TcpConnector`] by default, so the targets are `SocketAddr`s): Unix
/// sockets, TLS over either, or your own, set with
/// [`with_transport`](Http2Connector::with_transport). The HTTP/2 handshake runs
/// over whatever it returns.
///
/// The returned future resolves only after the server's SETTINGS frame has been
/// read, so a success here means the server really answered. Requests sent on the
/// resulting [`Http2Connection`] that carry only a path get the connector's scheme
/// (`http`, or `https` once set with [`with_scheme`](Http2Connector::with_scheme))
/// and authority filled in, as tonic's `Channel` does; the authority defaults to
/// the target itself when it is a valid `host[:port]` (`localhost` otherwise, as
/// for a Unix socket) and can be set with
/// [`with_authority`](Http2Connector::with_authority) so that `:authority` names
/// the service rather than an IP.
///
/// The connector is cheap to clone: its settings are shared.
///
/// ```
/// use grpc_lb_connect::Http2Connector;
/// use http_body_util::{BodyExt, Empty};
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
/// let addr = h2_server().await; // answers with the :authority it was sent
/// let mut connector = Http2Connector::<Empty<bytes::Bytes>>::new()
///     .with_authority("greeter.example:50051".parse()?);
/// let mut connection = connector.call(addr).await?;
///
/// // A path-only request, as tonic sends them, gets the scheme and authority.
/// std::future::poll_fn(|cx| connection.poll_ready(cx)).await?;
/// let response = connection.call(http::Request::get("/").body(Empty::new())?).await?;
/// assert_eq!(response.into_body().collect().await?.to_bytes(), "greeter.example:50051");
/// # Ok(())
/// # }
/// ```
pub struct Http2Connector<B, C = TcpConnector> {
    transport: C,
    settings: Arc<Settings>,
    _body: PhantomData<fn(B)>,
}

#[derive(Clone, Debug, Default)]
struct Settings {
    authority: Option<Authority>,
    scheme: Option<Scheme>,
    /// Shared by every clone, so that a `too_many_pings` GOAWAY on one
    /// connection slows the pings of all later ones.
    keepalive: Arc<Keepalive>,
    /// HTTP/2 connections per endpoint (gRFC A105); 0 and 1 both mean one.
    max_connections: usize,
}

impl<B> Http2Connector<B> {
    /// A connector over TCP with hyper's HTTP/2 defaults and no keepalive pings
    /// (gRPC's default; see [`with_keepalive`](Http2Connector::with_keepalive)).
    pub fn new() -> Self {
        Http2Connector {
            transport: TcpConnector::new(),
            settings: Arc::new(Settings::default()),
            _body: PhantomData,
        }
    }

    /// A connector over TLS over TCP, sending `https` as `:scheme`.
    ///
    /// The server name the certificate is checked against is the config's
    /// ([`TlsConfig::with_server_name`](crate::tls::TlsConfig::with_server_name)),
    /// or else the IP address connected to.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), grpc_lb_core::BoxError> {
    /// use grpc_lb_connect::tls::TlsConfig;
    /// use grpc_lb_connect::Http2Connector;
    /// use tower_service::Service;
    ///
    /// let ca = std::fs::read("ca.pem")?;
    /// let config = TlsConfig::new().with_root_certificates_pem(&ca)?.with_server_name("greeter.example")?;
    /// let mut connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::tls(config)
    ///     .with_authority("greeter.example:443".parse()?);
    /// let connection = connector.call("192.0.2.10:443".parse()?).await?;
    /// # drop(connection);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(
        config: crate::tls::TlsConfig,
    ) -> Http2Connector<B, crate::tls::TlsConnector<TcpConnector>> {
        Http2Connector::new()
            .with_transport(crate::tls::TlsConnector::new(config, TcpConnector::new()))
            .with_scheme(Scheme::HTTPS)
    }
}

impl<B, C> Http2Connector<B, C> {
    /// Runs HTTP/2 over this transport instead: any `Service<Target>` whose
    /// response is an [`Io`] stream.
    pub fn with_transport<C2>(self, transport: C2) -> Http2Connector<B, C2> {
        Http2Connector {
            transport,
            settings: self.settings,
            _body: PhantomData,
        }
    }

    /// The transport connector.
    pub fn get_ref(&self) -> &C {
        &self.transport
    }

    /// The transport connector, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.transport
    }

    /// The transport connector, consuming the HTTP/2 connector.
    pub fn into_inner(self) -> C {
        self.transport
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Sends this authority (`host[:port]`) in `:authority` instead of the address.
    pub fn with_authority(mut self, authority: Authority) -> Self {
        self.settings_mut().authority = Some(authority);
        self
    }

    /// Sends this `:scheme` (`https` over TLS) instead of `http`.
    pub fn with_scheme(mut self, scheme: Scheme) -> Self {
        self.settings_mut().scheme = Some(scheme);
        self
    }

    /// Sends keepalive PINGs (gRFC A8) as `config` says.
    ///
    /// The connector and its clones share the time in force: when a server
    /// closes a connection with a `too_many_pings` GOAWAY, every later
    /// connection made by any of them uses twice the time that connection
    /// used, as grpc-go does for all the subchannels of a channel. The closed
    /// connection's error then has a [`TooManyPings`](crate::TooManyPings)
    /// in its source chain. Setting a config starts over from its time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb_connect::{Http2Connector, KeepaliveConfig};
    ///
    /// let connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new()
    ///     .with_keepalive(KeepaliveConfig::new().time(Duration::from_secs(60)));
    /// assert_eq!(connector.keepalive_time(), Some(Duration::from_secs(60)));
    /// ```
    pub fn with_keepalive(mut self, config: KeepaliveConfig) -> Self {
        self.settings_mut().keepalive = Keepalive::new(config);
        self
    }

    /// Opens up to `max` HTTP/2 connections to each endpoint (gRFC A105's
    /// `max_connections_per_subchannel`: default 1, capped at 10): when
    /// every connection a subchannel has is at the server's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, the next request opens another
    /// one (one at a time), instead of waiting for a stream. The subchannel
    /// still follows its first connection: it goes IDLE when that one closes
    /// or drains, and the extra ones end with it.
    ///
    /// ```
    /// use grpc_lb_connect::Http2Connector;
    ///
    /// let connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new()
    ///     .with_max_connections(4);
    /// assert_eq!(connector.max_connections(), 4);
    /// assert_eq!(connector.with_max_connections(50).max_connections(), 10);
    /// ```
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.settings_mut().max_connections = max.clamp(1, MAX_CONNECTIONS_CAP);
        self
    }

    /// The most HTTP/2 connections opened to one endpoint (1 unless set with
    /// [`with_max_connections`](Self::with_max_connections)).
    pub fn max_connections(&self) -> usize {
        self.settings.max_connections.max(1)
    }

    /// The keepalive settings as given to
    /// [`with_keepalive`](Self::with_keepalive).
    pub fn keepalive(&self) -> &KeepaliveConfig {
        self.settings.keepalive.config()
    }

    /// The keepalive time the next connection will use: the configured one,
    /// or longer after `too_many_pings` GOAWAYs; `None` when keepalive is off.
    pub fn keepalive_time(&self) -> Option<Duration> {
        self.settings.keepalive.time()
    }
}

impl<B> Default for Http2Connector<B> {
    fn default() -> Self {
        Http2Connector::new()
    }
}

impl<B, C: Clone> Clone for Http2Connector<B, C> {
    fn clone(&self) -> Self {
        Http2Connector {
            transport: self.transport.clone(),
            settings: self.settings.clone(),
            _body: PhantomData,
        }
    }
}

impl<B, C: fmt::Debug> fmt::Debug for Http2Connector<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connector")
            .field("transport", &self.transport)
            .field("settings", &self.settings)
            .finish()
    }
}

/// The future returned by [`Http2Connector`]: resolves to a connection once the
/// server's HTTP/2 SETTINGS frame has arrived.
///
/// It is boxed: a connection attempt is rare next to the requests it serves, and
/// the handshake future of hyper cannot be named.
///
/// ```
/// use grpc_lb_connect::{ConnectFuture, Http2Connector};
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
/// let mut connector = Http2Connector::<Empty<bytes::Bytes>>::new();
/// let connecting: ConnectFuture<_> = connector.call(addr);
/// let connection = connecting.await?; // after the server's SETTINGS
/// assert_eq!(connection.peer(), addr.to_string());
/// # Ok(())
/// # }
/// ```
pub struct ConnectFuture<B> {
    inner: Pin<Box<dyn Future<Output = Result<Http2Connection<B>, ConnectError>> + Send>>,
}

impl<B> fmt::Debug for ConnectFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectFuture").finish_non_exhaustive()
    }
}

impl<B> Future for ConnectFuture<B> {
    type Output = Result<Http2Connection<B>, ConnectError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, C, T> Service<T> for Http2Connector<B, C>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    C: Service<T> + Clone + Send + Sync + 'static,
    C::Response: Io,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    T: fmt::Display + Clone + Send + Sync + 'static,
{
    type Response = Http2Connection<B>;
    type Error = ConnectError;
    type Future = ConnectFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.transport
            .poll_ready(cx)
            .map_err(|e| ConnectError::new("".into(), Step::NotReady, Some(e.into())))
    }

    fn call(&mut self, target: T) -> Self::Future {
        let peer: Arc<str> = target.to_string().into();
        let open_more = (self.max_connections() > 1).then(|| self.opener(target.clone()));
        let io = self.transport.call(target);
        let io = async move { io.await.map_err(Into::into) };
        let settings = self.settings.clone();
        ConnectFuture {
            inner: Box::pin(async move {
                let connection = connect(peer, io, settings.clone()).await?;
                Ok(match open_more {
                    Some(open) => {
                        let first = connection.state().clone();
                        connection.with_scaling(Scaling::new(settings.max_connections, open, first))
                    }
                    None => connection,
                })
            }),
        }
    }
}

impl<B, C> Http2Connector<B, C> {
    /// Opens one more connection to `target`, for a subchannel whose
    /// connections are all at the server's stream limit.
    fn opener<T>(&self, target: T) -> OpenConnection<B>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        C: Service<T> + Clone + Send + Sync + 'static,
        C::Response: Io,
        C::Error: Into<BoxError>,
        C::Future: Send + 'static,
        T: fmt::Display + Clone + Send + Sync + 'static,
    {
        let (transport, settings) = (self.transport.clone(), self.settings.clone());
        Arc::new(move || {
            let (mut transport, target) = (transport.clone(), target.clone());
            let peer: Arc<str> = target.to_string().into();
            let io = async move {
                std::future::poll_fn(|cx| transport.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                transport.call(target).await.map_err(Into::into)
            };
            Box::pin(connect(peer, io, settings.clone()))
        })
    }
}

async fn connect<B, F, I>(
    peer: Arc<str>,
    io: F,
    settings: Arc<Settings>,
) -> Result<Http2Connection<B>, ConnectError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = Result<I, BoxError>>,
    I: Io,
{
    let io = io
        .await
        .map_err(|e| ConnectError::new(peer.clone(), Step::Connect, Some(e)))?;
    let keepalive = settings.keepalive.clone();
    let keepalive_time = keepalive.time();
    let state = Arc::new(match keepalive_time {
        Some(time) => ConnectionState::with_keepalive(keepalive.clone(), time),
        None => ConnectionState::default(),
    });
    let (io, preface) = PrefaceWatch::new(io, state.clone(), peer.clone());

    let mut builder = http2::Builder::new(TokioExecutor::new());
    // hyper's keepalive PINGs and their timeout run on this timer.
    builder.timer(TokioTimer::new());
    if let Some(time) = keepalive_time {
        builder.keep_alive_interval(time);
        builder.keep_alive_timeout(keepalive.config().get_timeout());
        builder.keep_alive_while_idle(keepalive.config().get_permit_without_calls());
    }
    let (send, connection) = builder
        .handshake::<_, B>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::new(peer.clone(), Step::Handshake, Some(e.into())))?;

    let closed = state.clone();
    let on_close = state;
    let task_peer = peer.clone();
    tokio::spawn(async move {
        let result = connection.await;
        tracing::debug!(peer = %task_peer, ?result, "HTTP/2 connection closed");
        let cause = result.err().map(|error| Arc::new(error) as SharedError);
        on_close.close(cause);
    });

    match preface.await {
        Ok(Preface::Settings) => {}
        Ok(Preface::Unexpected) => return Err(ConnectError::new(peer, Step::NotHttp2, None)),
        Ok(Preface::Closed(cause)) => {
            return Err(ConnectError::new(
                peer,
                Step::ClosedBeforePreface,
                cause.map(crate::error::classify_io),
            ))
        }
        // The connection task ended, dropping the transport, before any verdict.
        Err(_) => {
            // The connection task ended, dropping the transport, before any
            // verdict: its error, set as it ends, is the cause.
            std::future::poll_fn(|cx| {
                closed.register_watcher(cx.waker());
                if closed.is_closed() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let cause = closed.cause().map(|e| Box::new(e) as BoxError);
            return Err(ConnectError::new(peer, Step::ClosedBeforePreface, cause));
        }
    }

    let authority = match &settings.authority {
        Some(authority) => authority.clone(),
        None => default_authority(&peer),
    };
    let scheme = settings.scheme.clone().unwrap_or(Scheme::HTTP);
    Ok(Http2Connection::new(send, peer, scheme, authority, closed))
}

/// The target itself when it is a valid `host[:port]`, else `localhost` (what
/// gRPC sends for Unix sockets).
pub(crate) fn default_authority(peer: &str) -> Authority {
    Authority::try_from(peer).unwrap_or_else(|_| Authority::from_static("localhost"))
}
