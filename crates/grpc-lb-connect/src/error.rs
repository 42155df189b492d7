//! Errors returned by the connectors.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use grpc_lb_core::SharedError;

/// A connection attempt failed.
///
/// The message names the peer and the step that failed, so that the error a
/// fail-fast RPC reports says what actually went wrong. The transport's own
/// error (an I/O error, a `tls::TlsError`, a custom
/// connector's error) is the [`source`](Error::source).
///
/// ```
/// use grpc_lb_connect::Http2Connector;
/// use http_body_util::Empty;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A port nobody listens on: bind one, then let it go.
/// let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
///
/// let mut connector = Http2Connector::<Empty<bytes::Bytes>>::new();
/// let error = connector.call(addr).await.unwrap_err();
/// assert!(error.is_connect());
/// assert_eq!(error.peer(), addr.to_string());
/// assert!(error.to_string().starts_with(&format!("connect to {addr} failed")));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ConnectError {
    peer: Arc<str>,
    step: Step,
    source: Option<Box<dyn Error + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The transport connector was not ready.
    NotReady,
    /// The transport connector failed (TCP, Unix, TLS, custom).
    Connect,
    Handshake,
    ClosedBeforePreface,
    NotHttp2,
    /// The attempt took longer than the connector's connect timeout.
    TimedOut(std::time::Duration),
}

impl ConnectError {
    pub(crate) fn new(
        peer: Arc<str>,
        step: Step,
        source: Option<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        ConnectError { peer, step, source }
    }

    /// The peer that could not be reached, as the target was written
    /// (`127.0.0.1:50051`, `unix:/run/greeter.sock`, ...).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// True if the transport could not be set up: TCP refused or unreachable,
    /// a Unix socket missing, a TLS handshake failed, a custom connector's error.
    pub fn is_connect(&self) -> bool {
        matches!(self.step, Step::Connect | Step::NotReady)
    }

    /// True if the attempt ran out of the connector's connect timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.step, Step::TimedOut(_))
    }

    /// The TLS failure behind this error, if there is one: a certificate that
    /// does not match or is not trusted, a plaintext server, a rejected client
    /// certificate (which, in TLS 1.3, shows only when reading the server's
    /// preface).
    #[cfg(feature = "tls")]
    pub fn tls_error(&self) -> Option<&crate::tls::TlsError> {
        crate::tls::TlsError::find(self)
    }

    /// True if TCP connected but the server never sent its HTTP/2 SETTINGS preface.
    pub fn is_missing_preface(&self) -> bool {
        matches!(self.step, Step::ClosedBeforePreface | Step::NotHttp2)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = &self.peer;
        match self.step {
            Step::NotReady => f.write_str("the transport connector failed")?,
            Step::Connect => write!(f, "connect to {addr} failed")?,
            Step::Handshake => write!(f, "HTTP/2 handshake with {addr} failed")?,
            Step::ClosedBeforePreface => write!(
                f,
                "connection to {addr} closed before the server preface was received"
            )?,
            Step::NotHttp2 => write!(
                f,
                "server at {addr} did not send an HTTP/2 SETTINGS frame as its preface"
            )?,
            Step::TimedOut(timeout) => write!(
                f,
                "connect to {addr} timed out: no HTTP/2 connection within the connect timeout ({timeout:?})"
            )?,
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl Error for ConnectError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// The connection was closed; no more requests can be sent on it.
///
/// Returned from [`Http2Connection`](crate::Http2Connection)'s `poll_ready` once
/// the transport has gone, with the cause when one is known.
///
/// ```
/// use std::future::poll_fn;
/// use std::task::Poll;
/// use grpc_lb_connect::{error::ConnectionClosed, Http2Connector};
/// use http_body_util::Empty;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // A server that completes the HTTP/2 preface, then hangs up.
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(async move {
///     let (mut socket, _) = listener.accept().await?;
///     socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?; // an empty SETTINGS frame
///     let _ = socket.read(&mut [0; 1024]).await?;
///     Ok::<_, std::io::Error>(())
/// });
///
/// let mut connection = Http2Connector::<Empty<bytes::Bytes>>::new().call(addr).await?;
/// // poll_ready wakes this task when the connection goes, even after `Ready`.
/// let error = poll_fn(|cx| match connection.poll_ready(cx) {
///     Poll::Ready(Ok(())) => Poll::Pending,
///     closed => closed,
/// })
/// .await
/// .unwrap_err();
/// let closed = error.downcast_ref::<ConnectionClosed>().unwrap();
/// assert_eq!(closed.peer(), addr.to_string());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionClosed {
    peer: Arc<str>,
    cause: Option<SharedError>,
}

impl ConnectionClosed {
    pub(crate) fn new(peer: Arc<str>, cause: Option<SharedError>) -> Self {
        ConnectionClosed { peer, cause }
    }

    /// The peer of the closed connection.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl fmt::Display for ConnectionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection to {} closed", self.peer)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl Error for ConnectionClosed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// An I/O error from the transport, typed where it can be: a TLS alert read
/// after the handshake becomes a `tls::TlsError`.
pub(crate) fn classify_io(error: std::io::Error) -> Box<dyn Error + Send + Sync> {
    #[cfg(feature = "tls")]
    {
        crate::tls::TlsError::classify_io(error)
    }
    #[cfg(not(feature = "tls"))]
    {
        Box::new(error)
    }
}
