//! The policy tree: load-balancing policies that own child policies.
//!
//! A [`Policy`] is what grpc-go calls a balancer. It is told about endpoints
//! and about each subchannel's connectivity, one event at a time, and answers
//! through its [`Helper`]: connect or disconnect a subchannel, set a timer, and
//! report its state together with a [`Picker`] (grpc-go's
//! `UpdateState(State{ConnectivityState, Picker})`). A picker is an immutable
//! snapshot that chooses a subchannel for each call; the balancer publishes the
//! root's, and every caller picks from the latest one concurrently, without a
//! lock, while the policy goes on handling events on its own task.
//! [`Balance`](crate::service::Balance) runs the root of a tree, so policies
//! take `&mut self` and need no locks; their pickers keep per-call state (a
//! round-robin cursor, calls in flight) in atomics.
//!
//! A policy can own children, each with its own helper, as grpc-go gives each
//! child its own `balancer.ClientConn`: [`ChildSet`] is that building block
//! (grpc-go's `endpointsharding`). It routes each subchannel event and timer to
//! the child that owns it in O(1), keeps the children's aggregate state by
//! counting (no scan) and each child's latest picker, and tells its owner which
//! child changed. A parent builds its picker from its children's pickers.
//!
//! - [`PickFirst`]: the universal leaf (gRFC A62, A61); its picker holds its
//!   one READY subchannel.
//! - [`RoundRobin`]: one `PickFirst` child per endpoint (grpc-go's
//!   `roundrobin`); its picker takes the READY children's pickers in turn.
//! - [`LeastRequest`]: one `PickFirst` child per endpoint; its picker asks the
//!   child with fewest calls in flight among random candidates (gRFC A48). The
//!   counters are atomics shared by every picker of the policy, moved by the
//!   [`OnDone`] callback of each pick, which sees the final status.
//! - [`RingHash`]: gRFC A42/A61/A76, lazy pick_first children on a ring of
//!   XXH64 hashes; its picker holds the ring and each endpoint's state; the
//!   call's hash comes from a header or a [`RequestHash`] extension
//!   (`docs/policies/ring_hash.md`).
//! - [`WeightedRoundRobin`]: gRFC A58, weights from the ORCA reports in each
//!   call's trailers, seen through [`OnDone`]; its picker holds grpc-go's
//!   static stride scheduler (`docs/policies/weighted_round_robin.md`).
//! - [`GracefulSwitch`]: the switch from one policy to another, at the root of
//!   every balancer (`Balance::switch_policy`); it passes on the current
//!   policy's picker, and the pending one's once it takes over.
//! - [`OutlierDetection`]: gRFC A50 as a wrapping policy; its picker wraps its
//!   child's and counts each call's final status per endpoint, and ejected
//!   endpoints look TRANSIENT_FAILURE to its child.
//!
//! Rebuilding a parent's picker when a child changes copies only what changed
//! (the READY lists are copy-on-write in chunks of 128), and a pick costs the
//! same at 10 and at 10,000 endpoints.
//!
//! # Examples
//!
//! A composite policy of your own: round_robin over the endpoints whose key
//! says "canary", pick_first over the rest... is a few lines over [`ChildSet`].
//! The simplest composite is a wrapper that counts the picks of its child: it
//! wraps each picker its child reports ([`WrappingHelper`]).
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use grpc_lb_balance::tree::{
//!     Endpoint, EndpointId, Helper, PickInfo, PickResult, Picker, Policy, RoundRobin,
//!     SubchannelId, TimerId, WrappingHelper,
//! };
//! use grpc_lb_core::{Connectivity, SharedError};
//!
//! /// The child's picker, counting its picks.
//! #[derive(Debug)]
//! struct CountingPicker {
//!     child: Arc<dyn Picker>,
//!     picks: Arc<AtomicU64>,
//! }
//!
//! impl Picker for CountingPicker {
//!     fn pick(&self, info: &PickInfo<'_>) -> PickResult {
//!         self.picks.fetch_add(1, Ordering::Relaxed);
//!         self.child.pick(info)
//!     }
//! }
//!
//! #[derive(Debug)]
//! struct Counted<P> {
//!     child: P,
//!     picks: Arc<AtomicU64>,
//! }
//!
//! impl<P: Policy> Counted<P> {
//!     /// Runs `event` on the child with a helper that wraps its pickers.
//!     fn on_child(&mut self, helper: &mut dyn Helper, event: impl FnOnce(&mut P, &mut dyn Helper)) {
//!         let picks = self.picks.clone();
//!         let mut helper = WrappingHelper::new(helper, move |_, child| {
//!             Arc::new(CountingPicker { child, picks: picks.clone() }) as Arc<dyn Picker>
//!         });
//!         event(&mut self.child, &mut helper)
//!     }
//! }
//!
//! impl<P: Policy> Policy for Counted<P> {
//!     fn name(&self) -> &str { "counted" }
//!     fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
//!         self.on_child(helper, |child, helper| child.add_endpoint(endpoint, helper))
//!     }
//!     fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
//!         self.on_child(helper, |child, helper| child.remove_endpoint(endpoint, helper))
//!     }
//!     fn subchannel_state(&mut self, id: SubchannelId, state: &Connectivity, helper: &mut dyn Helper) {
//!         self.on_child(helper, |child, helper| child.subchannel_state(id, state, helper))
//!     }
//!     fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
//!         self.on_child(helper, |child, helper| child.resolver_error(error, helper))
//!     }
//!     fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
//!         self.on_child(helper, |child, helper| child.timer_fired(timer, helper))
//!     }
//!     fn exit_idle(&mut self, helper: &mut dyn Helper) {
//!         self.on_child(helper, |child, helper| child.exit_idle(helper))
//!     }
//!     fn pick_queued(&mut self, helper: &mut dyn Helper) {
//!         self.on_child(helper, |child, helper| child.pick_queued(helper))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), grpc_lb_core::BoxError> {
//! use grpc_lb_balance::service::Balance;
//! use tower::{discover::ServiceList, Service, ServiceExt};
//!
//! let picks = Arc::new(AtomicU64::new(0));
//! let policy = Counted { child: RoundRobin::new(), picks: picks.clone() };
//! let backends = ServiceList::new((0..2u32).map(|id| {
//!     tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(id) })
//! }));
//! let mut balance = Balance::new(backends, policy);
//! balance.ready().await?.call(()).await?;
//! assert!(picks.load(Ordering::Relaxed) >= 1);
//! # Ok(())
//! # }
//! ```

mod children;
pub(crate) mod cow;
mod graceful_switch;
mod least_request;
mod outlier_detection;
mod pick;
mod pick_first;
mod picker;
mod registry;
mod ring_hash;
mod ring_hash_config;
mod ring_index;
mod round_robin;
mod wrr;
mod wrr_scheduler;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

pub use self::children::{ChildHelper, ChildSet, ChildUpdate};
pub use self::graceful_switch::GracefulSwitch;
pub use self::least_request::LeastRequest;
pub use self::outlier_detection::OutlierDetection;
pub use self::pick::{DoneInfo, OnDone, Outcome, Pick, PickInfo, PickResult};
pub use self::pick_first::PickFirst;
pub use self::picker::{FixedPicker, Picker, WrappingHelper};
pub use self::registry::{ChosenPolicy, PolicyBuilder, PolicyConfigError, PolicyRegistry};
pub use self::ring_hash::{EndpointAttributes, RequestHash, RingHash};
pub use self::ring_hash_config::{RingHashConfig, RingHashConfigError};
pub use self::round_robin::RoundRobin;
pub use self::wrr::{WeightedRoundRobin, WrrConfig, WrrConfigError};

/// Names one subchannel of a balancer: one discovered service.
///
/// Ids are never reused while a balancer lives, so a policy that keeps a stale
/// id cannot reach another endpoint's subchannel by mistake (tower#856).
///
/// ```
/// use grpc_lb_balance::tree::SubchannelId;
///
/// let id = SubchannelId::from_raw(2);
/// assert_eq!(id.to_string(), "SubChannel #2");
/// assert_eq!(id.raw(), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubchannelId(u64);

impl SubchannelId {
    /// An id from its raw value, for policies' own tests.
    pub const fn from_raw(raw: u64) -> Self {
        SubchannelId(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubchannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubChannel #{}", self.0)
    }
}

/// Names one endpoint: a group of subchannels (gRFC A61: an endpoint may have
/// several addresses), given to a policy in one [`Endpoint`].
///
/// ```
/// use grpc_lb_balance::tree::EndpointId;
///
/// assert_eq!(EndpointId::from_raw(5).raw(), 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(u64);

impl EndpointId {
    /// An id from its raw value, for policies' own tests.
    pub const fn from_raw(raw: u64) -> Self {
        EndpointId(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

/// Names a timer asked for with [`Helper::set_timer`].
///
/// ```
/// use grpc_lb_balance::tree::TimerId;
///
/// assert_eq!(TimerId::from_raw(1).raw(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

impl TimerId {
    /// An id from its raw value, for helpers of policies' own tests.
    pub const fn from_raw(raw: u64) -> Self {
        TimerId(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

/// One endpoint as a policy learns of it: its id and its subchannels, in the
/// order pick_first tries them. Every subchannel starts IDLE.
///
/// ```
/// use grpc_lb_balance::tree::{Endpoint, EndpointId, SubchannelId};
///
/// // An endpoint with an IPv6 and an IPv4 address (gRFC A61).
/// let addresses = [SubchannelId::from_raw(1), SubchannelId::from_raw(2)];
/// let endpoint = Endpoint { id: EndpointId::from_raw(1), subchannels: &addresses };
/// assert_eq!(endpoint.subchannels.len(), 2);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    /// The endpoint's id, used again by [`Policy::remove_endpoint`].
    pub id: EndpointId,
    /// The endpoint's subchannels, one per address.
    pub subchannels: &'a [SubchannelId],
}

/// What a policy can ask of whoever runs it (grpc-go's `balancer.ClientConn`).
///
/// The root's helper is the balancer itself; a child's helper is a
/// [`ChildHelper`] that forwards to its parent's and keeps what the child
/// reports about itself.
pub trait Helper {
    /// Asks an IDLE subchannel to connect (grpc-go's `SubConn.Connect`).
    fn connect(&mut self, subchannel: SubchannelId);

    /// Drops a subchannel's connection or attempt; it goes IDLE.
    fn disconnect(&mut self, subchannel: SubchannelId);

    /// Reports this policy's state and the picker that serves calls from now
    /// on (grpc-go's `UpdateState(State{ConnectivityState, Picker})`); a
    /// policy reports whenever either changes. The balancer publishes the
    /// root's: its state with `error` (the cause of a TRANSIENT_FAILURE, for
    /// observers and a fail-fast layer, which need it without picking), and
    /// its picker, from which every call picks.
    fn update_state(
        &mut self,
        state: ConnectivityState,
        error: Option<SharedError>,
        picker: Arc<dyn Picker>,
    );

    /// Asks for [`Policy::timer_fired`] with the returned id after `after`.
    fn set_timer(&mut self, after: Duration) -> TimerId;

    /// Forgets a timer that has not fired.
    fn cancel_timer(&mut self, timer: TimerId);

    /// Asks the resolver to resolve again.
    fn resolve_now(&mut self);

    /// What discovery said about an endpoint (its hash key and weight), if
    /// the balancer was told; ring_hash reads it when an endpoint is added.
    fn endpoint_attributes(&self, endpoint: EndpointId) -> Option<EndpointAttributes> {
        let _ = endpoint;
        None
    }
}

/// A load-balancing policy: a node of the policy tree (grpc-go's
/// `balancer.Balancer`). It picks through the [`Picker`] it reports with
/// [`Helper::update_state`], never itself.
///
/// Events arrive one at a time, each exactly once and in order; none of them
/// needs a policy to look at every endpoint, and the provided policies do not.
/// A failing endpoint is never removed by a policy: it backs off and comes back
/// by itself; only discovery removes endpoints.
pub trait Policy: Send + 'static {
    /// The policy's name, as in `loadBalancingConfig`.
    fn name(&self) -> &str;

    /// A new endpoint; its subchannels are all IDLE.
    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper);

    /// An endpoint is gone; its subchannels receive no more events, and a
    /// policy must not name them again.
    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper);

    /// A subchannel moved to `state`.
    fn subchannel_state(
        &mut self,
        subchannel: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    );

    /// Discovery failed (grpc-go's `ResolverError`). The endpoints known so far
    /// stay; by default nothing else happens.
    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        let _ = (error, helper);
    }

    /// A timer asked for with [`Helper::set_timer`] fired.
    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        let _ = (timer, helper);
    }

    /// A call is waiting while the policy is IDLE (grpc-go's `ExitIdle`).
    fn exit_idle(&mut self, helper: &mut dyn Helper);

    /// True if this policy's pickers look at the call (method, headers): the
    /// balancer then picks again with each call's [`PickInfo`] when the call
    /// is made, not only without one when readiness is asked for.
    fn uses_pick_info(&self) -> bool {
        false
    }

    /// A pick answered [`PickResult::Queue`] and the call waits. A picker
    /// has no helper, so a policy whose picker wants an endpoint connected
    /// (ring_hash's IDLE ring entry, as grpc-go's picker calls `ExitIdle`)
    /// leaves word in state it shares with its pickers (an atomic) and acts on
    /// it here, on the balancer's task. By default nothing happens.
    fn pick_queued(&mut self, helper: &mut dyn Helper) {
        let _ = helper;
    }
}

impl Policy for Box<dyn Policy> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        (**self).add_endpoint(endpoint, helper)
    }
    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        (**self).remove_endpoint(endpoint, helper)
    }
    fn subchannel_state(
        &mut self,
        subchannel: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        (**self).subchannel_state(subchannel, state, helper)
    }
    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        (**self).resolver_error(error, helper)
    }
    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        (**self).timer_fired(timer, helper)
    }
    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        (**self).exit_idle(helper)
    }
    fn uses_pick_info(&self) -> bool {
        (**self).uses_pick_info()
    }
    fn pick_queued(&mut self, helper: &mut dyn Helper) {
        (**self).pick_queued(helper)
    }
}

#[cfg(test)]
mod tests;
