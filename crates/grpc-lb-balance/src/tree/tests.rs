use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::*;
use ConnectivityState::*;

/// A helper that records what policies ask for.
#[derive(Default)]
struct Recorder {
    connects: Vec<SubchannelId>,
    disconnects: Vec<SubchannelId>,
    states: Vec<ConnectivityState>,
    timers: HashMap<TimerId, Duration>,
    next_timer: u64,
    resolve_now: usize,
    picker: Option<Arc<dyn Picker>>,
}

impl Helper for Recorder {
    fn connect(&mut self, id: SubchannelId) {
        self.connects.push(id);
    }
    fn disconnect(&mut self, id: SubchannelId) {
        self.disconnects.push(id);
    }
    fn update_state(
        &mut self,
        state: ConnectivityState,
        _: Option<SharedError>,
        picker: Arc<dyn Picker>,
    ) {
        self.states.push(state);
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
    fn resolve_now(&mut self) {
        self.resolve_now += 1;
    }
}

impl Recorder {
    /// A pick from the latest picker reported.
    fn pick(&self) -> PickResult {
        self.picker
            .as_ref()
            .expect("a picker was reported")
            .pick(&PickInfo::none())
    }
    fn last_state(&self) -> ConnectivityState {
        *self.states.last().expect("a state was reported")
    }
    fn only_timer(&self) -> TimerId {
        assert_eq!(self.timers.len(), 1, "{:?}", self.timers);
        *self.timers.keys().next().unwrap()
    }
}

fn sc(n: u64) -> SubchannelId {
    SubchannelId::from_raw(n)
}

fn state(state: ConnectivityState) -> Connectivity {
    Connectivity::new(state)
}

fn failed() -> Connectivity {
    Connectivity {
        state: TransientFailure,
        last_error: Some(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))),
    }
}

fn endpoint(id: u64, subchannels: &[SubchannelId]) -> Endpoint<'_> {
    Endpoint {
        id: EndpointId::from_raw(id),
        subchannels,
    }
}

fn picked(helper: &Recorder) -> Option<SubchannelId> {
    match helper.pick() {
        PickResult::Pick(pick) => Some(pick.subchannel()),
        _ => None,
    }
}

#[test]
fn pick_first_end_of_first_pass_connects_every_idle_subchannel() {
    // Issue 13, defect 1: an address whose backoff ended during the first
    // pass was never retried.
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = PickFirst::new();
    policy.add_endpoint(endpoint(1, &[a, b]), &mut helper);
    policy.subchannel_state(a, &state(Connecting), &mut helper);
    policy.subchannel_state(a, &failed(), &mut helper);
    assert_eq!(helper.connects, [a, b]);
    // A's backoff ends while B is still trying.
    policy.subchannel_state(a, &state(Idle), &mut helper);
    policy.subchannel_state(b, &state(Connecting), &mut helper);
    policy.subchannel_state(b, &failed(), &mut helper);
    assert_eq!(helper.last_state(), TransientFailure);
    assert_eq!(helper.resolve_now, 1);
    assert_eq!(helper.connects, [a, b, a], "A is connected again");
    // Sticky: B's backoff ends, it is reconnected, and CONNECTING is not reported.
    policy.subchannel_state(b, &state(Idle), &mut helper);
    policy.subchannel_state(b, &state(Connecting), &mut helper);
    assert_eq!(helper.connects, [a, b, a, b]);
    assert_eq!(helper.last_state(), TransientFailure);
    assert!(matches!(helper.pick(), PickResult::Fail(_)));
    // The first READY wins.
    policy.subchannel_state(a, &state(Ready), &mut helper);
    assert_eq!(helper.last_state(), Ready);
    assert_eq!(picked(&helper), Some(a));
    assert_eq!(helper.disconnects, [b]);
}

#[test]
fn pick_first_happy_eyeballs_starts_the_next_without_cancelling() {
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = PickFirst::new();
    policy.add_endpoint(endpoint(1, &[a, b]), &mut helper);
    policy.subchannel_state(a, &state(Connecting), &mut helper);
    let timer = helper.only_timer();
    assert_eq!(helper.timers[&timer], Duration::from_millis(250));
    helper.timers.clear();
    policy.timer_fired(timer, &mut helper);
    assert_eq!(helper.connects, [a, b]);
    assert!(helper.disconnects.is_empty());
    // B wins; A is disconnected.
    policy.subchannel_state(b, &state(Ready), &mut helper);
    assert_eq!(picked(&helper), Some(b));
    assert_eq!(helper.disconnects, [a]);
    // A late READY from A does not replace B.
    policy.subchannel_state(a, &state(Ready), &mut helper);
    assert_eq!(picked(&helper), Some(b));
}

#[test]
fn pick_first_lost_connection_goes_idle_and_restarts_from_the_first() {
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = PickFirst::new();
    policy.add_endpoint(endpoint(1, &[a, b]), &mut helper);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    policy.subchannel_state(a, &state(Idle), &mut helper);
    assert_eq!(helper.last_state(), Idle);
    assert!(matches!(helper.pick(), PickResult::Queue));
    // New endpoints while IDLE: it stays IDLE (issue 13, defect 4).
    let c = sc(3);
    policy.add_endpoint(endpoint(2, &[c]), &mut helper);
    assert_eq!(helper.last_state(), Idle);
    assert_eq!(helper.connects, [a]);
    policy.exit_idle(&mut helper);
    assert_eq!(helper.last_state(), Connecting);
    assert_eq!(helper.connects, [a, a]);
}

#[test]
fn pick_first_good_list_after_an_empty_one_is_connecting() {
    // Issue 13, defect 4: it stayed TRANSIENT_FAILURE.
    let a = sc(1);
    let mut helper = Recorder::default();
    let mut policy = PickFirst::new();
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.remove_endpoint(EndpointId::from_raw(1), &mut helper);
    assert_eq!(helper.last_state(), TransientFailure);
    let b = sc(2);
    policy.add_endpoint(endpoint(2, &[b]), &mut helper);
    assert_eq!(helper.last_state(), Connecting);
    assert_eq!(helper.connects, [a, b]);
}

#[test]
fn pick_first_removing_the_selected_one_moves_on() {
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = PickFirst::new();
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.add_endpoint(endpoint(2, &[b]), &mut helper);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    policy.remove_endpoint(EndpointId::from_raw(1), &mut helper);
    assert_eq!(helper.last_state(), Connecting);
    assert_eq!(helper.connects, [a, b]);
    policy.subchannel_state(b, &state(Ready), &mut helper);
    assert_eq!(picked(&helper), Some(b));
}

#[test]
fn round_robin_reconnects_idle_children_and_picks_only_ready_ones() {
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = RoundRobin::new();
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.add_endpoint(endpoint(2, &[b]), &mut helper);
    assert_eq!(helper.connects, [a, b], "every child connects at once");
    assert_eq!(helper.last_state(), Connecting);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    policy.subchannel_state(b, &state(Ready), &mut helper);
    let picks: Vec<_> = (0..4).map(|_| picked(&helper).unwrap()).collect();
    assert_ne!(picks[0], picks[1]);
    assert_eq!(picks[0], picks[2]);
    // A loses its connection: its child goes IDLE and is reconnected at once.
    policy.subchannel_state(a, &state(Idle), &mut helper);
    assert_eq!(helper.connects, [a, b, a]);
    assert!((0..4).all(|_| picked(&helper) == Some(b)));
    assert_eq!(helper.last_state(), Ready);
}

#[test]
fn round_robin_failed_child_stays_failed_until_ready() {
    let a = sc(1);
    let mut helper = Recorder::default();
    let mut policy = RoundRobin::new();
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.subchannel_state(a, &failed(), &mut helper);
    assert_eq!(helper.last_state(), TransientFailure);
    // Backoff over: IDLE, reconnected; CONNECTING does not leave TF (sticky).
    policy.subchannel_state(a, &state(Idle), &mut helper);
    policy.subchannel_state(a, &state(Connecting), &mut helper);
    assert_eq!(helper.last_state(), TransientFailure);
    assert!(matches!(helper.pick(), PickResult::Fail(_)));
    policy.subchannel_state(a, &state(Ready), &mut helper);
    assert_eq!(helper.last_state(), Ready);
}

#[test]
fn child_timers_reach_the_child_that_set_them() {
    // Two endpoints of two addresses each under round_robin: each child's
    // Happy Eyeballs timer starts that child's second address only.
    let (a1, a2, b1, b2) = (sc(1), sc(2), sc(3), sc(4));
    let mut helper = Recorder::default();
    let mut policy = RoundRobin::new();
    policy.add_endpoint(endpoint(1, &[a1, a2]), &mut helper);
    policy.add_endpoint(endpoint(2, &[b1, b2]), &mut helper);
    assert_eq!(helper.connects, [a1, b1]);
    let b_timer = *helper.timers.keys().max().unwrap();
    policy.timer_fired(b_timer, &mut helper);
    assert_eq!(helper.connects, [a1, b1, b2]);
}

#[test]
fn least_request_prefers_the_endpoint_with_fewer_calls_in_flight() {
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = LeastRequest::new(10);
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.add_endpoint(endpoint(2, &[b]), &mut helper);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    policy.subchannel_state(b, &state(Ready), &mut helper);
    // Three calls start on A and stay in flight.
    let mut in_flight = Vec::new();
    while in_flight.len() < 3 {
        if let PickResult::Pick(pick) = helper.pick() {
            if pick.subchannel() == a {
                pick.done().unwrap().on_start();
                in_flight.push(pick);
            }
        }
    }
    assert_eq!(policy.in_flight(EndpointId::from_raw(1)), Some(3));
    let to_b = (0..100).filter(|_| picked(&helper) == Some(b)).count();
    assert!(to_b > 95, "{to_b}");
    // Their final status ends them.
    for pick in &in_flight {
        pick.done().unwrap().on_done(&DoneInfo::new(Outcome::Ok));
    }
    assert_eq!(policy.in_flight(EndpointId::from_raw(1)), Some(0));
}

#[test]
fn outlier_detection_ejects_the_failing_endpoint_from_its_child() {
    use crate::outlier::{FailurePercentage, OutlierDetectionConfig};
    let (a, b, c) = (sc(1), sc(2), sc(3));
    let config = OutlierDetectionConfig {
        failure_percentage: Some(FailurePercentage {
            minimum_hosts: 3,
            request_volume: 10,
            ..Default::default()
        }),
        max_ejection_percent: 50,
        ..Default::default()
    };
    let mut helper = Recorder::default();
    let mut policy = OutlierDetection::new(RoundRobin::new(), config);
    for (n, id) in [(1, a), (2, b), (3, c)] {
        policy.add_endpoint(endpoint(n, std::slice::from_ref(&id)), &mut helper);
        policy.subchannel_state(id, &state(Ready), &mut helper);
    }
    let interval = *helper.timers.keys().min().unwrap();
    // Calls end: every call on A fails (a final status, through done).
    for _ in 0..300 {
        if let PickResult::Pick(pick) = helper.pick() {
            let done = pick.done().expect("outlier detection counts every call");
            let outcome = if pick.subchannel() == a {
                Outcome::Status {
                    code: 14,
                    message: "unavailable",
                }
            } else {
                Outcome::Ok
            };
            done.on_start();
            done.on_done(&DoneInfo::new(outcome));
        }
    }
    policy.timer_fired(interval, &mut helper);
    assert_eq!(
        policy.ejected().collect::<Vec<_>>(),
        [EndpointId::from_raw(1)]
    );
    assert!((0..50).all(|_| picked(&helper) != Some(a)));
    // A's own state changes while ejected stay hidden from the child.
    policy.subchannel_state(a, &state(Ready), &mut helper);
    assert!((0..50).all(|_| picked(&helper) != Some(a)));
}

#[test]
fn a_published_picker_is_a_snapshot() {
    // A picker keeps answering what it was built from; the next one sees
    // the change (grpc-go: UpdateState swaps the picker).
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = RoundRobin::new();
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.add_endpoint(endpoint(2, &[b]), &mut helper);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    policy.subchannel_state(b, &state(Ready), &mut helper);
    let both = helper.picker.clone().unwrap();
    policy.subchannel_state(a, &state(Idle), &mut helper);
    let pick = |picker: &Arc<dyn Picker>| match picker.pick(&PickInfo::none()) {
        PickResult::Pick(pick) => pick.subchannel(),
        other => panic!("{other:?}"),
    };
    let old: std::collections::HashSet<_> = (0..10).map(|_| pick(&both)).collect();
    assert_eq!(old.len(), 2, "the old picker still has both");
    assert!((0..10).all(|_| picked(&helper) == Some(b)));
}

#[test]
fn least_request_pickers_share_the_in_flight_counters() {
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = LeastRequest::new(2);
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    let PickResult::Pick(pick) = helper.pick() else {
        panic!("a is READY")
    };
    pick.done().unwrap().on_start();
    // A new picker (b joins) sees the call started from the old one.
    policy.add_endpoint(endpoint(2, &[b]), &mut helper);
    policy.subchannel_state(b, &state(Ready), &mut helper);
    assert_eq!(policy.in_flight(EndpointId::from_raw(1)), Some(1));
    let to_b = (0..200).filter(|_| picked(&helper) == Some(b)).count();
    // With two candidates drawn from two, a is chosen only when drawn twice.
    assert!(to_b > 120, "{to_b}");
    pick.done().unwrap().on_done(&DoneInfo::new(Outcome::Ok));
    assert_eq!(policy.in_flight(EndpointId::from_raw(1)), Some(0));
}

#[test]
fn graceful_switch_publishes_the_pending_picker_when_it_takes_over() {
    let (a, b) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = GracefulSwitch::new(Box::new(PickFirst::new()));
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.add_endpoint(endpoint(2, &[b]), &mut helper);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    assert_eq!(picked(&helper), Some(a));
    // round_robin learns a's READY at once, so it takes over at once, and
    // its picker is published: a only, while it connects b.
    policy.switch_to(Box::new(RoundRobin::new()), &mut helper);
    assert_eq!(policy.name(), "round_robin");
    assert!((0..4).all(|_| picked(&helper) == Some(a)));
    assert_eq!(helper.connects.last(), Some(&b));
    // b READY: round_robin's next picker has both.
    policy.subchannel_state(b, &state(Ready), &mut helper);
    let seen: std::collections::HashSet<_> = (0..10).map(|_| picked(&helper)).collect();
    assert_eq!(seen.len(), 2, "round_robin picks both: {seen:?}");
}

#[test]
fn round_robin_endpoint_added_again_drops_the_old_childs_picker() {
    let (a, a2) = (sc(1), sc(2));
    let mut helper = Recorder::default();
    let mut policy = RoundRobin::new();
    policy.add_endpoint(endpoint(1, &[a]), &mut helper);
    policy.subchannel_state(a, &state(Ready), &mut helper);
    assert_eq!(picked(&helper), Some(a));
    // The same endpoint with another address: a is no longer picked.
    policy.add_endpoint(endpoint(1, &[a2]), &mut helper);
    assert!(matches!(helper.pick(), PickResult::Queue));
    policy.subchannel_state(a2, &state(Ready), &mut helper);
    assert!((0..4).all(|_| picked(&helper) == Some(a2)));
}
