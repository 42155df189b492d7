//! The tree policies: `grpc-lb call` with ring_hash and weighted_round_robin
//! against `grpc-lb serve` tonic backends on loopback. ring_hash keeps each
//! hash header value on one backend and spreads different values;
//! weighted_round_robin (selected by the service config, no ORCA reports)
//! falls back to round-robin over every backend (gRFC A58).

#[path = "../../grpc-lb-resolve/tests/support/dnsmasq.rs"]
mod dnsmasq;
mod support;

use serde_json::Value;
use support::{grpc_lb, json_of, stderr_of, Serve};

const CALLS: u64 = 30;

fn run(args: &[&str], code: i32) -> Value {
    let output = grpc_lb(args);
    assert_eq!(output.status.code(), Some(code), "{}", stderr_of(&output));
    json_of(&output)
}

/// The backends that answered, with their counts.
fn answered(report: &Value) -> Vec<(String, u64)> {
    report["backends"]
        .as_object()
        .unwrap_or_else(|| panic!("a backends object: {report}"))
        .iter()
        .map(|(addr, count)| (addr.clone(), count.as_u64().unwrap()))
        .filter(|(_, count)| *count > 0)
        .collect()
}

fn ring_hash_call(serve: &Serve, user: &str) -> Value {
    let header = format!("x-user: {user}");
    let calls = CALLS.to_string();
    run(
        &[
            "call",
            &serve.target(),
            "--policy",
            "ring_hash",
            "--ring-hash-header",
            "x-user",
            "-H",
            &header,
            "--requests",
            &calls,
            "--concurrency",
            "4",
            "--json",
        ],
        0,
    )
}

#[test]
fn ring_hash_keeps_one_header_value_on_one_backend_and_spreads_values() {
    let serve = Serve::start(4, &[]);
    let mut chosen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let report = ring_hash_call(&serve, &format!("user-{user}"));
        assert_eq!(report["policy"], "ring_hash_experimental", "{report}");
        assert_eq!(report["tree"]["config"]["requestHashHeader"], "x-user");
        assert_eq!(report["ok"], CALLS, "{report}");
        let answered = answered(&report);
        // Every call of one value reached the same backend.
        assert_eq!(answered.len(), 1, "user-{user}: {report}");
        assert_eq!(answered[0].1, CALLS);
        assert!(serve.addrs.iter().any(|a| a.to_string() == answered[0].0));
        chosen.insert(answered[0].0.clone());
    }
    eprintln!(
        "measured: 12 header values reached {} of 4 backends",
        chosen.len()
    );
    // Twelve values over four backends: more than one backend is used.
    assert!(chosen.len() > 1, "{chosen:?}");
    // The same value again: the same backend (the ring depends only on the
    // addresses).
    let again = answered(&ring_hash_call(&serve, "user-0"));
    let first = answered(&ring_hash_call(&serve, "user-0"));
    assert_eq!(again, first);
}

#[test]
fn weighted_round_robin_by_service_config_spreads_over_every_backend() {
    let serve = Serve::start(3, &[]);
    let report = run(
        &[
            "call",
            &serve.target(),
            "--service-config",
            r#"{"loadBalancingConfig":[{"weighted_round_robin":{"blackoutPeriod":"1s","weightUpdatePeriod":"0.2s"}}]}"#,
            "--requests",
            "90",
            "--json",
        ],
        0,
    )
    .clone();
    assert_eq!(report["policy"], "weighted_round_robin", "{report}");
    assert_eq!(report["tree"]["config"]["blackoutPeriod"], "1s");
    assert_eq!(report["tree"]["config"]["weightUpdatePeriod"], "0.2s");
    assert_eq!(report["service_config_source"], "--service-config");
    assert_eq!(report["ok"], 90, "{report}");
    let answered = answered(&report);
    eprintln!("measured: wrr without ORCA {answered:?}");
    // No backend reports load, so every one is picked in turn (A58's
    // round-robin fallback): each of the three within ±10 % of 30.
    assert_eq!(answered.len(), 3, "{report}");
    for (_, count) in &answered {
        assert!((27..=33).contains(count), "{report}");
    }
}

#[test]
fn a_bad_ring_hash_config_is_a_usage_error() {
    for (config, message) in [
        (
            r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":0}}]}"#,
            "grpc-lb: error: --service-config: ring_hash minRingSize must be at least 1\n",
        ),
        (
            r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":64,"maxRingSize":8}}]}"#,
            "grpc-lb: error: --service-config: ring_hash minRingSize 64 is above maxRingSize 8\n",
        ),
    ] {
        let output = grpc_lb(&["call", "ipv4:127.0.0.1:1", "--service-config", config]);
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(stderr_of(&output), message);
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn ring_hash_by_service_config_takes_its_request_hash_header() {
    let serve = Serve::start(3, &[]);
    let config = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":64,"maxRingSize":256,"requestHashHeader":"x-shard"}}]}"#;
    for shard in ["a", "b", "c"] {
        let header = format!("x-shard: {shard}");
        let report = run(
            &[
                "call",
                &serve.target(),
                "--service-config",
                config,
                "-H",
                &header,
                "--requests",
                "20",
                "--json",
            ],
            0,
        );
        assert_eq!(report["policy"], "ring_hash_experimental", "{report}");
        assert_eq!(report["tree"]["config"]["minRingSize"], 64);
        assert_eq!(report["tree"]["config"]["requestHashHeader"], "x-shard");
        assert_eq!(report["tree"]["state"], "READY", "{report}");
        let answered = answered(&report);
        assert_eq!(answered.len(), 1, "shard {shard}: {report}");
        assert_eq!(answered[0].1, 20);
    }
}

#[test]
fn least_request_experimental_by_name_spreads_over_the_backends() {
    let serve = Serve::start(2, &[]);
    let report = run(
        &[
            "call",
            &serve.target(),
            "--policy",
            "least_request_experimental",
            "--requests",
            "40",
            "--concurrency",
            "4",
            "--json",
        ],
        0,
    );
    assert_eq!(report["policy"], "least_request_experimental", "{report}");
    assert_eq!(report["tree"]["config"]["choiceCount"], 2);
    assert_eq!(report["ok"], 40, "{report}");
    // Both backends take calls; least_request's share depends on load, so
    // only that each got some is asserted.
    assert_eq!(answered(&report).len(), 2, "{report}");
}

#[test]
fn a_dns_txt_service_config_selecting_weighted_round_robin_is_followed() {
    let serve = Serve::start(1, &[]);
    // The config as a TXT record (gRFC A2), in a dnsmasq conf file (the
    // quotes of a JSON record do not survive a command line).
    let record = r#"grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"weighted_round_robin":{"errorUtilizationPenalty":0.5}},{"pick_first":{}}]}}]"#;
    let conf =
        std::env::temp_dir().join(format!("grpc-lb-cli-tree-txt-{}.conf", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "txt-record=_grpc_config.greeter.test,\"{}\"\n",
            record.replace('"', "\\\"")
        ),
    )
    .unwrap();
    let dns = dnsmasq::Dnsmasq::start(
        "127.0.0.1 greeter.test\n",
        &[&format!("--conf-file={}", conf.display())],
    );
    let target = format!(
        "dns://{}/greeter.test:{}",
        dns.authority(),
        serve.addrs[0].port()
    );
    let report = run(&["call", &target, "--requests", "20", "--json"], 0);
    let _ = std::fs::remove_file(&conf);
    assert_eq!(report["policy"], "weighted_round_robin", "{report}");
    assert_eq!(report["service_config_source"], "resolver", "{report}");
    assert_eq!(report["tree"]["config"]["errorUtilizationPenalty"], 0.5);
    assert_eq!(report["ok"], 20, "{report}");
    assert_eq!(
        answered(&report),
        [(serve.addrs[0].to_string(), 20)],
        "{report}"
    );
}
