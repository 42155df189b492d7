use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::{
    ChildSet, ChildUpdate, Endpoint, EndpointId, Helper, PickFirst, PickInfo, PickResult, Policy,
    SubchannelId, TimerId,
};

/// One pick_first child per endpoint and the READY children in a list that
/// is kept up to date per event: the part round_robin and least_request share.
pub(crate) struct Sharded {
    pub(crate) children: ChildSet<PickFirst>,
    pub(crate) ready: Vec<EndpointId>,
    ready_at: HashMap<EndpointId, usize>,
    reported: Option<(ConnectivityState, bool)>,
    last_error: Option<SharedError>,
}

impl Sharded {
    pub(crate) fn new() -> Self {
        Sharded {
            children: ChildSet::new(|_| PickFirst::new()).auto_exit_idle(true),
            ready: Vec::new(),
            ready_at: HashMap::new(),
            reported: None,
            last_error: None,
        }
    }

    /// Applies a child's update to the ready list and reports the aggregate
    /// if it changed. O(1).
    pub(crate) fn apply(&mut self, update: Option<ChildUpdate>, helper: &mut dyn Helper) {
        let Some(update) = update else {
            return;
        };
        let was_ready = update.old == ConnectivityState::Ready;
        let is_ready = update.new == ConnectivityState::Ready;
        if was_ready && !is_ready {
            if let Some(at) = self.ready_at.remove(&update.child) {
                self.ready.swap_remove(at);
                if let Some(moved) = self.ready.get(at) {
                    self.ready_at.insert(*moved, at);
                }
            }
        } else if is_ready && !was_ready {
            self.ready_at.insert(update.child, self.ready.len());
            self.ready.push(update.child);
        }
        let mut new_error = false;
        if update.new == ConnectivityState::TransientFailure {
            if let Some(error) = update.error {
                self.last_error = Some(error);
                new_error = true;
            }
        }
        self.report(new_error, helper);
    }

    fn report(&mut self, new_error: bool, helper: &mut dyn Helper) {
        let state = self.children.aggregate();
        let changed = self.reported.map(|(s, _)| s) != Some(state);
        // A TRANSIENT_FAILURE with a fresh error is re-reported, so that a
        // fail-fast caller sees the latest cause.
        if changed || (state == ConnectivityState::TransientFailure && new_error) {
            self.reported = Some((state, true));
            let error = match state {
                ConnectivityState::TransientFailure => self.last_error.clone(),
                _ => None,
            };
            helper.update_state(state, error);
        }
    }

    pub(crate) fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        let update = self.children.add(endpoint, helper);
        self.apply(update, helper);
    }

    pub(crate) fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        let update = self.children.remove(endpoint, helper);
        self.apply(update, helper);
        if self.children.is_empty() {
            self.last_error = Some(Arc::new(NoEndpoints));
            self.report(true, helper);
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
            self.report(true, helper);
        }
    }

    pub(crate) fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        let update = self.children.timer_fired(timer, helper);
        self.apply(update, helper);
    }

    pub(crate) fn no_pick(&self) -> PickResult {
        match self.children.aggregate() {
            ConnectivityState::TransientFailure => PickResult::Fail(
                self.last_error
                    .clone()
                    .unwrap_or_else(|| Arc::new(NoEndpoints)),
            ),
            _ => PickResult::Queue,
        }
    }
}

/// round_robin on the policy tree (grpc-go's `roundrobin`: endpointsharding
/// with one pick_first child per endpoint).
///
/// Every endpoint's child connects at once and reconnects when it goes IDLE;
/// a child in TRANSIENT_FAILURE stays there until it is READY again (pick_first
/// is sticky). Calls go to the READY children in turn. Each event costs O(1):
/// the READY list is updated in place, never rebuilt.
///
/// ```
/// use grpc_lb_balance::tree::{Policy, RoundRobin};
///
/// let policy = RoundRobin::new();
/// assert_eq!(policy.name(), "round_robin");
/// ```
pub struct RoundRobin {
    sharded: Sharded,
    next: usize,
}

impl RoundRobin {
    /// A round_robin policy with no endpoints.
    pub fn new() -> Self {
        RoundRobin {
            sharded: Sharded::new(),
            next: rand::random::<u32>() as usize,
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
        self.sharded.add_endpoint(endpoint, helper)
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

    fn pick(&mut self, info: &PickInfo<'_>) -> PickResult {
        let ready = &self.sharded.ready;
        if ready.is_empty() {
            return self.sharded.no_pick();
        }
        let child = ready[self.next % ready.len()];
        self.next = self.next.wrapping_add(1);
        self.sharded
            .children
            .pick(child, info)
            .unwrap_or(PickResult::Queue)
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
