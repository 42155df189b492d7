//! One pick of a tree policy's picker alone (`Picker::pick`, no balancer around it)
//! at 10 and 10,000 READY endpoints: round_robin beside ring_hash (a keyed
//! pick from a header) and weighted_round_robin (weights known, the static
//! stride scheduler). `cargo bench -p grpc-lb-bench --bench policies`; under
//! `cargo test` each runs once, at 10 and 100.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use grpc_lb::balance::tree::{
    Endpoint, EndpointAttributes, EndpointId, Helper, PickInfo, PickResult, Picker, Policy,
    RingHash, RingHashConfig, RoundRobin, SubchannelId, TimerId, WeightedRoundRobin, WrrConfig,
};
use grpc_lb::{Connectivity, ConnectivityState};

type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync>;
use grpc_lb_orca::OrcaLoadReport;

fn sizes() -> Vec<u64> {
    if std::env::args().any(|a| a == "--bench") {
        vec![10, 10_000]
    } else {
        vec![10, 100]
    }
}

/// Records connects, so that the bench can make them READY; names
/// endpoints like addresses.
#[derive(Default)]
struct Driver {
    connects: Vec<SubchannelId>,
    timers: u64,
    picker: Option<std::sync::Arc<dyn Picker>>,
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
        picker: std::sync::Arc<dyn Picker>,
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

fn policy_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_pick");
    for n in sizes() {
        let mut round_robin = RoundRobin::new();
        let round_robin = all_ready(&mut round_robin, n).picker.unwrap();
        group.bench_function(BenchmarkId::new("round_robin", n), |b| {
            b.iter(|| black_box(round_robin.pick(&PickInfo::none())))
        });

        let config = RingHashConfig::default()
            .request_hash_header("x-key")
            .validate()
            .unwrap();
        let mut ring_hash = RingHash::new(config);
        let ring_hash = all_ready(&mut ring_hash, n).picker.unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-key", "user-1234".parse().unwrap());
        let info = PickInfo::new(None, Some(&headers));
        assert!(matches!(ring_hash.pick(&info), PickResult::Pick(_)));
        group.bench_function(BenchmarkId::new("ring_hash", n), |b| {
            b.iter(|| black_box(ring_hash.pick(&info)))
        });

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
        // The update timer (one of those set) rebuilds the scheduler with
        // the weights; the children ignore theirs once connected.
        for timer in 1..=driver.timers {
            wrr.timer_fired(TimerId::from_raw(timer), &mut driver);
        }
        let wrr = driver.picker.unwrap();
        assert!(matches!(wrr.pick(&PickInfo::none()), PickResult::Pick(_)));
        group.bench_function(BenchmarkId::new("weighted_round_robin", n), |b| {
            b.iter(|| black_box(wrr.pick(&PickInfo::none())))
        });
    }
    group.finish();
}

criterion_group!(benches, policy_pick);
criterion_main!(benches);
