//! The static stride scheduler of weighted_round_robin (grpc-go
//! `balancer/weightedroundrobin/scheduler.go`, C-core
//! `static_stride_scheduler.cc`).

use std::sync::atomic::{AtomicU64, Ordering};

const MAX_WEIGHT: u64 = u16::MAX as u64;
const OFFSET: u64 = MAX_WEIGHT / 2;

/// Chooses an index among `n` endpoints in proportion to their weights.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scheduler {
    /// Plain round robin: one endpoint, at most one weight known, or all equal.
    RoundRobin { n: u64 },
    /// Weights scaled to `u16`, zeros replaced by the mean.
    Stride { weights: Box<[u16]> },
}

impl Scheduler {
    pub(crate) fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let zeros = weights.iter().filter(|w| **w <= 0.0).count();
        if n <= 1 || zeros + 1 >= n {
            return Scheduler::RoundRobin { n: n as u64 };
        }
        let sum: f64 = weights.iter().filter(|w| **w > 0.0).sum();
        let max = weights.iter().copied().fold(0.0, f64::max);
        let unscaled_mean = sum / (n - zeros) as f64;
        let scale = MAX_WEIGHT as f64 / max;
        let mean = (scale * unscaled_mean).round() as u16;
        let scaled: Box<[u16]> = weights
            .iter()
            .map(|w| {
                if *w > 0.0 {
                    ((scale * w).round() as u16).max(1)
                } else {
                    mean
                }
            })
            .collect();
        if scaled.iter().all(|w| *w == scaled[0]) {
            return Scheduler::RoundRobin { n: n as u64 };
        }
        Scheduler::Stride { weights: scaled }
    }

    /// The next index, advancing `sequence` (an atomic: every caller of a
    /// picker advances the same one, as grpc-go's does).
    pub(crate) fn next(&self, sequence: &AtomicU64) -> usize {
        match self {
            Scheduler::RoundRobin { n } => {
                let index = sequence.fetch_add(1, Ordering::Relaxed) % (*n).max(1);
                index as usize
            }
            Scheduler::Stride { weights } => {
                let n = weights.len() as u64;
                loop {
                    let seq = sequence.fetch_add(1, Ordering::Relaxed);
                    let backend = seq % n;
                    let generation = seq / n;
                    let weight = u64::from(weights[backend as usize]);
                    // Picked iff (w·g + b·offset) mod 65535 ≥ 65535 − w: a
                    // backend of weight w is picked w times in 65535
                    // generations, spread by its offset.
                    let at = (weight.wrapping_mul(generation) + backend * OFFSET) % MAX_WEIGHT;
                    if at >= MAX_WEIGHT - weight {
                        return backend as usize;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(weights: &[f64], picks: usize) -> Vec<f64> {
        let scheduler = Scheduler::new(weights);
        let mut counts = vec![0usize; weights.len()];
        let sequence = AtomicU64::new(0);
        for _ in 0..picks {
            counts[scheduler.next(&sequence)] += 1;
        }
        counts.iter().map(|c| *c as f64 / picks as f64).collect()
    }

    #[test]
    fn picks_follow_the_weights() {
        let got = shares(&[1.0, 2.0, 3.0], 60_000);
        for (got, want) in got.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
            assert!((got - want).abs() < 0.01, "{got} vs {want}");
        }
    }

    #[test]
    fn unknown_weights_take_the_mean() {
        let got = shares(&[1.0, 3.0, 0.0], 60_000);
        for (got, want) in got.iter().zip([1.0 / 6.0, 3.0 / 6.0, 2.0 / 6.0]) {
            assert!((got - want).abs() < 0.01, "{got} vs {want}");
        }
    }

    #[test]
    fn round_robin_when_too_few_weights_or_all_equal() {
        assert_eq!(
            Scheduler::new(&[0.0, 5.0, 0.0]),
            Scheduler::RoundRobin { n: 3 }
        );
        assert_eq!(Scheduler::new(&[2.0, 2.0]), Scheduler::RoundRobin { n: 2 });
        assert_eq!(Scheduler::new(&[7.0]), Scheduler::RoundRobin { n: 1 });
        let scheduler = Scheduler::new(&[0.0, 5.0, 0.0]);
        let sequence = AtomicU64::new(0);
        let picks: Vec<_> = (0..6).map(|_| scheduler.next(&sequence)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
