use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::load::EndpointLoad;

/// Chooses one endpoint among the ready ones, for each request.
///
/// Every caller of a channel runs the pick at once, so a `Pick` takes `&self`
/// and keeps any state in atomics: no lock is held across a pick.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{EndpointLoad, Pick};
///
/// /// Always the endpoint with the fewest requests in flight (a full scan: fine
/// /// for a handful of endpoints).
/// #[derive(Debug)]
/// struct LeastLoaded;
///
/// impl Pick for LeastLoaded {
///     fn pick(&self, ready: &[Arc<EndpointLoad>]) -> usize {
///         (0..ready.len()).min_by_key(|&i| ready[i].outstanding()).unwrap_or(0)
///     }
/// }
///
/// let ready: Vec<Arc<EndpointLoad>> = (0..3).map(|_| Arc::default()).collect();
/// ready[0].start();
/// ready[2].start();
/// assert_eq!(LeastLoaded.pick(&ready), 1);
/// ```
pub trait Pick: Send + Sync + fmt::Debug + 'static {
    /// Returns the index of the chosen endpoint; `ready` is never empty. An
    /// index out of range is a bug in the pick: the channel fails that call
    /// with `INTERNAL` (and logs it) rather than panic in the caller.
    fn pick(&self, ready: &[Arc<EndpointLoad>]) -> usize;

    /// True if the pick reads round-trip times, so callers must time requests.
    fn uses_latency(&self) -> bool {
        false
    }
}

/// A cheap, lock-free source of random numbers shared by all callers
/// (SplitMix64 over an atomic counter). Picks need spread, not secrecy.
#[derive(Debug)]
struct SharedRng(AtomicU64);

impl SharedRng {
    fn new() -> Self {
        SharedRng(AtomicU64::new(rand::random()))
    }

    fn below(&self, n: usize) -> usize {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z as u128 * n as u128) >> 64) as usize
    }
}

/// Each ready endpoint in turn, starting at a random one (grpc-go's round_robin
/// picker).
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{EndpointLoad, Pick, RoundRobin};
///
/// let ready: Vec<Arc<EndpointLoad>> = (0..3).map(|_| Arc::default()).collect();
/// let pick = RoundRobin::new();
/// let first = pick.pick(&ready);
/// let next: Vec<usize> = (0..3).map(|_| pick.pick(&ready)).collect();
/// assert_eq!(next, [(first + 1) % 3, (first + 2) % 3, first]);
/// ```
#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin pick with a random starting point.
    pub fn new() -> Self {
        RoundRobin {
            next: AtomicUsize::new(rand::random::<u32>() as usize),
        }
    }
}

impl Default for RoundRobin {
    fn default() -> Self {
        RoundRobin::new()
    }
}

impl Pick for RoundRobin {
    fn pick(&self, ready: &[Arc<EndpointLoad>]) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % ready.len()
    }
}

/// The first ready endpoint: pick_first publishes exactly one.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{EndpointLoad, Pick, SingleReady};
///
/// let ready = [Arc::new(EndpointLoad::default())];
/// assert_eq!(SingleReady.pick(&ready), 0);
/// ```
#[derive(Debug, Default)]
pub struct SingleReady;

impl Pick for SingleReady {
    fn pick(&self, _ready: &[Arc<EndpointLoad>]) -> usize {
        0
    }
}

/// Power of two choices over PeakEWMA cost, as tower's p2c over `PeakEwma`.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{EndpointLoad, P2cPeakEwma, Pick};
///
/// let ready: Vec<Arc<EndpointLoad>> = (0..2).map(|_| Arc::default()).collect();
/// for _ in 0..5 {
///     ready[0].start(); // five requests in flight on the first endpoint
/// }
/// // With two endpoints both are compared, so the idle one always wins.
/// let pick = P2cPeakEwma::new();
/// assert!((0..100).all(|_| pick.pick(&ready) == 1));
/// assert!(pick.uses_latency());
/// ```
#[derive(Debug)]
pub struct P2cPeakEwma {
    rng: SharedRng,
}

impl P2cPeakEwma {
    /// A p2c pick.
    pub fn new() -> Self {
        P2cPeakEwma {
            rng: SharedRng::new(),
        }
    }
}

impl Default for P2cPeakEwma {
    fn default() -> Self {
        P2cPeakEwma::new()
    }
}

impl Pick for P2cPeakEwma {
    fn pick(&self, ready: &[Arc<EndpointLoad>]) -> usize {
        let n = ready.len();
        if n == 1 {
            return 0;
        }
        let a = self.rng.below(n);
        // A second, distinct index.
        let b = (a + 1 + self.rng.below(n - 1)) % n;
        if ready[b].peak_ewma_cost() < ready[a].peak_ewma_cost() {
            b
        } else {
            a
        }
    }

    fn uses_latency(&self) -> bool {
        true
    }
}

/// gRFC A48's least_request: the endpoint with the fewest outstanding requests
/// among `choice_count` chosen at random.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{EndpointLoad, LeastRequest, Pick};
///
/// assert_eq!(LeastRequest::new(50).choice_count(), 10); // clamped to A48's 2..=10
///
/// let ready: Vec<Arc<EndpointLoad>> = (0..2).map(|_| Arc::default()).collect();
/// ready[1].start();
/// // Two candidates drawn with replacement: the idle endpoint wins unless both
/// // draws land on the busy one, about 3 picks in 4.
/// let pick = LeastRequest::default();
/// let idle_wins = (0..1000).filter(|_| pick.pick(&ready) == 0).count();
/// assert!(idle_wins > 600, "{idle_wins}");
/// ```
#[derive(Debug)]
pub struct LeastRequest {
    choice_count: usize,
    rng: SharedRng,
}

impl LeastRequest {
    /// A48's default `choice_count`.
    pub const DEFAULT_CHOICE_COUNT: usize = 2;

    /// `choice_count` is clamped to A48's range, 2 to 10.
    pub fn new(choice_count: usize) -> Self {
        LeastRequest {
            choice_count: choice_count.clamp(2, 10),
            rng: SharedRng::new(),
        }
    }

    /// The number of random candidates compared per pick.
    pub fn choice_count(&self) -> usize {
        self.choice_count
    }
}

impl Default for LeastRequest {
    fn default() -> Self {
        LeastRequest::new(Self::DEFAULT_CHOICE_COUNT)
    }
}

impl Pick for LeastRequest {
    fn pick(&self, ready: &[Arc<EndpointLoad>]) -> usize {
        let mut best = self.rng.below(ready.len());
        for _ in 1..self.choice_count {
            let candidate = self.rng.below(ready.len());
            if ready[candidate].outstanding() < ready[best].outstanding() {
                best = candidate;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn loads(n: usize) -> Vec<Arc<EndpointLoad>> {
        (0..n).map(|_| Arc::new(EndpointLoad::default())).collect()
    }

    #[test]
    fn round_robin_visits_each_in_turn() {
        let ready = loads(3);
        let rr = RoundRobin::new();
        let first = rr.pick(&ready);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&ready)).collect();
        let expected: Vec<usize> = (1..7).map(|i| (first + i) % 3).collect();
        assert_eq!(picks, expected);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let ready = loads(2);
        for _ in 0..100 {
            ready[0].start();
        }
        let lr = LeastRequest::new(10);
        let picks_of_busy = (0..1000).filter(|_| lr.pick(&ready) == 0).count();
        // Only when all ten samples land on the busy one: 2^-10 of the time.
        assert!(picks_of_busy < 20, "{picks_of_busy}");
    }

    #[test]
    fn least_request_clamps_choice_count() {
        assert_eq!(LeastRequest::new(0).choice_count(), 2);
        assert_eq!(LeastRequest::new(50).choice_count(), 10);
    }

    #[test]
    fn p2c_prefers_the_faster_endpoint() {
        let ready = loads(2);
        ready[0].start();
        ready[0].finish(Some(Duration::from_secs(1)));
        let p2c = P2cPeakEwma::new();
        assert!((0..100).all(|_| p2c.pick(&ready) == 1));
    }

    #[test]
    fn shared_rng_spreads_over_the_range() {
        let rng = SharedRng::new();
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            seen[rng.below(4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
