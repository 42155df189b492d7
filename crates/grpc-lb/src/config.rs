//! Which service config is in force: the resolver's, the channel's default,
//! or none, following grpc-go's `ClientConn.updateResolverStateAndUnlock`.

use std::fmt;
use std::sync::Arc;

use grpc_lb_balance::outlier::{FailurePercentage, OutlierDetectionConfig, SuccessRate};
use grpc_lb_balance::PolicyRegistry;
use grpc_lb_core::SharedError;
use grpc_lb_resolve::ServiceConfigStatus;
use grpc_lb_service_config::{
    OutlierDetectionPolicy, ServiceConfig, ServiceConfigError, OUTLIER_DETECTION,
};

/// What a service config chooses for a channel that has `policies`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Choice {
    /// The policy to balance with; `None` leaves it to the channel.
    pub(crate) policy: Option<String>,
    /// Outlier detection, when the config's policy is
    /// `outlier_detection_experimental` (its child then balances).
    pub(crate) outlier_detection: Option<OutlierDetectionConfig>,
}

/// The policy (and outlier detection) `config` chooses among `policies`:
/// the first supported entry of `loadBalancingConfig` (A24), where
/// `outlier_detection_experimental` is supported when one of its child
/// policies is. A list with none supported makes the config unusable.
pub(crate) fn choose(
    config: &ServiceConfig,
    policies: &PolicyRegistry,
) -> Result<Choice, ServiceConfigError> {
    // Only a `loadBalancingConfig` entry carries the settings and the child
    // policy; the deprecated `loadBalancingPolicy` name cannot.
    let outlier_detection_possible = !config.load_balancing_config().is_empty();
    let chosen = config.choose_policy(|name| {
        policies.contains(name) || (name == OUTLIER_DETECTION && outlier_detection_possible)
    })?;
    let Some(chosen) = chosen else {
        return Ok(Choice::default());
    };
    // A policy of that name registered by the user is theirs to run.
    let outlier = chosen
        .outlier_detection()
        .filter(|_| !policies.contains(OUTLIER_DETECTION));
    let Some(outlier) = outlier else {
        return Ok(Choice {
            policy: Some(chosen.name().to_owned()),
            outlier_detection: None,
        });
    };
    let child = outlier.choose_child(|name| policies.contains(name))?;
    Ok(Choice {
        policy: Some(child.name().to_owned()),
        outlier_detection: Some(outlier_detection_config(outlier)),
    })
}

/// gRFC A50's settings from a service config's `outlier_detection_experimental`
/// entry, with A50's defaults for what it leaves out, as the channel applies
/// them (grpc-go's JSON parser defaults `failurePercentageEjection`'s
/// `enforcementPercentage` to 0; we keep A50's 100, as
/// `OutlierDetectionConfig` does).
///
/// ```
/// use grpc_lb::service_config::ServiceConfig;
/// use std::time::Duration;
///
/// let config = ServiceConfig::from_json(r#"{"loadBalancingConfig": [
///     {"outlier_detection_experimental": {"interval": "2s",
///         "childPolicy": [{"round_robin": {}}]}}]}"#)?;
/// let entry = config.load_balancing_config()[0].outlier_detection().unwrap();
/// let settings = grpc_lb::outlier_detection_config(entry);
/// assert_eq!(settings.interval, Duration::from_secs(2));
/// assert_eq!(settings.max_ejection_percent, 10); // A50's default
/// # Ok::<(), grpc_lb::service_config::ServiceConfigError>(())
/// ```
pub fn outlier_detection_config(policy: &OutlierDetectionPolicy) -> OutlierDetectionConfig {
    let defaults = OutlierDetectionConfig::default();
    OutlierDetectionConfig {
        interval: policy.interval().unwrap_or(defaults.interval),
        base_ejection_time: policy
            .base_ejection_time()
            .unwrap_or(defaults.base_ejection_time),
        max_ejection_time: policy
            .max_ejection_time()
            .unwrap_or(defaults.max_ejection_time),
        max_ejection_percent: policy
            .max_ejection_percent()
            .unwrap_or(defaults.max_ejection_percent),
        success_rate: policy.success_rate_ejection().map(|given| {
            let d = SuccessRate::default();
            SuccessRate {
                stdev_factor: given.stdev_factor.unwrap_or(d.stdev_factor),
                enforcement_percentage: given
                    .enforcement_percentage
                    .unwrap_or(d.enforcement_percentage),
                minimum_hosts: given.minimum_hosts.unwrap_or(d.minimum_hosts),
                request_volume: given.request_volume.unwrap_or(d.request_volume),
            }
        }),
        failure_percentage: policy.failure_percentage_ejection().map(|given| {
            let d = FailurePercentage::default();
            FailurePercentage {
                threshold: given.threshold.unwrap_or(d.threshold),
                enforcement_percentage: given
                    .enforcement_percentage
                    .unwrap_or(d.enforcement_percentage),
                minimum_hosts: given.minimum_hosts.unwrap_or(d.minimum_hosts),
                request_volume: given.request_volume.unwrap_or(d.request_volume),
            }
        }),
    }
}

/// Follows the resolver's service config over the channel's default.
///
/// - A good config from the resolver is in force until the next one.
/// - "No config" from the resolver puts the default back in force.
/// - A bad config keeps whatever is in force, once the resolver has said
///   anything usable (a good config, or none). Before that, the default is
///   used when there is one; without one the channel fails with the error
///   (grpc-go's `applyFailingLBLocked`).
pub(crate) struct ConfigTracker {
    default: Option<Arc<ServiceConfig>>,
    in_force: Option<Arc<ServiceConfig>>,
    /// `ServiceConfigStatus::updates` when last read, to act once per update.
    seen_updates: u64,
    /// Whether the resolver has said anything usable: grpc-go's `cc.sc != nil`
    /// after the first resolver update.
    resolver_spoke: bool,
    failure: Option<SharedError>,
}

impl ConfigTracker {
    pub(crate) fn new(default: Option<Arc<ServiceConfig>>) -> Self {
        ConfigTracker {
            in_force: default.clone(),
            default,
            seen_updates: 0,
            resolver_spoke: false,
            failure: None,
        }
    }

    /// The config calls and the policy follow now.
    pub(crate) fn in_force(&self) -> Option<&Arc<ServiceConfig>> {
        self.in_force.as_ref()
    }

    /// Why the channel fails every call: a bad config from the resolver
    /// before any usable one, and no default.
    pub(crate) fn failure(&self) -> Option<&SharedError> {
        self.failure.as_ref()
    }

    /// A new resolver (leaving idle mode) counts its updates from zero; what
    /// is in force stays until it speaks, as grpc-go keeps `cc.sc`.
    pub(crate) fn restart(&mut self) {
        self.seen_updates = 0;
    }

    /// Reads the resolver's latest word. `usable` is the channel's own check
    /// of a config the resolver found valid (that it names a policy this
    /// channel has). Returns whether the config in force or the failure
    /// changed.
    pub(crate) fn update(
        &mut self,
        status: &ServiceConfigStatus,
        usable: impl Fn(&ServiceConfig) -> Result<(), SharedError>,
    ) -> bool {
        if status.updates == self.seen_updates {
            return false;
        }
        self.seen_updates = status.updates;
        // With both set, the latest config was bad and `config` is the good
        // one before it, already in force (or refused by `usable`).
        let verdict = match (&status.config, &status.error) {
            (Some(config), _) => usable(config).map(|()| Some(config.clone())),
            (None, None) => Ok(None),
            (None, Some(error)) => Err(error.clone()),
        };
        let (in_force, failure) = match verdict {
            Ok(config) => {
                self.resolver_spoke = true;
                (config.or_else(|| self.default.clone()), None)
            }
            Err(error) => {
                tracing::warn!(%error, "the resolver's service config is unusable");
                if self.resolver_spoke || self.default.is_some() {
                    (self.in_force.clone(), None)
                } else {
                    (None, Some(Arc::new(BadServiceConfig(error)) as SharedError))
                }
            }
        };
        // The same config sent again (re-parsed, so a new `Arc`) changes
        // nothing: no new policy, watches or event.
        let same_config = match (&self.in_force, &in_force) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
            (None, None) => true,
            _ => false,
        };
        let changed = !same_config || self.failure.is_some() != failure.is_some();
        if !same_config {
            self.in_force = in_force;
        }
        self.failure = failure;
        changed
    }
}

/// A service config from the resolver that cannot be used, as the cause of a
/// channel in TRANSIENT_FAILURE; worded as grpc-go's failing picker.
#[derive(Debug)]
pub(crate) struct BadServiceConfig(SharedError);

impl fmt::Display for BadServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error parsing service config: {}", self.0)
    }
}

impl std::error::Error for BadServiceConfig {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlier_detection_maps_onto_a50_with_its_defaults_and_chooses_the_child() {
        let policies = PolicyRegistry::with_defaults();
        let outlier_config = config(
            r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
                "interval": "1s", "maxEjectionPercent": 50,
                "failurePercentageEjection": {"threshold": 60},
                "childPolicy": [{"grpclb": {}}, {"round_robin": {}}]}}]}"#,
        );
        let choice = choose(&outlier_config, &policies).unwrap();
        assert_eq!(choice.policy.as_deref(), Some("round_robin"));
        let outlier = choice.outlier_detection.unwrap();
        assert_eq!(
            outlier,
            OutlierDetectionConfig {
                interval: std::time::Duration::from_secs(1),
                max_ejection_percent: 50,
                failure_percentage: Some(FailurePercentage {
                    threshold: 60,
                    ..FailurePercentage::default()
                }),
                ..OutlierDetectionConfig::default()
            }
        );

        let plain = config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#);
        assert_eq!(
            choose(&plain, &policies).unwrap(),
            Choice {
                policy: Some("round_robin".into()),
                outlier_detection: None
            }
        );
        assert_eq!(choose(&config("{}"), &policies).unwrap(), Choice::default());

        let no_child = config(
            r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
                "childPolicy": [{"grpclb": {}}]}}]}"#,
        );
        let error = choose(&no_child, &policies).unwrap_err().to_string();
        assert!(error.contains("childPolicy"), "{error}");
        let by_name = config(r#"{"loadBalancingPolicy": "outlier_detection_experimental"}"#);
        assert!(choose(&by_name, &policies).is_err());
    }

    fn config(json: &str) -> Arc<ServiceConfig> {
        Arc::new(json.parse().unwrap())
    }

    fn status(
        updates: u64,
        config: Option<&Arc<ServiceConfig>>,
        error: Option<&str>,
    ) -> ServiceConfigStatus {
        let mut status = ServiceConfigStatus::default();
        status.updates = updates;
        status.config = config.cloned();
        status.error = error.map(shared);
        status
    }

    fn shared(message: &str) -> SharedError {
        Arc::from(grpc_lb_core::BoxError::from(message))
    }

    fn any(_: &ServiceConfig) -> Result<(), SharedError> {
        Ok(())
    }

    fn is(tracker: &ConfigTracker, want: Option<&Arc<ServiceConfig>>) -> bool {
        match (tracker.in_force(), want) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn resolver_config_replaces_the_default_and_none_restores_it() {
        let default = config(r#"{"loadBalancingPolicy": "round_robin"}"#);
        let resolved = config(r#"{"loadBalancingPolicy": "pick_first"}"#);
        let mut tracker = ConfigTracker::new(Some(default.clone()));
        assert!(is(&tracker, Some(&default)));
        assert!(
            !tracker.update(&status(0, None, None), any),
            "nothing said yet"
        );

        assert!(tracker.update(&status(1, Some(&resolved), None), any));
        assert!(is(&tracker, Some(&resolved)));
        assert!(
            !tracker.update(&status(1, Some(&resolved), None), any),
            "seen"
        );
        // The same config again, parsed anew: nothing changes.
        let again = config(r#"{"loadBalancingPolicy": "pick_first"}"#);
        assert!(!tracker.update(&status(2, Some(&again), None), any));
        assert!(is(&tracker, Some(&resolved)));

        // A bad one keeps it.
        assert!(!tracker.update(&status(3, Some(&resolved), Some("bad")), any));
        assert!(is(&tracker, Some(&resolved)) && tracker.failure().is_none());

        assert!(tracker.update(&status(4, None, None), any));
        assert!(is(&tracker, Some(&default)));
    }

    #[test]
    fn bad_first_config_fails_without_a_default_and_a_good_one_recovers() {
        let mut tracker = ConfigTracker::new(None);
        assert!(tracker.update(&status(1, None, Some("methodConfig[0].timeout")), any));
        let failure = tracker.failure().unwrap().to_string();
        assert_eq!(
            failure,
            "error parsing service config: methodConfig[0].timeout"
        );
        assert!(is(&tracker, None));

        let good = config("{}");
        assert!(tracker.update(&status(2, Some(&good), None), any));
        assert!(tracker.failure().is_none() && is(&tracker, Some(&good)));

        // After "no config", a bad one keeps the (empty) config: no failure.
        assert!(tracker.update(&status(3, None, None), any));
        assert!(!tracker.update(&status(4, None, Some("bad")), any));
        assert!(tracker.failure().is_none());
    }

    #[test]
    fn bad_first_config_with_a_default_uses_the_default() {
        let default = config("{}");
        let mut tracker = ConfigTracker::new(Some(default.clone()));
        assert!(!tracker.update(&status(1, None, Some("bad")), any));
        assert!(tracker.failure().is_none() && is(&tracker, Some(&default)));
    }

    #[test]
    fn a_config_the_channel_cannot_use_counts_as_bad() {
        let unknown = config(r#"{"loadBalancingConfig": [{"grpclb": {}}]}"#);
        let refuse =
            |_: &ServiceConfig| -> Result<(), SharedError> { Err(shared("no supported policy")) };
        let mut tracker = ConfigTracker::new(None);
        assert!(tracker.update(&status(1, Some(&unknown), None), refuse));
        assert!(tracker.failure().is_some());

        let good = config("{}");
        let mut tracker = ConfigTracker::new(None);
        tracker.update(&status(1, Some(&good), None), any);
        assert!(!tracker.update(&status(2, Some(&unknown), None), refuse));
        assert!(is(&tracker, Some(&good)));
    }

    #[test]
    fn a_new_resolver_keeps_the_config_until_it_speaks() {
        let good = config("{}");
        let mut tracker = ConfigTracker::new(None);
        tracker.update(&status(1, Some(&good), None), any);
        tracker.restart();
        assert!(!tracker.update(&status(0, None, None), any));
        assert!(is(&tracker, Some(&good)));
        // The new resolver's first word counts, even with the same count.
        assert!(tracker.update(&status(1, None, None), any));
        assert!(is(&tracker, None));
    }
}
