//! The channel flags and `--service-config` applied in full, each observed at
//! a real server on loopback or in the `--json` report: retries and their
//! throttle, message sizes, timeouts, waitForReady, health checking, outlier
//! detection, the user agent and authority, the connect timeout, max waiting,
//! idle mode in `watch`, the etcd resolver, and a service config that came
//! from DNS.

mod support;

#[path = "../../grpc-lb-resolve/tests/support/dnsmasq.rs"]
mod dnsmasq;
// Restarting and deleting are for the resolver's own tests.
#[allow(dead_code)]
#[path = "../../grpc-lb-resolve/tests/support/etcd_server.rs"]
mod etcd_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use grpc_lb_helloworld::proto::{Greeter, GreeterServer, HelloReply, HelloRequest};
use serde_json::{json, Value};
use support::*;

/// A retryPolicy for SayHello: 5 attempts on UNAVAILABLE, short backoff.
const RETRY_5: &str = r#"{"methodConfig": [{"name": [{"service": "helloworld.Greeter"}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]"#;

fn config(extra: &str) -> String {
    format!("{RETRY_5}{extra}}}")
}

fn call_json(args: &[&str]) -> Value {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    all.push("--json");
    json_of(&grpc_lb(&all))
}

#[test]
fn a_retry_policy_turns_a_failing_backend_into_no_failures() {
    // Round robin alternates: a retry of the always-UNAVAILABLE backend's
    // call goes to the healthy one.
    let bad = Serve::start(1, &["--error-rate", "1"]);
    let good = Serve::start(1, &[]);
    let target = ipv4(&[bad.addrs[0], good.addrs[0]]);
    let base = ["--policy", "round_robin", "--requests", "100"];
    let retried = call_json(
        &[
            &[target.as_str()][..],
            &base,
            &["--service-config", &config("")],
        ]
        .concat(),
    );
    assert_eq!(retried["failed"], 0, "{retried}");
    assert_eq!(retried["ok"], 100, "{retried}");
    // The report counts the backend that gave the final answer: the healthy
    // one, after a retry for every call the bad one failed.
    assert_eq!(
        retried["backends"],
        json!({good.addrs[0].to_string(): 100}),
        "{retried}"
    );
    assert_eq!(
        retried["service_config"]["methodConfig"][0]["retryPolicy"]["maxAttempts"],
        5
    );
    assert_eq!(retried["service_config_source"], "--service-config");

    let plain = call_json(&[&[target.as_str()][..], &base].concat());
    let failed = plain["failed"].as_u64().unwrap();
    assert!((30..=70).contains(&failed), "{plain}");

    // --disable-retry ignores the policy.
    let disabled = call_json(
        &[
            &[target.as_str()][..],
            &base,
            &["--service-config", &config(""), "--disable-retry"],
        ]
        .concat(),
    );
    assert!(disabled["failed"].as_u64().unwrap() >= 30, "{disabled}");
    assert_eq!(disabled["options"]["retry"], false);

    // retryThrottling: a bucket of 2 tokens stops retrying after a failure.
    let throttled = call_json(
        &[
            &[target.as_str()][..],
            &base,
            &[
                "--service-config",
                &config(r#", "retryThrottling": {"maxTokens": 2, "tokenRatio": 0.1}"#),
            ],
        ]
        .concat(),
    );
    assert!(throttled["failed"].as_u64().unwrap() >= 20, "{throttled}");
    assert_eq!(
        throttled["service_config"]["retryThrottling"]["maxTokens"],
        2
    );
}

#[test]
fn a_retry_policy_hides_a_flaky_backend() {
    let half = Serve::start(1, &["--error-rate", "0.5"]);
    let args = ["--requests", "200", "--concurrency", "4"];
    let retried = call_json(
        &[
            &[half.target().as_str()][..],
            &args,
            &["--service-config", &config("")],
        ]
        .concat(),
    );
    // 0.5^5: about 6 in 200 still fail after five attempts.
    assert!(retried["failed"].as_u64().unwrap() <= 25, "{retried}");
    let plain = call_json(&[&[half.target().as_str()][..], &args].concat());
    assert!(plain["failed"].as_u64().unwrap() >= 60, "{plain}");
}

#[test]
fn message_sizes_timeouts_and_wait_for_ready_come_from_the_config() {
    let serve = Serve::start(1, &["--delay-ms", "200"]);
    let small = r#"{"methodConfig": [{"name": [{"service": "helloworld.Greeter"}],
        "maxResponseMessageBytes": 5}]}"#;
    let report = call_json(&[
        &serve.target(),
        "--requests",
        "3",
        "--service-config",
        small,
    ]);
    assert_eq!(
        report["codes"],
        json!({"RESOURCE_EXHAUSTED": 3}),
        "{report}"
    );
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("received message larger than max"),
        "{report}"
    );
    // The channel's own limit, the flag.
    let report = call_json(&[
        &serve.target(),
        "--requests",
        "2",
        "--max-receive-message-size",
        "5",
    ]);
    assert_eq!(
        report["codes"],
        json!({"RESOURCE_EXHAUSTED": 2}),
        "{report}"
    );
    let report = call_json(&[
        &serve.target(),
        "--requests",
        "2",
        "--max-send-message-size",
        "3",
    ]);
    assert_eq!(
        report["codes"],
        json!({"RESOURCE_EXHAUSTED": 2}),
        "{report}"
    );

    // The method's timeout (50 ms), sooner than --timeout-ms's 5 s, ends the
    // calls the server holds for 200 ms. A tonic server answers an expired
    // grpc-timeout with CANCELLED "Timeout expired"; a client deadline gives
    // DEADLINE_EXCEEDED: either way, not one reply.
    let quick =
        r#"{"methodConfig": [{"name": [{"service": "helloworld.Greeter"}], "timeout": "0.05s"}]}"#;
    let report = call_json(&[
        &serve.target(),
        "--requests",
        "2",
        "--service-config",
        quick,
    ]);
    let codes = &report["codes"];
    let expired =
        codes["DEADLINE_EXCEEDED"].as_u64().unwrap_or(0) + codes["CANCELLED"].as_u64().unwrap_or(0);
    assert_eq!(expired, 2, "{report}");
    assert_eq!(
        report["service_config"]["methodConfig"][0]["timeout"],
        "0.05s"
    );
    let report = call_json(&[&serve.target(), "--requests", "2"]);
    assert_eq!(report["codes"], json!({"OK": 2}), "{report}");

    // waitForReady: calls to a dead backend wait out their deadline.
    let dead = ipv4(&[dead_port()]);
    let waiting = r#"{"methodConfig": [{"name": [{}], "waitForReady": true}]}"#;
    let report = call_json(&[
        &dead,
        "--requests",
        "2",
        "--timeout-ms",
        "300",
        "--service-config",
        waiting,
    ]);
    assert_eq!(report["codes"], json!({"DEADLINE_EXCEEDED": 2}), "{report}");
    let report = call_json(&[&dead, "--requests", "2", "--timeout-ms", "300"]);
    assert_eq!(report["codes"], json!({"UNAVAILABLE": 2}), "{report}");
}

#[test]
fn health_checking_by_flag_or_config_keeps_calls_off_a_not_serving_backend() {
    let serving = Serve::start(1, &[]);
    let not_serving = Serve::start(1, &["--health", "not-serving"]);
    let target = ipv4(&[serving.addrs[0], not_serving.addrs[0]]);
    let by_config = r#"{"loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": "helloworld.Greeter"}}"#;
    for args in [
        vec![
            "--policy",
            "round_robin",
            "--health-check",
            "helloworld.Greeter",
        ],
        vec!["--service-config", by_config],
    ] {
        let report = call_json(&[&[target.as_str(), "--requests", "40"][..], &args].concat());
        assert_eq!(report["ok"], 40, "{args:?}: {report}");
        assert_eq!(
            report["backends"],
            json!({serving.addrs[0].to_string(): 40}),
            "{args:?}: {report}"
        );
        assert_eq!(report["policy"], "round_robin");
    }
    // Without it, round robin sends the not-serving backend its half.
    let report = call_json(&[&target, "--policy", "round_robin", "--requests", "40"]);
    assert_eq!(report["backends"].as_object().unwrap().len(), 2, "{report}");
}

#[test]
fn outlier_detection_by_flag_or_config_ejects_the_failing_backend() {
    let bad = Serve::start(1, &["--error-rate", "1"]);
    let good = Serve::start(1, &[]);
    let target = ipv4(&[bad.addrs[0], good.addrs[0]]);
    let settings = r#""interval": "0.1s", "maxEjectionPercent": 50,
        "failurePercentageEjection": {"threshold": 50, "minimumHosts": 2, "requestVolume": 5}"#;
    let flag = format!("{{{settings}}}");
    let config = format!(
        r#"{{"loadBalancingConfig": [{{"outlier_detection_experimental":
            {{{settings}, "childPolicy": [{{"round_robin": {{}}}}]}}}}]}}"#
    );
    let run = ["--duration", "2", "--rate", "200", "--concurrency", "4"];
    for args in [
        vec![
            "--policy",
            "round_robin",
            "--outlier-detection",
            flag.as_str(),
        ],
        vec!["--service-config", config.as_str()],
    ] {
        let report = call_json(&[&[target.as_str()][..], &run, &args].concat());
        let requests = report["requests"].as_u64().unwrap();
        let failed = report["failed"].as_u64().unwrap();
        // Ejected within the first intervals: far fewer than round robin's half.
        assert!(
            requests >= 100 && failed * 4 < requests,
            "{args:?}: {report}"
        );
        assert_eq!(report["policy"], "round_robin", "{report}");
    }
    let report = call_json(&[
        &target,
        "--policy",
        "round_robin",
        "--outlier-detection",
        &flag,
        "--requests",
        "1",
    ]);
    let outlier = &report["options"]["outlier_detection"];
    assert_eq!(outlier["interval_ms"], 100, "{report}");
    assert_eq!(
        outlier["failure_percentage"]["minimum_hosts"], 2,
        "{report}"
    );
    // A50's defaults for what the JSON leaves out.
    assert_eq!(outlier["base_ejection_time_ms"], 30_000, "{report}");
}

/// What a [`Recording`] server saw of each request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

/// A Greeter server that records each request's `user-agent` and
/// `:authority`.
#[derive(Clone)]
struct Recording {
    inner: GreeterServer<Plain>,
    seen: Seen,
}

struct Plain;

#[tonic::async_trait]
impl Greeter for Plain {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Ok(tonic::Response::new(HelloReply {
            message: request.into_inner().name,
        }))
    }
}

impl tonic::server::NamedService for Recording {
    const NAME: &'static str = "helloworld.Greeter";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Recording {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        <GreeterServer<Plain> as tower_service::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <GreeterServer<Plain> as tower_service::Service<http::Request<tonic::body::Body>>>::poll_ready(
            &mut self.inner,
            cx,
        )
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let agent = request
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let authority = request
            .uri()
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default();
        self.seen.0.lock().unwrap().push((agent, authority));
        <GreeterServer<Plain> as tower_service::Service<http::Request<tonic::body::Body>>>::call(
            &mut self.inner,
            request,
        )
    }
}

#[test]
fn the_user_agent_authority_and_origin_reach_the_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let service = Recording {
        inner: GreeterServer::new(Plain),
        seen: seen.clone(),
    };
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let target = ipv4(&[addr]);
    let report = call_json(&[
        &target,
        "--requests",
        "2",
        "--user-agent",
        "probe/7",
        "--authority",
        "greeter.example:443",
    ]);
    assert_eq!(report["ok"], 2, "{report}");
    let report = call_json(&[
        &target,
        "--requests",
        "1",
        "--origin",
        "http://front.example:8080",
    ]);
    assert_eq!(report["ok"], 1, "{report}");
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (agent, authority) in &seen[..2] {
        assert!(agent.starts_with("probe/7 grpc-lb/"), "{agent}");
        assert_eq!(authority, "greeter.example:443");
    }
    assert!(seen[2].0.starts_with("grpc-lb/"), "{seen:?}");
    assert_eq!(seen[2].1, "front.example:8080");
}

#[test]
fn the_connect_timeout_bounds_an_attempt_that_never_gets_settings() {
    // Accepted by the kernel, never answered: no HTTP/2 SETTINGS ever come.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = ipv4(&[silent.local_addr().unwrap()]);
    let report = call_json(&[
        &target,
        "--requests",
        "1",
        "--timeout-ms",
        "30000",
        "--connect-timeout-ms",
        "200",
    ]);
    assert_eq!(report["codes"], json!({"UNAVAILABLE": 1}), "{report}");
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("timed out"), "{report}");
    assert_eq!(report["options"]["connect_timeout_ms"], 200);
    // Far below the 20 s min-connect-timeout that bounds it otherwise.
    assert!(
        report["latency_ms"]["max"].as_f64().unwrap() < 15_000.0,
        "{report}"
    );
    drop(silent);
}

#[test]
fn max_waiting_refuses_calls_beyond_it() {
    let dead = ipv4(&[dead_port()]);
    let report = call_json(&[
        &dead,
        "--requests",
        "4",
        "--concurrency",
        "4",
        "--wait-for-ready",
        "--timeout-ms",
        "1000",
        "--max-waiting",
        "1",
    ]);
    let exhausted = report["codes"]["RESOURCE_EXHAUSTED"].as_u64().unwrap_or(0);
    assert!(exhausted >= 1, "{report}");
    assert_eq!(report["options"]["max_waiting"], 1);
}

#[test]
fn keepalive_and_http2_settings_are_reported_as_the_library_applies_them() {
    let serve = Serve::start(1, &[]);
    let report = call_json(&[
        &serve.target(),
        "--requests",
        "3",
        "--keepalive-time-ms",
        "5000",
        "--keepalive-timeout-ms",
        "1000",
        "--keepalive-permit-without-calls",
        "--initial-stream-window-size",
        "1048576",
        "--initial-connection-window-size",
        "4194304",
        "--max-frame-size",
        "32768",
        "--tcp-keepalive-ms",
        "60000",
        "--idle-timeout-ms",
        "0",
    ]);
    assert_eq!(report["ok"], 3, "{report}");
    let options = &report["options"];
    // gRFC A8: raised to the 10 s minimum.
    assert_eq!(options["keepalive_time_ms"], 10_000, "{report}");
    assert_eq!(options["keepalive_timeout_ms"], 1000);
    assert_eq!(options["keepalive_permit_without_calls"], true);
    assert_eq!(options["initial_stream_window_size"], 1_048_576);
    assert_eq!(options["initial_connection_window_size"], 4_194_304);
    assert_eq!(options["max_frame_size"], 32_768);
    assert_eq!(options["idle_timeout_ms"], 0);
    // tonic's names work too.
    let report = call_json(&[
        &serve.target(),
        "--requests",
        "1",
        "--http2-keep-alive-interval-ms",
        "20000",
    ]);
    assert_eq!(report["options"]["keepalive_time_ms"], 20_000, "{report}");
}

#[test]
fn watch_takes_the_channel_flags_and_shows_idle_mode() {
    let serve = Serve::start(1, &[]);
    let output = grpc_lb(&[
        "watch",
        &serve.target(),
        "--idle-timeout-ms",
        "300",
        "--duration",
        "3",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("channel: READY -> IDLE"), "{text}");
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_targets_work_in_the_default_build() {
    let serve = Serve::start(1, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime.block_on(etcd_server::EtcdServer::start());
    let addr = serve.addrs[0].to_string();
    runtime.block_on(etcd.put(
        &format!("services/greeter/{addr}"),
        format!(r#"{{"Addr": "{addr}"}}"#),
    ));
    let target = format!("etcd://{}/services/greeter", etcd.authority());
    let report = call_json(&[&target, "--requests", "5"]);
    assert_eq!(report["ok"], 5, "{report}");
    assert_eq!(report["backends"], json!({addr: 5}), "{report}");
}

#[test]
fn a_service_config_from_dns_is_reported_and_followed() {
    let serve = Serve::start(2, &["--error-rate", "0.5"]);
    let hosts = "127.0.0.1 greeter.test\n";
    let txt = std::env::temp_dir().join(format!("grpc-lb-cli-txt-{}.conf", std::process::id()));
    // Round robin and a retry policy, as a TXT record (gRFC A2).
    let config = format!(
        r#"grpc_config=[{{"serviceConfig": {{"loadBalancingConfig": [{{"round_robin": {{}}}}],
            "methodConfig": {}}}}}]"#,
        &RETRY_5[RETRY_5.find('[').unwrap()..]
    );
    std::fs::write(
        &txt,
        format!(
            "txt-record=_grpc_config.greeter.test,\"{}\"\n",
            config.replace('"', "\\\"").replace('\n', " ")
        ),
    )
    .unwrap();
    let arg = format!("--conf-file={}", txt.display());
    let dns = dnsmasq::Dnsmasq::start(hosts, &[&arg]);
    // Both servers share 127.0.0.1; the name gives one of their ports.
    let port = serve.addrs[0].port();
    let target = format!("dns://{}/greeter.test:{port}", dns.authority());
    let report = call_json(&[&target, "--requests", "100", "--policy", "pick_first"]);
    let _ = std::fs::remove_file(&txt);
    assert_eq!(report["policy"], "round_robin", "{report}");
    assert_eq!(report["service_config_source"], "resolver", "{report}");
    assert_eq!(
        report["service_config"]["methodConfig"][0]["retryPolicy"]["maxAttempts"], 5,
        "{report}"
    );
    // The resolver's retry policy is followed: 0.5^5 of 100 still fail.
    assert!(report["failed"].as_u64().unwrap() <= 15, "{report}");
}
