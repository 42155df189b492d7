use std::time::Duration;

use crate::{BackoffConfig, DefaultRng, Rng};

/// The backoff state of one subchannel: a [`BackoffConfig`], the number of
/// consecutive failed attempts, and a random source for jitter.
///
/// Call [`next_delay`](Self::next_delay) after each failed connection attempt
/// and [`reset`](Self::reset) after a successful one.
///
/// Each subchannel should own its own `Backoff` (and, with [`Backoff::new`],
/// its own independently seeded generator), so that subchannels that fail
/// together do not retry together.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_backoff::{Backoff, BackoffConfig, FixedRng};
///
/// let mut backoff = Backoff::with_rng(BackoffConfig::default(), FixedRng(0.0));
/// assert_eq!(backoff.next_delay(), Duration::from_secs(1)); // never jittered
/// assert_eq!(backoff.next_delay(), Duration::from_millis(1280)); // 1.6 s - 20%
/// assert_eq!(backoff.attempt(), 2);
///
/// backoff.reset();
/// assert_eq!(backoff.attempt(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct Backoff<R = DefaultRng> {
    config: BackoffConfig,
    attempt: u32,
    rng: R,
}

impl Backoff<DefaultRng> {
    /// Creates a backoff at attempt 0 whose jitter comes from a
    /// [`DefaultRng`] seeded by the operating system.
    pub fn new(config: BackoffConfig) -> Self {
        Self::with_rng(config, DefaultRng::new())
    }
}

impl<R: Rng> Backoff<R> {
    /// Creates a backoff at attempt 0 whose jitter comes from `rng`.
    ///
    /// Use a seeded [`DefaultRng`] or a [`FixedRng`](crate::FixedRng) for
    /// reproducible schedules.
    pub fn with_rng(config: BackoffConfig, rng: R) -> Self {
        Self {
            config,
            attempt: 0,
            rng,
        }
    }

    /// Returns the delay for the current attempt (see
    /// [`BackoffConfig::delay`]) and advances to the next attempt.
    ///
    /// The counter saturates at `u32::MAX`; by then the delay has long been
    /// at the cap, so the schedule is unaffected.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.config.delay(self.attempt, &mut self.rng);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// The number of delays handed out since creation or the last
    /// [`reset`](Self::reset), i.e. the attempt the next call to
    /// [`next_delay`](Self::next_delay) will compute.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Returns to attempt 0, so the next delay is the base delay again.
    ///
    /// Call this once a connection has been established, so that a later
    /// disconnection starts the schedule over rather than waiting as long as
    /// the last failure did.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The configuration this backoff follows.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixedRng;

    #[test]
    fn attempt_counter_saturates() {
        let mut backoff = Backoff::with_rng(BackoffConfig::default(), FixedRng(0.5));
        backoff.attempt = u32::MAX - 1;
        assert_eq!(backoff.next_delay(), Duration::from_secs(120));
        assert_eq!(backoff.attempt(), u32::MAX);
        assert_eq!(backoff.next_delay(), Duration::from_secs(120));
        assert_eq!(backoff.attempt(), u32::MAX);
    }

    #[test]
    fn works_with_borrowed_rng() {
        let mut rng = DefaultRng::from_seed(3);
        let mut a = Backoff::with_rng(BackoffConfig::default(), &mut rng);
        assert_eq!(a.next_delay(), Duration::from_secs(1));
        let _ = a.next_delay();
    }
}
