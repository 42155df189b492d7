use rand::rngs::SmallRng;
use rand::SeedableRng;

/// A source of uniformly distributed numbers for jitter.
///
/// Randomness is injected rather than drawn from a global generator so that
/// tests (and callers who want reproducible schedules) can supply a
/// deterministic source such as [`FixedRng`].
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_backoff::{Backoff, BackoffConfig, Rng};
///
/// /// Always the upper edge of the jitter band: the most patient schedule.
/// struct Patient;
///
/// impl Rng for Patient {
///     fn next_f64(&mut self) -> f64 {
///         0.999_999
///     }
/// }
///
/// let mut backoff = Backoff::with_rng(BackoffConfig::default(), Patient);
/// assert_eq!(backoff.next_delay(), Duration::from_secs(1)); // the first is never jittered
/// assert!(backoff.next_delay() > Duration::from_millis(1900)); // 1.6 s + almost 20 %
/// ```
pub trait Rng {
    /// Returns a number uniformly distributed in `[0, 1)`.
    ///
    /// Implementations should stay in that range; consumers in this crate
    /// clamp out-of-range values (and treat NaN as `0.5`, i.e. no jitter)
    /// rather than produce delays outside the configured jitter band.
    fn next_f64(&mut self) -> f64;
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn next_f64(&mut self) -> f64 {
        (**self).next_f64()
    }
}

/// The random source used by [`Backoff::new`](crate::Backoff::new): a small,
/// fast, non-cryptographic generator.
///
/// Jitter only needs to decorrelate clients, not to be unpredictable to an
/// attacker, so a cheap generator is enough.
///
/// ```
/// use grpc_lb_backoff::{DefaultRng, Rng};
///
/// // A fixed seed replays the same jitter, e.g. to reproduce a schedule in a test.
/// let mut a = DefaultRng::from_seed(42);
/// let mut b = DefaultRng::from_seed(42);
/// assert_eq!(a.next_f64(), b.next_f64());
///
/// let draw = DefaultRng::new().next_f64();
/// assert!((0.0..1.0).contains(&draw));
/// ```
#[derive(Clone, Debug)]
pub struct DefaultRng(SmallRng);

impl DefaultRng {
    /// Creates a generator seeded from the operating system, so that
    /// independent processes draw different jitter.
    pub fn new() -> Self {
        Self(SmallRng::from_os_rng())
    }

    /// Creates a generator with a fixed seed, producing the same sequence
    /// every time.
    pub fn from_seed(seed: u64) -> Self {
        Self(SmallRng::seed_from_u64(seed))
    }
}

impl Default for DefaultRng {
    /// Same as [`DefaultRng::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Rng for DefaultRng {
    fn next_f64(&mut self) -> f64 {
        // `StandardUniform` for f64 yields [0, 1), matching the trait contract.
        rand::Rng::random::<f64>(&mut self.0)
    }
}

/// A "random" source that always returns the same value.
///
/// Values are clamped into `[0, 1)`; NaN is treated as `0.5`. The useful
/// points are:
///
/// - `FixedRng(0.5)`: no jitter, every delay equals its nominal value;
/// - `FixedRng(0.0)`: the shortest delays, `nominal * (1 - jitter)`;
/// - values just below `1.0`: the longest delays, approaching
///   `nominal * (1 + jitter)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_backoff::{BackoffConfig, FixedRng};
///
/// let config = BackoffConfig::default();
/// assert_eq!(config.delay(1, &mut FixedRng(0.5)), Duration::from_millis(1600));
/// assert_eq!(config.delay(1, &mut FixedRng(0.0)), Duration::from_millis(1280));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedRng(pub f64);

/// The largest `f64` strictly below 1.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

impl Rng for FixedRng {
    fn next_f64(&mut self) -> f64 {
        if self.0.is_nan() {
            0.5
        } else {
            self.0.clamp(0.0, BELOW_ONE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rng_clamps_into_unit_interval() {
        assert_eq!(FixedRng(0.25).next_f64(), 0.25);
        assert_eq!(FixedRng(-3.0).next_f64(), 0.0);
        assert_eq!(FixedRng(1.0).next_f64(), BELOW_ONE);
        assert!(FixedRng(f64::INFINITY).next_f64() < 1.0);
        assert_eq!(FixedRng(f64::NAN).next_f64(), 0.5);
    }

    #[test]
    fn default_rng_stays_in_range_and_is_reproducible() {
        let mut a = DefaultRng::from_seed(7);
        let mut b = DefaultRng::from_seed(7);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x), "{x}");
            assert_eq!(x, b.next_f64());
        }
        let x = DefaultRng::new().next_f64();
        assert!((0.0..1.0).contains(&x), "{x}");
    }

    #[test]
    fn mut_ref_forwards() {
        fn draw<R: Rng>(mut rng: R) -> f64 {
            rng.next_f64()
        }
        let mut rng = FixedRng(0.75);
        assert_eq!(draw(&mut rng), 0.75);
        let dyn_rng: &mut dyn Rng = &mut rng;
        assert_eq!(draw(dyn_rng), 0.75);
    }
}
