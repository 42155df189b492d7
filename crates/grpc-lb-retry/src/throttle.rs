use std::sync::atomic::{AtomicU64, Ordering};

use grpc_lb_service_config::RetryThrottling;

/// gRFC A6's retry throttle, shared by every RPC of a channel: each failure
/// takes a token, each success gives back `token_ratio`, and retries stop while
/// no more than half of `max_tokens` is left.
///
/// Tokens are counted in thousandths, the precision A6 gives `tokenRatio`, so
/// that the bucket is a single atomic and never takes a lock.
///
/// ```
/// use grpc_lb_retry::RetryThrottle;
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig =
///     r#"{"retryThrottling": {"maxTokens": 4, "tokenRatio": 0.5}}"#.parse()?;
/// let throttle = RetryThrottle::new(config.retry_throttling().unwrap());
///
/// assert!(!throttle.record_failure()); // 3 tokens left: above half
/// assert!(throttle.record_failure()); // 2 left: half the bucket, retries stop
/// throttle.record_success(); // +0.5
/// assert_eq!(throttle.tokens(), 2.5);
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Debug)]
pub struct RetryThrottle {
    milli_tokens: AtomicU64,
    max: u64,
    ratio: u64,
}

impl RetryThrottle {
    /// A full bucket for `config`.
    pub fn new(config: &RetryThrottling) -> Self {
        let max = u64::from(config.max_tokens()) * 1000;
        RetryThrottle {
            milli_tokens: AtomicU64::new(max),
            max,
            ratio: (config.token_ratio() * 1000.0).round().max(1.0) as u64,
        }
    }

    /// Records a failed attempt and says whether retries are now throttled.
    pub fn record_failure(&self) -> bool {
        let previous = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(1000))
            })
            .unwrap_or_else(|t| t);
        previous.saturating_sub(1000) <= self.max / 2
    }

    /// Records a successful RPC.
    pub fn record_success(&self) {
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + self.ratio).min(self.max))
            });
    }

    /// Tokens left, in whole tokens and thousandths.
    pub fn tokens(&self) -> f64 {
        self.milli_tokens.load(Ordering::Acquire) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grpc_lb_service_config::ServiceConfig;

    fn throttle(max_tokens: u32, token_ratio: f64) -> RetryThrottle {
        let config: ServiceConfig = format!(
            r#"{{"retryThrottling": {{"maxTokens": {max_tokens}, "tokenRatio": {token_ratio}}}}}"#
        )
        .parse()
        .unwrap();
        RetryThrottle::new(config.retry_throttling().unwrap())
    }

    #[test]
    fn throttles_at_half_the_bucket_and_recovers_by_ratio() {
        let t = throttle(10, 0.5);
        for _ in 0..4 {
            assert!(!t.record_failure());
        }
        assert_eq!(t.tokens(), 6.0);
        assert!(t.record_failure(), "5 of 10 tokens left is throttled");
        t.record_success();
        assert_eq!(t.tokens(), 5.5);
        assert!(t.record_failure());
        for _ in 0..100 {
            t.record_success();
        }
        assert_eq!(t.tokens(), 10.0);
    }

    #[test]
    fn never_goes_below_zero() {
        let t = throttle(1, 0.001);
        for _ in 0..5 {
            assert!(t.record_failure());
        }
        assert_eq!(t.tokens(), 0.0);
        t.record_success();
        assert_eq!(t.tokens(), 0.001);
    }
}
