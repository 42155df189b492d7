use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::{Endpoint, EndpointId, FixedPicker, Helper, Picker, Policy, SubchannelId, TimerId};

/// A set of child policies, one per endpoint, each with its own helper
/// (grpc-go's `endpointsharding`, with the `ClientConn` it gives each child).
///
/// The owner passes its events in; the set routes each to the child that owns
/// the subchannel or timer (hash lookups, no scan), lets the child act through
/// a [`ChildHelper`], and returns a [`ChildUpdate`] when the child reported a
/// state. The aggregate state is kept by counting children per state, so
/// reading it costs nothing either. Each child's latest picker is kept, for the
/// owner to build its own picker from.
///
/// With [`auto_exit_idle`](Self::auto_exit_idle), a child that reports IDLE is
/// told to exit idle at once, as round_robin's children are in grpc-go.
///
/// ```
/// use grpc_lb_balance::tree::{ChildSet, Endpoint, EndpointId, PickFirst, SubchannelId};
/// use grpc_lb_core::{Connectivity, ConnectivityState};
/// # use grpc_lb_balance::tree::{Helper, TimerId};
/// # #[derive(Default)]
/// # struct Recorder { connects: Vec<SubchannelId>, timers: u64 }
/// # impl Helper for Recorder {
/// #     fn connect(&mut self, id: SubchannelId) { self.connects.push(id) }
/// #     fn disconnect(&mut self, _: SubchannelId) {}
/// #     fn update_state(&mut self, _: ConnectivityState, _: Option<grpc_lb_core::SharedError>, _: std::sync::Arc<dyn grpc_lb_balance::tree::Picker>) {}
/// #     fn set_timer(&mut self, _: std::time::Duration) -> TimerId { self.timers += 1; TimerId::from_raw(self.timers) }
/// #     fn cancel_timer(&mut self, _: TimerId) {}
/// #     fn resolve_now(&mut self) {}
/// # }
///
/// let mut helper = Recorder::default(); // records what the children ask for
/// let mut children = ChildSet::new(|_| PickFirst::new()).auto_exit_idle(true);
/// let a = SubchannelId::from_raw(1);
/// let endpoint = Endpoint { id: EndpointId::from_raw(1), subchannels: &[a] };
/// children.add(endpoint, &mut helper);
/// assert_eq!(helper.connects, [a]); // the pick_first child connects its address
/// assert_eq!(children.aggregate(), ConnectivityState::Connecting);
///
/// let update = children
///     .subchannel_state(a, &Connectivity::new(ConnectivityState::Ready), &mut helper)
///     .unwrap();
/// assert_eq!(update.new, ConnectivityState::Ready);
/// assert_eq!(children.aggregate(), ConnectivityState::Ready);
/// // The child's picker picks its READY subchannel.
/// use grpc_lb_balance::tree::{PickInfo, PickResult};
/// let picker = children.picker(EndpointId::from_raw(1)).unwrap();
/// assert!(matches!(picker.pick(&PickInfo::none()), PickResult::Pick(p) if p.subchannel() == a));
/// ```
pub struct ChildSet<P> {
    make: Box<dyn FnMut(EndpointId) -> P + Send>,
    children: HashMap<EndpointId, Child<P>>,
    subchannel_owner: HashMap<SubchannelId, EndpointId>,
    timer_owner: HashMap<TimerId, EndpointId>,
    /// Children per state, indexed by [`state_index`].
    counts: [usize; 5],
    auto_exit_idle: bool,
}

struct Child<P> {
    policy: P,
    state: ConnectivityState,
    error: Option<SharedError>,
    picker: Arc<dyn Picker>,
    subchannels: Box<[SubchannelId]>,
}

/// A child reported its state while handling an event.
#[derive(Clone, Debug)]
pub struct ChildUpdate {
    /// The child (its endpoint).
    pub child: EndpointId,
    /// Its state before.
    pub old: ConnectivityState,
    /// Its state now; `SHUTDOWN` when it was removed.
    pub new: ConnectivityState,
    /// The error it reported with the state.
    pub error: Option<SharedError>,
    /// The picker it reported (a queueing one when it was removed).
    pub picker: Arc<dyn Picker>,
}

const fn state_index(state: ConnectivityState) -> usize {
    match state {
        ConnectivityState::Idle => 0,
        ConnectivityState::Connecting => 1,
        ConnectivityState::Ready => 2,
        ConnectivityState::TransientFailure => 3,
        ConnectivityState::Shutdown => 4,
    }
}

impl<P: Policy> ChildSet<P> {
    /// An empty set; `make` builds the child for a new endpoint.
    pub fn new(make: impl FnMut(EndpointId) -> P + Send + 'static) -> Self {
        ChildSet {
            make: Box::new(make),
            children: HashMap::new(),
            subchannel_owner: HashMap::new(),
            timer_owner: HashMap::new(),
            counts: [0; 5],
            auto_exit_idle: false,
        }
    }

    /// Tells a child that reports IDLE to exit idle at once (grpc-go's
    /// endpointsharding does unless `DisableAutoReconnect`).
    pub fn auto_exit_idle(mut self, enabled: bool) -> Self {
        self.auto_exit_idle = enabled;
        self
    }

    /// How many children there are.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// True if there are no children.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// How many children are in `state`.
    pub fn count(&self, state: ConnectivityState) -> usize {
        self.counts[state_index(state)]
    }

    /// The aggregate state by grpc-go's rule: any READY → READY; else any
    /// CONNECTING → CONNECTING; else any IDLE → IDLE; else TRANSIENT_FAILURE
    /// (also with no children).
    pub fn aggregate(&self) -> ConnectivityState {
        if self.count(ConnectivityState::Ready) > 0 {
            ConnectivityState::Ready
        } else if self.count(ConnectivityState::Connecting) > 0 {
            ConnectivityState::Connecting
        } else if self.count(ConnectivityState::Idle) > 0 {
            ConnectivityState::Idle
        } else {
            ConnectivityState::TransientFailure
        }
    }

    /// A child's state.
    pub fn state(&self, child: EndpointId) -> Option<ConnectivityState> {
        self.children.get(&child).map(|c| c.state)
    }

    /// A child's last reported error.
    pub fn error(&self, child: EndpointId) -> Option<&SharedError> {
        self.children.get(&child)?.error.as_ref()
    }

    /// A child's latest picker.
    pub fn picker(&self, child: EndpointId) -> Option<&Arc<dyn Picker>> {
        self.children.get(&child).map(|c| &c.picker)
    }

    /// A child's policy.
    pub fn child_mut(&mut self, child: EndpointId) -> Option<&mut P> {
        self.children.get_mut(&child).map(|c| &mut c.policy)
    }

    /// Makes a child for `endpoint` and gives it the endpoint.
    pub fn add(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) -> Option<ChildUpdate> {
        let id = endpoint.id;
        if self.children.contains_key(&id) {
            self.remove(id, helper);
        }
        let policy = (self.make)(id);
        for subchannel in endpoint.subchannels {
            self.subchannel_owner.insert(*subchannel, id);
        }
        self.counts[state_index(ConnectivityState::Idle)] += 1;
        self.children.insert(
            id,
            Child {
                policy,
                state: ConnectivityState::Idle,
                error: None,
                picker: FixedPicker::queue(),
                subchannels: endpoint.subchannels.into(),
            },
        );
        let first = self.with_child(id, helper, |policy, helper| {
            policy.add_endpoint(endpoint, helper)
        });
        // The child starts IDLE; a child that stays IDLE is still news to
        // its owner, which counts it.
        first.or(Some(ChildUpdate {
            child: id,
            old: ConnectivityState::Idle,
            new: ConnectivityState::Idle,
            error: None,
            picker: FixedPicker::queue(),
        }))
    }

    /// Removes the child of `endpoint`. The update reads `SHUTDOWN`.
    pub fn remove(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) -> Option<ChildUpdate> {
        let mut child = self.children.remove(&endpoint)?;
        {
            let mut child_helper = ChildHelper::new(helper, &mut self.timer_owner, endpoint);
            child.policy.remove_endpoint(endpoint, &mut child_helper);
        }
        for subchannel in child.subchannels.iter() {
            self.subchannel_owner.remove(subchannel);
        }
        self.timer_owner.retain(|_, owner| *owner != endpoint);
        self.counts[state_index(child.state)] -= 1;
        Some(ChildUpdate {
            child: endpoint,
            old: child.state,
            new: ConnectivityState::Shutdown,
            error: None,
            picker: FixedPicker::queue(),
        })
    }

    /// Routes a subchannel's state to the child that owns it.
    pub fn subchannel_state(
        &mut self,
        subchannel: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) -> Option<ChildUpdate> {
        let owner = *self.subchannel_owner.get(&subchannel)?;
        self.with_child(owner, helper, |policy, helper| {
            policy.subchannel_state(subchannel, state, helper)
        })
    }

    /// Routes a timer to the child that set it. `None` if no child did (or it
    /// reported nothing).
    pub fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) -> Option<ChildUpdate> {
        let owner = self.timer_owner.remove(&timer)?;
        self.with_child(owner, helper, |policy, helper| {
            policy.timer_fired(timer, helper)
        })
    }

    /// Tells one child to exit idle.
    pub fn exit_idle(&mut self, child: EndpointId, helper: &mut dyn Helper) -> Option<ChildUpdate> {
        self.with_child(child, helper, |policy, helper| policy.exit_idle(helper))
    }

    /// Runs `event` on one child with its own helper and applies what it
    /// reported.
    fn with_child(
        &mut self,
        id: EndpointId,
        helper: &mut dyn Helper,
        event: impl FnOnce(&mut P, &mut dyn Helper),
    ) -> Option<ChildUpdate> {
        let child = self.children.get_mut(&id)?;
        let original = child.state;
        let mut child_helper = ChildHelper::new(helper, &mut self.timer_owner, id);
        event(&mut child.policy, &mut child_helper);
        let mut reported = false;
        if let Some((state, error, picker)) = child_helper.reported.take() {
            (child.state, child.error, child.picker, reported) = (state, error, picker, true);
        }
        // A child that went IDLE is told to exit idle; once is enough, since
        // pick_first leaves IDLE on exit_idle whenever it has addresses.
        if self.auto_exit_idle && reported && child.state == ConnectivityState::Idle {
            let mut child_helper = ChildHelper::new(helper, &mut self.timer_owner, id);
            child.policy.exit_idle(&mut child_helper);
            if let Some((state, error, picker)) = child_helper.reported.take() {
                (child.state, child.error, child.picker) = (state, error, picker);
            }
        }
        if !reported {
            return None;
        }
        self.counts[state_index(original)] -= 1;
        self.counts[state_index(child.state)] += 1;
        Some(ChildUpdate {
            child: id,
            old: original,
            new: child.state,
            error: child.error.clone(),
            picker: child.picker.clone(),
        })
    }
}

impl<P> fmt::Debug for ChildSet<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSet")
            .field("children", &self.children.len())
            .field("ready", &self.counts[state_index(ConnectivityState::Ready)])
            .field("auto_exit_idle", &self.auto_exit_idle)
            .finish()
    }
}

/// The helper a [`ChildSet`] gives each child: forwards to the parent's helper,
/// remembers which timers the child set, and keeps the state and picker the
/// child reports instead of passing them up.
pub struct ChildHelper<'a> {
    parent: &'a mut dyn Helper,
    timer_owner: &'a mut HashMap<TimerId, EndpointId>,
    child: EndpointId,
    reported: Option<Reported>,
}

/// What a child reported: its state, its error and its picker.
type Reported = (ConnectivityState, Option<SharedError>, Arc<dyn Picker>);

impl<'a> ChildHelper<'a> {
    fn new(
        parent: &'a mut dyn Helper,
        timer_owner: &'a mut HashMap<TimerId, EndpointId>,
        child: EndpointId,
    ) -> Self {
        ChildHelper {
            parent,
            timer_owner,
            child,
            reported: None,
        }
    }
}

impl fmt::Debug for ChildHelper<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildHelper")
            .field("child", &self.child)
            .field("reported", &self.reported.as_ref().map(|r| r.0))
            .finish()
    }
}

impl Helper for ChildHelper<'_> {
    fn connect(&mut self, subchannel: SubchannelId) {
        self.parent.connect(subchannel)
    }

    fn disconnect(&mut self, subchannel: SubchannelId) {
        self.parent.disconnect(subchannel)
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
        self.timer_owner.insert(timer, self.child);
        timer
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        if self.timer_owner.remove(&timer).is_some() {
            self.parent.cancel_timer(timer);
        }
    }

    fn resolve_now(&mut self) {
        self.parent.resolve_now()
    }

    fn endpoint_attributes(&self, endpoint: EndpointId) -> Option<super::EndpointAttributes> {
        self.parent.endpoint_attributes(endpoint)
    }
}
