//! The static stride scheduler of weighted_round_robin (grpc-go
//! `balancer/weightedroundrobin/scheduler.go`, C-core
//! `static_stride_scheduler.cc`).

use std::sync::atomic::{AtomicU64, Ordering};

const MAX_WEIGHT: u64 = u16::MAX as u64;
const OFFSET: u64 = MAX_WEIGHT / 2;

/// Division by a fixed `n` with two multiplications instead of a `div`
/// (tens of cycles): the quotient estimated from `⌊(2^64 − 1) / n⌋` is the
/// true one or one less, which one comparison corrects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Divisor {
    n: u64,
    inverse: u64,
}

impl Divisor {
    /// Division by `n`, at least 1.
    pub(crate) fn new(n: u64) -> Self {
        let n = n.max(1);
        Divisor {
            n,
            inverse: u64::MAX / n,
        }
    }

    /// `(x / n, x % n)`.
    #[inline]
    pub(crate) fn div_rem(self, x: u64) -> (u64, u64) {
        let mut quotient = ((u128::from(x) * u128::from(self.inverse)) >> 64) as u64;
        let mut remainder = x - quotient * self.n;
        if remainder >= self.n {
            quotient += 1;
            remainder -= self.n;
        }
        (quotient, remainder)
    }
}

/// Chooses an index among `n` endpoints in proportion to their weights.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scheduler {
    /// Plain round robin: one endpoint, at most one weight known, or all equal.
    RoundRobin { n: Divisor },
    /// Weights scaled to `u16`, zeros replaced by the mean.
    Stride { weights: Box<[u16]>, n: Divisor },
}

impl Scheduler {
    pub(crate) fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let zeros = weights.iter().filter(|w| **w <= 0.0).count();
        if n <= 1 || zeros + 1 >= n {
            return Scheduler::RoundRobin {
                n: Divisor::new(n as u64),
            };
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
            return Scheduler::RoundRobin {
                n: Divisor::new(n as u64),
            };
        }
        Scheduler::Stride {
            weights: scaled,
            n: Divisor::new(n as u64),
        }
    }

    /// The next index, advancing `sequence` (an atomic: every caller of a
    /// picker advances the same one, as grpc-go's does).
    pub(crate) fn next(&self, sequence: &AtomicU64) -> usize {
        match self {
            Scheduler::RoundRobin { n } => {
                let (_, index) = n.div_rem(sequence.fetch_add(1, Ordering::Relaxed));
                index as usize
            }
            Scheduler::Stride { weights, n } => {
                loop {
                    let seq = sequence.fetch_add(1, Ordering::Relaxed);
                    let (generation, backend) = n.div_rem(seq);
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
    fn divisor_agrees_with_div() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for n in [
            1u64,
            2,
            3,
            7,
            10,
            100,
            1_000,
            10_000,
            65_535,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let divisor = Divisor::new(n);
            for probe in [
                0,
                1,
                n - 1,
                n,
                n.wrapping_add(1),
                u64::MAX,
                u64::MAX - 1,
                u64::MAX / 2,
            ] {
                assert_eq!(
                    divisor.div_rem(probe),
                    (probe / n, probe % n),
                    "{probe} / {n}"
                );
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert_eq!(divisor.div_rem(x), (x / n, x % n), "{x} / {n}");
            }
        }
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
        let round_robin = |n| Scheduler::RoundRobin { n: Divisor::new(n) };
        assert_eq!(Scheduler::new(&[0.0, 5.0, 0.0]), round_robin(3));
        assert_eq!(Scheduler::new(&[2.0, 2.0]), round_robin(2));
        assert_eq!(Scheduler::new(&[7.0]), round_robin(1));
        let scheduler = Scheduler::new(&[0.0, 5.0, 0.0]);
        let sequence = AtomicU64::new(0);
        let picks: Vec<_> = (0..6).map(|_| scheduler.next(&sequence)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
