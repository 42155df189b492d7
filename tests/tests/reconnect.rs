//! The seed scenario against a real tonic server process on loopback: a client
//! whose server goes away and comes back recovers by itself, with reconnect
//! attempts spaced by the gRPC connection backoff.

use std::future::poll_fn;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use grpc_lb_backoff::BackoffConfig;
use grpc_lb_connect::Http2Connector;
use grpc_lb_core::ConnectivityState;
use grpc_lb_failfast::FailFast;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_reconnect::{Reconnect, ReconnectConfig, SubchannelHandle};
use integration_tests::GreeterProcess;
use tokio::time::{timeout, Instant};
use tower::Service;

type Body = tonic::body::Body;
type Request = http::Request<Body>;
type Subchannel<C> = Reconnect<C, SocketAddr>;

const SERVER: &str = env!("CARGO_BIN_EXE_test-greeter-server");
/// A guard against hangs: no wait in these tests should come near it.
const LIMIT: Duration = Duration::from_secs(20);

fn backoff(base_ms: u64, jitter: f64, min_connect_timeout_ms: u64) -> BackoffConfig {
    BackoffConfig::try_new(
        Duration::from_millis(base_ms),
        1.6,
        jitter,
        Duration::from_millis(base_ms.max(5000)),
        Duration::from_millis(min_connect_timeout_ms),
    )
    .expect("valid backoff")
}

fn subchannel<C>(connector: C, addr: SocketAddr, backoff: BackoffConfig) -> Subchannel<C>
where
    C: Service<SocketAddr>,
{
    Reconnect::with_config(connector, addr, ReconnectConfig::default().backoff(backoff))
}

async fn say_hello<S, B>(stack: &mut S) -> Result<String, tonic::Status>
where
    S: Service<Request, Response = http::Response<B>>,
    S::Error: Into<grpc_lb_core::BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<grpc_lb_core::BoxError> + Send,
{
    let mut client = GreeterClient::new(stack);
    let request = HelloRequest {
        name: "test".into(),
    };
    let reply = timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call finishes");
    reply.map(|r| r.into_inner().message)
}

/// Drives the subchannel, as a balancer would, without asking for a connection,
/// until it reaches `want`.
async fn drive_until<C>(subchannel: &mut Subchannel<C>, want: ConnectivityState)
where
    C: Service<SocketAddr>,
    C::Error: Into<grpc_lb_core::BoxError>,
    C::Response: Service<Request>,
    <C::Response as Service<Request>>::Error: Into<grpc_lb_core::BoxError>,
{
    let reached = poll_fn(|cx| {
        if subchannel.drive::<Request>(cx) == want {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    timeout(LIMIT, reached)
        .await
        .unwrap_or_else(|_| panic!("subchannel never reached {want}"));
}

#[tokio::test]
async fn server_restart_recovers_on_the_same_client() {
    let mut server = GreeterProcess::start(SERVER, "127.0.0.1:0", "alpha");
    let addr = server.addr();
    let reconnect = subchannel(Http2Connector::<Body>::new(), addr, backoff(50, 0.2, 1000));
    let handle: SubchannelHandle = reconnect.handle();
    let mut stack = FailFast::new(reconnect, handle.watch());

    assert_eq!(
        say_hello(&mut stack).await.unwrap(),
        "Hello test from alpha"
    );
    assert_eq!(handle.connect_attempts(), 1);

    server.kill();
    // The loss is noticed with no call in flight: READY → IDLE.
    drive_until(stack.get_mut(), ConnectivityState::Idle).await;
    let cause = handle
        .connectivity()
        .last_error
        .expect("the loss has a cause");
    assert!(cause.to_string().contains(&addr.to_string()), "{cause}");

    // Lazy: even driven continuously, an idle subchannel makes no attempt until a
    // call comes. Ten base backoffs is far longer than an eager reconnect takes.
    let eager_reconnect = timeout(
        Duration::from_millis(500),
        drive_until(stack.get_mut(), ConnectivityState::Connecting),
    )
    .await;
    assert!(eager_reconnect.is_err(), "reconnected without a call");
    assert_eq!(handle.connect_attempts(), 1);

    // A fail-fast call now fails with UNAVAILABLE naming the cause.
    let status = say_hello(&mut stack).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("connect to {addr} failed"))
            && status.message().contains("refused"),
        "{}",
        status.message()
    );
    assert_eq!(handle.state(), ConnectivityState::TransientFailure);
    assert_eq!(handle.connect_attempts(), 2);

    server.restart();
    // The backoff runs out (TRANSIENT_FAILURE → IDLE); the next call reconnects.
    drive_until(stack.get_mut(), ConnectivityState::Idle).await;
    assert_eq!(
        say_hello(&mut stack).await.unwrap(),
        "Hello test from alpha"
    );
    assert_eq!(handle.state(), ConnectivityState::Ready);
    assert_eq!(handle.connect_attempts(), 3);
}

#[tokio::test]
async fn reset_backoff_lets_the_next_call_through_at_once() {
    let mut server = GreeterProcess::start(SERVER, "127.0.0.1:0", "beta");
    // A long backoff: only reset_backoff can end it within the test.
    let reconnect = subchannel(
        Http2Connector::<Body>::new(),
        server.addr(),
        backoff(60_000, 0.0, 1000),
    );
    let handle = reconnect.handle();
    let mut stack = FailFast::new(reconnect, handle.watch());
    say_hello(&mut stack).await.unwrap();

    server.kill();
    drive_until(stack.get_mut(), ConnectivityState::Idle).await;
    let status = say_hello(&mut stack).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(handle.state(), ConnectivityState::TransientFailure);
    server.restart();
    assert_eq!(
        say_hello(&mut stack).await.unwrap_err().code(),
        tonic::Code::Unavailable,
        "still backing off"
    );

    handle.reset_backoff();
    assert_eq!(say_hello(&mut stack).await.unwrap(), "Hello test from beta");
}

/// A connector that records when each attempt starts.
fn recording_connector(
    times: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<
    SocketAddr,
    Response = grpc_lb_connect::Http2Connection<Body>,
    Error = grpc_lb_connect::error::ConnectError,
    Future = impl Send,
> + Clone {
    let connector = Http2Connector::<Body>::new();
    tower::service_fn(move |addr: SocketAddr| {
        times.lock().unwrap().push(Instant::now());
        let mut connector = connector.clone();
        async move { connector.call(addr).await }
    })
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Asks for a connection until `count` attempts have started, and returns the gaps
/// between their starts.
async fn attempt_gaps(backoff: BackoffConfig, count: usize) -> Vec<Duration> {
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut reconnect = subchannel(recording_connector(times.clone()), closed_port(), backoff);
    let attempts = poll_fn(|cx| {
        assert!(Service::<Request>::poll_ready(&mut reconnect, cx).is_pending());
        if times.lock().unwrap().len() >= count {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    timeout(LIMIT, attempts).await.expect("attempts continue");
    let times = times.lock().unwrap();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Timers never fire early; a loaded machine can make them late.
const LATE: Duration = Duration::from_millis(150);

#[tokio::test]
async fn attempts_follow_the_backoff_schedule() {
    let gaps = attempt_gaps(backoff(100, 0.0, 1000), 6).await;
    let nominal = [100.0, 160.0, 256.0, 409.6, 655.36];
    for (gap, expected) in gaps.iter().zip(nominal) {
        let expected = Duration::from_secs_f64(expected / 1000.0);
        assert!(
            *gap + Duration::from_millis(1) >= expected && *gap <= expected + LATE,
            "gaps {gaps:?} do not follow {nominal:?} ms"
        );
    }
}

#[tokio::test]
async fn jittered_attempts_stay_within_twenty_percent() {
    let gaps = attempt_gaps(backoff(100, 0.2, 1000), 6).await;
    // The first retry waits the base delay exactly; jitter applies from then on.
    assert!(gaps[0] + Duration::from_millis(1) >= Duration::from_millis(100));
    assert!(gaps[0] <= Duration::from_millis(100) + LATE);
    let nominal = [100.0, 160.0, 256.0, 409.6, 655.36];
    for (gap, expected) in gaps.iter().zip(nominal).skip(1) {
        let low = Duration::from_secs_f64(expected * 0.8 / 1000.0);
        let high = Duration::from_secs_f64(expected * 1.2 / 1000.0) + LATE;
        assert!(
            *gap + Duration::from_millis(1) >= low && *gap <= high,
            "gaps {gaps:?} outside ±20% of {nominal:?} ms"
        );
    }
}

/// A TCP server that accepts connections and never speaks, or hangs up at once.
fn silent_server(hang_up: bool) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().flatten() {
            *count.lock().unwrap() += 1;
            if !hang_up {
                open.push(stream);
            }
        }
    });
    (addr, accepted)
}

// grpc-go: TestDialWaitsForServerSettings / BackoffWhenNoServerPrefaceReceived.
#[tokio::test]
async fn silent_server_is_a_failed_attempt_bounded_by_the_connect_timeout() {
    let (addr, accepted) = silent_server(false);
    let mut reconnect = subchannel(Http2Connector::<Body>::new(), addr, backoff(50, 0.0, 300));
    let handle = reconnect.handle();
    let started = Instant::now();
    let failed = poll_fn(|cx| {
        let _ = Service::<Request>::poll_ready(&mut reconnect, cx);
        match handle.state() {
            ConnectivityState::TransientFailure => Poll::Ready(()),
            _ => Poll::Pending,
        }
    });
    timeout(LIMIT, failed).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let error = handle.connectivity().last_error.unwrap();
    assert_eq!(
        error.to_string(),
        "connection attempt timed out after 300ms"
    );
    assert_eq!(
        *accepted.lock().unwrap(),
        1,
        "TCP connected; only the preface was missing"
    );
}

// grpc-go: TestDialWaitsForServerSettingsAndFails.
#[tokio::test]
async fn server_that_hangs_up_before_its_preface_is_retried_with_backoff() {
    let (addr, accepted) = silent_server(true);
    let mut reconnect = subchannel(Http2Connector::<Body>::new(), addr, backoff(50, 0.0, 1000));
    let handle = reconnect.handle();
    let two_attempts = poll_fn(|cx| {
        let _ = Service::<Request>::poll_ready(&mut reconnect, cx);
        if handle.connect_attempts() >= 2 && handle.state() == ConnectivityState::TransientFailure {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    timeout(LIMIT, two_attempts).await.unwrap();
    let error = handle.connectivity().last_error.unwrap();
    assert!(
        error.to_string().contains("server preface"),
        "the error names the missing preface: {error}"
    );
    assert!(*accepted.lock().unwrap() >= 2);
}

// A call made after the server died but before the client noticed goes out on the
// dead connection; like grpc-go ("transport is closing") it fails UNAVAILABLE, not
// UNKNOWN or CANCELLED, and the next call reconnects.
#[tokio::test]
async fn call_racing_the_servers_death_is_unavailable() {
    let mut server = GreeterProcess::start(SERVER, "127.0.0.1:0", "gamma");
    let reconnect = subchannel(
        Http2Connector::<Body>::new(),
        server.addr(),
        backoff(50, 0.0, 1000),
    );
    let handle = reconnect.handle();
    let mut stack = FailFast::new(reconnect, handle.watch());
    say_hello(&mut stack).await.unwrap();

    server.kill();
    server.restart();
    for _ in 0..2 {
        match say_hello(&mut stack).await {
            Ok(message) => assert_eq!(message, "Hello test from gamma"),
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
    }
    assert_eq!(
        say_hello(&mut stack).await.unwrap(),
        "Hello test from gamma"
    );
}
