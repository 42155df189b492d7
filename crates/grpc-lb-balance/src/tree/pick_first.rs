use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::{Endpoint, EndpointId, FixedPicker, Helper, Picker, Policy, SubchannelId, TimerId};

/// gRFC A61's Connection Attempt Delay (Happy Eyeballs).
const CONNECTION_DELAY: Duration = Duration::from_millis(250);

/// pick_first on the policy tree (gRFC A62, A61; grpc-go `pickfirst`).
///
/// It tries its subchannels one at a time in order, starting the next one
/// after 250 ms without cancelling the last (Happy Eyeballs), keeps the first
/// that becomes READY and disconnects the others. When every subchannel has
/// failed once (the end of the first pass) it reports TRANSIENT_FAILURE, asks
/// for re-resolution and connects every IDLE subchannel, and from then on
/// reconnects each subchannel whose backoff ends (sticky TRANSIENT_FAILURE,
/// until one is READY). Losing the READY subchannel makes it IDLE; the next
/// queued call starts a new pass from the first subchannel.
///
/// As the root it serves every endpoint's subchannels in discovery order; as a
/// child of [`RoundRobin`](super::RoundRobin) it serves one endpoint.
///
/// Its picker picks the one READY subchannel; it queues while connecting and
/// fails with the last error in TRANSIENT_FAILURE.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::tree::{Endpoint, EndpointId, Helper, PickFirst, PickInfo, PickResult, Picker, Policy, SubchannelId, TimerId};
/// use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};
///
/// #[derive(Default)]
/// struct Recorder { connects: Vec<SubchannelId>, state: Option<ConnectivityState>, picker: Option<Arc<dyn Picker>> }
/// impl Helper for Recorder {
///     fn connect(&mut self, id: SubchannelId) { self.connects.push(id) }
///     fn disconnect(&mut self, _: SubchannelId) {}
///     fn update_state(&mut self, state: ConnectivityState, _: Option<SharedError>, picker: Arc<dyn Picker>) {
///         (self.state, self.picker) = (Some(state), Some(picker));
///     }
///     fn set_timer(&mut self, _: std::time::Duration) -> TimerId { TimerId::from_raw(1) }
///     fn cancel_timer(&mut self, _: TimerId) {}
///     fn resolve_now(&mut self) {}
/// }
///
/// let (a, b) = (SubchannelId::from_raw(1), SubchannelId::from_raw(2));
/// let mut helper = Recorder::default();
/// let mut policy = PickFirst::new();
/// policy.add_endpoint(Endpoint { id: EndpointId::from_raw(1), subchannels: &[a, b] }, &mut helper);
/// assert_eq!(helper.connects, [a]);
/// assert_eq!(helper.state, Some(ConnectivityState::Connecting));
///
/// policy.subchannel_state(a, &Connectivity::new(ConnectivityState::Ready), &mut helper);
/// assert_eq!(helper.state, Some(ConnectivityState::Ready));
/// match helper.picker.unwrap().pick(&PickInfo::none()) {
///     PickResult::Pick(pick) => assert_eq!(pick.subchannel(), a),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Default)]
pub struct PickFirst {
    subchannels: HashMap<SubchannelId, Member>,
    order: Vec<SubchannelId>,
    endpoints: HashMap<EndpointId, Box<[SubchannelId]>>,
    phase: Phase,
    selected: Option<SubchannelId>,
    last_error: Option<SharedError>,
    /// Failures since the first pass ended, to re-report TF every n.
    failures_after_pass: usize,
    /// How many subchannels have `failed_in_pass`, so that the end of the
    /// pass is known without a scan.
    failed_count: usize,
}

#[derive(Clone, Copy, Debug)]
struct Member {
    state: ConnectivityState,
    failed_in_pass: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// No subchannels (or none yet).
    #[default]
    Empty,
    /// Not connecting until a call asks (after a lost connection).
    Idle,
    /// Trying the subchannels in order; `cursor` is the next to try.
    FirstPass {
        cursor: usize,
        current: Option<SubchannelId>,
        timer: Option<TimerId>,
    },
    /// `selected` is the subchannel in use.
    Connected,
    /// Every subchannel failed: TRANSIENT_FAILURE until one is READY.
    StickyFailure,
}

impl PickFirst {
    /// A pick_first policy with no subchannels.
    pub fn new() -> Self {
        PickFirst::default()
    }

    fn report(&mut self, state: ConnectivityState, helper: &mut dyn Helper) {
        let error = match state {
            ConnectivityState::TransientFailure => self.last_error.clone(),
            _ => None,
        };
        let picker: Arc<dyn Picker> = match (state, self.selected) {
            (ConnectivityState::Ready, Some(id)) => FixedPicker::subchannel(id),
            (ConnectivityState::TransientFailure, _) => {
                FixedPicker::fail(error.clone().unwrap_or_else(|| Arc::new(NoAddresses)))
            }
            _ => FixedPicker::queue(),
        };
        helper.update_state(state, error, picker);
    }

    fn start_pass(&mut self, helper: &mut dyn Helper) {
        for member in self.subchannels.values_mut() {
            member.failed_in_pass = false;
        }
        self.failed_count = 0;
        self.phase = Phase::FirstPass {
            cursor: 0,
            current: None,
            timer: None,
        };
        self.attempt_next(helper);
    }

    /// Starts the next subchannel of the pass that has not failed; ends the
    /// pass when all have.
    fn attempt_next(&mut self, helper: &mut dyn Helper) {
        let Phase::FirstPass {
            mut cursor, timer, ..
        } = self.phase
        else {
            return;
        };
        if let Some(timer) = timer {
            helper.cancel_timer(timer);
        }
        while let Some(&id) = self.order.get(cursor) {
            cursor += 1;
            let member = self.subchannels.get_mut(&id).expect("ordered subchannel");
            match member.state {
                ConnectivityState::TransientFailure => {
                    if !std::mem::replace(&mut member.failed_in_pass, true) {
                        self.failed_count += 1;
                    }
                }
                _ if member.failed_in_pass => {}
                state => {
                    if state == ConnectivityState::Idle {
                        helper.connect(id);
                    }
                    let timer = helper.set_timer(CONNECTION_DELAY);
                    self.phase = Phase::FirstPass {
                        cursor,
                        current: Some(id),
                        timer: Some(timer),
                    };
                    return;
                }
            }
        }
        self.phase = Phase::FirstPass {
            cursor,
            current: None,
            timer: None,
        };
        self.end_pass_if_all_failed(helper);
    }

    fn end_pass_if_all_failed(&mut self, helper: &mut dyn Helper) {
        let Phase::FirstPass { cursor, .. } = self.phase else {
            return;
        };
        if cursor < self.order.len() || self.failed_count < self.order.len() {
            return;
        }
        // grpc-go's endFirstPassIfPossibleLocked: TF, re-resolve, and connect
        // every IDLE subchannel (those whose backoff already ended included).
        self.phase = Phase::StickyFailure;
        self.failures_after_pass = 0;
        self.report(ConnectivityState::TransientFailure, helper);
        helper.resolve_now();
        for id in &self.order {
            if self.subchannels[id].state == ConnectivityState::Idle {
                helper.connect(*id);
            }
        }
    }

    fn select(&mut self, id: SubchannelId, helper: &mut dyn Helper) {
        if let Phase::FirstPass {
            timer: Some(timer), ..
        } = self.phase
        {
            helper.cancel_timer(timer);
        }
        self.phase = Phase::Connected;
        self.selected = Some(id);
        for other in &self.order {
            let state = self.subchannels[other].state;
            if *other != id && state != ConnectivityState::Idle {
                helper.disconnect(*other);
            }
        }
        self.report(ConnectivityState::Ready, helper);
    }

    fn lost(&mut self, helper: &mut dyn Helper) {
        self.selected = None;
        self.phase = Phase::Idle;
        self.report(ConnectivityState::Idle, helper);
    }
}

impl fmt::Debug for PickFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickFirst")
            .field("subchannels", &self.order.len())
            .field("phase", &self.phase)
            .field("selected", &self.selected)
            .finish()
    }
}

impl Policy for PickFirst {
    fn name(&self) -> &str {
        "pick_first"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        for id in endpoint.subchannels {
            let member = Member {
                state: ConnectivityState::Idle,
                failed_in_pass: false,
            };
            if self.subchannels.insert(*id, member).is_none() {
                self.order.push(*id);
            }
        }
        self.endpoints
            .insert(endpoint.id, endpoint.subchannels.into());
        match self.phase {
            Phase::Empty => {
                // A good list after none: CONNECTING, whatever came before.
                self.report(ConnectivityState::Connecting, helper);
                self.start_pass(helper);
            }
            Phase::FirstPass { current: None, .. } => self.attempt_next(helper),
            Phase::StickyFailure => self.start_pass(helper),
            // IDLE stays IDLE until a call; a connected one keeps its choice.
            Phase::Idle | Phase::FirstPass { .. } | Phase::Connected => {}
        }
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        let Some(gone) = self.endpoints.remove(&endpoint) else {
            return;
        };
        let mut lost_current = false;
        for id in gone.iter() {
            if self
                .subchannels
                .remove(id)
                .is_some_and(|m| m.failed_in_pass)
            {
                self.failed_count -= 1;
            }
            lost_current |= self.selected == Some(*id);
            if let Phase::FirstPass {
                current: Some(current),
                ..
            } = self.phase
            {
                lost_current |= current == *id;
            }
        }
        // Keep the cursor on the same next subchannel.
        if let Phase::FirstPass {
            cursor,
            current,
            timer,
        } = &mut self.phase
        {
            let removed_before = self.order[..*cursor]
                .iter()
                .filter(|id| gone.contains(id))
                .count();
            *cursor -= removed_before;
            if lost_current {
                *current = None;
                if let Some(timer) = timer.take() {
                    helper.cancel_timer(timer);
                }
            }
        }
        self.order.retain(|id| !gone.contains(id));
        if self.order.is_empty() {
            self.phase = Phase::Empty;
            self.selected = None;
            self.last_error = Some(Arc::new(NoAddresses));
            self.report(ConnectivityState::TransientFailure, helper);
            return;
        }
        match self.phase {
            Phase::Connected if lost_current => {
                self.selected = None;
                self.report(ConnectivityState::Connecting, helper);
                self.start_pass(helper);
            }
            Phase::FirstPass { current: None, .. } => self.attempt_next(helper),
            _ => {}
        }
    }

    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        connectivity: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        let state = connectivity.state;
        let Some(member) = self.subchannels.get_mut(&id) else {
            return;
        };
        member.state = state;
        if state == ConnectivityState::TransientFailure {
            if !std::mem::replace(&mut member.failed_in_pass, true) {
                self.failed_count += 1;
            }
            if let Some(error) = &connectivity.last_error {
                self.last_error = Some(error.clone());
            }
        }
        if self.selected == Some(id) {
            match state {
                ConnectivityState::Ready => self.report(ConnectivityState::Ready, helper),
                // A plain service that is Pending while selected: not lost.
                ConnectivityState::Connecting => self.report(ConnectivityState::Connecting, helper),
                _ => self.lost(helper),
            }
            return;
        }
        match (self.phase, state) {
            (_, ConnectivityState::Ready) if self.phase != Phase::Connected => {
                self.select(id, helper)
            }
            (Phase::Connected, ConnectivityState::Ready) => helper.disconnect(id),
            (Phase::FirstPass { current, .. }, ConnectivityState::TransientFailure) => {
                if current == Some(id) {
                    self.attempt_next(helper);
                } else {
                    self.end_pass_if_all_failed(helper);
                }
            }
            (Phase::StickyFailure, ConnectivityState::Idle) => helper.connect(id),
            (Phase::StickyFailure, ConnectivityState::TransientFailure) => {
                self.failures_after_pass += 1;
                if self.failures_after_pass >= self.order.len() {
                    self.failures_after_pass = 0;
                    self.report(ConnectivityState::TransientFailure, helper);
                    helper.resolve_now();
                }
            }
            _ => {}
        }
    }

    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        // grpc-go: ignored while a good list is in use and not failing.
        if matches!(self.phase, Phase::Empty | Phase::StickyFailure) {
            self.last_error = Some(error.clone());
            self.report(ConnectivityState::TransientFailure, helper);
        }
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        if let Phase::FirstPass {
            timer: Some(ours), ..
        } = self.phase
        {
            if ours == timer {
                if let Phase::FirstPass { timer, .. } = &mut self.phase {
                    *timer = None;
                }
                // Happy Eyeballs: the next address, without cancelling this one.
                self.attempt_next(helper);
            }
        }
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        if self.phase == Phase::Idle {
            self.report(ConnectivityState::Connecting, helper);
            self.start_pass(helper);
        }
    }
}

/// pick_first has no addresses (grpc-go: "produced zero addresses").
#[derive(Debug)]
struct NoAddresses;

impl fmt::Display for NoAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("pick_first has no addresses")
    }
}

impl std::error::Error for NoAddresses {}
