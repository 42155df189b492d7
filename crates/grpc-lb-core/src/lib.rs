//! The vocabulary shared by every grpc-lb crate.
//!
//! This crate is deliberately small, in the spirit of `tower-service`: it holds the
//! types that the resolver, balancer and reconnect layers pass between each other,
//! so that each of those crates can depend on it without depending on the others.
//!
//! - [`ConnectivityState`]: gRPC's five connectivity states, spelled as gRPC spells them.
//! - [`Connectivity`]: a state plus the error that caused it, as published on a watch.
//! - [`ResolveNow`]: the signal a subchannel raises when its name should be resolved again.
//! - [`Subchannel`]: a service that reports its own connectivity, for balancers;
//!   [`NewSubchannel`]: what a resolver stage asks its make-service for.
//! - [`BoxError`] and [`SharedError`]: the error currency of the stack.
//! - [`status::GrpcStatus`]: the `grpc-status` and `grpc-message` of a response.
//!
//! # Examples
//!
//! ```
//! use grpc_lb_core::ConnectivityState;
//!
//! let state = ConnectivityState::TransientFailure;
//! assert_eq!(state.to_string(), "TRANSIENT_FAILURE");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod connectivity;
pub mod grpc_timeout;
mod resolve_now;
pub mod status;
mod subchannel;

pub use connectivity::{Connectivity, ConnectivityState};
pub use resolve_now::ResolveNow;
pub use subchannel::{NewSubchannel, Subchannel};

/// The boxed error type used throughout the stack, as in tower.
///
/// ```
/// use grpc_lb_core::BoxError;
///
/// fn parse_port(text: &str) -> Result<u16, BoxError> {
///     Ok(text.parse::<u16>()?)
/// }
///
/// assert_eq!(parse_port("50051").unwrap(), 50051);
/// assert!(parse_port("grpc").is_err());
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error that can be kept and handed to many readers (a state watch, a fail-fast RPC).
///
/// ```
/// use grpc_lb_core::SharedError;
/// use std::sync::Arc;
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let error: SharedError = Arc::new(refused);
/// let for_the_watch = error.clone();
/// assert_eq!(for_the_watch.to_string(), error.to_string());
/// ```
pub type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Allocates an id for a channel or subchannel, unique in this process.
///
/// Channels and subchannels share one id space, as in grpc-go's channelz, so that a
/// log line such as `[Channel #1 SubChannel #2]` names each object unambiguously.
pub fn next_channelz_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The transport failed under a request: the connection closed or broke before a
/// response arrived.
///
/// Connectors wrap such failures in this type so that layers above can tell them
/// from errors of the request itself: gRPC reports them as `UNAVAILABLE` (grpc-go:
/// "transport is closing"), and a fail-fast layer converts them to that status.
///
/// ```
/// use grpc_lb_core::{BoxError, TransportError};
///
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// let error: BoxError = TransportError::new(reset).into();
///
/// // Layers above tell a broken connection from a failed request by its type.
/// assert!(error.downcast_ref::<TransportError>().is_some());
/// assert_eq!(error.to_string(), "transport error: connection reset");
/// ```
#[derive(Debug)]
pub struct TransportError {
    source: BoxError,
}

impl TransportError {
    /// Wraps the underlying transport failure.
    pub fn new(source: impl Into<BoxError>) -> Self {
        TransportError {
            source: source.into(),
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "transport error: {}", self.source)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A request was not sent: the connection refused it before writing any of
/// it (it was closing, or draining after a GOAWAY), so no server saw it.
///
/// Connectors return it, inside a [`TransportError`], so that a retry layer
/// may send the request again on another connection whatever its policy
/// (gRFC A6 transparent retry; grpc-go's `errStreamDrain` with
/// `AllowTransparentRetry`).
///
/// ```
/// use grpc_lb_core::{BoxError, NotSent, TransportError};
///
/// let error: BoxError = TransportError::new(NotSent::new("the connection is draining")).into();
/// let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
/// let mut never_sent = false;
/// while let Some(e) = next {
///     never_sent |= e.is::<NotSent>();
///     next = e.source();
/// }
/// assert!(never_sent);
/// assert_eq!(
///     error.to_string(),
///     "transport error: request not sent: the connection is draining"
/// );
/// ```
#[derive(Debug)]
pub struct NotSent {
    source: BoxError,
}

impl NotSent {
    /// Why the request was not sent.
    pub fn new(source: impl Into<BoxError>) -> Self {
        NotSent {
            source: source.into(),
        }
    }
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request not sent: {}", self.source)
    }
}

impl std::error::Error for NotSent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
