//! Connectors for grpc-lb.
//!
//! A connector is any `tower::Service<Target>` whose response is a connected
//! service. The reconnect layer calls it once per connection attempt. This crate
//! provides the one gRPC needs most, [`Http2Connector`]: a transport, then an
//! HTTP/2 handshake, reporting success only once the server's SETTINGS frame has
//! arrived; and [`Http1Connector`], a bounded pool of HTTP/1.1 connections per
//! endpoint for REST backends ([`http1`]).
//!
//! Both run over a *transport*: any `Service<Target>` whose response is an
//! [`Io`] byte stream, hyper-util's connector model with tokio's I/O traits.
//! [`TcpConnector`] is the default, [`UnixConnector`] reaches Unix domain
//! sockets, `tls::TlsConnector` (feature `tls`, rustls) wraps any transport in
//! TLS, and [`BoxConnector`] erases the type of any of them, yours included.
//!
//! Waiting for the server's SETTINGS is what the gRPC connection-backoff document
//! means by a successful connection, and what grpc-go does (`NewHTTP2Client` blocks
//! until the server preface is read). A TCP listener that accepts and then says
//! nothing, or a server that is not speaking HTTP/2, therefore counts as a failed
//! attempt and is backed off from, instead of resetting the backoff every time.
//!
//! The connected service, [`Http2Connection`], reports a lost connection as an
//! error from `poll_ready` and wakes the task that last polled it when the
//! connection closes, so that a reconnect layer notices a dead server even when no
//! request is in flight.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> Result<(), grpc_lb_core::BoxError> {
//! use grpc_lb_connect::Http2Connector;
//! use tower_service::Service;
//!
//! let mut connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new();
//! let connection = connector.call("127.0.0.1:50051".parse()?).await?;
//! # drop(connection);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod connection;
mod connector;
pub mod error;
pub mod http1;
mod io;
mod keepalive;
mod preface;
#[cfg(feature = "tls")]
pub mod tls;

pub use connection::{Http2Connection, ResponseFuture};
pub use connector::{ConnectFuture, Http2Config, Http2Connector, DEFAULT_USER_AGENT};
pub use http1::{Http1Connector, Http1Pool};
#[cfg(unix)]
pub use io::UnixConnector;
pub use io::{BoxConnector, BoxIo, Io, IoFuture, TcpConnector};
pub use keepalive::{KeepaliveConfig, TooManyPings};
