//! Load-balancing policies for grpc-lb.
//!
//! A policy here is what grpc-go calls a balancer: a state machine told about
//! the endpoint list and about each subchannel's connectivity, which decides
//! which subchannels to connect, what the channel's state is, and which
//! subchannels may be picked. The pick itself is a [`Pick`]: a lock-free choice
//! among the ready endpoints, run by every caller at once without a mutex.
//!
//! | policy | source | connects | picks |
//! |---|---|---|---|
//! | [`PickFirst`] (`pick_first`) | gRFC A62, A61, grpc-go `pickfirst` | one address at a time, Happy Eyeballs 250 ms | the one READY subchannel |
//! | `round_robin` | grpc-go `roundrobin` | every endpoint, IDLE ones at once | in turn |
//! | `p2c` | tower's p2c + PeakEWMA | every endpoint | the less loaded of two random ones |
//! | `least_request` | gRFC A48 | every endpoint | fewest outstanding of `choice_count` random ones |
//!
//! Policies are chosen by name from a [`PolicyRegistry`], which users extend with
//! their own [`LoadBalancer`] implementations, as grpc-go's balancer registry and
//! `loadBalancingConfig` allow.
//!
//! # The new shape: [`service`] and [`tree`]
//!
//! [`service::Balance`] is the balancer as a tower `Service` over any
//! `Discover`, driven by per-endpoint events and run by a public policy tree
//! ([`tree`]): pick_first, round_robin, least_request, ring_hash,
//! weighted_round_robin, outlier detection and the graceful switch are written
//! on it, and users compose their own. Each policy reports an immutable
//! [`tree::Picker`] with its state (grpc-go's `UpdateState(state, picker)`);
//! `Balance::poll_ready` picks from the root's, and
//! [`service::PickHandle`], a clonable handle, picks from it on any task
//! without a lock. The Channel moves onto it in a later step.
//!
//! # Examples
//!
//! ```
//! use grpc_lb_balance::PolicyRegistry;
//!
//! let registry = PolicyRegistry::with_defaults();
//! let policy = registry.build("round_robin").unwrap();
//! assert_eq!(policy.name(), "round_robin");
//! assert!(registry.build("no_such_policy").is_err());
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod aggregate;
mod every;
mod load;
pub mod outlier;
mod pick;
mod pick_first;
mod policy;
mod registry;
pub mod service;
pub mod tree;

pub use crate::aggregate::aggregate;
pub use crate::every::EveryEndpoint;
pub use crate::load::EndpointLoad;
pub use crate::pick::{LeastRequest, P2cPeakEwma, Pick, RoundRobin, SingleReady};
pub use crate::pick_first::{PickFirst, CONNECTION_DELAY};
pub use crate::policy::{Helper, LoadBalancer};
pub use crate::registry::{PolicyRegistry, UnknownPolicy};
