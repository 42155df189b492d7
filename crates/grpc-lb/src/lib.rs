//! gRPC client channels for tower, tonic, hyper and axum: name resolution,
//! client-side load balancing and reconnection with backoff, as grpc-go's
//! `ClientConn` provides them.
//!
//! A [`Channel`] is built from a target and a policy name, and is a clonable
//! `tower::Service<http::Request<_>>`: hand it to any tonic-generated client.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use grpc_lb::Channel;
//!
//! let channel = Channel::builder("ipv4:127.0.0.1:50051,127.0.0.1:50052")
//!     .policy("round_robin")
//!     .build()?;
//! // let mut client = GreeterClient::new(channel.clone());
//! channel.connect();
//! let state = channel.wait_for_state_change(grpc_lb::ConnectivityState::Idle).await;
//! println!("channel is {state}");
//! # Ok(())
//! # }
//! ```
//!
//! Underneath, each stage is a crate of its own, re-exported here: the
//! resolvers ([`resolve`]), the policies ([`balance`]), the reconnecting
//! subchannel ([`reconnect`]), its backoff ([`backoff`]), the connectors
//! ([`connect`]), fail-fast for a single subchannel ([`failfast`]), health
//! checking ([`health`]), the service config ([`service_config`]), retries
//! ([`retry`]) and message size limits ([`message_size`]). They
//! compose by hand too: a [`ResolverDiscover`](resolve::ResolverDiscover) of
//! [`Reconnect`](reconnect::Reconnect) subchannels and a policy make a channel
//! with [`Channel::pair`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod builder;
mod call;
mod channel;
mod config;
mod connector;
mod deadline;
mod error;
mod idle;
#[cfg(feature = "prometheus")]
pub mod metrics;
mod observe;
mod rate_limit;
mod replay;
mod settings;
mod snapshot;
mod wake_queue;
mod worker;

pub use crate::body::ResponseBody;
pub use crate::builder::Builder;
pub use crate::call::ResponseFuture;
pub use crate::channel::{Channel, ChannelOptions, WaitForReady, DEFAULT_MAX_WAITING};
pub use crate::config::outlier_detection_config;
pub use crate::connector::{AddressConnector, ConnectFuture, SocketConnector, UnsupportedAddress};
pub use crate::error::{BuildError, Error};
pub use crate::idle::DEFAULT_IDLE_TIMEOUT;
pub use crate::observe::{ChannelEvent, ChannelStats, Peer, SubchannelInfo, EVENT_CAPACITY};
pub use crate::rate_limit::{RateLimit, RateLimitLayer};
pub use crate::replay::{ReplayableBody, TonicReplay, REPLAY_BUFFER_LIMIT};
pub use crate::worker::Worker;
#[cfg(feature = "tls")]
pub use grpc_lb_connect::tls::{TlsConfig, TlsError, TlsErrorKind};
pub use grpc_lb_core::{Connectivity, ConnectivityState};

pub use grpc_lb_backoff as backoff;
pub use grpc_lb_balance as balance;
pub use grpc_lb_connect as connect;
pub use grpc_lb_core as core;
pub use grpc_lb_failfast as failfast;
pub use grpc_lb_health as health;
pub use grpc_lb_message_size as message_size;
pub use grpc_lb_reconnect as reconnect;
pub use grpc_lb_resolve as resolve;
pub use grpc_lb_retry as retry;
pub use grpc_lb_service_config as service_config;

/// The channel [`Channel::builder`]`(..).build()` returns, for tonic's
/// generated clients: `GreeterClient<GrpcChannel>`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb::Error> {
/// let channel: grpc_lb::GrpcChannel = grpc_lb::Channel::builder("ipv4:127.0.0.1:50051").build()?;
/// let client: grpc_lb_helloworld::proto::GreeterClient<grpc_lb::GrpcChannel> =
///     grpc_lb_helloworld::proto::GreeterClient::new(channel);
/// # drop(client);
/// # Ok(())
/// # }
/// ```
pub type GrpcChannel = Channel<connect::Http2Connection<tonic::body::Body>>;

/// A channel of HTTP/2 connections for requests with body `B` (hyper and
/// axum users): what [`Builder::build_for_body`] returns.
pub type Http2Channel<B> = Channel<connect::Http2Connection<B>>;

/// A channel of HTTP/1.1 connection pools for requests with body `B`: what
/// [`Builder::build_http1`] returns.
pub type Http1Channel<B> = Channel<connect::Http1Pool<B>>;

/// The response body of a [`GrpcChannel`].
pub type GrpcResponseBody = ResponseBody<hyper::body::Incoming>;

/// docs/from-tonic.md's code, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/from-tonic.md")]
mod from_tonic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_is_clone_send_sync_and_so_is_its_future() {
        fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
        fn send<T: Send>() {}
        type Connection = connect::Http2Connection<tonic::body::Body>;
        clone_send_sync::<Channel<Connection>>();
        send::<
            <Channel<Connection> as tower_service::Service<http::Request<tonic::body::Body>>>::Future,
        >();
    }

    #[test]
    fn http1_channels_builders_and_connectors_are_send_and_sync() {
        fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
        type Empty = http_body_util::Empty<bytes::Bytes>;
        clone_send_sync::<Channel<connect::Http1Pool<Empty>>>();
        clone_send_sync::<Builder>();
        clone_send_sync::<connect::BoxConnector<resolve::Address>>();
        clone_send_sync::<AddressConnector>();
    }

    #[test]
    fn every_library_crate_the_readme_names_is_re_exported() {
        // One item of each, through the re-export.
        let _ = std::any::type_name::<backoff::BackoffConfig>();
        let _ = std::any::type_name::<balance::PolicyRegistry>();
        let _ = std::any::type_name::<connect::Http2Config>();
        let _ = std::any::type_name::<core::ConnectivityState>();
        let _ = std::any::type_name::<failfast::FailFastLayer>();
        let _ = std::any::type_name::<health::HealthCheck>();
        let _ = std::any::type_name::<message_size::MessageSizeLayer>();
        let _ = std::any::type_name::<reconnect::ReconnectConfig>();
        let _ = std::any::type_name::<resolve::Registry>();
        let _ = std::any::type_name::<retry::RetryLayer>();
        let _ = std::any::type_name::<service_config::ServiceConfig>();
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let error = Channel::builder("ipv4:127.0.0.1:50051")
            .build()
            .unwrap_err();
        assert!(
            matches!(error.build_error(), Some(BuildError::NoRuntime)),
            "{error}"
        );
    }
}
