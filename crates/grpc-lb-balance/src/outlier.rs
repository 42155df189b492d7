//! Outlier detection (gRFC A50): endpoints whose calls fail much more often
//! than their peers' are ejected for a while, and an ejected endpoint is
//! simply not ready.
//!
//! Calls are counted per endpoint in a [`CallCounter`] (two atomics, no
//! lock on the call path). Every [`interval`](OutlierDetectionConfig::interval),
//! [`OutlierDetector::evaluate`] takes the counts of the interval that ended
//! and runs A50's two algorithms:
//!
//! - **success rate**: among endpoints with at least `request_volume` calls
//!   (and only when there are `minimum_hosts` of them), eject those whose
//!   success rate is below `mean − stdev × stdev_factor / 1000`;
//! - **failure percentage**: eject those whose failure percentage is above
//!   `threshold`.
//!
//! Each ejection is enforced with probability `enforcement_percentage`, and
//! none happens once `max_ejection_percent` of the endpoints are ejected. An
//! ejection lasts `min(base_ejection_time × n, max(base_ejection_time,
//! max_ejection_time))`, where `n` grows by one with each ejection and shrinks
//! by one with each interval spent not ejected.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use grpc_lb_balance::outlier::{OutlierDetectionConfig, OutlierDetector, FailurePercentage};
//!
//! let config = OutlierDetectionConfig {
//!     failure_percentage: Some(FailurePercentage { minimum_hosts: 3, ..Default::default() }),
//!     max_ejection_percent: 50,
//!     ..Default::default()
//! };
//! let mut detector = OutlierDetector::new(config);
//! let counters: Vec<_> = ["a", "b", "c"].iter().map(|name| detector.add(*name)).collect();
//! for _ in 0..100 {
//!     counters[0].record(false);
//!     counters[1].record(true);
//!     counters[2].record(true);
//! }
//! let now = Instant::now();
//! detector.evaluate(now, &mut || 0.0);
//! assert!(detector.is_ejected(&"a"));
//! assert!(!detector.is_ejected(&"b"));
//! // Back after the base ejection time (30 s by default).
//! detector.evaluate(now + Duration::from_secs(30), &mut || 0.0);
//! assert!(!detector.is_ejected(&"a"));
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A50's settings, with its defaults (grpc-go's `outlierdetection` package
/// agrees on all but one, noted on [`FailurePercentage`]).
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_balance::outlier::{OutlierDetectionConfig, SuccessRate};
///
/// let defaults = OutlierDetectionConfig::default();
/// assert_eq!(defaults.interval, Duration::from_secs(10));
/// assert_eq!(defaults.base_ejection_time, Duration::from_secs(30));
/// assert_eq!(defaults.max_ejection_percent, 10);
/// assert!(defaults.success_rate.is_none() && defaults.failure_percentage.is_none());
///
/// // Neither algorithm runs until it is switched on.
/// let config = OutlierDetectionConfig {
///     interval: Duration::from_secs(1),
///     success_rate: Some(SuccessRate::default()),
///     ..Default::default()
/// };
/// # drop(config);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetectionConfig {
    /// How often the algorithms run; default 10 s.
    pub interval: Duration,
    /// How long a first ejection lasts; default 30 s.
    pub base_ejection_time: Duration,
    /// The longest an ejection lasts, unless the base is longer; default 300 s.
    pub max_ejection_time: Duration,
    /// The most endpoints, in percent, that may be ejected at once; default 10.
    pub max_ejection_percent: u32,
    /// The success-rate algorithm, if enabled.
    pub success_rate: Option<SuccessRate>,
    /// The failure-percentage algorithm, if enabled.
    pub failure_percentage: Option<FailurePercentage>,
}

impl Default for OutlierDetectionConfig {
    fn default() -> Self {
        OutlierDetectionConfig {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate: None,
            failure_percentage: None,
        }
    }
}

/// A50's success-rate ejection.
///
/// ```
/// use std::time::Instant;
/// use grpc_lb_balance::outlier::{OutlierDetectionConfig, OutlierDetector, SuccessRate};
///
/// let config = OutlierDetectionConfig {
///     success_rate: Some(SuccessRate::default()), // 1.9 standard deviations, 100 calls, 5 hosts
///     max_ejection_percent: 50,
///     ..Default::default()
/// };
/// let mut detector = OutlierDetector::new(config);
/// let counters: Vec<_> = (0..5).map(|i| detector.add(i)).collect();
/// for call in 0..100 {
///     counters[0].record(call % 2 == 0); // half its calls fail
///     for healthy in &counters[1..] {
///         healthy.record(true);
///     }
/// }
/// // Mean 0.9, standard deviation 0.2: below 0.9 − 1.9 × 0.2 = 0.52 is an outlier.
/// detector.evaluate(Instant::now(), &mut || 0.0);
/// assert_eq!(detector.ejected().collect::<Vec<_>>(), [&0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessRate {
    /// Thousandths of a standard deviation below the mean; default 1900.
    pub stdev_factor: u32,
    /// The chance, in percent, that an outlier is really ejected; default 100.
    pub enforcement_percentage: u32,
    /// Endpoints with enough calls needed before any is judged; default 5.
    pub minimum_hosts: u32,
    /// Calls an endpoint needs in an interval to be judged; default 100.
    pub request_volume: u32,
}

impl Default for SuccessRate {
    fn default() -> Self {
        SuccessRate {
            stdev_factor: 1900,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

/// A50's failure-percentage ejection.
///
/// `enforcement_percentage` defaults to 100 as A50 says; grpc-go's JSON
/// parser defaults it to 0, which would make the algorithm do nothing unless
/// set. We follow the gRFC: enabling the algorithm should enable it.
///
/// ```
/// use std::time::Instant;
/// use grpc_lb_balance::outlier::{FailurePercentage, OutlierDetectionConfig, OutlierDetector};
///
/// let config = OutlierDetectionConfig {
///     failure_percentage: Some(FailurePercentage { threshold: 50, minimum_hosts: 2, ..Default::default() }),
///     max_ejection_percent: 50,
///     ..Default::default()
/// };
/// let mut detector = OutlierDetector::new(config);
/// let (a, b) = (detector.add("a"), detector.add("b"));
/// for call in 0..50 {
///     a.record(call % 4 == 0); // 75 % of its calls fail: above the 50 % threshold
///     b.record(call % 4 != 0); // 25 % fail
/// }
/// detector.evaluate(Instant::now(), &mut || 0.0);
/// assert!(detector.is_ejected(&"a") && !detector.is_ejected(&"b"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FailurePercentage {
    /// Failure percentage above which an endpoint is ejected; default 85.
    pub threshold: u32,
    /// The chance, in percent, that an outlier is really ejected; default 100.
    pub enforcement_percentage: u32,
    /// Endpoints with enough calls needed before any is judged; default 5.
    pub minimum_hosts: u32,
    /// Calls an endpoint needs in an interval to be judged; default 50.
    pub request_volume: u32,
}

impl Default for FailurePercentage {
    fn default() -> Self {
        FailurePercentage {
            threshold: 85,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 50,
        }
    }
}

/// Calls counted for one endpoint in the current interval.
///
/// Shared between the call path, which records outcomes without a lock, and
/// the [`OutlierDetector`] that reads and resets it once per interval.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::outlier::{OutlierDetectionConfig, OutlierDetector};
///
/// let mut detector = OutlierDetector::new(OutlierDetectionConfig::default());
/// let counter = detector.add("10.0.0.1:50051");
///
/// // Any number of callers record into the same counter at once.
/// let workers: Vec<_> = (0..4)
///     .map(|_| {
///         let counter = Arc::clone(&counter);
///         std::thread::spawn(move || (0..1000).for_each(|_| counter.record(true)))
///     })
///     .collect();
/// workers.into_iter().for_each(|w| w.join().unwrap());
/// ```
#[derive(Debug, Default)]
pub struct CallCounter {
    successes: AtomicU64,
    failures: AtomicU64,
}

impl CallCounter {
    /// Counts one finished call.
    pub fn record(&self, success: bool) {
        let counter = if success {
            &self.successes
        } else {
            &self.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts so far, starting a new interval.
    fn take(&self) -> (u64, u64) {
        (
            self.successes.swap(0, Ordering::Relaxed),
            self.failures.swap(0, Ordering::Relaxed),
        )
    }
}

#[derive(Debug)]
struct Tracked {
    counter: Arc<CallCounter>,
    ejected_at: Option<Instant>,
    multiplier: u32,
    successes: u64,
    failures: u64,
}

impl Tracked {
    fn volume(&self) -> u64 {
        self.successes + self.failures
    }

    fn success_rate(&self) -> f64 {
        self.successes as f64 / self.volume() as f64
    }
}

/// A50's ejection bookkeeping over endpoints keyed by `K` (an address).
///
/// ```
/// use std::time::{Duration, Instant};
/// use grpc_lb_balance::outlier::{FailurePercentage, OutlierDetectionConfig, OutlierDetector};
///
/// let config = OutlierDetectionConfig {
///     failure_percentage: Some(FailurePercentage { minimum_hosts: 2, ..Default::default() }),
///     max_ejection_percent: 50,
///     ..Default::default()
/// };
/// let mut detector = OutlierDetector::new(config);
/// let (bad, good) = (detector.add("bad"), detector.add("good"));
/// let start = Instant::now();
/// let mut eject_bad = || {
///     (0..50).for_each(|_| {
///         bad.record(false);
///         good.record(true);
///     })
/// };
///
/// eject_bad();
/// assert!(detector.evaluate(start, &mut || 0.0));
/// assert!(detector.is_ejected(&"bad"));
/// assert!(detector.evaluate(start + Duration::from_secs(30), &mut || 0.0)); // back after 30 s
///
/// // Ejected again at once: the second ejection lasts twice as long.
/// eject_bad();
/// detector.evaluate(start + Duration::from_secs(30), &mut || 0.0);
/// detector.evaluate(start + Duration::from_secs(60), &mut || 0.0);
/// assert!(detector.is_ejected(&"bad"));
/// detector.evaluate(start + Duration::from_secs(90), &mut || 0.0);
/// assert!(!detector.is_ejected(&"bad"));
///
/// detector.remove(&"bad"); // the resolver dropped it
/// assert_eq!(detector.ejected().count(), 0);
/// ```
#[derive(Debug)]
pub struct OutlierDetector<K> {
    config: OutlierDetectionConfig,
    endpoints: HashMap<K, Tracked>,
    /// How many of `endpoints` are ejected, kept so that the cap is checked
    /// without a pass over every endpoint per candidate.
    ejected_count: usize,
}

impl<K: Hash + Eq + Clone> OutlierDetector<K> {
    /// A detector with no endpoints.
    pub fn new(config: OutlierDetectionConfig) -> Self {
        OutlierDetector {
            config,
            endpoints: HashMap::new(),
            ejected_count: 0,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &OutlierDetectionConfig {
        &self.config
    }

    /// Tracks `key`, returning the counter its calls are recorded in. An
    /// endpoint already tracked keeps its counts and ejection state, as A50
    /// asks for an address that stays across resolver updates.
    pub fn add(&mut self, key: K) -> Arc<CallCounter> {
        self.endpoints
            .entry(key)
            .or_insert_with(|| Tracked {
                counter: Arc::default(),
                ejected_at: None,
                multiplier: 0,
                successes: 0,
                failures: 0,
            })
            .counter
            .clone()
    }

    /// Stops tracking `key`.
    pub fn remove(&mut self, key: &K) {
        if let Some(tracked) = self.endpoints.remove(key) {
            if tracked.ejected_at.is_some() {
                self.ejected_count -= 1;
            }
        }
    }

    /// Whether `key` is ejected now.
    pub fn is_ejected(&self, key: &K) -> bool {
        self.endpoints
            .get(key)
            .is_some_and(|tracked| tracked.ejected_at.is_some())
    }

    /// The endpoints ejected now.
    pub fn ejected(&self) -> impl Iterator<Item = &K> {
        self.endpoints
            .iter()
            .filter(|(_, tracked)| tracked.ejected_at.is_some())
            .map(|(key, _)| key)
    }

    /// Ends an interval at `now`: judges the calls counted in it, ejects
    /// outliers and returns endpoints whose ejection is over. `random` draws
    /// uniformly from `[0, 1)` for the enforcement percentages. Returns
    /// whether any endpoint was ejected or returned.
    pub fn evaluate(&mut self, now: Instant, random: &mut dyn FnMut() -> f64) -> bool {
        for tracked in self.endpoints.values_mut() {
            (tracked.successes, tracked.failures) = tracked.counter.take();
        }
        let mut changed = false;
        if let Some(success_rate) = self.config.success_rate.clone() {
            changed |= self.success_rate_ejection(&success_rate, now, random);
        }
        if let Some(failure_percentage) = self.config.failure_percentage.clone() {
            changed |= self.failure_percentage_ejection(&failure_percentage, now, random);
        }
        let base = self.config.base_ejection_time;
        let cap = base.max(self.config.max_ejection_time);
        for tracked in self.endpoints.values_mut() {
            match tracked.ejected_at {
                Some(at) => {
                    let lasts = base.saturating_mul(tracked.multiplier).min(cap);
                    if now >= at + lasts {
                        tracked.ejected_at = None;
                        self.ejected_count -= 1;
                        changed = true;
                    }
                }
                None => tracked.multiplier = tracked.multiplier.saturating_sub(1),
            }
        }
        changed
    }

    fn ejected_percent(&self) -> u64 {
        self.ejected_count as u64 * 100 / (self.endpoints.len().max(1) as u64)
    }

    fn eject(&mut self, key: &K, now: Instant) {
        if let Some(tracked) = self.endpoints.get_mut(key) {
            if tracked.ejected_at.replace(now).is_none() {
                self.ejected_count += 1;
            }
            tracked.multiplier = tracked.multiplier.saturating_add(1);
        }
    }

    fn candidates(&self, request_volume: u32) -> Vec<K> {
        self.endpoints
            .iter()
            .filter(|(_, tracked)| tracked.volume() >= u64::from(request_volume))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn success_rate_ejection(
        &mut self,
        config: &SuccessRate,
        now: Instant,
        random: &mut dyn FnMut() -> f64,
    ) -> bool {
        let candidates = self.candidates(config.request_volume);
        if candidates.len() < config.minimum_hosts as usize || candidates.is_empty() {
            return false;
        }
        let rates: Vec<f64> = candidates
            .iter()
            .map(|key| self.endpoints[key].success_rate())
            .collect();
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let variance = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let threshold = mean - variance.sqrt() * (f64::from(config.stdev_factor) / 1000.0);
        let mut changed = false;
        for (key, rate) in candidates.iter().zip(rates) {
            if self.ejected_percent() >= u64::from(self.config.max_ejection_percent) {
                break;
            }
            if rate < threshold
                && random() * 100.0 < f64::from(config.enforcement_percentage)
                && !self.is_ejected(key)
            {
                self.eject(key, now);
                changed = true;
            }
        }
        changed
    }

    fn failure_percentage_ejection(
        &mut self,
        config: &FailurePercentage,
        now: Instant,
        random: &mut dyn FnMut() -> f64,
    ) -> bool {
        let candidates = self.candidates(config.request_volume);
        if candidates.len() < config.minimum_hosts as usize {
            return false;
        }
        let mut changed = false;
        for key in &candidates {
            if self.ejected_percent() >= u64::from(self.config.max_ejection_percent) {
                break;
            }
            let tracked = &self.endpoints[key];
            let failure_percent = 100.0 * tracked.failures as f64 / tracked.volume() as f64;
            if failure_percent > f64::from(config.threshold)
                && random() * 100.0 < f64::from(config.enforcement_percentage)
                && !self.is_ejected(key)
            {
                self.eject(key, now);
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> impl FnMut() -> f64 {
        || 0.0
    }

    fn detector(
        config: OutlierDetectionConfig,
        keys: &[&'static str],
    ) -> (OutlierDetector<&'static str>, Vec<Arc<CallCounter>>) {
        let mut detector = OutlierDetector::new(config);
        let counters = keys.iter().map(|k| detector.add(*k)).collect();
        (detector, counters)
    }

    fn calls(counter: &CallCounter, successes: u32, failures: u32) {
        (0..successes).for_each(|_| counter.record(true));
        (0..failures).for_each(|_| counter.record(false));
    }

    #[test]
    fn success_rate_ejects_the_one_far_below_the_mean() {
        let config = OutlierDetectionConfig {
            success_rate: Some(SuccessRate::default()),
            max_ejection_percent: 100,
            ..Default::default()
        };
        let keys = ["a", "b", "c", "d", "e", "f"];
        let (mut detector, counters) = detector(config, &keys);
        for counter in &counters[1..] {
            calls(counter, 100, 0);
        }
        calls(&counters[0], 50, 50);
        assert!(detector.evaluate(Instant::now(), &mut never()));
        assert_eq!(detector.ejected().collect::<Vec<_>>(), [&"a"]);
    }

    #[test]
    fn too_few_hosts_or_calls_judge_nobody() {
        let config = OutlierDetectionConfig {
            success_rate: Some(SuccessRate::default()),
            failure_percentage: Some(FailurePercentage::default()),
            max_ejection_percent: 100,
            ..Default::default()
        };
        let (mut detector, counters) = detector(config.clone(), &["a", "b", "c", "d"]);
        calls(&counters[0], 0, 200);
        for counter in &counters[1..] {
            calls(counter, 200, 0);
        }
        assert!(
            !detector.evaluate(Instant::now(), &mut never()),
            "4 hosts < 5"
        );

        let (mut detector, counters) = detector_with_volume(config);
        calls(&counters[0], 0, 49);
        assert!(
            !detector.evaluate(Instant::now(), &mut never()),
            "49 calls < 50"
        );
    }

    fn detector_with_volume(
        config: OutlierDetectionConfig,
    ) -> (OutlierDetector<&'static str>, Vec<Arc<CallCounter>>) {
        let (detector, counters) = detector(config, &["a", "b", "c", "d", "e"]);
        for counter in &counters[1..] {
            calls(counter, 1000, 0);
        }
        (detector, counters)
    }

    #[test]
    fn max_ejection_percent_caps_ejections() {
        let config = OutlierDetectionConfig {
            failure_percentage: Some(FailurePercentage::default()),
            max_ejection_percent: 20,
            ..Default::default()
        };
        let (mut detector, counters) = detector(config, &["a", "b", "c", "d", "e"]);
        for counter in &counters {
            calls(counter, 0, 100);
        }
        detector.evaluate(Instant::now(), &mut never());
        assert_eq!(detector.ejected().count(), 1, "20 % of 5");
    }

    #[test]
    fn removing_an_ejected_endpoint_frees_its_share_of_the_cap() {
        let config = OutlierDetectionConfig {
            failure_percentage: Some(FailurePercentage {
                minimum_hosts: 4,
                ..Default::default()
            }),
            max_ejection_percent: 20,
            ..Default::default()
        };
        let (mut detector, counters) = detector(config, &["a", "b", "c", "d", "e"]);
        for counter in &counters {
            calls(counter, 0, 100);
        }
        detector.evaluate(Instant::now(), &mut never());
        let first: &str = detector.ejected().next().unwrap();
        detector.remove(&first);
        for counter in &counters {
            calls(counter, 0, 100);
        }
        detector.evaluate(Instant::now(), &mut never());
        let ejected: Vec<_> = detector.ejected().collect();
        assert_eq!(
            ejected.len(),
            1,
            "the removed one no longer counts against the cap"
        );
        assert_ne!(*ejected[0], first);
    }

    #[test]
    fn enforcement_percentage_is_a_chance() {
        let config = OutlierDetectionConfig {
            failure_percentage: Some(FailurePercentage {
                enforcement_percentage: 30,
                ..Default::default()
            }),
            max_ejection_percent: 100,
            ..Default::default()
        };
        let (mut detector, counters) = detector_with_volume(config.clone());
        calls(&counters[0], 0, 100);
        assert!(!detector.evaluate(Instant::now(), &mut || 0.3));
        let (mut detector, counters) = detector_with_volume(config);
        calls(&counters[0], 0, 100);
        assert!(detector.evaluate(Instant::now(), &mut || 0.29));
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_is_capped() {
        let config = OutlierDetectionConfig {
            failure_percentage: Some(FailurePercentage::default()),
            max_ejection_percent: 100,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(70),
            ..Default::default()
        };
        let (mut detector, counters) = detector_with_volume(config);
        let mut now = Instant::now();
        let mut lasted = Vec::new();
        for _ in 0..4 {
            for counter in &counters[1..] {
                calls(counter, 100, 0);
            }
            calls(&counters[0], 0, 100);
            detector.evaluate(now, &mut never());
            assert!(detector.is_ejected(&"a"));
            let ejected_at = now;
            while detector.is_ejected(&"a") {
                now += Duration::from_secs(10);
                detector.evaluate(now, &mut never());
            }
            lasted.push((now - ejected_at).as_secs());
        }
        assert_eq!(lasted, [30, 60, 70, 70]);
    }

    #[test]
    fn the_multiplier_shrinks_while_healthy() {
        let config = OutlierDetectionConfig {
            failure_percentage: Some(FailurePercentage::default()),
            max_ejection_percent: 100,
            ..Default::default()
        };
        let (mut detector, counters) = detector_with_volume(config);
        let mut now = Instant::now();
        calls(&counters[0], 0, 100);
        detector.evaluate(now, &mut never());
        now += Duration::from_secs(30);
        detector.evaluate(now, &mut never());
        assert!(!detector.is_ejected(&"a"));
        // One healthy interval brings the multiplier back to 0, so the next
        // ejection lasts the base time again.
        now += Duration::from_secs(10);
        detector.evaluate(now, &mut never());
        for counter in &counters[1..] {
            calls(counter, 100, 0);
        }
        calls(&counters[0], 0, 100);
        detector.evaluate(now, &mut never());
        assert!(detector.is_ejected(&"a"));
        now += Duration::from_secs(30);
        detector.evaluate(now, &mut never());
        assert!(!detector.is_ejected(&"a"));
    }
}
