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
//! ([`connect`]) and fail-fast for a single subchannel ([`failfast`]). They
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
mod idle;
#[cfg(feature = "prometheus")]
pub mod metrics;
mod observe;
mod replay;
mod snapshot;
mod worker;

pub use crate::body::ResponseBody;
pub use crate::builder::{BuildError, Builder};
pub use crate::call::ResponseFuture;
pub use crate::channel::{Channel, ChannelOptions, WaitForReady, DEFAULT_MAX_WAITING};
pub use crate::connector::{AddressConnector, ConnectFuture, SocketConnector, UnsupportedAddress};
pub use crate::idle::DEFAULT_IDLE_TIMEOUT;
pub use crate::observe::{ChannelEvent, ChannelStats, Peer, SubchannelInfo, EVENT_CAPACITY};
pub use crate::replay::{ReplayableBody, REPLAY_BUFFER_LIMIT};
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
pub use grpc_lb_reconnect as reconnect;
pub use grpc_lb_resolve as resolve;
pub use grpc_lb_service_config as service_config;

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
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let error = Channel::builder("ipv4:127.0.0.1:50051")
            .build()
            .unwrap_err();
        assert!(matches!(error, BuildError::NoRuntime), "{error}");
    }
}
