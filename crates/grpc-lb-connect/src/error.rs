//! Errors returned by the connectors.

use std::error::Error;
use std::fmt;
use std::net::SocketAddr;

use grpc_lb_core::SharedError;

/// A connection attempt failed.
///
/// The message names the address and the step that failed, so that the error a
/// fail-fast RPC reports says what actually went wrong.
#[derive(Debug)]
pub struct ConnectError {
    addr: SocketAddr,
    step: Step,
    source: Option<Box<dyn Error + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Tcp,
    Handshake,
    ClosedBeforePreface,
    NotHttp2,
}

impl ConnectError {
    pub(crate) fn new(
        addr: SocketAddr,
        step: Step,
        source: Option<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        ConnectError { addr, step, source }
    }

    /// The address that could not be reached.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True if the TCP connection itself could not be made (refused, unreachable).
    pub fn is_tcp(&self) -> bool {
        self.step == Step::Tcp
    }

    /// True if TCP connected but the server never sent its HTTP/2 SETTINGS preface.
    pub fn is_missing_preface(&self) -> bool {
        matches!(self.step, Step::ClosedBeforePreface | Step::NotHttp2)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        match self.step {
            Step::Tcp => write!(f, "tcp connect to {addr} failed")?,
            Step::Handshake => write!(f, "HTTP/2 handshake with {addr} failed")?,
            Step::ClosedBeforePreface => write!(
                f,
                "connection to {addr} closed before the server preface was received"
            )?,
            Step::NotHttp2 => write!(
                f,
                "server at {addr} did not send an HTTP/2 SETTINGS frame as its preface"
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
#[derive(Debug, Clone)]
pub struct ConnectionClosed {
    addr: SocketAddr,
    cause: Option<SharedError>,
}

impl ConnectionClosed {
    pub(crate) fn new(addr: SocketAddr, cause: Option<SharedError>) -> Self {
        ConnectionClosed { addr, cause }
    }

    /// The address of the closed connection.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl fmt::Display for ConnectionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection to {} closed", self.addr)?;
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
