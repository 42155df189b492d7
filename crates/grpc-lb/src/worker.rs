//! The task that runs a channel: discovery, subchannels and the policy.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use grpc_lb_backoff::{DefaultRng, Rng};
use grpc_lb_balance::outlier::{CallCounter, OutlierDetectionConfig, OutlierDetector};
use grpc_lb_balance::{EndpointLoad, Helper, LoadBalancer, PolicyRegistry};
use grpc_lb_core::{BoxError, Connectivity, ConnectivityState, ResolveNow, SharedError};
use grpc_lb_health::{HealthCheck, HealthWatch};
use grpc_lb_reconnect::{Reconnect, SubchannelHandle};
use grpc_lb_resolve::{Address, ResolverStatus};
use grpc_lb_service_config::ServiceConfig;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};
use tonic::client::GrpcService;
use tower::discover::{Change, Discover};
use tower_service::Service;

use crate::config::{choose, ConfigTracker};
use crate::observe::{ChannelEvent, Peer, SubchannelEntry};
use crate::snapshot::{Shared, Snapshot};
use crate::wake_queue::{SubchannelWake, WakeQueue};

/// Starts a health watch on a subchannel's new connection.
pub(crate) type StartHealth<S> = Arc<dyn Fn(&S) -> HealthWatch + Send + Sync>;

/// Makes the health watch starter for a service name, so that a service
/// config's `healthCheckConfig` can turn health checking on, off, or to
/// another service.
pub(crate) type MakeHealth<S> = Arc<dyn Fn(&str) -> StartHealth<S> + Send + Sync>;

struct Subchannel<C: Service<T>, T, R> {
    reconnect: Reconnect<C, T, R>,
    handle: SubchannelHandle,
    /// The state the policy was last told: the subchannel's own, seen through
    /// its health watch and outlier ejection.
    state: ConnectivityState,
    /// The subchannel's own state when the worker last drove it.
    raw: ConnectivityState,
    /// The health watch on the current connection, while READY with health
    /// checking on; dropped (which stops it) when the connection goes.
    health: Option<HealthWatch>,
    /// Why outlier detection ejected this endpoint, while it is ejected.
    ejected: Option<SharedError>,
    /// Call outcomes for outlier detection, when it is on.
    outcomes: Option<Arc<CallCounter>>,
    load: Arc<EndpointLoad>,
    peer: Peer,
    /// The subchannel's connection attempts when the worker last looked.
    attempts: u64,
    /// The policy asked this subchannel to connect, and it has not left IDLE
    /// since. An IDLE subchannel the policy does not want is not driven, so
    /// that one built eager (`ConnectMode::Eager`) cannot connect behind its
    /// policy's back: pick_first letting it go and its reconnecting at once
    /// was a livelock.
    wanted: bool,
    /// Queues this subchannel for the worker when woken.
    wake: Arc<SubchannelWake>,
    /// `wake` as the waker the subchannel is driven with.
    waker: Waker,
}

impl<C: Service<T>, T, R> Subchannel<C, T, R> {
    /// The state the policy sees for the subchannel's own state `raw`: an
    /// ejected endpoint is TRANSIENT_FAILURE whatever its connection does (as
    /// A50's wrapper reports it), and a connection under a health watch is as
    /// healthy as the watch says (A17).
    fn effective(&self, raw: ConnectivityState) -> ConnectivityState {
        if self.ejected.is_some() {
            return ConnectivityState::TransientFailure;
        }
        match &self.health {
            Some(health) if raw == ConnectivityState::Ready => health.state(),
            _ => raw,
        }
    }

    /// The state the policy sees now, with its cause.
    fn connectivity(&self) -> Connectivity {
        if let Some(error) = &self.ejected {
            return Connectivity {
                state: ConnectivityState::TransientFailure,
                last_error: Some(error.clone()),
            };
        }
        match &self.health {
            Some(health) if self.raw == ConnectivityState::Ready => health.connectivity(),
            _ => self.handle.connectivity(),
        }
    }

    /// Whether requests may be sent on its connection: not ejected, and healthy
    /// if watched. The policy is told the same, but this is checked again when
    /// publishing, so that no picker ever holds an unhealthy connection.
    fn usable(&self) -> bool {
        self.ejected.is_none()
            && self
                .health
                .as_ref()
                .is_none_or(|health| health.state() == ConnectivityState::Ready)
    }
}

/// Builds what idle mode tears down: a new discovery (the resolver started
/// again), its status, and a new policy.
pub(crate) type Rebuild<D> = Box<
    dyn FnMut() -> Result<
            (
                D,
                Option<watch::Receiver<ResolverStatus>>,
                Box<dyn LoadBalancer>,
            ),
            BoxError,
        > + Send,
>;

/// Idle mode (grpc-go's `WithIdleTimeout`): after `timeout` with no call open
/// and none ended, the worker drops its subchannels, their connections and the
/// resolver, and the channel is IDLE until a call or `connect()`.
pub(crate) struct IdleMode<D> {
    timeout: Duration,
    rebuild: Rebuild<D>,
    /// Created on the first poll; reset to the next moment the channel could
    /// be idle long enough.
    timer: Option<Pin<Box<Sleep>>>,
    idle: bool,
    /// Why leaving idle failed (the resolver could not start again).
    failure: Option<SharedError>,
}

impl<D> IdleMode<D> {
    pub(crate) fn new(timeout: Duration, rebuild: Rebuild<D>) -> Self {
        IdleMode {
            timeout,
            rebuild,
            timer: None,
            idle: false,
            failure: None,
        }
    }
}

/// Outlier detection (gRFC A50) as the worker runs it: the detector, its
/// interval timer, and randomness for the enforcement percentages.
struct Outlier {
    detector: OutlierDetector<Address>,
    /// Created on the first poll, so that the worker can be made outside a
    /// runtime.
    timer: Option<Pin<Box<Sleep>>>,
    rng: DefaultRng,
}

/// How many rounds of events one poll of the worker handles before it yields
/// to the runtime (waking itself to go on): a source of events that never
/// runs dry (subchannels that connect and are let go at once, a discovery
/// that keeps failing) must not hold the thread, nor keep the worker from
/// seeing that its channel is gone.
const ROUNDS_PER_POLL: usize = 64;

/// How many discovery errors one poll of the worker takes before it yields.
const DISCOVERY_ERRORS_PER_POLL: usize = 32;

/// Drives one channel: polls discovery continuously (with or without traffic),
/// drives each subchannel when it is woken (only those: a state change costs
/// the same at any endpoint count), tells the policy each of its state changes
/// once and in order, and publishes the picker and the channel state. An IDLE
/// subchannel is driven only once its policy asked it to connect, so the
/// policy alone decides which endpoints connect, even over subchannels built
/// `ConnectMode::Eager`. It ends when every clone of its channel has been
/// dropped.
///
/// [`Builder::build`](crate::Builder::build) spawns it; [`Channel::pair`](crate::Channel::pair)
/// hands it to you to spawn.
///
/// ```
/// use grpc_lb::balance::PolicyRegistry;
/// use grpc_lb::connect::Http2Connector;
/// use grpc_lb::reconnect::Reconnect;
/// use grpc_lb::resolve::{Endpoint, ManualResolver, ResolverDiscover};
/// use grpc_lb::{Channel, ChannelOptions, ConnectivityState, SocketConnector};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (resolver, _endpoints) = ManualResolver::new("mine");
/// let connector = SocketConnector::new(Http2Connector::<tonic::body::Body>::new());
/// let discover = ResolverDiscover::new(resolver.stream(Default::default()), move |e: &Endpoint| {
///     Reconnect::new(connector.clone(), e.address.clone())
/// });
/// let policy = PolicyRegistry::with_defaults().build("pick_first")?;
/// let (channel, worker) = Channel::pair::<_, _, _, _, http::Request<tonic::body::Body>>(
///     discover,
///     policy,
///     ChannelOptions::default(),
/// );
///
/// let running = tokio::spawn(worker);
/// assert_eq!(channel.state(), ConnectivityState::Idle);
/// // The worker ends once the last clone of its channel is gone.
/// drop(channel);
/// running.await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "the worker does nothing unless spawned or awaited"]
pub struct Worker<D, C, T, R, Req>
where
    C: Service<T>,
{
    /// `None` while idle.
    discover: Option<D>,
    discover_ended: bool,
    resolver_status: Option<watch::Receiver<ResolverStatus>>,
    /// Boxed: a `Subchannel` holds its whole `Reconnect`, and the map keeps
    /// up to half its slots empty; inline, those empty slots were ~770 B per
    /// idle endpoint at 10,000 endpoints (massif, `grpc-lb-bench idle`).
    subchannels: HashMap<Address, Box<Subchannel<C, T, R>>>,
    order: Vec<Address>,
    /// The resolver's order as last applied to `order`.
    resolver_order: Arc<[Address]>,
    policy: Box<dyn LoadBalancer>,
    shared: Arc<Shared<C::Response>>,
    timer: Option<Pin<Box<Sleep>>>,
    resolve_now: ResolveNow,
    shutdown: oneshot::Receiver<()>,
    /// Set when health checking is on.
    health: Option<StartHealth<C::Response>>,
    outlier: Option<Outlier>,
    idle: Option<IdleMode<D>>,
    /// The service config in force: the resolver's over the default.
    config: ConfigTracker,
    /// The policies a service config may choose from; `None` keeps the
    /// policy the worker was given.
    policies: Option<PolicyRegistry>,
    /// The policy when the config in force names none.
    fallback_policy: String,
    /// Set when health checking follows the config's `healthCheckConfig`
    /// (not fixed by `Builder::health_check` or `Worker::health_check`).
    make_health: Option<MakeHealth<C::Response>>,
    /// The service `health` watches, when it follows the config.
    health_name: Option<String>,
    /// Set on leaving idle: the rebuilt policy may not be the one the config
    /// in force chose.
    check_policy: bool,
    /// Outlier detection was set by the builder (or `ChannelOptions`), not by
    /// a config's `outlier_detection_experimental`.
    outlier_fixed: bool,
    /// The next publish replaces the picker even if its endpoints did not
    /// change (outlier detection's counters were turned on or off).
    force_publish: bool,
    /// Endpoints the discovery inserted again (same key, new subchannel)
    /// since the policy was last told.
    replaced: Vec<Address>,
    /// The subchannels to drive: those woken since the worker last looked.
    wake_queue: Arc<WakeQueue>,
    /// The policy's [`LoadBalancer::pickable_version`] at the last publish;
    /// `None` when unknown (a new policy).
    published_version: Option<u64>,
    /// The queue's contents while they are driven (kept for its allocation).
    woken: Vec<Arc<SubchannelWake>>,
    _request: PhantomData<fn(Req)>,
}

impl<D, C, T, R, Req> Worker<D, C, T, R, Req>
where
    C: Service<T>,
{
    /// Gates every subchannel on client-side health checks (gRFC A17): each
    /// new connection gets a `grpc.health.v1.Health/Watch` from `check`, and
    /// the policy sees the subchannel CONNECTING until the first answer, READY
    /// while SERVING, TRANSIENT_FAILURE otherwise (READY, with an error log,
    /// when the server does not implement the health service). The watch ends
    /// with its connection. Policies that do not use health checks
    /// (`pick_first`, see [`LoadBalancer::uses_health_checks`]) are left alone.
    ///
    /// [`Builder::health_check`](crate::Builder::health_check) and a service
    /// config's `healthCheckConfig` do this for built channels; this is for
    /// channels made with [`Channel::pair`](crate::Channel::pair).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use grpc_lb::balance::PolicyRegistry;
    /// use grpc_lb::connect::Http2Connector;
    /// use grpc_lb::health::HealthCheck;
    /// use grpc_lb::reconnect::Reconnect;
    /// use grpc_lb::resolve::{Endpoint, Registry, ResolverDiscover};
    /// use grpc_lb::{Channel, ChannelOptions, SocketConnector};
    ///
    /// let updates = Registry::with_defaults().resolve("ipv4:127.0.0.1:50051", Default::default())?;
    /// let connector = SocketConnector::new(Http2Connector::<tonic::body::Body>::new());
    /// let discover = ResolverDiscover::new(updates, move |e: &Endpoint| {
    ///     Reconnect::new(connector.clone(), e.address.clone())
    /// });
    /// let policy = PolicyRegistry::with_defaults().build("round_robin")?;
    /// let (channel, worker) = Channel::pair::<_, _, _, _, http::Request<tonic::body::Body>>(
    ///     discover, policy, ChannelOptions::default());
    /// tokio::spawn(worker.health_check(HealthCheck::new("helloworld.Greeter")));
    /// # drop(channel);
    /// # Ok(())
    /// # }
    /// ```
    pub fn health_check(mut self, check: HealthCheck) -> Self
    where
        C::Response: GrpcService<tonic::body::Body> + Clone + Send + 'static,
        <C::Response as GrpcService<tonic::body::Body>>::Future: Send,
        <C::Response as GrpcService<tonic::body::Body>>::Error: Into<BoxError>,
        <C::Response as GrpcService<tonic::body::Body>>::ResponseBody:
            http_body::Body<Data = bytes::Bytes> + Send + 'static,
        <<C::Response as GrpcService<tonic::body::Body>>::ResponseBody as http_body::Body>::Error:
            Into<BoxError> + Send,
    {
        self.health = Some(Arc::new(move |connection: &C::Response| {
            check.spawn(connection.clone())
        }));
        self.make_health = None;
        self.health_name = None;
        self
    }

    /// Health checking fixed by the builder, whatever the config says.
    pub(crate) fn set_health(&mut self, start: StartHealth<C::Response>) {
        self.health = Some(start);
        self.make_health = None;
        self.health_name = None;
    }

    /// Health checking as the config in force's `healthCheckConfig` says,
    /// starting with the default config's.
    pub(crate) fn set_make_health(&mut self, make: MakeHealth<C::Response>) {
        self.health_name = self
            .config
            .in_force()
            .and_then(|config| config.health_check())
            .map(|check| check.service_name().to_owned());
        self.health = self.health_name.as_deref().map(|name| make(name));
        self.make_health = Some(make);
    }

    /// The policy used when the config in force names none (the builder's
    /// `policy`, gRPC's `pick_first` by default).
    pub(crate) fn set_fallback_policy(&mut self, name: String) {
        self.fallback_policy = name;
    }
}

impl<D, C, T, R, Req> Worker<D, C, T, R, Req>
where
    D: Discover<Key = Address, Service = Reconnect<C, T, R>> + Unpin,
    D::Error: Into<BoxError>,
    C: Service<T>,
    C::Error: Into<BoxError>,
    C::Response: Service<Req> + Clone,
    <C::Response as Service<Req>>::Error: Into<BoxError>,
    T: Clone + fmt::Debug,
    R: Rng,
{
    pub(crate) fn new(
        discover: D,
        resolver_status: Option<watch::Receiver<ResolverStatus>>,
        policy: Box<dyn LoadBalancer>,
        shared: Arc<Shared<C::Response>>,
        resolve_now: ResolveNow,
        shutdown: oneshot::Receiver<()>,
    ) -> Self {
        Worker {
            discover: Some(discover),
            discover_ended: false,
            resolver_status,
            subchannels: HashMap::new(),
            order: Vec::new(),
            resolver_order: Arc::from(Vec::new()),
            fallback_policy: policy.name().to_owned(),
            policy,
            shared,
            timer: None,
            resolve_now,
            shutdown,
            health: None,
            outlier: None,
            idle: None,
            config: ConfigTracker::new(None),
            policies: None,
            make_health: None,
            health_name: None,
            check_policy: false,
            outlier_fixed: false,
            force_publish: false,
            replaced: Vec::new(),
            wake_queue: WakeQueue::new(),
            published_version: None,
            woken: Vec::new(),
            _request: PhantomData,
        }
    }

    /// Follows service configs: `default` until the resolver gives one, and
    /// the policy a config chooses from `policies`, when given.
    pub(crate) fn with_service_config(
        mut self,
        default: Option<Arc<ServiceConfig>>,
        policies: Option<PolicyRegistry>,
    ) -> Self {
        self.config = ConfigTracker::new(default);
        self.policies = policies;
        self.outlier_fixed = self.outlier.is_some();
        self.follow_outlier_config();
        self
    }

    /// Turns on outlier detection and idle mode, when given.
    pub(crate) fn with_modes(
        mut self,
        outlier_detection: Option<OutlierDetectionConfig>,
        idle: Option<IdleMode<D>>,
    ) -> Self {
        self.outlier = outlier_detection.map(|config| Outlier {
            detector: OutlierDetector::new(config),
            timer: None,
            rng: DefaultRng::new(),
        });
        self.idle = idle;
        self
    }

    fn poll_discovery(&mut self, cx: &mut Context<'_>) -> bool {
        let mut changed = false;
        let mut events = Vec::new();
        let mut errors = 0;
        while let Some(discover) = self.discover.as_mut().filter(|_| !self.discover_ended) {
            match Pin::new(discover).poll_discover(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => self.discover_ended = true,
                Poll::Ready(Some(Err(error))) => {
                    let error: BoxError = error.into();
                    tracing::warn!(channel = self.shared.channel_id, %error, "discovery error");
                    errors += 1;
                    if errors == DISCOVERY_ERRORS_PER_POLL {
                        // A discovery that fails at once, every time: go on
                        // after the runtime has run others.
                        cx.waker().wake_by_ref();
                        break;
                    }
                }
                Poll::Ready(Some(Ok(Change::Insert(address, reconnect)))) => {
                    let handle = reconnect.handle();
                    let state = reconnect.state();
                    // A replaced endpoint keeps its counts and ejection (A50).
                    let outcomes = self
                        .outlier
                        .as_mut()
                        .map(|o| o.detector.add(address.clone()));
                    let ejected = self
                        .outlier
                        .as_ref()
                        .filter(|o| o.detector.is_ejected(&address))
                        .map(|_| Arc::new(Ejected) as SharedError);
                    let wake = self.wake_queue.entry(address.clone());
                    // Driven once, which registers its waker.
                    wake.mark();
                    let subchannel = Subchannel {
                        waker: Waker::from(wake.clone()),
                        wake,
                        state,
                        raw: state,
                        reconnect,
                        health: None,
                        ejected,
                        outcomes,
                        attempts: handle.connect_attempts(),
                        wanted: false,
                        handle,
                        load: Arc::new(EndpointLoad::default()),
                        peer: Peer::new(address.clone()),
                    };
                    let id = subchannel.handle.id();
                    match self
                        .subchannels
                        .insert(address.clone(), Box::new(subchannel))
                    {
                        None => self.order.push(address.clone()),
                        Some(old) => {
                            self.replaced.push(address.clone());
                            events.push(ChannelEvent::SubchannelRemoved {
                                id: old.handle.id(),
                                address: address.clone(),
                            });
                        }
                    }
                    events.push(ChannelEvent::SubchannelAdded { id, address, state });
                    changed = true;
                }
                Poll::Ready(Some(Ok(Change::Remove(address)))) => {
                    // Dropping the subchannel closes its connection once the
                    // requests already on it have finished.
                    if let Some(old) = self.subchannels.remove(&address) {
                        if let Some(outlier) = &mut self.outlier {
                            outlier.detector.remove(&address);
                        }
                        self.order.retain(|a| *a != address);
                        events.push(ChannelEvent::SubchannelRemoved {
                            id: old.handle.id(),
                            address,
                        });
                        changed = true;
                    }
                }
            }
        }
        changed |= self.follow_resolver_order();
        if changed {
            let entries = self
                .order
                .iter()
                .map(|address| SubchannelEntry {
                    address: address.clone(),
                    handle: self.subchannels[address].handle.clone(),
                })
                .collect();
            self.shared.subchannels.store(Arc::new(entries));
        }
        // Sent once the list is stored, so a listener reading it sees the change.
        for event in events {
            self.shared.emit(event);
        }
        changed
    }

    /// Puts the subchannels in the resolver's latest order (which inserts and
    /// removes alone cannot convey); addresses it does not list keep their
    /// place after those it does. Returns whether the order changed.
    fn follow_resolver_order(&mut self) -> bool {
        let Some(status) = &self.resolver_status else {
            return false;
        };
        let wanted = status.borrow().order.clone();
        if Arc::ptr_eq(&wanted, &self.resolver_order) {
            return false;
        }
        self.resolver_order = wanted;
        let rank: HashMap<&Address, usize> = self
            .resolver_order
            .iter()
            .enumerate()
            .map(|(i, address)| (address, i))
            .collect();
        let before = self.order.clone();
        self.order
            .sort_by_key(|address| rank.get(address).copied().unwrap_or(usize::MAX));
        self.order != before
    }

    fn poll_worker(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Pin::new(&mut self.shutdown).poll(cx).is_ready() || self.shared.is_closed() {
            return Poll::Ready(());
        }
        self.shared.worker.register(cx.waker());
        self.wake_queue.register(cx.waker());
        if self.idle.as_ref().is_some_and(|idle| idle.idle) {
            if !self.shared.exit_idle.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            if !self.leave_idle() {
                return Poll::Pending;
            }
        }
        if self.poll_idle_timer(cx) {
            self.enter_idle();
            return Poll::Pending;
        }
        let mut timer_request = None;
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > ROUNDS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            let mut events = self.poll_discovery(cx);
            let list_changed = events;
            let config_event = self.poll_service_config(&mut timer_request);
            let switched = config_event.as_ref().is_some_and(|(_, switched)| *switched);
            events |= config_event.is_some();
            let mut helper = WorkerHelper {
                subchannels: &mut self.subchannels,
                timer: &mut timer_request,
                resolve_now: &self.resolve_now,
            };
            // A new policy has just been given the addresses.
            if list_changed && !switched {
                self.policy.update_addresses(&self.order, &mut helper);
            }
            // A re-inserted endpoint's new subchannel, which nothing knows
            // yet: the old one's READY must not stand for it. A new policy
            // has just read every subchannel as it is.
            for address in std::mem::take(&mut self.replaced) {
                let Some(state) = helper.subchannels.get(&address).map(|s| s.state) else {
                    continue;
                };
                if !switched {
                    self.policy.replace_subchannel(&address, state, &mut helper);
                }
            }
            if self.shared.exit_idle.swap(false, Ordering::AcqRel) {
                self.policy.exit_idle(&mut helper);
                events = true;
            }
            if let Some(timer) = &mut self.timer {
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    self.policy.timer_fired(&mut helper);
                    events = true;
                }
            }
            events |= self.poll_outlier_detection(cx);
            // Published before driving, so that a policy's own change (CONNECTING
            // on exit_idle) is seen before the subchannels move on.
            self.publish();
            // Sent once calls and the picker follow the new config.
            if let Some((event, _)) = config_event {
                self.shared.emit(event);
            }
            // Only the subchannels woken since the last look are driven, each
            // with its own waker, and each one's steps reach the policy at
            // once, in order: a later subchannel of the same round is driven
            // after the policy has acted on the earlier ones (a subchannel it
            // let go in between shows as let go, not as what it was).
            // Only the policy's state can move during this loop (the
            // resolver, idle mode and the config do not), so comparing it
            // alone tells whether a step changed the channel's state; the
            // picker is rebuilt then, and once after the round.
            let health = self
                .health
                .clone()
                .filter(|_| self.policy.uses_health_checks());
            let mut woken = std::mem::take(&mut self.woken);
            self.wake_queue.take_into(&mut woken);
            let mut policy_state = self.policy.state();
            for wake in woken.drain(..) {
                let address = wake.address();
                let Some(subchannel) = self.subchannels.get_mut(address) else {
                    continue;
                };
                if !Arc::ptr_eq(&subchannel.wake, &wake) {
                    // Queued by a subchannel since replaced or removed.
                    continue;
                }
                wake.start_drive();
                let waker = subchannel.waker.clone();
                let mut subchannel_cx = Context::from_waker(&waker);
                let raw = if subchannel.wanted
                    || subchannel.reconnect.state() != ConnectivityState::Idle
                {
                    subchannel.reconnect.drive::<Req>(&mut subchannel_cx)
                } else {
                    ConnectivityState::Idle
                };
                if raw != ConnectivityState::Idle {
                    subchannel.wanted = false;
                }
                let attempts = subchannel.handle.connect_attempts();
                let new_attempt = attempts != subchannel.attempts;
                subchannel.attempts = attempts;
                let raw_steps = steps(subchannel.raw, raw, new_attempt);
                subchannel.raw = raw;
                if let Some(start) = &health {
                    follow_health(subchannel, start, &raw_steps, &mut subchannel_cx);
                }
                let steps = effective_steps(subchannel, &raw_steps);
                if steps.is_empty() {
                    continue;
                }
                events = true;
                let id = subchannel.handle.id();
                let last_error = subchannel.connectivity().last_error;
                for (from, to) in steps {
                    self.shared.emit(ChannelEvent::SubchannelState {
                        id,
                        address: address.clone(),
                        from,
                        to,
                        last_error: last_error.clone(),
                    });
                    let mut helper = WorkerHelper {
                        subchannels: &mut self.subchannels,
                        timer: &mut timer_request,
                        resolve_now: &self.resolve_now,
                    };
                    if let Some(subchannel) = helper.subchannels.get_mut(address) {
                        subchannel.state = to;
                    }
                    self.policy.update_subchannel(address, to, &mut helper);
                    let now = self.policy.state();
                    if now != policy_state {
                        policy_state = now;
                        self.publish();
                    }
                }
            }
            self.woken = woken;
            if let Some(after) = timer_request.take() {
                let mut timer = Box::pin(tokio::time::sleep(after));
                // Poll once so the timer wakes this task.
                let _ = timer.as_mut().poll(cx);
                self.timer = Some(timer);
            }
            // Every state the policy passes through is published, as grpc-go's
            // balancers report each one, even when the next follows at once.
            self.publish();
            // A policy's connect() or disconnect() queued its subchannel,
            // which the next round drives.
            if !events && self.wake_queue.is_empty() {
                break;
            }
        }
        Poll::Pending
    }

    /// Whether the idle timeout has passed with no call open and none ended
    /// within it; otherwise the timer is set for the next moment it could be.
    fn poll_idle_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(idle), Some(activity)) = (&mut self.idle, &self.shared.activity) else {
            return false;
        };
        let timeout = idle.timeout;
        let timer = idle
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        let next = if activity.open_calls() > 0 {
            Some(now + timeout)
        } else {
            activity
                .last_end()
                .map(|end| end + timeout)
                .filter(|deadline| *deadline > now)
        };
        match next {
            Some(deadline) => {
                timer.as_mut().reset(deadline);
                // Polled so that the new deadline wakes this task.
                let _ = timer.as_mut().poll(cx);
                false
            }
            None => true,
        }
    }

    /// Tears down the subchannels (closing their connections once the calls on
    /// them are done), the resolver and the policy's state; the channel is
    /// IDLE until a call or `connect()`.
    fn enter_idle(&mut self) {
        let Some(idle) = &mut self.idle else {
            return;
        };
        tracing::info!(
            "[Channel #{}] entering idle mode after {:?} without RPCs",
            self.shared.channel_id,
            idle.timeout
        );
        idle.idle = true;
        idle.timer = None;
        let removed: Vec<ChannelEvent> = self
            .order
            .drain(..)
            .filter_map(|address| {
                let subchannel = self.subchannels.remove(&address)?;
                Some(ChannelEvent::SubchannelRemoved {
                    id: subchannel.handle.id(),
                    address,
                })
            })
            .collect();
        self.subchannels.clear();
        self.discover = None;
        self.discover_ended = false;
        self.resolver_status = None;
        self.resolver_order = Arc::from(Vec::new());
        self.timer = None;
        if let Some(outlier) = &mut self.outlier {
            outlier.detector = OutlierDetector::new(outlier.detector.config().clone());
            outlier.timer = None;
        }
        self.shared.subchannels.store(Arc::new(Vec::new()));
        for event in removed {
            self.shared.emit(event);
        }
        self.publish();
    }

    /// Starts the resolver and a new policy again; false if that failed, and
    /// then the channel reports the failure in TRANSIENT_FAILURE.
    fn leave_idle(&mut self) -> bool {
        let Some(idle) = &mut self.idle else {
            return true;
        };
        match (idle.rebuild)() {
            Ok((discover, status, policy)) => {
                tracing::info!("[Channel #{}] exiting idle mode", self.shared.channel_id);
                idle.idle = false;
                idle.failure = None;
                self.shared
                    .leaving_idle_failed
                    .store(false, Ordering::Release);
                self.discover = Some(discover);
                self.discover_ended = false;
                self.resolver_status = status;
                self.policy = policy;
                self.published_version = None;
                self.config.restart();
                self.check_policy = true;
                self.publish();
                true
            }
            Err(error) => {
                tracing::warn!(
                    channel = self.shared.channel_id,
                    %error,
                    "could not leave idle mode"
                );
                idle.failure = Some(Arc::new(ResolverFailed(error.to_string())));
                // Calls and `connect()` ask again; each attempt is published,
                // even with the same error, for the calls waiting on it.
                self.shared
                    .leaving_idle_failed
                    .store(true, Ordering::Release);
                self.force_publish = true;
                self.publish();
                false
            }
        }
    }

    /// Ends an outlier-detection interval when its timer fires: judges the
    /// calls counted in it and ejects or returns endpoints. Returns whether any
    /// endpoint was ejected or returned.
    fn poll_outlier_detection(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(outlier) = &mut self.outlier else {
            return false;
        };
        let interval = outlier.detector.config().interval;
        let timer = outlier
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        timer.as_mut().reset(now + interval);
        // Polled so that the next interval wakes this task.
        let _ = timer.as_mut().poll(cx);
        let rng = &mut outlier.rng;
        if !outlier
            .detector
            .evaluate(now.into_std(), &mut || rng.next_f64())
        {
            return false;
        }
        let mut changed = false;
        for address in &self.order {
            let Some(subchannel) = self.subchannels.get_mut(address) else {
                continue;
            };
            let ejected = outlier.detector.is_ejected(address);
            if ejected == subchannel.ejected.is_some() {
                continue;
            }
            changed = true;
            // Its effective state changes: told on the next drive.
            subchannel.wake.mark();
            if ejected {
                tracing::info!(
                    "[Channel #{}] outlier detection ejects {address}",
                    self.shared.channel_id
                );
                subchannel.ejected = Some(Arc::new(Ejected));
            } else {
                tracing::info!(
                    "[Channel #{}] outlier detection returns {address}",
                    self.shared.channel_id
                );
                subchannel.ejected = None;
            }
        }
        changed
    }

    /// Follows the resolver's service config (grpc-go's
    /// `updateResolverStateAndUnlock`): publishes the config in force for
    /// calls, turns health checking as its `healthCheckConfig` says, and
    /// switches to the policy it chooses. When the config in force (or the
    /// failure) changed, or the policy, returns the event to send, and
    /// whether a new policy was built and given the current addresses.
    fn poll_service_config(
        &mut self,
        timer_request: &mut Option<Duration>,
    ) -> Option<(ChannelEvent, bool)> {
        let mut changed = false;
        if let Some(status) = &self.resolver_status {
            // A clone of a few `Arc`s, so that the watch is not held while the
            // config is judged.
            let status = status.borrow().service_config.clone();
            let policies = self.policies.as_ref();
            changed = self
                .config
                .update(&status, |config| usable(config, policies));
        }
        if changed {
            let in_force = self.config.in_force().cloned();
            tracing::info!(
                failing = self.config.failure().is_some(),
                "[Channel #{}] service config in force: {}",
                self.shared.channel_id,
                match (&in_force, self.config.failure()) {
                    (_, Some(_)) => "none (the resolver's is invalid)",
                    (Some(_), None) => "set",
                    (None, None) => "none",
                }
            );
            self.shared.service_config.store(in_force);
            self.follow_health_config();
            self.follow_outlier_config();
        }
        let check = changed || std::mem::take(&mut self.check_policy);
        let switched = check && self.switch_policy(timer_request);
        if !changed && !switched {
            return None;
        }
        let event = ChannelEvent::ServiceConfig {
            config: self.config.in_force().cloned(),
            error: self.config.failure().cloned(),
            policy: self.policy.name().to_owned(),
        };
        Some((event, switched))
    }

    /// Turns health checking on, off or to another service as the config in
    /// force's `healthCheckConfig` says, unless the builder fixed it.
    fn follow_health_config(&mut self) {
        let wanted = self
            .config
            .in_force()
            .and_then(|config| config.health_check())
            .map(|check| check.service_name().to_owned());
        let Some(make) = &self.make_health else {
            if wanted.is_some() && self.health.is_none() {
                tracing::warn!(
                    "[Channel #{}] the service config asks for health checking, which this channel cannot do (a tonic channel from Builder::build can); not checking",
                    self.shared.channel_id
                );
            }
            return;
        };
        if wanted == self.health_name {
            return;
        }
        tracing::info!(
            service = wanted.as_deref(),
            "[Channel #{}] health checking {} by the service config",
            self.shared.channel_id,
            if wanted.is_some() { "on" } else { "off" }
        );
        self.health = wanted.as_deref().map(|name| make(name));
        self.health_name = wanted;
        self.restart_health_watches();
    }

    /// Drops every health watch and starts the ones the current health check
    /// and policy want, so that the picker never holds a connection whose
    /// new watch has not answered. The drive loop then tells the policy what
    /// changed.
    fn restart_health_watches(&mut self) {
        let health = self
            .health
            .as_ref()
            .filter(|_| self.policy.uses_health_checks());
        for subchannel in self.subchannels.values_mut() {
            subchannel.health = None;
            if let Some(start) = health {
                let waker = subchannel.waker.clone();
                follow_health(subchannel, start, &[], &mut Context::from_waker(&waker));
            }
            subchannel.wake.mark();
        }
    }

    /// The policy the config in force chooses, else the fallback; `None`
    /// when this worker cannot build policies.
    fn wanted_policy(&self) -> Option<String> {
        let policies = self.policies.as_ref()?;
        let chosen = self
            .config
            .in_force()
            .and_then(|config| choose(config, policies).ok())
            .and_then(|choice| choice.policy);
        Some(chosen.unwrap_or_else(|| self.fallback_policy.clone()))
    }

    /// Turns outlier detection on, off or to new settings as the config in
    /// force's `outlier_detection_experimental` says, unless the builder
    /// fixed it (or this worker does not choose policies).
    fn follow_outlier_config(&mut self) {
        let Some(policies) = self.policies.as_ref().filter(|_| !self.outlier_fixed) else {
            return;
        };
        let wanted = self
            .config
            .in_force()
            .and_then(|config| choose(config, policies).ok())
            .and_then(|choice| choice.outlier_detection);
        let current = self.outlier.as_ref().map(|o| o.detector.config());
        if wanted.as_ref() == current {
            return;
        }
        tracing::info!(
            config = ?wanted,
            "[Channel #{}] outlier detection {} by the service config",
            self.shared.channel_id,
            if wanted.is_some() { "set" } else { "off" }
        );
        // New settings start afresh: counts and ejections of the old ones
        // were judged by other rules. The drive loop tells the policy about
        // endpoints no longer ejected.
        self.outlier = wanted.map(|config| Outlier {
            detector: OutlierDetector::new(config),
            timer: None,
            rng: DefaultRng::new(),
        });
        for address in &self.order {
            let Some(subchannel) = self.subchannels.get_mut(address) else {
                continue;
            };
            subchannel.ejected = None;
            subchannel.outcomes = self
                .outlier
                .as_mut()
                .map(|o| o.detector.add(address.clone()));
            subchannel.wake.mark();
        }
        // The picker's counters must be the new ones, even with the same
        // endpoints ready.
        self.force_publish = true;
    }

    /// Replaces the policy with the one the config in force chooses, when it
    /// differs, and gives it the current addresses and each subchannel's
    /// state. The subchannels and their connections are shared, so the new
    /// policy starts from the connections the old one had (no graceful
    /// switch is needed for them to stay up). Returns whether it switched.
    fn switch_policy(&mut self, timer_request: &mut Option<Duration>) -> bool {
        let Some(wanted) = self.wanted_policy() else {
            return false;
        };
        if wanted == self.policy.name() {
            return false;
        }
        let Some(built) = self.policies.as_ref().map(|p| p.build(&wanted)) else {
            return false;
        };
        let policy = match built {
            Ok(policy) => policy,
            Err(error) => {
                tracing::warn!(%error, "[Channel #{}] keeping policy {}", self.shared.channel_id, self.policy.name());
                return false;
            }
        };
        tracing::info!(
            "[Channel #{}] switching policy from {} to {wanted}",
            self.shared.channel_id,
            self.policy.name()
        );
        let used_health = self.policy.uses_health_checks();
        self.policy = policy;
        self.published_version = None;
        // The old policy's timer means nothing to the new one.
        self.timer = None;
        // Health watches as the new policy wants them (kept when both use
        // them, so that no endpoint blinks out of the picker), and the state
        // it is told through them; the steps are reported as events.
        if used_health != self.policy.uses_health_checks() {
            self.restart_health_watches();
        }
        let mut events = Vec::new();
        for address in &self.order {
            let Some(subchannel) = self.subchannels.get_mut(address) else {
                continue;
            };
            let state = subchannel.effective(subchannel.raw);
            if state != subchannel.state {
                events.push(ChannelEvent::SubchannelState {
                    id: subchannel.handle.id(),
                    address: address.clone(),
                    from: subchannel.state,
                    to: state,
                    last_error: subchannel.connectivity().last_error,
                });
                subchannel.state = state;
            }
        }
        for event in events {
            self.shared.emit(event);
        }
        let mut helper = WorkerHelper {
            subchannels: &mut self.subchannels,
            timer: timer_request,
            resolve_now: &self.resolve_now,
        };
        self.policy.update_addresses(&self.order, &mut helper);
        // Replayed, as grpc-go's new balancer hears each new SubConn's state:
        // pick_first learns which address is already READY. A subchannel the
        // new policy has just let go (pick_first keeps one) is skipped: the
        // drive loop reports its new state.
        for address in &self.order {
            let Some(subchannel) = helper.subchannels.get(address) else {
                continue;
            };
            let untouched = subchannel.reconnect.state() == subchannel.raw;
            let state = subchannel.state;
            if untouched && state != ConnectivityState::Idle {
                self.policy.update_subchannel(address, state, &mut helper);
            }
        }
        true
    }

    fn channel_state(&self) -> (ConnectivityState, Option<SharedError>) {
        if let Some(idle) = self.idle.as_ref().filter(|idle| idle.idle) {
            return match &idle.failure {
                Some(error) => (ConnectivityState::TransientFailure, Some(error.clone())),
                None => (ConnectivityState::Idle, None),
            };
        }
        if let Some(error) = self.config.failure() {
            return (ConnectivityState::TransientFailure, Some(error.clone()));
        }
        if let Some(status) = &self.resolver_status {
            let status = status.borrow();
            if !status.resolved {
                return match &status.last_error {
                    Some(error) => (
                        ConnectivityState::TransientFailure,
                        Some(Arc::new(ResolverFailed(error.to_string())) as SharedError),
                    ),
                    None => (ConnectivityState::Connecting, None),
                };
            }
        }
        if self.order.is_empty() {
            let resolved = self
                .resolver_status
                .as_ref()
                .is_none_or(|s| s.borrow().resolved);
            if resolved {
                return (
                    ConnectivityState::TransientFailure,
                    Some(Arc::new(ResolverFailed(
                        "name resolver produced zero addresses".into(),
                    ))),
                );
            }
            return (ConnectivityState::Connecting, None);
        }
        let state = self.policy.state();
        let error = if state == ConnectivityState::TransientFailure {
            self.order.iter().find_map(|address| {
                let connectivity = self.subchannels[address].connectivity();
                connectivity.last_error
            })
        } else {
            None
        };
        (state, error)
    }

    fn publish(&mut self) {
        let (state, last_error) = self.channel_state();
        let fail_all = self.config.failure().is_some();
        let version = self.policy.pickable_version();
        if version.is_some() && version == self.published_version && !self.force_publish {
            // The same pickable list as the picker's: only the state or the
            // error can have changed, which costs nothing per endpoint.
            let current = self.shared.snapshot.load();
            let same_error = match (&current.last_error, &last_error) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.to_string() == b.to_string(),
                _ => false,
            };
            if current.state == state && same_error && current.fail_all == fail_all {
                return;
            }
        }
        self.published_version = version;
        let pickable = if fail_all {
            Vec::new()
        } else {
            self.policy.pickable()
        };
        let current = self.shared.snapshot.load();
        // Each subchannel's load lives as long as the subchannel, so equal
        // addresses and loads mean an unchanged picker: compare before cloning
        // any connection, since this runs after every round of events.
        // One map lookup per endpoint (the connections and outcomes below
        // are read from these, not looked up again): this is the O(ready)
        // part of a publish, paid whenever the ready set changes.
        let mut chosen = Vec::with_capacity(pickable.len());
        let mut peers = Vec::with_capacity(pickable.len());
        let mut loads = Vec::with_capacity(pickable.len());
        for address in &pickable {
            let Some(subchannel) = self.subchannels.get(address) else {
                continue;
            };
            if subchannel.reconnect.connection().is_some() && subchannel.usable() {
                loads.push(subchannel.load.clone());
                peers.push(subchannel.peer.clone());
                chosen.push(&**subchannel);
            }
        }
        let same_error = match (&current.last_error, &last_error) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.to_string() == b.to_string(),
            _ => false,
        };
        let same_loads = current.loads.len() == loads.len()
            && current
                .loads
                .iter()
                .zip(&loads)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if !std::mem::take(&mut self.force_publish)
            && current.state == state
            && current.peers == peers
            && same_loads
            && same_error
            && current.fail_all == fail_all
        {
            return;
        }
        drop(current);
        let connections = chosen
            .iter()
            .filter_map(|subchannel| subchannel.reconnect.connection().cloned())
            .collect();
        let outcomes = match self.outlier {
            Some(_) => chosen
                .iter()
                .filter_map(|subchannel| subchannel.outcomes.clone())
                .collect(),
            None => Vec::new(),
        };
        drop(chosen);
        let previous = self.shared.connectivity.borrow().state;
        if previous != state {
            self.shared.record(state);
            let stats = self.shared.calls.stats();
            tracing::info!(
                calls_started = stats.calls_started,
                calls_succeeded = stats.calls_succeeded,
                calls_failed = stats.calls_failed,
                "[Channel #{}] Channel Connectivity change to {state}",
                self.shared.channel_id
            );
            self.shared.emit(ChannelEvent::State {
                from: previous,
                to: state,
                last_error: last_error.clone(),
            });
        }
        self.shared.snapshot.store(Arc::new(Snapshot {
            peers,
            connections,
            loads,
            outcomes,
            pick: self.policy.pick(),
            state,
            last_error: last_error.clone(),
            fail_all,
        }));
        self.shared.connectivity.send_if_modified(|c| {
            let changed = c.state != state || !same_error;
            *c = Connectivity { state, last_error };
            changed
        });
        self.shared.version.send_modify(|v| *v += 1);
    }
}

impl<D, C, T, R, Req> Future for Worker<D, C, T, R, Req>
where
    D: Discover<Key = Address, Service = Reconnect<C, T, R>> + Unpin,
    D::Error: Into<BoxError>,
    C: Service<T>,
    C::Error: Into<BoxError>,
    C::Response: Service<Req> + Clone,
    <C::Response as Service<Req>>::Error: Into<BoxError>,
    T: Clone + fmt::Debug,
    R: Rng,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let result = this.poll_worker(cx);
        if result.is_ready() {
            // Calls waiting for a connection fail now, and the picker lets go
            // of the connections.
            this.shared.close();
            let previous = this
                .shared
                .connectivity
                .send_replace(Connectivity::new(ConnectivityState::Shutdown));
            this.shared.emit(ChannelEvent::State {
                from: previous.state,
                to: ConnectivityState::Shutdown,
                last_error: None,
            });
        }
        result
    }
}

// No field is ever pinned in place: futures inside are boxed or polled by `&mut`.
impl<D, C: Service<T>, T, R, Req> Unpin for Worker<D, C, T, R, Req> {}

impl<D, C: Service<T>, T, R, Req> fmt::Debug for Worker<D, C, T, R, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("channel_id", &self.shared.channel_id)
            .field("policy", &self.policy.name())
            .field("subchannels", &self.order)
            .finish()
    }
}

/// The transitions a subchannel made between two looks of the worker, which
/// drives it: `from` then `to`, with the steps in between when one drive took
/// several. A loopback connection can complete within the drive that starts
/// it, so a subchannel seen IDLE and then READY went through CONNECTING. The
/// subchannel's state machine (`grpc-lb-reconnect`) says which steps: an
/// attempt starts only from IDLE, READY and TRANSIENT_FAILURE leave to IDLE,
/// and a started attempt (its count went up) means CONNECTING was entered.
fn steps(
    from: ConnectivityState,
    to: ConnectivityState,
    new_attempt: bool,
) -> Vec<(ConnectivityState, ConnectivityState)> {
    use ConnectivityState::{Connecting, Idle, Ready, TransientFailure};
    if !new_attempt || from == Connecting {
        return if from == to {
            Vec::new()
        } else {
            vec![(from, to)]
        };
    }
    let mut path = vec![from];
    if matches!(from, Ready | TransientFailure) {
        path.push(Idle);
    }
    path.push(Connecting);
    if to != Connecting {
        path.push(to);
    }
    path.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Starts and stops a subchannel's health watch with its connection: a
/// connection that was left (any step from READY) takes its watch along, and a
/// READY subchannel without a watch gets one on its connection.
fn follow_health<C: Service<T>, T, R>(
    subchannel: &mut Subchannel<C, T, R>,
    start: &StartHealth<C::Response>,
    raw_steps: &[(ConnectivityState, ConnectivityState)],
    cx: &mut Context<'_>,
) {
    let ready = subchannel.raw == ConnectivityState::Ready;
    let left_ready = raw_steps
        .iter()
        .any(|(from, _)| *from == ConnectivityState::Ready);
    if !ready || left_ready {
        subchannel.health = None;
    }
    if ready && subchannel.health.is_none() {
        if let Some(connection) = subchannel.reconnect.connection() {
            subchannel.health = Some(start(connection));
        }
    }
    if let Some(health) = &mut subchannel.health {
        // Registers the worker for the watch's next change; the new state is
        // read by `effective`.
        let _ = health.poll_changed(cx);
    }
}

/// The steps the policy sees, from the state it was last told to the
/// subchannel's effective state now, through the effective form of each of the
/// subchannel's own steps (repeats dropped: a health watch keeps a new
/// connection CONNECTING, an ejected endpoint stays TRANSIENT_FAILURE).
fn effective_steps<C: Service<T>, T, R>(
    subchannel: &Subchannel<C, T, R>,
    raw_steps: &[(ConnectivityState, ConnectivityState)],
) -> Vec<(ConnectivityState, ConnectivityState)> {
    let mut effective = Vec::new();
    let mut last = subchannel.state;
    let targets = raw_steps
        .iter()
        .map(|(_, to)| *to)
        .chain(std::iter::once(subchannel.raw));
    for raw in targets {
        let state = subchannel.effective(raw);
        if state != last {
            effective.push((last, state));
            last = state;
        }
    }
    effective
}

/// Whether this channel can use `config`: it must name a policy the channel
/// has, when the channel chooses policies at all.
fn usable(config: &ServiceConfig, policies: Option<&PolicyRegistry>) -> Result<(), SharedError> {
    match policies {
        Some(policies) => choose(config, policies)
            .map(|_| ())
            .map_err(|error| Arc::new(error) as SharedError),
        None => Ok(()),
    }
}

/// Why an endpoint is TRANSIENT_FAILURE while outlier detection ejects it.
#[derive(Debug)]
struct Ejected;

impl fmt::Display for Ejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(
            "ejected by outlier detection (gRFC A50): its calls failed more often than its peers'",
        )
    }
}

impl std::error::Error for Ejected {}

/// The resolver's failure, as the cause of a channel in TRANSIENT_FAILURE.
#[derive(Debug)]
struct ResolverFailed(String);

impl fmt::Display for ResolverFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name resolver error: {}", self.0)
    }
}

impl std::error::Error for ResolverFailed {}

struct WorkerHelper<'a, C: Service<T>, T, R> {
    subchannels: &'a mut HashMap<Address, Box<Subchannel<C, T, R>>>,
    timer: &'a mut Option<Duration>,
    resolve_now: &'a ResolveNow,
}

impl<C: Service<T>, T, R> Helper for WorkerHelper<'_, C, T, R> {
    fn state(&self, address: &Address) -> Option<ConnectivityState> {
        self.subchannels.get(address).map(|s| s.state)
    }

    fn connect(&mut self, address: &Address) {
        if let Some(subchannel) = self.subchannels.get_mut(address) {
            subchannel.wanted = true;
            subchannel.handle.connect();
            subchannel.wake.mark();
        }
    }

    fn disconnect(&mut self, address: &Address) {
        if let Some(subchannel) = self.subchannels.get_mut(address) {
            subchannel.wanted = false;
            subchannel.reconnect.disconnect();
            // Its new state (IDLE) is told on the next round.
            subchannel.wake.mark();
        }
    }

    fn set_timer(&mut self, after: Duration) {
        *self.timer = Some(after);
    }

    fn resolve_now(&mut self) {
        self.resolve_now.request();
    }
}

#[cfg(test)]
mod outlier_tests {
    //! Outlier detection in the worker, timed with tokio's paused clock.
    use std::convert::Infallible;
    use std::future::{ready, Ready};
    use std::net::SocketAddr;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use grpc_lb_balance::outlier::{FailurePercentage, OutlierDetectionConfig};
    use grpc_lb_balance::PolicyRegistry;
    use grpc_lb_core::ResolveNow;
    use grpc_lb_reconnect::Reconnect;
    use grpc_lb_resolve::{Address, Endpoint, ManualResolver, ResolverDiscover};
    use tokio::time::Instant;
    use tower::{Service, ServiceExt};

    use crate::channel::{Channel, ChannelOptions};

    /// A connection whose every answer fails with `grpc-status: 13` when
    /// `fails`, and succeeds otherwise.
    #[derive(Clone)]
    struct Answers {
        fails: bool,
    }

    impl Service<http::Request<()>> for Answers {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = Ready<Result<http::Response<()>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut response = http::Response::new(());
            if self.fails {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("13"));
            }
            ready(Ok(response))
        }
    }

    fn address(port: u16) -> Address {
        Address::from(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    async fn ready_count(channel: &Channel<Answers>, count: usize) {
        let mut picker = channel.watch_picker();
        while channel.ready_addresses().len() != count {
            picker.changed().await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_at_the_end_of_the_interval_and_back_after_the_base_ejection_time() {
        let (resolver, handle) = ManualResolver::new("test");
        let bad = address(3);
        let connector = tower::service_fn({
            let bad = bad.clone();
            move |a: Address| ready(Ok::<_, Infallible>(Answers { fails: a == bad }))
        });
        let discover =
            ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
                Reconnect::new(connector.clone(), e.address.clone())
            });
        let options = ChannelOptions {
            resolver_status: Some(discover.status()),
            outlier_detection: Some(OutlierDetectionConfig {
                max_ejection_percent: 50,
                failure_percentage: Some(FailurePercentage {
                    minimum_hosts: 3,
                    request_volume: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..ChannelOptions::default()
        };
        let policy = PolicyRegistry::with_defaults()
            .build("round_robin")
            .unwrap();
        let (channel, worker) =
            Channel::pair::<_, _, _, _, http::Request<()>>(discover, policy, options);
        let start = Instant::now();
        tokio::spawn(worker);
        handle.reset([1, 2, 3].map(|port| Endpoint::new(address(port))));
        channel.connect();
        ready_count(&channel, 3).await;
        for _ in 0..30 {
            let _ = channel
                .clone()
                .oneshot(http::Request::new(()))
                .await
                .unwrap();
        }
        ready_count(&channel, 2).await;
        // The default interval, 10 s, counted from the worker's start.
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert!(!channel.ready_addresses().contains(&bad));
        let ejected = Instant::now();
        // Judged at each interval; the base ejection time, 30 s, is over at
        // the third one after the ejection.
        ready_count(&channel, 3).await;
        assert_eq!(ejected.elapsed(), Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::steps;
    use grpc_lb_core::ConnectivityState::{self, Connecting, Idle, Ready, TransientFailure};

    #[test]
    fn steps_fill_in_what_one_drive_went_through() {
        let cases: [(ConnectivityState, ConnectivityState, bool, &[_]); 8] = [
            (Idle, Connecting, true, &[(Idle, Connecting)]),
            (
                Idle,
                Ready,
                true,
                &[(Idle, Connecting), (Connecting, Ready)],
            ),
            (Connecting, Ready, false, &[(Connecting, Ready)]),
            (Ready, Idle, false, &[(Ready, Idle)]),
            (
                Ready,
                TransientFailure,
                true,
                &[
                    (Ready, Idle),
                    (Idle, Connecting),
                    (Connecting, TransientFailure),
                ],
            ),
            (
                TransientFailure,
                TransientFailure,
                true,
                &[
                    (TransientFailure, Idle),
                    (Idle, Connecting),
                    (Connecting, TransientFailure),
                ],
            ),
            // The connector refused before an attempt: no CONNECTING.
            (Idle, TransientFailure, false, &[(Idle, TransientFailure)]),
            (Ready, Ready, false, &[]),
        ];
        for (from, to, new_attempt, want) in cases {
            assert_eq!(steps(from, to, new_attempt), want, "{from} -> {to}");
        }
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod regression_tests;
