//! The gRPC service config: the JSON document that picks a channel's balancing
//! policy and sets per-method timeouts, wait-for-ready and retries, as
//! grpc-go's `serviceconfig` package reads it.
//!
//! ```
//! use std::time::Duration;
//! use grpc_lb_service_config::ServiceConfig;
//!
//! let config: ServiceConfig = r#"{
//!     "loadBalancingConfig": [{"weighted_round_robin": {}}, {"round_robin": {}}],
//!     "methodConfig": [{
//!         "name": [{"service": "helloworld.Greeter"}],
//!         "timeout": "1.5s",
//!         "waitForReady": true,
//!         "retryPolicy": {
//!             "maxAttempts": 3,
//!             "initialBackoff": "0.1s",
//!             "maxBackoff": "1s",
//!             "backoffMultiplier": 2,
//!             "retryableStatusCodes": ["UNAVAILABLE"]
//!         }
//!     }]
//! }"#
//! .parse()?;
//!
//! // The first policy this channel knows wins (gRFC A24).
//! let policy = config.choose_policy(|name| name == "round_robin")?;
//! assert_eq!(policy.as_ref().map(|p| p.name()), Some("round_robin"));
//!
//! let method = config.method_config("/helloworld.Greeter/SayHello").unwrap();
//! assert_eq!(method.timeout(), Some(Duration::from_millis(1500)));
//! assert_eq!(method.retry_policy().unwrap().max_attempts(), 3);
//! # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
//! ```
//!
//! A config that gRPC would refuse is a [`ServiceConfigError`] naming the
//! field and the reason; nothing is silently dropped except fields gRPC does
//! not define, which grpc-go ignores too.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod json;
mod method;
mod outlier;

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::Value;

pub use crate::error::{ServiceConfigError, ServiceConfigErrorKind};
pub use crate::json::json_type_name;
use crate::json::{child_path, Field, Object, Result};
pub use crate::method::{code_name, MethodConfig, MethodName, RetryPolicy, MAX_ATTEMPTS_CAP};
pub use crate::outlier::{
    FailurePercentageEjection, OutlierDetectionPolicy, SuccessRateEjection, OUTLIER_DETECTION,
};

/// A parsed and validated service config.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig = r#"{
///     "loadBalancingConfig": [{"weighted_target": {}}, {"round_robin": {}}],
///     "methodConfig": [
///         {"name": [{}], "timeout": "10s"},
///         {"name": [{"service": "helloworld.Greeter"}], "waitForReady": true, "timeout": "1.5s"}
///     ]
/// }"#.parse()?;
///
/// // The first policy this channel supports wins (gRFC A24).
/// let policy = config.choose_policy(|name| name == "round_robin")?.unwrap();
/// assert_eq!(policy.name(), "round_robin");
///
/// // The most specific method config applies to each RPC.
/// let greeter = config.method_config("/helloworld.Greeter/SayHello").unwrap();
/// assert_eq!(greeter.timeout(), Some(Duration::from_millis(1500)));
/// let other = config.method_config("/routeguide.RouteGuide/GetFeature").unwrap();
/// assert_eq!(other.timeout(), Some(Duration::from_secs(10)));
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceConfig {
    load_balancing_config: Vec<PolicyConfig>,
    load_balancing_policy: Option<String>,
    method_configs: Vec<MethodConfig>,
    /// Index into `method_configs` by service, then method, so that a lookup
    /// on the call path borrows the request's path and allocates nothing.
    methods: MethodIndex,
    health_check: Option<HealthCheckConfig>,
    retry_throttling: Option<RetryThrottling>,
}

/// One entry of `loadBalancingConfig`: a policy name and its own config.
///
/// ```
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig =
///     r#"{"loadBalancingConfig": [{"least_request": {"choiceCount": 3}}]}"#.parse()?;
/// let policy = &config.load_balancing_config()[0];
/// assert_eq!(policy.name(), "least_request");
/// assert_eq!(policy.config()["choiceCount"], 3);
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    name: String,
    config: Value,
    /// Read and checked when the policy is `outlier_detection_experimental`.
    outlier_detection: Option<Box<OutlierDetectionPolicy>>,
}

impl PolicyConfig {
    /// The policy's registered name, such as `round_robin`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's own config object, for the policy to read.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The outlier detection settings and child policies, when this entry is
    /// `outlier_detection_experimental` (gRFC A50); see
    /// [`OutlierDetectionPolicy`].
    pub fn outlier_detection(&self) -> Option<&OutlierDetectionPolicy> {
        self.outlier_detection.as_deref()
    }
}

/// `healthCheckConfig`: which service gRFC A17 health checking watches.
///
/// ```
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig =
///     r#"{"healthCheckConfig": {"serviceName": "helloworld.Greeter"}}"#.parse()?;
/// assert_eq!(config.health_check().unwrap().service_name(), "helloworld.Greeter");
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    service_name: String,
}

impl HealthCheckConfig {
    /// The name sent in `grpc.health.v1.HealthCheckRequest`; empty asks about
    /// the server as a whole.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
}

/// `retryThrottling` (gRFC A6): retries stop while the channel's token count
/// is at or below half of `max_tokens`. Each failure costs one token, each
/// success returns `token_ratio`.
///
/// ```
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig =
///     r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#.parse()?;
/// let throttling = config.retry_throttling().unwrap();
/// assert_eq!(throttling.max_tokens(), 10);
/// assert_eq!(throttling.token_ratio(), 0.1);
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryThrottling {
    max_tokens: u32,
    token_ratio: f64,
}

impl RetryThrottling {
    /// The size of the token bucket, 1 to 1000.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// Tokens returned by each successful RPC; greater than zero.
    pub fn token_ratio(&self) -> f64 {
        self.token_ratio
    }
}

impl ServiceConfig {
    /// Parses and validates a service config.
    pub fn from_json(text: &str) -> std::result::Result<Self, ServiceConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            ServiceConfigError::new("", ServiceConfigErrorKind::Syntax(e.to_string()))
        })?;
        Self::from_value(&value)
    }

    /// Validates a service config already read as JSON.
    pub fn from_value(value: &Value) -> std::result::Result<Self, ServiceConfigError> {
        let root = Field { path: "", value };
        let object = Object {
            path: "",
            map: root.object()?,
        };
        let load_balancing_config = object
            .optional("loadBalancingConfig", parse_policies)?
            .unwrap_or_default();
        let load_balancing_policy =
            object.optional("loadBalancingPolicy", |f| f.string().map(str::to_owned))?;
        let method_configs = object
            .optional("methodConfig", |field| field.each(MethodConfig::parse))?
            .unwrap_or_default();
        let methods = index_methods(&method_configs)?;
        let health_check = object.optional("healthCheckConfig", |field| {
            let object = Object {
                path: field.path,
                map: field.object()?,
            };
            let service_name = object.optional("serviceName", |f| f.string().map(str::to_owned))?;
            Ok(HealthCheckConfig {
                service_name: service_name.unwrap_or_default(),
            })
        })?;
        let retry_throttling = object.optional("retryThrottling", parse_throttling)?;
        Ok(ServiceConfig {
            load_balancing_config,
            load_balancing_policy,
            method_configs,
            methods,
            health_check,
            retry_throttling,
        })
    }

    /// `loadBalancingConfig` in the order given.
    pub fn load_balancing_config(&self) -> &[PolicyConfig] {
        &self.load_balancing_config
    }

    /// The deprecated `loadBalancingPolicy` name, if given.
    pub fn load_balancing_policy(&self) -> Option<&str> {
        self.load_balancing_policy.as_deref()
    }

    /// The policy this config selects among those `supported` says exist.
    ///
    /// The first supported entry of `loadBalancingConfig` wins (gRFC A24); a
    /// list naming none that is supported makes the config invalid. Without
    /// that list, the deprecated `loadBalancingPolicy` is used as grpc-go does
    /// (its name matched case-insensitively, as grpc-go lowercases it).
    /// `Ok(None)` means the config leaves the choice to the channel.
    pub fn choose_policy(
        &self,
        supported: impl Fn(&str) -> bool,
    ) -> std::result::Result<Option<PolicyConfig>, ServiceConfigError> {
        if !self.load_balancing_config.is_empty() {
            return match self
                .load_balancing_config
                .iter()
                .find(|p| supported(&p.name))
            {
                Some(policy) => Ok(Some(policy.clone())),
                None => Err(ServiceConfigError::new(
                    "loadBalancingConfig",
                    ServiceConfigErrorKind::NoSupportedPolicy(
                        self.load_balancing_config
                            .iter()
                            .map(|p| p.name.clone())
                            .collect(),
                    ),
                )),
            };
        }
        match &self.load_balancing_policy {
            Some(name) => {
                let name = name.to_ascii_lowercase();
                if supported(&name) {
                    Ok(Some(PolicyConfig {
                        name,
                        config: Value::Object(Default::default()),
                        outlier_detection: None,
                    }))
                } else {
                    Err(ServiceConfigError::new(
                        "loadBalancingPolicy",
                        ServiceConfigErrorKind::NoSupportedPolicy(vec![name]),
                    ))
                }
            }
            None => Ok(None),
        }
    }

    /// Every `methodConfig` entry, in the order given.
    pub fn method_configs(&self) -> &[MethodConfig] {
        &self.method_configs
    }

    /// The entry for an RPC, given its HTTP/2 path `/package.Service/Method`.
    ///
    /// As in grpc-go, an entry naming the exact method wins over one naming
    /// its whole service, which wins over the default entry (a name with
    /// neither service nor method).
    pub fn method_config(&self, path: &str) -> Option<&MethodConfig> {
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or(("", ""));
        let index = &self.methods;
        let in_service = index
            .services
            .get(service)
            .and_then(|entry| entry.methods.get(method).copied().or(entry.whole_service));
        in_service
            .or(index.default)
            .map(|i| &self.method_configs[i])
    }

    /// `healthCheckConfig`, which turns on client-side health checking.
    pub fn health_check(&self) -> Option<&HealthCheckConfig> {
        self.health_check.as_ref()
    }

    /// `retryThrottling`, if retries are throttled.
    pub fn retry_throttling(&self) -> Option<&RetryThrottling> {
        self.retry_throttling.as_ref()
    }
}

impl FromStr for ServiceConfig {
    type Err = ServiceConfigError;

    fn from_str(text: &str) -> std::result::Result<Self, ServiceConfigError> {
        ServiceConfig::from_json(text)
    }
}

pub(crate) fn parse_policies(field: Field<'_>) -> Result<Vec<PolicyConfig>> {
    field.each(|entry| {
        let path = entry.path;
        let map = entry.object()?;
        let mut pairs = map.iter();
        match (pairs.next(), pairs.next()) {
            (Some((name, config)), None) => {
                let config_path = child_path(path, name);
                let config_field = Field {
                    path: &config_path,
                    value: config,
                };
                config_field.object()?;
                let outlier_detection = match name.as_str() {
                    OUTLIER_DETECTION => {
                        Some(Box::new(OutlierDetectionPolicy::parse(config_field)?))
                    }
                    _ => None,
                };
                Ok(PolicyConfig {
                    name: name.clone(),
                    config: config.clone(),
                    outlier_detection,
                })
            }
            _ => Err(entry.invalid(format!("must name exactly one policy, found {}", map.len()))),
        }
    })
}

#[derive(Clone, Debug, Default, PartialEq)]
struct MethodIndex {
    /// The entry named `{}`, for every method of every service.
    default: Option<usize>,
    services: HashMap<String, ServiceIndex>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ServiceIndex {
    whole_service: Option<usize>,
    methods: HashMap<String, usize>,
}

/// grpc-go refuses a config that names one method twice, and so do we: which
/// of the two entries applies would otherwise depend on their order.
fn index_methods(configs: &[MethodConfig]) -> Result<MethodIndex> {
    let mut index = MethodIndex::default();
    for (i, config) in configs.iter().enumerate() {
        for (j, name) in config.names().iter().enumerate() {
            let slot = if name.service().is_empty() {
                &mut index.default
            } else {
                let service = index.services.entry(name.service().to_owned()).or_default();
                if name.method().is_empty() {
                    &mut service.whole_service
                } else {
                    let free = !service.methods.contains_key(name.method());
                    if free {
                        service.methods.insert(name.method().to_owned(), i);
                        continue;
                    }
                    return Err(duplicate(i, j, name));
                }
            };
            if slot.replace(i).is_some() {
                return Err(duplicate(i, j, name));
            }
        }
    }
    Ok(index)
}

fn duplicate(config: usize, name_index: usize, name: &MethodName) -> ServiceConfigError {
    ServiceConfigError::new(
        format!("methodConfig[{config}].name[{name_index}]"),
        ServiceConfigErrorKind::DuplicateName(name.to_string()),
    )
}

fn parse_throttling(field: Field<'_>) -> Result<RetryThrottling> {
    let object = Object {
        path: field.path,
        map: field.object()?,
    };
    let max_tokens = object.required("maxTokens", |f| {
        let n = f.unsigned(u64::from(u32::MAX))?;
        if !(1..=1000).contains(&n) {
            return Err(f.invalid(format!("must be between 1 and 1000, got {n}")));
        }
        Ok(n as u32)
    })?;
    let token_ratio = object.required("tokenRatio", |f| {
        let ratio = f.number()?;
        if ratio <= 0.0 {
            return Err(f.invalid(format!("must be greater than zero, got {ratio}")));
        }
        Ok(ratio)
    })?;
    Ok(RetryThrottling {
        max_tokens,
        token_ratio,
    })
}
