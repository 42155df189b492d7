use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};
use grpc_lb_orca::OrcaLoadReport;
use tokio::time::Instant;

use super::picker::with_owned_outer_done;
use super::round_robin::{ReadyList, Sharded};
use super::wrr_scheduler::Scheduler;
use super::{
    DoneInfo, Endpoint, EndpointId, Helper, OnDone, PickInfo, PickResult, Picker, Policy,
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

/// One endpoint's weight, written by the done callbacks of its calls (in
/// atomics: calls end on any thread, while a picker may be rebuilt).
#[derive(Debug)]
struct Weight {
    penalty: f64,
    /// The instants below are nanoseconds since this one, plus one (0: none).
    base: Instant,
    weight: AtomicU64,
    /// When the weight first became non-zero since the last reset (A58's
    /// `non_empty_since`).
    non_empty_since: AtomicU64,
    last_updated: AtomicU64,
}

impl Weight {
    fn new(penalty: f64) -> Self {
        Weight {
            penalty,
            base: Instant::now(),
            weight: AtomicU64::new(0f64.to_bits()),
            non_empty_since: AtomicU64::new(0),
            last_updated: AtomicU64::new(0),
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_nanos() as u64 + 1
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        stamp
            .checked_sub(1)
            .map(|nanos| self.base + Duration::from_nanos(nanos))
    }

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
        let stamp = self.stamp(now);
        let _ =
            self.non_empty_since
                .compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Relaxed);
        self.weight.store(weight.to_bits(), Ordering::Relaxed);
        self.last_updated.store(stamp, Ordering::Release);
    }

    /// The weight that counts now: 0 if expired or in blackout.
    fn current(&self, now: Instant, config: &WrrConfig) -> f64 {
        let Some(updated) = self.instant(self.last_updated.load(Ordering::Acquire)) else {
            return 0.0;
        };
        if now.saturating_duration_since(updated) >= config.weight_expiration_period {
            // Expired: the next report starts a new blackout.
            self.non_empty_since.store(0, Ordering::Relaxed);
            return 0.0;
        }
        match self.instant(self.non_empty_since.load(Ordering::Relaxed)) {
            Some(since)
                if config.blackout_period.is_zero()
                    || now.saturating_duration_since(since) >= config.blackout_period =>
            {
                f64::from_bits(self.weight.load(Ordering::Relaxed))
            }
            _ => 0.0,
        }
    }

    fn reset_blackout(&self) {
        self.non_empty_since.store(0, Ordering::Relaxed);
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
/// passed and until it expires; a new picker with a new scheduler is
/// reported every `weightUpdatePeriod` and whenever the READY set changes
/// (that rebuild reads every READY endpoint's weight, as grpc-go's does; a pick
/// stays flat). While fewer than
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
    sharded: Sharded<Arc<Weight>>,
    members: HashMap<SubchannelId, EndpointId>,
    timer: Option<TimerId>,
}

/// weighted_round_robin's picker: the READY children with the scheduler
/// built from their weights.
#[derive(Debug)]
struct WrrPicker {
    ready: ReadyList<Arc<Weight>>,
    scheduler: Scheduler,
    /// Shared by every picker of the policy: a new scheduler goes on from
    /// the last one's sequence.
    sequence: Arc<AtomicU64>,
}

impl Picker for WrrPicker {
    fn pick(&self, info: &PickInfo<'_>) -> PickResult {
        let index = self.scheduler.next(&self.sequence);
        // The scheduler was built over exactly these children.
        let Some(child) = self.ready.get(index) else {
            return PickResult::Queue;
        };
        match child.picker.pick(info) {
            PickResult::Pick(pick) => {
                let weight: Arc<dyn OnDone> = child.extra.clone();
                PickResult::Pick(with_owned_outer_done(pick, weight))
            }
            other => other,
        }
    }
}

impl WeightedRoundRobin {
    /// A weighted_round_robin policy with a validated config.
    pub fn new(config: WrrConfig) -> Self {
        let weights_config = config.clone();
        let sequence = Arc::new(AtomicU64::new(rand::random::<u32>() as u64));
        WeightedRoundRobin {
            sharded: Sharded::new(Box::new(move |ready| {
                let now = Instant::now();
                let weights: Vec<f64> = ready
                    .iter()
                    .map(|child| child.extra.current(now, &weights_config))
                    .collect();
                Arc::new(WrrPicker {
                    ready: ready.clone(),
                    scheduler: Scheduler::new(&weights),
                    sequence: sequence.clone(),
                })
            })),
            config,
            members: HashMap::new(),
            timer: None,
        }
    }

    /// The weight an endpoint has now (0 while unknown, in blackout or expired).
    pub fn weight(&self, endpoint: EndpointId) -> Option<f64> {
        let weight = self.sharded.extras.get(&endpoint)?;
        Some(weight.current(Instant::now(), &self.config))
    }

    /// Feeds one ORCA report for an endpoint, as its calls' done callbacks do.
    pub fn record_report(&self, endpoint: EndpointId, report: &OrcaLoadReport) {
        if let Some(weight) = self.sharded.extras.get(&endpoint) {
            weight.update(report, Instant::now());
        }
    }

    fn arm_timer(&mut self, helper: &mut dyn Helper) {
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
            .finish()
    }
}

impl Policy for WeightedRoundRobin {
    fn name(&self) -> &str {
        "weighted_round_robin"
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        let weight = Arc::new(Weight::new(self.config.error_utilization_penalty));
        for id in endpoint.subchannels {
            self.members.insert(*id, endpoint.id);
        }
        self.sharded.add_endpoint(endpoint, weight, helper);
        self.arm_timer(helper);
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        self.members.retain(|_, owner| *owner != endpoint);
        self.sharded.remove_endpoint(endpoint, helper);
        self.arm_timer(helper);
    }

    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        if state.state == ConnectivityState::Ready {
            // A58: an endpoint back to READY starts a new blackout, before
            // the picker that schedules it is built.
            let endpoint = self.members.get(&id).copied();
            if let Some(weight) = endpoint.and_then(|e| self.sharded.extras.get(&e)) {
                weight.reset_blackout();
            }
        }
        self.sharded.subchannel_state(id, state, helper);
        self.arm_timer(helper);
    }

    fn resolver_error(&mut self, error: &SharedError, helper: &mut dyn Helper) {
        self.sharded.resolver_error(error, helper)
    }

    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        if self.timer == Some(timer) {
            self.timer = None;
            // weightUpdatePeriod: a new scheduler from the weights now.
            if !self.sharded.ready.is_empty() {
                self.sharded.report(true, false, helper);
            }
            self.arm_timer(helper);
            return;
        }
        self.sharded.timer_fired(timer, helper);
        self.arm_timer(helper);
    }

    fn exit_idle(&mut self, _helper: &mut dyn Helper) {}
}

#[cfg(test)]
#[path = "wrr_tests.rs"]
mod tests;
