use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::cow::SubchannelMap;
use super::picker::with_outer_done;
use super::{
    DoneInfo, Endpoint, EndpointId, Helper, OnDone, PickInfo, PickResult, Picker, Policy,
    SubchannelId, TimerId, WrappingHelper,
};
use crate::outlier::{CallCounter, OutlierDetectionConfig, OutlierDetector};

/// Outlier detection (gRFC A50) as a policy that wraps another: it counts
/// every call's final status per endpoint through the picks' done callbacks,
/// runs A50's algorithms every `interval` on a timer, and shows an ejected
/// endpoint's subchannels to its child as TRANSIENT_FAILURE, so that the child
/// stops picking them; when the ejection ends the child sees their real state
/// again. Its picker wraps the child's: each pick gets the picked endpoint's
/// counter as its done callback (beside the child's own), found through a
/// copy-on-write map from subchannel to counter that the pickers share. The
/// counting and the ejection bookkeeping are [`OutlierDetector`]'s.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_balance::outlier::{FailurePercentage, OutlierDetectionConfig};
/// use grpc_lb_balance::tree::{OutlierDetection, Policy, RoundRobin};
///
/// let config = OutlierDetectionConfig {
///     interval: Duration::from_secs(1),
///     failure_percentage: Some(FailurePercentage::default()),
///     ..Default::default()
/// };
/// let policy = OutlierDetection::new(RoundRobin::new(), config);
/// assert_eq!(policy.name(), "outlier_detection_experimental");
/// ```
pub struct OutlierDetection<P> {
    child: P,
    detector: OutlierDetector<EndpointId>,
    counters: HashMap<EndpointId, Arc<Counting>>,
    /// Each subchannel's endpoint counter, shared with the pickers.
    by_subchannel: Arc<SubchannelMap<Arc<dyn OnDone>>>,
    subchannels: HashMap<SubchannelId, Member>,
    members: HashMap<EndpointId, Box<[SubchannelId]>>,
    ejected: HashSet<EndpointId>,
    timer: Option<TimerId>,
}

struct Member {
    endpoint: EndpointId,
    real: Connectivity,
}

/// Counts one endpoint's calls by their final status.
#[derive(Debug)]
struct Counting {
    counter: Arc<CallCounter>,
}

impl OnDone for Counting {
    fn on_done(&self, info: &DoneInfo<'_>) {
        self.counter.record(info.is_ok());
    }
}

/// The child's picker, with each pick counted for its endpoint.
#[derive(Debug)]
struct OutlierPicker {
    child: Arc<dyn Picker>,
    counters: Arc<SubchannelMap<Arc<dyn OnDone>>>,
}

impl Picker for OutlierPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult {
        match self.child.pick(info) {
            PickResult::Pick(pick) => match self.counters.get(pick.subchannel()) {
                Some(counter) => PickResult::Pick(with_outer_done(pick, counter)),
                None => PickResult::Pick(pick),
            },
            other => other,
        }
    }
}

/// The helper the child acts through: its pickers are wrapped.
fn wrapping<'a>(
    counters: &'a Arc<SubchannelMap<Arc<dyn OnDone>>>,
    helper: &'a mut dyn Helper,
) -> WrappingHelper<'a, impl FnMut(ConnectivityState, Arc<dyn Picker>) -> Arc<dyn Picker> + 'a> {
    WrappingHelper::new(helper, move |_, child| {
        Arc::new(OutlierPicker {
            child,
            counters: counters.clone(),
        }) as Arc<dyn Picker>
    })
}

impl<P: Policy> OutlierDetection<P> {
    /// Wraps `child` with A50's detection configured by `config`.
    pub fn new(child: P, config: OutlierDetectionConfig) -> Self {
        OutlierDetection {
            child,
            detector: OutlierDetector::new(config),
            counters: HashMap::new(),
            by_subchannel: Arc::default(),
            subchannels: HashMap::new(),
            members: HashMap::new(),
            ejected: HashSet::new(),
            timer: None,
        }
    }

    /// The endpoints ejected now.
    pub fn ejected(&self) -> impl Iterator<Item = EndpointId> + '_ {
        self.ejected.iter().copied()
    }

    /// The wrapped policy.
    pub fn child(&self) -> &P {
        &self.child
    }

    fn what_child_sees(&self, member: &Member) -> Connectivity {
        if self.ejected.contains(&member.endpoint) {
            Connectivity {
                state: ConnectivityState::TransientFailure,
                last_error: Some(Arc::new(Ejected)),
            }
        } else {
            member.real.clone()
        }
    }

    fn evaluate(&mut self, helper: &mut dyn Helper) {
        let now = tokio::time::Instant::now().into_std();
        self.detector.evaluate(now, &mut rand::random::<f64>);
        let now_ejected: HashSet<EndpointId> = self.detector.ejected().copied().collect();
        let changed: Vec<EndpointId> = now_ejected
            .symmetric_difference(&self.ejected)
            .copied()
            .collect();
        self.ejected = now_ejected;
        for endpoint in changed {
            tracing::info!(
                endpoint = endpoint.raw(),
                ejected = self.ejected.contains(&endpoint),
                "outlier detection"
            );
            let members = self.members.get(&endpoint).cloned().unwrap_or_default();
            for &id in members.iter() {
                let seen = self.what_child_sees(&self.subchannels[&id]);
                let mut helper = wrapping(&self.by_subchannel, helper);
                self.child.subchannel_state(id, &seen, &mut helper);
            }
        }
    }
}

impl<P> fmt::Debug for OutlierDetection<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierDetection")
            .field("endpoints", &self.counters.len())
            .field("ejected", &self.ejected.len())
            .finish()
    }
}

impl<P: Policy> Policy for OutlierDetection<P> {
    fn name(&self) -> &str {
        "outlier_detection_experimental"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        let counter = self.detector.add(endpoint.id);
        let counting = Arc::new(Counting { counter });
        self.counters.insert(endpoint.id, counting.clone());
        let by_subchannel = Arc::make_mut(&mut self.by_subchannel);
        for id in endpoint.subchannels {
            by_subchannel.insert(*id, counting.clone());
        }
        for id in endpoint.subchannels {
            self.subchannels.insert(
                *id,
                Member {
                    endpoint: endpoint.id,
                    real: Connectivity::new(ConnectivityState::Idle),
                },
            );
        }
        self.members
            .insert(endpoint.id, endpoint.subchannels.into());
        if self.timer.is_none() {
            self.timer = Some(helper.set_timer(self.detector.config().interval));
        }
        let mut helper = wrapping(&self.by_subchannel, helper);
        self.child.add_endpoint(endpoint, &mut helper);
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        self.detector.remove(&endpoint);
        self.counters.remove(&endpoint);
        self.ejected.remove(&endpoint);
        let members = self.members.remove(&endpoint).unwrap_or_default();
        let by_subchannel = Arc::make_mut(&mut self.by_subchannel);
        for id in members.iter() {
            self.subchannels.remove(id);
            by_subchannel.remove(*id);
        }
        let mut helper = wrapping(&self.by_subchannel, helper);
        self.child.remove_endpoint(endpoint, &mut helper);
    }

    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        let Some(member) = self.subchannels.get_mut(&id) else {
            return;
        };
        member.real = state.clone();
        let seen = self.what_child_sees(&self.subchannels[&id]);
        let mut helper = wrapping(&self.by_subchannel, helper);
        self.child.subchannel_state(id, &seen, &mut helper);
    }

    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        let mut helper = wrapping(&self.by_subchannel, helper);
        self.child.resolver_error(error, &mut helper)
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        if self.timer == Some(timer) {
            self.evaluate(helper);
            self.timer = Some(helper.set_timer(self.detector.config().interval));
        } else {
            let mut helper = wrapping(&self.by_subchannel, helper);
            self.child.timer_fired(timer, &mut helper);
        }
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        let mut helper = wrapping(&self.by_subchannel, helper);
        self.child.exit_idle(&mut helper)
    }

    fn uses_pick_info(&self) -> bool {
        self.child.uses_pick_info()
    }

    fn pick_queued(&mut self, helper: &mut dyn Helper) {
        let mut helper = wrapping(&self.by_subchannel, helper);
        self.child.pick_queued(&mut helper)
    }
}

/// The endpoint is ejected by outlier detection.
#[derive(Debug)]
struct Ejected;

impl fmt::Display for Ejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("ejected by outlier detection")
    }
}

impl std::error::Error for Ejected {}
