//! One pick of a tree policy's picker alone (`Picker::pick`, no balancer around it)
//! at 10 and 10,000 READY endpoints: round_robin beside ring_hash (a keyed
//! pick from a header) and weighted_round_robin (weights known, the static
//! stride scheduler). `cargo bench -p grpc-lb-bench --bench policies`; under
//! `cargo test` each runs once, at 10 and 100.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use grpc_lb::balance::tree::{PickInfo, PickResult};

mod support {
    pub(crate) mod tree;
}
use support::tree::{headers, picker};

fn sizes() -> Vec<u64> {
    if std::env::args().any(|a| a == "--bench") {
        vec![10, 10_000]
    } else {
        vec![10, 100]
    }
}

fn policy_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_pick");
    for n in sizes() {
        let round_robin = picker("round_robin", n);
        group.bench_function(BenchmarkId::new("round_robin", n), |b| {
            b.iter(|| black_box(round_robin.pick(&PickInfo::none())))
        });

        let ring_hash = picker("ring_hash", n);
        let headers = headers();
        let info = PickInfo::new(None, Some(&headers));
        assert!(matches!(ring_hash.pick(&info), PickResult::Pick(_)));
        group.bench_function(BenchmarkId::new("ring_hash", n), |b| {
            b.iter(|| black_box(ring_hash.pick(&info)))
        });

        let wrr = picker("weighted_round_robin", n);
        assert!(matches!(wrr.pick(&PickInfo::none()), PickResult::Pick(_)));
        group.bench_function(BenchmarkId::new("weighted_round_robin", n), |b| {
            b.iter(|| black_box(wrr.pick(&PickInfo::none())))
        });
    }
    group.finish();
}

criterion_group!(benches, policy_pick);
criterion_main!(benches);
