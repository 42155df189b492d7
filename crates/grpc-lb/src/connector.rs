//! Connects to resolved addresses: the transport for every kind of
//! [`Address`], and an adapter for connectors of socket addresses only.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use grpc_lb_connect::{BoxIo, IoFuture, TcpConnector};
use grpc_lb_core::BoxError;
use grpc_lb_resolve::Address;
use pin_project_lite::pin_project;
use tower_service::Service;

/// The default transport of a channel: reaches every kind of resolved
/// [`Address`].
///
/// - `Socket`: TCP, with `TCP_NODELAY` (and the other socket options of its
///   [`TcpConnector`], see [`with_tcp`](Self::with_tcp));
/// - `Unix`: a Unix domain socket by path (the `unix:` targets);
/// - `UnixAbstract`: a socket in Linux's abstract namespace (the
///   `unix-abstract:` targets); elsewhere the attempt fails with
///   [`UnsupportedAddress`];
/// - `Name` (the `passthrough:` targets): `host:port`, resolved by the system
///   resolver at each attempt and connected over TCP (with the same socket
///   options) to the first address that answers.
///
/// Its response is a type-erased byte stream; TLS and HTTP/2 run above it. Put
/// your own transport in its place with
/// [`Builder::connector`](crate::Builder::connector).
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), grpc_lb::core::BoxError> {
/// use grpc_lb::resolve::Address;
/// use grpc_lb::AddressConnector;
/// use tower_service::Service;
///
/// let stream = AddressConnector::new()
///     .call(Address::Unix("/run/greeter.sock".into()))
///     .await?;
/// # drop(stream);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct AddressConnector {
    tcp: TcpConnector,
}

impl AddressConnector {
    /// A connector for every kind of address.
    pub const fn new() -> Self {
        AddressConnector {
            tcp: TcpConnector::new(),
        }
    }

    /// A connector whose TCP connections (to socket addresses and to
    /// `passthrough:` names) are made by `tcp`, with its socket options:
    /// what [`Builder`](crate::Builder)'s `tcp_*` and `local_address`
    /// settings configure.
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb::AddressConnector;
    /// use grpc_lb::connect::TcpConnector;
    ///
    /// let connector = AddressConnector::with_tcp(
    ///     TcpConnector::new().with_keepalive(Some(Duration::from_secs(60))),
    /// );
    /// # drop(connector);
    /// ```
    pub const fn with_tcp(tcp: TcpConnector) -> Self {
        AddressConnector { tcp }
    }
}

impl Service<Address> for AddressConnector {
    type Response = BoxIo;
    type Error = BoxError;
    type Future = IoFuture<BoxIo>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, address: Address) -> Self::Future {
        match address {
            Address::Socket(addr) => {
                let connect = self.tcp.call(addr);
                boxed(async move { connect.await.map(BoxIo::new) })
            }
            #[cfg(unix)]
            Address::Unix(path) => boxed(async move {
                let stream = tokio::net::UnixStream::connect(&path).await?;
                Ok(BoxIo::new(stream))
            }),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Address::UnixAbstract(name) => boxed(async move {
                // tokio reads a leading NUL as the abstract namespace.
                let path = std::path::PathBuf::from(format!("\0{name}"));
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok(BoxIo::new(stream))
            }),
            Address::Name(name) => {
                let tcp = self.tcp.clone();
                boxed(async move { connect_name(tcp, &name).await.map(BoxIo::new) })
            }
            #[allow(unreachable_patterns)]
            other => boxed(async move { Err(UnsupportedAddress(other).into()) }),
        }
    }
}

/// Resolves `name` (`host:port`) with the system's resolver and connects to
/// the first of its addresses that answers, as `TcpStream::connect` does,
/// with `tcp`'s socket options.
async fn connect_name(
    mut tcp: TcpConnector,
    name: &str,
) -> Result<tokio::net::TcpStream, BoxError> {
    let mut last_error: Option<BoxError> = None;
    for addr in tokio::net::lookup_host(name).await? {
        match tcp.call(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| format!("{name} resolved to no address").into()))
}

fn boxed(
    future: impl Future<Output = Result<BoxIo, BoxError>> + Send + 'static,
) -> IoFuture<BoxIo> {
    IoFuture::from_future(future)
}

/// Adapts a connector for `SocketAddr` to the resolver's [`Address`]es.
///
/// Socket addresses go to the inner connector; others (Unix sockets,
/// passthrough names) fail the attempt with [`UnsupportedAddress`], which backs
/// off like any failed connection. [`AddressConnector`] reaches every kind of
/// address, and connectors that take an `Address` need no adapter.
///
/// ```
/// use grpc_lb::resolve::Address;
/// use grpc_lb::{SocketConnector, UnsupportedAddress};
/// use grpc_lb::connect::TcpConnector;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb::core::BoxError> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let mut connector = SocketConnector::new(TcpConnector::new());
///
/// let tcp = Address::from(listener.local_addr()?);
/// let stream = connector.ready().await?.call(tcp).await?;
/// assert_eq!(stream.peer_addr()?, listener.local_addr()?);
///
/// let unix = Address::Unix("/run/greeter.sock".into());
/// let error = connector.ready().await?.call(unix).await.unwrap_err();
/// assert!(error.is::<UnsupportedAddress>());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SocketConnector<C> {
    inner: C,
}

impl<C> SocketConnector<C> {
    /// Wraps a connector for socket addresses.
    pub const fn new(inner: C) -> Self {
        SocketConnector { inner }
    }
}

/// The address is not one this connector can reach.
///
/// ```
/// use grpc_lb::resolve::Address;
/// use grpc_lb::SocketConnector;
/// use grpc_lb::connect::TcpConnector;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let connector = SocketConnector::new(TcpConnector::new());
/// let name = Address::Name("greeter.local:50051".into());
/// let error = connector.oneshot(name).await.unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "cannot connect to greeter.local:50051: this connector reaches TCP socket addresses only",
/// );
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UnsupportedAddress(Address);

impl std::fmt::Display for UnsupportedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Address::UnixAbstract(_) => write!(
                f,
                "cannot connect to {}: abstract Unix sockets exist on Linux and Android only",
                self.0
            ),
            _ => write!(
                f,
                "cannot connect to {}: this connector reaches TCP socket addresses only",
                self.0
            ),
        }
    }
}

impl std::error::Error for UnsupportedAddress {}

impl<C> Service<Address> for SocketConnector<C>
where
    C: Service<SocketAddr>,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ConnectFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, address: Address) -> Self::Future {
        match address.as_socket() {
            Some(addr) => ConnectFuture {
                kind: Kind::Connecting {
                    future: self.inner.call(addr),
                },
            },
            None => ConnectFuture {
                kind: Kind::Unsupported {
                    address: Some(address),
                },
            },
        }
    }
}

pin_project! {
    /// Future of [`SocketConnector`]: the inner connector's future, or an
    /// immediate [`UnsupportedAddress`] error.
    ///
    /// ```
    /// use grpc_lb::resolve::Address;
    /// use grpc_lb::{ConnectFuture, SocketConnector};
    /// use grpc_lb::connect::TcpConnector;
    /// use tower::{Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb::core::BoxError> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let mut connector = SocketConnector::new(TcpConnector::new());
    /// let ready = connector.ready().await?;
    /// let future: ConnectFuture<_> = ready.call(Address::from(listener.local_addr()?));
    /// assert!(future.await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ConnectFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Connecting { #[pin] future: F },
        Unsupported { address: Option<Address> },
    }
}

impl<F, S, E> Future for ConnectFuture<F>
where
    F: Future<Output = Result<S, E>>,
    E: Into<BoxError>,
{
    type Output = Result<S, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Connecting { future } => future.poll(cx).map_err(Into::into),
            KindProj::Unsupported { address } => {
                let address = address.take().expect("polled after completion");
                Poll::Ready(Err(UnsupportedAddress(address).into()))
            }
        }
    }
}
