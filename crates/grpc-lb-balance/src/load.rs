use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Load figures of one endpoint, updated by every caller without a lock.
///
/// `outstanding` counts requests sent and not yet answered (gRFC A48's
/// outstanding requests). The peak-EWMA round-trip estimate follows tower's
/// `load::PeakEwma`: a new sample above the estimate replaces it at once (peak),
/// one below decays towards it with the configured time constant.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_balance::EndpointLoad;
///
/// let load = EndpointLoad::new(Duration::from_millis(30), Duration::from_secs(10));
/// load.start();
/// load.start();
/// assert_eq!(load.outstanding(), 2);
///
/// // A slow answer raises the estimate at once (the "peak" of PeakEWMA).
/// load.finish(Some(Duration::from_millis(90)));
/// assert_eq!(load.outstanding(), 1);
/// assert!(load.peak_ewma_cost() >= 2.0 * 90e6); // 90 ms × (1 in flight + 1)
/// ```
#[derive(Debug)]
pub struct EndpointLoad {
    outstanding: AtomicUsize,
    /// The RTT estimate in nanoseconds, as f64 bits.
    rtt_ns: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `epoch`.
    updated_ns: AtomicU64,
    epoch: Instant,
    decay_ns: f64,
}

/// tower's and linkerd's PeakEWMA defaults.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const DEFAULT_DECAY: Duration = Duration::from_secs(10);

impl Default for EndpointLoad {
    fn default() -> Self {
        EndpointLoad::new(DEFAULT_RTT, DEFAULT_DECAY)
    }
}

impl EndpointLoad {
    /// A new endpoint with an initial RTT estimate and a decay time constant.
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        EndpointLoad {
            outstanding: AtomicUsize::new(0),
            rtt_ns: AtomicU64::new((default_rtt.as_nanos() as f64).to_bits()),
            updated_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    /// Requests sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Marks a request as sent.
    pub fn start(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request as answered after `rtt`.
    pub fn finish(&self, rtt: Option<Duration>) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Some(rtt) = rtt {
            self.observe(rtt);
        }
    }

    fn observe(&self, rtt: Duration) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let sample = rtt.as_nanos() as f64;
        let last = self.updated_ns.swap(now, Ordering::Relaxed);
        let elapsed = now.saturating_sub(last) as f64;
        let _ = self
            .rtt_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let estimate = f64::from_bits(bits);
                let next = if sample > estimate {
                    sample
                } else {
                    let decay = (-elapsed / self.decay_ns).exp();
                    estimate * decay + sample * (1.0 - decay)
                };
                Some(next.to_bits())
            });
    }

    /// The PeakEWMA cost: the RTT estimate weighted by the outstanding requests,
    /// as tower's `PeakEwma::load` computes it.
    pub fn peak_ewma_cost(&self) -> f64 {
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        rtt * (self.outstanding() + 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_counts_requests_in_flight() {
        let load = EndpointLoad::default();
        load.start();
        load.start();
        assert_eq!(load.outstanding(), 2);
        load.finish(None);
        assert_eq!(load.outstanding(), 1);
    }

    #[test]
    fn a_slow_sample_raises_the_cost_at_once() {
        let load = EndpointLoad::default();
        let before = load.peak_ewma_cost();
        load.start();
        load.finish(Some(Duration::from_millis(300)));
        assert!(load.peak_ewma_cost() >= before * 9.0);
    }
}
