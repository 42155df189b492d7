//! The grpclb policy's configuration: what `{"grpclb":{...}}` in a service
//! config's `loadBalancingConfig` says, and the defaults of grpc-go.

use std::fmt;
use std::time::Duration;

use grpc_lb_backoff::BackoffConfig;
use serde_json::Value;

/// The policy's name in a service config's `loadBalancingConfig`.
pub const POLICY_NAME: &str = "grpclb";

/// How long the policy waits for a server list before it falls back to the
/// resolver's backends: 10 s, grpc-go's `defaultFallbackTimeout`.
pub const DEFAULT_FALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The policy that runs the backends of a server list (grpclb's
/// `childPolicy`).
///
/// ```
/// use grpc_lb_grpclb::ChildPolicy;
///
/// assert_eq!(ChildPolicy::default().name(), "round_robin");
/// assert_eq!(ChildPolicy::PickFirst.name(), "pick_first");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChildPolicy {
    /// `round_robin`, the default.
    #[default]
    RoundRobin,
    /// `pick_first`.
    PickFirst,
}

impl ChildPolicy {
    /// The policy's name in a service config.
    pub fn name(self) -> &'static str {
        match self {
            ChildPolicy::RoundRobin => "round_robin",
            ChildPolicy::PickFirst => "pick_first",
        }
    }
}

/// The grpclb configuration.
///
/// `childPolicy` is a list of policies of which the first known one
/// (`round_robin` or `pick_first`) is used, else round_robin; `serviceName`
/// replaces the target's name in the initial request; other fields are
/// ignored, as grpc-go's `json.Unmarshal` ignores them. The fallback timeout
/// and the balancer's backoff are not part of the JSON config (grpc-go has
/// them as builder options); they are set here.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_grpclb::{ChildPolicy, GrpclbConfig};
///
/// let config = GrpclbConfig::from_json(
///     r#"{"childPolicy":[{"pick_first":{}}],"serviceName":"greeter.example"}"#,
/// )
/// .unwrap();
/// assert_eq!(config.child_policy(), ChildPolicy::PickFirst);
/// assert_eq!(config.service_name(), Some("greeter.example"));
/// assert_eq!(config.fallback_timeout(), Duration::from_secs(10));
///
/// let selected = GrpclbConfig::from_service_config(
///     r#"{"loadBalancingConfig":[{"grpclb":{"childPolicy":[{"round_robin":{}}]}}]}"#,
/// )
/// .unwrap();
/// assert_eq!(selected.unwrap().child_policy(), ChildPolicy::RoundRobin);
///
/// assert!(GrpclbConfig::from_json(r#"{"serviceName":7}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GrpclbConfig {
    service_name: Option<String>,
    child_policy: ChildPolicy,
    fallback_timeout: Duration,
    backoff: BackoffConfig,
}

impl Default for GrpclbConfig {
    fn default() -> Self {
        GrpclbConfig {
            service_name: None,
            child_policy: ChildPolicy::RoundRobin,
            fallback_timeout: DEFAULT_FALLBACK_TIMEOUT,
            backoff: BackoffConfig::default(),
        }
    }
}

impl GrpclbConfig {
    /// The defaults: round_robin, no service name, 10 s fallback timeout,
    /// gRPC's connection backoff between failed balancer streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the JSON object inside `{"grpclb": ...}`.
    pub fn from_json(json: &str) -> Result<Self, GrpclbConfigError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|error| GrpclbConfigError::new(format!("not JSON: {error}")))?;
        Self::from_value(&value)
    }

    /// Parses an already parsed JSON object.
    pub fn from_value(value: &Value) -> Result<Self, GrpclbConfigError> {
        let object = value
            .as_object()
            .ok_or_else(|| GrpclbConfigError::new("the config is not a JSON object"))?;
        let mut config = GrpclbConfig::default();
        match object.get("serviceName") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) if name.is_empty() => {}
            Some(Value::String(name)) => config.service_name = Some(name.clone()),
            Some(other) => {
                return Err(GrpclbConfigError::new(format!(
                    "serviceName is not a string: {other}"
                )))
            }
        }
        match object.get("childPolicy") {
            None | Some(Value::Null) => {}
            Some(Value::Array(policies)) => {
                for policy in policies {
                    let entry = policy.as_object().ok_or_else(|| {
                        GrpclbConfigError::new(format!(
                            "a childPolicy entry is not an object: {policy}"
                        ))
                    })?;
                    // grpc-go's childIsPickFirst: the first of the two names
                    // wins; other policies are passed over.
                    if entry.contains_key("round_robin") {
                        config.child_policy = ChildPolicy::RoundRobin;
                        break;
                    }
                    if entry.contains_key("pick_first") {
                        config.child_policy = ChildPolicy::PickFirst;
                        break;
                    }
                }
            }
            Some(other) => {
                return Err(GrpclbConfigError::new(format!(
                    "childPolicy is not a list: {other}"
                )))
            }
        }
        Ok(config)
    }

    /// The grpclb entry of a service config's `loadBalancingConfig`, if it
    /// has one: `None` when the list names no `grpclb`.
    pub fn from_service_config(json: &str) -> Result<Option<Self>, GrpclbConfigError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|error| GrpclbConfigError::new(format!("not JSON: {error}")))?;
        let Some(list) = value.get("loadBalancingConfig") else {
            return Ok(None);
        };
        let list = list
            .as_array()
            .ok_or_else(|| GrpclbConfigError::new("loadBalancingConfig is not a list"))?;
        for entry in list {
            if let Some(config) = entry.get(POLICY_NAME) {
                return Self::from_value(config).map(Some);
            }
        }
        Ok(None)
    }

    /// The name sent in the initial request instead of the target's.
    pub fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref()
    }

    /// Sets the name sent in the initial request.
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The policy under which the server list's backends run.
    pub fn child_policy(&self) -> ChildPolicy {
        self.child_policy
    }

    /// Sets the child policy.
    pub fn with_child_policy(mut self, policy: ChildPolicy) -> Self {
        self.child_policy = policy;
        self
    }

    /// How long to wait for a first server list before using the resolver's
    /// backends.
    pub fn fallback_timeout(&self) -> Duration {
        self.fallback_timeout
    }

    /// Sets the fallback timeout.
    pub fn with_fallback_timeout(mut self, timeout: Duration) -> Self {
        self.fallback_timeout = timeout;
        self
    }

    /// The backoff between balancer streams that failed before their
    /// handshake.
    pub fn backoff(&self) -> &BackoffConfig {
        &self.backoff
    }

    /// Sets the backoff between failed balancer streams.
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }
}

/// A grpclb config that cannot be used, and why.
///
/// ```
/// use grpc_lb_grpclb::GrpclbConfig;
///
/// let error = GrpclbConfig::from_json(r#"{"childPolicy":"round_robin"}"#).unwrap_err();
/// assert!(error.to_string().contains("childPolicy is not a list"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpclbConfigError {
    message: String,
}

impl GrpclbConfigError {
    fn new(message: impl Into<String>) -> Self {
        GrpclbConfigError {
            message: message.into(),
        }
    }
}

impl fmt::Display for GrpclbConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid grpclb config: {}", self.message)
    }
}

impl std::error::Error for GrpclbConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_grpc_go() {
        let config = GrpclbConfig::from_json("{}").unwrap();
        assert_eq!(config, GrpclbConfig::default());
        assert_eq!(config.child_policy(), ChildPolicy::RoundRobin);
        assert_eq!(config.fallback_timeout(), Duration::from_secs(10));
        assert_eq!(config.service_name(), None);
    }

    #[test]
    fn the_first_known_child_policy_wins() {
        let config = GrpclbConfig::from_json(
            r#"{"childPolicy":[{"weird":{}},{"pick_first":{}},{"round_robin":{}}]}"#,
        )
        .unwrap();
        assert_eq!(config.child_policy(), ChildPolicy::PickFirst);
        let config =
            GrpclbConfig::from_json(r#"{"childPolicy":[{"weird":{}}],"extra":1}"#).unwrap();
        assert_eq!(config.child_policy(), ChildPolicy::RoundRobin);
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        for bad in [
            "[]",
            "not json",
            r#"{"serviceName":1}"#,
            r#"{"childPolicy":{}}"#,
            r#"{"childPolicy":["round_robin"]}"#,
        ] {
            assert!(GrpclbConfig::from_json(bad).is_err(), "{bad}");
        }
        assert!(GrpclbConfig::from_service_config(r#"{"loadBalancingConfig":{}}"#).is_err());
        assert_eq!(
            GrpclbConfig::from_service_config(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
            Ok(None)
        );
    }
}
