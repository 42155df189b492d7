use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use grpc_lb_core::{BoxError, Connectivity, ConnectivityState, ResolveNow, SharedError};
use tokio::sync::watch;
use tower::discover::{Change, Discover};
use tower_service::Service;

use super::calls::{Calls, HttpCalls, PlainCalls};
use super::error::{DiscoverClosed, Dropped};
use super::future::ResponseFuture;
use super::handle::{PickHandle, Publish, Publisher};
use super::probe::{ByConnectivity, ByReadiness, Probe};
use super::root::{index_of, Core, PolicyAndHelper, RootHelper, Slot};
use super::timers::Timers;
use super::wakers::EndpointWaker;
use crate::tree::{
    Endpoint, EndpointAttributes, EndpointId, FixedPicker, GracefulSwitch, OnDone, PickInfo,
    PickResult, Policy, SubchannelId,
};

/// Discovery changes taken per poll before the balancer yields, so that a
/// discovery that never stops (or keeps failing) cannot starve the task.
const DISCOVER_BUDGET: usize = 1024;
/// Endpoint and timer events handled per poll before yielding.
const EVENT_BUDGET: usize = 4096;
/// Picks tried per `poll_ready` before yielding (each failed one changed a
/// state, which the policy has already seen).
const PICK_ATTEMPTS: usize = 4;
/// The resolver metadata key of an endpoint's ring_hash key (gRFC A76's
/// `hash_key` endpoint attribute).
const HASH_KEY: &str = "hash_key";

/// A balancer over any `Discover`, run by a [`Policy`]; `poll_ready` is the
/// picker. See the [module docs](crate::service).
pub struct Balance<D, Req, P = ByReadiness, X = PlainCalls>
where
    D: Discover,
    P: Probe<D::Service, Req>,
{
    discover: D,
    discover_ended: bool,
    policy: GracefulSwitch,
    core: Core<D::Key, D::Service, P::State>,
    reserved: Option<Reserved>,
    _marker: PhantomData<fn(Req) -> X>,
}

enum Reserved {
    Endpoint {
        index: u32,
        done: Option<Arc<dyn OnDone>>,
    },
    Drop(SharedError),
}

// ===== impl Balance =====

impl<D, Req> Balance<D, Req>
where
    D: Discover,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
{
    /// Balances the services of `discover` with `policy`, reading each
    /// service's connectivity from its `poll_ready` and each call as a plain
    /// call. [`subchannels`](Self::subchannels) and [`http`](Self::http)
    /// change those.
    pub fn new(discover: D, policy: impl Policy) -> Self {
        Balance::with_policy(discover, Box::new(policy))
    }
}

impl<D, Req, P, X> Balance<D, Req, P, X>
where
    D: Discover,
    P: Probe<D::Service, Req>,
{
    pub(crate) fn from_parts(discover: D, policy: Box<dyn Policy>) -> Self {
        Balance::with_policy(discover, policy)
    }

    fn with_policy(discover: D, policy: Box<dyn Policy>) -> Self {
        let (state, _) = watch::channel(Connectivity::new(ConnectivityState::Idle));
        Balance {
            discover,
            discover_ended: false,
            policy: GracefulSwitch::new(policy),
            core: Core {
                slots: Vec::new(),
                generations: Vec::new(),
                free: Vec::new(),
                by_key: HashMap::new(),
                woken: Arc::default(),
                local: Vec::new(),
                batch: Vec::new(),
                timers: Timers::default(),
                state,
                resolve_now: None,
                describe: None,
                picker: FixedPicker::queue(),
                published: None,
                unpublished: false,
            },
            reserved: None,
            _marker: PhantomData,
        }
    }

    /// Reads each service's connectivity from the service itself, for
    /// services that implement [`Subchannel`](grpc_lb_core::Subchannel)
    /// (`grpc_lb_reconnect::Reconnect`).
    pub fn subchannels(self) -> Balance<D, Req, ByConnectivity, X>
    where
        ByConnectivity: Probe<D::Service, Req>,
    {
        self.with_types()
    }

    /// Reads calls as HTTP: pickers see the path and headers, and a call ends
    /// with the `grpc-status` of its trailers.
    pub fn http(self) -> Balance<D, Req, P, HttpCalls> {
        let Balance {
            discover,
            discover_ended,
            policy,
            core,
            reserved,
            ..
        } = self;
        Balance {
            discover,
            discover_ended,
            policy,
            core,
            reserved,
            _marker: PhantomData,
        }
    }

    pub(crate) fn with_types<P2>(mut self) -> Balance<D, Req, P2, X>
    where
        P2: Probe<D::Service, Req>,
    {
        // Endpoints already discovered keep their ids and services; each gets
        // the new probe's state and is polled again to read its state anew.
        let core = &mut self.core;
        let slots: Vec<Option<Slot<D::Service, P2::State>>> = std::mem::take(&mut core.slots)
            .into_iter()
            .map(|slot| {
                slot.map(|slot| Slot {
                    id: slot.id,
                    service: slot.service,
                    probe: P2::new_state(),
                    waker: slot.waker,
                    task_waker: slot.task_waker,
                    wanted: slot.wanted,
                    reported: slot.reported,
                    attributes: slot.attributes,
                })
            })
            .collect();
        let (placeholder, _) = watch::channel(Connectivity::new(ConnectivityState::Idle));
        let mut local: Vec<u32> = std::mem::take(&mut core.local);
        local.extend(core.by_key.values().copied());
        let core = Core {
            slots,
            generations: std::mem::take(&mut core.generations),
            free: std::mem::take(&mut core.free),
            by_key: std::mem::take(&mut core.by_key),
            woken: core.woken.clone(),
            local,
            batch: Vec::new(),
            timers: std::mem::take(&mut core.timers),
            state: std::mem::replace(&mut core.state, placeholder),
            resolve_now: core.resolve_now.take(),
            describe: core.describe.take(),
            picker: core.picker.clone(),
            published: core.published.take(),
            unpublished: true,
        };
        Balance {
            discover: self.discover,
            discover_ended: self.discover_ended,
            policy: self.policy,
            core,
            reserved: self.reserved.take(),
            _marker: PhantomData,
        }
    }

    /// Raises `signal` when a policy asks for re-resolution (pick_first at
    /// the end of its first pass). Without one, the balancer raises it through
    /// a subchannel ([`Subchannel::request_resolution`](grpc_lb_core::Subchannel::request_resolution)),
    /// which reaches the resolver stage that made it with no wiring; plain
    /// services have no resolver.
    pub fn resolve_now(mut self, signal: ResolveNow) -> Self {
        self.core.resolve_now = Some(signal);
        self
    }

    /// Names each endpoint by its key, for policies that hash or weigh
    /// endpoints ([`RingHash`](crate::tree::RingHash) hashes its
    /// [`ring_key`](EndpointAttributes::ring_key)); without it they see no
    /// attributes. For address keys, name them by the address as text, as
    /// grpc-go does, so that every client builds the same ring.
    ///
    /// ```
    /// use grpc_lb_balance::service::Balance;
    /// use grpc_lb_balance::tree::{EndpointAttributes, RingHash, RingHashConfig};
    /// use tower::discover::ServiceList;
    ///
    /// let backends = ServiceList::new(vec![tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) })]);
    /// let ring = RingHash::new(RingHashConfig::default().validate().unwrap());
    /// let balance = Balance::new(backends, ring)
    ///     .describe_endpoints(|key: &usize| EndpointAttributes::named(format!("backend-{key}")));
    /// # drop(balance);
    /// ```
    pub fn describe_endpoints(
        mut self,
        describe: impl Fn(&D::Key) -> EndpointAttributes + Send + Sync + 'static,
    ) -> Self {
        self.core.describe = Some(Arc::new(describe));
        self
    }

    /// [`describe_endpoints`](Self::describe_endpoints) from what the resolver
    /// said (a [`ResolveDiscover`](grpc_lb_resolve::ResolveDiscover)'s
    /// [`attributes`](grpc_lb_resolve::ResolveDiscover::attributes)): each
    /// endpoint is named by its address as text (grpc-go's ring key), with
    /// the resolver's weight and, if its metadata has one, its `hash_key`
    /// (gRFC A76), so ring_hash honours both with no code of the user's.
    ///
    /// ```
    /// use grpc_lb_balance::service::Balance;
    /// use grpc_lb_balance::tree::{RingHash, RingHashConfig};
    /// use grpc_lb_core::NewSubchannel;
    /// use grpc_lb_resolve::{Address, ResolveLayer};
    /// use tower::Layer;
    /// # fn main() -> Result<(), grpc_lb_core::BoxError> {
    /// let make = tower::service_fn(|_: NewSubchannel<Address>| async {
    ///     Ok::<_, std::convert::Infallible>(tower::service_fn(|_: ()| async {
    ///         Ok::<_, std::convert::Infallible>(())
    ///     }))
    /// });
    /// let discover = ResolveLayer::new("ipv4:127.0.0.1:50051")?.layer(make);
    /// let attributes = discover.attributes();
    /// let ring = RingHash::new(RingHashConfig::default().validate()?);
    /// let balance = Balance::new(discover, ring).describe_resolved(attributes);
    /// # drop(balance);
    /// # Ok(())
    /// # }
    /// ```
    pub fn describe_resolved(self, attributes: grpc_lb_resolve::ResolvedAttributes) -> Self
    where
        D: Discover<Key = grpc_lb_resolve::Address>,
    {
        self.describe_endpoints(move |address: &grpc_lb_resolve::Address| {
            let mut described = EndpointAttributes::named(address.to_string());
            if let Some(resolved) = attributes.get(address) {
                if let Some(weight) = resolved.weight {
                    described = described.with_weight(weight);
                }
                if let Some(hash_key) = resolved.metadata.get(HASH_KEY) {
                    described = described.with_hash_key(hash_key.as_str());
                }
            }
            described
        })
    }

    /// A watch on the root policy's state and its error, for a fail-fast
    /// layer and for observers.
    pub fn connectivity(&self) -> watch::Receiver<Connectivity> {
        self.core.state.subscribe()
    }

    /// The root policy's current state.
    pub fn state(&self) -> ConnectivityState {
        self.core.state.borrow().state
    }

    /// How many endpoints are known.
    pub fn len(&self) -> usize {
        self.core.by_key.len()
    }

    /// True if no endpoint is known.
    pub fn is_empty(&self) -> bool {
        self.core.by_key.is_empty()
    }

    /// The endpoints and the state each last reported to the policy.
    pub fn endpoints(&self) -> impl Iterator<Item = (&D::Key, ConnectivityState)> {
        self.core.by_key.iter().filter_map(|(key, index)| {
            let slot = self.core.slots[*index as usize].as_ref()?;
            Some((key, slot.reported))
        })
    }

    /// The discover.
    pub fn get_ref(&self) -> &D {
        &self.discover
    }

    /// The discover, mutably.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.discover
    }

    /// The root policy serving now.
    pub fn policy(&self) -> &dyn Policy {
        self.policy.current()
    }
}

impl<D, Req, P, X> Balance<D, Req, P, X>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    P: Probe<D::Service, Req>,
{
    fn helper(&mut self) -> PolicyAndHelper<'_, D::Key, D::Service, P::State> {
        (
            &mut self.policy,
            RootHelper {
                core: &mut self.core,
                connect: P::connect,
                disconnect: P::disconnect,
                request_resolution: P::request_resolution,
            },
        )
    }

    /// Switches the root to `policy` gracefully ([`GracefulSwitch`]): the
    /// new policy learns every endpoint now and takes over once it is no
    /// longer CONNECTING (or at once if the current one is not READY); calls
    /// keep going to the current one until then. This is what a new
    /// `loadBalancingConfig` from the service config does.
    pub fn switch_policy(&mut self, policy: impl Policy) {
        let (root, mut helper) = self.helper();
        root.switch_to(Box::new(policy), &mut helper);
        self.core.flush();
    }

    /// A clonable handle that picks from this balancer's latest picker, from
    /// any task or thread, without a lock: the piece a clonable channel
    /// stands on. See [`PickHandle`].
    ///
    /// The balancer must keep running (a task polling
    /// [`poll_events`](Self::poll_events) whenever it is woken, or calls
    /// through [`Service`]): it publishes the root's picker and the
    /// endpoints' services once per batch of events, and hears of the
    /// handles' queued picks (to exit idle) when it runs.
    pub fn handle(&mut self) -> PickHandle<D::Service, X>
    where
        D::Service: Clone + Send + Sync + 'static,
    {
        if self.core.published.is_none() {
            let mut publisher = Publisher::new(self.core.woken.clone());
            for slot in self.core.slots.iter().flatten() {
                publisher.insert(index_of(slot.id), slot.id, &slot.service);
            }
            self.core.published = Some(Box::new(publisher));
            self.core.unpublished = true;
            if self.discover_ended && self.core.by_key.is_empty() {
                self.close_handles();
            }
        }
        self.core.flush();
        let published = self.core.published.as_ref().expect("set above");
        PickHandle::from_any(published.shared())
    }

    fn close_handles(&mut self) {
        if let Some(published) = &mut self.core.published {
            published.close(|| DiscoverClosed::new().into());
        }
    }

    /// Handles every pending event: discovery changes, endpoints that woke,
    /// timers that are due. Registers `cx` for the next ones and returns
    /// `Ready(Err)` only if discovery ended with no endpoints.
    ///
    /// `poll_ready` calls this first. A task that owns the balancer and wants
    /// discovery and state changes handled while no call is made (so that
    /// subchannels reconnect and the state is current before the next call)
    /// polls this whenever it is woken; tower's own balancer moves only when
    /// asked for readiness.
    pub fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let result = self.poll_events_unpublished(cx);
        self.core.flush();
        result
    }

    fn poll_events_unpublished(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.core.woken.register(cx.waker());
        let mut events = 0;
        loop {
            let mut progressed = self.poll_discover(cx);
            if self.core.woken.take_pick_queued() {
                // A handle's pick queued: as for our own queued pick.
                self.pick_queued();
                progressed = true;
            }
            progressed |= self.poll_endpoints(&mut events);
            while let Some(timer) = self.core.timers.poll_expired(cx) {
                let (policy, mut helper) = self.helper();
                policy.timer_fired(timer, &mut helper);
                events += 1;
                progressed = true;
            }
            if !progressed {
                break;
            }
            if events >= EVENT_BUDGET {
                cx.waker().wake_by_ref();
                break;
            }
        }
        if self.discover_ended && self.core.by_key.is_empty() {
            self.close_handles();
            return Poll::Ready(Err(DiscoverClosed::new().into()));
        }
        Poll::Pending
    }

    /// A pick queued: an IDLE policy exits idle, any other hears of it.
    /// True if it was IDLE.
    fn pick_queued(&mut self) -> bool {
        let idle = self.state() == ConnectivityState::Idle;
        let (policy, mut helper) = self.helper();
        if idle {
            policy.exit_idle(&mut helper);
        } else {
            policy.pick_queued(&mut helper);
        }
        idle
    }

    fn poll_discover(&mut self, cx: &mut Context<'_>) -> bool {
        if self.discover_ended {
            return false;
        }
        for taken in 0..DISCOVER_BUDGET {
            match Pin::new(&mut self.discover).poll_discover(cx) {
                Poll::Pending => return taken > 0,
                Poll::Ready(None) => {
                    tracing::debug!("discovery ended; keeping the endpoints known");
                    self.discover_ended = true;
                    return true;
                }
                Poll::Ready(Some(Ok(Change::Insert(key, service)))) => self.insert(key, service),
                Poll::Ready(Some(Ok(Change::Remove(key)))) => self.remove(&key),
                Poll::Ready(Some(Err(error))) => {
                    let error: SharedError = Arc::from(error.into());
                    tracing::warn!(%error, "discovery failed; keeping the endpoints known");
                    let (policy, mut helper) = self.helper();
                    policy.resolver_error(&error, &mut helper);
                }
            }
        }
        // More may be ready: come back after others have run.
        cx.waker().wake_by_ref();
        true
    }

    fn insert(&mut self, key: D::Key, service: D::Service) {
        if self.core.by_key.contains_key(&key) {
            self.remove(&key);
        }
        let core = &mut self.core;
        let index = match core.free.pop() {
            Some(index) => index,
            None => {
                core.slots.push(None);
                core.generations.push(0);
                (core.slots.len() - 1) as u32
            }
        };
        let attributes = core.describe.as_ref().map(|describe| describe(&key));
        let generation = core.generations[index as usize];
        let id = SubchannelId::from_raw(((generation as u64) << 32) | index as u64);
        let waker = EndpointWaker::new(index, core.woken.clone());
        if let Some(published) = &mut core.published {
            published.insert(index, id, &service);
            core.unpublished = true;
        }
        core.slots[index as usize] = Some(Slot {
            id,
            service,
            probe: P::new_state(),
            task_waker: Waker::from(waker.clone()),
            waker,
            wanted: false,
            reported: ConnectivityState::Idle,
            attributes,
        });
        core.by_key.insert(key, index);
        // Polled once at once: a subchannel may already be connecting.
        core.queue(index);
        let (policy, mut helper) = self.helper();
        let endpoint = Endpoint {
            id: EndpointId::from_raw(id.raw()),
            subchannels: &[id],
        };
        policy.add_endpoint(endpoint, &mut helper);
    }

    fn remove(&mut self, key: &D::Key) {
        let Some(index) = self.core.by_key.remove(key) else {
            return;
        };
        let Some(slot) = self.core.slots[index as usize].take() else {
            return;
        };
        if matches!(self.reserved, Some(Reserved::Endpoint { index: i, .. }) if i == index) {
            self.reserved = None;
        }
        let generations = &mut self.core.generations[index as usize];
        *generations = generations.wrapping_add(1);
        self.core.free.push(index);
        if let Some(published) = &mut self.core.published {
            published.remove(index);
            self.core.unpublished = true;
        }
        let (policy, mut helper) = self.helper();
        policy.remove_endpoint(EndpointId::from_raw(slot.id.raw()), &mut helper);
        drop(slot);
    }

    /// Polls the endpoints that woke (and those this task queued), and tells
    /// the policy of each state change. Work is per woken endpoint only.
    fn poll_endpoints(&mut self, events: &mut usize) -> bool {
        let mut batch = std::mem::take(&mut self.core.batch);
        self.core.woken.take(&mut batch);
        batch.append(&mut self.core.local);
        let progressed = !batch.is_empty();
        for &index in &batch {
            let Some(Some(slot)) = self.core.slots.get_mut(index as usize) else {
                continue;
            };
            slot.waker.unqueue();
            let mut cx = Context::from_waker(&slot.task_waker);
            let connectivity =
                P::poll_state(&mut slot.service, &mut slot.probe, slot.wanted, &mut cx);
            if connectivity.state == slot.reported {
                continue;
            }
            slot.reported = connectivity.state;
            let id = slot.id;
            *events += 1;
            let (policy, mut helper) = self.helper();
            policy.subchannel_state(id, &connectivity, &mut helper);
        }
        batch.clear();
        self.core.batch = batch;
        progressed
    }

    /// Checks that the endpoint at `index` can take a call now.
    fn poll_dispatch(&mut self, index: u32) -> Poll<bool> {
        let Some(Some(slot)) = self.core.slots.get_mut(index as usize) else {
            return Poll::Ready(false);
        };
        let mut cx = Context::from_waker(&slot.task_waker);
        let ready = P::poll_dispatch(&mut slot.service, &mut slot.probe, &mut cx);
        if ready != Poll::Ready(true) {
            // Its state may have moved; read it with the next events.
            self.core.queue(index);
        }
        ready
    }

    fn try_pick(&mut self, info: &PickInfo<'_>) -> Option<Poll<()>> {
        match self.core.picker.pick(info) {
            PickResult::Pick(pick) => {
                let index = index_of(pick.subchannel());
                if self.core.slot_mut(pick.subchannel()).is_none() {
                    tracing::warn!(subchannel = %pick.subchannel(), "policy picked an unknown subchannel; queueing the call");
                    return Some(Poll::Pending);
                }
                match self.poll_dispatch(index) {
                    Poll::Ready(true) => {
                        self.reserved = Some(Reserved::Endpoint {
                            index,
                            done: pick.into_done(),
                        });
                        Some(Poll::Ready(()))
                    }
                    // Its state changed: the policy hears of it, then pick again.
                    Poll::Ready(false) => None,
                    // A plain service that is Pending is CONNECTING now: the
                    // policy hears of it and picks another that is ready. A
                    // subchannel's connection that is busy keeps its state,
                    // so the call waits for it (its waker is registered).
                    Poll::Pending if P::REPOLL_AFTER_CALL => None,
                    Poll::Pending => Some(Poll::Pending),
                }
            }
            PickResult::Queue => {
                if self.pick_queued() {
                    // It left IDLE: pick from its new picker.
                    return None;
                }
                Some(Poll::Pending)
            }
            // Waits for ready: a fail-fast layer above reads the state.
            PickResult::Fail(_) => Some(Poll::Pending),
            PickResult::Drop(error) => {
                self.reserved = Some(Reserved::Drop(error));
                Some(Poll::Ready(()))
            }
        }
    }
}

impl<D, Req, P, X> Service<Req> for Balance<D, Req, P, X>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    P: Probe<D::Service, Req>,
    X: Calls<Req, <D::Service as Service<Req>>::Response>,
{
    type Response = X::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<D::Service as Service<Req>>::Future, X, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let ready = self.poll_ready_unpublished(cx);
        self.core.flush();
        ready
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let future = self.call_unpublished(request);
        self.core.flush();
        future
    }
}

impl<D, Req, P, X> Balance<D, Req, P, X>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    P: Probe<D::Service, Req>,
    X: Calls<Req, <D::Service as Service<Req>>::Response>,
{
    fn poll_ready_unpublished(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        for _ in 0..PICK_ATTEMPTS {
            if let Poll::Ready(Err(error)) = self.poll_events_unpublished(cx) {
                return Poll::Ready(Err(error));
            }
            // A reservation stands while its endpoint can still take the call.
            match &self.reserved {
                Some(Reserved::Drop(_)) => return Poll::Ready(Ok(())),
                Some(Reserved::Endpoint { index, .. }) => {
                    let index = *index;
                    match self.poll_dispatch(index) {
                        Poll::Ready(true) => return Poll::Ready(Ok(())),
                        _ => self.reserved = None,
                    }
                }
                None => {}
            }
            match self.try_pick(&PickInfo::none()) {
                Some(Poll::Ready(())) => return Poll::Ready(Ok(())),
                Some(Poll::Pending) => return Poll::Pending,
                None => continue,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn call_unpublished(
        &mut self,
        request: Req,
    ) -> ResponseFuture<<D::Service as Service<Req>>::Future, X, Req> {
        let reserved = self
            .reserved
            .take()
            .expect("Balance::call before poll_ready returned Ready");
        let (mut index, mut done) = match reserved {
            Reserved::Drop(error) => return ResponseFuture::failed(Dropped::new(error).into()),
            Reserved::Endpoint { index, done } => (index, done),
        };
        if self.policy.uses_pick_info() {
            let picked = self.core.picker.pick(&X::pick_info(&request));
            match picked {
                PickResult::Pick(pick) => {
                    let chosen = index_of(pick.subchannel());
                    let known = self.core.slot_mut(pick.subchannel()).is_some();
                    if chosen == index || (known && self.poll_dispatch(chosen) == Poll::Ready(true))
                    {
                        (index, done) = (chosen, pick.into_done());
                    }
                }
                PickResult::Drop(error) => {
                    return ResponseFuture::failed(Dropped::new(error).into())
                }
                // The reserved endpoint takes the call; the policy may still
                // connect the one it wanted, for the next call.
                PickResult::Queue => {
                    let (policy, mut helper) = self.helper();
                    policy.pick_queued(&mut helper);
                }
                PickResult::Fail(_) => {}
            }
        }
        if let Some(done) = &done {
            done.on_start();
        }
        if P::REPOLL_AFTER_CALL {
            self.core.queue(index);
        }
        let slot = self.core.slots[index as usize]
            .as_mut()
            .expect("reserved endpoint removed without clearing the reservation");
        ResponseFuture::called(slot.service.call(request), done)
    }
}

impl<D, Req, P, X> fmt::Debug for Balance<D, Req, P, X>
where
    D: Discover,
    P: Probe<D::Service, Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("policy", &self.policy.name())
            .field("endpoints", &self.core.by_key.len())
            .field("state", &self.core.state.borrow().state)
            .field("discover_ended", &self.discover_ended)
            .finish()
    }
}
