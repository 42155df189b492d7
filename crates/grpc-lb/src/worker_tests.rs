//! Regressions of the worker and the picker (issue 13's review), each named
//! after its defect, over in-process connections: timing on tokio's paused
//! clock; the spin and livelock ones on a multi-threaded runtime, where a
//! worker that never yields shows as a timeout instead of a hung test.
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_balance::{EndpointLoad, EveryEndpoint, LoadBalancer, Pick, PolicyRegistry};
use grpc_lb_core::{ConnectivityState, ResolveNow};
use grpc_lb_reconnect::{ConnectMode, Reconnect, ReconnectConfig};
use grpc_lb_resolve::{Address, Endpoint, ManualResolver, ResolverDiscover};
use tokio::time::timeout;
use tower::discover::Change;
use tower::{Service, ServiceExt};

use crate::channel::{Channel, ChannelOptions};
use crate::observe::ChannelEvent;
use crate::worker::{IdleMode, Rebuild};

/// A connection that answers every request at once.
#[derive(Clone)]
struct Answers;

impl Service<http::Request<()>> for Answers {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        ready(Ok(http::Response::new(())))
    }
}

fn address(port: u16) -> Address {
    Address::from(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A connector that connects at once and counts its attempts.
fn counting_connector(
    attempts: Arc<AtomicUsize>,
) -> impl Service<
    Address,
    Response = Answers,
    Error = Infallible,
    Future = Ready<Result<Answers, Infallible>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_: Address| {
        attempts.fetch_add(1, Ordering::Relaxed);
        ready(Ok::<_, Infallible>(Answers))
    })
}

const GUARD: Duration = Duration::from_secs(10);

/// Runs `test` on a runtime of its own with `threads` worker threads, and
/// fails if it has not finished within twice [`GUARD`]: a worker that never
/// yields holds every thread of its runtime, timers included, so the test's
/// own timeouts could not fire.
fn on_own_runtime<F>(threads: usize, test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(test());
        let _ = done.send(());
    });
    match finished.recv_timeout(GUARD * 2) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "still running after {:?}: the worker holds its threads",
                GUARD * 2
            )
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the test failed on its runtime (its panic is above)")
        }
    }
}

// Issue 13, defect 3: pick_first over eager subchannels (the mode the
// `ChannelOptions` example builds) let go of the losers, which reconnected at
// once, won, and let go of the winner: over a million attempts, and the worker
// never returned to see that its channel was dropped.
#[test]
fn pick_first_over_eager_subchannels_connects_once_and_the_worker_ends() {
    on_own_runtime(2, pick_first_over_eager_subchannels);
}

async fn pick_first_over_eager_subchannels() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let connector = counting_connector(attempts.clone());
    let (resolver, handle) = ManualResolver::new("test");
    let eager = ReconnectConfig::default().mode(ConnectMode::Eager);
    let discover =
        ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
            Reconnect::with_config(connector.clone(), e.address.clone(), eager.clone())
        });
    let options = ChannelOptions {
        resolver_status: Some(discover.status()),
        ..ChannelOptions::default()
    };
    let policy = PolicyRegistry::with_defaults().build("pick_first").unwrap();
    let (channel, worker) =
        Channel::pair::<_, _, _, _, http::Request<()>>(discover, policy, options);
    let worker = tokio::spawn(worker);
    handle.reset([1, 2, 3].map(|port| Endpoint::new(address(port))));
    let mut state = channel.watch_state();
    timeout(
        GUARD,
        state.wait_for(|c| c.state == ConnectivityState::Ready),
    )
    .await
    .expect("READY")
    .unwrap();
    for _ in 0..10 {
        channel
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(channel.ready_addresses(), [address(1)]);
    drop(state);
    drop(channel);
    timeout(GUARD, worker)
        .await
        .expect("the worker ends once its channel is gone")
        .unwrap();
    // The first address answers at once: nothing else is ever dialed.
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
}

/// A discovery that fails every time it is polled.
struct FailingDiscover {
    polls: Arc<AtomicUsize>,
}

type Subchannel =
    Reconnect<tower::util::ServiceFn<fn(Address) -> Ready<Result<Answers, Infallible>>>, Address>;

impl futures::Stream for FailingDiscover {
    type Item = Result<Change<Address, Subchannel>, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Some(Err(std::io::Error::other("no such service"))))
    }
}

// Issue 13, defect 8: a Discover that keeps yielding errors held the worker
// in its discovery loop for good: it never yielded, starving the other tasks
// of its thread, and never ended.
#[test]
fn a_discovery_that_keeps_failing_does_not_hold_the_thread() {
    on_own_runtime(1, a_discovery_that_keeps_failing);
}

async fn a_discovery_that_keeps_failing() {
    let polls = Arc::new(AtomicUsize::new(0));
    let discover = FailingDiscover {
        polls: polls.clone(),
    };
    let policy = PolicyRegistry::with_defaults()
        .build("round_robin")
        .unwrap();
    let (channel, worker) = Channel::<Answers>::pair::<_, _, _, _, http::Request<()>>(
        discover,
        policy,
        ChannelOptions::default(),
    );
    let worker = tokio::spawn(worker);
    // Runs on the runtime's only worker thread, with the worker.
    let probe = tokio::spawn(async {});
    timeout(GUARD, probe)
        .await
        .expect("other tasks run beside the worker")
        .unwrap();
    assert!(polls.load(Ordering::Relaxed) > 0);
    drop(channel);
    timeout(GUARD, worker)
        .await
        .expect("the worker ends once its channel is gone")
        .unwrap();
}

// Issue 13, defect 2: an endpoint inserted again with other attributes got a
// new IDLE subchannel that nothing connected, while round_robin kept the old
// one's READY: the channel read READY with nothing to pick, and calls hung.
#[tokio::test(start_paused = true)]
async fn a_reinserted_endpoint_is_connected_again() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let connector = counting_connector(attempts.clone());
    let (resolver, handle) = ManualResolver::new("test");
    let discover =
        ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
            Reconnect::new(connector.clone(), e.address.clone())
        });
    let options = ChannelOptions {
        resolver_status: Some(discover.status()),
        ..ChannelOptions::default()
    };
    let policy = PolicyRegistry::with_defaults()
        .build("round_robin")
        .unwrap();
    let (channel, worker) =
        Channel::pair::<_, _, _, _, http::Request<()>>(discover, policy, options);
    tokio::spawn(worker);
    handle.reset([Endpoint::new(address(1))]);
    channel
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(attempts.load(Ordering::Relaxed), 1);

    let mut events = channel.events();
    handle.reset([Endpoint::new(address(1)).with_metadata("zone", "b")]);
    loop {
        if let ChannelEvent::SubchannelAdded { .. } = events.recv().await.unwrap() {
            break;
        }
    }
    let served = timeout(GUARD, channel.clone().oneshot(http::Request::new(())))
        .await
        .expect("the call is served by the new subchannel");
    served.unwrap();
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
    assert_eq!(channel.ready_addresses(), [address(1)]);
    assert_eq!(channel.subchannels().len(), 1);
}

/// A pick that answers an index past the ready endpoints.
#[derive(Debug)]
struct OutOfRange;

impl Pick for OutOfRange {
    fn pick(&self, ready: &[Arc<EndpointLoad>]) -> usize {
        ready.len() + 3
    }
}

// Issue 13, defect 8: a custom Pick returning an index out of range
// panicked on the caller's thread.
#[tokio::test(start_paused = true)]
async fn an_out_of_range_pick_fails_the_call_instead_of_panicking() {
    let connector = counting_connector(Arc::default());
    let (resolver, handle) = ManualResolver::new("test");
    let discover =
        ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
            Reconnect::new(connector.clone(), e.address.clone())
        });
    let options = ChannelOptions {
        resolver_status: Some(discover.status()),
        ..ChannelOptions::default()
    };
    let policy: Box<dyn LoadBalancer> =
        Box::new(EveryEndpoint::new("out_of_range", Arc::new(OutOfRange)));
    let (channel, worker) =
        Channel::pair::<_, _, _, _, http::Request<()>>(discover, policy, options);
    tokio::spawn(worker);
    handle.reset([Endpoint::new(address(1))]);
    let mut picker = channel.watch_picker();
    while channel.ready_addresses().is_empty() {
        picker.changed().await.unwrap();
    }
    let error = channel
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    let status = error.status().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(
        status.message(),
        "the load-balancing pick chose endpoint 4 of 1 ready endpoints"
    );
}

/// A connection that answers only when `open` gets a permit.
#[derive(Clone)]
struct Gated {
    open: Arc<tokio::sync::Semaphore>,
}

impl Service<http::Request<()>> for Gated {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let open = self.open.clone();
        Box::pin(async move {
            open.acquire().await.unwrap().forget();
            Ok(http::Response::new(()))
        })
    }
}

// Issue 13, defect 8: a connection whose poll_ready was Pending (a user's
// tower ConcurrencyLimit) was dropped by the pick, and the call waited only
// for a new picker: it was never woken when the limit freed up.
#[tokio::test(start_paused = true)]
async fn a_call_waiting_on_a_busy_connection_is_woken_when_it_frees_up() {
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let connector = tower::service_fn({
        let open = open.clone();
        move |_: Address| {
            // Two in flight: one is the subchannel's own readiness probe,
            // which holds its permit; so one call at a time.
            let limited = tower::limit::ConcurrencyLimit::new(Gated { open: open.clone() }, 2);
            ready(Ok::<_, Infallible>(limited))
        }
    });
    let (resolver, handle) = ManualResolver::new("test");
    let discover =
        ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
            Reconnect::new(connector.clone(), e.address.clone())
        });
    let options = ChannelOptions {
        resolver_status: Some(discover.status()),
        ..ChannelOptions::default()
    };
    let policy = PolicyRegistry::with_defaults()
        .build("round_robin")
        .unwrap();
    let (channel, worker) =
        Channel::pair::<_, _, _, _, http::Request<()>>(discover, policy, options);
    tokio::spawn(worker);
    handle.reset([Endpoint::new(address(1))]);
    channel.connect();
    let mut picker = channel.watch_picker();
    while channel.ready_addresses().is_empty() {
        picker.changed().await.unwrap();
    }
    let first = tokio::spawn(channel.clone().oneshot(http::Request::new(())));
    let second = tokio::spawn(channel.clone().oneshot(http::Request::new(())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!first.is_finished() && !second.is_finished());
    // One answer frees the limit for the other call, which is then sent and
    // answered too.
    open.add_permits(2);
    timeout(GUARD, first).await.unwrap().unwrap().unwrap();
    timeout(GUARD, second)
        .await
        .expect("the waiting call is woken when the connection frees up")
        .unwrap()
        .unwrap();
}

// Issue 13, defect 6: a failed exit from idle mode was permanent: the channel
// read TRANSIENT_FAILURE, and calls asked to leave idle only when it read IDLE.
#[tokio::test(start_paused = true)]
async fn a_failed_exit_from_idle_mode_is_retried_by_the_next_call() {
    let (resolver, handle) = ManualResolver::new("test");
    let resolver_fails = Arc::new(AtomicBool::new(false));
    let make = |resolver: &ManualResolver| {
        let connector = counting_connector(Arc::default());
        ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
            Reconnect::new(connector.clone(), e.address.clone())
        })
    };
    let discover = make(&resolver);
    let options = ChannelOptions {
        resolver_status: Some(discover.status()),
        ..ChannelOptions::default()
    };
    let rebuild: Rebuild<_> = Box::new({
        let resolver_fails = resolver_fails.clone();
        move || {
            if resolver_fails.load(Ordering::Relaxed) {
                return Err("the resolver cannot start".into());
            }
            let discover = make(&resolver);
            let status = discover.status();
            let policy = PolicyRegistry::with_defaults().build("round_robin")?;
            Ok((discover, Some(status), policy))
        }
    });
    let policy = PolicyRegistry::with_defaults()
        .build("round_robin")
        .unwrap();
    let idle = IdleMode::new(Duration::from_secs(10), rebuild);
    let (channel, worker) = Channel::pair_with_idle::<_, _, _, _, http::Request<()>>(
        discover,
        policy,
        options,
        Some(idle),
    );
    tokio::spawn(worker);
    handle.reset([Endpoint::new(address(1))]);
    channel
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    let mut state = channel.watch_state();
    state
        .wait_for(|c| c.state == ConnectivityState::Idle)
        .await
        .unwrap();

    resolver_fails.store(true, Ordering::Relaxed);
    let error = channel
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    let status = error.status().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("the resolver cannot start"),
        "{status:?}"
    );
    assert_eq!(channel.state(), ConnectivityState::TransientFailure);
    // Every call asks again, and fails fast while it still fails.
    let error = channel
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    let status = error.status().expect("a gRPC status");
    assert!(
        status.message().contains("the resolver cannot start"),
        "{status:?}"
    );

    // The resolver can start again: the next call leaves idle mode and is
    // served (its manual resolver still holds the address).
    resolver_fails.store(false, Ordering::Relaxed);
    timeout(GUARD, channel.clone().oneshot(http::Request::new(())))
        .await
        .expect("the call is served")
        .unwrap();
    assert_eq!(channel.state(), ConnectivityState::Ready);
}
