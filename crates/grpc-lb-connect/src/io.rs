//! Transport connectors: services that turn a target into a connected byte
//! stream, the layer under the HTTP handshake.
//!
//! This is hyper-util's connector model with tokio's I/O traits: any
//! `tower::Service<Target>` whose response implements [`AsyncRead`] and
//! [`AsyncWrite`] (the [`Io`] bound) is a transport. [`TcpConnector`] and
//! [`UnixConnector`] are the built-in ones; TLS
//! (`tls::TlsConnector`, feature `tls`) wraps any of them;
//! a proxy, a socket option or a transport of your own is one more
//! `Service` in the same place. [`BoxConnector`] erases the type of any of them.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_core::BoxError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tower_service::Service;

/// A connected byte stream a transport connector may return: tokio's
/// [`AsyncRead`] + [`AsyncWrite`], `Send`, `Unpin` and `'static`.
///
/// Implemented for every type that has those bounds; a hyper `rt::Read +
/// rt::Write` stream becomes one through `hyper_util::rt::TokioIo`.
///
/// ```
/// use grpc_lb_connect::{BoxIo, Io};
///
/// fn erase(stream: impl Io) -> BoxIo {
///     BoxIo::new(stream)
/// }
///
/// // TCP and Unix streams, TLS streams and in-memory pipes are all `Io`.
/// let (client, _server) = tokio::io::duplex(64);
/// let _ = erase(client);
/// ```
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T> Io for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// A type-erased [`Io`] stream, the response of a [`BoxConnector`].
///
/// ```
/// use grpc_lb_connect::BoxIo;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (client, mut server) = tokio::io::duplex(64);
/// let mut io = BoxIo::new(client);
/// io.write_all(b"PRI * HTTP/2.0").await?;
///
/// let mut received = [0; 14];
/// server.read_exact(&mut received).await?;
/// assert_eq!(&received, b"PRI * HTTP/2.0");
/// # Ok(())
/// # }
/// ```
pub struct BoxIo(Box<dyn Io>);

impl BoxIo {
    /// Erases the type of `io`.
    pub fn new(io: impl Io) -> Self {
        BoxIo(Box::new(io))
    }
}

impl fmt::Debug for BoxIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxIo").finish_non_exhaustive()
    }
}

impl AsyncRead for BoxIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoxIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// A future of a transport connector that cannot be named otherwise: tokio's
/// connect futures are anonymous, and a connection attempt is rare next to the
/// requests it serves, so one allocation per attempt is the price.
///
/// A transport of your own names its future with it:
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use std::task::{Context, Poll};
/// use grpc_lb_connect::IoFuture;
/// use grpc_lb_core::BoxError;
/// use tokio::net::{TcpSocket, TcpStream};
/// use tower_service::Service;
///
/// /// TCP with a larger send buffer, for bulk transfers.
/// #[derive(Clone)]
/// struct BigSendBuffer;
///
/// impl Service<SocketAddr> for BigSendBuffer {
///     type Response = TcpStream;
///     type Error = BoxError;
///     type Future = IoFuture<TcpStream>;
///
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
///         Poll::Ready(Ok(()))
///     }
///
///     fn call(&mut self, addr: SocketAddr) -> Self::Future {
///         IoFuture::from_future(async move {
///             let socket = tokio::net::TcpSocket::new_v4()?;
///             socket.set_send_buffer_size(1 << 20)?;
///             Ok(socket.connect(addr).await?)
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let stream = BigSendBuffer.call(listener.local_addr()?).await?;
/// assert_eq!(stream.peer_addr()?, listener.local_addr()?);
/// # Ok(())
/// # }
/// ```
pub struct IoFuture<S> {
    inner: Pin<Box<dyn Future<Output = Result<S, BoxError>> + Send>>,
}

impl<S> IoFuture<S> {
    pub(crate) fn new(future: impl Future<Output = Result<S, BoxError>> + Send + 'static) -> Self {
        IoFuture {
            inner: Box::pin(future),
        }
    }

    /// Wraps (and boxes) any connect future, for connectors of your own.
    ///
    /// ```
    /// use grpc_lb_connect::IoFuture;
    ///
    /// let future: IoFuture<tokio::net::TcpStream> = IoFuture::from_future(async {
    ///     Ok(tokio::net::TcpStream::connect("127.0.0.1:50051").await?)
    /// });
    /// # drop(future);
    /// ```
    pub fn from_future(future: impl Future<Output = Result<S, BoxError>> + Send + 'static) -> Self {
        IoFuture::new(future)
    }
}

impl<S> fmt::Debug for IoFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoFuture").finish_non_exhaustive()
    }
}

impl<S> Future for IoFuture<S> {
    type Output = Result<S, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

// ===== impl TcpConnector =====

/// Connects TCP to a socket address, with `TCP_NODELAY` set (gRPC messages are
/// small and latency-bound; Nagle's algorithm only adds delay), and with the
/// socket options tonic's `Endpoint` offers: TCP keepalive (time, interval,
/// retries) and the local address to connect from. All are off (the
/// system's defaults) unless set, except `TCP_NODELAY`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_connect::TcpConnector;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let mut connector = TcpConnector::new()
///     .with_keepalive(Some(Duration::from_secs(60)))
///     .with_local_address(Some("127.0.0.1".parse()?));
/// let stream = connector.call(listener.local_addr()?).await?;
/// assert!(stream.nodelay()?);
/// assert_eq!(stream.local_addr()?.ip().to_string(), "127.0.0.1");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TcpConnector {
    nodelay: bool,
    keepalive: Option<Duration>,
    keepalive_interval: Option<Duration>,
    keepalive_retries: Option<u32>,
    local_address: Option<IpAddr>,
}

impl TcpConnector {
    /// A connector that sets `TCP_NODELAY` and nothing else.
    pub const fn new() -> Self {
        TcpConnector {
            nodelay: true,
            keepalive: None,
            keepalive_interval: None,
            keepalive_retries: None,
            local_address: None,
        }
    }

    /// Whether to set `TCP_NODELAY` on new connections (default: yes, as
    /// tonic and grpc-go do).
    pub const fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// TCP keepalive (`SO_KEEPALIVE`): `Some(idle)` sends probes after the
    /// connection has been idle that long; `None` (the default) leaves
    /// keepalive off, as tonic's `Endpoint::tcp_keepalive`.
    pub const fn with_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// The time between two unanswered keepalive probes (`TCP_KEEPINTVL`);
    /// `None` keeps the system's. Used only with keepalive on.
    pub const fn with_keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// How many unanswered probes end the connection (`TCP_KEEPCNT`); `None`
    /// keeps the system's. Used only with keepalive on.
    pub const fn with_keepalive_retries(mut self, retries: Option<u32>) -> Self {
        self.keepalive_retries = retries;
        self
    }

    /// Connects from this local IP address (any port), when the destination
    /// is of the same family; `None` (the default) lets the system choose,
    /// as hyper's `HttpConnector::set_local_address`.
    pub const fn with_local_address(mut self, address: Option<IpAddr>) -> Self {
        self.local_address = address;
        self
    }

    /// Whether `TCP_NODELAY` is set.
    pub const fn nodelay(&self) -> bool {
        self.nodelay
    }

    /// The keepalive idle time, if keepalive is on.
    pub const fn keepalive(&self) -> Option<Duration> {
        self.keepalive
    }

    /// The time between keepalive probes, if set.
    pub const fn keepalive_interval(&self) -> Option<Duration> {
        self.keepalive_interval
    }

    /// How many unanswered probes end a connection, if set.
    pub const fn keepalive_retries(&self) -> Option<u32> {
        self.keepalive_retries
    }

    /// The local address connections are made from, if set.
    pub const fn local_address(&self) -> Option<IpAddr> {
        self.local_address
    }

    /// Connects to `addr` with these settings.
    async fn connect(self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(local) = self.local_address {
            if local.is_ipv4() == addr.is_ipv4() {
                socket.bind(SocketAddr::new(local, 0))?;
            }
        }
        // Set before connecting, so that even the handshake's segments and
        // the first bytes go out as configured.
        socket.set_nodelay(self.nodelay)?;
        if let Some(idle) = self.keepalive {
            let mut keepalive = socket2::TcpKeepalive::new().with_time(idle);
            if let Some(interval) = self.keepalive_interval {
                keepalive = keepalive.with_interval(interval);
            }
            #[cfg(not(any(target_os = "openbsd", target_os = "windows")))]
            if let Some(retries) = self.keepalive_retries {
                keepalive = keepalive.with_retries(retries);
            }
            socket2::SockRef::from(&socket).set_tcp_keepalive(&keepalive)?;
        }
        socket.connect(addr).await
    }
}

impl Default for TcpConnector {
    fn default() -> Self {
        TcpConnector::new()
    }
}

impl Service<SocketAddr> for TcpConnector {
    type Response = TcpStream;
    type Error = BoxError;
    type Future = IoFuture<TcpStream>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let settings = self.clone();
        IoFuture::new(async move { Ok(settings.connect(addr).await?) })
    }
}

// ===== impl UnixConnector =====

/// Connects to a Unix domain socket by path.
///
/// On Linux and Android a path whose first byte is NUL (`"\0name"`) names a
/// socket in the abstract namespace, as gRPC's `unix-abstract:name` targets do;
/// elsewhere such a path fails with the operating system's error.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), grpc_lb_core::BoxError> {
/// use grpc_lb_connect::{Http2Connector, UnixConnector};
/// use tower_service::Service;
///
/// let mut connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new()
///     .with_transport(UnixConnector::new());
/// // Any `AsRef<Path>`; the HTTP/2 connector names the peer by its `Display`.
/// let connection = connector.call("/run/greeter.sock").await?;
/// # drop(connection);
/// # Ok(())
/// # }
/// ```
#[cfg(unix)]
#[derive(Clone, Debug, Default)]
pub struct UnixConnector {
    _priv: (),
}

#[cfg(unix)]
impl UnixConnector {
    /// A Unix domain socket connector.
    pub const fn new() -> Self {
        UnixConnector { _priv: () }
    }
}

#[cfg(unix)]
impl<P> Service<P> for UnixConnector
where
    P: AsRef<std::path::Path> + Send + 'static,
{
    type Response = tokio::net::UnixStream;
    type Error = BoxError;
    type Future = IoFuture<tokio::net::UnixStream>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, path: P) -> Self::Future {
        IoFuture::new(async move { Ok(tokio::net::UnixStream::connect(path).await?) })
    }
}

// ===== impl BoxConnector =====

/// Any transport connector for targets `T`, with its type erased: a cloneable
/// `Service<T, Response = BoxIo, Error = BoxError>`.
///
/// This keeps a custom connector's type out of the types that carry it (a
/// channel builder, a subchannel).
///
/// # Examples
///
/// ```
/// use grpc_lb_connect::{BoxConnector, TcpConnector};
///
/// let connector: BoxConnector<std::net::SocketAddr> = BoxConnector::new(TcpConnector::new());
/// # drop(connector);
/// ```
pub struct BoxConnector<T> {
    inner: Box<dyn ErasedConnector<T>>,
}

trait ErasedConnector<T>: Send + Sync {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;
    fn call(&mut self, target: T) -> IoFuture<BoxIo>;
    fn clone_box(&self) -> Box<dyn ErasedConnector<T>>;
}

impl<C, T> ErasedConnector<T> for C
where
    C: Service<T> + Clone + Send + Sync + 'static,
    C::Response: Io,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    T: 'static,
{
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::poll_ready(self, cx).map_err(Into::into)
    }

    fn call(&mut self, target: T) -> IoFuture<BoxIo> {
        let future = Service::call(self, target);
        IoFuture::new(async move { future.await.map(BoxIo::new).map_err(Into::into) })
    }

    fn clone_box(&self) -> Box<dyn ErasedConnector<T>> {
        Box::new(self.clone())
    }
}

impl<T: 'static> BoxConnector<T> {
    /// Erases the type of `connector`.
    pub fn new<C>(connector: C) -> Self
    where
        C: Service<T> + Clone + Send + Sync + 'static,
        C::Response: Io,
        C::Error: Into<BoxError>,
        C::Future: Send + 'static,
    {
        BoxConnector {
            inner: Box::new(connector),
        }
    }
}

impl<T> Clone for BoxConnector<T> {
    fn clone(&self) -> Self {
        BoxConnector {
            inner: self.inner.clone_box(),
        }
    }
}

impl<T> fmt::Debug for BoxConnector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxConnector").finish_non_exhaustive()
    }
}

impl<T> Service<T> for BoxConnector<T> {
    type Response = BoxIo;
    type Error = BoxError;
    type Future = IoFuture<BoxIo>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, target: T) -> Self::Future {
        self.inner.call(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connected(connector: TcpConnector) -> (TcpStream, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut connector = connector;
        let stream = Service::call(&mut connector, listener.local_addr().unwrap())
            .await
            .unwrap();
        (stream, listener)
    }

    #[tokio::test]
    async fn nodelay_is_on_and_keepalive_off_by_default() {
        let (stream, _listener) = connected(TcpConnector::new()).await;
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.tcp_nodelay().unwrap());
        assert!(!socket.keepalive().unwrap());

        let (stream, _listener) = connected(TcpConnector::new().with_nodelay(false)).await;
        assert!(!socket2::SockRef::from(&stream).tcp_nodelay().unwrap());
    }

    #[tokio::test]
    async fn keepalive_time_interval_and_retries_are_set_on_the_socket() {
        let connector = TcpConnector::new()
            .with_keepalive(Some(Duration::from_secs(37)))
            .with_keepalive_interval(Some(Duration::from_secs(11)))
            .with_keepalive_retries(Some(4));
        let (stream, _listener) = connected(connector).await;
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(37)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(11)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 4);
    }

    #[tokio::test]
    async fn local_address_binds_same_family_destinations_only() {
        // 127.0.0.2 is loopback too on Linux; the server sees it as the peer.
        let connector = TcpConnector::new().with_local_address(Some("127.0.0.2".parse().unwrap()));
        let (stream, listener) = connected(connector.clone()).await;
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.2");
        assert_eq!(stream.local_addr().unwrap(), peer);

        // An IPv6 destination is reached unbound (when the host has IPv6).
        if let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await {
            let mut connector = connector;
            let stream = Service::call(&mut connector, listener.local_addr().unwrap())
                .await
                .unwrap();
            assert!(stream.local_addr().unwrap().is_ipv6());
        }
    }
}
