//! Property tests: the schedule stays within its documented bounds for any
//! valid configuration, and validation never panics on arbitrary input.

use std::time::Duration;

use grpc_lb_backoff::{Backoff, BackoffConfig, FixedRng, InvalidBackoff};
use proptest::prelude::*;

/// Durations spanning nanoseconds to `Duration::MAX`, since overflow and
/// rounding problems live at the extremes.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..1_000_000_000).prop_map(Duration::from_nanos),
        (0u64..10_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
    ]
}

fn valid_config() -> impl Strategy<Value = BackoffConfig> {
    let multiplier = prop_oneof![Just(1.0), 1.0f64..4.0, 1.0f64..1.000_001, 1.0f64..1e300,];
    let jitter = prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0];
    (duration(), duration(), multiplier, jitter, duration()).prop_map(
        |(a, b, multiplier, jitter, min_connect)| {
            let (base, max) = if a <= b { (a, b) } else { (b, a) };
            let base = base.max(Duration::from_nanos(1));
            BackoffConfig::try_new(base, multiplier, jitter, max, min_connect)
                .expect("strategy only generates valid configs")
        },
    )
}

fn attempt() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..64, any::<u32>(), Just(u32::MAX)]
}

/// Any f64, with the special values over-represented.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        -10.0f64..1000.0,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(1.8e19),
    ]
}

/// `nominal * factor` in seconds, widened by a little to absorb f64 and
/// nanosecond rounding.
fn scaled(nominal: Duration, factor: f64, widen: f64) -> f64 {
    nominal.as_secs_f64() * factor * (1.0 + widen * 1e-12) + widen * 1e-9
}

proptest! {
    #[test]
    fn delay_within_jitter_band(config in valid_config(), attempt in attempt(), u in 0.0f64..1.0) {
        let nominal = config.nominal_delay(attempt);
        let delay = config.delay(attempt, &mut FixedRng(u));
        if attempt == 0 {
            prop_assert_eq!(delay, config.base_delay());
        } else {
            let secs = delay.as_secs_f64();
            let low = scaled(nominal, 1.0 - config.jitter(), -1.0);
            let high = scaled(nominal, 1.0 + config.jitter(), 1.0);
            prop_assert!(secs >= low, "{delay:?} < {low}s (nominal {nominal:?})");
            prop_assert!(secs <= high, "{delay:?} > {high}s (nominal {nominal:?})");
        }
    }

    #[test]
    fn midpoint_is_nominal(config in valid_config(), attempt in attempt()) {
        prop_assert_eq!(config.delay(attempt, &mut FixedRng(0.5)), config.nominal_delay(attempt));
    }

    #[test]
    fn nominal_is_monotonic_and_bounded(config in valid_config(), attempt in attempt()) {
        let nominal = config.nominal_delay(attempt);
        prop_assert!(nominal >= config.base_delay());
        prop_assert!(nominal <= config.max_delay());
        if let Some(next) = attempt.checked_add(1) {
            let next = config.nominal_delay(next);
            prop_assert!(next >= nominal, "attempt {attempt}: {nominal:?} then {next:?}");
        }
    }

    #[test]
    fn connect_timeout_is_at_least_both(config in valid_config(), backoff in duration()) {
        let timeout = config.connect_timeout(backoff);
        prop_assert!(timeout >= backoff);
        prop_assert!(timeout >= config.min_connect_timeout());
        prop_assert!(timeout == backoff || timeout == config.min_connect_timeout());
    }

    #[test]
    fn stateful_backoff_matches_config(config in valid_config(), steps in 0usize..40, u in 0.0f64..1.0) {
        let mut backoff = Backoff::with_rng(config, FixedRng(u));
        for step in 0..steps {
            prop_assert_eq!(backoff.attempt() as usize, step);
            prop_assert_eq!(backoff.next_delay(), config.delay(step as u32, &mut FixedRng(u)));
        }
        backoff.reset();
        prop_assert_eq!(backoff.next_delay(), config.base_delay());
    }

    #[test]
    fn try_from_secs_f64_never_panics(
        base in any_f64(),
        multiplier in any_f64(),
        jitter in any_f64(),
        max in any_f64(),
        min_connect in any_f64(),
    ) {
        match BackoffConfig::try_from_secs_f64(base, multiplier, jitter, max, min_connect) {
            Ok(config) => {
                prop_assert!(config.base_delay() > Duration::ZERO);
                prop_assert!(config.base_delay() <= config.max_delay());
                prop_assert!(config.multiplier().is_finite() && config.multiplier() >= 1.0);
                prop_assert!((0.0..=1.0).contains(&config.jitter()));
                // A valid config must be usable at every attempt.
                let _ = config.delay(u32::MAX, &mut FixedRng(0.999_999));
                let _ = config.delay(1, &mut FixedRng(0.0));
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("invalid backoff: "), "{msg}");
                let field_named = match e {
                    InvalidBackoff::NotFinite { field }
                    | InvalidBackoff::Negative { field, .. }
                    | InvalidBackoff::TooLarge { field } => msg.contains(field),
                    InvalidBackoff::JitterOutOfRange { .. } => msg.contains("jitter"),
                    InvalidBackoff::MultiplierBelowOne { .. } => msg.contains("multiplier"),
                    InvalidBackoff::ZeroBaseDelay | InvalidBackoff::BaseExceedsMax { .. } => {
                        msg.contains("base_delay")
                    }
                    _ => true,
                };
                prop_assert!(field_named, "{msg}");
            }
        }
    }
}
