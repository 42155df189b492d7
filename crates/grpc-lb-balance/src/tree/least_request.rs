use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grpc_lb_core::{Connectivity, SharedError};

use super::picker::{random_below, with_outer_done};
use super::round_robin::{ReadyList, Sharded};
use super::{
    DoneInfo, Endpoint, EndpointId, Helper, OnDone, PickInfo, PickResult, Picker, Policy,
    SubchannelId, TimerId,
};

/// least_request on the policy tree (gRFC A48): one pick_first child per
/// endpoint; each call goes to the child with the fewest calls in flight
/// among `choice_count` drawn at random from the READY ones.
///
/// A call counts as in flight from the moment it is sent until its
/// [`OnDone`] callback sees its final status: for an HTTP response, its
/// trailers or the end of its body, not its headers. The counters are atomics
/// shared by the policy and every picker it built, so that calls started
/// from an older picker still count; a pick reads `choice_count` of them.
///
/// ```
/// use grpc_lb_balance::tree::{LeastRequest, Policy};
///
/// let policy = LeastRequest::new(2);
/// assert_eq!(policy.name(), "least_request_experimental");
/// assert_eq!(LeastRequest::new(50).choice_count(), 10); // A48 clamps to 2..=10
/// ```
pub struct LeastRequest {
    sharded: Sharded<Arc<InFlight>>,
    choice_count: usize,
}

/// Calls in flight on one endpoint.
#[derive(Debug, Default)]
pub(crate) struct InFlight(AtomicUsize);

impl OnDone for InFlight {
    fn on_start(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn on_done(&self, _info: &DoneInfo<'_>) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// least_request's picker: the READY children with their counters.
#[derive(Debug)]
struct LeastRequestPicker {
    ready: ReadyList<Arc<InFlight>>,
    choice_count: usize,
}

impl Picker for LeastRequestPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult {
        let n = self.ready.len();
        let candidate = |_| self.ready.get(random_below(n));
        let Some(mut best) = candidate(0) else {
            return PickResult::Queue;
        };
        let mut best_load = best.extra.0.load(Ordering::Relaxed);
        for drawn in (1..self.choice_count).filter_map(candidate) {
            let load = drawn.extra.0.load(Ordering::Relaxed);
            if load < best_load {
                (best, best_load) = (drawn, load);
            }
        }
        match best.picker.pick(info) {
            PickResult::Pick(pick) => {
                let counter: Arc<dyn OnDone> = best.extra.clone();
                PickResult::Pick(with_outer_done(pick, &counter))
            }
            other => other,
        }
    }
}

impl LeastRequest {
    /// A48's default `choice_count`.
    pub const DEFAULT_CHOICE_COUNT: usize = 2;

    /// `choice_count` is clamped to A48's range, 2 to 10.
    pub fn new(choice_count: usize) -> Self {
        let choice_count = choice_count.clamp(2, 10);
        LeastRequest {
            sharded: Sharded::new(Box::new(move |ready| {
                Arc::new(LeastRequestPicker {
                    ready: ready.clone(),
                    choice_count,
                })
            })),
            choice_count,
        }
    }

    /// The number of random candidates compared per pick.
    pub fn choice_count(&self) -> usize {
        self.choice_count
    }

    /// Calls in flight on an endpoint, as counted through the done callbacks.
    pub fn in_flight(&self, endpoint: EndpointId) -> Option<usize> {
        Some(
            self.sharded
                .extras
                .get(&endpoint)?
                .0
                .load(Ordering::Relaxed),
        )
    }
}

impl Default for LeastRequest {
    fn default() -> Self {
        LeastRequest::new(Self::DEFAULT_CHOICE_COUNT)
    }
}

impl fmt::Debug for LeastRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeastRequest")
            .field("children", &self.sharded.children)
            .field("choice_count", &self.choice_count)
            .finish()
    }
}

impl Policy for LeastRequest {
    fn name(&self) -> &str {
        "least_request_experimental"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        self.sharded.add_endpoint(endpoint, Arc::default(), helper)
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

    fn exit_idle(&mut self, _helper: &mut dyn Helper) {}
}
