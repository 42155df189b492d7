//! The `grpc-lb` binary, run as a user runs it: against `grpc-lb serve`
//! processes (and a foreign tonic server) on loopback, checking its `--json`
//! output, its lines and its exit codes.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use support::*;

#[test]
fn call_json_has_every_field_and_round_robin_spreads_evenly() {
    let serve = Serve::start(3, &[]);
    let output = grpc_lb(&[
        "call",
        &serve.target(),
        "--policy",
        "round_robin",
        "--requests",
        "90",
        "--concurrency",
        "3",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    // No progress bar, no logs: stdout is not a terminal.
    assert_eq!(stderr_of(&output), "");
    let report = json_of(&output);
    assert_eq!(report["requests"], 90);
    assert_eq!(report["ok"], 90);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["policy"], "round_robin");
    assert_eq!(report["codes"], serde_json::json!({"OK": 90}));
    let backends = report["backends"].as_object().unwrap();
    let want: BTreeSet<String> = serve.addrs.iter().map(ToString::to_string).collect();
    assert_eq!(backends.keys().cloned().collect::<BTreeSet<_>>(), want);
    // Even, give or take the first calls, made while only some backends
    // were READY yet.
    for (addr, calls) in backends {
        let calls = calls.as_u64().unwrap();
        assert!((25..=35).contains(&calls), "{addr}: {report}");
    }
    let latency = &report["latency_ms"];
    let quantiles: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|q| {
            latency[q]
                .as_f64()
                .unwrap_or_else(|| panic!("latency_ms.{q}"))
        })
        .collect();
    assert!(quantiles[0] > 0.0, "{latency}");
    assert!(quantiles.windows(2).all(|w| w[0] <= w[1]), "{latency}");
    let states: Vec<&str> = report["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["t_ms"].as_f64().unwrap() >= 0.0);
            s["state"].as_str().unwrap()
        })
        .collect();
    assert_eq!(states.first(), Some(&"IDLE"), "{states:?}");
    assert_eq!(states.last(), Some(&"READY"), "{states:?}");
    assert!(states.contains(&"CONNECTING"), "{states:?}");
    assert!(report["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["subchannels"].as_array().unwrap().len(), 3);
}

#[test]
fn failed_calls_are_counted_by_code_and_by_the_backend_that_answered() {
    let serve = Serve::start(1, &["--error-rate", "1", "--error-code", "INTERNAL"]);
    let output = grpc_lb(&["call", &serve.target(), "--requests", "20", "--json"]);
    assert_eq!(output.status.code(), Some(1), "a failed call exits 1");
    let report = json_of(&output);
    assert_eq!(report["requests"], 20);
    assert_eq!(report["ok"], 0);
    assert_eq!(report["codes"], serde_json::json!({"INTERNAL": 20}));
    assert_eq!(report["backends"][serve.addrs[0].to_string()], 20);
    let error = &report["errors"][0];
    assert_eq!(error["code"], "INTERNAL");
    assert_eq!(error["count"], 20);
    assert!(error["message"].as_str().unwrap().contains("injected"));

    let half = Serve::start(1, &["--error-rate", "0.5"]);
    let report = json_of(&grpc_lb(&[
        "call",
        &half.target(),
        "--requests",
        "200",
        "--concurrency",
        "4",
        "--json",
    ]));
    let ok = report["codes"]["OK"].as_u64().unwrap();
    let unavailable = report["codes"]["UNAVAILABLE"].as_u64().unwrap();
    assert_eq!(ok + unavailable, 200, "{report}");
    assert!(ok > 0 && unavailable > 0, "{report}");
    assert_eq!(report["ok"], ok);
}

#[test]
fn no_server_means_unavailable_with_the_cause_and_exit_1() {
    let dead = dead_port();
    let output = grpc_lb(&[
        "call",
        &ipv4(&[dead]),
        "--requests",
        "3",
        "--backoff-base-ms",
        "100",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(report["codes"], serde_json::json!({"UNAVAILABLE": 3}));
    assert_eq!(report["backends"], serde_json::json!({}));
    assert!(report["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("refused"));
    let states = report["states"].to_string();
    assert!(states.contains("TRANSIENT_FAILURE"), "{states}");
}

#[test]
fn wait_for_ready_calls_wait_until_the_deadline() {
    let dead = dead_port();
    let output = grpc_lb(&[
        "call",
        &ipv4(&[dead]),
        "--requests",
        "2",
        "--wait-for-ready",
        "--timeout-ms",
        "300",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(report["codes"], serde_json::json!({"DEADLINE_EXCEEDED": 2}));
    assert!(
        report["latency_ms"]["p50"].as_f64().unwrap() >= 290.0,
        "{report}"
    );
}

/// Every usage error of docs/cli.md: one line on stderr, `grpc-lb: error: `
/// and the message, exit 2, nothing on stdout.
#[test]
fn bad_usage_exits_2_with_one_clear_line() {
    let dead = ipv4(&[dead_port()]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["call", &dead, "--concurrency", "0"],
            "invalid value '0' for '--concurrency <C>'",
        ),
        (
            &["call", &dead, "--timeout-ms", "-1"],
            "invalid value '-1' for '--timeout-ms <T>'",
        ),
        (
            &["call", &dead, "--duration", "nan"],
            "\"nan\" is not a positive number of seconds",
        ),
        (
            &["call", &dead, "--request", "3"],
            "unexpected argument '--request' found (tip: a similar argument exists: '--requests')",
        ),
        (&["call"], "required arguments were not provided: <TARGET>"),
        (
            &["watch", &dead, "--keepalive-time-ms", "soon"],
            "--keepalive-time-ms <MS>",
        ),
        (
            &["call", &dead, "--outlier-detection", "[]"],
            "--outlier-detection: expected a JSON object",
        ),
        (
            &["call", &dead, "--outlier-detection", r#"{"interval": 5}"#],
            "--outlier-detection: invalid service config",
        ),
        (&["call", &dead, "--user-agent", "bad\nagent"], "user agent"),
        (&["call", &dead, "--origin", "not a uri"], "invalid value"),
        (&["call", &dead, "--tcp-nodelay", "maybe"], "invalid value"),
        (&["call", "ipv4:not-an-address"], "bad target"),
        (&["call", "unix:"], "bad target"),
        (&["call", &dead, "--policy", "maglev"], "invalid value"),
        (&["call", &dead, "--bogus"], "unexpected argument"),
        (&["call", &dead, "--requests", "0"], "invalid value"),
        (
            &["call", &dead, "--requests", "5", "--duration", "1"],
            "cannot be used with",
        ),
        (
            &["call", &dead, "--service-config", "{nope"],
            "invalid service config: not JSON",
        ),
        (
            // `call` takes grpclb targets (tests/grpclb.rs); `watch` not.
            &[
                "watch",
                &dead,
                "--service-config",
                r#"{"loadBalancingConfig":[{"grpclb":{}}]}"#,
            ],
            "none of the policies [grpclb] is supported",
        ),
        (
            &["call", &dead, "--ca-cert", "ca.pem"],
            "--ca-cert, --client-cert and --client-key need --tls",
        ),
        (
            &["call", &dead, "--tls", "--ca-cert", "/no/such/ca.pem"],
            "--ca-cert /no/such/ca.pem",
        ),
        (
            &["call", &dead, "--tls", "--client-cert", "c.pem"],
            "--client-cert and --client-key go together",
        ),
        (
            &[
                "call",
                &dead,
                "--service-config",
                r#"{"methodConfig": [{"timeout": 5}]}"#,
            ],
            "methodConfig[0].timeout: expected a string",
        ),
        (
            &["call", &dead, "--backoff-multiplier", "0.5"],
            "bad backoff",
        ),
        (
            &["watch", "ipv4:999.1.1.1:1", "--duration", "1"],
            "bad target",
        ),
        (&["serve", "--listen", "localhost"], "invalid value"),
        (&["serve", "--error-rate", "2"], "between 0 and 1"),
        (&["serve", "--error-code", "NOPE"], "unknown status code"),
        (&["nope"], "unrecognized subcommand"),
    ];
    for (args, message) in cases {
        let output = grpc_lb(args);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stderr.starts_with("grpc-lb: error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.ends_with('\n'), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_service_config_selects_the_policy() {
    let serve = Serve::start(3, &[]);
    let report = json_of(&grpc_lb(&[
        "call",
        &serve.target(),
        "--service-config",
        r#"{"loadBalancingConfig":[{"no_such_policy":{}},{"round_robin":{}}]}"#,
        "--requests",
        "30",
        "--json",
    ]));
    assert_eq!(report["policy"], "round_robin");
    assert_eq!(report["backends"].as_object().unwrap().len(), 3, "{report}");
    // Without it, the default pick_first sends everything to one backend.
    let report = json_of(&grpc_lb(&[
        "call",
        &serve.target(),
        "--requests",
        "30",
        "--json",
    ]));
    assert_eq!(report["policy"], "pick_first");
    assert_eq!(report["backends"].as_object().unwrap().len(), 1, "{report}");
}

#[test]
fn duration_and_rate_bound_the_run() {
    let serve = Serve::start(2, &[]);
    let started = Instant::now();
    let output = grpc_lb(&[
        "call",
        &serve.target(),
        "--policy",
        "p2c",
        "--duration",
        "1",
        "--rate",
        "40",
        "--concurrency",
        "2",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(started.elapsed() < Duration::from_secs(10));
    let report = json_of(&output);
    let requests = report["requests"].as_u64().unwrap();
    assert!((30..=41).contains(&requests), "{report}");
}

#[test]
fn the_human_report_names_backends_codes_latency_and_states() {
    let serve = Serve::start(2, &["--delay-ms", "20"]);
    let output = grpc_lb(&[
        "call",
        &serve.target(),
        "--policy",
        "least_request",
        "--requests",
        "10",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout).unwrap();
    for addr in &serve.addrs {
        assert!(text.contains(&addr.to_string()), "{text}");
    }
    assert!(text.contains("codes      OK 10"), "{text}");
    assert!(text.contains("p99.9"), "{text}");
    assert!(text.contains("states     0.0 ms IDLE -> "), "{text}");
    assert!(text.ends_with("ms READY\n"), "{text}");
    // --delay-ms holds every reply.
    let p50: f64 = text
        .split("p50 ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap();
    assert!(p50 >= 20.0, "{text}");
}

/// A Greeter that says nothing about itself: no `x-backend`, a plain reply,
/// as a foreign server (grpc-go's, grpcio's) would answer.
struct Foreign;

#[tonic::async_trait]
impl Greeter for Foreign {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello {}", request.into_inner().name),
        }))
    }
}

#[test]
fn call_counts_backends_of_any_greeter_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        addrs.push(listener.local_addr().unwrap());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(GreeterServer::new(Foreign))
                .serve_with_incoming(incoming),
        );
    }
    let report = json_of(&grpc_lb(&[
        "call",
        &ipv4(&addrs),
        "--policy",
        "round_robin",
        "--requests",
        "20",
        "--json",
    ]));
    assert_eq!(report["ok"], 20, "{report}");
    // Counted by the address the channel picked: the server says nothing.
    let mut total = 0;
    for addr in &addrs {
        let calls = report["backends"][addr.to_string()].as_u64().unwrap_or(0);
        assert!(calls >= 5, "{report}");
        total += calls;
    }
    assert_eq!(total, 20, "{report}");
}

#[test]
fn serve_names_backends_and_serves_health() {
    let serve = Serve::start(2, &["--name", "b"]);
    let serving = Serve::start(1, &[]);
    let not_serving = Serve::start(1, &["--health", "not-serving"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Replies name the backend: NAME-1, NAME-2 for several addresses.
        let mut names = BTreeSet::new();
        for addr in &serve.addrs {
            let channel = grpc_lb::Channel::builder(ipv4(&[*addr])).build().unwrap();
            let reply = GreeterClient::new(channel)
                .say_hello(HelloRequest { name: "x".into() })
                .await
                .unwrap();
            let backend = reply.metadata().get("x-backend").unwrap().to_str().unwrap();
            let message = &reply.get_ref().message;
            assert_eq!(message, &format!("Hello x from {backend}"));
            names.insert(backend.to_owned());
        }
        assert_eq!(names, BTreeSet::from(["b-1".to_owned(), "b-2".to_owned()]));

        // grpc.health.v1 beside the Greeter, for the server and the service.
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        for (serve, want) in [
            (&serving, ServingStatus::Serving),
            (&not_serving, ServingStatus::NotServing),
        ] {
            let channel = grpc_lb::Channel::builder(serve.target()).build().unwrap();
            let mut health = HealthClient::new(channel);
            for service in ["", "helloworld.Greeter"] {
                let response = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .unwrap();
                assert_eq!(response.get_ref().status(), want, "{service:?}");
            }
        }
    });
}

#[test]
fn serve_stops_on_sigterm_with_exit_0() {
    let mut serve = Serve::start(1, &[]);
    let pid = serve.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let (done, status) = mpsc::channel();
    let mut child = std::mem::replace(&mut serve.child, Command::new("true").spawn().unwrap());
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = status.recv_timeout(LIMIT).unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn watch_prints_each_channel_and_subchannel_change() {
    let serve = Serve::start(1, &[]);
    let live = serve.addrs[0];
    let dead = dead_port();
    let output = grpc_lb(&[
        "watch",
        &ipv4(&[live, dead]),
        "--policy",
        "round_robin",
        "--backoff-base-ms",
        "100",
        "--backoff-max-ms",
        "200",
        "--duration",
        "1.5",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        // 2026-11-21T11:52:03.123Z ...
        let stamp = line.split(' ').next().unwrap();
        assert_eq!(stamp.len(), 24, "{line}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{line}"
        );
    }
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("channel: IDLE"), "{text}");
    assert!(
        has("-> READY") && has("channel: CONNECTING -> READY"),
        "{text}"
    );
    // The live backend reached READY (seen as a change, or already in the
    // starting snapshot if the channel was quicker than the subscription).
    assert!(
        has(&format!("subchannel {live}: CONNECTING -> READY"))
            || has(&format!("subchannel {live}: READY")),
        "{text}"
    );
    // The dead one keeps failing with its cause, backing off in between.
    let failures = lines
        .iter()
        .filter(|l| {
            l.contains(&format!(
                "subchannel {dead}: CONNECTING -> TRANSIENT_FAILURE ("
            ))
        })
        .count();
    assert!(failures >= 2, "{text}");
    assert!(
        has(&format!("subchannel {dead}: TRANSIENT_FAILURE -> IDLE")),
        "{text}"
    );
}

#[test]
fn demo_runs_by_itself_and_shows_every_backend() {
    let started = Instant::now();
    let output = grpc_lb(&["demo"]);
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}\n{}",
        stderr_of(&output)
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let summary = text
        .split("summary: ")
        .nth(1)
        .unwrap_or_else(|| panic!("a summary: {text}"));
    for name in ["backend-1", "backend-2", "backend-3", "backend-4"] {
        let row = summary
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in the summary: {summary}"));
        let calls: u64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(calls > 0, "{row}");
    }
    assert!(summary.contains("killed backend-2"), "{summary}");
    assert!(summary.contains("restarted backend-2"), "{summary}");
    assert!(summary.contains("added backend-4"), "{summary}");
    assert!(summary.contains("backend-2 is READY again"), "{summary}");
    // Not a terminal: plain lines, no cursor movement.
    assert!(!text.contains('\x1b'), "{text}");
}
