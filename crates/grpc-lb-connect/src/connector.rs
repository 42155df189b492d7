use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_core::BoxError;
use http::uri::{Authority, Scheme};
use http_body::Body;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::connection::{CloseSignal, Http2Connection};
use crate::error::{ConnectError, Step};
use crate::preface::{Preface, PrefaceWatch};

/// Connects to a socket address over TCP and HTTP/2 (h2c, prior knowledge).
///
/// The returned future resolves only after the server's SETTINGS frame has been
/// read, so a success here means the server really answered. Requests sent on the
/// resulting [`Http2Connection`] that carry only a path get the connector's scheme
/// (`http`) and authority filled in, as tonic's `Channel` does; the authority
/// defaults to the address itself and can be set with
/// [`with_authority`](Http2Connector::with_authority) so that `:authority` names
/// the service rather than an IP.
///
/// The connector is cheap to clone: its settings are shared.
pub struct Http2Connector<B> {
    settings: Arc<Settings>,
    _body: PhantomData<fn(B)>,
}

#[derive(Clone, Debug, Default)]
struct Settings {
    authority: Option<Authority>,
    keep_alive_interval: Option<Duration>,
    keep_alive_timeout: Option<Duration>,
    keep_alive_while_idle: bool,
}

impl<B> Http2Connector<B> {
    /// A connector with hyper's HTTP/2 defaults and no keepalive pings.
    pub fn new() -> Self {
        Http2Connector {
            settings: Arc::new(Settings::default()),
            _body: PhantomData,
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Sends this authority (`host[:port]`) in `:authority` instead of the address.
    pub fn with_authority(mut self, authority: Authority) -> Self {
        self.settings_mut().authority = Some(authority);
        self
    }

    /// Sends HTTP/2 PINGs at this interval to detect a dead peer (gRFC A8 keepalive time).
    pub fn with_keep_alive_interval(mut self, interval: Duration) -> Self {
        self.settings_mut().keep_alive_interval = Some(interval);
        self
    }

    /// How long to wait for a PING acknowledgement before closing the connection.
    pub fn with_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().keep_alive_timeout = Some(timeout);
        self
    }

    /// Whether to send keepalive PINGs when no request is open.
    pub fn with_keep_alive_while_idle(mut self, enabled: bool) -> Self {
        self.settings_mut().keep_alive_while_idle = enabled;
        self
    }
}

impl<B> Default for Http2Connector<B> {
    fn default() -> Self {
        Http2Connector::new()
    }
}

impl<B> Clone for Http2Connector<B> {
    fn clone(&self) -> Self {
        Http2Connector {
            settings: self.settings.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> fmt::Debug for Http2Connector<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connector")
            .field("settings", &self.settings)
            .finish()
    }
}

/// The future returned by [`Http2Connector`]: resolves to a connection once the
/// server's HTTP/2 SETTINGS frame has arrived.
///
/// It is boxed: a connection attempt is rare next to the requests it serves, and
/// the handshake future of hyper cannot be named.
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

impl<B> Service<SocketAddr> for Http2Connector<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Http2Connection<B>;
    type Error = ConnectError;
    type Future = ConnectFuture<B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let settings = self.settings.clone();
        ConnectFuture {
            inner: Box::pin(connect(addr, settings)),
        }
    }
}

async fn connect<B>(
    addr: SocketAddr,
    settings: Arc<Settings>,
) -> Result<Http2Connection<B>, ConnectError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::new(addr, Step::Tcp, Some(e.into())))?;
    // gRPC messages are small and latency-bound; Nagle only adds delay.
    let _ = tcp.set_nodelay(true);
    let (io, preface) = PrefaceWatch::new(tcp);

    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    if let Some(interval) = settings.keep_alive_interval {
        builder.keep_alive_interval(interval);
        builder.keep_alive_while_idle(settings.keep_alive_while_idle);
        if let Some(timeout) = settings.keep_alive_timeout {
            builder.keep_alive_timeout(timeout);
        }
    }
    let (send, connection) = builder
        .handshake::<_, B>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::new(addr, Step::Handshake, Some(e.into())))?;

    let closed = Arc::new(CloseSignal::default());
    let on_close = closed.clone();
    tokio::spawn(async move {
        let result = connection.await;
        tracing::debug!(%addr, ?result, "HTTP/2 connection closed");
        on_close.close(result.err().map(|e| Arc::new(e) as _));
    });

    match preface.await {
        Ok(Preface::Settings) => {}
        Ok(Preface::Unexpected) => return Err(ConnectError::new(addr, Step::NotHttp2, None)),
        Ok(Preface::Closed(cause)) => {
            return Err(ConnectError::new(
                addr,
                Step::ClosedBeforePreface,
                cause.map(Into::into),
            ))
        }
        // The connection task ended, dropping the transport, before any verdict.
        Err(_) => return Err(ConnectError::new(addr, Step::ClosedBeforePreface, None)),
    }

    let authority = match &settings.authority {
        Some(authority) => authority.clone(),
        None => Authority::try_from(addr.to_string().as_str())
            .expect("a socket address is a valid authority"),
    };
    Ok(Http2Connection::new(
        send,
        addr,
        Scheme::HTTP,
        authority,
        closed,
    ))
}
