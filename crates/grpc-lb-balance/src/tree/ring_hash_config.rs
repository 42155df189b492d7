//! ring_hash's configuration (gRFC A42, A76) and its checks.

use std::fmt;

/// The ring sizes and hash header of [`RingHash`](super::RingHash)
/// (`ring_hash_experimental`'s `loadBalancingConfig`).
///
/// Defaults and limits are gRFC A42's (grpc-go `balancer/ringhash/config.go`):
/// `minRingSize` 1024, `maxRingSize` 4096, either rejected above 8M (8 388 608),
/// then both capped at `GRPC_RING_HASH_CAP` (default 4096). `requestHashHeader`
/// (gRFC A76) is lower-cased, and a `-bin` header is rejected.
///
/// ```
/// use grpc_lb_balance::tree::{RingHashConfig, RingHashConfigError};
///
/// let config = RingHashConfig::default().request_hash_header("X-User").validate().unwrap();
/// assert_eq!((config.min_ring_size, config.max_ring_size), (1024, 4096));
/// assert_eq!(config.request_hash_header.as_deref(), Some("x-user"));
///
/// let bad = RingHashConfig { min_ring_size: 10, max_ring_size: 5, ..Default::default() };
/// assert!(matches!(bad.validate(), Err(RingHashConfigError::MinAboveMax { .. })));
/// assert!(RingHashConfig::default().request_hash_header("key-bin").validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingHashConfig {
    /// The fewest ring entries (A42 default 1024).
    pub min_ring_size: u64,
    /// The most ring entries (A42 default 4096).
    pub max_ring_size: u64,
    /// The header whose value is the request's hash key (A76); `None` means
    /// the hash comes from the call's [`RequestHash`](super::RequestHash)
    /// extension, else is random.
    pub request_hash_header: Option<String>,
}

impl RingHashConfig {
    /// A42's default `minRingSize`.
    pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
    /// A42's default `maxRingSize`.
    pub const DEFAULT_MAX_RING_SIZE: u64 = 4096;
    /// A42's upper limit for either size: larger values are rejected.
    pub const RING_SIZE_LIMIT: u64 = 8 * 1024 * 1024;
    /// The default of `GRPC_RING_HASH_CAP`, which caps both sizes.
    pub const DEFAULT_CAP: u64 = 4096;
    /// The environment variable that sets the cap (grpc-go `envconfig.RingHashCap`).
    pub const CAP_ENV: &'static str = "GRPC_RING_HASH_CAP";

    /// Sets `requestHashHeader`.
    pub fn request_hash_header(mut self, header: impl Into<String>) -> Self {
        self.request_hash_header = Some(header.into());
        self
    }

    /// Checks the config and applies the cap read from `GRPC_RING_HASH_CAP`.
    pub fn validate(self) -> Result<Self, RingHashConfigError> {
        let cap = std::env::var(Self::CAP_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|cap| *cap > 0)
            .unwrap_or(Self::DEFAULT_CAP)
            .min(Self::RING_SIZE_LIMIT);
        self.validate_with_cap(cap)
    }

    /// Checks the config and caps both sizes at `cap`.
    pub fn validate_with_cap(mut self, cap: u64) -> Result<Self, RingHashConfigError> {
        for (field, value) in [
            ("minRingSize", self.min_ring_size),
            ("maxRingSize", self.max_ring_size),
        ] {
            if value == 0 {
                return Err(RingHashConfigError::Zero { field });
            }
            if value > Self::RING_SIZE_LIMIT {
                return Err(RingHashConfigError::AboveLimit { field, value });
            }
        }
        if self.min_ring_size > self.max_ring_size {
            return Err(RingHashConfigError::MinAboveMax {
                min: self.min_ring_size,
                max: self.max_ring_size,
            });
        }
        let cap = cap.max(1);
        self.min_ring_size = self.min_ring_size.min(cap);
        self.max_ring_size = self.max_ring_size.min(cap);
        if let Some(header) = self.request_hash_header.take() {
            let header = header.to_ascii_lowercase();
            if header.ends_with("-bin") {
                return Err(RingHashConfigError::BinaryHeader(header));
            }
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() || header.is_empty() {
                return Err(RingHashConfigError::InvalidHeader(header));
            }
            self.request_hash_header = Some(header);
        }
        Ok(self)
    }
}

impl Default for RingHashConfig {
    fn default() -> Self {
        RingHashConfig {
            min_ring_size: Self::DEFAULT_MIN_RING_SIZE,
            max_ring_size: Self::DEFAULT_MAX_RING_SIZE,
            request_hash_header: None,
        }
    }
}

/// A [`RingHashConfig`] that cannot be used.
///
/// ```
/// use grpc_lb_balance::tree::{RingHashConfig, RingHashConfigError};
///
/// let error = RingHashConfig { max_ring_size: 9_000_000, ..Default::default() }.validate().unwrap_err();
/// assert!(matches!(error, RingHashConfigError::AboveLimit { field: "maxRingSize", .. }));
/// assert!(error.to_string().contains("maxRingSize"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingHashConfigError {
    /// A ring size is zero.
    Zero {
        /// `minRingSize` or `maxRingSize`.
        field: &'static str,
    },
    /// A ring size is above A42's 8M limit.
    AboveLimit {
        /// `minRingSize` or `maxRingSize`.
        field: &'static str,
        /// The value given.
        value: u64,
    },
    /// `minRingSize` is above `maxRingSize`.
    MinAboveMax {
        /// `minRingSize`.
        min: u64,
        /// `maxRingSize`.
        max: u64,
    },
    /// `requestHashHeader` names a binary (`-bin`) header (A76).
    BinaryHeader(String),
    /// `requestHashHeader` is not a valid header name.
    InvalidHeader(String),
}

impl fmt::Display for RingHashConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingHashConfigError::Zero { field } => {
                write!(f, "ring_hash {field} must be at least 1")
            }
            RingHashConfigError::AboveLimit { field, value } => write!(
                f,
                "ring_hash {field} {value} is above the limit of {}",
                RingHashConfig::RING_SIZE_LIMIT
            ),
            RingHashConfigError::MinAboveMax { min, max } => {
                write!(f, "ring_hash minRingSize {min} is above maxRingSize {max}")
            }
            RingHashConfigError::BinaryHeader(header) => {
                write!(
                    f,
                    "ring_hash requestHashHeader {header:?} is a binary header"
                )
            }
            RingHashConfigError::InvalidHeader(header) => {
                write!(
                    f,
                    "ring_hash requestHashHeader {header:?} is not a header name"
                )
            }
        }
    }
}

impl std::error::Error for RingHashConfigError {}
