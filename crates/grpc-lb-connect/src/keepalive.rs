//! Client keepalive (gRFC A8): HTTP/2 PINGs that detect a dead peer, and the
//! `too_many_pings` back-off.
//!
//! A connection with keepalive sends a PING once it has read nothing for
//! [`time`](KeepaliveConfig::time), and closes itself when no acknowledgement
//! arrives within [`timeout`](KeepaliveConfig::timeout). Without
//! [`permit_without_calls`](KeepaliveConfig::permit_without_calls) it pings
//! only while a request is open.
//!
//! A server that finds the pings too frequent answers with a GOAWAY carrying
//! `ENHANCE_YOUR_CALM` and the debug data `too_many_pings`. Every connection
//! made afterwards by the same connector (and its clones, so the whole
//! channel) then pings half as often: grpc-go's `addrConn.adjustParams`
//! (`clientconn.go`, on `transport.GoAwayTooManyPings`) sets the channel's time
//! to twice the time the closed connection used, if that is longer.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Client keepalive settings (gRFC A8), with grpc-go's defaults.
///
/// | setting | default | source |
/// |---|---|---|
/// | [`time`](Self::time) | none: no pings (infinite) | A8 `KEEPALIVE_TIME`; grpc-go `keepalive.ClientParameters.Time` |
/// | minimum time | 10 s: shorter times are raised to it | grpc-go `internal.KeepaliveMinPingTime`, applied by `WithKeepaliveParams` |
/// | [`timeout`](Self::timeout) | 20 s | A8 `KEEPALIVE_TIMEOUT`; grpc-go `defaultClientKeepaliveTimeout` |
/// | [`permit_without_calls`](Self::permit_without_calls) | false | A8 `KEEPALIVE_WITHOUT_CALLS`; grpc-go `PermitWithoutStream` |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_connect::{Http2Connector, KeepaliveConfig};
///
/// let keepalive = KeepaliveConfig::new()
///     .time(Duration::from_secs(30))
///     .timeout(Duration::from_secs(5))
///     .permit_without_calls(true);
/// assert_eq!(keepalive.get_time(), Some(Duration::from_secs(30)));
///
/// // Below grpc-go's minimum: raised to 10 s, as grpc-go does.
/// let eager = KeepaliveConfig::new().time(Duration::from_secs(1));
/// assert_eq!(eager.get_time(), Some(KeepaliveConfig::MIN_TIME));
///
/// let connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new()
///     .with_keepalive(keepalive);
/// assert_eq!(connector.keepalive_time(), Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    time: Option<Duration>,
    timeout: Duration,
    permit_without_calls: bool,
}

impl KeepaliveConfig {
    /// The shortest keepalive time accepted: 10 s (grpc-go
    /// `internal.KeepaliveMinPingTime`). Servers refuse more frequent pings by
    /// default (their minimum is 5 minutes), so shorter times mostly earn a
    /// `too_many_pings` GOAWAY.
    pub const MIN_TIME: Duration = Duration::from_secs(10);
    /// The default time to wait for a PING acknowledgement: 20 s (gRFC A8,
    /// grpc-go `defaultClientKeepaliveTimeout`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

    /// Keepalive off (grpc-go's default): no PINGs are sent.
    pub const fn new() -> Self {
        KeepaliveConfig {
            time: None,
            timeout: Self::DEFAULT_TIMEOUT,
            permit_without_calls: false,
        }
    }

    /// Sends a PING after `time` without reading anything from the server.
    ///
    /// A time below [`MIN_TIME`](Self::MIN_TIME) is raised to it, with a
    /// warning, as grpc-go's `WithKeepaliveParams` does; `Duration::MAX`
    /// turns keepalive off, like grpc-go's infinite default.
    pub fn time(mut self, time: Duration) -> Self {
        self.time = if time == Duration::MAX {
            None
        } else if time < Self::MIN_TIME {
            tracing::warn!(
                requested = ?time,
                minimum = ?Self::MIN_TIME,
                "keepalive time below the minimum; raised to the minimum"
            );
            Some(Self::MIN_TIME)
        } else {
            Some(time)
        };
        self
    }

    /// How long to wait for a PING acknowledgement before closing the
    /// connection (default 20 s). Zero means the default, as in grpc-go.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = if timeout.is_zero() {
            Self::DEFAULT_TIMEOUT
        } else {
            timeout
        };
        self
    }

    /// Whether to ping while no request is open (default false). Without it a
    /// dead peer is noticed only by the next request.
    pub fn permit_without_calls(mut self, permit: bool) -> Self {
        self.permit_without_calls = permit;
        self
    }

    /// The keepalive time; `None` when keepalive is off.
    pub fn get_time(&self) -> Option<Duration> {
        self.time
    }

    /// The PING acknowledgement timeout.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether PINGs are sent while no request is open.
    pub fn get_permit_without_calls(&self) -> bool {
        self.permit_without_calls
    }
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig::new()
    }
}

/// The keepalive state shared by a connector and its clones: the configured
/// settings and the time in force, which a `too_many_pings` GOAWAY raises.
#[derive(Debug, Default)]
pub(crate) struct Keepalive {
    config: KeepaliveConfig,
    /// The time in force, in nanoseconds; 0 when keepalive is off.
    time_nanos: AtomicU64,
}

impl Keepalive {
    pub(crate) fn new(config: KeepaliveConfig) -> Arc<Self> {
        Arc::new(Keepalive {
            config,
            time_nanos: AtomicU64::new(config.time.map_or(0, nanos)),
        })
    }

    pub(crate) fn config(&self) -> &KeepaliveConfig {
        &self.config
    }

    /// The time new connections use.
    pub(crate) fn time(&self) -> Option<Duration> {
        match self.time_nanos.load(Ordering::Acquire) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// A connection that used `used` was told `too_many_pings`: later
    /// connections use twice that, unless another already raised it further
    /// (so that GOAWAYs from several connections at once double it once).
    pub(crate) fn too_many_pings(&self, used: Duration) -> Duration {
        let doubled = nanos(used).saturating_mul(2);
        let previous = self.time_nanos.fetch_max(doubled, Ordering::AcqRel);
        Duration::from_nanos(previous.max(doubled))
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The connection was closed by the server's `too_many_pings` GOAWAY.
///
/// It is the cause of the
/// [`ConnectionClosed`](crate::error::ConnectionClosed) error of a connection
/// that ended this way; the connector's later connections ping half as often
/// ([`Http2Connector::keepalive_time`](crate::Http2Connector::keepalive_time)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_connect::TooManyPings;
///
/// fn backed_off(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
///     let mut next = Some(error);
///     while let Some(error) = next {
///         if let Some(pings) = error.downcast_ref::<TooManyPings>() {
///             return Some(pings.new_time());
///         }
///         next = error.source();
///     }
///     None
/// }
/// # let _ = backed_off;
/// ```
#[derive(Debug)]
pub struct TooManyPings {
    used: Duration,
    new_time: Duration,
    source: Box<dyn StdError + Send + Sync>,
}

impl TooManyPings {
    pub(crate) fn new(
        used: Duration,
        new_time: Duration,
        source: Box<dyn StdError + Send + Sync>,
    ) -> Self {
        TooManyPings {
            used,
            new_time,
            source,
        }
    }

    /// The keepalive time the closed connection used.
    pub fn used_time(&self) -> Duration {
        self.used
    }

    /// The keepalive time of the connector's connections from now on.
    pub fn new_time(&self) -> Duration {
        self.new_time
    }
}

impl fmt::Display for TooManyPings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server sent GOAWAY too_many_pings (keepalive time {:?}); \
             new connections ping every {:?}",
            self.used, self.new_time
        )
    }
}

impl StdError for TooManyPings {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_grpc_go_s() {
        let config = KeepaliveConfig::default();
        assert_eq!(config.get_time(), None);
        assert_eq!(config.get_timeout(), Duration::from_secs(20));
        assert!(!config.get_permit_without_calls());
    }

    #[test]
    fn time_is_raised_to_the_minimum_and_max_turns_it_off() {
        let config = KeepaliveConfig::new().time(Duration::from_millis(1));
        assert_eq!(config.get_time(), Some(Duration::from_secs(10)));
        let config = KeepaliveConfig::new().time(Duration::from_secs(60));
        assert_eq!(config.get_time(), Some(Duration::from_secs(60)));
        assert_eq!(config.time(Duration::MAX).get_time(), None);
        let config = KeepaliveConfig::new().timeout(Duration::ZERO);
        assert_eq!(config.get_timeout(), KeepaliveConfig::DEFAULT_TIMEOUT);
    }

    #[test]
    fn too_many_pings_doubles_the_time_used_once() {
        let keepalive = Keepalive::new(KeepaliveConfig::new().time(Duration::from_secs(10)));
        let used = keepalive.time().unwrap();
        // Two connections that used 10 s are told at once: 20 s, not 40 s.
        assert_eq!(keepalive.too_many_pings(used), Duration::from_secs(20));
        assert_eq!(keepalive.too_many_pings(used), Duration::from_secs(20));
        assert_eq!(keepalive.time(), Some(Duration::from_secs(20)));
        // A connection made since then doubles again.
        assert_eq!(
            keepalive.too_many_pings(Duration::from_secs(20)),
            Duration::from_secs(40)
        );
        // Saturates instead of wrapping.
        keepalive.too_many_pings(Duration::from_nanos(u64::MAX));
        assert_eq!(keepalive.time(), Some(Duration::from_nanos(u64::MAX)));
    }
}
