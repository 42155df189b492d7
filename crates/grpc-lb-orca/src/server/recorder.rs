//! Where a server records its load: per server ([`ServerMetricsRecorder`],
//! for the out-of-band stream and as a base for every call) and per call
//! ([`CallMetricsRecorder`], for the trailer).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::OrcaLoadReport;

/// A metric value outside the range the ORCA proto allows; it was not
/// recorded (grpc-go ignores such values too).
///
/// ```
/// use grpc_lb_orca::ServerMetricsRecorder;
///
/// let recorder = ServerMetricsRecorder::new();
/// let error = recorder.set_memory_utilization(1.5).unwrap_err();
/// assert_eq!(error.to_string(), "mem_utilization must be in [0, 1], got 1.5");
/// assert!(recorder.snapshot().is_empty());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidMetric {
    metric: String,
    value: f64,
    range: Range,
}

impl InvalidMetric {
    /// The metric's name (a field such as `cpu_utilization`, or the key of a
    /// named utilization).
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// The value refused.
    pub fn value(&self) -> f64 {
        self.value
    }
}

impl fmt::Display for InvalidMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match self.range {
            Range::AtLeastZero => "[0, inf)",
            Range::Fraction => "[0, 1]",
        };
        write!(f, "{} must be in {range}, got {}", self.metric, self.value)
    }
}

impl std::error::Error for InvalidMetric {}

/// The ranges the ORCA proto gives its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Range {
    /// Finite and ≥ 0 (utilizations that may pass 1, rates).
    AtLeastZero,
    /// 0 to 1.
    Fraction,
}

fn check(metric: &str, value: f64, range: Range) -> Result<f64, InvalidMetric> {
    // Both tests are false for NaN.
    let fits = match range {
        Range::Fraction => (0.0..=1.0).contains(&value),
        Range::AtLeastZero => value >= 0.0 && value.is_finite(),
    };
    if fits {
        Ok(value)
    } else {
        Err(InvalidMetric {
            metric: metric.to_string(),
            value,
            range,
        })
    }
}

/// The metrics recorded so far; `None` is unset (which differs from 0 when a
/// call's metrics override the server's).
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    cpu_utilization: Option<f64>,
    mem_utilization: Option<f64>,
    application_utilization: Option<f64>,
    qps: Option<f64>,
    eps: Option<f64>,
    utilization: HashMap<String, f64>,
    request_cost: HashMap<String, f64>,
    named_metrics: HashMap<String, f64>,
}

impl Metrics {
    /// The report of `over` on top of `base`: what `over` sets wins (gRFC
    /// A51: the per-call value takes precedence).
    pub(crate) fn report(base: Option<&Metrics>, over: &Metrics) -> OrcaLoadReport {
        let mut merged = base.cloned().unwrap_or_default();
        let pick = |a: Option<f64>, b: Option<f64>| b.or(a);
        merged.cpu_utilization = pick(merged.cpu_utilization, over.cpu_utilization);
        merged.mem_utilization = pick(merged.mem_utilization, over.mem_utilization);
        merged.application_utilization =
            pick(merged.application_utilization, over.application_utilization);
        merged.qps = pick(merged.qps, over.qps);
        merged.eps = pick(merged.eps, over.eps);
        for (map, extra) in [
            (&mut merged.utilization, &over.utilization),
            (&mut merged.request_cost, &over.request_cost),
            (&mut merged.named_metrics, &over.named_metrics),
        ] {
            map.extend(extra.iter().map(|(k, v)| (k.clone(), *v)));
        }
        merged.into_report()
    }

    fn into_report(self) -> OrcaLoadReport {
        OrcaLoadReport {
            cpu_utilization: self.cpu_utilization.unwrap_or_default(),
            mem_utilization: self.mem_utilization.unwrap_or_default(),
            application_utilization: self.application_utilization.unwrap_or_default(),
            rps_fractional: self.qps.unwrap_or_default(),
            eps: self.eps.unwrap_or_default(),
            request_cost: self.request_cost,
            utilization: self.utilization,
            named_metrics: self.named_metrics,
        }
    }
}

fn lock(metrics: &Mutex<Metrics>) -> MutexGuard<'_, Metrics> {
    // Every update is a single assignment: a panic elsewhere cannot leave
    // the metrics half-written.
    metrics
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The setters both recorders share: the five scalar metrics and the named
/// utilizations, each validated against the proto's range.
macro_rules! common_setters {
    () => {
        /// Records the CPU utilization (≥ 0; above 1 past a soft limit).
        ///
        /// # Errors
        ///
        /// [`InvalidMetric`] for a negative, infinite or NaN value.
        pub fn set_cpu_utilization(&self, value: f64) -> Result<(), InvalidMetric> {
            let value = check("cpu_utilization", value, Range::AtLeastZero)?;
            self.lock().cpu_utilization = Some(value);
            Ok(())
        }

        /// Unsets the CPU utilization.
        pub fn clear_cpu_utilization(&self) {
            self.lock().cpu_utilization = None;
        }

        /// Records the memory utilization (0 to 1).
        ///
        /// # Errors
        ///
        /// [`InvalidMetric`] for a value outside [0, 1] or NaN.
        pub fn set_memory_utilization(&self, value: f64) -> Result<(), InvalidMetric> {
            let value = check("mem_utilization", value, Range::Fraction)?;
            self.lock().mem_utilization = Some(value);
            Ok(())
        }

        /// Unsets the memory utilization.
        pub fn clear_memory_utilization(&self) {
            self.lock().mem_utilization = None;
        }

        /// Records the application utilization (≥ 0), which weighted round
        /// robin prefers to the CPU utilization (gRFC A58).
        ///
        /// # Errors
        ///
        /// [`InvalidMetric`] for a negative, infinite or NaN value.
        pub fn set_application_utilization(&self, value: f64) -> Result<(), InvalidMetric> {
            let value = check("application_utilization", value, Range::AtLeastZero)?;
            self.lock().application_utilization = Some(value);
            Ok(())
        }

        /// Unsets the application utilization.
        pub fn clear_application_utilization(&self) {
            self.lock().application_utilization = None;
        }

        /// Records the queries per second (`rps_fractional`, ≥ 0).
        ///
        /// # Errors
        ///
        /// [`InvalidMetric`] for a negative, infinite or NaN value.
        pub fn set_qps(&self, value: f64) -> Result<(), InvalidMetric> {
            let value = check("rps_fractional", value, Range::AtLeastZero)?;
            self.lock().qps = Some(value);
            Ok(())
        }

        /// Unsets the queries per second.
        pub fn clear_qps(&self) {
            self.lock().qps = None;
        }

        /// Records the errors per second (≥ 0).
        ///
        /// # Errors
        ///
        /// [`InvalidMetric`] for a negative, infinite or NaN value.
        pub fn set_eps(&self, value: f64) -> Result<(), InvalidMetric> {
            let value = check("eps", value, Range::AtLeastZero)?;
            self.lock().eps = Some(value);
            Ok(())
        }

        /// Unsets the errors per second.
        pub fn clear_eps(&self) {
            self.lock().eps = None;
        }

        /// Records the utilization of a named resource (0 to 1).
        ///
        /// # Errors
        ///
        /// [`InvalidMetric`] for a value outside [0, 1] or NaN.
        pub fn set_named_utilization(
            &self,
            name: impl Into<String>,
            value: f64,
        ) -> Result<(), InvalidMetric> {
            let name = name.into();
            let value = check(&name, value, Range::Fraction)?;
            self.lock().utilization.insert(name, value);
            Ok(())
        }

        /// Unsets the utilization of a named resource.
        pub fn clear_named_utilization(&self, name: &str) {
            self.lock().utilization.remove(name);
        }

        /// What a report sent now would hold.
        pub fn snapshot(&self) -> OrcaLoadReport {
            self.lock().clone().into_report()
        }

        fn lock(&self) -> MutexGuard<'_, Metrics> {
            lock(&self.metrics)
        }
    };
}

/// The server's own load, shared by every clone: what the out-of-band
/// [`OrcaService`](crate::OrcaService) streams, and the base of every call's
/// trailer when given to [`OrcaCallMetricsLayer::with_server_metrics`](crate::OrcaCallMetricsLayer::with_server_metrics).
///
/// All metrics start unset; a set metric stays until cleared (gRFC A51).
/// Request costs and opaque named metrics are per call only, as in grpc-go.
///
/// ```
/// use grpc_lb_orca::ServerMetricsRecorder;
///
/// let recorder = ServerMetricsRecorder::new();
/// recorder.set_cpu_utilization(0.5)?;
/// recorder.set_qps(250.0)?;
/// recorder.set_named_utilization("disk", 0.1)?;
/// let report = recorder.snapshot();
/// assert_eq!((report.cpu_utilization, report.rps_fractional), (0.5, 250.0));
/// assert_eq!(report.utilization["disk"], 0.1);
///
/// recorder.clear_cpu_utilization();
/// assert_eq!(recorder.snapshot().cpu_utilization, 0.0);
/// # Ok::<(), grpc_lb_orca::InvalidMetric>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerMetricsRecorder {
    metrics: Arc<Mutex<Metrics>>,
}

impl ServerMetricsRecorder {
    /// A recorder with every metric unset.
    pub fn new() -> Self {
        Self::default()
    }

    common_setters!();

    /// Replaces every named utilization at once (gRFC A51
    /// `setAllUtilizationMetrics`).
    ///
    /// # Errors
    ///
    /// [`InvalidMetric`] for the first value outside [0, 1]; nothing is
    /// replaced then.
    pub fn set_all_named_utilizations(
        &self,
        utilization: HashMap<String, f64>,
    ) -> Result<(), InvalidMetric> {
        for (name, value) in &utilization {
            check(name, *value, Range::Fraction)?;
        }
        self.lock().utilization = utilization;
        Ok(())
    }

    pub(crate) fn metrics(&self) -> Metrics {
        self.lock().clone()
    }
}

/// One call's load, filled by the handler and sent in the call's
/// `endpoint-load-metrics-bin` trailer by
/// [`OrcaCallMetrics`](crate::OrcaCallMetrics), which puts a fresh one in each
/// request's extensions.
///
/// ```
/// use grpc_lb_orca::CallMetricsRecorder;
///
/// // In a tonic handler: `request.extensions().get::<CallMetricsRecorder>()`.
/// let recorder = CallMetricsRecorder::new();
/// recorder.set_application_utilization(0.3)?;
/// recorder.set_request_cost("db_reads", 12.0);
/// recorder.set_named_metric("queue_depth", 4.0);
/// let report = recorder.snapshot();
/// assert_eq!(report.request_cost["db_reads"], 12.0);
/// assert_eq!(report.named_metrics["queue_depth"], 4.0);
/// # Ok::<(), grpc_lb_orca::InvalidMetric>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallMetricsRecorder {
    metrics: Arc<Mutex<Metrics>>,
}

impl CallMetricsRecorder {
    /// A recorder with every metric unset.
    pub fn new() -> Self {
        Self::default()
    }

    /// The recorder [`OrcaCallMetrics`](crate::OrcaCallMetrics) put in this
    /// request; `None` when the layer is not installed.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Option<&CallMetricsRecorder> {
        request.extensions().get::<CallMetricsRecorder>()
    }

    common_setters!();

    /// Records what this request cost, under an application-defined name
    /// (any value: costs are absolute).
    pub fn set_request_cost(&self, name: impl Into<String>, value: f64) {
        self.lock().request_cost.insert(name.into(), value);
    }

    /// Unsets a request cost.
    pub fn clear_request_cost(&self, name: &str) {
        self.lock().request_cost.remove(name);
    }

    /// Records an opaque application-defined metric (any value).
    pub fn set_named_metric(&self, name: impl Into<String>, value: f64) {
        self.lock().named_metrics.insert(name.into(), value);
    }

    /// Unsets an opaque named metric.
    pub fn clear_named_metric(&self, name: &str) {
        self.lock().named_metrics.remove(name);
    }

    /// The report for the trailer: this call's metrics over the server's.
    pub(crate) fn report(&self, server: Option<&ServerMetricsRecorder>) -> OrcaLoadReport {
        let base = server.map(ServerMetricsRecorder::metrics);
        Metrics::report(base.as_ref(), &self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused_and_not_recorded() {
        let recorder = CallMetricsRecorder::new();
        assert!(recorder.set_cpu_utilization(-0.1).is_err());
        assert!(recorder.set_cpu_utilization(f64::NAN).is_err());
        assert!(recorder.set_cpu_utilization(f64::INFINITY).is_err());
        assert!(
            recorder.set_cpu_utilization(3.0).is_ok(),
            "CPU may exceed 1"
        );
        assert!(recorder.set_memory_utilization(1.01).is_err());
        assert!(recorder.set_named_utilization("x", -1.0).is_err());
        assert!(recorder.set_qps(-1.0).is_err());
        assert!(recorder.set_eps(f64::NAN).is_err());
        let report = recorder.snapshot();
        assert_eq!(report.cpu_utilization, 3.0);
        assert!(report.utilization.is_empty());
        let error = recorder.set_named_utilization("disk", 2.0).unwrap_err();
        assert_eq!((error.metric(), error.value()), ("disk", 2.0));
    }

    #[test]
    fn call_metrics_override_server_metrics_field_by_field() {
        let server = ServerMetricsRecorder::new();
        server.set_cpu_utilization(0.9).unwrap();
        server.set_qps(100.0).unwrap();
        server.set_named_utilization("disk", 0.5).unwrap();
        server.set_named_utilization("net", 0.2).unwrap();
        let call = CallMetricsRecorder::new();
        call.set_cpu_utilization(0.1).unwrap();
        call.set_named_utilization("disk", 0.7).unwrap();
        call.set_request_cost("bytes", 512.0);

        let report = call.report(Some(&server));
        assert_eq!(report.cpu_utilization, 0.1);
        assert_eq!(report.rps_fractional, 100.0);
        assert_eq!(report.utilization["disk"], 0.7);
        assert_eq!(report.utilization["net"], 0.2);
        assert_eq!(report.request_cost["bytes"], 512.0);
        assert_eq!(call.report(None).rps_fractional, 0.0);
    }

    #[test]
    fn set_all_named_utilizations_is_all_or_nothing() {
        let server = ServerMetricsRecorder::new();
        server.set_named_utilization("old", 0.5).unwrap();
        let bad = [("a".to_string(), 0.5), ("b".to_string(), 5.0)].into();
        assert!(server.set_all_named_utilizations(bad).is_err());
        assert_eq!(server.snapshot().utilization.len(), 1);
        let good = [("a".to_string(), 0.5)].into();
        server.set_all_named_utilizations(good).unwrap();
        assert_eq!(
            server.snapshot().utilization,
            [("a".to_string(), 0.5)].into()
        );
    }
}
