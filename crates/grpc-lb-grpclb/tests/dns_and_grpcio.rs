//! The balancer found through DNS SRV records `_grpclb._tcp.<host>` served by
//! a real dnsmasq: by our client (grpc-lb-resolve's dns resolver with grpclb
//! lookups), and by grpcio's C-core grpclb client, which checks the tests'
//! balancer against a grpclb implementation that is not ours.
//!
//! They need `dnsmasq` and Python with grpcio (`scripts/test` installs both;
//! target/test-venv or GRPC_LB_TEST_PYTHON), and fail, not skip, without.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use grpc_lb_core::ResolveNow;
use grpc_lb_grpclb::{Grpclb, GrpclbConfig, Mode};
use grpc_lb_resolve::dns::{DnsConfig, DnsResolver};
use grpc_lb_resolve::{ManualResolver, Registry, Resolver, Target};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[path = "../../grpc-lb-resolve/tests/support/dnsmasq.rs"]
mod dnsmasq;
mod support;
use dnsmasq::Dnsmasq;
use support::*;

/// dnsmasq naming the balancer in `_grpclb._tcp.greeter.test` (as lb.test)
/// and 127.0.0.1 as greeter.test.
fn dns(balancer: SocketAddr) -> Dnsmasq {
    let srv = format!(
        "--srv-host=_grpclb._tcp.greeter.test,lb.test,{},0,0",
        balancer.port()
    );
    Dnsmasq::start("127.0.0.1 greeter.test\n127.0.0.1 lb.test\n", &[&srv])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_is_found_in_srv_records_and_the_a_records_are_the_fallback() {
    let fallback = backend("fallback").await;
    let mut a = backend("a").await;
    let balancer = TestBalancer::new(None);
    let mut lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a")]);
    let dns = dns(lb.addr());
    let target = format!(
        "dns://{}/greeter.test:{}",
        dns.authority(),
        fallback.addr().port()
    );

    let dns_config = DnsConfig::default()
        .grpclb_balancers(true)
        .min_resolution_interval(Duration::from_millis(100));
    let updates = DnsResolver::new(dns_config)
        .resolve(&Target::parse(&target).unwrap(), ResolveNow::new())
        .unwrap();
    // The balancer channel: pick_first over the balancers the resolver finds.
    let (balancers, handle) = ManualResolver::new("grpclb-balancers");
    let mut registry = Registry::with_defaults();
    registry.register(balancers);
    let balancer_channel = grpc_lb::Channel::builder("grpclb-balancers:///lb")
        .resolver_registry(registry)
        .policy("pick_first")
        .backoff(fast_backoff())
        .wait_for_ready(true)
        .build()
        .unwrap();
    let config = GrpclbConfig::default().with_backoff(fast_backoff());
    let name = format!("greeter.test:{}", fallback.addr().port());
    let grpclb = Grpclb::new(config, &name, updates, balancer_channel);
    let _forwarding = grpclb.forward_balancer_addresses(handle);
    let mut stack = stack_over(&grpclb);

    call_until(&mut stack, |r| r == "a tok-a").await;
    let resolved = grpclb.resolved().borrow().clone();
    assert_eq!(resolved.balancers.len(), 1);
    assert_eq!(
        resolved.balancers[0].address.to_string(),
        lb.addr().to_string()
    );
    assert_eq!(resolved.backends.len(), 1);
    assert_eq!(balancer.received().borrow().names, [name]);

    // Balancer and backend gone: the resolver's A record is the fallback.
    lb.kill().await;
    a.kill().await;
    call_until(&mut stack, |r| r == "fallback -").await;
    assert_eq!(grpclb.mode().borrow().mode, Mode::Fallback);
}

/// The tests' Python: GRPC_LB_TEST_PYTHON, else target/test-venv.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("GRPC_LB_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_c_core_follows_the_tests_balancer() {
    let a = backend("a").await;
    let b = backend("b").await;
    let balancer = TestBalancer::new(Some(Duration::from_millis(200)));
    let lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![
        server(a.addr(), "tok-a"),
        server(b.addr(), "tok-b"),
        drop_entry("lb-drop"),
    ]);
    // No fallback backend listens on greeter.test's port.
    let dns = dns(lb.addr());
    let target = format!("dns://{}/greeter.test:1", dns.authority());

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpclb_client.py");
    let mut child = tokio::process::Command::new(python())
        .arg(&script)
        .args([
            "--target",
            &target,
            "--wait-for",
            "a tok-a",
            "--wait-for",
            "b tok-b",
        ])
        .args(["--calls", "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run ./scripts/test to make target/test-venv",
                python().display()
            )
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the grpcio client reports in time")
        .unwrap()
        .expect("the grpcio client printed its counts");
    println!("grpcio: {line}");
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(report.get("error").is_none(), "{report}");
    let count = |map: &str, key: &str| report[map][key].as_u64().unwrap_or(0) as usize;
    let (to_a, to_b) = (count("replies", "a tok-a"), count("replies", "b tok-b"));
    let replies: usize = report["replies"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap() as usize)
        .sum();
    assert_eq!(
        to_a + to_b,
        replies,
        "only the list's backends, each with its token: {report}"
    );
    let failures: usize = report["failures"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap() as usize)
        .sum();
    assert_eq!(replies + failures, 300);
    let dropped = report["totals"]["dropped"].as_u64().unwrap();
    let counted_drops: usize = report["failures"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("UNAVAILABLE") && k.contains("drop"))
        .map(|(_, v)| v.as_u64().unwrap() as usize)
        .sum();
    assert_eq!(counted_drops, failures, "every failure is a drop: {report}");
    assert!(
        (counted_drops as f64 / 300.0 - 1.0 / 3.0).abs() <= 0.05,
        "{report}"
    );
    assert!(
        (to_a as f64 / replies as f64 - 0.5).abs() <= 0.10,
        "{report}"
    );

    // C-core reports its calls: the balancer hears of every drop.
    let calls = report["totals"]["calls"].as_u64().unwrap() as i64;
    let received = balancer
        .wait_received(|r| r.dropped("lb-drop") >= dropped as i64 && r.finished() >= calls)
        .await;
    println!(
        "balancer received from grpcio: names {:?}, {} reports, started {}, finished {}, known received {}, dropped {}",
        received.names,
        received.reports.len(),
        received.started(),
        received.finished(),
        received.known_received(),
        received.dropped("lb-drop")
    );
    assert_eq!(received.dropped("lb-drop"), dropped as i64);
    assert_eq!(received.finished(), calls);
    assert_eq!(received.names, ["greeter.test:1"]);

    let mut stdin = child.stdin.take().unwrap();
    stdin.shutdown().await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    drop(lb);
}
