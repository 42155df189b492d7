//! [`PickHandle`](super::PickHandle): clones picking from tasks and threads
//! while discovery and states change.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use grpc_lb_core::ConnectivityState;
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_service::Service;

use super::Balance;
use crate::tree::{PickInfo, RoundRobin};

/// A discover fed by hand.
struct Fed<S>(mpsc::UnboundedReceiver<Result<Change<u32, S>, Infallible>>);

impl<S> futures::Stream for Fed<S> {
    type Item = Result<Change<u32, S>, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

type Feed<S> = mpsc::UnboundedSender<Result<Change<u32, S>, Infallible>>;

fn fed<S>() -> (Feed<S>, Fed<S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Fed(rx))
}

/// A backend answering its id; always ready.
#[derive(Clone, Debug)]
struct Backend(u32);

impl Service<()> for Backend {
    type Response = u32;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u32, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok(self.0))
    }
}

/// Runs the balancer on its own task, as a channel's worker would.
fn run<S>(mut balance: Balance<Fed<S>, ()>)
where
    S: Service<(), Error = Infallible> + Send + 'static,
    S::Future: Send,
{
    tokio::spawn(std::future::poll_fn(move |cx| balance.poll_events(cx)));
}

#[tokio::test]
async fn clones_pick_concurrently_from_threads_while_discovery_changes() {
    let (feed, discover) = fed();
    for id in 0..4 {
        feed.send(Ok(Change::Insert(id, Backend(id)))).unwrap();
    }
    let mut balance = Balance::new(discover, RoundRobin::new());
    let handle = balance.handle();
    run(balance);

    // Published once endpoint 0 is gone and 4 and 5 are in: set by this task
    // after it saw a pick of 5, so picks that start later must not see 0.
    let removal_published = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let handle = handle.clone();
            let removal_published = removal_published.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                // Each thread its own executor: the picks run in parallel
                // with the balancer's task and with each other.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let mut seen = HashSet::new();
                let mut picks = 0u32;
                while !done.load(Ordering::Acquire) || picks < 2000 {
                    let after_removal = removal_published.load(Ordering::Acquire);
                    let picked = runtime
                        .block_on(handle.pick(PickInfo::none()).wait_for_ready(true))
                        .expect("round_robin over ready backends always picks");
                    let id = picked.service().0;
                    assert!(!(after_removal && id == 0), "picked a removed endpoint");
                    seen.insert(id);
                    picks += 1;
                }
                (picks, seen)
            })
        })
        .collect();

    // Discovery changes while the threads pick.
    tokio::task::yield_now().await;
    feed.send(Ok(Change::Remove(0))).unwrap();
    feed.send(Ok(Change::Insert(4, Backend(4)))).unwrap();
    feed.send(Ok(Change::Insert(5, Backend(5)))).unwrap();
    loop {
        let picked = handle.pick(PickInfo::none()).await.unwrap();
        if picked.service().0 == 5 {
            break;
        }
        tokio::task::yield_now().await;
    }
    removal_published.store(true, Ordering::Release);
    // Endpoint 2 leaves and comes back: picks never fail meanwhile.
    feed.send(Ok(Change::Remove(2))).unwrap();
    feed.send(Ok(Change::Insert(2, Backend(2)))).unwrap();
    tokio::task::yield_now().await;
    done.store(true, Ordering::Release);

    let joined = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| t.join().expect("a picking thread panicked"))
                .collect::<Vec<_>>()
        }),
    )
    .await
    .expect("every pick completes")
    .unwrap();
    let mut all = HashSet::new();
    for (picks, seen) in joined {
        assert!(picks >= 2000);
        all.extend(seen);
    }
    assert!(all.is_superset(&HashSet::from([1, 3])), "{all:?}");
    assert!(all.iter().all(|id| *id <= 5), "{all:?}");
}

#[tokio::test(start_paused = true)]
async fn clones_pick_from_tasks_while_endpoints_come_and_go() {
    let (feed, discover) = fed();
    feed.send(Ok(Change::Insert(0, Backend(0)))).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    let handle = balance.handle();
    run(balance);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut seen = HashSet::new();
                for _ in 0..200 {
                    let picked = handle
                        .clone()
                        .into_pick(PickInfo::none())
                        .wait_for_ready(true)
                        .await
                        .unwrap();
                    seen.insert(picked.service().0);
                    tokio::task::yield_now().await;
                }
                seen
            })
        })
        .collect();
    // Endpoints come and go between the tasks' picks.
    for id in 1..=3 {
        tokio::task::yield_now().await;
        feed.send(Ok(Change::Insert(id, Backend(id)))).unwrap();
    }
    tokio::task::yield_now().await;
    feed.send(Ok(Change::Remove(0))).unwrap();
    let mut all = HashSet::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all, HashSet::from([0, 1, 2, 3]), "every endpoint served");
    // Once 0's removal is published, no pick returns it.
    for _ in 0..50 {
        let picked = handle.pick(PickInfo::none()).await.unwrap();
        assert_ne!(picked.service().0, 0);
    }
}

/// A backend whose readiness the test switches, waking the balancer.
#[derive(Clone, Debug, Default)]
struct Switched {
    mode: Arc<Mutex<Mode>>,
    waker: Arc<AtomicWaker>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Mode {
    #[default]
    Pending,
    Ready,
    Failing,
}

impl Switched {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        self.waker.wake();
    }
}

impl Service<()> for Switched {
    type Response = ();
    type Error = &'static str;
    type Future = std::future::Ready<Result<(), &'static str>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        self.waker.register(cx.waker());
        match *self.mode.lock().unwrap() {
            Mode::Pending => Poll::Pending,
            Mode::Ready => Poll::Ready(Ok(())),
            Mode::Failing => Poll::Ready(Err("refused")),
        }
    }
    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

fn run_switched(mut balance: Balance<Fed<Switched>, ()>) {
    tokio::spawn(std::future::poll_fn(move |cx| balance.poll_events(cx)));
}

#[tokio::test(start_paused = true)]
async fn a_queued_pick_is_woken_by_the_next_picker() {
    let (feed, discover) = fed();
    let backend = Switched::default();
    feed.send(Ok(Change::Insert(1, backend.clone()))).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    let handle = balance.handle();
    run_switched(balance);
    // CONNECTING (Pending): the pick queues, its waker registered.
    let mut pick = tokio_test::task::spawn(handle.pick(PickInfo::none()));
    assert!(pick.poll().is_pending());
    tokio::task::yield_now().await;
    assert!(pick.poll().is_pending());
    assert_eq!(handle.state(), ConnectivityState::Connecting);
    // READY: the balancer publishes a picker and wakes the queued pick.
    backend.set(Mode::Ready);
    while !pick.is_woken() {
        tokio::task::yield_now().await;
    }
    assert!(matches!(pick.poll(), Poll::Ready(Ok(_))));
}

#[tokio::test(start_paused = true)]
async fn a_handle_pick_on_an_idle_ring_hash_connects_an_endpoint() {
    // ring_hash connects nothing before a pick lands (its children are
    // lazy): it is IDLE until a handle's queued pick reaches the balancer.
    let (feed, discover) = fed();
    for id in 0..3 {
        feed.send(Ok(Change::Insert(id, Backend(id)))).unwrap();
    }
    let config = crate::tree::RingHashConfig::default().validate().unwrap();
    let mut balance = Balance::new(discover, crate::tree::RingHash::new(config));
    let handle = balance.handle();
    run(balance);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        handle.state(),
        ConnectivityState::Idle,
        "IDLE without calls"
    );
    let picked = handle.pick(PickInfo::none()).await.unwrap();
    assert!(picked.service().0 < 3);
    assert_eq!(handle.state(), ConnectivityState::Ready);
}

#[tokio::test(start_paused = true)]
async fn a_fail_fast_pick_fails_and_a_wait_for_ready_one_waits_for_recovery() {
    let (feed, discover) = fed();
    let backend = Switched::default();
    backend.set(Mode::Failing);
    feed.send(Ok(Change::Insert(1, backend.clone()))).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    let handle = balance.handle();
    run_switched(balance);
    while handle.state() != ConnectivityState::TransientFailure {
        tokio::task::yield_now().await;
    }
    let error = handle.pick(PickInfo::none()).await.unwrap_err();
    let unavailable = error
        .downcast_ref::<super::error::Unavailable>()
        .expect("fail-fast: UNAVAILABLE");
    assert!(unavailable.to_string().contains("refused"), "{unavailable}");
    let mut waiting = tokio_test::task::spawn(handle.pick(PickInfo::none()).wait_for_ready(true));
    assert!(waiting.poll().is_pending());
    // The backend recovers; after its backoff the endpoint is READY again.
    backend.set(Mode::Ready);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(waiting.is_woken());
    assert!(matches!(waiting.poll(), Poll::Ready(Ok(_))));
}

#[tokio::test]
async fn picks_end_when_the_balancer_is_dropped_or_discovery_ends_empty() {
    let (feed, discover) = fed::<Backend>();
    let mut balance = Balance::new(discover, RoundRobin::new());
    let handle = balance.handle();
    // Nothing discovered yet: a pick waits.
    let mut waiting = tokio_test::task::spawn(handle.pick(PickInfo::none()));
    assert!(waiting.poll().is_pending());
    drop(feed); // discovery ends with no endpoints
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(balance.poll_events(&mut cx).is_ready());
    assert!(waiting.is_woken());
    let error = match waiting.poll() {
        Poll::Ready(Err(error)) => error,
        other => panic!("{other:?}"),
    };
    assert!(error.is::<super::error::DiscoverClosed>(), "{error}");
    drop(balance);
    let error = handle.pick(PickInfo::none()).await.unwrap_err();
    // Closed by the end of discovery first; that stays the cause.
    assert!(error.is::<super::error::DiscoverClosed>(), "{error}");
}
