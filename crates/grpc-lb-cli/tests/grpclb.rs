//! grpclb targets: `grpc-lb call` against a real tonic grpclb balancer and
//! tonic backends on loopback (grpc-lb-grpclb's test servers): calls follow
//! the balancer's server list, drops are counted, the resolver's backends
//! are the fallback when no balancer answers, and a dns target finds its
//! balancer in `_grpclb._tcp.<host>` SRV records served by a real dnsmasq.

#[path = "../../grpc-lb-resolve/tests/support/dnsmasq.rs"]
mod dnsmasq;
#[path = "../../grpc-lb-grpclb/tests/support/mod.rs"]
mod grpclb_support;
mod support;

use std::net::SocketAddr;

use dnsmasq::Dnsmasq;
use grpclb_support::{backend, drop_entry, server, KillableServer, TestBalancer};
use serde_json::Value;
use support::{dead_port, grpc_lb, ipv4, json_of, stderr_of};

const ROUND_ROBIN: &str = r#"{"loadBalancingConfig":[{"grpclb":{"childPolicy":[{"round_robin":{}}]}},{"pick_first":{}}]}"#;

/// Runs the tool off the runtime that serves the balancer and backends.
async fn run(args: Vec<String>, code: i32) -> Value {
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        grpc_lb(&args)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(code), "{}", stderr_of(&output));
    json_of(&output)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn count(report: &Value, addr: SocketAddr) -> u64 {
    report["backends"][addr.to_string()].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_the_balancers_list_and_its_drops_are_counted() {
    let a = backend("a").await;
    let b = backend("b").await;
    let fallback = backend("fallback").await;
    let balancer = TestBalancer::new(None);
    let lb = KillableServer::start(balancer.routes()).await;
    // One entry in three drops: 100 of 300 calls, the rest round robin.
    balancer.set_servers(vec![
        server(a.addr(), "tok-a"),
        server(b.addr(), "tok-b"),
        drop_entry("tok-drop"),
    ]);
    let target = ipv4(&[fallback.addr()]);
    let report = run(
        args(&[
            "call",
            &target,
            "--service-config",
            ROUND_ROBIN,
            "--grpclb-balancer",
            &lb.addr().to_string(),
            "--requests",
            "300",
            "--json",
        ]),
        // The drops fail their calls.
        1,
    )
    .await;

    assert_eq!(report["policy"], "grpclb", "{report}");
    let grpclb = &report["grpclb"];
    assert_eq!(grpclb["balancers"][0], lb.addr().to_string(), "{report}");
    assert_eq!(grpclb["balancers_from"], "flag");
    assert_eq!(grpclb["mode"], "balancer", "{report}");
    assert_eq!(grpclb["in_fallback"], false);
    assert_eq!(grpclb["balancer_connected"], true);
    assert_eq!(grpclb["balancer_channel_state"], "READY", "{report}");
    assert_eq!(grpclb["child_policy"], "round_robin");
    assert_eq!(grpclb["fallback_backends"][0], fallback.addr().to_string());
    assert_eq!(grpclb["server_list"].as_array().unwrap().len(), 3);
    let dropped = grpclb["dropped"].as_u64().unwrap();
    // The drop share within ±5 % of a third.
    assert!((85..=115).contains(&dropped), "{report}");
    assert_eq!(report["codes"]["UNAVAILABLE"], dropped, "{report}");
    assert_eq!(report["ok"].as_u64().unwrap() + dropped, 300, "{report}");
    // The list's backends share the rest within ±10 %; the fallback none.
    let (to_a, to_b) = (count(&report, a.addr()), count(&report, b.addr()));
    eprintln!("measured: a {to_a}, b {to_b}, dropped {dropped} of 300");
    assert_eq!(to_a + to_b, 300 - dropped, "{report}");
    for share in [to_a, to_b] {
        let half = (300 - dropped) as f64 / 2.0;
        assert!((share as f64 - half).abs() <= half * 0.1, "{report}");
    }
    assert_eq!(count(&report, fallback.addr()), 0, "{report}");
    // The balancer was asked for the target's name.
    let received = balancer.received().borrow().clone();
    assert_eq!(received.names[0], fallback.addr().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_balancer_the_calls_fall_back_to_the_resolvers_backends() {
    let one = backend("one").await;
    let two = backend("two").await;
    let nobody = dead_port();
    let target = ipv4(&[one.addr(), two.addr()]);
    let report = run(
        args(&[
            "call",
            &target,
            "--policy",
            "grpclb",
            "--grpclb-balancer",
            &nobody.to_string(),
            "--grpclb-fallback-timeout-ms",
            "300",
            "--requests",
            "40",
            "--json",
        ]),
        0,
    )
    .await;

    assert_eq!(report["policy"], "grpclb", "{report}");
    assert_eq!(report["ok"], 40, "{report}");
    let grpclb = &report["grpclb"];
    assert_eq!(grpclb["mode"], "fallback", "{report}");
    assert_eq!(grpclb["in_fallback"], true);
    assert_eq!(grpclb["fallback_timeout_ms"], 300);
    assert_eq!(grpclb["balancer_connected"], false);
    assert_ne!(grpclb["balancer_channel_state"], "READY", "{report}");
    assert_eq!(grpclb["server_list"], Value::Null);
    assert_eq!(grpclb["dropped"], 0);
    // The fallback runs under the default child policy, round robin (the
    // first calls may find one backend READY before the other).
    let (to_one, to_two) = (count(&report, one.addr()), count(&report, two.addr()));
    eprintln!(
        "measured: fallback {to_one}/{to_two} of 40 in {} ms",
        report["duration_ms"]
    );
    assert_eq!(to_one + to_two, 40, "{report}");
    assert!(to_one >= 10 && to_two >= 10, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_target_finds_its_balancer_in_srv_records() {
    let a = backend("a").await;
    let b = backend("b").await;
    let fallback = backend("fallback").await;
    let balancer = TestBalancer::new(None);
    let lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a"), server(b.addr(), "tok-b")]);
    let srv = format!(
        "--srv-host=_grpclb._tcp.greeter.test,lb.test,{},0,0",
        lb.addr().port()
    );
    let dns = Dnsmasq::start("127.0.0.1 greeter.test\n127.0.0.1 lb.test\n", &[&srv]);
    let target = format!(
        "dns://{}/greeter.test:{}",
        dns.authority(),
        fallback.addr().port()
    );
    let pick_first = r#"{"loadBalancingConfig":[{"grpclb":{"childPolicy":[{"pick_first":{}}],
        "serviceName":"greeter.service"}}]}"#;

    // The load: pick_first sticks to the list's first backend.
    let report = run(
        args(&[
            "call",
            &target,
            "--service-config",
            pick_first,
            "--requests",
            "50",
            "--json",
        ]),
        0,
    )
    .await;
    assert_eq!(report["policy"], "grpclb", "{report}");
    let grpclb = &report["grpclb"];
    assert_eq!(grpclb["balancers_from"], "resolver");
    assert_eq!(grpclb["balancers"][0], lb.addr().to_string(), "{report}");
    assert_eq!(grpclb["fallback_backends"][0], fallback.addr().to_string());
    assert_eq!(grpclb["mode"], "balancer");
    assert_eq!(grpclb["child_policy"], "pick_first");
    assert_eq!(count(&report, a.addr()), 50, "{report}");

    // A single call (SayHello, its schema built in), through the same stack.
    let report = run(
        args(&[
            "call",
            &target,
            "-d",
            r#"{"name":"x"}"#,
            "--service-config",
            pick_first,
            "--json",
        ]),
        0,
    )
    .await;
    assert_eq!(report["policy"], "grpclb", "{report}");
    assert_eq!(report["backend"], a.addr().to_string(), "{report}");
    assert_eq!(report["responses"][0]["message"], "a tok-a", "{report}");
    assert_eq!(report["grpclb"]["balancers_from"], "resolver");
    // Each run asked for the config's serviceName.
    let received = balancer.received().borrow().clone();
    assert_eq!(received.names, ["greeter.service", "greeter.service"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_txt_service_config_selecting_grpclb_is_followed() {
    let a = backend("a").await;
    let b = backend("b").await;
    let fallback = backend("fallback").await;
    let balancer = TestBalancer::new(None);
    let lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a"), server(b.addr(), "tok-b")]);
    // The config as a TXT record (gRFC A2), in a dnsmasq conf file (the
    // quotes of a JSON record do not survive a command line).
    let record = r#"grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"grpclb":{"childPolicy":[{"round_robin":{}}]}},{"pick_first":{}}]}}]"#;
    let conf = std::env::temp_dir().join(format!(
        "grpc-lb-cli-grpclb-txt-{}.conf",
        std::process::id()
    ));
    std::fs::write(
        &conf,
        format!(
            "txt-record=_grpc_config.greeter.test,\"{}\"\nsrv-host=_grpclb._tcp.greeter.test,lb.test,{},0,0\n",
            record.replace('"', "\\\""),
            lb.addr().port()
        ),
    )
    .unwrap();
    let dns = Dnsmasq::start(
        "127.0.0.1 greeter.test\n127.0.0.1 lb.test\n",
        &[&format!("--conf-file={}", conf.display())],
    );
    let target = format!(
        "dns://{}/greeter.test:{}",
        dns.authority(),
        fallback.addr().port()
    );
    let report = run(args(&["call", &target, "--requests", "100", "--json"]), 0).await;
    let _ = std::fs::remove_file(&conf);

    assert_eq!(report["policy"], "grpclb", "{report}");
    assert_eq!(report["service_config_source"], "resolver", "{report}");
    assert_eq!(
        report["service_config"]["loadBalancingConfig"][0]["grpclb"]["childPolicy"][0],
        serde_json::json!({"round_robin": {}}),
        "{report}"
    );
    let grpclb = &report["grpclb"];
    assert_eq!(grpclb["balancers_from"], "resolver");
    assert_eq!(grpclb["balancers"][0], lb.addr().to_string(), "{report}");
    assert_eq!(grpclb["mode"], "balancer", "{report}");
    let (to_a, to_b) = (count(&report, a.addr()), count(&report, b.addr()));
    assert_eq!(to_a + to_b, 100, "{report}");
    assert!(to_a >= 40 && to_b >= 40, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_no_backend_takes_ends_at_its_deadline() {
    let fallback = backend("fallback").await;
    let nobody = dead_port();
    // No balancer, and fallback only after grpc-go's 10 s: the calls wait
    // for backends until their deadline.
    let report = run(
        args(&[
            "call",
            &ipv4(&[fallback.addr()]),
            "--policy",
            "grpclb",
            "--grpclb-balancer",
            &nobody.to_string(),
            "--timeout-ms",
            "200",
            "--requests",
            "2",
            "--json",
        ]),
        1,
    )
    .await;
    assert_eq!(report["codes"]["DEADLINE_EXCEEDED"], 2, "{report}");
    assert_eq!(report["grpclb"]["mode"], "waiting", "{report}");
    assert_eq!(report["grpclb"]["fallback_timeout_ms"], 10_000);
    assert_eq!(report["backends"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_balancer_address_the_fallback_is_at_once_and_fails_fast_when_down() {
    // An ipv4 target, no --grpclb-balancer: no balancer can be found, so
    // the resolver's backends are used at once (grpc-go); the one backend
    // is down, so calls fail fast with UNAVAILABLE, as without grpclb.
    let down = dead_port();
    let report = run(
        args(&[
            "call",
            &ipv4(&[down]),
            "--policy",
            "grpclb",
            "--requests",
            "3",
            "--json",
        ]),
        1,
    )
    .await;
    assert_eq!(report["codes"]["UNAVAILABLE"], 3, "{report}");
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&down.to_string()), "{report}");
    assert_eq!(report["grpclb"]["mode"], "fallback", "{report}");
    assert_eq!(report["grpclb"]["fallback_timeout_ms"], 0);
    assert_eq!(report["grpclb"]["balancers"], serde_json::json!([]));
}
