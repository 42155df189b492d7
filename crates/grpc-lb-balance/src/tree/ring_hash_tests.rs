use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};

use super::*;
use crate::tree::{
    Endpoint, EndpointId, Helper, PickInfo, PickResult, Picker, Policy, SubchannelId, TimerId,
};
use ConnectivityState::*;

#[derive(Default)]
struct Recorder {
    connects: Vec<SubchannelId>,
    states: Vec<ConnectivityState>,
    names: HashMap<EndpointId, EndpointAttributes>,
    next_timer: u64,
    picker: Option<Arc<dyn Picker>>,
}

impl Helper for Recorder {
    fn connect(&mut self, id: SubchannelId) {
        self.connects.push(id);
    }
    fn disconnect(&mut self, _: SubchannelId) {}
    fn update_state(
        &mut self,
        state: ConnectivityState,
        _: Option<SharedError>,
        picker: Arc<dyn Picker>,
    ) {
        self.picker = Some(picker);
        self.states.push(state);
    }
    fn set_timer(&mut self, _: Duration) -> TimerId {
        self.next_timer += 1;
        TimerId::from_raw(self.next_timer)
    }
    fn cancel_timer(&mut self, _: TimerId) {}
    fn resolve_now(&mut self) {}
    fn endpoint_attributes(&self, endpoint: EndpointId) -> Option<EndpointAttributes> {
        self.names.get(&endpoint).cloned()
    }
}

fn failed() -> Connectivity {
    Connectivity {
        state: TransientFailure,
        last_error: Some(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))),
    }
}

/// A ring_hash over `n` endpoints named like addresses; endpoint `i` has
/// subchannel `i`.
fn ring_of(n: u64, helper: &mut Recorder) -> RingHash {
    let config = RingHashConfig::default()
        .request_hash_header("x-key")
        .validate()
        .unwrap();
    let mut policy = RingHash::new(config);
    for i in 1..=n {
        add(&mut policy, i, helper);
    }
    policy
}

fn add(policy: &mut RingHash, i: u64, helper: &mut Recorder) {
    let id = EndpointId::from_raw(i);
    helper.names.insert(
        id,
        EndpointAttributes::named(format!("10.0.{}.{}:50051", i / 256, i % 256)),
    );
    let subchannels = [SubchannelId::from_raw(i)];
    policy.add_endpoint(
        Endpoint {
            id,
            subchannels: &subchannels,
        },
        helper,
    );
}

fn keyed(key: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-key", key.parse().unwrap());
    headers
}

fn pick(helper: &Recorder, headers: &http::HeaderMap) -> PickResult {
    helper.pick(&PickInfo::new(None, Some(headers)))
}

impl Recorder {
    /// A pick from the latest picker reported.
    fn pick(&self, info: &PickInfo<'_>) -> PickResult {
        self.picker.as_ref().expect("a picker").pick(info)
    }
}

#[test]
fn adding_one_endpoint_to_100_moves_about_one_in_101_keys() {
    let mut helper = Recorder::default();
    let mut policy = ring_of(100, &mut helper);
    let keys: Vec<u64> = (0..100_000u64)
        .map(|k| RequestHash::of(k.to_string()).0)
        .collect();
    let before: Vec<_> = keys
        .iter()
        .map(|h| policy.endpoint_for(*h).unwrap())
        .collect();
    add(&mut policy, 101, &mut helper);
    let after: Vec<_> = keys
        .iter()
        .map(|h| policy.endpoint_for(*h).unwrap())
        .collect();
    let moved: Vec<_> = after
        .iter()
        .zip(&before)
        .filter(|(new, old)| new != old)
        .map(|(new, _)| *new)
        .collect();
    let fraction = moved.len() as f64 / keys.len() as f64;
    println!(
        "moved {} of {} keys: {fraction:.4} (1/101 = {:.4})",
        moved.len(),
        keys.len(),
        1.0 / 101.0
    );
    assert!(fraction > 0.0 && fraction < 2.0 / 101.0, "{fraction}");
    // Every moved key moved to the new endpoint.
    assert!(moved.iter().all(|e| *e == EndpointId::from_raw(101)));
}

#[test]
fn removing_an_endpoint_moves_its_keys_and_few_others() {
    // Not exactly "only its keys": A42's ring gives each endpoint
    // ceil(minRingSize / n) entries, so with one endpoint fewer every other
    // endpoint gains an entry or two, which take a few keys (as in grpc-go).
    let mut helper = Recorder::default();
    let mut policy = ring_of(100, &mut helper);
    let keys: Vec<u64> = (0..100_000u64)
        .map(|k| RequestHash::of(k.to_string()).0)
        .collect();
    let before: Vec<_> = keys
        .iter()
        .map(|h| policy.endpoint_for(*h).unwrap())
        .collect();
    let gone = EndpointId::from_raw(7);
    policy.remove_endpoint(gone, &mut helper);
    let after: Vec<_> = keys
        .iter()
        .map(|h| policy.endpoint_for(*h).unwrap())
        .collect();
    assert!(after.iter().all(|e| *e != gone));
    let others_moved = before
        .iter()
        .zip(&after)
        .filter(|(old, new)| **old != gone && old != new)
        .count();
    let fraction = others_moved as f64 / keys.len() as f64;
    println!(
        "removing one of 100 moved {others_moved} keys of the other endpoints ({fraction:.4})"
    );
    assert!(fraction < 1.0 / 100.0, "{fraction}");
}

#[test]
fn ring_entries_follow_weights_and_sizes() {
    let mut endpoints = vec![
        (Arc::<str>::from("a"), 1, EndpointId::from_raw(1)),
        (Arc::<str>::from("b"), 3, EndpointId::from_raw(2)),
    ];
    let ring = build_ring(&mut endpoints, 1024, 4096);
    let count = |id| {
        ring.iter()
            .filter(|e| e.1 == EndpointId::from_raw(id))
            .count()
    };
    assert_eq!(ring.len(), 1024);
    assert_eq!((count(1), count(2)), (256, 768));
    assert!(ring.windows(2).all(|w| w[0].0 <= w[1].0));
    // The hash of entry 0 of "a" is XXH64("a_0").
    assert!(ring
        .iter()
        .any(|e| e.0 == xxhash_rust::xxh64::xxh64(b"a_0", 0)));
    // maxRingSize caps the scale.
    let ring = build_ring(&mut endpoints, 16, 8);
    assert_eq!(ring.len(), 8);
}

#[test]
fn picks_connect_idle_endpoints_on_demand_and_walk_past_failed_ones() {
    let mut helper = Recorder::default();
    let mut policy = ring_of(3, &mut helper);
    assert!(helper.connects.is_empty(), "nothing connects before a pick");
    assert_eq!(helper.states.last(), Some(&Idle));
    let headers = keyed("alice");
    let target = policy.endpoint_for(RequestHash::of("alice").0).unwrap();
    let target_sc = SubchannelId::from_raw(target.raw());
    assert!(matches!(pick(&helper, &headers), PickResult::Queue));
    policy.pick_queued(&mut helper);
    assert_eq!(helper.connects, [target_sc], "the key's endpoint connects");
    assert_eq!(helper.states.last(), Some(&Connecting));
    policy.subchannel_state(target_sc, &Connectivity::new(Ready), &mut helper);
    assert_eq!(helper.states.last(), Some(&Ready));
    for _ in 0..100 {
        match pick(&helper, &headers) {
            PickResult::Pick(p) => assert_eq!(p.subchannel(), target_sc),
            other => panic!("{other:?}"),
        }
    }
    // The key's endpoint fails: the pick walks on to the next endpoint on
    // the ring and waits for it (connected by A61's rule or by the pick).
    let hash = RequestHash::of("alice").0;
    let start = ring_lookup(policy.ring(), hash);
    let ring = policy.ring().to_vec();
    let next = (0..ring.len())
        .map(|step| ring[(start + step) % ring.len()].1)
        .find(|id| *id != target)
        .unwrap();
    let next = SubchannelId::from_raw(next.raw());
    // Its connection is lost (IDLE): the next pick reconnects it, and the
    // attempt fails.
    policy.subchannel_state(target_sc, &Connectivity::new(Idle), &mut helper);
    assert!(matches!(pick(&helper, &headers), PickResult::Queue));
    policy.pick_queued(&mut helper);
    assert_eq!(helper.connects, [target_sc, target_sc]);
    policy.subchannel_state(target_sc, &Connectivity::new(Connecting), &mut helper);
    policy.subchannel_state(target_sc, &failed(), &mut helper);
    assert!(matches!(pick(&helper, &headers), PickResult::Queue));
    policy.pick_queued(&mut helper);
    assert!(helper.connects.contains(&next), "{:?}", helper.connects);
    policy.subchannel_state(next, &Connectivity::new(Ready), &mut helper);
    match pick(&helper, &headers) {
        PickResult::Pick(p) => assert_eq!(p.subchannel(), next),
        other => panic!("{other:?}"),
    }
}

#[test]
fn aggregate_state_follows_a42() {
    let mut helper = Recorder::default();
    let mut policy = ring_of(3, &mut helper);
    let sc = SubchannelId::from_raw;
    assert_eq!(policy.aggregate(), Idle);
    // One TF among several: CONNECTING, and (A61) an IDLE endpoint is
    // connected since none is connecting.
    policy.exit_idle(&mut helper);
    let first = helper.connects[0];
    policy.subchannel_state(first, &failed(), &mut helper);
    assert_eq!(policy.aggregate(), Connecting);
    assert_eq!(helper.connects.len(), 2, "{:?}", helper.connects);
    // Two TF: TRANSIENT_FAILURE; the last IDLE one is connected.
    let second = helper.connects[1];
    policy.subchannel_state(second, &failed(), &mut helper);
    assert_eq!(policy.aggregate(), TransientFailure);
    assert_eq!(helper.states.last(), Some(&TransientFailure));
    assert_eq!(helper.connects.len(), 3);
    // Every endpoint failed: a keyed pick fails.
    let third = helper.connects[2];
    policy.subchannel_state(third, &failed(), &mut helper);
    assert!(matches!(pick(&helper, &keyed("bob")), PickResult::Fail(_)));
    // Any READY: READY.
    policy.subchannel_state(sc(2), &Connectivity::new(Ready), &mut helper);
    assert_eq!(helper.states.last(), Some(&Ready));
}

#[test]
fn random_hash_takes_the_first_ready_endpoint() {
    let mut helper = Recorder::default();
    let mut policy = ring_of(5, &mut helper);
    // No header: random hash; with nothing connecting, one IDLE endpoint
    // is connected and the call queues.
    assert!(matches!(helper.pick(&PickInfo::none()), PickResult::Queue));
    policy.pick_queued(&mut helper);
    assert_eq!(helper.connects.len(), 1);
    let only = helper.connects[0];
    assert!(matches!(helper.pick(&PickInfo::none()), PickResult::Queue));
    policy.pick_queued(&mut helper);
    assert_eq!(helper.connects.len(), 1, "one is connecting: no more");
    policy.subchannel_state(only, &Connectivity::new(Ready), &mut helper);
    for _ in 0..50 {
        match helper.pick(&PickInfo::none()) {
            PickResult::Pick(p) => assert_eq!(p.subchannel(), only),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn request_hash_extension_is_used_without_a_header() {
    let mut helper = Recorder::default();
    let mut policy = RingHash::new(RingHashConfig::default().validate().unwrap());
    for i in 1..=4 {
        add(&mut policy, i, &mut helper);
        let sc = SubchannelId::from_raw(i);
        policy.exit_idle(&mut helper);
        policy.subchannel_state(sc, &Connectivity::new(Ready), &mut helper);
    }
    let hash = RequestHash::of("tenant-9");
    let want = SubchannelId::from_raw(policy.endpoint_for(hash.0).unwrap().raw());
    let mut extensions = http::Extensions::new();
    extensions.insert(hash);
    let info = PickInfo::none().with_extensions(&extensions);
    for _ in 0..20 {
        match helper.pick(&info) {
            PickResult::Pick(p) => assert_eq!(p.subchannel(), want),
            other => panic!("{other:?}"),
        }
    }
}
