use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_core::{BoxError, SharedError};
use http::header::USER_AGENT;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue};
use http_body::Body;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service;

use crate::connection::{CloseSignal, Http2Connection};
use crate::error::{ConnectError, Step};
use crate::io::{Io, TcpConnector};
use crate::keepalive::{is_too_many_pings, Keepalive, KeepaliveConfig, TooManyPings};
use crate::preface::{Preface, PrefaceWatch};

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

#[derive(Clone, Debug)]
struct Settings {
    authority: Option<Authority>,
    scheme: Option<Scheme>,
    http2: Http2Config,
    /// Bounds a whole attempt, transport to the server's SETTINGS.
    connect_timeout: Option<Duration>,
    /// The `user-agent` sent: the user's, then [`DEFAULT_USER_AGENT`].
    user_agent: HeaderValue,
    /// Shared by every clone, so that a `too_many_pings` GOAWAY on one
    /// connection slows the pings of all later ones.
    keepalive: Arc<Keepalive>,
}

impl<B> Http2Connector<B> {
    /// A connector over TCP with hyper's HTTP/2 defaults and no keepalive pings
    /// (gRPC's default; see [`with_keepalive`](Http2Connector::with_keepalive)).
    pub fn new() -> Self {
        Http2Connector {
            transport: TcpConnector::new(),
            settings: Arc::new(Settings {
                authority: None,
                scheme: None,
                http2: Http2Config::new(),
                connect_timeout: None,
                user_agent: HeaderValue::from_static(DEFAULT_USER_AGENT),
                keepalive: Arc::default(),
            }),
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

    /// Uses these HTTP/2 settings (window sizes, frame and header limits)
    /// on every new connection; hyper's defaults for what `config` leaves
    /// unset.
    ///
    /// ```
    /// use grpc_lb_connect::{Http2Config, Http2Connector};
    ///
    /// let connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new()
    ///     .with_http2(Http2Config::new().initial_stream_window_size(1 << 20));
    /// assert_eq!(connector.http2().get_initial_stream_window_size(), Some(1 << 20));
    /// ```
    pub fn with_http2(mut self, config: Http2Config) -> Self {
        self.settings_mut().http2 = config;
        self
    }

    /// The HTTP/2 settings in use.
    pub fn http2(&self) -> &Http2Config {
        &self.settings.http2
    }

    /// Fails a connection attempt that has not got as far as the server's
    /// SETTINGS within `timeout` (transport, TLS and the HTTP/2 handshake
    /// together), with a [`ConnectError`] whose
    /// [`is_timeout`](ConnectError::is_timeout) is true;
    /// `None` (the default) sets no bound here, as tonic's
    /// `Endpoint::connect_timeout`.
    pub fn with_connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings_mut().connect_timeout = timeout;
        self
    }

    /// The connect timeout, if set.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.settings.connect_timeout
    }

    /// Sends `user_agent` followed by [`DEFAULT_USER_AGENT`] as `user-agent`
    /// (`"greeter/2 grpc-lb/0.1.0"`), as grpc-go's `WithUserAgent` and
    /// tonic's `Endpoint::user_agent` do; `None` sends the default alone, as
    /// without this call. A request that has a `user-agent` of its own
    /// keeps it, followed by this one (as tonic does).
    ///
    /// ```
    /// use grpc_lb_connect::Http2Connector;
    ///
    /// let connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new()
    ///     .with_user_agent(Some(http::HeaderValue::from_static("greeter/2")));
    /// assert_eq!(connector.user_agent(), &format!("greeter/2 {}", grpc_lb_connect::DEFAULT_USER_AGENT));
    /// ```
    pub fn with_user_agent(mut self, user_agent: Option<HeaderValue>) -> Self {
        let value = match user_agent {
            Some(prefix) => {
                join_user_agents(&prefix, &HeaderValue::from_static(DEFAULT_USER_AGENT))
            }
            None => HeaderValue::from_static(DEFAULT_USER_AGENT),
        };
        self.settings_mut().user_agent = value;
        self
    }

    /// The `user-agent` sent on every request.
    pub fn user_agent(&self) -> &HeaderValue {
        &self.settings.user_agent
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
    C: Service<T>,
    C::Response: Io,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    T: fmt::Display,
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
        let io = self.transport.call(target);
        let io = async move { io.await.map_err(Into::into) };
        let settings = self.settings.clone();
        let inner: Pin<Box<dyn Future<Output = _> + Send>> = match settings.connect_timeout {
            Some(timeout) => Box::pin(async move {
                let attempt = connect(peer.clone(), io, settings);
                match tokio::time::timeout(timeout, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(ConnectError::new(peer, Step::TimedOut(timeout), None)),
                }
            }),
            None => Box::pin(connect(peer, io, settings)),
        };
        ConnectFuture { inner }
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
    let (io, preface) = PrefaceWatch::new(io);

    let mut builder = http2::Builder::new(TokioExecutor::new());
    // hyper's keepalive PINGs and their timeout run on this timer.
    builder.timer(TokioTimer::new());
    settings.http2.apply(&mut builder);
    let keepalive = settings.keepalive.clone();
    let keepalive_time = keepalive.time();
    if let Some(time) = keepalive_time {
        builder.keep_alive_interval(time);
        builder.keep_alive_timeout(keepalive.config().get_timeout());
        builder.keep_alive_while_idle(keepalive.config().get_permit_without_calls());
    }
    let (send, connection) = builder
        .handshake::<_, B>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::new(peer.clone(), Step::Handshake, Some(e.into())))?;

    let closed = Arc::new(CloseSignal::default());
    let on_close = closed.clone();
    let task_peer = peer.clone();
    tokio::spawn(async move {
        let result = connection.await;
        tracing::debug!(peer = %task_peer, ?result, "HTTP/2 connection closed");
        let cause = result.err().map(|error| -> SharedError {
            match keepalive_time {
                Some(used) if is_too_many_pings(&error) => {
                    let new_time = keepalive.too_many_pings(used);
                    tracing::warn!(
                        peer = %task_peer,
                        ?used,
                        ?new_time,
                        "server sent GOAWAY too_many_pings; keepalive time raised"
                    );
                    Arc::new(TooManyPings::new(used, new_time, Box::new(error)))
                }
                _ => Arc::new(error),
            }
        });
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
                closed.register(cx.waker());
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
    Ok(Http2Connection::new(send, peer, scheme, authority, closed)
        .with_user_agent(Some(settings.user_agent.clone())))
}

/// The target itself when it is a valid `host[:port]`, else `localhost` (what
/// gRPC sends for Unix sockets).
pub(crate) fn default_authority(peer: &str) -> Authority {
    Authority::try_from(peer).unwrap_or_else(|_| Authority::from_static("localhost"))
}

/// The `user-agent` every connection sends (after the user's own, if set):
/// `grpc-lb/` and this crate's version, as grpc-go sends `grpc-go/1.x` and
/// tonic `tonic/0.x`.
pub const DEFAULT_USER_AGENT: &str = concat!("grpc-lb/", env!("CARGO_PKG_VERSION"));

/// `first second`: two user agents as one header value.
fn join_user_agents(first: &HeaderValue, second: &HeaderValue) -> HeaderValue {
    let mut joined = Vec::with_capacity(first.len() + 1 + second.len());
    joined.extend_from_slice(first.as_bytes());
    joined.push(b' ');
    joined.extend_from_slice(second.as_bytes());
    // Both are valid header values, and a space between them is allowed.
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| second.clone())
}

/// Sets `user-agent` to `ours`, or appends `ours` to the request's own.
pub(crate) fn add_user_agent(headers: &mut HeaderMap, ours: &HeaderValue) {
    match headers.get(USER_AGENT) {
        Some(own) => {
            let joined = join_user_agents(own, ours);
            headers.insert(USER_AGENT, joined);
        }
        None => {
            headers.insert(USER_AGENT, ours.clone());
        }
    }
}

/// HTTP/2 settings of a connection, with tonic's `Endpoint` names. Each one
/// left unset keeps hyper's default (hyper 1.x: 2 MiB stream and 5 MiB
/// connection windows, no adaptive window, 16 KiB frames, 16 KiB header
/// lists, a 4 KiB header table).
///
/// The window sizes, frame size, header list size and header table size go
/// to the server in the connection's SETTINGS frame (the connection window
/// in a WINDOW_UPDATE); the adaptive window (BDP estimation) overrides both
/// window sizes.
///
/// ```
/// use grpc_lb_connect::Http2Config;
///
/// let config = Http2Config::new()
///     .initial_stream_window_size(1 << 20)
///     .initial_connection_window_size(4 << 20)
///     .max_frame_size(64 << 10)
///     .max_header_list_size(32 << 10);
/// assert_eq!(config.get_max_frame_size(), Some(64 << 10));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http2Config {
    initial_stream_window_size: Option<u32>,
    initial_connection_window_size: Option<u32>,
    adaptive_window: Option<bool>,
    max_frame_size: Option<u32>,
    max_header_list_size: Option<u32>,
    header_table_size: Option<u32>,
    max_concurrent_reset_streams: Option<usize>,
    reset_stream_duration: Option<Duration>,
    max_local_error_reset_streams: Option<Option<usize>>,
}

impl Http2Config {
    /// hyper's defaults for everything.
    pub const fn new() -> Self {
        Http2Config {
            initial_stream_window_size: None,
            initial_connection_window_size: None,
            adaptive_window: None,
            max_frame_size: None,
            max_header_list_size: None,
            header_table_size: None,
            max_concurrent_reset_streams: None,
            reset_stream_duration: None,
            max_local_error_reset_streams: None,
        }
    }

    /// `SETTINGS_INITIAL_WINDOW_SIZE`: the stream-level flow-control window
    /// (`None`: hyper's).
    pub fn initial_stream_window_size(mut self, size: impl Into<Option<u32>>) -> Self {
        self.initial_stream_window_size = size.into();
        self
    }

    /// The connection-level flow-control window (`None`: hyper's).
    pub fn initial_connection_window_size(mut self, size: impl Into<Option<u32>>) -> Self {
        self.initial_connection_window_size = size.into();
        self
    }

    /// Adaptive flow control (BDP estimation), which overrides both window
    /// sizes.
    pub fn adaptive_window(mut self, enabled: bool) -> Self {
        self.adaptive_window = Some(enabled);
        self
    }

    /// `SETTINGS_MAX_FRAME_SIZE`: the largest frame the client accepts
    /// (`None`: hyper's; HTTP/2 allows 16 KiB to 16 MiB - 1).
    pub fn max_frame_size(mut self, size: impl Into<Option<u32>>) -> Self {
        self.max_frame_size = size.into();
        self
    }

    /// `SETTINGS_MAX_HEADER_LIST_SIZE`: the largest header list the client
    /// accepts.
    pub fn max_header_list_size(mut self, size: u32) -> Self {
        self.max_header_list_size = Some(size);
        self
    }

    /// `SETTINGS_HEADER_TABLE_SIZE`: the client's HPACK decoding table.
    pub fn header_table_size(mut self, size: u32) -> Self {
        self.header_table_size = Some(size);
        self
    }

    /// How many locally reset streams HTTP/2 remembers.
    pub fn max_concurrent_reset_streams(mut self, max: usize) -> Self {
        self.max_concurrent_reset_streams = Some(max);
        self
    }

    /// How long HTTP/2 remembers a locally reset stream.
    pub fn reset_stream_duration(mut self, duration: Duration) -> Self {
        self.reset_stream_duration = Some(duration);
        self
    }

    /// How many local error resets close the connection with
    /// `GOAWAY(ENHANCE_YOUR_CALM)`; `None` removes the limit.
    pub fn max_local_error_reset_streams(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_local_error_reset_streams = Some(max.into());
        self
    }

    /// The stream window, if set.
    pub fn get_initial_stream_window_size(&self) -> Option<u32> {
        self.initial_stream_window_size
    }

    /// The connection window, if set.
    pub fn get_initial_connection_window_size(&self) -> Option<u32> {
        self.initial_connection_window_size
    }

    /// Whether the adaptive window is on, if set.
    pub fn get_adaptive_window(&self) -> Option<bool> {
        self.adaptive_window
    }

    /// The maximum frame size, if set.
    pub fn get_max_frame_size(&self) -> Option<u32> {
        self.max_frame_size
    }

    /// The maximum header list size, if set.
    pub fn get_max_header_list_size(&self) -> Option<u32> {
        self.max_header_list_size
    }

    fn apply(&self, builder: &mut http2::Builder<TokioExecutor>) {
        if let Some(size) = self.initial_stream_window_size {
            builder.initial_stream_window_size(size);
        }
        if let Some(size) = self.initial_connection_window_size {
            builder.initial_connection_window_size(size);
        }
        if let Some(enabled) = self.adaptive_window {
            builder.adaptive_window(enabled);
        }
        if let Some(size) = self.max_frame_size {
            builder.max_frame_size(size);
        }
        if let Some(size) = self.max_header_list_size {
            builder.max_header_list_size(size);
        }
        if let Some(size) = self.header_table_size {
            builder.header_table_size(size);
        }
        if let Some(max) = self.max_concurrent_reset_streams {
            builder.max_concurrent_reset_streams(max);
        }
        if let Some(duration) = self.reset_stream_duration {
            builder.reset_stream_duration(duration);
        }
        if let Some(max) = self.max_local_error_reset_streams {
            builder.max_local_error_reset_streams(max);
        }
    }
}
