//! Which service config is in force: the resolver's, the channel's default,
//! or none, following grpc-go's `ClientConn.updateResolverStateAndUnlock`.

use std::fmt;
use std::sync::Arc;

use grpc_lb_core::SharedError;
use grpc_lb_resolve::ServiceConfigStatus;
use grpc_lb_service_config::ServiceConfig;

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
        let same_config = match (&self.in_force, &in_force) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let changed = !same_config || self.failure.is_some() != failure.is_some();
        self.in_force = in_force;
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

        // A bad one keeps it.
        assert!(!tracker.update(&status(2, Some(&resolved), Some("bad")), any));
        assert!(is(&tracker, Some(&resolved)) && tracker.failure().is_none());

        assert!(tracker.update(&status(3, None, None), any));
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
