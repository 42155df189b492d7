use std::collections::HashMap;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};
use grpc_lb_orca::OrcaLoadReport;

use super::*;
use crate::tree::{
    DoneInfo, Endpoint, EndpointId, Helper, Outcome, PickInfo, PickResult, Policy, SubchannelId,
    TimerId,
};

#[derive(Default)]
struct Recorder {
    timers: HashMap<TimerId, Duration>,
    next_timer: u64,
    picker: Option<Arc<dyn Picker>>,
}

impl Helper for Recorder {
    fn connect(&mut self, _: SubchannelId) {}
    fn disconnect(&mut self, _: SubchannelId) {}
    fn update_state(
        &mut self,
        _: ConnectivityState,
        _: Option<SharedError>,
        picker: Arc<dyn Picker>,
    ) {
        self.picker = Some(picker);
    }
    fn set_timer(&mut self, after: Duration) -> TimerId {
        self.next_timer += 1;
        let id = TimerId::from_raw(self.next_timer);
        self.timers.insert(id, after);
        id
    }
    fn cancel_timer(&mut self, timer: TimerId) {
        self.timers.remove(&timer);
    }
    fn resolve_now(&mut self) {}
}

fn report(utilization: f64, qps: f64) -> OrcaLoadReport {
    OrcaLoadReport {
        application_utilization: utilization,
        rps_fractional: qps,
        ..Default::default()
    }
}

/// A WRR over `n` READY endpoints; endpoint `i` has subchannel `i`.
fn ready_wrr(n: u64, helper: &mut Recorder) -> WeightedRoundRobin {
    let mut policy = WeightedRoundRobin::new(WrrConfig::default().validate().unwrap());
    for i in 1..=n {
        let subchannels = [SubchannelId::from_raw(i)];
        policy.add_endpoint(
            Endpoint {
                id: EndpointId::from_raw(i),
                subchannels: &subchannels,
            },
            helper,
        );
        policy.subchannel_state(
            subchannels[0],
            &Connectivity::new(ConnectivityState::Ready),
            helper,
        );
    }
    policy
}

fn update_timer(policy: &mut WeightedRoundRobin, helper: &mut Recorder) {
    let timer = *helper.timers.keys().max().unwrap();
    helper.timers.remove(&timer);
    policy.timer_fired(timer, helper);
}

impl Recorder {
    /// A pick from the latest picker reported.
    fn pick(&self, info: &PickInfo<'_>) -> PickResult {
        self.picker.as_ref().expect("a picker").pick(info)
    }
}

fn shares(helper: &Recorder, n: usize, picks: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n];
    for _ in 0..picks {
        match helper.pick(&PickInfo::none()) {
            PickResult::Pick(p) => counts[p.subchannel().raw() as usize - 1] += 1,
            other => panic!("{other:?}"),
        }
    }
    counts.iter().map(|c| *c as f64 / picks as f64).collect()
}

#[tokio::test(start_paused = true)]
async fn weights_count_after_the_blackout_and_until_they_expire() {
    let mut helper = Recorder::default();
    let policy = ready_wrr(2, &mut helper);
    let a = EndpointId::from_raw(1);
    policy.record_report(a, &report(0.5, 100.0));
    assert_eq!(policy.weight(a), Some(0.0), "in blackout");
    tokio::time::advance(Duration::from_secs(9)).await;
    policy.record_report(a, &report(0.5, 100.0));
    assert_eq!(policy.weight(a), Some(0.0), "still in blackout after 9 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(policy.weight(a), Some(200.0), "qps / utilization");
    // No report for 3 minutes: expired, and the next report starts a new blackout.
    tokio::time::advance(Duration::from_secs(180)).await;
    assert_eq!(policy.weight(a), Some(0.0));
    policy.record_report(a, &report(0.5, 100.0));
    assert_eq!(policy.weight(a), Some(0.0));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(policy.weight(a), Some(200.0));
}

#[tokio::test(start_paused = true)]
async fn error_penalty_and_empty_reports() {
    let mut helper = Recorder::default();
    let policy = ready_wrr(1, &mut helper);
    let a = EndpointId::from_raw(1);
    let mut with_errors = report(0.5, 100.0);
    with_errors.eps = 50.0;
    policy.record_report(a, &with_errors);
    tokio::time::advance(Duration::from_secs(10)).await;
    // 100 / (0.5 + 50/100 × 1.0)
    assert_eq!(policy.weight(a), Some(100.0));
    // A report without utilization or qps is ignored.
    policy.record_report(a, &report(0.0, 100.0));
    policy.record_report(a, &report(0.5, 0.0));
    assert_eq!(policy.weight(a), Some(100.0));
    // cpu_utilization stands in for application_utilization.
    let cpu = OrcaLoadReport {
        cpu_utilization: 0.25,
        rps_fractional: 100.0,
        ..Default::default()
    };
    policy.record_report(a, &cpu);
    assert_eq!(policy.weight(a), Some(400.0));
}

#[tokio::test(start_paused = true)]
async fn picks_follow_the_weights_once_two_are_known() {
    let mut helper = Recorder::default();
    let mut policy = ready_wrr(3, &mut helper);
    // No weights: round robin.
    let even = shares(&helper, 3, 3000);
    assert!(
        even.iter().all(|s| (s - 1.0 / 3.0).abs() < 0.01),
        "{even:?}"
    );
    // One weight known: still round robin.
    policy.record_report(EndpointId::from_raw(1), &report(0.1, 100.0));
    tokio::time::advance(Duration::from_secs(10)).await;
    update_timer(&mut policy, &mut helper);
    let even = shares(&helper, 3, 3000);
    assert!(
        even.iter().all(|s| (s - 1.0 / 3.0).abs() < 0.01),
        "{even:?}"
    );
    // Two known (1000 and 250), the third at their mean (625).
    policy.record_report(EndpointId::from_raw(2), &report(0.4, 100.0));
    tokio::time::advance(Duration::from_secs(10)).await;
    policy.record_report(EndpointId::from_raw(1), &report(0.1, 100.0));
    update_timer(&mut policy, &mut helper);
    let got = shares(&helper, 3, 60_000);
    for (got, want) in got
        .iter()
        .zip([1000.0 / 1875.0, 250.0 / 1875.0, 625.0 / 1875.0])
    {
        assert!((got - want).abs() < 0.01, "{got} vs {want}");
    }
}

#[tokio::test(start_paused = true)]
async fn reports_arrive_through_the_done_callback_trailers() {
    let mut helper = Recorder::default();
    let policy = ready_wrr(2, &mut helper);
    let mut trailers = http::HeaderMap::new();
    trailers.insert(grpc_lb_orca::TRAILER, report(0.5, 10.0).to_header_value());
    for _ in 0..4 {
        let PickResult::Pick(pick) = helper.pick(&PickInfo::none()) else {
            panic!()
        };
        let done = pick.done().expect("WRR reads every call's trailers");
        done.on_start();
        done.on_done(&DoneInfo::new(Outcome::Ok).with_trailers(&trailers));
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(policy.weight(EndpointId::from_raw(1)), Some(20.0));
    assert_eq!(policy.weight(EndpointId::from_raw(2)), Some(20.0));
}

#[tokio::test(start_paused = true)]
async fn returning_to_ready_starts_a_new_blackout() {
    let mut helper = Recorder::default();
    let mut policy = ready_wrr(2, &mut helper);
    let a = EndpointId::from_raw(1);
    policy.record_report(a, &report(0.5, 100.0));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(policy.weight(a), Some(200.0));
    let sc = SubchannelId::from_raw(1);
    policy.subchannel_state(sc, &Connectivity::new(ConnectivityState::Idle), &mut helper);
    policy.subchannel_state(
        sc,
        &Connectivity::new(ConnectivityState::Ready),
        &mut helper,
    );
    policy.record_report(a, &report(0.5, 100.0));
    assert_eq!(policy.weight(a), Some(0.0));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(policy.weight(a), Some(200.0));
}
