//! Building tree policies by name and from a service config's
//! `loadBalancingConfig` (grpc-go's `balancer.Register` / `balancer.Get` and
//! `ParseConfig`), with each policy's JSON config read with its defaults.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use grpc_lb_service_config::{ServiceConfig, ServiceConfigError};
use serde_json::{Map, Value};

#[cfg(test)]
use super::WrrConfig;
use super::{
    PickFirst, Policy, RingHash, RingHashConfigError, RoundRobin, WeightedRoundRobin,
    WrrConfigError,
};

/// Why a policy could not be built from a name or config.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PolicyConfigError {
    /// No builder is registered under this name.
    UnknownPolicy(String),
    /// The service config itself is invalid, or names no registered policy.
    ServiceConfig(ServiceConfigError),
    /// A field of a policy's config has the wrong JSON type or an invalid value.
    InvalidField {
        /// The policy's name.
        policy: String,
        /// The field, as in the JSON (`minRingSize`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The policy's config is not a JSON object.
    NotAnObject(String),
    /// ring_hash's config failed its checks.
    RingHash(RingHashConfigError),
    /// weighted_round_robin's config failed its checks.
    Wrr(WrrConfigError),
}

impl fmt::Display for PolicyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyConfigError::UnknownPolicy(name) => {
                write!(f, "no load balancing policy {name:?}")
            }
            PolicyConfigError::ServiceConfig(error) => write!(f, "{error}"),
            PolicyConfigError::InvalidField {
                policy,
                field,
                reason,
            } => write!(f, "{policy} config field {field}: {reason}"),
            PolicyConfigError::NotAnObject(policy) => {
                write!(f, "{policy} config is not a JSON object")
            }
            PolicyConfigError::RingHash(error) => write!(f, "{error}"),
            PolicyConfigError::Wrr(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for PolicyConfigError {}

/// The policy a service config chose: the name it was chosen by and the
/// policy built from its config.
pub type ChosenPolicy = (String, Box<dyn Policy>);

/// Builds one kind of policy from its `loadBalancingConfig` object.
pub trait PolicyBuilder: Send + Sync + 'static {
    /// A new policy from `config` (an empty object means every default).
    fn build(&self, config: &Value) -> Result<Box<dyn Policy>, PolicyConfigError>;
}

impl<F> PolicyBuilder for F
where
    F: Fn(&Value) -> Result<Box<dyn Policy>, PolicyConfigError> + Send + Sync + 'static,
{
    fn build(&self, config: &Value) -> Result<Box<dyn Policy>, PolicyConfigError> {
        self(config)
    }
}

/// The policies that can be built by name: the provided ones
/// (`pick_first`, `round_robin`, `least_request_experimental` and
/// `least_request`, `ring_hash_experimental` and `ring_hash`,
/// `weighted_round_robin`) and any a user registers.
///
/// ```
/// use grpc_lb_balance::tree::{PolicyRegistry, Policy, RoundRobin};
/// use grpc_lb_service_config::ServiceConfig;
///
/// let mut registry = PolicyRegistry::new();
/// assert_eq!(registry.build_named("ring_hash").unwrap().name(), "ring_hash_experimental");
///
/// let config: ServiceConfig = r#"{"loadBalancingConfig": [
///     {"my_policy": {}},
///     {"ring_hash_experimental": {"minRingSize": 16, "requestHashHeader": "x-user"}}
/// ]}"#.parse().unwrap();
/// let (name, policy) = registry.from_service_config(&config).unwrap().unwrap();
/// assert_eq!((name.as_str(), policy.name()), ("ring_hash_experimental", "ring_hash_experimental"));
///
/// // A user's own builder; now the first entry wins.
/// registry.register("my_policy", |_: &serde_json::Value| {
///     Ok(Box::new(RoundRobin::new()) as Box<dyn Policy>)
/// });
/// let (name, _) = registry.from_service_config(&config).unwrap().unwrap();
/// assert_eq!(name, "my_policy");
/// ```
#[derive(Clone)]
pub struct PolicyRegistry {
    builders: HashMap<String, Arc<dyn PolicyBuilder>>,
}

impl fmt::Debug for PolicyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.builders.keys().collect();
        names.sort();
        f.debug_struct("PolicyRegistry")
            .field("names", &names)
            .finish()
    }
}

impl Default for PolicyRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyRegistry {
    /// A registry of the provided policies.
    pub fn new() -> Self {
        let mut registry = PolicyRegistry {
            builders: HashMap::new(),
        };
        registry.register("pick_first", |config: &Value| {
            object("pick_first", config)?;
            Ok(Box::new(PickFirst::new()) as Box<dyn Policy>)
        });
        registry.register("round_robin", |config: &Value| {
            object("round_robin", config)?;
            Ok(Box::new(RoundRobin::new()) as Box<dyn Policy>)
        });
        for name in ["least_request_experimental", "least_request"] {
            registry.register(name, move |config: &Value| {
                Ok(Box::new(least_request(name, config)?) as Box<dyn Policy>)
            });
        }
        for name in ["ring_hash_experimental", "ring_hash"] {
            registry.register(name, move |config: &Value| {
                let config = ring_hash_config(name, config)?;
                Ok(Box::new(RingHash::new(config)) as Box<dyn Policy>)
            });
        }
        registry.register("weighted_round_robin", |config: &Value| {
            let config = wrr_config("weighted_round_robin", config)?;
            Ok(Box::new(WeightedRoundRobin::new(config)) as Box<dyn Policy>)
        });
        registry
    }

    /// Registers (or replaces) the builder for `name`.
    pub fn register(&mut self, name: impl Into<String>, builder: impl PolicyBuilder) {
        self.builders.insert(name.into(), Arc::new(builder));
    }

    /// Whether a builder is registered for `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.builders.contains_key(name)
    }

    /// The policy `name` with its config `config`.
    pub fn build(&self, name: &str, config: &Value) -> Result<Box<dyn Policy>, PolicyConfigError> {
        let builder = self
            .builders
            .get(name)
            .ok_or_else(|| PolicyConfigError::UnknownPolicy(name.to_owned()))?;
        builder.build(config)
    }

    /// The policy `name` with every default.
    pub fn build_named(&self, name: &str) -> Result<Box<dyn Policy>, PolicyConfigError> {
        self.build(name, &Value::Object(Map::new()))
    }

    /// The policy a service config selects: the first `loadBalancingConfig`
    /// entry with a registered builder (as grpc-go), else the deprecated
    /// `loadBalancingPolicy`; `Ok(None)` when the config names neither. An
    /// entry that is chosen and whose config is invalid is an error (grpc-go
    /// rejects the whole service config then).
    pub fn from_service_config(
        &self,
        config: &ServiceConfig,
    ) -> Result<Option<ChosenPolicy>, PolicyConfigError> {
        let chosen = config
            .choose_policy(|name| self.contains(name))
            .map_err(PolicyConfigError::ServiceConfig)?;
        let Some(chosen) = chosen else {
            return Ok(None);
        };
        let policy = self.build(chosen.name(), chosen.config())?;
        Ok(Some((chosen.name().to_owned(), policy)))
    }

    /// [`from_service_config`](Self::from_service_config) from JSON text.
    pub fn from_service_config_json(
        &self,
        json: &str,
    ) -> Result<Option<ChosenPolicy>, PolicyConfigError> {
        let config = ServiceConfig::from_json(json).map_err(PolicyConfigError::ServiceConfig)?;
        self.from_service_config(&config)
    }
}

#[path = "registry_fields.rs"]
mod fields;

use self::fields::{least_request, object, ring_hash_config, wrr_config};

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
