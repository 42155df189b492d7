//! grpclb, the `grpc.lb.v1` lookaside load balancer, for grpc-lb, as
//! composable tower pieces.
//!
//! A grpclb client asks a balancer which backends to use: it holds a
//! `grpc.lb.v1.LoadBalancer/BalanceLoad` stream, receives server lists
//! (backends with load-balance tokens, and drop entries), balances its calls
//! over those backends with a child policy, sends each call's `lb-token`,
//! drops the share of calls the list says, reports its calls in `ClientStats`
//! and falls back to the resolver's backends when the balancer cannot be
//! reached. This crate follows grpc-go's `balancer/grpclb` (v1.85.0-dev,
//! commit 4793ad0), split into pieces that each do one thing:
//!
//! | piece | does | grpc-go |
//! |---|---|---|
//! | [`BalancerClient`] | the stream: initial request, server lists, fallback responses, `ClientStats` at the interval asked, reconnection with backoff | `remoteBalancerCCWrapper` |
//! | [`GrpclbDiscover`] | a `tower::discover::Discover` of the backends in use, keyed by address: the server list's, or the resolver's in fallback | `refreshSubConns`, `fallbackToBackendsAfter` |
//! | [`LbToken`] | per backend: the `lb-token` metadata, and the call counts | the `Done` of `lbPicker` |
//! | [`GrpclbDrop`] / [`GrpclbDropLayer`] | over the balanced service: the drop entries, in the list's order | the first layer of `lbPicker` |
//! | [`Grpclb`] | starts the stream and hands out the other pieces, joined by watches | `lbBalancer` |
//!
//! The backends run under `grpc_lb_balance::service::Balance` with
//! `RoundRobin` or `PickFirst` as the child policy (the config's
//! [`ChildPolicy`]): `GrpclbDrop<Balance<GrpclbDiscover<_>, _>>` is the whole
//! policy. docs/policies/grpclb.md has the mapping onto grpc-go's single
//! balancer and what selecting it by service config will take.
//!
//! # Examples
//!
//! A balancer (here a tonic service in memory, so the example needs no
//! network for it) names one loopback backend; calls reach it with its token.
//!
//! ```
//! use std::pin::Pin;
//! use futures::Stream;
//! use grpc_lb::AddressConnector;
//! use grpc_lb_balance::service::Balance;
//! use grpc_lb_balance::tree::RoundRobin;
//! use grpc_lb_connect::Http2Connector;
//! use grpc_lb_grpclb::proto::load_balance_response::LoadBalanceResponseType as Response;
//! use grpc_lb_grpclb::proto::load_balancer_server::{LoadBalancer, LoadBalancerServer};
//! use grpc_lb_grpclb::{proto, Grpclb, GrpclbConfig};
//! use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
//! use grpc_lb_reconnect::Reconnect;
//! use tonic::{Request, Status, Streaming};
//! use tower::Layer;
//!
//! /// Sends the initial response and one server list naming `backend`.
//! struct OneBackend(std::net::SocketAddr);
//!
//! #[tonic::async_trait]
//! impl LoadBalancer for OneBackend {
//!     type BalanceLoadStream =
//!         Pin<Box<dyn Stream<Item = Result<proto::LoadBalanceResponse, Status>> + Send>>;
//!     async fn balance_load(
//!         &self,
//!         _request: Request<Streaming<proto::LoadBalanceRequest>>,
//!     ) -> Result<tonic::Response<Self::BalanceLoadStream>, Status> {
//!         let std::net::IpAddr::V4(ip) = self.0.ip() else { unreachable!() };
//!         let server = proto::Server {
//!             ip_address: ip.octets().to_vec(),
//!             port: self.0.port().into(),
//!             load_balance_token: "token-a".into(),
//!             drop: false,
//!         };
//!         let messages = [
//!             Response::InitialResponse(proto::InitialLoadBalanceResponse::default()),
//!             Response::ServerList(proto::ServerList { servers: vec![server] }),
//!         ]
//!         .map(|kind| Ok(proto::LoadBalanceResponse { load_balance_response_type: Some(kind) }));
//!         // The stream stays open after the list.
//!         let stream = futures::stream::iter(messages).chain(futures::stream::pending());
//!         Ok(tonic::Response::new(Box::pin(stream)))
//!     }
//! }
//! # use futures::StreamExt;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let backend = listener.local_addr()?;
//! tokio::spawn(grpc_lb_helloworld::serve(
//!     listener,
//!     grpc_lb_helloworld::NamedGreeter::new("backend-a"),
//!     std::future::pending::<()>(),
//! ));
//!
//! let grpclb = Grpclb::new(
//!     GrpclbConfig::default(),
//!     "greeter.example",
//!     grpc_lb_resolve::static_list([]), // no fallback backends
//!     LoadBalancerServer::new(OneBackend(backend)),
//! );
//! let connector = Http2Connector::new().with_transport(AddressConnector::new());
//! let discover = grpclb.discover(move |address| Reconnect::new(connector.clone(), address.clone()));
//! let balance = Balance::new(discover, RoundRobin::new()).subchannels().http();
//! grpclb.watch_backends(balance.connectivity());
//! let channel = grpclb.drop_layer().layer(balance);
//!
//! let mut client = GreeterClient::new(channel);
//! let reply = client.say_hello(HelloRequest { name: "grpclb".into() }).await?;
//! assert_eq!(reply.into_inner().message, "Hello grpclb from backend-a");
//! assert_eq!(grpclb.stats().take().num_calls_started, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod balancer;
mod config;
mod discover;
mod drop;
mod grpclb;
pub mod proto;
mod stats;
mod updates;

pub use crate::backend::{LbToken, LbTokenBody, LbTokenFuture, LB_TOKEN_KEY};
pub use crate::balancer::{BalancerClient, BalancerStatus, ServerEntry, ServerList, TaskGuard};
pub use crate::config::{
    ChildPolicy, GrpclbConfig, GrpclbConfigError, DEFAULT_FALLBACK_TIMEOUT, POLICY_NAME,
};
pub use crate::discover::GrpclbDiscover;
pub use crate::drop::{GrpclbDrop, GrpclbDropFuture, GrpclbDropLayer, DROP_MESSAGE};
pub use crate::grpclb::Grpclb;
pub use crate::stats::{CallOutcome, ClientStatsRecorder};
pub use crate::updates::{Mode, ModeStatus, Resolved, BALANCER_ADDRESS_KEY};
