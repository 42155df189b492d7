//! One pick from a tree policy's published picker (`Picker::pick`, the call
//! path's share of the balancer) at 10, 100, 1,000 and 10,000 READY
//! endpoints: round_robin, least_request (two random candidates and their
//! in-flight counters), ring_hash (a keyed pick from a header) and
//! weighted_round_robin (weights known, the static stride scheduler). It
//! should be flat in the endpoint count.
//!
//! `cargo bench -p grpc-lb-bench --bench tree_pick` (criterion); under
//! `cargo test` each runs once, at 10 and 100. For instruction counts, the
//! same binary with `TREE_PICK_CALLGRIND=<policy>:<endpoints>` makes 100,000
//! picks through `pick_once`, which callgrind counts alone:
//!
//! ```sh
//! TREE_PICK_CALLGRIND=round_robin:10000 valgrind --tool=callgrind \
//!   --toggle-collect='*pick_once*' target/release/deps/tree_pick-<hash>
//! ```
//!
//! (divide `Collected` by 100,000).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion};
use grpc_lb::balance::tree::{
    Endpoint, EndpointAttributes, EndpointId, Helper, LeastRequest, PickInfo, PickResult, Picker,
    Policy, RingHash, RingHashConfig, RoundRobin, SubchannelId, TimerId, WeightedRoundRobin,
    WrrConfig,
};
use grpc_lb::{Connectivity, ConnectivityState};
use grpc_lb_orca::OrcaLoadReport;

type SharedError = Arc<dyn std::error::Error + Send + Sync>;

const POLICIES: [&str; 4] = [
    "round_robin",
    "least_request",
    "ring_hash",
    "weighted_round_robin",
];

fn sizes() -> Vec<u64> {
    if std::env::args().any(|a| a == "--bench") {
        vec![10, 100, 1_000, 10_000]
    } else {
        vec![10, 100]
    }
}

/// Runs a policy by hand: records connects (to make them READY), timers (to
/// fire them) and the last picker; names endpoints like addresses.
#[derive(Default)]
struct Driver {
    connects: Vec<SubchannelId>,
    timers: u64,
    picker: Option<Arc<dyn Picker>>,
}

impl Helper for Driver {
    fn connect(&mut self, id: SubchannelId) {
        self.connects.push(id);
    }
    fn disconnect(&mut self, _: SubchannelId) {}
    fn update_state(
        &mut self,
        _: ConnectivityState,
        _: Option<SharedError>,
        picker: Arc<dyn Picker>,
    ) {
        self.picker = Some(picker);
    }
    fn set_timer(&mut self, _: Duration) -> TimerId {
        self.timers += 1;
        TimerId::from_raw(self.timers)
    }
    fn cancel_timer(&mut self, _: TimerId) {}
    fn resolve_now(&mut self) {}
    fn endpoint_attributes(&self, endpoint: EndpointId) -> Option<EndpointAttributes> {
        Some(EndpointAttributes::named(format!(
            "10.1.{}.{}:50051",
            endpoint.raw() / 256,
            endpoint.raw() % 256
        )))
    }
}

/// `n` endpoints added, and every one connected and READY.
fn all_ready(policy: &mut dyn Policy, n: u64) -> Driver {
    let mut driver = Driver::default();
    for i in 0..n {
        let subchannels = [SubchannelId::from_raw(i)];
        policy.add_endpoint(
            Endpoint {
                id: EndpointId::from_raw(i),
                subchannels: &subchannels,
            },
            &mut driver,
        );
    }
    let ready = Connectivity::new(ConnectivityState::Ready);
    let mut made_ready = 0;
    while made_ready < n {
        if driver.connects.is_empty() {
            // ring_hash connects lazily: one IDLE endpoint per exit_idle.
            policy.exit_idle(&mut driver);
            if driver.connects.is_empty() {
                break;
            }
        }
        for id in std::mem::take(&mut driver.connects) {
            policy.subchannel_state(id, &ready, &mut driver);
            made_ready += 1;
        }
    }
    driver
}

/// The picker of `policy` over `n` READY endpoints.
fn picker(policy: &str, n: u64) -> Arc<dyn Picker> {
    match policy {
        "round_robin" => all_ready(&mut RoundRobin::new(), n).picker.unwrap(),
        "least_request" => all_ready(&mut LeastRequest::new(2), n).picker.unwrap(),
        "ring_hash" => {
            let config = RingHashConfig::default()
                .request_hash_header("x-key")
                .validate()
                .unwrap();
            all_ready(&mut RingHash::new(config), n).picker.unwrap()
        }
        "weighted_round_robin" => {
            let config = WrrConfig {
                blackout_period: Duration::ZERO,
                ..WrrConfig::default()
            };
            let mut wrr = WeightedRoundRobin::new(config.validate().unwrap());
            let mut driver = all_ready(&mut wrr, n);
            for i in 0..n {
                let report = OrcaLoadReport {
                    application_utilization: 0.1 + (i % 10) as f64 / 10.0,
                    rps_fractional: 100.0,
                    ..Default::default()
                };
                wrr.record_report(EndpointId::from_raw(i), &report);
            }
            // The weight update timer (one of those set; the connected
            // children ignore theirs) builds a scheduler with the weights.
            for timer in 1..=driver.timers {
                wrr.timer_fired(TimerId::from_raw(timer), &mut driver);
            }
            let picker = driver.picker.unwrap();
            if n <= 100 {
                // Weighted, not the round-robin fallback.
                assert!(format!("{picker:?}").contains("Stride"), "{picker:?}");
            }
            picker
        }
        other => panic!("no policy {other}"),
    }
}

fn headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-key", "user-1234".parse().unwrap());
    headers
}

/// One pick, kept out of line so that callgrind can count it alone.
#[inline(never)]
fn pick_once(picker: &dyn Picker, info: &PickInfo<'_>) -> PickResult {
    picker.pick(info)
}

fn tree_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("tree_pick");
    let headers = headers();
    let info = PickInfo::new(None, Some(&headers));
    for n in sizes() {
        for policy in POLICIES {
            let picker = picker(policy, n);
            assert!(matches!(picker.pick(&info), PickResult::Pick(_)));
            group.bench_function(BenchmarkId::new(policy, n), |b| {
                b.iter(|| black_box(pick_once(&*picker, &info)))
            });
        }
    }
    group.finish();
}

/// `TREE_PICK_CALLGRIND=<policy>:<endpoints>`: 100,000 picks and nothing
/// else inside `pick_once`.
fn callgrind(spec: &str) {
    let (policy, n) = spec.split_once(':').expect("<policy>:<endpoints>");
    let picker = picker(policy, n.parse().expect("a number of endpoints"));
    let headers = headers();
    let info = PickInfo::new(None, Some(&headers));
    let mut picked = 0u64;
    for _ in 0..100_000 {
        if let PickResult::Pick(pick) = black_box(pick_once(&*picker, &info)) {
            picked += 1;
            black_box(pick);
        }
    }
    assert_eq!(picked, 100_000);
    println!("{policy} at {n} endpoints: 100000 picks");
}

criterion_group!(benches, tree_pick);

fn main() {
    if let Ok(spec) = std::env::var("TREE_PICK_CALLGRIND") {
        return callgrind(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
