//! Runs a tree policy by hand, without a balancer, for the benches that
//! time one pick of its published picker (`policies`, `tree_pick`).

use std::sync::Arc;
use std::time::Duration;

use grpc_lb::balance::tree::{
    Endpoint, EndpointAttributes, EndpointId, Helper, LeastRequest, Picker, Policy, RingHash,
    RingHashConfig, RoundRobin, SubchannelId, TimerId, WeightedRoundRobin, WrrConfig,
};
use grpc_lb::{Connectivity, ConnectivityState};
use grpc_lb_orca::OrcaLoadReport;

type SharedError = Arc<dyn std::error::Error + Send + Sync>;

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
pub(crate) fn picker(policy: &str, n: u64) -> Arc<dyn Picker> {
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

/// The request headers ring_hash's picks hash (`x-key`).
pub(crate) fn headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-key", "user-1234".parse().unwrap());
    headers
}
