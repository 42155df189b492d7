//! `outlier_detection_experimental` in `loadBalancingConfig` (gRFC A50).

use std::time::Duration;

use crate::error::{ServiceConfigError, ServiceConfigErrorKind};
use crate::json::{Field, Object, Result};
use crate::{parse_policies, PolicyConfig};

/// The name of the outlier detection policy in `loadBalancingConfig`.
pub const OUTLIER_DETECTION: &str = "outlier_detection_experimental";

/// The config of an `outlier_detection_experimental` entry of
/// `loadBalancingConfig` (gRFC A50): the settings given, each `None` when
/// absent so that the channel applies A50's default, and the child policy
/// list that does the balancing.
///
/// Read from [`PolicyConfig::outlier_detection`]. Every entry of that name is
/// checked when the service config is parsed, as grpc-go parses the config
/// of every registered balancer: percentages over 100, negative or malformed
/// durations, and a missing or empty `childPolicy` make the whole config
/// invalid.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig = r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
///     "interval": "5s",
///     "failurePercentageEjection": {"threshold": 50, "requestVolume": 20},
///     "childPolicy": [{"round_robin": {}}]
/// }}]}"#.parse()?;
/// let policy = &config.load_balancing_config()[0];
/// let outlier = policy.outlier_detection().unwrap();
/// assert_eq!(outlier.interval(), Some(Duration::from_secs(5)));
/// assert_eq!(outlier.base_ejection_time(), None); // A50's default applies
/// let failure = outlier.failure_percentage_ejection().unwrap();
/// assert_eq!((failure.threshold, failure.request_volume), (Some(50), Some(20)));
/// assert!(outlier.success_rate_ejection().is_none()); // that algorithm is off
/// let child = outlier.choose_child(|name| name == "round_robin")?;
/// assert_eq!(child.name(), "round_robin");
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetectionPolicy {
    interval: Option<Duration>,
    base_ejection_time: Option<Duration>,
    max_ejection_time: Option<Duration>,
    max_ejection_percent: Option<u32>,
    success_rate_ejection: Option<SuccessRateEjection>,
    failure_percentage_ejection: Option<FailurePercentageEjection>,
    child_policy: Vec<PolicyConfig>,
    /// Where `childPolicy` is, for errors found when choosing from it.
    child_path: String,
}

/// `successRateEjection`: present (even as `{}`) turns the algorithm on.
///
/// ```
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig = r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
///     "successRateEjection": {"stdevFactor": 1000},
///     "childPolicy": [{"round_robin": {}}]
/// }}]}"#.parse()?;
/// let outlier = config.load_balancing_config()[0].outlier_detection().unwrap();
/// let success = outlier.success_rate_ejection().unwrap();
/// assert_eq!(success.stdev_factor, Some(1000));
/// assert_eq!(success.minimum_hosts, None);
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuccessRateEjection {
    /// `stdevFactor`, in thousandths of a standard deviation.
    pub stdev_factor: Option<u32>,
    /// `enforcementPercentage`, 0–100.
    pub enforcement_percentage: Option<u32>,
    /// `minimumHosts`.
    pub minimum_hosts: Option<u32>,
    /// `requestVolume`.
    pub request_volume: Option<u32>,
}

/// `failurePercentageEjection`: present (even as `{}`) turns the algorithm on.
///
/// ```
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig = r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
///     "failurePercentageEjection": {},
///     "childPolicy": [{"round_robin": {}}]
/// }}]}"#.parse()?;
/// let outlier = config.load_balancing_config()[0].outlier_detection().unwrap();
/// assert_eq!(outlier.failure_percentage_ejection().unwrap().threshold, None);
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailurePercentageEjection {
    /// `threshold`, a percentage, 0–100.
    pub threshold: Option<u32>,
    /// `enforcementPercentage`, 0–100.
    pub enforcement_percentage: Option<u32>,
    /// `minimumHosts`.
    pub minimum_hosts: Option<u32>,
    /// `requestVolume`.
    pub request_volume: Option<u32>,
}

impl OutlierDetectionPolicy {
    /// `interval`: how often ejections are judged.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// `baseEjectionTime`.
    pub fn base_ejection_time(&self) -> Option<Duration> {
        self.base_ejection_time
    }

    /// `maxEjectionTime`.
    pub fn max_ejection_time(&self) -> Option<Duration> {
        self.max_ejection_time
    }

    /// `maxEjectionPercent`, 0–100.
    pub fn max_ejection_percent(&self) -> Option<u32> {
        self.max_ejection_percent
    }

    /// `successRateEjection`, when the algorithm is on.
    pub fn success_rate_ejection(&self) -> Option<&SuccessRateEjection> {
        self.success_rate_ejection.as_ref()
    }

    /// `failurePercentageEjection`, when the algorithm is on.
    pub fn failure_percentage_ejection(&self) -> Option<&FailurePercentageEjection> {
        self.failure_percentage_ejection.as_ref()
    }

    /// `childPolicy`, in the order given.
    pub fn child_policy(&self) -> &[PolicyConfig] {
        &self.child_policy
    }

    /// The child policy to balance with: the first entry of `childPolicy`
    /// that `supported` accepts (gRFC A24's rule, as for the top-level list);
    /// none supported is an error naming `childPolicy`.
    pub fn choose_child(&self, supported: impl Fn(&str) -> bool) -> Result<PolicyConfig> {
        match self.child_policy.iter().find(|p| supported(p.name())) {
            Some(policy) => Ok(policy.clone()),
            None => Err(ServiceConfigError::new(
                self.child_path.clone(),
                ServiceConfigErrorKind::NoSupportedPolicy(
                    self.child_policy
                        .iter()
                        .map(|p| p.name().to_owned())
                        .collect(),
                ),
            )),
        }
    }

    /// Reads the config object of an `outlier_detection_experimental` entry.
    pub(crate) fn parse(field: Field<'_>) -> Result<Self> {
        let object = Object {
            path: field.path,
            map: field.object()?,
        };
        let percent = |f: Field<'_>| f.unsigned(100).map(as_u32);
        let count = |f: Field<'_>| f.unsigned(u64::from(u32::MAX)).map(as_u32);
        let success_rate_ejection = object.optional("successRateEjection", |field| {
            let object = Object {
                path: field.path,
                map: field.object()?,
            };
            Ok(SuccessRateEjection {
                stdev_factor: object.optional("stdevFactor", count)?,
                enforcement_percentage: object.optional("enforcementPercentage", percent)?,
                minimum_hosts: object.optional("minimumHosts", count)?,
                request_volume: object.optional("requestVolume", count)?,
            })
        })?;
        let failure_percentage_ejection =
            object.optional("failurePercentageEjection", |field| {
                let object = Object {
                    path: field.path,
                    map: field.object()?,
                };
                Ok(FailurePercentageEjection {
                    threshold: object.optional("threshold", percent)?,
                    enforcement_percentage: object.optional("enforcementPercentage", percent)?,
                    minimum_hosts: object.optional("minimumHosts", count)?,
                    request_volume: object.optional("requestVolume", count)?,
                })
            })?;
        let child_path = crate::json::child_path(field.path, "childPolicy");
        let child_policy = object.required("childPolicy", |field| {
            let list = parse_policies(field)?;
            if list.is_empty() {
                return Err(field.invalid("must name at least one policy"));
            }
            Ok(list)
        })?;
        Ok(OutlierDetectionPolicy {
            interval: object.optional("interval", |f| f.duration())?,
            base_ejection_time: object.optional("baseEjectionTime", |f| f.duration())?,
            max_ejection_time: object.optional("maxEjectionTime", |f| f.duration())?,
            max_ejection_percent: object.optional("maxEjectionPercent", percent)?,
            success_rate_ejection,
            failure_percentage_ejection,
            child_policy,
            child_path,
        })
    }
}

/// Values already checked to be at most `u32::MAX`.
fn as_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use crate::ServiceConfig;

    fn outlier(body: &str) -> Result<ServiceConfig, crate::ServiceConfigError> {
        format!(r#"{{"loadBalancingConfig": [{{"outlier_detection_experimental": {body}}}]}}"#)
            .parse::<ServiceConfig>()
    }

    #[test]
    fn every_field_is_read() {
        let config = outlier(
            r#"{"interval": "1s", "baseEjectionTime": "2s", "maxEjectionTime": "3s",
                "maxEjectionPercent": 40,
                "successRateEjection": {"stdevFactor": 1000, "enforcementPercentage": 50,
                                        "minimumHosts": 2, "requestVolume": 10},
                "failurePercentageEjection": {"threshold": 60, "enforcementPercentage": 70,
                                              "minimumHosts": 3, "requestVolume": 20},
                "childPolicy": [{"grpclb": {}}, {"round_robin": {}}]}"#,
        )
        .unwrap();
        let policy = config.load_balancing_config()[0]
            .outlier_detection()
            .unwrap();
        assert_eq!(policy.interval(), Some(std::time::Duration::from_secs(1)));
        assert_eq!(
            policy.base_ejection_time(),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            policy.max_ejection_time(),
            Some(std::time::Duration::from_secs(3))
        );
        assert_eq!(policy.max_ejection_percent(), Some(40));
        let success = policy.success_rate_ejection().unwrap();
        assert_eq!(
            (
                success.stdev_factor,
                success.enforcement_percentage,
                success.minimum_hosts,
                success.request_volume
            ),
            (Some(1000), Some(50), Some(2), Some(10))
        );
        let failure = policy.failure_percentage_ejection().unwrap();
        assert_eq!(
            (
                failure.threshold,
                failure.enforcement_percentage,
                failure.minimum_hosts,
                failure.request_volume
            ),
            (Some(60), Some(70), Some(3), Some(20))
        );
        assert_eq!(policy.child_policy().len(), 2);
        assert_eq!(
            policy.choose_child(|n| n == "round_robin").unwrap().name(),
            "round_robin"
        );
        let none = policy.choose_child(|_| false).unwrap_err();
        assert_eq!(
            none.field(),
            "loadBalancingConfig[0].outlier_detection_experimental.childPolicy"
        );
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let cases = [
            (
                r#"{"childPolicy": [{"round_robin": {}}], "maxEjectionPercent": 101}"#,
                "maxEjectionPercent",
            ),
            (
                r#"{"childPolicy": [{"round_robin": {}}], "interval": "-1s"}"#,
                "interval",
            ),
            (
                r#"{"childPolicy": [{"round_robin": {}}], "baseEjectionTime": 30}"#,
                "baseEjectionTime",
            ),
            (
                r#"{"childPolicy": [{"round_robin": {}}], "failurePercentageEjection": {"threshold": 200}}"#,
                "failurePercentageEjection.threshold",
            ),
            (
                r#"{"childPolicy": [{"round_robin": {}}], "successRateEjection": {"enforcementPercentage": -5}}"#,
                "successRateEjection.enforcementPercentage",
            ),
            (r#"{}"#, "childPolicy"),
            (r#"{"childPolicy": []}"#, "childPolicy"),
            (
                r#"{"childPolicy": [{"round_robin": []}]}"#,
                "childPolicy[0].round_robin",
            ),
        ];
        for (body, field) in cases {
            let error = outlier(body).unwrap_err();
            let want = format!("loadBalancingConfig[0].outlier_detection_experimental.{field}");
            assert_eq!(error.field(), want, "{body}: {error}");
        }
    }
}
