use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};
use xxhash_rust::xxh64::{xxh64, Xxh64};

use super::cow::ChunkedVec;
use super::picker::fast_random;
use super::ring_index::RingIndex;
use super::round_robin::NoEndpoints;
use super::{
    ChildSet, ChildUpdate, Endpoint, EndpointId, FixedPicker, Helper, PickFirst, PickInfo,
    PickResult, Picker, Policy, RingHashConfig, SubchannelId, TimerId,
};

/// What discovery says about one endpoint, for policies that need more than
/// its subchannels: the text its ring positions are hashed from and its weight.
///
/// ring_hash hashes `hash_key` if set (gRFC A76's `hash_key` attribute), else
/// `name` (A61: the endpoint's first address, as text).
///
/// ```
/// use grpc_lb_balance::tree::EndpointAttributes;
///
/// let attributes = EndpointAttributes::named("10.0.0.1:50051").with_weight(3);
/// assert_eq!(attributes.ring_key(), "10.0.0.1:50051");
/// assert_eq!(attributes.with_hash_key("shard-7").ring_key(), "shard-7");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAttributes {
    /// The endpoint's first address as text.
    pub name: Arc<str>,
    /// A76's `hash_key`, which replaces `name` on the ring.
    pub hash_key: Option<Arc<str>>,
    /// Its relative weight; at least 1.
    pub weight: u32,
}

impl EndpointAttributes {
    /// An endpoint of weight 1 named `name`.
    pub fn named(name: impl Into<Arc<str>>) -> Self {
        EndpointAttributes {
            name: name.into(),
            hash_key: None,
            weight: 1,
        }
    }

    /// Sets the weight (0 reads as 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Sets A76's `hash_key`.
    pub fn with_hash_key(mut self, hash_key: impl Into<Arc<str>>) -> Self {
        self.hash_key = Some(hash_key.into());
        self
    }

    /// The text ring_hash hashes: `hash_key`, else `name`.
    pub fn ring_key(&self) -> &str {
        self.hash_key.as_deref().unwrap_or(&self.name)
    }
}

/// A request's hash for ring_hash, set by the caller in the request's
/// extensions (what xDS's config selector sets in grpc-go). Used when the
/// config names no `requestHashHeader`.
///
/// ```
/// use grpc_lb_balance::tree::{PickInfo, RequestHash};
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(RequestHash::of("user-42"));
/// let info = PickInfo::none().with_extensions(request.extensions());
/// assert_eq!(info.extensions().unwrap().get::<RequestHash>(), Some(&RequestHash::of("user-42")));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestHash(pub u64);

impl RequestHash {
    /// XXH64 (seed 0) of `key`, as grpc-go hashes a header's value.
    pub fn of(key: impl AsRef<[u8]>) -> Self {
        RequestHash(xxh64(key.as_ref(), 0))
    }
}

/// A pick_first child that stays IDLE until told to exit idle (grpc-go's
/// lazy balancer, which ring_hash wraps its children in): ring_hash
/// connects endpoints only when a pick lands on them.
#[derive(Debug, Default)]
pub(crate) struct Lazy {
    inner: PickFirst,
    pending: Option<(EndpointId, Box<[SubchannelId]>)>,
    /// States seen while pending, replayed when the child starts.
    seen: HashMap<SubchannelId, Connectivity>,
}

impl Policy for Lazy {
    fn name(&self) -> &str {
        "lazy_pick_first"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        self.pending = Some((endpoint.id, endpoint.subchannels.into()));
        helper.update_state(ConnectivityState::Idle, None, FixedPicker::queue());
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        if self.pending.take().is_none() {
            self.inner.remove_endpoint(endpoint, helper);
        }
    }

    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        if self.pending.is_some() {
            self.seen.insert(id, state.clone());
        } else {
            self.inner.subchannel_state(id, state, helper);
        }
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        self.inner.timer_fired(timer, helper)
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        match self.pending.take() {
            Some((id, subchannels)) => {
                let endpoint = Endpoint {
                    id,
                    subchannels: &subchannels,
                };
                self.inner.add_endpoint(endpoint, helper);
                for (id, state) in std::mem::take(&mut self.seen) {
                    if state.state != ConnectivityState::Idle {
                        self.inner.subchannel_state(id, &state, helper);
                    }
                }
            }
            None => self.inner.exit_idle(helper),
        }
    }
}

/// One ring entry: a hash and the endpoint it belongs to.
type Entry = (u64, EndpointId);

/// The ring of gRFC A42 (grpc-go `ring.go`): each endpoint gets entries in
/// proportion to its weight, at `XXH64(key + "_" + i)`, sorted by hash.
pub(crate) fn build_ring(
    endpoints: &mut [(Arc<str>, u32, EndpointId)],
    min_ring_size: u64,
    max_ring_size: u64,
) -> Vec<Entry> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    // Sorted by key, so that every client builds the same ring.
    endpoints.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let total: f64 = endpoints.iter().map(|e| f64::from(e.1)).sum();
    let min_weight = endpoints
        .iter()
        .map(|e| f64::from(e.1) / total)
        .fold(f64::INFINITY, f64::min);
    // The least-weighted endpoint gets a whole number of entries, within the cap.
    let scale = ((min_weight * min_ring_size as f64).ceil() / min_weight).min(max_ring_size as f64);
    let mut ring = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0f64, 0f64);
    let mut key = String::new();
    for (name, weight, id) in endpoints.iter() {
        target += scale * f64::from(*weight) / total;
        let mut index = 0u64;
        while current < target {
            key.clear();
            use std::fmt::Write;
            let _ = write!(key, "{name}_{index}");
            ring.push((xxh64(key.as_bytes(), 0), *id));
            index += 1;
            current += 1.0;
        }
    }
    ring.sort_unstable_by_key(|entry| entry.0);
    ring
}

/// The index of the first entry whose hash is ≥ `hash`, wrapping around.
pub(crate) fn ring_lookup(ring: &[Entry], hash: u64) -> usize {
    let at = ring.partition_point(|entry| entry.0 < hash);
    if at == ring.len() {
        0
    } else {
        at
    }
}

/// One endpoint as ring_hash's picker sees it.
#[derive(Clone, Debug)]
struct Slot {
    endpoint: EndpointId,
    state: ConnectivityState,
    error: Option<SharedError>,
    picker: Arc<dyn Picker>,
}

/// No endpoint is wanted (see [`RingHash::pick_queued`]).
const NONE_WANTED: u64 = u64::MAX;

/// ring_hash's picker: the ring (positions into `slots`) and each endpoint's
/// state and picker when it was built.
#[derive(Debug)]
struct RingPicker {
    ring: Arc<RingIndex>,
    slots: ChunkedVec<Slot>,
    header: Option<http::HeaderName>,
    /// Where a pick leaves the endpoint it wants connected; shared with the
    /// policy, which connects it in `pick_queued` on the balancer's task.
    wanted: Arc<AtomicU64>,
    fallback_error: SharedError,
}

impl RingPicker {
    /// The call's hash, and whether it is random (A76).
    fn request_hash(&self, info: &PickInfo<'_>) -> (u64, bool) {
        if let Some(header) = &self.header {
            let Some(headers) = info.headers() else {
                return (fast_random(), true);
            };
            let mut values = headers.get_all(header).iter();
            let Some(first) = values.next() else {
                return (fast_random(), true);
            };
            let Some(second) = values.next() else {
                // The usual case, one value: the one-shot hash.
                return (xxh64(first.as_bytes(), 0), false);
            };
            let mut hasher = Xxh64::new(0);
            hasher.update(first.as_bytes());
            for value in std::iter::once(second).chain(values) {
                hasher.update(b",");
                hasher.update(value.as_bytes());
            }
            return (hasher.digest(), false);
        }
        match info.extensions().and_then(|e| e.get::<RequestHash>()) {
            Some(hash) => (hash.0, false),
            None => (fast_random(), true),
        }
    }

    fn slot(&self, step: usize, start: usize) -> Option<&Slot> {
        self.slots.get(self.ring.position(start, step) as usize)
    }

    fn want(&self, endpoint: EndpointId) {
        self.wanted.store(endpoint.raw(), Ordering::Relaxed);
    }
}

impl Picker for RingPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult {
        use ConnectivityState::*;
        if self.ring.is_empty() {
            return PickResult::Fail(self.fallback_error.clone());
        }
        let (hash, random) = self.request_hash(info);
        let start = self.ring.lookup(hash);
        let mut first_idle = None;
        let mut connecting = false;
        // The walk ends at the first usable endpoint: one step while the
        // ring is healthy; it goes on only past failed endpoints (A61).
        for step in 0..self.ring.len() {
            let Some(slot) = self.slot(step, start) else {
                continue;
            };
            match slot.state {
                Ready => return slot.picker.pick(info),
                Connecting if !random => return PickResult::Queue,
                Idle if !random => {
                    self.want(slot.endpoint);
                    return PickResult::Queue;
                }
                Connecting => connecting = true,
                Idle => {
                    first_idle.get_or_insert(slot.endpoint);
                }
                _ => {}
            }
        }
        if random && (connecting || first_idle.is_some()) {
            if let (false, Some(idle)) = (connecting, first_idle) {
                self.want(idle);
            }
            return PickResult::Queue;
        }
        // Every endpoint failed: the first entry's error.
        let error = self
            .slot(0, start)
            .and_then(|slot| slot.error.clone())
            .unwrap_or_else(|| self.fallback_error.clone());
        PickResult::Fail(error)
    }
}

/// ring_hash on the policy tree (gRFC A42 with A61's and A76's changes; grpc-go
/// `balancer/ringhash`, `ring_hash_experimental`).
///
/// Each endpoint is a pick_first child that connects only when a pick lands
/// on it. A call's hash comes from the configured `requestHashHeader` (XXH64
/// of its values joined by ","; random if the call lacks it), else from a
/// [`RequestHash`] in its extensions, else is random. The pick walks the ring
/// from the first entry at or after the hash: it takes the first READY,
/// CONNECTING or IDLE endpoint (connecting an IDLE one, the call queued) and
/// skips TRANSIENT_FAILURE ones (A61); with every endpoint failed it fails
/// with the first one's error. A random hash takes the first READY endpoint
/// and otherwise connects one IDLE endpoint if none is connecting (A76).
///
/// The aggregate state is A42's: any READY → READY; else two or more
/// TRANSIENT_FAILURE → TRANSIENT_FAILURE; else any CONNECTING, or one
/// TRANSIENT_FAILURE among several endpoints → CONNECTING; else any IDLE →
/// IDLE. While it is TRANSIENT_FAILURE or CONNECTING with nothing connecting,
/// one IDLE endpoint is connected per update (A61).
///
/// Its picker holds the ring and every endpoint's state and picker; a new
/// one is reported whenever a child changes (sharing the ring, and the table of
/// endpoints copy-on-write). The ring is rebuilt when the set of endpoints
/// changes.
///
/// ```
/// use grpc_lb_balance::tree::{Policy, RingHash, RingHashConfig};
///
/// let config = RingHashConfig::default().request_hash_header("x-user").validate().unwrap();
/// let policy = RingHash::new(config);
/// assert_eq!(policy.name(), "ring_hash_experimental");
/// assert!(policy.uses_pick_info());
/// ```
pub struct RingHash {
    config: RingHashConfig,
    header: Option<http::HeaderName>,
    children: ChildSet<Lazy>,
    keys: HashMap<EndpointId, (Arc<str>, u32)>,
    ring: Vec<Entry>,
    /// The ring as positions into `slots`, for the pickers.
    ring_positions: Arc<RingIndex>,
    slots: ChunkedVec<Slot>,
    position: HashMap<EndpointId, usize>,
    stale: bool,
    /// An endpoint a picker wants connected; connected in `pick_queued`.
    wanted: Arc<AtomicU64>,
    reported: Option<ConnectivityState>,
    last_error: Option<SharedError>,
}

impl RingHash {
    /// A ring_hash policy with a validated config.
    pub fn new(config: RingHashConfig) -> Self {
        let header = config
            .request_hash_header
            .as_deref()
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok());
        RingHash {
            config,
            header,
            children: ChildSet::new(|_| Lazy::default()),
            keys: HashMap::new(),
            ring: Vec::new(),
            ring_positions: Arc::default(),
            slots: ChunkedVec::default(),
            position: HashMap::new(),
            stale: false,
            wanted: Arc::new(AtomicU64::new(NONE_WANTED)),
            reported: None,
            last_error: None,
        }
    }

    /// The config in use.
    pub fn config(&self) -> &RingHashConfig {
        &self.config
    }

    /// The ring: each entry's hash and endpoint, sorted by hash.
    pub fn ring(&mut self) -> &[(u64, EndpointId)] {
        self.rebuild_if_stale();
        &self.ring
    }

    /// The endpoint a hash maps to on the ring, whatever its state.
    pub fn endpoint_for(&mut self, hash: u64) -> Option<EndpointId> {
        self.rebuild_if_stale();
        if self.ring.is_empty() {
            return None;
        }
        Some(self.ring[ring_lookup(&self.ring, hash)].1)
    }

    fn rebuild_if_stale(&mut self) {
        if !self.stale {
            return;
        }
        self.stale = false;
        let mut endpoints: Vec<_> = self
            .keys
            .iter()
            .map(|(id, (key, weight))| (key.clone(), *weight, *id))
            .collect();
        self.ring = build_ring(
            &mut endpoints,
            self.config.min_ring_size,
            self.config.max_ring_size,
        );
        let positions: Box<[(u64, u32)]> = self
            .ring
            .iter()
            .filter_map(|(hash, id)| Some((*hash, *self.position.get(id)? as u32)))
            .collect();
        self.ring_positions = Arc::new(RingIndex::new(positions));
    }

    fn aggregate(&self) -> ConnectivityState {
        use ConnectivityState::*;
        let children = &self.children;
        if children.count(Ready) > 0 {
            Ready
        } else if children.count(TransientFailure) >= 2 {
            TransientFailure
        } else if children.count(Connecting) > 0
            || (children.count(TransientFailure) == 1 && children.len() > 1)
        {
            Connecting
        } else if children.count(Idle) > 0 {
            Idle
        } else {
            TransientFailure
        }
    }

    /// Keeps what a child reported in the pickers' table.
    fn absorb(&mut self, update: &ChildUpdate) {
        if update.new == ConnectivityState::TransientFailure {
            if let Some(error) = &update.error {
                self.last_error = Some(error.clone());
            }
        }
        if let Some(&at) = self.position.get(&update.child) {
            self.slots.set(
                at,
                Slot {
                    endpoint: update.child,
                    state: update.new,
                    error: update.error.clone(),
                    picker: update.picker.clone(),
                },
            );
        }
    }

    fn apply(&mut self, update: Option<ChildUpdate>, helper: &mut dyn Helper) {
        let Some(update) = update else {
            return;
        };
        self.absorb(&update);
        self.report(helper);
    }

    fn fallback_error(&self) -> SharedError {
        self.last_error
            .clone()
            .unwrap_or_else(|| Arc::new(NoEndpoints))
    }

    /// Reports the aggregate state with a new picker.
    fn publish(&mut self, helper: &mut dyn Helper) {
        self.rebuild_if_stale();
        let state = self.aggregate();
        self.reported = Some(state);
        let error = match state {
            ConnectivityState::TransientFailure => Some(self.fallback_error()),
            _ => None,
        };
        let picker = Arc::new(RingPicker {
            ring: self.ring_positions.clone(),
            slots: self.slots.clone(),
            header: self.header.clone(),
            wanted: self.wanted.clone(),
            fallback_error: self.fallback_error(),
        });
        helper.update_state(state, error, picker);
    }

    fn report(&mut self, helper: &mut dyn Helper) {
        self.publish(helper);
        // A61: with nothing connecting in a failing ring, one IDLE endpoint
        // is connected, so that the ring recovers without picks.
        let failing = matches!(
            self.reported,
            Some(ConnectivityState::TransientFailure | ConnectivityState::Connecting)
        );
        if failing && self.children.count(ConnectivityState::Connecting) == 0 {
            self.connect_one_idle(None, helper);
        }
    }

    /// Connects `wanted` if IDLE, else the first IDLE endpoint on the ring.
    fn connect_one_idle(&mut self, wanted: Option<EndpointId>, helper: &mut dyn Helper) {
        self.rebuild_if_stale();
        let idle = |id: &EndpointId| self.children.state(*id) == Some(ConnectivityState::Idle);
        let chosen = wanted
            .filter(idle)
            .or_else(|| self.ring.iter().map(|e| e.1).find(idle));
        if let Some(id) = chosen {
            self.start(id, helper);
        }
    }

    /// Tells one IDLE child to connect and reports the new picker (not
    /// through `report`, which could start another).
    fn start(&mut self, id: EndpointId, helper: &mut dyn Helper) {
        let Some(update) = self.children.exit_idle(id, helper) else {
            return;
        };
        self.absorb(&update);
        self.publish(helper);
    }

    fn take_wanted(&self) -> Option<EndpointId> {
        match self.wanted.swap(NONE_WANTED, Ordering::Relaxed) {
            NONE_WANTED => None,
            raw => Some(EndpointId::from_raw(raw)),
        }
    }
}

impl fmt::Debug for RingHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHash")
            .field("config", &self.config)
            .field("children", &self.children)
            .field("ring", &self.ring.len())
            .finish()
    }
}

impl Policy for RingHash {
    fn name(&self) -> &str {
        "ring_hash_experimental"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        let (key, weight) = match helper.endpoint_attributes(endpoint.id) {
            Some(attributes) => (Arc::from(attributes.ring_key()), attributes.weight.max(1)),
            // Without attributes the endpoint's id names it: stable for this
            // balancer's life, not across clients.
            None => (Arc::from(endpoint.id.raw().to_string()), 1),
        };
        self.keys.insert(endpoint.id, (key, weight));
        if let Some(&at) = self.position.get(&endpoint.id) {
            // Re-added: ChildSet replaces the child; its slot is reused.
            self.slots.set(at, idle_slot(endpoint.id));
        } else {
            self.position.insert(endpoint.id, self.slots.len());
            self.slots.push(idle_slot(endpoint.id));
        }
        self.stale = true;
        let update = self.children.add(endpoint, helper);
        self.apply(update, helper);
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        self.keys.remove(&endpoint);
        if let Some(at) = self.position.remove(&endpoint) {
            self.slots.swap_remove(at);
            if let Some(moved) = self.slots.get(at) {
                self.position.insert(moved.endpoint, at);
            }
        }
        self.stale = true;
        self.children.remove(endpoint, helper);
        if self.children.is_empty() {
            self.last_error = Some(Arc::new(NoEndpoints));
        }
        self.report(helper);
    }

    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        let update = self.children.subchannel_state(id, state, helper);
        self.apply(update, helper);
    }

    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        if self.children.is_empty() {
            self.last_error = Some(error.clone());
            self.report(helper);
        }
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        let update = self.children.timer_fired(timer, helper);
        self.apply(update, helper);
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        let wanted = self.take_wanted();
        self.connect_one_idle(wanted, helper);
    }

    fn uses_pick_info(&self) -> bool {
        true
    }

    fn pick_queued(&mut self, helper: &mut dyn Helper) {
        if let Some(wanted) = self.take_wanted() {
            if self.children.state(wanted) == Some(ConnectivityState::Idle) {
                self.start(wanted, helper);
            }
        }
    }
}

fn idle_slot(endpoint: EndpointId) -> Slot {
    Slot {
        endpoint,
        state: ConnectivityState::Idle,
        error: None,
        picker: FixedPicker::queue(),
    }
}

#[cfg(test)]
#[path = "ring_hash_tests.rs"]
mod tests;
