//! State-machine tests on tower-test mocks and tokio's paused clock.

use std::time::Duration;

use grpc_lb_backoff::{BackoffConfig, FixedRng};
use grpc_lb_core::{ConnectivityState, ResolveNow};
use tokio_test::task;
use tower_test::mock;

use super::*;

type Conn = mock::Mock<&'static str, &'static str>;
type ConnHandle = mock::Handle<&'static str, &'static str>;
type Subchannel = Reconnect<mock::Mock<&'static str, Conn>, &'static str, FixedRng>;

const BASE: Duration = Duration::from_millis(100);

/// Base 100 ms, ×2, no jitter, 1 s cap, 300 ms minimum connect timeout.
fn backoff() -> BackoffConfig {
    BackoffConfig::try_new(
        BASE,
        2.0,
        0.0,
        Duration::from_secs(1),
        Duration::from_millis(300),
    )
    .unwrap()
}

fn subchannel(
    mode: ConnectMode,
) -> (
    task::Spawn<Subchannel>,
    mock::Handle<&'static str, Conn>,
    ResolveNow,
) {
    let (connector, handle) = mock::pair::<&'static str, Conn>();
    let resolve_now = ResolveNow::new();
    let config = ReconnectConfig::default()
        .backoff(backoff())
        .mode(mode)
        .resolve_now(resolve_now.clone());
    let reconnect = Reconnect::with_config_and_rng(connector, "backend", config, FixedRng(0.5));
    (task::spawn(reconnect), handle, resolve_now)
}

fn poll_ready(svc: &mut task::Spawn<Subchannel>) -> Poll<Result<(), BoxError>> {
    svc.enter(|cx, mut svc| Service::<&'static str>::poll_ready(&mut *svc, cx))
}

fn drive(svc: &mut task::Spawn<Subchannel>) -> ConnectivityState {
    svc.enter(|cx, mut svc| svc.drive::<&'static str>(cx))
}

fn state(svc: &task::Spawn<Subchannel>) -> ConnectivityState {
    svc.state()
}

async fn accept_connection(connector: &mut mock::Handle<&'static str, Conn>) -> ConnHandle {
    let (target, respond) = connector.next_request().await.expect("a connect attempt");
    assert_eq!(target, "backend");
    let (conn, conn_handle) = mock::pair();
    respond.send_response(conn);
    conn_handle
}

async fn refuse_connection(connector: &mut mock::Handle<&'static str, Conn>) {
    let (_, respond) = connector.next_request().await.expect("a connect attempt");
    respond.send_error("connection refused");
}

#[tokio::test(start_paused = true)]
async fn lazy_subchannel_connects_only_when_used() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    assert_eq!(drive(&mut svc), ConnectivityState::Idle);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(drive(&mut svc), ConnectivityState::Idle);
    assert_eq!(svc.handle().connect_attempts(), 0);

    assert!(poll_ready(&mut svc).is_pending());
    assert_eq!(state(&svc), ConnectivityState::Connecting);
    let _conn = accept_connection(&mut connector).await;
    assert!(svc.is_woken());
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    assert_eq!(state(&svc), ConnectivityState::Ready);
}

#[tokio::test(start_paused = true)]
async fn failed_attempt_backs_off_without_erroring_and_grows() {
    let (mut svc, mut connector, resolve_now) = subchannel(ConnectMode::Lazy);
    let handle = svc.handle();

    assert!(poll_ready(&mut svc).is_pending());
    refuse_connection(&mut connector).await;
    // A connection failure is never a poll_ready error.
    assert!(poll_ready(&mut svc).is_pending());
    assert_eq!(state(&svc), ConnectivityState::TransientFailure);
    let cause = handle.connectivity().last_error.expect("the cause is kept");
    assert_eq!(cause.to_string(), "connection refused");
    assert_eq!(resolve_now.count(), 1);

    // Attempt 0 waits the base delay exactly; attempt 1 waits base × 2.
    for (attempt, wait) in [(1, BASE), (2, BASE * 2), (3, BASE * 4)] {
        tokio::time::sleep(wait - Duration::from_millis(1)).await;
        assert!(poll_ready(&mut svc).is_pending());
        assert_eq!(
            handle.connect_attempts(),
            attempt,
            "no attempt before the backoff ends"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(svc.is_woken(), "the end of the backoff wakes the caller");
        assert!(poll_ready(&mut svc).is_pending());
        assert_eq!(handle.connect_attempts(), attempt + 1);
        assert_eq!(state(&svc), ConnectivityState::Connecting);
        refuse_connection(&mut connector).await;
        assert!(poll_ready(&mut svc).is_pending());
        assert_eq!(state(&svc), ConnectivityState::TransientFailure);
    }
    assert_eq!(resolve_now.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn backoff_ends_in_idle_and_lazy_waits_for_use() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    assert!(poll_ready(&mut svc).is_pending());
    refuse_connection(&mut connector).await;
    assert_eq!(drive(&mut svc), ConnectivityState::TransientFailure);
    tokio::time::sleep(BASE).await;
    assert_eq!(drive(&mut svc), ConnectivityState::Idle);
    assert_eq!(svc.handle().connect_attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_backoff() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    let handle = svc.handle();
    assert!(poll_ready(&mut svc).is_pending());
    refuse_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_pending());
    tokio::time::sleep(BASE).await;
    assert!(poll_ready(&mut svc).is_pending());
    let mut conn = accept_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_ready());

    // The connection dies; the next failure waits the base delay again, not 2×base.
    conn.send_error("connection reset");
    assert!(poll_ready(&mut svc).is_pending());
    refuse_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_pending());
    assert_eq!(handle.connect_attempts(), 3);
    tokio::time::sleep(BASE).await;
    assert!(poll_ready(&mut svc).is_pending());
    assert_eq!(handle.connect_attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn lost_connection_goes_idle_and_reconnects_only_when_used() {
    let (mut svc, mut connector, resolve_now) = subchannel(ConnectMode::Lazy);
    let handle = svc.handle();
    assert!(poll_ready(&mut svc).is_pending());
    let mut conn = accept_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_ready());

    conn.send_error("connection reset by peer");
    assert_eq!(drive(&mut svc), ConnectivityState::Idle);
    let connectivity = handle.connectivity();
    assert_eq!(connectivity.state, ConnectivityState::Idle);
    assert!(connectivity
        .last_error
        .unwrap()
        .to_string()
        .contains("reset"));
    assert_eq!(resolve_now.count(), 1);

    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(drive(&mut svc), ConnectivityState::Idle);
    assert_eq!(
        handle.connect_attempts(),
        1,
        "no reconnect without a request"
    );

    assert!(poll_ready(&mut svc).is_pending());
    assert_eq!(handle.connect_attempts(), 2);
    let _conn = accept_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_ready());
}

#[tokio::test(start_paused = true)]
async fn eager_subchannel_reconnects_when_driven() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Eager);
    assert_eq!(drive(&mut svc), ConnectivityState::Connecting);
    let mut conn = accept_connection(&mut connector).await;
    assert_eq!(drive(&mut svc), ConnectivityState::Ready);

    conn.send_error("goaway");
    assert_eq!(drive(&mut svc), ConnectivityState::Connecting);
    refuse_connection(&mut connector).await;
    assert_eq!(drive(&mut svc), ConnectivityState::TransientFailure);
    tokio::time::sleep(BASE).await;
    assert!(svc.is_woken());
    assert_eq!(drive(&mut svc), ConnectivityState::Connecting);
}

#[tokio::test(start_paused = true)]
async fn attempt_is_bounded_by_the_min_connect_timeout() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    let handle = svc.handle();
    assert!(poll_ready(&mut svc).is_pending());
    let (_target, _never_answered) = connector.next_request().await.unwrap();

    tokio::time::sleep(Duration::from_millis(299)).await;
    assert_eq!(drive(&mut svc), ConnectivityState::Connecting);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(svc.is_woken());
    assert_eq!(drive(&mut svc), ConnectivityState::TransientFailure);
    let error = handle.connectivity().last_error.unwrap();
    assert!(error.is::<ConnectTimeout>(), "got {error}");
    assert_eq!(
        error.to_string(),
        "connection attempt timed out after 300ms"
    );
}

#[tokio::test(start_paused = true)]
async fn reset_backoff_reconnects_at_once() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    let handle = svc.handle();
    assert!(poll_ready(&mut svc).is_pending());
    refuse_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_pending());
    assert_eq!(state(&svc), ConnectivityState::TransientFailure);

    handle.reset_backoff();
    assert!(svc.is_woken(), "the handle wakes the task that polled last");
    assert_eq!(drive(&mut svc), ConnectivityState::Connecting);
    assert_eq!(handle.connect_attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn connect_from_the_handle_leaves_idle() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    let handle = svc.handle();
    assert_eq!(drive(&mut svc), ConnectivityState::Idle);
    handle.connect();
    assert!(svc.is_woken());
    assert_eq!(drive(&mut svc), ConnectivityState::Connecting);
    let _conn = accept_connection(&mut connector).await;
    assert_eq!(drive(&mut svc), ConnectivityState::Ready);
}

#[tokio::test(start_paused = true)]
async fn watchers_see_the_sequence_and_shutdown() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    let handle = svc.handle();
    let mut states = Vec::new();
    let mut watch = handle.watch();

    assert!(poll_ready(&mut svc).is_pending());
    states.push(watch.borrow_and_update().state);
    let mut conn = accept_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_ready());
    states.push(watch.borrow_and_update().state);
    conn.send_error("closed");
    assert!(poll_ready(&mut svc).is_pending());
    // The loss and the new attempt happen in one poll; the watch keeps the last.
    states.push(watch.borrow_and_update().state);
    let _conn = accept_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_ready());
    states.push(watch.borrow_and_update().state);
    drop(svc);
    states.push(watch.borrow_and_update().state);

    use ConnectivityState::*;
    assert_eq!(states, [Connecting, Ready, Connecting, Ready, Shutdown]);
}

#[tokio::test(start_paused = true)]
async fn call_before_ready_is_an_error_not_a_panic() {
    let (mut svc, _connector, _) = subchannel(ConnectMode::Lazy);
    let response = svc.enter(|_, mut svc| Service::<&'static str>::call(&mut *svc, "hello"));
    let error = response.await.unwrap_err();
    assert!(error.is::<crate::error::NotReady>());
}

#[tokio::test(start_paused = true)]
async fn requests_reach_the_connection() {
    let (mut svc, mut connector, _) = subchannel(ConnectMode::Lazy);
    assert!(poll_ready(&mut svc).is_pending());
    let mut conn = accept_connection(&mut connector).await;
    assert!(poll_ready(&mut svc).is_ready());
    let response = svc.enter(|_, mut svc| Service::<&'static str>::call(&mut *svc, "hello"));
    let (request, respond) = conn.next_request().await.unwrap();
    assert_eq!(request, "hello");
    respond.send_response("world");
    assert_eq!(response.await.unwrap(), "world");
}
