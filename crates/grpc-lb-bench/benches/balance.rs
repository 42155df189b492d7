//! Micro-benchmarks of the new balancer (`grpc_lb::balance::service::Balance`)
//! at 10 and 10,000 endpoints:
//!
//! - `balance_pick`: one `poll_ready` + `call` through `Balance` over ready
//!   in-memory services (the pick, the reservation, the response future);
//! - `balance_event`: one endpoint's state change (READY ↔ CONNECTING) from
//!   its waker to the policy, handled by `poll_events`.
//!
//! Both should be flat in the endpoint count. `cargo bench -p grpc-lb-bench
//! --bench balance`; under `cargo test` each runs once, at 10 and 100.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::task::AtomicWaker;
use grpc_lb::balance::service::Balance;
use grpc_lb::balance::tree::{PickFirst, Policy, RoundRobin};
use grpc_lb::ConnectivityState;
use tower::discover::ServiceList;
use tower_service::Service;

fn sizes() -> Vec<usize> {
    if std::env::args().any(|a| a == "--bench") {
        vec![10, 10_000]
    } else {
        vec![10, 100]
    }
}

/// An endpoint whose readiness a switch controls, waking the balancer when
/// it flips.
#[derive(Clone)]
struct Switched {
    ready: Arc<AtomicBool>,
    waker: Arc<AtomicWaker>,
}

impl Switched {
    fn new() -> Self {
        Switched {
            ready: Arc::new(AtomicBool::new(true)),
            waker: Arc::default(),
        }
    }

    fn flip(&self) {
        self.ready.fetch_xor(true, Ordering::AcqRel);
        self.waker.wake();
    }
}

impl Service<()> for Switched {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.waker.register(cx.waker());
        if self.ready.load(Ordering::Acquire) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(()))
    }
}

type Bench = Balance<ServiceList<Vec<Switched>>, ()>;

fn balance(n: usize, policy: impl Policy) -> (Bench, Vec<Switched>) {
    let endpoints: Vec<Switched> = (0..n).map(|_| Switched::new()).collect();
    let mut balance = Balance::new(ServiceList::new(endpoints.clone()), policy);
    let mut cx = Context::from_waker(Waker::noop());
    while balance
        .endpoints()
        .filter(|(_, s)| *s == ConnectivityState::Ready)
        .count()
        < n.min(if balance.policy().name() == "pick_first" {
            1
        } else {
            n
        })
    {
        let _ = balance.poll_events(&mut cx);
    }
    (balance, endpoints)
}

fn balance_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance_pick");
    let mut cx = Context::from_waker(Waker::noop());
    for n in sizes() {
        for (name, policy) in [
            (
                "round_robin",
                Box::new(RoundRobin::new()) as Box<dyn Policy>,
            ),
            ("pick_first", Box::new(PickFirst::new())),
        ] {
            let (mut balance, _endpoints) = balance(n, policy);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    assert!(balance.poll_ready(&mut cx).is_ready());
                    black_box(balance.call(()))
                })
            });
        }
    }
    group.finish();
}

fn balance_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance_event");
    let mut cx = Context::from_waker(Waker::noop());
    for n in sizes() {
        let (mut balance, endpoints) = balance(n, RoundRobin::new());
        // The same endpoint flips every time: the work of one event alone.
        let one = endpoints[n / 2].clone();
        group.bench_function(BenchmarkId::new("round_robin/same_endpoint", n), |b| {
            b.iter(|| {
                one.flip();
                black_box(balance.poll_events(&mut cx))
            })
        });
        let mut next = 0;
        // Each endpoint in turn: the same work, plus the cache misses of a
        // working set that grows with the endpoint count.
        group.bench_function(BenchmarkId::new("round_robin/each_in_turn", n), |b| {
            b.iter(|| {
                // One endpoint flips (READY ↔ CONNECTING): its waker queues
                // it, and the balancer polls it alone and tells the policy.
                endpoints[next].flip();
                next = (next + 1) % endpoints.len();
                black_box(balance.poll_events(&mut cx))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, balance_pick, balance_event);
criterion_main!(benches);
