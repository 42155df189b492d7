//! Name resolution for grpc-lb: from a target name to a `tower::discover::Discover`
//! of endpoints.
//!
//! gRPC's client starts from a target (`dns:///greeter.local:50051`), picks a
//! resolver by the target's scheme, and turns the resolver's addresses into
//! subchannels. This crate provides each piece, in the tower idiom:
//!
//! - [`target`]: parsing gRPC target names (`dns:`, `ipv4:`, `ipv6:`, `unix:`,
//!   `passthrough:`, custom schemes), with typed errors.
//! - [`Update`]: what a resolver says: `Reset` (the whole set), `Add`, `Remove`,
//!   and errors, with per-endpoint [`Attributes`] (weight, metadata).
//! - [`Resolver`] and [`Registry`]: resolvers chosen by scheme, extensible.
//! - [`ResolverDiscover`]: any stream of updates as a tower `Discover` with stable
//!   keys, so any tower balancer can consume it. A user's own `Stream` of updates
//!   plugs in here; a user's own `Discover` plugs in through [`discover_updates`]
//!   (the stack then builds its own subchannels for its keys) or into a balancer
//!   directly.
//! - [`service_config`]: service configs from resolvers (DNS TXT
//!   `grpc_config=` records, gRFC A2), kept in [`ResolverStatus`] so that a
//!   bad one never replaces a good one.
//! - Resolvers: [`static_list`] and the `ipv4`/`ipv6`/`unix`/`passthrough`
//!   schemes, and [`ManualResolver`], whose handle pushes updates.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use futures::StreamExt;
//! use grpc_lb_core::ResolveNow;
//! use grpc_lb_resolve::{Registry, ResolverDiscover, Endpoint};
//! use tower::discover::Change;
//!
//! let registry = Registry::with_defaults();
//! let updates = registry
//!     .resolve("ipv4:127.0.0.1:50051,127.0.0.1:50052", ResolveNow::new())
//!     .unwrap();
//! // Build whatever service each endpoint needs; here just its address.
//! let mut discover = ResolverDiscover::new(updates, |e: &Endpoint| e.address.to_string());
//! match discover.next().await {
//!     Some(Ok(Change::Insert(key, service))) => assert_eq!(service, key.to_string()),
//!     _ => unreachable!(),
//! }
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod attributes;
pub mod discover;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
mod fixed;
mod from_discover;
mod layer;
mod manual;
mod resolver;
pub mod service_config;
pub mod target;
mod update;

pub use crate::attributes::ResolvedAttributes;
pub use crate::discover::{ResolverDiscover, ResolverStatus};
pub use crate::fixed::static_list;
pub use crate::from_discover::discover_updates;
pub use crate::layer::{ResolutionFailed, ResolveDiscover, ResolveLayer};
pub use crate::manual::{ManualHandle, ManualResolver};
pub use crate::resolver::{Registry, ResolveError, Resolver, UpdateStream};
pub use crate::service_config::{ServiceConfigStatus, ServiceConfigUpdate};
pub use crate::target::Target;
pub use crate::update::{Address, Attributes, Endpoint, Update};
