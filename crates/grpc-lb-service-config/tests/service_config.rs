use std::time::Duration;

use grpc_lb_service_config::{ServiceConfig, ServiceConfigErrorKind, MAX_ATTEMPTS_CAP};
use proptest::prelude::*;
use tonic::Code;

fn parse(text: &str) -> ServiceConfig {
    ServiceConfig::from_json(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

const RETRY: &str = r#""retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s",
    "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", 4]}"#;

#[test]
fn empty_config_chooses_nothing() {
    let config = parse("{}");
    assert_eq!(config.choose_policy(|_| true), Ok(None));
    assert!(config.method_config("/a.B/C").is_none());
    assert!(config.health_check().is_none());
    assert!(config.retry_throttling().is_none());
}

#[test]
fn first_supported_policy_wins() {
    let config = parse(
        r#"{"loadBalancingConfig": [{"xds": {}}, {"least_request": {"choiceCount": 3}},
            {"round_robin": {}}]}"#,
    );
    let policy = config.choose_policy(|name| name != "xds").unwrap().unwrap();
    assert_eq!(policy.name(), "least_request");
    assert_eq!(policy.config()["choiceCount"], 3);
}

#[test]
fn a_list_of_unsupported_policies_is_invalid() {
    let config = parse(r#"{"loadBalancingConfig": [{"xds": {}}, {"grpclb": {}}]}"#);
    let error = config
        .choose_policy(|name| name == "round_robin")
        .unwrap_err();
    assert_eq!(error.field(), "loadBalancingConfig");
    assert_eq!(
        error.kind(),
        &ServiceConfigErrorKind::NoSupportedPolicy(vec!["xds".into(), "grpclb".into()])
    );
    assert!(
        error
            .to_string()
            .contains("none of the policies [xds, grpclb]"),
        "{error}"
    );
}

#[test]
fn deprecated_policy_name_is_used_without_a_list() {
    let config = parse(r#"{"loadBalancingPolicy": "ROUND_ROBIN"}"#);
    let policy = config.choose_policy(|name| name == "round_robin").unwrap();
    assert_eq!(policy.unwrap().name(), "round_robin");
    let both = parse(
        r#"{"loadBalancingPolicy": "round_robin", "loadBalancingConfig": [{"pick_first": {}}]}"#,
    );
    let policy = both.choose_policy(|_| true).unwrap();
    assert_eq!(policy.unwrap().name(), "pick_first");
}

#[test]
fn method_lookup_prefers_method_then_service_then_default() {
    let config = parse(
        r#"{"methodConfig": [
            {"name": [{}], "timeout": "10s"},
            {"name": [{"service": "a.Svc"}], "timeout": "2s"},
            {"name": [{"service": "a.Svc", "method": "Get"}, {"service": "b.Svc", "method": "Put"}],
             "timeout": "0.25s", "waitForReady": true}
        ]}"#,
    );
    let timeout = |path: &str| config.method_config(path).and_then(|m| m.timeout());
    assert_eq!(timeout("/a.Svc/Get"), Some(Duration::from_millis(250)));
    assert_eq!(timeout("/b.Svc/Put"), Some(Duration::from_millis(250)));
    assert_eq!(timeout("/a.Svc/List"), Some(Duration::from_secs(2)));
    assert_eq!(timeout("/b.Svc/Get"), Some(Duration::from_secs(10)));
    assert_eq!(timeout("not a path"), Some(Duration::from_secs(10)));
    let get = config.method_config("/a.Svc/Get").unwrap();
    assert_eq!(get.wait_for_ready(), Some(true));
    assert_eq!(
        config
            .method_config("/a.Svc/List")
            .unwrap()
            .wait_for_ready(),
        None
    );
}

#[test]
fn retry_policy_and_throttling() {
    let config = parse(&format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "s"}}], {RETRY}}}],
            "retryThrottling": {{"maxTokens": 10, "tokenRatio": 0.1}}}}"#
    ));
    let policy = config
        .method_config("/s/m")
        .unwrap()
        .retry_policy()
        .unwrap();
    assert_eq!(policy.max_attempts(), 4);
    assert_eq!(policy.initial_backoff(), Duration::from_millis(100));
    assert_eq!(policy.max_backoff(), Duration::from_secs(1));
    assert_eq!(
        policy.retryable_status_codes(),
        &[Code::Unavailable, Code::DeadlineExceeded]
    );
    assert!(policy.is_retryable(Code::Unavailable));
    assert!(!policy.is_retryable(Code::Internal));
    assert_eq!(policy.nominal_backoff(1), Duration::from_millis(100));
    assert_eq!(policy.nominal_backoff(2), Duration::from_millis(200));
    assert_eq!(policy.nominal_backoff(4), Duration::from_millis(800));
    assert_eq!(policy.nominal_backoff(5), Duration::from_secs(1));
    assert_eq!(policy.nominal_backoff(u32::MAX), Duration::from_secs(1));
    let throttling = config.retry_throttling().unwrap();
    assert_eq!(throttling.max_tokens(), 10);
    assert_eq!(throttling.token_ratio(), 0.1);
}

#[test]
fn max_attempts_is_capped_at_five() {
    let config = parse(
        r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 100,
            "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 1,
            "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
    );
    let policy = config
        .method_config("/x/y")
        .unwrap()
        .retry_policy()
        .unwrap();
    assert_eq!(policy.max_attempts(), MAX_ATTEMPTS_CAP);
}

#[test]
fn health_check_service_name() {
    let config = parse(r#"{"healthCheckConfig": {"serviceName": "helloworld.Greeter"}}"#);
    assert_eq!(
        config.health_check().unwrap().service_name(),
        "helloworld.Greeter"
    );
    assert_eq!(
        parse(r#"{"healthCheckConfig": {}}"#)
            .health_check()
            .unwrap()
            .service_name(),
        ""
    );
}

#[test]
fn unknown_fields_and_nulls_are_ignored_as_grpc_go_does() {
    let config = parse(
        r#"{"futureField": [1, 2], "methodConfig": [{"name": [{"service": "s"}],
            "timeout": null, "hedgingPolicy": {"maxAttempts": 3}}], "retryThrottling": null}"#,
    );
    assert_eq!(config.method_config("/s/m").unwrap().timeout(), None);
}

/// Each invalid config, the field its error must name, and a phrase its message
/// must contain.
const INVALID: &[(&str, &str, &str)] = &[
    ("", "", "not JSON"),
    ("{", "", "not JSON"),
    ("[]", "", "expected an object, found an array"),
    (
        r#"{"loadBalancingConfig": {}}"#,
        "loadBalancingConfig",
        "expected an array",
    ),
    (
        r#"{"loadBalancingConfig": [{}]}"#,
        "loadBalancingConfig[0]",
        "exactly one policy, found 0",
    ),
    (
        r#"{"loadBalancingConfig": [{"a": {}, "b": {}}]}"#,
        "loadBalancingConfig[0]",
        "exactly one policy, found 2",
    ),
    (
        r#"{"loadBalancingConfig": [{"round_robin": []}]}"#,
        "loadBalancingConfig[0].round_robin",
        "expected an object",
    ),
    (
        r#"{"loadBalancingPolicy": 3}"#,
        "loadBalancingPolicy",
        "expected a string, found a number",
    ),
    (
        r#"{"methodConfig": {}}"#,
        "methodConfig",
        "expected an array",
    ),
    (
        r#"{"methodConfig": [{"name": {}}]}"#,
        "methodConfig[0].name",
        "expected an array",
    ),
    (
        r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#,
        "methodConfig[0].name[0]",
        "without its service",
    ),
    (
        r#"{"methodConfig": [{"name": [{"service": 7}]}]}"#,
        "methodConfig[0].name[0].service",
        "expected a string",
    ),
    (
        r#"{"methodConfig": [{"name": [{"service": "s"}]}, {"name": [{"service": "s"}]}]}"#,
        "methodConfig[1].name[0]",
        "/s/* is configured more than once",
    ),
    (
        r#"{"methodConfig": [{"name": [{}, {"service": ""}]}]}"#,
        "methodConfig[0].name[1]",
        "more than once",
    ),
    (
        r#"{"methodConfig": [{"timeout": "1"}]}"#,
        "methodConfig[0].timeout",
        "not a duration",
    ),
    (
        r#"{"methodConfig": [{"timeout": 1}]}"#,
        "methodConfig[0].timeout",
        "expected a string",
    ),
    (
        r#"{"methodConfig": [{"timeout": "-1s"}]}"#,
        "methodConfig[0].timeout",
        "negative",
    ),
    (
        r#"{"methodConfig": [{"waitForReady": "yes"}]}"#,
        "methodConfig[0].waitForReady",
        "expected a boolean",
    ),
    (
        r#"{"methodConfig": [{"maxRequestMessageBytes": -1}]}"#,
        "methodConfig[0].maxRequestMessageBytes",
        "must not be negative",
    ),
    (
        r#"{"methodConfig": [{"maxResponseMessageBytes": 1.5}]}"#,
        "methodConfig[0].maxResponseMessageBytes",
        "whole number",
    ),
    (
        r#"{"methodConfig": [{"retryPolicy": {}}]}"#,
        "methodConfig[0].retryPolicy.maxAttempts",
        "missing",
    ),
    (
        r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 1}}]}"#,
        "methodConfig[0].retryPolicy.maxAttempts",
        "at least 2, got 1",
    ),
    (
        r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 2, "initialBackoff": "0s"}}]}"#,
        "methodConfig[0].retryPolicy.initialBackoff",
        "greater than zero",
    ),
    (
        r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s",
            "maxBackoff": "2s", "backoffMultiplier": 0}}]}"#,
        "methodConfig[0].retryPolicy.backoffMultiplier",
        "greater than zero",
    ),
    (
        r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s",
            "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": []}}]}"#,
        "methodConfig[0].retryPolicy.retryableStatusCodes",
        "at least one status code",
    ),
    (
        r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s",
            "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": ["unavailable"]}}]}"#,
        "methodConfig[0].retryPolicy.retryableStatusCodes[0]",
        "not a status code name",
    ),
    (
        r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s",
            "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": [17]}}]}"#,
        "methodConfig[0].retryPolicy.retryableStatusCodes[0]",
        "at most 16",
    ),
    (
        r#"{"healthCheckConfig": "svc"}"#,
        "healthCheckConfig",
        "expected an object",
    ),
    (
        r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}"#,
        "retryThrottling.maxTokens",
        "between 1 and 1000, got 0",
    ),
    (
        r#"{"retryThrottling": {"maxTokens": 1001, "tokenRatio": 1}}"#,
        "retryThrottling.maxTokens",
        "between 1 and 1000",
    ),
    (
        r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": -0.5}}"#,
        "retryThrottling.tokenRatio",
        "greater than zero",
    ),
    (
        r#"{"retryThrottling": {"maxTokens": 10}}"#,
        "retryThrottling.tokenRatio",
        "missing",
    ),
];

#[test]
fn invalid_configs_name_the_field() {
    for (text, field, phrase) in INVALID {
        let error = ServiceConfig::from_json(text).expect_err(text);
        assert_eq!(error.field(), *field, "{text}: {error}");
        let message = error.to_string();
        assert!(message.contains(phrase), "{text}: {message}");
        if !field.is_empty() {
            assert!(message.contains(field), "{text}: {message}");
        }
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9_.:/ -]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("1s"),
            Just("0.5s"),
            Just("UNAVAILABLE"),
            Just("round_robin")
        ]
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("loadBalancingConfig".to_owned()),
        Just("methodConfig".to_owned()),
        Just("name".to_owned()),
        Just("service".to_owned()),
        Just("method".to_owned()),
        Just("timeout".to_owned()),
        Just("retryPolicy".to_owned()),
        Just("maxAttempts".to_owned()),
        Just("retryableStatusCodes".to_owned()),
        Just("retryThrottling".to_owned()),
        Just("maxTokens".to_owned()),
        "[a-z]{1,4}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Whatever the document, the parser answers with a config or an error; a
    /// config it accepts answers every lookup without panicking.
    #[test]
    fn arbitrary_documents_never_panic(value in json_value(), path in "[/a-z.]{0,10}") {
        if let Ok(config) = ServiceConfig::from_value(&value) {
            let _ = config.method_config(&path);
            let _ = config.choose_policy(|name| name.len() % 2 == 0);
            for method in config.method_configs() {
                if let Some(policy) = method.retry_policy() {
                    prop_assert!((2..=MAX_ATTEMPTS_CAP).contains(&policy.max_attempts()));
                    for retry in 0..8 {
                        prop_assert!(policy.nominal_backoff(retry) <= policy.max_backoff());
                    }
                }
            }
        }
        let text = value.to_string();
        prop_assert_eq!(ServiceConfig::from_json(&text).is_ok(), ServiceConfig::from_value(&value).is_ok());
    }
}
