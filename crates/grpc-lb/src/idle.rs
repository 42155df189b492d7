//! Idle mode's bookkeeping on the call path: how many calls are open (a
//! streaming response counts until its body ends) and when the last one
//! ended, in atomics. The response body ([`crate::ResponseBody`]) holds the
//! guard that keeps its call open.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// grpc-go's default idle timeout (`defaultIdleTimeout`, `dialoptions.go`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Calls open on a channel and when the last one ended; written by every call,
/// read by the worker's idle timer.
#[derive(Debug)]
pub(crate) struct Activity {
    open: AtomicUsize,
    /// Nanoseconds from `epoch` to the end of the last call, plus one; 0 until
    /// a call ends.
    last_end: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Counts a call open until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> OpenCall {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenCall(self.clone())
    }

    pub(crate) fn open_calls(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// When the last call ended, if one has.
    pub(crate) fn last_end(&self) -> Option<Instant> {
        match self.last_end.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos - 1)),
        }
    }
}

/// One open call: ends when dropped.
#[derive(Debug)]
pub(crate) struct OpenCall(Arc<Activity>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        let activity = &self.0;
        let nanos = activity.epoch.elapsed().as_nanos() as u64;
        // Stored before the count falls, so that a worker that sees no call
        // open also sees when the last one ended.
        activity.last_end.fetch_max(nanos + 1, Ordering::AcqRel);
        activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{CallEnd, ResponseBody};
    use crate::observe::{CallCounters, CallRecord};
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full};
    use std::task::{Context, Poll};

    /// A call's body holding the open-call guard, as the channel makes it.
    fn body<B>(inner: B, open: OpenCall) -> ResponseBody<B> {
        let record = CallRecord::start(&Arc::new(CallCounters::new(0)));
        ResponseBody::new(
            inner,
            Some(CallEnd::new(record, Some(open))),
            Default::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_open_until_its_body_ends() {
        let activity = Arc::new(Activity::new());
        assert_eq!(activity.last_end(), None);
        let body = body(
            Full::new(bytes::Bytes::from_static(b"hi")),
            activity.begin(),
        );
        assert_eq!(activity.open_calls(), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let read = body.collect().await.unwrap().to_bytes();
        assert_eq!(&read[..], b"hi");
        assert_eq!(activity.open_calls(), 0);
        let ended = activity.last_end().unwrap();
        assert_eq!(ended - activity.epoch, Duration::from_secs(5));
    }

    /// A channel over fake connections that answer at once, fed by a manual
    /// resolver, with idle mode after `timeout`; the worker is spawned.
    mod channel {
        use std::convert::Infallible;
        use std::future::{ready, Ready};

        use bytes::Bytes;
        use grpc_lb_balance::PolicyRegistry;
        use grpc_lb_core::{ConnectivityState, ResolveNow};
        use grpc_lb_reconnect::Reconnect;
        use grpc_lb_resolve::{Address, Endpoint, ManualHandle, ManualResolver, ResolverDiscover};
        use http_body_util::Full;
        use tower::{Service, ServiceExt};

        use super::*;
        use crate::channel::{Channel, ChannelOptions};
        use crate::worker::{IdleMode, Rebuild};

        /// A connection that answers every request with an empty body.
        #[derive(Clone)]
        pub(super) struct Answers;

        impl Service<http::Request<()>> for Answers {
            type Response = http::Response<Full<Bytes>>;
            type Error = Infallible;
            type Future = Ready<Result<Self::Response, Infallible>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, _: http::Request<()>) -> Self::Future {
                ready(Ok(http::Response::new(Full::new(Bytes::from_static(b"x")))))
            }
        }

        pub(super) fn channel(
            timeout: Duration,
        ) -> (Channel<Answers>, ManualHandle, Arc<AtomicUsize>) {
            let (resolver, handle) = ManualResolver::new("test");
            let resolutions = Arc::new(AtomicUsize::new(0));
            let make = |resolver: &ManualResolver| {
                let connector = tower::service_fn(|_: Address| ready(Ok::<_, Infallible>(Answers)));
                ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
                    Reconnect::new(connector, e.address.clone())
                })
            };
            let discover = make(&resolver);
            let options = ChannelOptions {
                resolver_status: Some(discover.status()),
                ..ChannelOptions::default()
            };
            let rebuild: Rebuild<_> = Box::new({
                let resolutions = resolutions.clone();
                move || {
                    resolutions.fetch_add(1, Ordering::Relaxed);
                    let discover = make(&resolver);
                    let status = discover.status();
                    let policy = PolicyRegistry::with_defaults().build("round_robin")?;
                    Ok((discover, Some(status), policy))
                }
            });
            let policy = PolicyRegistry::with_defaults()
                .build("round_robin")
                .unwrap();
            let (channel, worker) = Channel::pair_with_idle::<_, _, _, _, http::Request<()>>(
                discover,
                policy,
                options,
                Some(IdleMode::new(timeout, rebuild)),
            );
            tokio::spawn(worker);
            handle.reset([Endpoint::new(
                "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
            )]);
            (channel, handle, resolutions)
        }

        pub(super) async fn call(
            channel: &Channel<Answers>,
        ) -> http::Response<ResponseBody<Full<Bytes>>> {
            channel
                .clone()
                .oneshot(http::Request::new(()))
                .await
                .unwrap()
        }

        pub(super) async fn wait_for(channel: &Channel<Answers>, want: ConnectivityState) {
            let mut watch = channel.watch_state();
            watch.wait_for(|c| c.state == want).await.unwrap();
        }
    }

    use grpc_lb_core::ConnectivityState::{Idle, Ready};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::sleep;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn idle_exactly_the_timeout_after_the_last_call_ended() {
        let (channel, _resolver, resolutions) = channel::channel(TIMEOUT);
        let response = channel::call(&channel).await;
        channel::wait_for(&channel, Ready).await;
        sleep(Duration::from_secs(4)).await;
        // The call ends when its body is read (here: dropped), 4 s in.
        drop(response);
        let ended = Instant::now();
        sleep(TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(channel.state(), Ready, "not idle before the timeout");
        channel::wait_for(&channel, Idle).await;
        assert_eq!(ended.elapsed(), TIMEOUT);
        assert!(channel.subchannels().is_empty());
        assert_eq!(resolutions.load(Ordering::Relaxed), 0);

        // A call leaves idle: the resolver runs again, and the call is served.
        let response = channel::call(&channel).await;
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(channel.state(), Ready);
        assert_eq!(resolutions.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_call_keeps_the_channel_active_for_as_long_as_it_lasts() {
        let (channel, _resolver, _) = channel::channel(TIMEOUT);
        let open = channel::call(&channel).await;
        channel::wait_for(&channel, Ready).await;
        sleep(TIMEOUT * 5).await;
        assert_eq!(channel.state(), Ready, "an open call keeps it active");
        drop(open);
        let ended = Instant::now();
        channel::wait_for(&channel, Idle).await;
        assert_eq!(ended.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn connect_leaves_idle_and_no_call_at_all_goes_idle_after_the_timeout() {
        let (channel, _resolver, resolutions) = channel::channel(TIMEOUT);
        let start = Instant::now();
        channel.connect();
        channel::wait_for(&channel, Ready).await;
        channel::wait_for(&channel, Idle).await;
        assert_eq!(start.elapsed(), TIMEOUT);
        channel.connect();
        channel::wait_for(&channel, Ready).await;
        assert_eq!(resolutions.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_default_body_is_empty_and_counts_no_call() {
        let body = ResponseBody::<Full<bytes::Bytes>>::default();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.get_ref().is_none());
        let read = body.collect().await.unwrap().to_bytes();
        assert!(read.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_body_ends_its_call() {
        let activity = Arc::new(Activity::new());
        let body = body(Full::new(bytes::Bytes::new()), activity.begin());
        drop(body);
        assert_eq!(activity.open_calls(), 0);
        assert!(activity.last_end().is_some());
    }
}
