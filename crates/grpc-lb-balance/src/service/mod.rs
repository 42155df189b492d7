//! A balancer as a tower `Service` over any `Discover`, run by a policy tree.
//!
//! [`Balance`] takes a `tower::discover::Discover` of any key type (`Hash +
//! Eq + Clone`) and any services (`Service<Req>`, HTTP or not), and a root
//! [`Policy`](crate::tree::Policy). `poll_ready` is the picker: it is
//! `Pending`, with the caller's waker registered, until the policy picks an
//! endpoint that can take a call, and then `Ready(Ok)` with that endpoint
//! reserved for the next `call`. It never fails because an endpoint failed:
//! a failing endpoint is kept and retried, and the policy's state
//! ([`Balance::connectivity`]) says TRANSIENT_FAILURE, for a fail-fast layer
//! above. Tower middleware above it (load-shed, concurrency limits) therefore
//! sees real backpressure.
//!
//! # Events, not scans
//!
//! Each endpoint is polled with its own waker (as tower's `ReadyCache` does
//! for pending endpoints). When one wakes, its index is queued and the
//! balancer's task is woken; the balancer then polls only the endpoints that
//! woke, and a state change reaches the policy once, in order. No event costs
//! work proportional to the number of endpoints, and the provided policies
//! keep their READY lists in place. States an endpoint passes through within
//! one poll (a connection that completes at once: CONNECTING then READY) are
//! seen as the last of them.
//!
//! # Without traffic
//!
//! Like tower's balancer, `Balance` moves only when polled. The task that owns
//! it is woken on every event, though: a task that polls
//! [`Balance::poll_events`] whenever it is woken keeps discovery and
//! reconnection going with no calls at all (the Channel's worker does this).
//!
//! # The picker, and picking from many tasks
//!
//! The root policy reports an immutable [`Picker`](crate::tree::Picker) with
//! each state; `poll_ready` picks from the latest. [`Balance::handle`] gives a
//! clonable [`PickHandle`] for callers on other tasks or threads (a clonable
//! channel): the balancer publishes its picker together with its endpoints'
//! services once per batch of events, and each handle picks from that snapshot
//! without a lock and answers a clone of the picked service.
//!
//! # Discovery errors and the end of discovery
//!
//! A discovery error is told to the policy as a resolver error (grpc-go's
//! `ResolverError`): the endpoints known stay, and a policy with none reports
//! TRANSIENT_FAILURE with it. The end of discovery keeps the last set;
//! `poll_ready` fails with [`DiscoverClosed`](error::DiscoverClosed) only if
//! discovery ended with no endpoints, since nothing could ever be picked.
//!
//! # Connectivity and calls: two type parameters
//!
//! Rust has no specialization, so what the balancer reads from its services
//! and calls is chosen by type, with the defaults set by [`Balance::new`]:
//!
//! - [`Probe`]: [`ByReadiness`] (the default) reads a plain service's state
//!   from `poll_ready` (READY while Ready, CONNECTING while Pending,
//!   TRANSIENT_FAILURE while it errs, retried after backoff, never evicted);
//!   [`ByConnectivity`] ([`Balance::subchannels`]) reads a
//!   [`Subchannel`](grpc_lb_core::Subchannel)'s own state and steers it.
//! - [`Calls`]: [`PlainCalls`] (the default) gives pickers no pick info and
//!   ends a call with its `Result`; [`HttpCalls`] ([`Balance::http`]) gives
//!   them the path and headers and ends a call with its `grpc-status`.
//!
//! # Examples
//!
//! ```
//! use grpc_lb_balance::service::Balance;
//! use grpc_lb_balance::tree::RoundRobin;
//! use tower::discover::ServiceList;
//! use tower::{Service, ServiceExt};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), grpc_lb_core::BoxError> {
//! let backends = ServiceList::new((0..3u32).map(|id| {
//!     tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(id) })
//! }));
//! let mut balance = Balance::new(backends, RoundRobin::new());
//! let mut seen = Vec::new();
//! for _ in 0..3 {
//!     seen.push(balance.ready().await?.call(()).await?);
//! }
//! seen.sort();
//! assert_eq!(seen, [0, 1, 2]); // each backend once, in turn
//! # Ok(())
//! # }
//! ```

mod balance;
mod calls;
pub mod error;
pub mod future;
mod handle;
mod layer;
mod probe;
mod root;
mod timers;
mod wakers;

pub use self::balance::Balance;
pub use self::calls::{Calls, DoneBody, HttpCalls, PlainCalls};
pub use self::handle::{PickFuture, PickHandle, Picked};
pub use self::layer::BalanceLayer;
pub use self::probe::{ByConnectivity, ByReadiness, Probe, ReadinessState};

#[cfg(test)]
mod describe_tests;
#[cfg(test)]
mod handle_tests;
#[cfg(test)]
mod tests;
