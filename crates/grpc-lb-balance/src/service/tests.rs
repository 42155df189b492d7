use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use grpc_lb_core::ConnectivityState;
use tokio::sync::mpsc;
use tower::discover::Change;
use tower::{Service, ServiceExt};

use super::Balance;
use crate::tree::{LeastRequest, PickFirst, RoundRobin};

type Discovered<S> = Result<Change<&'static str, S>, Infallible>;

/// A discover the test feeds by hand.
fn channel<S>() -> (
    mpsc::UnboundedSender<Discovered<S>>,
    tokio_stream_like::Receiver<Discovered<S>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio_stream_like::Receiver(rx))
}

mod tokio_stream_like {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(super) struct Receiver<T>(pub(super) tokio::sync::mpsc::UnboundedReceiver<T>);

    impl<T> futures::Stream for Receiver<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

/// A service answering its name, counting how often it is polled.
fn named(
    name: &'static str,
    polls: Arc<AtomicUsize>,
) -> impl Service<
    (),
    Response = &'static str,
    Error = Infallible,
    Future = std::future::Ready<Result<&'static str, Infallible>>,
> {
    struct Named(&'static str, Arc<AtomicUsize>);
    impl Service<()> for Named {
        type Response = &'static str;
        type Error = Infallible;
        type Future = std::future::Ready<Result<&'static str, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(Ok(self.0))
        }
    }
    Named(name, polls)
}

#[tokio::test]
async fn round_robin_over_user_keys_visits_each_in_turn() {
    let (tx, discover) = channel();
    let polls = Arc::new(AtomicUsize::new(0));
    for name in ["a", "b", "c"] {
        tx.send(Ok(Change::Insert(name, named(name, polls.clone()))))
            .unwrap();
    }
    let mut balance = Balance::new(discover, RoundRobin::new());
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(balance.ready().await.unwrap().call(()).await.unwrap());
    }
    assert_eq!(balance.state(), ConnectivityState::Ready);
    assert_eq!(&seen[..3], &seen[3..]);
    let mut first = seen[..3].to_vec();
    first.sort();
    assert_eq!(first, ["a", "b", "c"]);
}

#[tokio::test]
async fn pick_first_uses_the_first_and_never_polls_the_others() {
    let (tx, discover) = channel();
    let (a_polls, b_polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    tx.send(Ok(Change::Insert("a", named("a", a_polls.clone()))))
        .unwrap();
    tx.send(Ok(Change::Insert("b", named("b", b_polls.clone()))))
        .unwrap();
    let mut balance = Balance::new(discover, PickFirst::new());
    for _ in 0..3 {
        assert_eq!(balance.ready().await.unwrap().call(()).await.unwrap(), "a");
    }
    assert!(a_polls.load(Ordering::Relaxed) > 0);
    assert_eq!(b_polls.load(Ordering::Relaxed), 0);
    // Removing "a" moves pick_first to "b".
    tx.send(Ok(Change::Remove("a"))).unwrap();
    assert_eq!(balance.ready().await.unwrap().call(()).await.unwrap(), "b");
}

#[tokio::test]
async fn an_event_polls_only_the_endpoint_that_woke() {
    let (tx, discover) = channel();
    let counters: Vec<Arc<AtomicUsize>> = (0..100).map(|_| Arc::default()).collect();
    let keys: Vec<&'static str> = (0..100)
        .map(|i| &*Box::leak(format!("e{i}").into_boxed_str()))
        .collect();
    for (key, polls) in keys.iter().zip(&counters) {
        tx.send(Ok(Change::Insert(*key, named("x", polls.clone()))))
            .unwrap();
    }
    let mut balance = Balance::new(discover, RoundRobin::new());
    balance.ready().await.unwrap();
    let total = |c: &[Arc<AtomicUsize>]| c.iter().map(|p| p.load(Ordering::Relaxed)).sum::<usize>();
    let before = total(&counters);
    // One call: the reserved endpoint is checked and re-polled, nobody else.
    balance.call(()).await.unwrap();
    balance.ready().await.unwrap();
    let after = total(&counters);
    assert!(after - before <= 4, "{before} -> {after}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_service_is_kept_and_retried_not_evicted() {
    let (tx, discover) = channel();
    let (service, mut handle) = tower_test::mock::pair::<(), &'static str>();
    tx.send(Ok(Change::Insert("flaky", service))).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    handle.send_error("refused");
    let mut ready = tokio_test::task::spawn(());
    let poll = ready.enter(|cx, _| balance.poll_ready(cx));
    assert!(
        poll.is_pending(),
        "an endpoint failure is not a poll_ready error"
    );
    assert_eq!(balance.state(), ConnectivityState::TransientFailure);
    let error = balance.connectivity().borrow().last_error.clone().unwrap();
    assert_eq!(error.to_string(), "refused");
    // After the backoff the endpoint is polled again and serves.
    handle.allow(1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ready.is_woken());
    let poll = ready.enter(|cx, _| balance.poll_ready(cx));
    assert!(matches!(poll, Poll::Ready(Ok(()))));
    assert_eq!(balance.state(), ConnectivityState::Ready);
    let response = balance.call(());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response("ok");
    assert_eq!(response.await.unwrap(), "ok");
}

#[tokio::test]
async fn a_pending_endpoint_is_backpressure_and_wakes_the_caller() {
    let (tx, discover) = channel();
    let (service, mut handle) = tower_test::mock::pair::<(), &'static str>();
    tx.send(Ok(Change::Insert("only", service))).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    handle.allow(0);
    let mut ready = tokio_test::task::spawn(());
    assert!(ready.enter(|cx, _| balance.poll_ready(cx)).is_pending());
    assert_eq!(balance.state(), ConnectivityState::Connecting);
    handle.allow(1);
    assert!(
        ready.is_woken(),
        "the endpoint's readiness wakes the balancer's caller"
    );
    assert!(matches!(
        ready.enter(|cx, _| balance.poll_ready(cx)),
        Poll::Ready(Ok(()))
    ));
}

#[tokio::test]
async fn discovery_ending_empty_is_an_error_not_a_hang() {
    let (tx, discover) = channel::<tower_test::mock::Mock<(), ()>>();
    drop(tx);
    let mut balance = Balance::new(discover, RoundRobin::new());
    let error = balance.ready().await.unwrap_err();
    assert!(error.is::<super::error::DiscoverClosed>());
}

#[tokio::test]
async fn least_request_counts_calls_until_done() {
    let (tx, discover) = channel();
    let (service, mut handle) = tower_test::mock::pair::<(), &'static str>();
    tx.send(Ok(Change::Insert("only", service))).unwrap();
    let mut balance = Balance::new(discover, LeastRequest::default());
    handle.allow(2);
    let call = balance.ready().await.unwrap().call(());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response("ok");
    call.await.unwrap();
    // Driven once more with no traffic: events are handled by poll_events.
    let mut cx = Context::from_waker(Waker::noop());
    let _ = balance.poll_events(&mut cx);
    assert_eq!(balance.state(), ConnectivityState::Ready);
}

/// A round_robin that hands every pick a recording done callback.
#[derive(Debug)]
struct Recording {
    inner: RoundRobin,
    done: Arc<Outcomes>,
}

#[derive(Debug, Default)]
struct Outcomes {
    started: AtomicUsize,
    ended: std::sync::Mutex<Vec<String>>,
}

impl crate::tree::OnDone for Outcomes {
    fn on_start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }
    fn on_done(&self, info: &crate::tree::DoneInfo<'_>) {
        let outcome = match info.outcome {
            crate::tree::Outcome::Ok => "ok".to_owned(),
            crate::tree::Outcome::Status { code, message } => format!("{code} {message}"),
            crate::tree::Outcome::Error(error) => format!("error {error}"),
            crate::tree::Outcome::Cancelled => "cancelled".to_owned(),
        };
        self.ended.lock().unwrap().push(outcome);
    }
}

/// The child's picker, handing every pick the recording callback.
#[derive(Debug)]
struct RecordingPicker {
    child: Arc<dyn crate::tree::Picker>,
    done: Arc<Outcomes>,
}

impl crate::tree::Picker for RecordingPicker {
    fn pick(&self, info: &crate::tree::PickInfo<'_>) -> crate::tree::PickResult {
        match self.child.pick(info) {
            crate::tree::PickResult::Pick(pick) => crate::tree::PickResult::Pick(
                crate::tree::Pick::with_done(pick.subchannel(), self.done.clone()),
            ),
            other => other,
        }
    }
}

impl Recording {
    fn on_inner(
        &mut self,
        h: &mut dyn crate::tree::Helper,
        event: impl FnOnce(&mut RoundRobin, &mut dyn crate::tree::Helper),
    ) {
        let done = self.done.clone();
        let mut h = crate::tree::WrappingHelper::new(h, move |_, child| {
            Arc::new(RecordingPicker {
                child,
                done: done.clone(),
            }) as Arc<dyn crate::tree::Picker>
        });
        event(&mut self.inner, &mut h)
    }
}

impl crate::tree::Policy for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn add_endpoint(&mut self, e: crate::tree::Endpoint<'_>, h: &mut dyn crate::tree::Helper) {
        self.on_inner(h, |inner, h| inner.add_endpoint(e, h))
    }
    fn remove_endpoint(&mut self, e: crate::tree::EndpointId, h: &mut dyn crate::tree::Helper) {
        self.on_inner(h, |inner, h| inner.remove_endpoint(e, h))
    }
    fn subchannel_state(
        &mut self,
        id: crate::tree::SubchannelId,
        state: &grpc_lb_core::Connectivity,
        h: &mut dyn crate::tree::Helper,
    ) {
        self.on_inner(h, |inner, h| inner.subchannel_state(id, state, h))
    }
    fn exit_idle(&mut self, h: &mut dyn crate::tree::Helper) {
        self.on_inner(h, |inner, h| inner.exit_idle(h))
    }
}

#[tokio::test]
async fn done_sees_the_status_in_the_trailers_not_the_headers() {
    // Issue 13, defect 5: a call counted as finished at its response headers,
    // and a failure status in the trailers counted as a success.
    use http_body_util::{BodyExt, StreamBody};
    type Frames = futures::stream::Iter<
        std::vec::IntoIter<Result<http_body::Frame<bytes::Bytes>, Infallible>>,
    >;
    let (tx, discover) = channel();
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<()>, http::Response<StreamBody<Frames>>>();
    tx.send(Ok(Change::Insert("only", service))).unwrap();
    let outcomes = Arc::new(Outcomes::default());
    let policy = Recording {
        inner: RoundRobin::new(),
        done: outcomes.clone(),
    };
    let mut balance = Balance::new(discover, policy).http();
    handle.allow(1);
    let call = balance.ready().await.unwrap().call(http::Request::new(()));
    let (_, reply) = handle.next_request().await.unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "14".parse().unwrap());
    trailers.insert("grpc-message", "backend gone".parse().unwrap());
    let frames = vec![
        Ok(http_body::Frame::data(bytes::Bytes::from_static(b"x"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    reply.send_response(http::Response::new(StreamBody::new(futures::stream::iter(
        frames,
    ))));
    let response = call.await.unwrap();
    assert_eq!(outcomes.started.load(Ordering::Relaxed), 1);
    assert!(
        outcomes.ended.lock().unwrap().is_empty(),
        "not done at the headers"
    );
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(*outcomes.ended.lock().unwrap(), ["14 backend gone"]);
}

#[tokio::test]
async fn done_hears_of_a_dropped_body_as_cancelled() {
    let (tx, discover) = channel();
    let (service, mut handle) = tower_test::mock::pair::<
        http::Request<()>,
        http::Response<http_body_util::Full<bytes::Bytes>>,
    >();
    tx.send(Ok(Change::Insert("only", service))).unwrap();
    let outcomes = Arc::new(Outcomes::default());
    let policy = Recording {
        inner: RoundRobin::new(),
        done: outcomes.clone(),
    };
    let mut balance = Balance::new(discover, policy).http();
    handle.allow(1);
    let call = balance.ready().await.unwrap().call(http::Request::new(()));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(http::Response::new(http_body_util::Full::new(
        bytes::Bytes::from_static(b"x"),
    )));
    drop(call.await.unwrap());
    assert_eq!(*outcomes.ended.lock().unwrap(), ["cancelled"]);
}

#[test]
fn balance_and_its_future_are_send() {
    fn send<T: Send>() {}
    type Mocks = tokio_stream_like::Receiver<Discovered<tower_test::mock::Mock<(), ()>>>;
    send::<Balance<Mocks, ()>>();
    send::<<Balance<Mocks, ()> as Service<()>>::Future>();
}

/// A policy that records every subchannel event it is given.
#[derive(Debug, Default)]
struct Log {
    inner: RoundRobin,
    seen: Arc<std::sync::Mutex<Vec<ConnectivityState>>>,
}

impl crate::tree::Policy for Log {
    fn name(&self) -> &str {
        "log"
    }
    fn add_endpoint(&mut self, e: crate::tree::Endpoint<'_>, h: &mut dyn crate::tree::Helper) {
        self.inner.add_endpoint(e, h)
    }
    fn remove_endpoint(&mut self, e: crate::tree::EndpointId, h: &mut dyn crate::tree::Helper) {
        self.inner.remove_endpoint(e, h)
    }
    fn subchannel_state(
        &mut self,
        id: crate::tree::SubchannelId,
        state: &grpc_lb_core::Connectivity,
        h: &mut dyn crate::tree::Helper,
    ) {
        self.seen.lock().unwrap().push(state.state);
        self.inner.subchannel_state(id, state, h)
    }
    fn exit_idle(&mut self, h: &mut dyn crate::tree::Helper) {
        self.inner.exit_idle(h)
    }
}

#[tokio::test(start_paused = true)]
async fn each_state_change_reaches_the_policy_once_and_in_order() {
    let (tx, discover) = channel();
    let (service, mut handle) = tower_test::mock::pair::<(), &'static str>();
    tx.send(Ok(Change::Insert("only", service))).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let policy = Log {
        inner: RoundRobin::new(),
        seen: seen.clone(),
    };
    let mut balance = Balance::new(discover, policy);
    let mut task = tokio_test::task::spawn(());
    let mut events = |balance: &mut Balance<_, ()>| {
        task.enter(|cx, _| {
            let _ = balance.poll_events(cx);
            // Woken again: polling more finds nothing new.
            let _ = balance.poll_events(cx);
        })
    };
    handle.allow(0);
    events(&mut balance); // CONNECTING: Pending
    handle.allow(1);
    events(&mut balance); // READY
    events(&mut balance); // nothing new: no event
    handle.send_error("reset");
    // The error shows at the next poll of the endpoint, after a call.
    let mut ready = tokio_test::task::spawn(());
    let _ = ready.enter(|cx, _| balance.poll_ready(cx));
    events(&mut balance);
    handle.allow(1);
    tokio::time::sleep(Duration::from_secs(2)).await; // the retry backoff
    events(&mut balance); // READY again
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ConnectivityState::Connecting,
            ConnectivityState::Ready,
            ConnectivityState::TransientFailure,
            ConnectivityState::Ready
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn pick_first_re_resolves_through_its_subchannels() {
    use grpc_lb_core::ResolveNow;
    use grpc_lb_reconnect::{Reconnect, ReconnectConfig};
    let signal = ResolveNow::new();
    let refusing = tower::service_fn(|_: &'static str| async {
        Err::<tower_test::mock::Mock<(), ()>, _>(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))
    });
    let config = ReconnectConfig::default().resolve_now(signal.clone());
    let (tx, discover) = channel();
    tx.send(Ok(Change::Insert(
        "only",
        Reconnect::with_config(refusing, "only", config),
    )))
    .unwrap();
    let mut balance = Balance::new(discover, PickFirst::new()).subchannels();
    let mut task = tokio_test::task::spawn(());
    while balance.state() != ConnectivityState::TransientFailure {
        assert!(task.enter(|cx, _| balance.poll_ready(cx)).is_pending());
        tokio::task::yield_now().await;
    }
    // Once by the subchannel for its failed attempt, once by pick_first at
    // the end of its first pass, through the subchannel.
    assert_eq!(signal.count(), 2);
}

#[tokio::test]
async fn choosing_the_probe_after_discovery_keeps_the_endpoints() {
    let (tx, discover) = channel();
    let polls = Arc::new(AtomicUsize::new(0));
    tx.send(Ok(Change::Insert("a", named("a", polls.clone()))))
        .unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    assert_eq!(balance.ready().await.unwrap().call(()).await.unwrap(), "a");
    // The other probe, chosen late: the endpoint stays, with its id.
    let mut balance = balance.with_types::<super::ByReadiness>();
    assert_eq!(balance.len(), 1);
    assert_eq!(balance.ready().await.unwrap().call(()).await.unwrap(), "a");
}

#[tokio::test]
async fn a_busy_endpoint_is_skipped_for_a_ready_one_at_once() {
    let (tx, discover) = channel();
    let (a, mut a_handle) = tower_test::mock::pair::<(), &'static str>();
    let (b, mut b_handle) = tower_test::mock::pair::<(), &'static str>();
    tx.send(Ok(Change::Insert("a", a))).unwrap();
    tx.send(Ok(Change::Insert("b", b))).unwrap();
    let mut balance = Balance::new(discover, RoundRobin::new());
    a_handle.allow(1);
    b_handle.allow(10);
    // No wakeup is needed between calls while some endpoint has capacity:
    // once "a" has taken its one call it is Pending, and "b" is picked.
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..4 {
        assert!(matches!(balance.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        drop(balance.call(()));
    }
}

#[tokio::test]
async fn switch_policy_hands_over_and_drops_what_the_new_one_does_not_want() {
    let (tx, discover) = channel();
    let polls = Arc::new(AtomicUsize::new(0));
    for name in ["a", "b"] {
        tx.send(Ok(Change::Insert(name, named(name, polls.clone()))))
            .unwrap();
    }
    let mut balance = Balance::new(discover, RoundRobin::new());
    let mut seen = names(&mut balance, 4).await;
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);

    // To pick_first: it learns both endpoints, finds "a" READY, takes over,
    // and "b", which only round_robin wanted, is disconnected.
    balance.switch_policy(PickFirst::new());
    assert_eq!(balance.policy().name(), "pick_first");
    assert_eq!(names(&mut balance, 3).await, ["a", "a", "a"]);
    let b = balance.endpoints().find(|(key, _)| **key == "b").unwrap().1;
    assert_eq!(b, ConnectivityState::Idle);

    // And back: round_robin connects "b" again while pick_first serves.
    balance.switch_policy(RoundRobin::new());
    let mut seen = names(&mut balance, 4).await;
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
}

async fn names<B>(balance: &mut B, calls: usize) -> Vec<&'static str>
where
    B: Service<(), Response = &'static str>,
    B::Error: std::fmt::Debug,
{
    let mut names = Vec::new();
    for _ in 0..calls {
        names.push(balance.ready().await.unwrap().call(()).await.unwrap());
    }
    names
}
