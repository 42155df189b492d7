//! Turns a resolver's update stream into a `tower::discover::Discover`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use grpc_lb_core::{BoxError, SharedError};
use tokio::sync::watch;
use tower::discover::Change;

use crate::service_config::{ServiceConfigStatus, ServiceConfigUpdate};
use crate::update::{Address, Attributes, Endpoint, Update};

/// The capacity the queue of changes keeps once drained.
const PENDING_KEPT: usize = 16;

/// What the resolver has said so far, for the channel's connectivity state.
///
/// grpc-go: an error before any result leaves the channel in
/// `TRANSIENT_FAILURE` with that error; after a good result an error keeps the
/// last good set; an empty set is reported as such.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{Endpoint, ManualResolver, ResolverDiscover};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (resolver, handle) = ManualResolver::new("example");
/// let mut discover = ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| e.address.clone());
/// let status = discover.status();
///
/// handle.error("no such host");
/// let _ = futures::poll!(discover.next()); // the discover acts when polled
/// assert!(!status.borrow().resolved);
/// assert_eq!(status.borrow().last_error.as_ref().unwrap().to_string(), "no such host");
///
/// let addr: std::net::SocketAddr = "10.0.0.1:50051".parse().unwrap();
/// handle.reset([Endpoint::from(addr)]);
/// discover.next().await;
/// let now = status.borrow();
/// assert!(now.resolved && now.last_error.is_none());
/// assert_eq!(now.endpoints, 1);
/// assert_eq!(now.order[0].to_string(), "10.0.0.1:50051");
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ResolverStatus {
    /// True once the resolver has produced at least one good result.
    pub resolved: bool,
    /// How many endpoints the current set holds.
    pub endpoints: usize,
    /// The last resolution error, cleared by the next good result.
    pub last_error: Option<SharedError>,
    /// True once the resolver's stream has ended.
    pub ended: bool,
    /// The addresses in the resolver's order, which `Discover`'s inserts and
    /// removes cannot carry: pick_first tries them in this order (gRFC A62),
    /// and a Reset that only reorders them changes it.
    pub order: Arc<[Address]>,
    /// The resolver's service config: the latest good one and the latest
    /// error, which never replaces it (gRPC's service config error handling).
    /// A bad config before any good one leaves `config` empty with `error`
    /// set; grpc-go then fails the channel, unless it has a default config.
    pub service_config: ServiceConfigStatus,
}

/// A `tower::discover::Discover` over a resolver's updates, keyed by [`Address`].
///
/// `Reset` updates are diffed against the current set into `Insert` and `Remove`
/// changes, so any tower balancer (tower's p2c included) can consume a resolver
/// that reports whole sets. An endpoint whose attributes change is inserted again
/// with a new service. Resolution errors are not Discover errors (a tower
/// balancer would fail for good on one); they are published on
/// [`status`](Self::status) and the last good set stays.
///
/// `make` builds the service for a new endpoint, typically a reconnecting
/// subchannel.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{Endpoint, ManualResolver, ResolverDiscover};
/// use tower::discover::Change;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (resolver, handle) = ManualResolver::new("example");
/// // Each endpoint's "service" here is just its address as text.
/// let mut discover =
///     ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| e.address.to_string());
///
/// let a: std::net::SocketAddr = "10.0.0.1:50051".parse().unwrap();
/// let b: std::net::SocketAddr = "10.0.0.2:50051".parse().unwrap();
/// handle.reset([Endpoint::from(a), Endpoint::from(b)]);
/// handle.reset([Endpoint::from(b)]); // a whole new set: `a` is gone
///
/// let mut changes = Vec::new();
/// for _ in 0..3 {
///     match discover.next().await.unwrap().unwrap() {
///         Change::Insert(address, service) => changes.push(format!("+{address} {service}")),
///         Change::Remove(address) => changes.push(format!("-{address}")),
///     }
/// }
/// assert_eq!(changes, ["+10.0.0.1:50051 10.0.0.1:50051", "+10.0.0.2:50051 10.0.0.2:50051", "-10.0.0.1:50051"]);
/// # }
/// ```
pub struct ResolverDiscover<S, M, Svc> {
    updates: S,
    make: M,
    known: HashMap<Address, Attributes>,
    order: Vec<Address>,
    pending: VecDeque<Change<Address, Svc>>,
    status: watch::Sender<ResolverStatus>,
    ended: bool,
}

impl<S, M, Svc> ResolverDiscover<S, M, Svc>
where
    S: Stream<Item = Result<Update, BoxError>> + Unpin,
    M: FnMut(&Endpoint) -> Svc,
{
    /// Adapts `updates`, building each endpoint's service with `make`.
    pub fn new(updates: S, make: M) -> Self {
        let (status, _) = watch::channel(ResolverStatus::default());
        ResolverDiscover {
            updates,
            make,
            known: HashMap::new(),
            order: Vec::new(),
            pending: VecDeque::new(),
            status,
            ended: false,
        }
    }

    /// A watch on what the resolver has said.
    pub fn status(&self) -> watch::Receiver<ResolverStatus> {
        self.status.subscribe()
    }

    /// The addresses currently in the set.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.known.keys()
    }

    fn insert(&mut self, endpoint: &Endpoint) {
        if self.known.get(&endpoint.address) == Some(&endpoint.attributes) {
            return;
        }
        self.known
            .insert(endpoint.address.clone(), endpoint.attributes.clone());
        let service = (self.make)(endpoint);
        self.pending
            .push_back(Change::Insert(endpoint.address.clone(), service));
    }

    fn remove(&mut self, address: &Address) {
        if self.known.remove(address).is_some() {
            self.pending.push_back(Change::Remove(address.clone()));
        }
    }

    /// A config from the resolver: a good one (or "none") replaces the last;
    /// a bad one is only reported.
    fn apply_config(&mut self, update: ServiceConfigUpdate) {
        if let ServiceConfigUpdate::Invalid(error) = &update {
            tracing::warn!(%error, "the resolver's service config is invalid; keeping the last good one");
        }
        self.status.send_modify(|status| {
            let config = &mut status.service_config;
            config.updates += 1;
            match update {
                ServiceConfigUpdate::Config(new) => {
                    config.config = Some(new);
                    config.error = None;
                }
                ServiceConfigUpdate::NoConfig => {
                    config.config = None;
                    config.error = None;
                }
                ServiceConfigUpdate::Invalid(error) => config.error = Some(error),
            }
        });
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::ServiceConfig(config) => return self.apply_config(config),
            Update::Reset(endpoints) => {
                let mut wanted: HashMap<&Address, &Endpoint> =
                    HashMap::with_capacity(endpoints.len());
                let mut order = Vec::with_capacity(endpoints.len());
                for endpoint in &endpoints {
                    if wanted.insert(&endpoint.address, endpoint).is_none() {
                        order.push(endpoint.address.clone());
                    }
                }
                let gone: Vec<Address> = self
                    .known
                    .keys()
                    .filter(|address| !wanted.contains_key(*address))
                    .cloned()
                    .collect();
                for address in &gone {
                    self.remove(address);
                }
                // Inserted in the resolver's order; a repeated address counts
                // once, with the attributes of its first appearance.
                for address in &order {
                    self.insert(wanted[address]);
                }
                self.order = order;
            }
            Update::Add(endpoints) => {
                for endpoint in &endpoints {
                    if !self.known.contains_key(&endpoint.address) {
                        self.order.push(endpoint.address.clone());
                    }
                    self.insert(endpoint);
                }
            }
            Update::Remove(addresses) => {
                for address in &addresses {
                    self.remove(address);
                }
                self.order
                    .retain(|address| self.known.contains_key(address));
            }
        }
        let endpoints = self.known.len();
        let order: Arc<[Address]> = self.order.as_slice().into();
        self.status.send_modify(|status| {
            status.resolved = true;
            status.endpoints = endpoints;
            status.order = order;
            status.last_error = None;
        });
    }
}

impl<S, M, Svc> Stream for ResolverDiscover<S, M, Svc>
where
    S: Stream<Item = Result<Update, BoxError>> + Unpin,
    M: FnMut(&Endpoint) -> Svc + Unpin,
    Svc: Unpin,
{
    type Item = Result<Change<Address, Svc>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                if this.pending.is_empty() && this.pending.capacity() > PENDING_KEPT {
                    // A large Reset's queue of inserts would otherwise stay
                    // allocated for good: ~340 B per endpoint at 10,000.
                    this.pending.shrink_to(PENDING_KEPT);
                }
                return Poll::Ready(Some(Ok(change)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.updates.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(update))) => this.apply(update),
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(%error, "name resolution failed; keeping the last good set");
                    let error: SharedError = error.into();
                    this.status
                        .send_modify(|status| status.last_error = Some(error));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    this.status.send_modify(|status| status.ended = true);
                }
            }
        }
    }
}

impl<S, M, Svc> fmt::Debug for ResolverDiscover<S, M, Svc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolverDiscover")
            .field("endpoints", &self.known.len())
            .field("pending_changes", &self.pending.len())
            .field("ended", &self.ended)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use futures::StreamExt;
    use grpc_lb_core::ResolveNow;

    use super::*;
    use crate::ManualResolver;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn describe(change: Change<Address, String>) -> String {
        match change {
            Change::Insert(key, service) => format!("+{key}={service}"),
            Change::Remove(key) => format!("-{key}"),
        }
    }

    async fn next(
        discover: &mut ResolverDiscover<
            crate::UpdateStream,
            impl FnMut(&Endpoint) -> String + Unpin,
            String,
        >,
    ) -> String {
        describe(discover.next().await.unwrap().unwrap())
    }

    #[tokio::test]
    async fn reset_is_diffed_into_inserts_and_removes_with_stable_keys() {
        let (resolver, handle) = ManualResolver::new("test");
        let mut built = 0;
        let mut discover =
            ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
                built += 1;
                format!("svc{built}@{}", e.address)
            });
        let status = discover.status();
        assert!(!status.borrow().resolved);

        handle.reset([Endpoint::new(addr(1)), Endpoint::new(addr(2))]);
        assert_eq!(next(&mut discover).await, "+127.0.0.1:1=svc1@127.0.0.1:1");
        assert_eq!(next(&mut discover).await, "+127.0.0.1:2=svc2@127.0.0.1:2");
        assert_eq!(status.borrow().endpoints, 2);

        // Keeps 2 (same service, no new connection), drops 1, adds 3.
        handle.reset([Endpoint::new(addr(2)), Endpoint::new(addr(3))]);
        assert_eq!(next(&mut discover).await, "-127.0.0.1:1");
        assert_eq!(next(&mut discover).await, "+127.0.0.1:3=svc3@127.0.0.1:3");

        // A changed weight re-inserts; an unchanged endpoint does not.
        handle.add([
            Endpoint::new(addr(3)),
            Endpoint::new(addr(2)).with_weight(5),
        ]);
        assert_eq!(next(&mut discover).await, "+127.0.0.1:2=svc4@127.0.0.1:2");

        handle.remove([Address::Socket(addr(3)), Address::Socket(addr(9))]);
        assert_eq!(next(&mut discover).await, "-127.0.0.1:3");
        assert_eq!(status.borrow().endpoints, 1);
    }

    #[tokio::test]
    async fn errors_keep_the_last_good_set_and_are_published() {
        let (resolver, handle) = ManualResolver::new("test");
        let mut discover =
            ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| {
                e.address.to_string()
            });
        let status = discover.status();

        handle.error("no such host");
        handle.reset([Endpoint::new(addr(1))]);
        assert_eq!(next(&mut discover).await, "+127.0.0.1:1=127.0.0.1:1");
        // The error came before any result and was published, then cleared.
        assert!(status.borrow().resolved);
        assert!(status.borrow().last_error.is_none());

        handle.error("timeout");
        handle.reset([]);
        assert_eq!(next(&mut discover).await, "-127.0.0.1:1");
        let now = status.borrow().clone();
        assert_eq!(now.endpoints, 0, "an empty set is reported as such");
        assert!(now.resolved);
    }

    #[tokio::test]
    async fn error_before_any_result_is_visible() {
        let (resolver, handle) = ManualResolver::new("test");
        let mut discover =
            ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| {
                e.address.to_string()
            });
        let status = discover.status();
        handle.error("lookup failed: NXDOMAIN");
        let polled = futures::poll!(discover.next());
        assert!(polled.is_pending());
        let now = status.borrow().clone();
        assert!(!now.resolved);
        assert_eq!(
            now.last_error.unwrap().to_string(),
            "lookup failed: NXDOMAIN"
        );
    }

    #[tokio::test]
    async fn service_configs_keep_the_last_good_one() {
        use crate::ServiceConfigUpdate;

        let (resolver, handle) = ManualResolver::new("test");
        let mut discover =
            ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| {
                e.address.to_string()
            });
        let status = discover.status();
        let config = || status.borrow().service_config.clone();

        // Bad before any good: no config, the error reported.
        handle.service_config("[]");
        handle.reset([Endpoint::new(addr(1))]);
        next(&mut discover).await;
        assert!(config().config.is_none());
        assert!(config()
            .error
            .unwrap()
            .to_string()
            .starts_with("invalid service config"));

        handle.service_config(r#"{"loadBalancingPolicy": "round_robin"}"#);
        handle.service_config(r#"{"loadBalancingPolicy": 7}"#);
        handle.add([Endpoint::new(addr(2))]);
        next(&mut discover).await;
        let now = config();
        assert_eq!(
            now.config.unwrap().load_balancing_policy(),
            Some("round_robin")
        );
        assert!(now
            .error
            .unwrap()
            .to_string()
            .contains("loadBalancingPolicy"));
        assert_eq!(now.updates, 3);

        // A new stream (a channel leaving idle) starts from the last config sent.
        let mut again =
            ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| {
                e.address.to_string()
            });
        let fresh = again.status();
        next(&mut again).await;
        assert!(fresh.borrow().service_config.error.is_some());
        assert_eq!(fresh.borrow().endpoints, 2, "the set came after the config");

        // "No config" clears both.
        handle.send_service_config(ServiceConfigUpdate::NoConfig);
        handle.remove([Address::Socket(addr(1))]);
        next(&mut discover).await;
        let now = config();
        assert!(now.config.is_none() && now.error.is_none());
    }

    #[tokio::test]
    async fn works_as_a_tower_discover() {
        use tower::discover::Discover;
        fn assert_discover<D: Discover<Key = Address>>(_: &D) {}
        let (resolver, _handle) = ManualResolver::new("test");
        let discover = ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| {
            e.address.to_string()
        });
        assert_discover(&discover);
    }
}
