//! gRPC connection backoff: how long to wait between attempts to (re)connect
//! a subchannel, and how long each attempt may take.
//!
//! This crate implements the exponential backoff with jitter that every gRPC
//! implementation uses when a connection attempt fails. It is deliberately
//! small and free of any runtime: it only computes [`Duration`]s. Sleeping,
//! applying timeouts and counting failures is left to the caller (for example
//! a tower reconnect middleware).
//!
//! # When to use it
//!
//! Use [`Backoff`] wherever a client repeatedly tries to establish a
//! connection and must not hammer an unavailable server: keep one [`Backoff`]
//! per subchannel, call [`Backoff::next_delay`] after each failed attempt, and
//! [`Backoff::reset`] once a connection succeeds. Use
//! [`BackoffConfig::connect_timeout`] to bound each attempt, so that a slow
//! handshake is not mistaken for a failure before the backoff period has even
//! elapsed.
//!
//! If you only need the arithmetic (for example to drive your own state
//! machine), [`BackoffConfig::delay`] is the stateless form.
//!
//! # Algorithm
//!
//! The schedule follows the gRPC connection backoff protocol
//! ([grpc/grpc `doc/connection-backoff.md`][spec]) as implemented by
//! [grpc-go's `internal/backoff`][grpc-go] package. With the defaults
//!
//! | parameter             | default |
//! |-----------------------|---------|
//! | base delay            | 1 s     |
//! | multiplier            | 1.6     |
//! | jitter                | 0.2     |
//! | max delay             | 120 s   |
//! | min connect timeout   | 20 s    |
//!
//! the delay before retry number `n` is:
//!
//! 1. `n == 0`: exactly the base delay, without jitter;
//! 2. otherwise the *nominal* delay `min(base * multiplier^n, max)`
//!    (see [`BackoffConfig::nominal_delay`]),
//! 3. multiplied by a random factor uniformly distributed in
//!    `[1 - jitter, 1 + jitter)`.
//!
//! Each connection attempt is given `max(min_connect_timeout, delay)` to
//! complete.
//!
//! ## Where jitter is applied relative to the cap
//!
//! Jitter is applied **after** the delay has been capped at the max delay,
//! exactly as in the spec's pseudo-code and in grpc-go. A delay can therefore
//! exceed the max delay by up to the jitter fraction: with the defaults,
//! delays of long-failing connections range over `[96 s, 144 s)`, not
//! `[96 s, 120 s]`.
//!
//! This is intentional. The point of jitter is to stop a fleet of clients that
//! lost a server at the same moment from reconnecting in lock-step. Once those
//! clients have failed often enough, they have *all* reached the cap; if
//! jitter were applied before the cap, most of them would be clamped to
//! exactly 120 s and retry in one synchronized burst every two minutes.
//! Jittering the capped value keeps them spread out for as long as the outage
//! lasts.
//!
//! # Examples
//!
//! The defaults, and a deterministic schedule. [`FixedRng`]`(0.5)` draws the
//! midpoint of the jitter range, i.e. no jitter, which makes the nominal
//! schedule visible:
//!
//! ```
//! use std::time::Duration;
//! use grpc_lb_backoff::{Backoff, BackoffConfig, FixedRng};
//!
//! let config = BackoffConfig::default();
//! assert_eq!(config.base_delay(), Duration::from_secs(1));
//! assert_eq!(config.multiplier(), 1.6);
//! assert_eq!(config.jitter(), 0.2);
//! assert_eq!(config.max_delay(), Duration::from_secs(120));
//! assert_eq!(config.min_connect_timeout(), Duration::from_secs(20));
//!
//! let mut backoff = Backoff::with_rng(config, FixedRng(0.5));
//! let schedule: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
//! assert_eq!(
//!     schedule,
//!     [
//!         Duration::from_millis(1000),
//!         Duration::from_millis(1600),
//!         Duration::from_millis(2560),
//!         Duration::from_millis(4096),
//!         Duration::from_micros(6_553_600),
//!     ]
//! );
//!
//! // After enough failures the nominal delay stops growing at the cap...
//! assert_eq!(config.nominal_delay(100), Duration::from_secs(120));
//! // ...but jitter still spreads clients out around (and above) it.
//! let highest = config.delay(100, &mut FixedRng(0.999_999_999));
//! assert!(highest > Duration::from_secs(143) && highest < Duration::from_secs(144));
//!
//! // A successful connection starts the schedule over.
//! backoff.reset();
//! assert_eq!(backoff.next_delay(), Duration::from_secs(1));
//! ```
//!
//! Custom parameters are validated, whether given as [`Duration`]s or as
//! floating-point seconds from a configuration file:
//!
//! ```
//! use std::time::Duration;
//! use grpc_lb_backoff::{BackoffConfig, InvalidBackoff};
//!
//! let fast = BackoffConfig::try_from_secs_f64(0.1, 2.0, 0.1, 5.0, 1.0)?;
//! assert_eq!(fast.nominal_delay(3), Duration::from_millis(800));
//! assert_eq!(fast.connect_timeout(Duration::from_millis(800)), Duration::from_secs(1));
//!
//! let err = BackoffConfig::try_from_secs_f64(1.0, 1.6, 1.5, 120.0, 20.0).unwrap_err();
//! assert_eq!(err, InvalidBackoff::JitterOutOfRange { jitter: 1.5 });
//! assert_eq!(err.to_string(), "invalid backoff: jitter must be in [0, 1], got 1.5");
//! # Ok::<(), InvalidBackoff>(())
//! ```
//!
//! A reconnect loop, in outline:
//!
//! ```
//! use grpc_lb_backoff::Backoff;
//!
//! let mut backoff = Backoff::new(Default::default());
//! # let mut failures = 3;
//! # let mut connect = |_timeout| { failures -= 1; failures == 0 };
//! loop {
//!     // As in the spec, the delay is measured from the start of this attempt:
//!     // the attempt may use up to `timeout`, and the next one starts no
//!     // earlier than `delay` after this one started.
//!     let delay = backoff.next_delay();
//!     let timeout = backoff.config().connect_timeout(delay);
//!     if connect(timeout) {
//!         backoff.reset();
//!         break;
//!     }
//!     // sleep until `delay` has elapsed since the attempt started
//! }
//! ```
//!
//! [spec]: https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md
//! [grpc-go]: https://github.com/grpc/grpc-go/tree/master/internal/backoff
//! [`Duration`]: std::time::Duration

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backoff;
mod config;
mod error;
mod rng;

pub use backoff::Backoff;
pub use config::BackoffConfig;
pub use error::InvalidBackoff;
pub use rng::{DefaultRng, FixedRng, Rng};
