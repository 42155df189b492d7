//! A rate limit shared by every clone of a service, for
//! [`Builder::rate_limit`](crate::Builder::rate_limit).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

/// Layer of [`RateLimit`].
///
/// ```
/// use std::time::Duration;
/// use grpc_lb::RateLimitLayer;
///
/// let layer = RateLimitLayer::new(100, Duration::from_secs(1));
/// # drop(layer);
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limit: u64,
    period: Duration,
}

impl RateLimitLayer {
    /// At most `limit` calls (at least 1) per `period`.
    pub fn new(limit: u64, period: Duration) -> Self {
        RateLimitLayer {
            limit: limit.max(1),
            period,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            window: Arc::new(Window {
                limit: self.limit,
                period: self.period,
                state: Mutex::new(WindowState {
                    ends: None,
                    remaining: self.limit,
                }),
            }),
            reserved: false,
            sleep: None,
        }
    }
}

/// At most `limit` calls per `period` through a service and all its clones
/// together: tower's `RateLimit` (which tonic runs behind its channel's
/// buffer, so that clones share it), made `Clone` for a channel handed to
/// many clients.
///
/// A period starts with the first call after the last one ended; once its
/// calls are spent, `poll_ready` waits for its end. Each `poll_ready` that
/// returns ready holds one call of the period until `call`.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb::RateLimitLayer;
/// use tower::{Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), std::convert::Infallible> {
/// let echo = tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
/// let mut limited = RateLimitLayer::new(2, Duration::from_secs(1)).layer(echo);
/// let mut clone = limited.clone();
/// let start = tokio::time::Instant::now();
/// limited.ready().await?.call(1).await?;
/// clone.ready().await?.call(2).await?;
/// // The third call of the period, through either clone, waits for the next.
/// limited.ready().await?.call(3).await?;
/// assert_eq!(start.elapsed(), Duration::from_secs(1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RateLimit<S> {
    inner: S,
    window: Arc<Window>,
    /// This clone holds one call of the period, taken in `poll_ready`.
    reserved: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug)]
struct Window {
    limit: u64,
    period: Duration,
    // Held for a few instructions, never across an await or a pick.
    state: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    ends: Option<Instant>,
    remaining: u64,
}

impl Window {
    /// Takes one call of the period, or says when the next period starts.
    fn take(&self, now: Instant) -> Result<(), Instant> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.ends.is_none_or(|ends| now >= ends) {
            state.ends = Some(now + self.period);
            state.remaining = self.limit;
        }
        if state.remaining > 0 {
            state.remaining -= 1;
            Ok(())
        } else {
            Err(state.ends.unwrap_or(now))
        }
    }
}

impl<S> RateLimit<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming the limit.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    /// A handle on the same limit, holding no call of the period.
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            window: self.window.clone(),
            reserved: false,
            sleep: None,
        }
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.reserved {
            match self.window.take(Instant::now()) {
                Ok(()) => {
                    self.reserved = true;
                    self.sleep = None;
                }
                Err(next) => {
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
                    if sleep.deadline() != next {
                        sleep.as_mut().reset(next);
                    }
                    std::task::ready!(sleep.as_mut().poll(cx));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // A call without `poll_ready` breaks tower's contract; it is passed
        // on rather than refused.
        self.reserved = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready_ok};
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_period_and_wait_for_the_next() {
        let (service, mut handle) = tower_test::mock::pair::<u32, u32>();
        handle.allow(u64::MAX);
        let layer = RateLimitLayer::new(2, Duration::from_secs(10));
        let mut a = tokio_test::task::spawn(layer.layer(service));
        let mut b = tokio_test::task::spawn(a.clone());

        assert_ready_ok!(a.enter(|cx, mut s| s.poll_ready(cx)));
        drop(a.call(1));
        assert_ready_ok!(b.enter(|cx, mut s| s.poll_ready(cx)));
        drop(b.call(2));
        // The period's two calls are spent, by either clone.
        assert_pending!(a.enter(|cx, mut s| s.poll_ready(cx)));
        assert_pending!(b.enter(|cx, mut s| s.poll_ready(cx)));

        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(a.is_woken() && b.is_woken());
        assert_ready_ok!(a.enter(|cx, mut s| s.poll_ready(cx)));
        assert_ready_ok!(b.enter(|cx, mut s| s.poll_ready(cx)));
        assert_pending!(tokio_test::task::spawn(a.clone()).enter(|cx, mut s| s.poll_ready(cx)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_of_zero_lets_one_call_through_per_period() {
        let echo = tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
        let mut limited = RateLimitLayer::new(0, Duration::from_secs(1)).layer(echo);
        let start = Instant::now();
        for n in 0..3 {
            assert_eq!(limited.ready().await.unwrap().call(n).await.unwrap(), n);
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
