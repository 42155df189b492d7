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
//! (divide `Collected` by 100,000). `handle_pick` is the same round_robin
//! pick made through a running `Balance`'s `PickHandle`: the snapshot's load,
//! the pick, and the clone of the picked service (`TREE_PICK_CALLGRIND=
//! handle:<endpoints>`).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, BenchmarkId, Criterion};
use grpc_lb::balance::service::{Balance, PickHandle, Picked};
use grpc_lb::balance::tree::{PickInfo, PickResult, Picker, RoundRobin};
use grpc_lb::ConnectivityState;
use tower::discover::ServiceList;
use tower_service::Service;

mod support {
    pub(crate) mod tree;
}
use support::tree::{headers, picker};

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
/// else inside `pick_once` (or `handle_pick_once` for `handle`).
fn callgrind(spec: &str) {
    let (policy, n) = spec.split_once(':').expect("<policy>:<endpoints>");
    let n: u64 = n.parse().expect("a number of endpoints");
    if policy == "handle" {
        let (handle, _balance) = handle(n);
        for _ in 0..100_000 {
            black_box(handle_pick_once(&handle, &PickInfo::none()));
        }
        println!("handle at {n} endpoints: 100000 picks");
        return;
    }
    let picker = picker(policy, n);
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

/// A backend that is always ready.
#[derive(Clone, Debug)]
struct Backend(u64);

impl Service<()> for Backend {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok(self.0))
    }
}

/// A handle over a round_robin `Balance` of `n` READY backends; the balancer
/// is returned too, since dropping it closes the handle.
fn handle(n: u64) -> (PickHandle<Backend>, impl Sized) {
    let backends = ServiceList::new((0..n).map(Backend).collect::<Vec<_>>());
    let mut balance = Balance::new(backends, RoundRobin::new());
    let handle = balance.handle();
    let mut cx = Context::from_waker(Waker::noop());
    while balance
        .endpoints()
        .filter(|(_, state)| *state == ConnectivityState::Ready)
        .count()
        < n as usize
    {
        let _ = balance.poll_events(&mut cx);
    }
    let _ = balance.poll_events(&mut cx);
    (handle, balance)
}

/// One pick through the handle: ready at the first poll.
#[inline(never)]
fn handle_pick_once(handle: &PickHandle<Backend>, info: &PickInfo<'_>) -> Picked<Backend> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(handle.pick(*info)).poll(&mut cx) {
        Poll::Ready(Ok(picked)) => picked,
        other => panic!("{other:?}"),
    }
}

fn handle_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("handle_pick");
    let info = PickInfo::none();
    for n in sizes() {
        let (handle, _balance) = handle(n);
        group.bench_function(BenchmarkId::new("round_robin", n), |b| {
            b.iter(|| black_box(handle_pick_once(&handle, &info)))
        });
    }
    group.finish();
}

criterion_group!(benches, tree_pick, handle_pick);

fn main() {
    if let Ok(spec) = std::env::var("TREE_PICK_CALLGRIND") {
        return callgrind(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
