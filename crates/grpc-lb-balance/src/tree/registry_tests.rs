use std::time::Duration;

use serde_json::json;

use super::fields::parse_duration;
use super::*;

fn err(registry: &PolicyRegistry, name: &str, config: Value) -> PolicyConfigError {
    match registry.build(name, &config) {
        Ok(policy) => panic!("{name} {config} built {}", policy.name()),
        Err(error) => error,
    }
}

#[test]
fn every_provided_name_builds_its_policy() {
    let registry = PolicyRegistry::new();
    for (name, built) in [
        ("pick_first", "pick_first"),
        ("round_robin", "round_robin"),
        ("least_request_experimental", "least_request_experimental"),
        ("least_request", "least_request_experimental"),
        ("ring_hash_experimental", "ring_hash_experimental"),
        ("ring_hash", "ring_hash_experimental"),
        ("weighted_round_robin", "weighted_round_robin"),
    ] {
        let policy = registry.build_named(name).unwrap();
        assert_eq!(policy.name(), built, "{name}");
        // null reads as every default too.
        assert!(registry.build(name, &Value::Null).is_ok(), "{name}");
    }
    assert_eq!(
        registry.build_named("grpclb").err(),
        Some(PolicyConfigError::UnknownPolicy("grpclb".into()))
    );
}

#[test]
fn ring_hash_fields_defaults_and_caps() {
    let config = ring_hash_config("ring_hash", &json!({})).unwrap();
    assert_eq!((config.min_ring_size, config.max_ring_size), (1024, 4096));
    assert_eq!(config.request_hash_header, None);
    let config = ring_hash_config(
        "ring_hash",
        &json!({"minRingSize": "10", "maxRingSize": 100_000, "requestHashHeader": "X-Shard"}),
    )
    .unwrap();
    // maxRingSize is capped at GRPC_RING_HASH_CAP's default, 4096.
    assert_eq!((config.min_ring_size, config.max_ring_size), (10, 4096));
    assert_eq!(config.request_hash_header.as_deref(), Some("x-shard"));
    assert_eq!(
        ring_hash_config("ring_hash", &json!({"requestHashHeader": ""}))
            .unwrap()
            .request_hash_header,
        None
    );

    let registry = PolicyRegistry::new();
    assert!(matches!(
        err(&registry, "ring_hash", json!({"minRingSize": 0})),
        PolicyConfigError::RingHash(RingHashConfigError::Zero { .. })
    ));
    assert!(matches!(
        err(&registry, "ring_hash", json!({"minRingSize": 9_000_000})),
        PolicyConfigError::RingHash(RingHashConfigError::AboveLimit { .. })
    ));
    assert!(matches!(
        err(
            &registry,
            "ring_hash",
            json!({"minRingSize": 20, "maxRingSize": 10})
        ),
        PolicyConfigError::RingHash(RingHashConfigError::MinAboveMax { .. })
    ));
    assert!(matches!(
        err(
            &registry,
            "ring_hash",
            json!({"requestHashHeader": "key-bin"})
        ),
        PolicyConfigError::RingHash(_)
    ));
    for bad in [
        json!({"minRingSize": -1}),
        json!({"minRingSize": 1.5}),
        json!({"maxRingSize": true}),
        json!({"requestHashHeader": 7}),
    ] {
        let error = err(&registry, "ring_hash_experimental", bad.clone());
        assert!(
            matches!(error, PolicyConfigError::InvalidField { .. }),
            "{bad}: {error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("ring_hash_experimental config field "),
            "{error}"
        );
    }
    assert_eq!(
        err(&registry, "ring_hash", json!([1])),
        PolicyConfigError::NotAnObject("ring_hash".into())
    );
}

#[test]
fn wrr_fields_defaults_and_checks() {
    let config = wrr_config("weighted_round_robin", &json!({})).unwrap();
    assert_eq!(config, WrrConfig::default().validate().unwrap());
    assert_eq!(config.blackout_period, Duration::from_secs(10));
    assert_eq!(config.weight_expiration_period, Duration::from_secs(180));
    assert_eq!(config.weight_update_period, Duration::from_secs(1));
    assert_eq!(config.oob_reporting_period, Duration::from_secs(10));
    assert_eq!(config.error_utilization_penalty, 1.0);
    let config = wrr_config(
        "weighted_round_robin",
        &json!({
            "blackoutPeriod": "0s",
            "weightExpirationPeriod": "60s",
            "weightUpdatePeriod": "0.01s",
            "errorUtilizationPenalty": 0.5,
            "oobReportingPeriod": "2.5s",
            "somethingNew": 1
        }),
    )
    .unwrap();
    assert_eq!(config.blackout_period, Duration::ZERO);
    assert_eq!(config.weight_expiration_period, Duration::from_secs(60));
    // Raised to A58's minimum of 100 ms.
    assert_eq!(config.weight_update_period, Duration::from_millis(100));
    assert_eq!(config.oob_reporting_period, Duration::from_millis(2500));
    assert_eq!(config.error_utilization_penalty, 0.5);

    let registry = PolicyRegistry::new();
    assert!(matches!(
        err(
            &registry,
            "weighted_round_robin",
            json!({"errorUtilizationPenalty": -1})
        ),
        PolicyConfigError::Wrr(WrrConfigError::NegativePenalty(_))
    ));
    for bad in [
        json!({"blackoutPeriod": 10}),
        json!({"blackoutPeriod": "10"}),
        json!({"blackoutPeriod": "-1s"}),
        json!({"weightUpdatePeriod": "1.0000000001s"}),
        json!({"enableOobLoadReport": "yes"}),
        json!({"errorUtilizationPenalty": "1"}),
    ] {
        let error = err(&registry, "weighted_round_robin", bad.clone());
        assert!(
            matches!(error, PolicyConfigError::InvalidField { .. }),
            "{bad}: {error}"
        );
    }
}

#[test]
fn durations_as_proto_json() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(
        parse_duration("0.000000001s").unwrap(),
        Duration::from_nanos(1)
    );
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    for bad in [
        "",
        "s",
        ".5s",
        "1",
        "1m",
        "1.s5",
        "+1s",
        "99999999999999999999s",
        "1e3s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn least_request_choice_count() {
    let registry = PolicyRegistry::new();
    assert_eq!(
        least_request("least_request", &json!({}))
            .unwrap()
            .choice_count(),
        2
    );
    assert_eq!(
        least_request("least_request", &json!({"choiceCount": 5}))
            .unwrap()
            .choice_count(),
        5
    );
    // Above 10 is lowered to 10, below 2 rejected (A48, grpc-go).
    assert_eq!(
        least_request("least_request", &json!({"choiceCount": 50}))
            .unwrap()
            .choice_count(),
        10
    );
    assert!(matches!(
        err(
            &registry,
            "least_request_experimental",
            json!({"choiceCount": 1})
        ),
        PolicyConfigError::InvalidField {
            field: "choiceCount",
            ..
        }
    ));
}

#[test]
fn service_config_first_supported_entry_wins() {
    let registry = PolicyRegistry::new();
    let (name, policy) = registry
        .from_service_config_json(
            r#"{"loadBalancingConfig": [{"xds_cluster_impl_experimental": {}}, {"weighted_round_robin": {"blackoutPeriod": "1s"}}, {"round_robin": {}}]}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (name.as_str(), policy.name()),
        ("weighted_round_robin", "weighted_round_robin")
    );
    // The deprecated name, case-insensitively.
    let (name, _) = registry
        .from_service_config_json(r#"{"loadBalancingPolicy": "ROUND_ROBIN"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(name, "round_robin");
    assert!(registry.from_service_config_json("{}").unwrap().is_none());
    // None supported, and a chosen entry with a bad config, are errors.
    assert!(matches!(
        registry
            .from_service_config_json(r#"{"loadBalancingConfig": [{"grpclb": {}}]}"#)
            .err(),
        Some(PolicyConfigError::ServiceConfig(_))
    ));
    assert!(matches!(
        registry
            .from_service_config_json(r#"{"loadBalancingConfig": [{"ring_hash_experimental": {"minRingSize": 0}}, {"round_robin": {}}]}"#)
            .err(),
        Some(PolicyConfigError::RingHash(_))
    ));
    assert!(matches!(
        registry.from_service_config_json("not json").err(),
        Some(PolicyConfigError::ServiceConfig(_))
    ));
}

#[test]
fn a_user_builder_replaces_or_adds() {
    let mut registry = PolicyRegistry::new();
    registry.register("round_robin", |_: &Value| {
        Ok(Box::new(PickFirst::new()) as Box<dyn Policy>)
    });
    assert_eq!(
        registry.build_named("round_robin").unwrap().name(),
        "pick_first"
    );
    assert!(!registry.contains("custom"));
    registry.register("custom", |config: &Value| {
        Err(PolicyConfigError::InvalidField {
            policy: "custom".into(),
            field: "x",
            reason: format!("rejects {config}"),
        })
    });
    assert!(registry.contains("custom"));
    assert!(registry.build_named("custom").is_err());
}
