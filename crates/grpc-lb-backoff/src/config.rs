use std::time::Duration;

use crate::{InvalidBackoff, Rng};

/// Validated parameters of the gRPC connection backoff.
///
/// [`Default`] gives the values from the gRPC spec (also available as the
/// `DEFAULT_*` constants). Custom values go through [`try_new`] or
/// [`try_from_secs_f64`], so every `BackoffConfig` satisfies:
///
/// - `base_delay > 0`,
/// - `base_delay <= max_delay`,
/// - `multiplier` is finite and `>= 1`,
/// - `jitter` is in `[0, 1]`.
///
/// See the [crate documentation](crate) for the algorithm.
///
/// [`try_new`]: BackoffConfig::try_new
/// [`try_from_secs_f64`]: BackoffConfig::try_from_secs_f64
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_backoff::{BackoffConfig, FixedRng};
///
/// let config = BackoffConfig::default();
/// assert_eq!(config.base_delay(), Duration::from_secs(1));
/// assert_eq!(config.max_delay(), Duration::from_secs(120));
///
/// // The nominal delay grows by 1.6 per failure until the 120 s cap ...
/// assert_eq!(config.nominal_delay(2), Duration::from_millis(2560));
/// assert_eq!(config.nominal_delay(50), Duration::from_secs(120));
/// // ... and jitter spreads each delay by up to ±20 % around it.
/// let shortest = config.delay(2, &mut FixedRng(0.0));
/// assert_eq!(shortest, Duration::from_millis(2048));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffConfig {
    base_delay: Duration,
    multiplier: f64,
    jitter: f64,
    max_delay: Duration,
    min_connect_timeout: Duration,
}

impl BackoffConfig {
    /// The delay after the first failure: 1 second.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
    /// The factor by which the delay grows with each failure: 1.6.
    pub const DEFAULT_MULTIPLIER: f64 = 1.6;
    /// The relative spread of the randomization: 0.2, i.e. ±20%.
    pub const DEFAULT_JITTER: f64 = 0.2;
    /// The upper bound on the nominal (pre-jitter) delay: 120 seconds.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(120);
    /// The least time a connection attempt is given: 20 seconds.
    pub const DEFAULT_MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

    /// Creates a configuration, checking that the parameters make sense.
    ///
    /// # Errors
    ///
    /// - [`InvalidBackoff::NotFinite`] if `multiplier` or `jitter` is NaN or
    ///   infinite;
    /// - [`InvalidBackoff::MultiplierBelowOne`] if `multiplier < 1`;
    /// - [`InvalidBackoff::JitterOutOfRange`] if `jitter` is not in `[0, 1]`;
    /// - [`InvalidBackoff::ZeroBaseDelay`] if `base_delay` is zero;
    /// - [`InvalidBackoff::BaseExceedsMax`] if `base_delay > max_delay`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb_backoff::{BackoffConfig, InvalidBackoff};
    ///
    /// let config = BackoffConfig::try_new(
    ///     Duration::from_millis(100),
    ///     2.0,
    ///     0.1,
    ///     Duration::from_secs(10),
    ///     Duration::from_secs(5),
    /// )?;
    /// assert_eq!(config.nominal_delay(2), Duration::from_millis(400));
    ///
    /// assert_eq!(
    ///     BackoffConfig::try_new(Duration::ZERO, 2.0, 0.1, Duration::from_secs(10), Duration::ZERO),
    ///     Err(InvalidBackoff::ZeroBaseDelay),
    /// );
    /// # Ok::<(), InvalidBackoff>(())
    /// ```
    pub fn try_new(
        base_delay: Duration,
        multiplier: f64,
        jitter: f64,
        max_delay: Duration,
        min_connect_timeout: Duration,
    ) -> Result<Self, InvalidBackoff> {
        if !multiplier.is_finite() {
            return Err(InvalidBackoff::NotFinite {
                field: "multiplier",
            });
        }
        if multiplier < 1.0 {
            return Err(InvalidBackoff::MultiplierBelowOne { multiplier });
        }
        if !jitter.is_finite() {
            return Err(InvalidBackoff::NotFinite { field: "jitter" });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(InvalidBackoff::JitterOutOfRange { jitter });
        }
        if base_delay.is_zero() {
            return Err(InvalidBackoff::ZeroBaseDelay);
        }
        if base_delay > max_delay {
            return Err(InvalidBackoff::BaseExceedsMax {
                base: base_delay,
                max: max_delay,
            });
        }
        Ok(Self {
            base_delay,
            multiplier,
            // Normalize -0.0 so that equal configs compare and print alike.
            jitter: jitter + 0.0,
            max_delay,
            min_connect_timeout,
        })
    }

    /// Creates a configuration from durations in (fractional) seconds, as a
    /// configuration file or command-line flag would provide them.
    ///
    /// # Errors
    ///
    /// For each duration, in argument order:
    /// [`InvalidBackoff::NotFinite`] for NaN or infinity,
    /// [`InvalidBackoff::Negative`] for values below zero, and
    /// [`InvalidBackoff::TooLarge`] for values that do not fit in a
    /// [`Duration`]. Then everything [`try_new`](Self::try_new) checks; note
    /// that a positive `base_delay` smaller than a nanosecond rounds to zero
    /// and is rejected with [`InvalidBackoff::ZeroBaseDelay`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb_backoff::{BackoffConfig, InvalidBackoff};
    ///
    /// let config = BackoffConfig::try_from_secs_f64(0.5, 1.5, 0.2, 30.0, 10.0)?;
    /// assert_eq!(config.base_delay(), Duration::from_millis(500));
    ///
    /// let err = BackoffConfig::try_from_secs_f64(0.5, 1.5, 0.2, f64::NAN, 10.0).unwrap_err();
    /// assert_eq!(err, InvalidBackoff::NotFinite { field: "max_delay" });
    /// # Ok::<(), InvalidBackoff>(())
    /// ```
    pub fn try_from_secs_f64(
        base_delay: f64,
        multiplier: f64,
        jitter: f64,
        max_delay: f64,
        min_connect_timeout: f64,
    ) -> Result<Self, InvalidBackoff> {
        let base_delay = secs_to_duration("base_delay", base_delay)?;
        let max_delay = secs_to_duration("max_delay", max_delay)?;
        let min_connect_timeout = secs_to_duration("min_connect_timeout", min_connect_timeout)?;
        Self::try_new(
            base_delay,
            multiplier,
            jitter,
            max_delay,
            min_connect_timeout,
        )
    }

    /// The delay after the first failure (attempt 0).
    pub fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// The factor by which the nominal delay grows per attempt.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The relative spread of the randomization applied to each delay.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The upper bound on the nominal delay. Jittered delays may exceed it by
    /// up to the jitter fraction; see the [crate documentation](crate).
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The least time a connection attempt is given, however short the
    /// current backoff.
    pub fn min_connect_timeout(&self) -> Duration {
        self.min_connect_timeout
    }

    /// The delay before retrying after `attempt` previous retries, with jitter
    /// drawn from `rng`. This is grpc-go's `Exponential.Backoff(retries)`.
    ///
    /// Attempt 0 returns [`base_delay`](Self::base_delay) exactly, without
    /// drawing from `rng`. Later attempts return
    /// [`nominal_delay(attempt)`](Self::nominal_delay) scaled by a factor in
    /// `[1 - jitter, 1 + jitter)`.
    ///
    /// Never panics: results too large for a [`Duration`] saturate to
    /// [`Duration::MAX`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb_backoff::{BackoffConfig, DefaultRng};
    ///
    /// let config = BackoffConfig::default();
    /// let mut rng = DefaultRng::from_seed(1);
    /// let delay = config.delay(3, &mut rng);
    /// // nominal 4.096 s, ±20%
    /// assert!(delay >= Duration::from_secs_f64(4.096 * 0.8));
    /// assert!(delay <= Duration::from_secs_f64(4.096 * 1.2));
    /// ```
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        if attempt == 0 {
            return self.base_delay;
        }
        let nominal = self.nominal_delay(attempt);
        let u = rng.next_f64();
        // Clamp rather than trust the rng: a misbehaving source must not push
        // a delay outside the configured jitter band.
        let u = if u.is_nan() { 0.5 } else { u.clamp(0.0, 1.0) };
        let factor = 1.0 + self.jitter * (u * 2.0 - 1.0);
        if factor == 1.0 {
            // Skip the float round trip so "no jitter" is exactly nominal.
            return nominal;
        }
        let secs = (nominal.as_secs_f64() * factor).max(0.0);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// The delay for `attempt` before jitter: `base_delay * multiplier^attempt`,
    /// capped at [`max_delay`](Self::max_delay).
    ///
    /// Non-decreasing in `attempt`, always in `[base_delay, max_delay]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb_backoff::BackoffConfig;
    ///
    /// let config = BackoffConfig::default();
    /// assert_eq!(config.nominal_delay(0), Duration::from_secs(1));
    /// assert_eq!(config.nominal_delay(1), Duration::from_millis(1600));
    /// assert_eq!(config.nominal_delay(u32::MAX), Duration::from_secs(120));
    /// ```
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return self.base_delay;
        }
        // grpc-go multiplies in a loop; the closed form gives the same values
        // (up to rounding) without iterating up to u32::MAX times when the
        // multiplier is 1 or barely above it.
        let secs = self.base_delay.as_secs_f64() * self.multiplier.powf(f64::from(attempt));
        // `secs` cannot be NaN: the base is positive and finite, and a finite
        // multiplier >= 1 raised to a finite power is at worst +inf.
        if secs >= self.max_delay.as_secs_f64() {
            return self.max_delay;
        }
        let nominal = Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay);
        // The f64 round trip can be a nanosecond off; clamping keeps the
        // schedule monotonic and within its documented bounds.
        nominal.clamp(self.base_delay, self.max_delay)
    }

    /// The time to allow for a connection attempt made after waiting
    /// `backoff`: `max(min_connect_timeout, backoff)`.
    ///
    /// Slow handshakes get at least
    /// [`min_connect_timeout`](Self::min_connect_timeout), and once backoffs
    /// grow long, an attempt may run until the next one would be due anyway.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb_backoff::BackoffConfig;
    ///
    /// let config = BackoffConfig::default();
    /// assert_eq!(config.connect_timeout(Duration::from_secs(1)), Duration::from_secs(20));
    /// assert_eq!(config.connect_timeout(Duration::from_secs(90)), Duration::from_secs(90));
    /// ```
    pub fn connect_timeout(&self, backoff: Duration) -> Duration {
        self.min_connect_timeout.max(backoff)
    }
}

impl Default for BackoffConfig {
    /// The gRPC defaults: 1 s base delay, multiplier 1.6, jitter 0.2, 120 s
    /// max delay, 20 s min connect timeout.
    fn default() -> Self {
        Self {
            base_delay: Self::DEFAULT_BASE_DELAY,
            multiplier: Self::DEFAULT_MULTIPLIER,
            jitter: Self::DEFAULT_JITTER,
            max_delay: Self::DEFAULT_MAX_DELAY,
            min_connect_timeout: Self::DEFAULT_MIN_CONNECT_TIMEOUT,
        }
    }
}

fn secs_to_duration(field: &'static str, secs: f64) -> Result<Duration, InvalidBackoff> {
    if !secs.is_finite() {
        return Err(InvalidBackoff::NotFinite { field });
    }
    if secs < 0.0 {
        return Err(InvalidBackoff::Negative { field, value: secs });
    }
    // `+ 0.0` turns -0.0 (which passes the check above) into 0.0, which
    // `Duration` accepts.
    Duration::try_from_secs_f64(secs + 0.0).map_err(|_| InvalidBackoff::TooLarge { field })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backoff, FixedRng};

    const SECOND: Duration = Duration::from_secs(1);

    fn assert_close(actual: Duration, expected_secs: f64) {
        let diff = (actual.as_secs_f64() - expected_secs).abs();
        assert!(
            diff <= 1e-6 * expected_secs.max(1.0),
            "expected ~{expected_secs}s, got {actual:?}"
        );
    }

    #[test]
    fn defaults_equal_constants() {
        let config = BackoffConfig::default();
        assert_eq!(config.base_delay(), BackoffConfig::DEFAULT_BASE_DELAY);
        assert_eq!(config.multiplier(), BackoffConfig::DEFAULT_MULTIPLIER);
        assert_eq!(config.jitter(), BackoffConfig::DEFAULT_JITTER);
        assert_eq!(config.max_delay(), BackoffConfig::DEFAULT_MAX_DELAY);
        assert_eq!(
            config.min_connect_timeout(),
            BackoffConfig::DEFAULT_MIN_CONNECT_TIMEOUT
        );

        assert_eq!(BackoffConfig::DEFAULT_BASE_DELAY, SECOND);
        assert_eq!(BackoffConfig::DEFAULT_MULTIPLIER, 1.6);
        assert_eq!(BackoffConfig::DEFAULT_JITTER, 0.2);
        assert_eq!(BackoffConfig::DEFAULT_MAX_DELAY, 120 * SECOND);
        assert_eq!(BackoffConfig::DEFAULT_MIN_CONNECT_TIMEOUT, 20 * SECOND);

        // The defaults pass their own validation.
        assert_eq!(
            BackoffConfig::try_new(
                BackoffConfig::DEFAULT_BASE_DELAY,
                BackoffConfig::DEFAULT_MULTIPLIER,
                BackoffConfig::DEFAULT_JITTER,
                BackoffConfig::DEFAULT_MAX_DELAY,
                BackoffConfig::DEFAULT_MIN_CONNECT_TIMEOUT,
            ),
            Ok(config)
        );
        assert_eq!(
            BackoffConfig::try_from_secs_f64(1.0, 1.6, 0.2, 120.0, 20.0),
            Ok(config)
        );
    }

    #[test]
    fn attempt_zero_is_base_exactly_regardless_of_rng() {
        let config = BackoffConfig::default();
        for u in [0.0, 0.3, 0.5, 0.999_999] {
            assert_eq!(config.delay(0, &mut FixedRng(u)), SECOND);
        }
        struct NeverCalled;
        impl Rng for NeverCalled {
            fn next_f64(&mut self) -> f64 {
                panic!("attempt 0 must not draw jitter");
            }
        }
        assert_eq!(config.delay(0, &mut NeverCalled), SECOND);
    }

    #[test]
    fn nominal_schedule() {
        let config = BackoffConfig::default();
        let expected = [
            1.0,
            1.6,
            2.56,
            4.096,
            6.5536,
            10.48576,
            16.777216,
            26.8435456,
            42.94967296,
            68.719476736,
            109.9511627776,
            120.0,
            120.0,
        ];
        for (attempt, secs) in expected.into_iter().enumerate() {
            assert_close(config.nominal_delay(attempt as u32), secs);
        }
        assert_eq!(config.nominal_delay(1), Duration::from_millis(1600));
        assert_eq!(config.nominal_delay(2), Duration::from_millis(2560));
        assert_eq!(config.nominal_delay(3), Duration::from_millis(4096));
        assert_eq!(config.nominal_delay(11), 120 * SECOND);
        assert_eq!(config.nominal_delay(1000), 120 * SECOND);
        assert_eq!(config.nominal_delay(u32::MAX), 120 * SECOND);
    }

    #[test]
    fn matches_grpc_go_loop() {
        // grpc-go's loop, transcribed, as the reference the closed form must match.
        fn reference(config: &BackoffConfig, mut retries: u32) -> f64 {
            let max = config.max_delay().as_secs_f64();
            let mut backoff = config.base_delay().as_secs_f64();
            while backoff < max && retries > 0 {
                backoff *= config.multiplier();
                retries -= 1;
            }
            backoff.min(max)
        }
        let configs = [
            BackoffConfig::default(),
            BackoffConfig::try_from_secs_f64(0.05, 3.0, 0.0, 7.0, 0.0).unwrap(),
            BackoffConfig::try_from_secs_f64(2.0, 1.0, 0.5, 2.0, 1.0).unwrap(),
        ];
        for config in configs {
            for attempt in 0..40 {
                assert_close(config.nominal_delay(attempt), reference(&config, attempt));
            }
        }
    }

    #[test]
    fn no_jitter_at_midpoint() {
        let config = BackoffConfig::default();
        for attempt in 0..20 {
            assert_eq!(
                config.delay(attempt, &mut FixedRng(0.5)),
                config.nominal_delay(attempt)
            );
        }
    }

    #[test]
    fn jitter_extremes() {
        let config = BackoffConfig::default();
        for attempt in 1..20 {
            let nominal = config.nominal_delay(attempt).as_secs_f64();
            assert_close(config.delay(attempt, &mut FixedRng(0.0)), nominal * 0.8);
            assert_close(
                config.delay(attempt, &mut FixedRng(0.999_999)),
                nominal * 1.2,
            );
        }
        assert_eq!(
            config.delay(1, &mut FixedRng(0.0)),
            Duration::from_millis(1280)
        );
    }

    #[test]
    fn jitter_applies_after_cap() {
        let config = BackoffConfig::default();
        let high = config.delay(50, &mut FixedRng(0.999_999_999));
        assert!(high > 120 * SECOND, "{high:?}");
        assert!(high < 144 * SECOND, "{high:?}");
        assert_close(high, 144.0);
        assert_close(config.delay(50, &mut FixedRng(0.0)), 96.0);
        assert_eq!(config.delay(50, &mut FixedRng(0.5)), 120 * SECOND);
    }

    #[test]
    fn delay_with_real_rng_stays_in_band() {
        let config = BackoffConfig::default();
        let mut rng = crate::DefaultRng::from_seed(42);
        for attempt in 1..30 {
            let nominal = config.nominal_delay(attempt).as_secs_f64();
            for _ in 0..50 {
                let d = config.delay(attempt, &mut rng).as_secs_f64();
                assert!(d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9);
            }
        }
    }

    #[test]
    fn misbehaving_rng_is_clamped() {
        let config = BackoffConfig::default();
        let nominal = config.nominal_delay(5).as_secs_f64();
        assert_close(config.delay(5, &mut FixedRng(7.0)), nominal * 1.2);
        struct Wild(f64);
        impl Rng for Wild {
            fn next_f64(&mut self) -> f64 {
                self.0
            }
        }
        assert_close(config.delay(5, &mut Wild(7.0)), nominal * 1.2);
        assert_close(config.delay(5, &mut Wild(-7.0)), nominal * 0.8);
        assert_eq!(
            config.delay(5, &mut Wild(f64::NAN)),
            config.nominal_delay(5)
        );
    }

    #[test]
    fn extreme_configs_saturate_instead_of_panicking() {
        let config =
            BackoffConfig::try_new(SECOND, 1e300, 1.0, Duration::MAX, Duration::MAX).unwrap();
        assert_eq!(config.nominal_delay(u32::MAX), Duration::MAX);
        assert_eq!(config.delay(u32::MAX, &mut FixedRng(0.999)), Duration::MAX);
        assert_eq!(config.delay(u32::MAX, &mut FixedRng(0.0)), Duration::ZERO);
        assert_eq!(config.connect_timeout(SECOND), Duration::MAX);

        let config =
            BackoffConfig::try_new(Duration::MAX, 1.0, 1.0, Duration::MAX, Duration::ZERO).unwrap();
        assert_eq!(config.nominal_delay(1), Duration::MAX);
        assert_eq!(config.delay(1, &mut FixedRng(0.99)), Duration::MAX);

        let tiny = Duration::from_nanos(1);
        let config = BackoffConfig::try_new(tiny, 1.0 + 1e-15, 0.5, Duration::MAX, tiny).unwrap();
        assert_eq!(config.nominal_delay(u32::MAX), tiny);
        let _ = config.delay(u32::MAX, &mut FixedRng(0.1));
    }

    #[test]
    fn connect_timeout_is_max_of_min_and_backoff() {
        let config = BackoffConfig::default();
        assert_eq!(config.connect_timeout(Duration::ZERO), 20 * SECOND);
        assert_eq!(config.connect_timeout(19 * SECOND), 20 * SECOND);
        assert_eq!(config.connect_timeout(21 * SECOND), 21 * SECOND);
        assert_eq!(config.connect_timeout(144 * SECOND), 144 * SECOND);
    }

    #[test]
    fn stateful_backoff_advances_and_resets() {
        let mut backoff = Backoff::with_rng(BackoffConfig::default(), FixedRng(0.5));
        assert_eq!(backoff.attempt(), 0);
        assert_eq!(backoff.next_delay(), SECOND);
        assert_eq!(backoff.attempt(), 1);
        assert_eq!(backoff.next_delay(), Duration::from_millis(1600));
        assert_eq!(backoff.next_delay(), Duration::from_millis(2560));
        assert_eq!(backoff.attempt(), 3);
        backoff.reset();
        assert_eq!(backoff.attempt(), 0);
        assert_eq!(backoff.next_delay(), SECOND);
        assert_eq!(backoff.config(), &BackoffConfig::default());

        for _ in 0..30 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), 120 * SECOND);

        let mut default_rng = Backoff::new(BackoffConfig::default());
        assert_eq!(default_rng.next_delay(), SECOND);
        let second = default_rng.next_delay().as_secs_f64();
        assert!((1.28..=1.92).contains(&second), "{second}");
    }

    fn err(
        base: f64,
        multiplier: f64,
        jitter: f64,
        max: f64,
        min_connect: f64,
    ) -> (InvalidBackoff, String) {
        let e = BackoffConfig::try_from_secs_f64(base, multiplier, jitter, max, min_connect)
            .unwrap_err();
        let msg = e.to_string();
        (e, msg)
    }

    #[test]
    fn not_finite() {
        let (e, msg) = err(f64::NAN, 1.6, 0.2, 120.0, 20.0);
        assert_eq!(
            e,
            InvalidBackoff::NotFinite {
                field: "base_delay"
            }
        );
        assert_eq!(
            msg,
            "invalid backoff: base_delay must be finite, got NaN or infinity"
        );

        let (e, _) = err(1.0, 1.6, 0.2, f64::INFINITY, 20.0);
        assert_eq!(e, InvalidBackoff::NotFinite { field: "max_delay" });
        let (e, msg) = err(1.0, 1.6, 0.2, 120.0, f64::NEG_INFINITY);
        assert_eq!(
            e,
            InvalidBackoff::NotFinite {
                field: "min_connect_timeout"
            }
        );
        assert!(msg.contains("min_connect_timeout must be finite"), "{msg}");

        let (e, msg) = err(1.0, f64::NAN, 0.2, 120.0, 20.0);
        assert_eq!(
            e,
            InvalidBackoff::NotFinite {
                field: "multiplier"
            }
        );
        assert!(msg.contains("multiplier must be finite"), "{msg}");
        let (e, _) = err(1.0, f64::INFINITY, 0.2, 120.0, 20.0);
        assert_eq!(
            e,
            InvalidBackoff::NotFinite {
                field: "multiplier"
            }
        );
        let (e, msg) = err(1.0, 1.6, f64::NAN, 120.0, 20.0);
        assert_eq!(e, InvalidBackoff::NotFinite { field: "jitter" });
        assert!(msg.contains("jitter must be finite"), "{msg}");
    }

    #[test]
    fn negative() {
        let (e, msg) = err(-1.5, 1.6, 0.2, 120.0, 20.0);
        assert_eq!(
            e,
            InvalidBackoff::Negative {
                field: "base_delay",
                value: -1.5
            }
        );
        assert_eq!(
            msg,
            "invalid backoff: base_delay must not be negative, got -1.5"
        );
        let (e, msg) = err(1.0, 1.6, 0.2, 120.0, -0.25);
        assert_eq!(
            e,
            InvalidBackoff::Negative {
                field: "min_connect_timeout",
                value: -0.25
            }
        );
        assert!(msg.contains("min_connect_timeout must not be negative, got -0.25"));

        // Negative zero is zero, not negative.
        let config = BackoffConfig::try_from_secs_f64(1.0, 1.6, -0.0, 120.0, -0.0).unwrap();
        assert_eq!(config.min_connect_timeout(), Duration::ZERO);
        assert_eq!(config.jitter(), 0.0);
        assert!(config.jitter().is_sign_positive());
    }

    #[test]
    fn jitter_out_of_range() {
        let (e, msg) = err(1.0, 1.6, 1.5, 120.0, 20.0);
        assert_eq!(e, InvalidBackoff::JitterOutOfRange { jitter: 1.5 });
        assert_eq!(msg, "invalid backoff: jitter must be in [0, 1], got 1.5");
        let (e, msg) = err(1.0, 1.6, -0.1, 120.0, 20.0);
        assert_eq!(e, InvalidBackoff::JitterOutOfRange { jitter: -0.1 });
        assert!(msg.contains("got -0.1"), "{msg}");
        // The bounds themselves are valid.
        assert!(BackoffConfig::try_from_secs_f64(1.0, 1.6, 0.0, 120.0, 20.0).is_ok());
        assert!(BackoffConfig::try_from_secs_f64(1.0, 1.6, 1.0, 120.0, 20.0).is_ok());
    }

    #[test]
    fn multiplier_below_one() {
        let (e, msg) = err(1.0, 0.5, 0.2, 120.0, 20.0);
        assert_eq!(e, InvalidBackoff::MultiplierBelowOne { multiplier: 0.5 });
        assert_eq!(
            msg,
            "invalid backoff: multiplier must be at least 1, got 0.5"
        );
        let (e, _) = err(1.0, -2.0, 0.2, 120.0, 20.0);
        assert_eq!(e, InvalidBackoff::MultiplierBelowOne { multiplier: -2.0 });
        assert!(BackoffConfig::try_from_secs_f64(1.0, 1.0, 0.2, 120.0, 20.0).is_ok());
    }

    #[test]
    fn zero_base_delay() {
        let (e, msg) = err(0.0, 1.6, 0.2, 120.0, 20.0);
        assert_eq!(e, InvalidBackoff::ZeroBaseDelay);
        assert!(
            msg.starts_with("invalid backoff: base_delay must be greater than zero"),
            "{msg}"
        );
        assert!(msg.contains("hot loop"), "{msg}");
        // Below one nanosecond rounds to zero.
        let (e, _) = err(1e-12, 1.6, 0.2, 120.0, 20.0);
        assert_eq!(e, InvalidBackoff::ZeroBaseDelay);
    }

    #[test]
    fn base_exceeds_max() {
        let (e, msg) = err(10.0, 1.6, 0.2, 5.0, 20.0);
        assert_eq!(
            e,
            InvalidBackoff::BaseExceedsMax {
                base: 10 * SECOND,
                max: 5 * SECOND
            }
        );
        assert_eq!(
            msg,
            "invalid backoff: base_delay (10s) must not exceed max_delay (5s)"
        );
        // Equal is fine: a constant delay.
        let config = BackoffConfig::try_from_secs_f64(5.0, 1.6, 0.0, 5.0, 20.0).unwrap();
        assert_eq!(config.delay(7, &mut FixedRng(0.3)), 5 * SECOND);
    }

    #[test]
    fn too_large() {
        let (e, msg) = err(1.0, 1.6, 0.2, 1e30, 20.0);
        assert_eq!(e, InvalidBackoff::TooLarge { field: "max_delay" });
        assert_eq!(
            msg,
            "invalid backoff: max_delay is too large to represent as a duration"
        );
        let (e, _) = err(1.0, 1.6, 0.2, 120.0, f64::MAX);
        assert_eq!(
            e,
            InvalidBackoff::TooLarge {
                field: "min_connect_timeout"
            }
        );
    }

    #[test]
    fn error_is_std_error() {
        let e: Box<dyn std::error::Error + Send + Sync> = Box::new(InvalidBackoff::ZeroBaseDelay);
        assert!(e.source().is_none());
        assert!(e.to_string().starts_with("invalid backoff: "));
    }
}
