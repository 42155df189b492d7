use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::cow::ChunkedVec;
use super::{
    ChildSet, ChildUpdate, Endpoint, EndpointId, FixedPicker, Helper, PickFirst, PickInfo,
    PickResult, Picker, Policy, SubchannelId, TimerId,
};

/// One READY child as its parent's picker sees it: its picker and what the
/// parent keeps beside it (least_request's counter, WRR's weight).
#[derive(Clone, Debug)]
pub(crate) struct ReadyChild<X> {
    pub(crate) endpoint: EndpointId,
    pub(crate) picker: Arc<dyn Picker>,
    pub(crate) extra: X,
}

/// The READY children, in a list their pickers share copy-on-write.
pub(crate) type ReadyList<X> = ChunkedVec<ReadyChild<X>>;

/// Builds the parent's picker over its READY children (never empty).
pub(crate) type BuildPicker<X> = Box<dyn Fn(&ReadyList<X>) -> Arc<dyn Picker> + Send>;

/// One pick_first child per endpoint and the READY children in a list that
/// is kept up to date per event: the part round_robin, least_request and
/// weighted_round_robin share. Whenever the READY list, a READY child's picker
/// or the aggregate state changes, it reports the aggregate with a new picker
/// from `build`.
pub(crate) struct Sharded<X> {
    pub(crate) children: ChildSet<PickFirst>,
    pub(crate) ready: ReadyList<X>,
    ready_at: HashMap<EndpointId, usize>,
    pub(crate) extras: HashMap<EndpointId, X>,
    build: BuildPicker<X>,
    reported: Option<ConnectivityState>,
    last_error: Option<SharedError>,
}

impl<X: Clone + Send + Sync + 'static> Sharded<X> {
    pub(crate) fn new(build: BuildPicker<X>) -> Self {
        Sharded {
            children: ChildSet::new(|_| PickFirst::new()).auto_exit_idle(true),
            ready: ChunkedVec::default(),
            ready_at: HashMap::new(),
            extras: HashMap::new(),
            build,
            reported: None,
            last_error: None,
        }
    }

    /// Applies a child's update to the ready list and reports if anything a
    /// pick would see changed. O(1) but for the parent's own `build`.
    pub(crate) fn apply(&mut self, update: Option<ChildUpdate>, helper: &mut dyn Helper) {
        let Some(update) = update else {
            return;
        };
        let was_ready = update.old == ConnectivityState::Ready;
        let is_ready = update.new == ConnectivityState::Ready;
        let mut picker_changed = false;
        if was_ready {
            if let Some(at) = self.ready_at.remove(&update.child) {
                self.ready.swap_remove(at);
                if let Some(moved) = self.ready.get(at) {
                    self.ready_at.insert(moved.endpoint, at);
                }
                picker_changed = true;
            }
        }
        if is_ready {
            if let Some(extra) = self.extras.get(&update.child) {
                self.ready_at.insert(update.child, self.ready.len());
                self.ready.push(ReadyChild {
                    endpoint: update.child,
                    picker: update.picker.clone(),
                    extra: extra.clone(),
                });
                picker_changed = true;
            }
        }
        let mut new_error = false;
        if update.new == ConnectivityState::TransientFailure {
            if let Some(error) = update.error {
                self.last_error = Some(error);
                new_error = true;
            }
        }
        self.report(picker_changed, new_error, helper);
    }

    /// Reports the aggregate with a new picker: at once if `force`, else when
    /// the state changed or a TRANSIENT_FAILURE has a fresh error (so that a
    /// fail-fast caller sees the latest cause).
    pub(crate) fn report(&mut self, force: bool, new_error: bool, helper: &mut dyn Helper) {
        let state = self.children.aggregate();
        let changed = self.reported != Some(state);
        if !(force || changed || (state == ConnectivityState::TransientFailure && new_error)) {
            return;
        }
        self.reported = Some(state);
        let (error, picker) = match state {
            _ if !self.ready.is_empty() => (None, (self.build)(&self.ready)),
            ConnectivityState::TransientFailure => {
                let error = self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| Arc::new(NoEndpoints));
                (Some(error.clone()), FixedPicker::fail(error))
            }
            _ => (None, FixedPicker::queue()),
        };
        helper.update_state(state, error, picker);
    }

    pub(crate) fn add_endpoint(
        &mut self,
        endpoint: Endpoint<'_>,
        extra: X,
        helper: &mut dyn Helper,
    ) {
        if self.extras.contains_key(&endpoint.id) {
            // Added again: the old child (and its picker) leaves first.
            self.remove_endpoint(endpoint.id, helper);
        }
        self.extras.insert(endpoint.id, extra);
        let update = self.children.add(endpoint, helper);
        self.apply(update, helper);
    }

    pub(crate) fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        let update = self.children.remove(endpoint, helper);
        self.apply(update, helper);
        self.extras.remove(&endpoint);
        if self.children.is_empty() {
            self.last_error = Some(Arc::new(NoEndpoints));
            self.report(false, true, helper);
        }
    }

    pub(crate) fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        let update = self.children.subchannel_state(id, state, helper);
        self.apply(update, helper);
    }

    pub(crate) fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        // With endpoints the children keep serving them; with none the error
        // is the reason for TRANSIENT_FAILURE.
        if self.children.is_empty() {
            self.last_error = Some(error.clone());
            self.report(false, true, helper);
        }
    }

    pub(crate) fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        let update = self.children.timer_fired(timer, helper);
        self.apply(update, helper);
    }
}

/// round_robin's picker: the READY children's pickers, in turn.
#[derive(Debug)]
struct RoundRobinPicker {
    ready: ReadyList<()>,
    /// Shared by every picker of the policy, so that a new picker goes on
    /// where the last one was instead of starting over.
    next: Arc<AtomicUsize>,
}

impl Picker for RoundRobinPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.ready.len();
        match self.ready.get(turn) {
            Some(child) => child.picker.pick(info),
            None => PickResult::Queue,
        }
    }
}

/// round_robin on the policy tree (grpc-go's `roundrobin`: endpointsharding
/// with one pick_first child per endpoint).
///
/// Every endpoint's child connects at once and reconnects when it goes IDLE;
/// a child in TRANSIENT_FAILURE stays there until it is READY again (pick_first
/// is sticky). Its picker takes the READY children's pickers in turn, from a
/// random start, as grpc-go's does; unlike grpc-go's, each new picker goes on
/// from its predecessor's cursor (an atomic they share), so that services
/// whose readiness flips with every call still take turns. Each event costs O(1) but for a new
/// picker, which shares the READY list copy-on-write (one pointer per 128
/// children, and the chunk that changed).
///
/// ```
/// use grpc_lb_balance::tree::{Policy, RoundRobin};
///
/// let policy = RoundRobin::new();
/// assert_eq!(policy.name(), "round_robin");
/// ```
pub struct RoundRobin {
    sharded: Sharded<()>,
}

impl RoundRobin {
    /// A round_robin policy with no endpoints.
    pub fn new() -> Self {
        let next = Arc::new(AtomicUsize::new(rand::random::<u32>() as usize));
        RoundRobin {
            sharded: Sharded::new(Box::new(move |ready| {
                Arc::new(RoundRobinPicker {
                    ready: ready.clone(),
                    next: next.clone(),
                })
            })),
        }
    }
}

impl Default for RoundRobin {
    fn default() -> Self {
        RoundRobin::new()
    }
}

impl fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin")
            .field("children", &self.sharded.children)
            .finish()
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &str {
        "round_robin"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        self.sharded.add_endpoint(endpoint, (), helper)
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        self.sharded.remove_endpoint(endpoint, helper)
    }

    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        self.sharded.subchannel_state(id, state, helper)
    }

    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        self.sharded.resolver_error(error, helper)
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        self.sharded.timer_fired(timer, helper)
    }

    fn exit_idle(&mut self, _helper: &mut dyn Helper) {
        // Children exit idle by themselves.
    }
}

/// A policy of children has no endpoints (grpc-go: `ErrBadResolverState`).
#[derive(Debug)]
pub(crate) struct NoEndpoints;

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("no endpoints")
    }
}

impl std::error::Error for NoEndpoints {}
