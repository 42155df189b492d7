//! Micro-benchmarks: one call through the real `Channel` (snapshot load,
//! pick, reservation, response future) against in-memory ready connections,
//! the policies' picks alone, state aggregation and backoff computation, at
//! 10, 1,000 and 10,000 endpoints.
//!
//! `cargo bench -p grpc-lb-bench`. Under `cargo test` (criterion's test mode,
//! no `--bench` flag) each benchmark runs once and the big endpoint counts
//! are left out, so CI stays fast.

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Waker};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use grpc_lb::backoff::{BackoffConfig, DefaultRng};
use grpc_lb::balance::{aggregate, EndpointLoad, LeastRequest, P2cPeakEwma, Pick, RoundRobin};
use grpc_lb::ConnectivityState;
use grpc_lb_bench::inmem::{call_once, endpoints, mem_channel, wait_until};

fn sizes() -> Vec<usize> {
    if std::env::args().any(|a| a == "--bench") {
        vec![10, 1_000, 10_000]
    } else {
        vec![10, 100]
    }
}

fn channel_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("channel_call");
    for policy in ["round_robin", "p2c", "pick_first"] {
        for n in sizes() {
            let (mut channel, handle, worker) = mem_channel(policy).unwrap();
            runtime.spawn(worker);
            let want = if policy == "pick_first" { 1 } else { n };
            runtime.block_on(async {
                handle.reset(endpoints(n));
                wait_until(&channel, |c| c.ready_addresses().len() == want)
                    .await
                    .unwrap();
            });
            let mut cx = Context::from_waker(Waker::noop());
            group.bench_function(BenchmarkId::new(policy, n), |b| {
                b.iter(|| black_box(call_once(&mut channel, &mut cx)))
            });
        }
    }
    group.finish();
}

fn policy_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in sizes() {
        let loads: Vec<Arc<EndpointLoad>> = (0..n).map(|_| Arc::default()).collect();
        let picks: [(&str, Box<dyn Pick>); 3] = [
            ("round_robin", Box::new(RoundRobin::new())),
            ("p2c", Box::new(P2cPeakEwma::new())),
            ("least_request", Box::new(LeastRequest::default())),
        ];
        for (name, pick) in picks {
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| black_box(pick.pick(black_box(&loads))))
            });
        }
    }
    group.finish();
}

fn aggregation(c: &mut Criterion) {
    let mut group = c.benchmark_group("aggregate");
    for n in sizes() {
        // The worst case: nothing READY, so every state is read.
        let states = vec![ConnectivityState::TransientFailure; n];
        group.bench_function(BenchmarkId::new("all_failing", n), |b| {
            b.iter(|| black_box(aggregate(black_box(&states).iter().copied())))
        });
    }
    group.finish();
}

fn backoff(c: &mut Criterion) {
    let config = BackoffConfig::default();
    let mut rng = DefaultRng::from_seed(7);
    c.bench_function("backoff_delay", |b| {
        let mut attempt = 0u32;
        b.iter(|| {
            attempt = (attempt + 1) % 16;
            black_box(config.delay(black_box(attempt), &mut rng))
        })
    });
}

criterion_group!(benches, channel_call, policy_pick, aggregation, backoff);
criterion_main!(benches);
