//! Keepalive (gRFC A8) against real servers on loopback.
//!
//! - A grpcio server whose ping policy refuses our pings answers with a
//!   `too_many_pings` GOAWAY; the keepalive time doubles for the later
//!   connections, and calls keep working.
//! - A server frozen with SIGSTOP (its kernel still holds the sockets open)
//!   leaves our PINGs unanswered; the connection is declared dead and the
//!   subchannel leaves READY without any call.
//!
//! The client's minimum keepalive time is 10 s (grpc-go's), so these tests
//! take tens of seconds; they wait on state changes, never on sleeps.

mod support;

use std::error::Error;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use grpc_lb::connect::{Http2Connector, KeepaliveConfig, TooManyPings};
use grpc_lb::{Channel, ConnectivityState};
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use integration_tests::{ipv4_target, GreeterProcess};
use support::{fast_backoff, hello, SERVER};
use tokio::time::timeout;
use tower::Service;

/// Longer than any wait below should take (the keepalive time is 10 s and
/// grpcio strikes the second or third ping); a guard against hangs only.
const GUARD: Duration = Duration::from_secs(90);

/// grpcio refuses a second PING within 15 s of the last, without calls
/// in flight too, and sends GOAWAY `too_many_pings` on the second strike.
/// 10 s pings are refused; 20 s pings are not.
const STRICT_PING_POLICY: &[(&str, i64)] = &[
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 15_000),
    ("grpc.http2.max_ping_strikes", 1),
];

fn keepalive_10s() -> KeepaliveConfig {
    KeepaliveConfig::new()
        .time(Duration::from_secs(10))
        .timeout(Duration::from_secs(5))
        .permit_without_calls(true)
}

fn find_too_many_pings<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a TooManyPings> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<TooManyPings>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// An error and all its sources, `: `-separated (hyper's own `Display`
/// leaves its cause out).
fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(error) = next {
        text.push_str(": ");
        text.push_str(&error.to_string());
        next = error.source();
    }
    text
}

async fn say_hello(
    connection: grpc_lb::connect::Http2Connection<tonic::body::Body>,
) -> Result<String, tonic::Status> {
    let mut client = GreeterClient::new(connection);
    let request = HelloRequest {
        name: "keepalive".into(),
    };
    Ok(client.say_hello(request).await?.into_inner().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pings_from_grpcio_doubles_the_keepalive_time() {
    let server =
        GreeterProcess::start_python_with_options("127.0.0.1:0", "strict", STRICT_PING_POLICY);
    let mut connector = Http2Connector::<tonic::body::Body>::new().with_keepalive(keepalive_10s());

    let mut connection = connector.call(server.addr()).await.unwrap();
    let reply = say_hello(connection.clone()).await.unwrap();
    assert_eq!(reply, "Hello keepalive from strict");

    // Idle but pinging every 10 s: grpcio strikes, then sends GOAWAY.
    let error = timeout(
        GUARD,
        poll_fn(|cx| {
            match Service::<http::Request<tonic::body::Body>>::poll_ready(&mut connection, cx) {
                Poll::Ready(Err(error)) => Poll::Ready(error),
                // The original connection is woken when it closes.
                _ => Poll::Pending,
            }
        }),
    )
    .await
    .expect("grpcio closes the connection for too many pings");
    let pings = find_too_many_pings(&*error)
        .unwrap_or_else(|| panic!("closed, but not for too_many_pings: {error}"));
    assert_eq!(pings.used_time(), Duration::from_secs(10));
    assert_eq!(pings.new_time(), Duration::from_secs(20));
    assert_eq!(connector.keepalive_time(), Some(Duration::from_secs(20)));

    // The next connection uses 20 s, and calls work on it.
    let connection = connector.call(server.addr()).await.unwrap();
    let reply = say_hello(connection).await.unwrap();
    assert_eq!(reply, "Hello keepalive from strict");
    assert_eq!(connector.keepalive_time(), Some(Duration::from_secs(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_survives_too_many_pings_and_keeps_serving() {
    let server =
        GreeterProcess::start_python_with_options("127.0.0.1:0", "strict", STRICT_PING_POLICY);
    let channel = Channel::builder(ipv4_target(std::slice::from_ref(&server)))
        .backoff(fast_backoff())
        .keepalive(keepalive_10s())
        .build()
        .unwrap();
    assert_eq!(hello(&channel, false).await.unwrap(), "Hello t from strict");
    assert_eq!(channel.state(), ConnectivityState::Ready);

    // The GOAWAY ends the connection: READY → IDLE, with the cause kept.
    let mut state = channel.watch_state();
    timeout(
        GUARD,
        state.wait_for(|c| c.state != ConnectivityState::Ready),
    )
    .await
    .expect("grpcio closes the connection for too many pings")
    .unwrap();
    let subchannel = &channel.subchannels()[0];
    let cause = subchannel
        .last_error
        .clone()
        .expect("the lost connection's cause is kept");
    let pings = find_too_many_pings(&*cause)
        .unwrap_or_else(|| panic!("closed, but not for too_many_pings: {cause}"));
    assert_eq!(pings.new_time(), Duration::from_secs(20));

    // Calls keep working, on a new connection.
    assert_eq!(hello(&channel, false).await.unwrap(), "Hello t from strict");
    assert_eq!(channel.state(), ConnectivityState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_declares_a_frozen_server_dead_without_any_call() {
    let mut server = GreeterProcess::start(SERVER, "127.0.0.1:0", "frozen");
    let channel = Channel::builder(ipv4_target(std::slice::from_ref(&server)))
        .backoff(fast_backoff())
        .keepalive(
            KeepaliveConfig::new()
                .time(Duration::from_secs(10))
                .timeout(Duration::from_secs(1))
                .permit_without_calls(true),
        )
        .build()
        .unwrap();
    assert_eq!(hello(&channel, false).await.unwrap(), "Hello t from frozen");
    assert_eq!(channel.state(), ConnectivityState::Ready);

    // SIGSTOP: the kernel keeps the TCP connection up, the server answers
    // nothing. Only an unanswered PING can tell.
    server.pause();
    let mut state = channel.watch_state();
    let left = timeout(
        GUARD,
        state.wait_for(|c| c.state != ConnectivityState::Ready),
    )
    .await;
    server.resume();
    left.expect("keepalive notices the frozen server").unwrap();
    let cause = channel.subchannels()[0]
        .last_error
        .clone()
        .expect("the lost connection's cause is kept");
    let chain = error_chain(&*cause);
    assert!(
        chain.contains("keep-alive timed out"),
        "closed for another reason: {chain}"
    );

    // Thawed, the server serves again through the same channel.
    assert_eq!(hello(&channel, false).await.unwrap(), "Hello t from frozen");
}
