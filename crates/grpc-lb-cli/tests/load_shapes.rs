//! The ghz-style load shapes and outputs of `grpc-lb call`, against
//! `grpc-lb serve` processes and a tonic server on loopback: the open-loop
//! `--rps` and the concurrency that bounds it, step and line schedules and
//! their windows in the JSON, `--skip-first`, `--format csv`, and
//! `--connections` seen at the server as connections. Rates are asserted
//! with loose bounds only; the schedule's own ceilings are exact.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpc_lb_helloworld::proto::{Greeter, GreeterServer, HelloReply, HelloRequest};
use serde_json::Value;
use support::*;

fn call_json(args: &[&str]) -> Value {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = grpc_lb(&all);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    json_of(&output)
}

/// Calls only ever start late, never early: by the end of each window at
/// most what the schedule owed by then (one more for a call due right on
/// the boundary) have started, however loaded the machine is.
fn assert_never_ahead(windows: &[(f64, u64)], window_secs: f64, report: &Value) {
    let (mut owed, mut started) = (0.0, 0);
    for (target, requests) in windows {
        owed += target * window_secs;
        started += requests;
        assert!(
            started as f64 <= owed + 1.0,
            "ahead of the schedule: {report}"
        );
    }
}

fn windows(report: &Value) -> Vec<(f64, u64)> {
    report["load"]["windows"]
        .as_array()
        .unwrap_or_else(|| panic!("load.windows: {report}"))
        .iter()
        .map(|w| {
            (
                w["target_rps"].as_f64().unwrap(),
                w["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rps_starts_calls_on_schedule_while_earlier_ones_are_in_flight() {
    // Each reply takes 50 ms: one call at a time could make 40 in 2 s; the
    // open loop keeps 100 a second going with up to 10 in flight.
    let serve = Serve::start(2, &["--delay-ms", "50"]);
    let target = serve.target();
    let report = call_json(&[
        &target,
        "--policy",
        "round_robin",
        "--rps",
        "100",
        "--concurrency",
        "10",
        "--duration",
        "2",
    ]);
    let requests = report["requests"].as_u64().unwrap();
    // The schedule owes at most 201 calls by 2 s.
    assert!((60..=201).contains(&requests), "{report}");
    let rps = report["rps"].as_f64().unwrap();
    assert!(rps > 25.0 && rps <= 105.0, "{report}");
    assert_eq!(report["load"]["schedule"], "const");
    assert_eq!(report["load"]["rps"], 100.0);
    let windows = windows(&report);
    assert_eq!(windows.len(), 2, "{report}");
    assert!(windows.iter().all(|(target, _)| *target == 100.0));
    assert_never_ahead(&windows, 1.0, &report);
    assert_eq!(windows.iter().map(|w| w.1).sum::<u64>(), requests);

    // --concurrency bounds the calls in flight, whatever the schedule: two
    // at a time, 50 ms each, make at most 2 * 1000 / 50 calls in a second.
    let report = call_json(&[
        &target,
        "--rps",
        "1000",
        "--concurrency",
        "2",
        "--duration",
        "1",
    ]);
    let requests = report["requests"].as_u64().unwrap();
    assert!((1..=44).contains(&requests), "{report}");
}

#[test]
fn a_step_schedule_reports_each_step_and_its_rate() {
    let serve = Serve::start(2, &[]);
    let report = call_json(&[
        &serve.target(),
        "--policy",
        "round_robin",
        "--load-schedule",
        "step",
        "--load-start",
        "20",
        "--load-step",
        "20",
        "--load-end",
        "60",
        "--load-step-duration",
        "0.5",
        "--concurrency",
        "8",
        "--duration",
        "2",
    ]);
    let load = &report["load"];
    assert_eq!(load["schedule"], "step", "{report}");
    assert_eq!(load["start"], 20.0);
    assert_eq!(load["step"], 20.0);
    assert_eq!(load["end"], 60.0);
    assert_eq!(load["step_duration_ms"], 500.0);
    let windows = windows(&report);
    let targets: Vec<f64> = windows.iter().map(|w| w.0).collect();
    assert_eq!(targets, [20.0, 40.0, 60.0, 60.0], "{report}");
    assert_never_ahead(&windows, 0.5, &report);
    for (target, requests) in &windows {
        // At least a third of what each half-second step owes.
        assert!(*requests as f64 >= target / 2.0 / 3.0, "{report}");
    }
    assert!(windows[2].1 > windows[0].1, "{report}");
    for w in report["load"]["windows"].as_array().unwrap() {
        assert!(w["rps"].as_f64().unwrap() > 0.0, "{w}");
        assert!(w["duration_ms"].as_f64().unwrap() <= 500.0, "{w}");
    }
    assert_eq!(
        windows.iter().map(|w| w.1).sum::<u64>(),
        report["requests"].as_u64().unwrap()
    );
}

#[test]
fn a_line_schedule_raises_the_rate_every_second() {
    let serve = Serve::start(1, &[]);
    let report = call_json(&[
        &serve.target(),
        "--load-schedule",
        "line",
        "--load-start",
        "10",
        "--load-step",
        "20",
        "--concurrency",
        "4",
        "--duration",
        "2",
    ]);
    assert_eq!(report["load"]["schedule"], "line", "{report}");
    assert_eq!(report["load"]["end"], Value::Null);
    let windows = windows(&report);
    // 10/s rising by 20/s each second: 20 calls owed in the first second,
    // 40 in the second.
    let targets: Vec<f64> = windows.iter().map(|w| w.0).collect();
    assert_eq!(targets, [20.0, 40.0], "{report}");
    assert_never_ahead(&windows, 1.0, &report);
    assert!(windows[0].1 >= 7 && windows[1].1 >= 13, "{report}");
    assert!(windows[1].1 > windows[0].1, "{report}");
}

#[test]
fn skip_first_makes_the_calls_but_reports_only_the_rest() {
    let serve = Serve::start(2, &[]);
    let report = call_json(&[
        &serve.target(),
        "--policy",
        "round_robin",
        "--requests",
        "30",
        "--skip-first",
        "10",
    ]);
    assert_eq!(report["requests"], 20, "{report}");
    assert_eq!(report["skipped"], 10, "{report}");
    assert_eq!(report["ok"], 20);
    assert_eq!(report["codes"]["OK"], 20);
    let answered: u64 = report["backends"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(answered, 20, "{report}");
    // The windows count the load the servers saw: all 30.
    assert_eq!(windows_total(&report), 30, "{report}");
    // Without it: none skipped.
    let report = call_json(&[&serve.target(), "--requests", "5"]);
    assert_eq!(report["skipped"], 0);
    assert_eq!(report["load"]["rps"], Value::Null);
}

fn windows_total(report: &Value) -> u64 {
    report["load"]["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum()
}

#[test]
fn csv_has_a_row_per_reported_call_with_its_status_and_backend() {
    let good = Serve::start(1, &[]);
    let bad = Serve::start(1, &["--error-rate", "1", "--error-code", "INTERNAL"]);
    let target = ipv4(&[good.addrs[0], bad.addrs[0]]);
    let output = grpc_lb(&[
        "call",
        &target,
        "--policy",
        "round_robin",
        "--requests",
        "25",
        "--skip-first",
        "5",
        "--rps",
        "500",
        "--concurrency",
        "2",
        "--format",
        "csv",
    ]);
    assert_eq!(output.status.code(), Some(1), "failed calls exit 1");
    assert_eq!(stderr_of(&output), "");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("start_ms,latency_ms,status,backend,error")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.splitn(5, ',').collect()).collect();
    assert_eq!(rows.len(), 20, "{text}");
    let backends: BTreeSet<String> = [good.addrs[0], bad.addrs[0]]
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut last_start = 0.0;
    let (mut ok, mut internal) = (0, 0);
    for row in &rows {
        assert_eq!(row.len(), 5, "{row:?}");
        let start: f64 = row[0].parse().unwrap();
        let latency: f64 = row[1].parse().unwrap();
        assert!(
            start >= last_start,
            "rows in the order calls started: {text}"
        );
        last_start = start;
        assert!(latency > 0.0, "{row:?}");
        assert!(backends.contains(row[3]), "{row:?}");
        match row[2] {
            "OK" => {
                ok += 1;
                assert_eq!(row[3], good.addrs[0].to_string());
                assert_eq!(row[4], "");
            }
            "INTERNAL" => {
                internal += 1;
                assert_eq!(row[3], bad.addrs[0].to_string());
                assert!(row[4].contains("injected error from"), "{row:?}");
            }
            other => panic!("status {other}: {text}"),
        }
    }
    assert!(ok >= 5 && internal >= 5, "{text}");
}

/// A Greeter that holds each call 100 ms and notes the client port of each.
#[derive(Clone, Default)]
struct PortCounting {
    ports: Arc<Mutex<BTreeSet<u16>>>,
}

#[tonic::async_trait]
impl Greeter for PortCounting {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        if let Some(peer) = request.remote_addr() {
            self.ports.lock().unwrap().insert(peer.port());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(tonic::Response::new(HelloReply::default()))
    }
}

/// A tonic server that allows one stream per connection.
fn one_stream_server(runtime: &tokio::runtime::Runtime) -> (SocketAddr, PortCounting) {
    let greeter = PortCounting::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    runtime.spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(1)
            .add_service(GreeterServer::new(greeter.clone()))
            .serve_with_incoming(incoming),
    );
    (addr, greeter)
}

#[test]
fn connections_opens_more_connections_when_streams_run_out() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, greeter) = one_stream_server(&runtime);
    let report = call_json(&[
        &ipv4(&[addr]),
        "--requests",
        "12",
        "--concurrency",
        "4",
        "--connections",
        "4",
    ]);
    assert_eq!(report["ok"], 12, "{report}");
    assert_eq!(report["options"]["max_connections_per_subchannel"], 4);
    let with_four = greeter.ports.lock().unwrap().len();
    assert!((2..=4).contains(&with_four), "{with_four} connections");

    // The default, one connection: calls wait for its one stream.
    let (addr, greeter) = one_stream_server(&runtime);
    let report = call_json(&[&ipv4(&[addr]), "--requests", "6", "--concurrency", "3"]);
    assert_eq!(report["ok"], 6, "{report}");
    assert_eq!(report["options"]["max_connections_per_subchannel"], 1);
    assert_eq!(greeter.ports.lock().unwrap().len(), 1);
}

#[test]
fn a_call_due_after_the_duration_is_not_waited_for() {
    // The second call is due at 100 s: the run ends at 0.5 s instead (a
    // wait for it would outlast the harness' limit of a minute).
    let serve = Serve::start(1, &[]);
    let report = call_json(&[&serve.target(), "--rps", "0.01", "--duration", "0.5"]);
    assert_eq!(report["requests"], 1, "{report}");
    assert_eq!(report["load"]["rps"], 0.01);
}
