//! What a channel is running with at the end of a command: its service config
//! in force (the resolver's, else `--service-config`'s) and the policy that
//! config chooses, for the `--json` report and the text report.

use std::time::Duration;

use grpc_lb::balance::PolicyRegistry;
use grpc_lb::service_config::{code_name, MethodConfig, ServiceConfig, OUTLIER_DETECTION};
use serde_json::{json, Map, Value};

/// The policy `config` puts in force, as the channel chooses it: the first
/// supported `loadBalancingConfig` entry (an `outlier_detection_experimental`
/// entry balances with its child policy), else `loadBalancingPolicy`, else
/// `fallback` (`--policy`).
pub(crate) fn policy(config: Option<&ServiceConfig>, fallback: &str) -> String {
    let Some(config) = config else {
        return fallback.to_owned();
    };
    let registry = PolicyRegistry::with_defaults();
    let outlier_possible = !config.load_balancing_config().is_empty();
    let chosen = config.choose_policy(|name| {
        registry.contains(name) || (name == OUTLIER_DETECTION && outlier_possible)
    });
    match chosen {
        Ok(Some(entry)) => match entry.outlier_detection() {
            Some(outlier) => outlier
                .choose_child(|name| registry.contains(name))
                .map(|child| child.name().to_owned())
                .unwrap_or_else(|_| fallback.to_owned()),
            None => entry.name().to_owned(),
        },
        _ => fallback.to_owned(),
    }
}

/// Whether `config` names a policy at all (a `loadBalancingConfig` or a
/// `loadBalancingPolicy`), so that `--policy` gives way to it.
pub(crate) fn names_a_policy(config: &ServiceConfig) -> bool {
    !config.load_balancing_config().is_empty() || config.load_balancing_policy().is_some()
}

/// Where the config in force came from.
pub(crate) fn source(
    in_force: Option<&ServiceConfig>,
    default: Option<&ServiceConfig>,
) -> &'static str {
    match (in_force, default) {
        (None, _) => "none",
        (Some(config), Some(default)) if config == default => "--service-config",
        (Some(_), _) => "resolver",
    }
}

fn seconds(duration: Duration) -> Value {
    // The service config's own duration syntax.
    json!(format!("{}s", duration.as_secs_f64()))
}

fn method_json(method: &MethodConfig) -> Value {
    let names: Vec<Value> = method
        .names()
        .iter()
        .map(|name| {
            let mut object = Map::new();
            if !name.service().is_empty() {
                object.insert("service".into(), json!(name.service()));
            }
            if !name.method().is_empty() {
                object.insert("method".into(), json!(name.method()));
            }
            Value::Object(object)
        })
        .collect();
    let mut object = Map::new();
    object.insert("name".into(), json!(names));
    if let Some(timeout) = method.timeout() {
        object.insert("timeout".into(), seconds(timeout));
    }
    if let Some(wait) = method.wait_for_ready() {
        object.insert("waitForReady".into(), json!(wait));
    }
    if let Some(bytes) = method.max_request_message_bytes() {
        object.insert("maxRequestMessageBytes".into(), json!(bytes));
    }
    if let Some(bytes) = method.max_response_message_bytes() {
        object.insert("maxResponseMessageBytes".into(), json!(bytes));
    }
    if let Some(retry) = method.retry_policy() {
        let codes: Vec<&str> = retry
            .retryable_status_codes()
            .iter()
            .map(|code| code_name(*code))
            .collect();
        object.insert(
            "retryPolicy".into(),
            json!({
                "maxAttempts": retry.max_attempts(),
                "initialBackoff": seconds(retry.initial_backoff()),
                "maxBackoff": seconds(retry.max_backoff()),
                "backoffMultiplier": retry.backoff_multiplier(),
                "retryableStatusCodes": codes,
            }),
        );
    }
    Value::Object(object)
}

/// The config as the channel read it, in the service config's JSON names
/// (what was parsed and is applied, not the text given).
pub(crate) fn config_json(config: &ServiceConfig) -> Value {
    let mut object = Map::new();
    if !config.load_balancing_config().is_empty() {
        let entries: Vec<Value> = config
            .load_balancing_config()
            .iter()
            .map(|entry| json!({ entry.name(): entry.config() }))
            .collect();
        object.insert("loadBalancingConfig".into(), json!(entries));
    }
    if let Some(policy) = config.load_balancing_policy() {
        object.insert("loadBalancingPolicy".into(), json!(policy));
    }
    if !config.method_configs().is_empty() {
        let methods: Vec<Value> = config.method_configs().iter().map(method_json).collect();
        object.insert("methodConfig".into(), json!(methods));
    }
    if let Some(health) = config.health_check() {
        object.insert(
            "healthCheckConfig".into(),
            json!({"serviceName": health.service_name()}),
        );
    }
    if let Some(throttling) = config.retry_throttling() {
        object.insert(
            "retryThrottling".into(),
            json!({"maxTokens": throttling.max_tokens(), "tokenRatio": throttling.token_ratio()}),
        );
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_follows_the_config_as_the_channel_chooses_it() {
        let parse = |text: &str| ServiceConfig::from_json(text).unwrap();
        assert_eq!(policy(None, "pick_first"), "pick_first");
        let rr = parse(r#"{"loadBalancingConfig":[{"grpclb":{}},{"round_robin":{}}]}"#);
        assert_eq!(policy(Some(&rr), "pick_first"), "round_robin");
        let legacy = parse(r#"{"loadBalancingPolicy":"ROUND_ROBIN"}"#);
        assert_eq!(policy(Some(&legacy), "pick_first"), "round_robin");
        let outlier = parse(
            r#"{"loadBalancingConfig":[{"outlier_detection_experimental":
                {"childPolicy":[{"least_request":{}}]}}]}"#,
        );
        assert_eq!(policy(Some(&outlier), "pick_first"), "least_request");
        let silent = parse(r#"{"methodConfig":[{"name":[{}],"timeout":"1s"}]}"#);
        assert_eq!(policy(Some(&silent), "p2c"), "p2c");
    }

    #[test]
    fn the_config_is_reported_as_parsed() {
        let config = ServiceConfig::from_json(
            r#"{"methodConfig":[{"name":[{"service":"helloworld.Greeter"}],"timeout":"1.5s",
                "retryPolicy":{"maxAttempts":3,"initialBackoff":"0.1s","maxBackoff":"1s",
                "backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}],
                "retryThrottling":{"maxTokens":10,"tokenRatio":0.5}}"#,
        )
        .unwrap();
        let json = config_json(&config);
        let method = &json["methodConfig"][0];
        assert_eq!(method["name"][0]["service"], "helloworld.Greeter");
        assert_eq!(method["timeout"], "1.5s");
        assert_eq!(method["retryPolicy"]["maxAttempts"], 3);
        assert_eq!(
            method["retryPolicy"]["retryableStatusCodes"][0],
            "UNAVAILABLE"
        );
        assert_eq!(json["retryThrottling"]["maxTokens"], 10);
        assert_eq!(source(Some(&config), Some(&config)), "--service-config");
        assert_eq!(source(Some(&config), None), "resolver");
        assert_eq!(source(None, Some(&config)), "none");
    }
}
