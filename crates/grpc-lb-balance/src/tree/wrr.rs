use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};
use grpc_lb_orca::OrcaLoadReport;
use tokio::time::Instant;

use super::round_robin::Sharded;
use super::wrr_scheduler::Scheduler;
use super::{
    DoneInfo, Endpoint, EndpointId, Helper, OnDone, Pick, PickInfo, PickResult, Policy,
    SubchannelId, TimerId,
};

/// weighted_round_robin's config (gRFC A58; defaults from grpc-go
/// `balancer/weightedroundrobin/config.go`).
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_balance::tree::{WrrConfig, WrrConfigError};
///
/// let config = WrrConfig::default();
/// assert_eq!(config.blackout_period, Duration::from_secs(10));
/// assert_eq!(config.weight_expiration_period, Duration::from_secs(180));
/// // weightUpdatePeriod is raised to its 100 ms minimum.
/// let fast = WrrConfig { weight_update_period: Duration::from_millis(1), ..config.clone() };
/// assert_eq!(fast.validate().unwrap().weight_update_period, Duration::from_millis(100));
/// let bad = WrrConfig { error_utilization_penalty: -1.0, ..config };
/// assert!(matches!(bad.validate(), Err(WrrConfigError::NegativePenalty(_))));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct WrrConfig {
    /// `enableOobLoadReport` (default false): weights from the out-of-band
    /// stream instead of per-call trailers. Not supported yet.
    pub enable_oob_load_report: bool,
    /// `oobReportingPeriod` (default 10 s).
    pub oob_reporting_period: Duration,
    /// `blackoutPeriod` (default 10 s): a weight counts only this long after
    /// an endpoint's first report (or its return to READY).
    pub blackout_period: Duration,
    /// `weightExpirationPeriod` (default 3 min): a weight not refreshed this
    /// long counts as unknown.
    pub weight_expiration_period: Duration,
    /// `weightUpdatePeriod` (default 1 s, at least 100 ms): how often the
    /// scheduler is rebuilt from the weights.
    pub weight_update_period: Duration,
    /// `errorUtilizationPenalty` (default 1.0, at least 0).
    pub error_utilization_penalty: f64,
}

impl WrrConfig {
    /// The minimum `weightUpdatePeriod`.
    pub const MIN_WEIGHT_UPDATE_PERIOD: Duration = Duration::from_millis(100);

    /// Checks the config; raises `weightUpdatePeriod` to its minimum.
    pub fn validate(mut self) -> Result<Self, WrrConfigError> {
        if self.error_utilization_penalty.is_nan() || self.error_utilization_penalty < 0.0 {
            return Err(WrrConfigError::NegativePenalty(
                self.error_utilization_penalty,
            ));
        }
        if self.enable_oob_load_report {
            return Err(WrrConfigError::OobNotSupported);
        }
        self.weight_update_period = self
            .weight_update_period
            .max(Self::MIN_WEIGHT_UPDATE_PERIOD);
        Ok(self)
    }
}

impl Default for WrrConfig {
    fn default() -> Self {
        WrrConfig {
            enable_oob_load_report: false,
            oob_reporting_period: Duration::from_secs(10),
            blackout_period: Duration::from_secs(10),
            weight_expiration_period: Duration::from_secs(180),
            weight_update_period: Duration::from_secs(1),
            error_utilization_penalty: 1.0,
        }
    }
}

/// A [`WrrConfig`] that cannot be used.
///
/// ```
/// use grpc_lb_balance::tree::{WrrConfig, WrrConfigError};
///
/// let error = WrrConfig { enable_oob_load_report: true, ..Default::default() }.validate();
/// assert_eq!(error, Err(WrrConfigError::OobNotSupported));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WrrConfigError {
    /// `errorUtilizationPenalty` is negative (or NaN).
    NegativePenalty(f64),
    /// `enableOobLoadReport` is set; out-of-band reports are not wired here yet.
    OobNotSupported,
}

impl fmt::Display for WrrConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WrrConfigError::NegativePenalty(p) => {
                write!(
                    f,
                    "weighted_round_robin errorUtilizationPenalty {p} is negative"
                )
            }
            WrrConfigError::OobNotSupported => {
                f.pad("weighted_round_robin enableOobLoadReport is not supported yet")
            }
        }
    }
}

impl std::error::Error for WrrConfigError {}

/// One endpoint's weight, written by the done callbacks of its calls.
#[derive(Debug)]
struct Weight {
    penalty: f64,
    state: Mutex<WeightState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct WeightState {
    weight: f64,
    /// When the weight first became non-zero since the last reset; `None` while
    /// no report counts (A58's `non_empty_since`).
    non_empty_since: Option<Instant>,
    last_updated: Option<Instant>,
}

impl Weight {
    fn update(&self, report: &OrcaLoadReport, now: Instant) {
        let utilization = if report.application_utilization > 0.0 {
            report.application_utilization
        } else {
            report.cpu_utilization
        };
        let qps = report.rps_fractional;
        if utilization <= 0.0 || qps <= 0.0 {
            return;
        }
        let penalty = if report.eps > 0.0 {
            report.eps / qps * self.penalty
        } else {
            0.0
        };
        let weight = qps / (utilization + penalty);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.non_empty_since.get_or_insert(now);
        state.last_updated = Some(now);
        state.weight = weight;
    }

    /// The weight that counts now: 0 if expired or in blackout.
    fn current(&self, now: Instant, config: &WrrConfig) -> f64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(updated) = state.last_updated else {
            return 0.0;
        };
        if now.saturating_duration_since(updated) >= config.weight_expiration_period {
            // Expired: the next report starts a new blackout.
            state.non_empty_since = None;
            return 0.0;
        }
        match state.non_empty_since {
            Some(since)
                if config.blackout_period.is_zero()
                    || now.saturating_duration_since(since) >= config.blackout_period =>
            {
                state.weight
            }
            _ => 0.0,
        }
    }

    fn reset_blackout(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.non_empty_since = None;
    }
}

impl OnDone for Weight {
    fn on_done(&self, info: &DoneInfo<'_>) {
        let Some(trailers) = info.trailers else {
            return;
        };
        match OrcaLoadReport::from_trailers(trailers) {
            Ok(Some(report)) => self.update(&report, Instant::now()),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "ignoring a malformed ORCA report"),
        }
    }
}

/// weighted_round_robin on the policy tree (gRFC A58; grpc-go
/// `balancer/weightedroundrobin`).
///
/// One pick_first child per endpoint, as round_robin; the READY ones are
/// picked by grpc-go's static stride scheduler in proportion to their
/// weights, `qps / (utilization + eps/qps × errorUtilizationPenalty)`, read
/// from the ORCA report in each call's `endpoint-load-metrics-bin` trailer
/// (through the pick's [`OnDone`]). A weight counts once its blackout has
/// passed and until it expires; the scheduler is rebuilt every
/// `weightUpdatePeriod` and whenever the READY set changes. While fewer than
/// two READY endpoints have weights it is plain round robin, and an unknown
/// weight counts as the mean of the known ones.
///
/// ```
/// use grpc_lb_balance::tree::{Policy, WeightedRoundRobin, WrrConfig};
///
/// let policy = WeightedRoundRobin::new(WrrConfig::default().validate().unwrap());
/// assert_eq!(policy.name(), "weighted_round_robin");
/// ```
pub struct WeightedRoundRobin {
    config: WrrConfig,
    sharded: Sharded,
    weights: HashMap<EndpointId, Arc<Weight>>,
    members: HashMap<SubchannelId, EndpointId>,
    /// The READY endpoints the scheduler was built over, in its order.
    scheduled: Vec<EndpointId>,
    scheduler: Scheduler,
    sequence: u64,
    stale: bool,
    timer: Option<TimerId>,
}

impl WeightedRoundRobin {
    /// A weighted_round_robin policy with a validated config.
    pub fn new(config: WrrConfig) -> Self {
        WeightedRoundRobin {
            config,
            sharded: Sharded::new(),
            weights: HashMap::new(),
            members: HashMap::new(),
            scheduled: Vec::new(),
            scheduler: Scheduler::RoundRobin { n: 0 },
            sequence: rand::random::<u32>() as u64,
            stale: true,
            timer: None,
        }
    }

    /// The weight an endpoint has now (0 while unknown, in blackout or expired).
    pub fn weight(&self, endpoint: EndpointId) -> Option<f64> {
        let weight = self.weights.get(&endpoint)?;
        Some(weight.current(Instant::now(), &self.config))
    }

    /// Feeds one ORCA report for an endpoint, as its calls' done callbacks do.
    pub fn record_report(&self, endpoint: EndpointId, report: &OrcaLoadReport) {
        if let Some(weight) = self.weights.get(&endpoint) {
            weight.update(report, Instant::now());
        }
    }

    fn rebuild(&mut self) {
        self.stale = false;
        let now = Instant::now();
        self.scheduled.clear();
        self.scheduled.extend_from_slice(&self.sharded.ready);
        let weights: Vec<f64> = self
            .scheduled
            .iter()
            .map(|id| {
                self.weights
                    .get(id)
                    .map_or(0.0, |w| w.current(now, &self.config))
            })
            .collect();
        self.scheduler = Scheduler::new(&weights);
    }

    fn after_event(&mut self, ready_before: usize, helper: &mut dyn Helper) {
        // One event moves at most one child in or out of the READY list.
        if self.sharded.ready.len() != ready_before {
            self.stale = true;
        }
        if self.timer.is_none() && !self.sharded.children.is_empty() {
            self.timer = Some(helper.set_timer(self.config.weight_update_period));
        }
    }
}

impl fmt::Debug for WeightedRoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedRoundRobin")
            .field("config", &self.config)
            .field("children", &self.sharded.children)
            .field("scheduler", &self.scheduler)
            .finish()
    }
}

impl Policy for WeightedRoundRobin {
    fn name(&self) -> &str {
        "weighted_round_robin"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        let before = self.sharded.ready.len();
        self.weights.insert(
            endpoint.id,
            Arc::new(Weight {
                penalty: self.config.error_utilization_penalty,
                state: Mutex::default(),
            }),
        );
        for id in endpoint.subchannels {
            self.members.insert(*id, endpoint.id);
        }
        self.sharded.add_endpoint(endpoint, helper);
        self.after_event(before, helper);
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        let before = self.sharded.ready.len();
        self.weights.remove(&endpoint);
        self.members.retain(|_, owner| *owner != endpoint);
        self.sharded.remove_endpoint(endpoint, helper);
        self.stale = true;
        self.after_event(before, helper);
    }

    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        let ready_before = self.sharded.ready.len();
        self.sharded.subchannel_state(id, state, helper);
        if state.state == ConnectivityState::Ready {
            // A58: an endpoint back to READY starts a new blackout.
            let endpoint = self.members.get(&id).copied();
            if let Some(weight) = endpoint.and_then(|e| self.weights.get(&e)) {
                weight.reset_blackout();
            }
        }
        self.after_event(ready_before, helper);
    }

    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        self.sharded.resolver_error(error, helper)
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        if self.timer == Some(timer) {
            self.timer = None;
            self.stale = true;
            if !self.sharded.children.is_empty() {
                self.timer = Some(helper.set_timer(self.config.weight_update_period));
            }
            return;
        }
        let before = self.sharded.ready.len();
        self.sharded.timer_fired(timer, helper);
        self.after_event(before, helper);
    }

    fn exit_idle(&mut self, _helper: &mut dyn Helper) {}

    fn pick(&mut self, info: &PickInfo<'_>) -> PickResult {
        if self.stale {
            self.rebuild();
        }
        if self.scheduled.is_empty() {
            return self.sharded.no_pick();
        }
        let index = self.scheduler.next(&mut self.sequence);
        let child = self.scheduled[index % self.scheduled.len()];
        match self.sharded.children.pick(child, info) {
            Some(PickResult::Pick(pick)) => match self.weights.get(&child) {
                Some(weight) => {
                    let weight: Arc<dyn OnDone> = weight.clone();
                    PickResult::Pick(Pick::with_done(pick.subchannel(), weight))
                }
                None => PickResult::Pick(pick),
            },
            Some(other) => other,
            None => PickResult::Queue,
        }
    }
}

#[cfg(test)]
#[path = "wrr_tests.rs"]
mod tests;
