use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The re-resolution signal: subchannels raise it, the resolver answers it.
///
/// grpc-go's subchannels call `ResolveNow` on every failed connection attempt and on
/// every lost connection, so that a resolver can notice that the address set has
/// moved. This type carries that signal from the reconnect layer to the resolver
/// layer without either depending on the other.
///
/// Requests coalesce: many requests raised before the resolver looks count as one
/// pending request, which is what a rate-limited resolver wants.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use grpc_lb_core::ResolveNow;
///
/// let signal = ResolveNow::new();
/// let subchannel_side = signal.clone();
/// subchannel_side.request();
/// subchannel_side.request();
/// signal.requested().await; // returns at once: a request is pending
/// assert_eq!(signal.count(), 2);
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ResolveNow {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    notify: Notify,
    count: AtomicU64,
}

impl ResolveNow {
    /// A new signal with no request pending.
    pub fn new() -> Self {
        ResolveNow::default()
    }

    /// Asks for the name to be resolved again.
    pub fn request(&self) {
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        self.inner.notify.notify_one();
    }

    /// Waits until a request is pending, and consumes it.
    pub async fn requested(&self) {
        self.inner.notify.notified().await;
    }

    /// How many requests have been raised in total, for metrics and tests.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}
