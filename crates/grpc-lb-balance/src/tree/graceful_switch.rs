use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::{Endpoint, EndpointId, Helper, Picker, Policy, SubchannelId, TimerId};

/// Switches from one policy to another without dropping calls (grpc-go's
/// `gracefulswitch`): the new policy learns every endpoint and subchannel
/// state and connects what it wants while the current one keeps serving; it
/// takes over once it leaves CONNECTING, or at once if the current one is not
/// READY.
///
/// The current policy's state and picker pass straight up; the pending one's
/// are kept, and published when it takes over (grpc-go's rule). A current
/// policy that leaves READY while a pending one has reported hands over at
/// once, without publishing its own non-READY picker.
///
/// Both policies work the same subchannels, which the balancer owns, so each
/// one's wants are kept apart: a subchannel is disconnected only when neither
/// policy wants it, and on the switch the old policy's leftovers are
/// disconnected. Switching costs one event per endpoint and subchannel (the
/// new policy must learn them all); every other event costs what the policies'
/// own do.
///
/// ```
/// use grpc_lb_balance::tree::{GracefulSwitch, PickFirst, Policy, RoundRobin};
///
/// let policy = GracefulSwitch::new(Box::new(PickFirst::new()));
/// assert_eq!(policy.name(), "pick_first");
/// // Balance::switch_policy(RoundRobin::new()) moves a balancer over.
/// # let _ = RoundRobin::new();
/// ```
pub struct GracefulSwitch {
    current: Box<dyn Policy>,
    pending: Option<Box<dyn Policy>>,
    /// What each policy asked to be connected: `[current, pending]`.
    wants: [HashSet<SubchannelId>; 2],
    reported: [Option<Reported>; 2],
    timers: HashMap<TimerId, usize>,
    /// The endpoints in discovery order, to replay to a new policy.
    order: BTreeMap<u64, EndpointId>,
    endpoints: HashMap<EndpointId, (u64, Box<[SubchannelId]>)>,
    next_seq: u64,
    states: HashMap<SubchannelId, Connectivity>,
}

/// A policy's last report: its state, error and picker.
type Reported = (ConnectivityState, Option<SharedError>, Arc<dyn Picker>);

const CURRENT: usize = 0;
const PENDING: usize = 1;

/// The helper each of the two policies acts through.
struct SwitchHelper<'a> {
    parent: &'a mut dyn Helper,
    which: usize,
    wants: &'a mut [HashSet<SubchannelId>; 2],
    timers: &'a mut HashMap<TimerId, usize>,
    reported: Option<Reported>,
}

impl Helper for SwitchHelper<'_> {
    fn connect(&mut self, subchannel: SubchannelId) {
        self.wants[self.which].insert(subchannel);
        self.parent.connect(subchannel);
    }

    fn disconnect(&mut self, subchannel: SubchannelId) {
        self.wants[self.which].remove(&subchannel);
        if !self.wants[1 - self.which].contains(&subchannel) {
            self.parent.disconnect(subchannel);
        }
    }

    fn update_state(
        &mut self,
        state: ConnectivityState,
        error: Option<SharedError>,
        picker: Arc<dyn Picker>,
    ) {
        self.reported = Some((state, error, picker));
    }

    fn set_timer(&mut self, after: Duration) -> TimerId {
        let timer = self.parent.set_timer(after);
        self.timers.insert(timer, self.which);
        timer
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        self.timers.remove(&timer);
        self.parent.cancel_timer(timer);
    }

    fn resolve_now(&mut self) {
        self.parent.resolve_now();
    }

    fn endpoint_attributes(&self, endpoint: EndpointId) -> Option<super::EndpointAttributes> {
        self.parent.endpoint_attributes(endpoint)
    }
}

impl GracefulSwitch {
    /// Starts with `policy`.
    pub fn new(policy: Box<dyn Policy>) -> Self {
        GracefulSwitch {
            current: policy,
            pending: None,
            wants: Default::default(),
            reported: [None, None],
            timers: HashMap::new(),
            order: BTreeMap::new(),
            endpoints: HashMap::new(),
            next_seq: 0,
            states: HashMap::new(),
        }
    }

    /// The policy serving now.
    pub fn current(&self) -> &dyn Policy {
        &*self.current
    }

    /// The policy being switched to, until it takes over.
    pub fn pending(&self) -> Option<&dyn Policy> {
        self.pending.as_deref()
    }

    /// Starts switching to `policy`: it learns every endpoint and subchannel
    /// state now, and takes over by grpc-go's rule. A pending policy not yet
    /// in use is replaced.
    pub fn switch_to(&mut self, policy: Box<dyn Policy>, helper: &mut dyn Helper) {
        if self.pending.take().is_some() {
            self.drop_wants(PENDING, helper);
        }
        self.pending = Some(policy);
        self.reported[PENDING] = None;
        let order: Vec<EndpointId> = self.order.values().copied().collect();
        for id in order {
            let subchannels = self.endpoints[&id].1.clone();
            self.on(PENDING, helper, |policy, helper| {
                policy.add_endpoint(
                    Endpoint {
                        id,
                        subchannels: &subchannels,
                    },
                    helper,
                )
            });
            for subchannel in subchannels.iter() {
                let Some(state) = self.states.get(subchannel).cloned() else {
                    continue;
                };
                if state.state != ConnectivityState::Idle {
                    self.on(PENDING, helper, |policy, helper| {
                        policy.subchannel_state(*subchannel, &state, helper)
                    });
                }
            }
        }
        self.swap_if_ready(helper);
    }

    /// Runs `event` on one policy with its own helper; passes the current
    /// policy's state up, and keeps the pending one's.
    fn on(
        &mut self,
        which: usize,
        helper: &mut dyn Helper,
        event: impl FnOnce(&mut dyn Policy, &mut dyn Helper),
    ) {
        let policy = match which {
            CURRENT => &mut *self.current,
            _ => match &mut self.pending {
                Some(pending) => &mut **pending,
                None => return,
            },
        };
        let mut switch_helper = SwitchHelper {
            parent: helper,
            which,
            wants: &mut self.wants,
            timers: &mut self.timers,
            reported: None,
        };
        event(policy, &mut switch_helper);
        if let Some(reported) = switch_helper.reported {
            // grpc-go: a current policy leaving READY while the pending one
            // has a state swaps at once (in `swap_if_ready`), publishing the
            // pending one's picker instead.
            let handing_over = self.pending.is_some()
                && self.reported[PENDING].is_some()
                && reported.0 != ConnectivityState::Ready;
            if which == CURRENT && !handing_over {
                let (state, error, picker) = &reported;
                helper.update_state(*state, error.clone(), picker.clone());
            }
            self.reported[which] = Some(reported);
        }
    }

    /// Both policies get the event, then the switch rule is checked.
    fn on_both(
        &mut self,
        helper: &mut dyn Helper,
        event: impl Fn(&mut dyn Policy, &mut dyn Helper),
    ) {
        self.on(CURRENT, helper, &event);
        self.on(PENDING, helper, &event);
        self.swap_if_ready(helper);
    }

    /// grpc-go: the pending policy takes over once it is not CONNECTING, or
    /// whenever the current one is not READY.
    fn swap_if_ready(&mut self, helper: &mut dyn Helper) {
        let Some((pending_state, ..)) = &self.reported[PENDING] else {
            return;
        };
        let current_ready = matches!(self.reported[CURRENT], Some((ConnectivityState::Ready, ..)));
        if *pending_state == ConnectivityState::Connecting && current_ready {
            return;
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        tracing::info!(
            from = self.current.name(),
            to = pending.name(),
            "switching policy"
        );
        self.current = pending;
        self.drop_wants(CURRENT, helper);
        self.wants.swap(CURRENT, PENDING);
        self.reported[CURRENT] = self.reported[PENDING].take();
        for owner in self.timers.values_mut() {
            *owner = if *owner == PENDING { CURRENT } else { PENDING };
        }
        let stale: Vec<TimerId> = self
            .timers
            .iter()
            .filter(|(_, owner)| **owner == PENDING)
            .map(|(timer, _)| *timer)
            .collect();
        for timer in stale {
            self.timers.remove(&timer);
            helper.cancel_timer(timer);
        }
        if let Some((state, error, picker)) = &self.reported[CURRENT] {
            helper.update_state(*state, error.clone(), picker.clone());
        }
    }

    /// Forgets what policy `which` wanted, disconnecting what the other
    /// policy does not want.
    fn drop_wants(&mut self, which: usize, helper: &mut dyn Helper) {
        let wanted = std::mem::take(&mut self.wants[which]);
        for subchannel in wanted {
            if !self.wants[1 - which].contains(&subchannel) {
                helper.disconnect(subchannel);
            }
        }
    }
}

impl fmt::Debug for GracefulSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GracefulSwitch")
            .field("current", &self.current.name())
            .field(
                "pending",
                &self.pending.as_ref().map(|p| p.name().to_owned()),
            )
            .finish()
    }
}

impl Policy for GracefulSwitch {
    fn name(&self) -> &str {
        self.current.name()
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        self.next_seq += 1;
        self.order.insert(self.next_seq, endpoint.id);
        self.endpoints
            .insert(endpoint.id, (self.next_seq, endpoint.subchannels.into()));
        self.on_both(helper, |policy, helper| {
            policy.add_endpoint(endpoint, helper)
        });
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        if let Some((seq, subchannels)) = self.endpoints.remove(&endpoint) {
            self.order.remove(&seq);
            for subchannel in subchannels.iter() {
                self.states.remove(subchannel);
                self.wants[CURRENT].remove(subchannel);
                self.wants[PENDING].remove(subchannel);
            }
        }
        self.on_both(helper, |policy, helper| {
            policy.remove_endpoint(endpoint, helper)
        });
    }

    fn subchannel_state(
        &mut self,
        subchannel: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        self.states.insert(subchannel, state.clone());
        self.on_both(helper, |policy, helper| {
            policy.subchannel_state(subchannel, state, helper)
        });
    }

    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        self.on_both(helper, |policy, helper| {
            policy.resolver_error(error, helper)
        });
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        if let Some(which) = self.timers.remove(&timer) {
            self.on(which, helper, |policy, helper| {
                policy.timer_fired(timer, helper)
            });
            self.swap_if_ready(helper);
        }
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        self.on(CURRENT, helper, |policy, helper| policy.exit_idle(helper));
        self.swap_if_ready(helper);
    }

    fn uses_pick_info(&self) -> bool {
        self.current.uses_pick_info()
    }

    fn pick_queued(&mut self, helper: &mut dyn Helper) {
        self.on(CURRENT, helper, |policy, helper| policy.pick_queued(helper));
        self.swap_if_ready(helper);
    }
}
