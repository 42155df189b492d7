use std::fmt;
use std::time::Duration;

/// Why a set of backoff parameters was rejected by
/// [`BackoffConfig::try_new`](crate::BackoffConfig::try_new) or
/// [`BackoffConfig::try_from_secs_f64`](crate::BackoffConfig::try_from_secs_f64).
///
/// The [`Display`](fmt::Display) form names the offending field and the
/// problem, e.g. `invalid backoff: jitter must be in [0, 1], got 1.5`, so it
/// can be shown to whoever wrote the configuration.
///
/// ```
/// use grpc_lb_backoff::{BackoffConfig, InvalidBackoff};
///
/// let error = BackoffConfig::try_from_secs_f64(1.0, 1.6, 1.5, 120.0, 20.0).unwrap_err();
/// assert_eq!(error, InvalidBackoff::JitterOutOfRange { jitter: 1.5 });
/// assert_eq!(error.to_string(), "invalid backoff: jitter must be in [0, 1], got 1.5");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum InvalidBackoff {
    /// A parameter was NaN or infinite.
    NotFinite {
        /// The name of the parameter, e.g. `"max_delay"`.
        field: &'static str,
    },
    /// A duration given in seconds was negative.
    Negative {
        /// The name of the parameter, e.g. `"base_delay"`.
        field: &'static str,
        /// The rejected value, in seconds.
        value: f64,
    },
    /// The jitter was outside `[0, 1]`.
    ///
    /// A jitter above 1 could produce negative delays.
    JitterOutOfRange {
        /// The rejected jitter.
        jitter: f64,
    },
    /// The multiplier was below 1, which would make delays shrink as failures
    /// accumulate.
    MultiplierBelowOne {
        /// The rejected multiplier.
        multiplier: f64,
    },
    /// The base delay was zero, which would retry in a hot loop.
    ZeroBaseDelay,
    /// The base delay was larger than the max delay.
    BaseExceedsMax {
        /// The rejected base delay.
        base: Duration,
        /// The max delay it was compared against.
        max: Duration,
    },
    /// A duration given in seconds does not fit in a [`Duration`].
    TooLarge {
        /// The name of the parameter, e.g. `"min_connect_timeout"`.
        field: &'static str,
    },
}

impl fmt::Display for InvalidBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid backoff: ")?;
        match self {
            Self::NotFinite { field } => write!(f, "{field} must be finite, got NaN or infinity"),
            Self::Negative { field, value } => {
                write!(f, "{field} must not be negative, got {value}")
            }
            Self::JitterOutOfRange { jitter } => {
                write!(f, "jitter must be in [0, 1], got {jitter}")
            }
            Self::MultiplierBelowOne { multiplier } => {
                write!(f, "multiplier must be at least 1, got {multiplier}")
            }
            Self::ZeroBaseDelay => f.write_str(
                "base_delay must be greater than zero (a zero delay would reconnect in a hot loop)",
            ),
            Self::BaseExceedsMax { base, max } => write!(
                f,
                "base_delay ({base:?}) must not exceed max_delay ({max:?})"
            ),
            Self::TooLarge { field } => {
                write!(f, "{field} is too large to represent as a duration")
            }
        }
    }
}

impl std::error::Error for InvalidBackoff {}
