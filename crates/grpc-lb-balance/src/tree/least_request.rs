use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grpc_lb_core::{Connectivity, SharedError};

use super::round_robin::Sharded;
use super::{
    DoneInfo, Endpoint, EndpointId, Helper, OnDone, Pick, PickInfo, PickResult, Policy,
    SubchannelId, TimerId,
};

/// least_request on the policy tree (gRFC A48): one pick_first child per
/// endpoint; each call goes to the child with the fewest calls in flight
/// among `choice_count` drawn at random from the READY ones.
///
/// A call counts as in flight from the moment it is sent until its
/// [`OnDone`] callback sees its final status: for an HTTP response, its
/// trailers or the end of its body, not its headers.
///
/// ```
/// use grpc_lb_balance::tree::{LeastRequest, Policy};
///
/// let policy = LeastRequest::new(2);
/// assert_eq!(policy.name(), "least_request_experimental");
/// assert_eq!(LeastRequest::new(50).choice_count(), 10); // A48 clamps to 2..=10
/// ```
pub struct LeastRequest {
    sharded: Sharded,
    choice_count: usize,
    in_flight: HashMap<EndpointId, Arc<InFlight>>,
    rng: u64,
}

/// Calls in flight on one endpoint.
#[derive(Debug, Default)]
struct InFlight(AtomicUsize);

impl OnDone for InFlight {
    fn on_start(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn on_done(&self, _info: &DoneInfo<'_>) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LeastRequest {
    /// A48's default `choice_count`.
    pub const DEFAULT_CHOICE_COUNT: usize = 2;

    /// `choice_count` is clamped to A48's range, 2 to 10.
    pub fn new(choice_count: usize) -> Self {
        LeastRequest {
            sharded: Sharded::new(),
            choice_count: choice_count.clamp(2, 10),
            in_flight: HashMap::new(),
            rng: rand::random::<u64>() | 1,
        }
    }

    /// The number of random candidates compared per pick.
    pub fn choice_count(&self) -> usize {
        self.choice_count
    }

    /// Calls in flight on an endpoint, as counted through the done callbacks.
    pub fn in_flight(&self, endpoint: EndpointId) -> Option<usize> {
        Some(self.in_flight.get(&endpoint)?.0.load(Ordering::Relaxed))
    }

    fn below(&mut self, n: usize) -> usize {
        // xorshift64: picks need spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ((self.rng as u128 * n as u128) >> 64) as usize
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
        self.in_flight.insert(endpoint.id, Arc::default());
        self.sharded.add_endpoint(endpoint, helper)
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        self.in_flight.remove(&endpoint);
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

    fn pick(&mut self, info: &PickInfo<'_>) -> PickResult {
        let n = self.sharded.ready.len();
        if n == 0 {
            return self.sharded.no_pick();
        }
        let load = |lr: &Self, child: EndpointId| {
            lr.in_flight
                .get(&child)
                .map_or(0, |c| c.0.load(Ordering::Relaxed))
        };
        let first = self.below(n);
        let mut best = self.sharded.ready[first];
        let mut best_load = load(self, best);
        for _ in 1..self.choice_count {
            let drawn = self.below(n);
            let candidate = self.sharded.ready[drawn];
            let candidate_load = load(self, candidate);
            if candidate_load < best_load {
                (best, best_load) = (candidate, candidate_load);
            }
        }
        match self.sharded.children.pick(best, info) {
            Some(PickResult::Pick(pick)) => match self.in_flight.get(&best) {
                Some(counter) => {
                    let counter: Arc<dyn OnDone> = counter.clone();
                    PickResult::Pick(Pick::with_done(pick.subchannel(), counter))
                }
                None => PickResult::Pick(pick),
            },
            Some(other) => other,
            None => PickResult::Queue,
        }
    }
}
