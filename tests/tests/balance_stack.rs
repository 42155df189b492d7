//! The card's composition against real tonic servers: a `tower::ServiceBuilder`
//! of `BalanceLayer` over `ResolveLayer` over `MakeReconnectLayer` over
//! `Http2Connector`, each a separate layer, with nothing wired by hand.

use std::future::poll_fn;
use std::task::Poll;

use grpc_lb::AddressConnector;
use grpc_lb_balance::service::{Balance, BalanceLayer, ByConnectivity, HttpCalls};
use grpc_lb_balance::tree::{PickFirst, Policy, RoundRobin};
use grpc_lb_connect::Http2Connector;
use grpc_lb_core::{ConnectivityState, NewSubchannel};
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_reconnect::{MakeReconnectLayer, ReconnectConfig};
use grpc_lb_resolve::{Address, ResolveDiscover, ResolveLayer};
use integration_tests::{ipv4_target, GreeterProcess};
use tokio::time::timeout;
use tower::ServiceBuilder;

#[path = "support/mod.rs"]
mod support;
use support::{fast_backoff, LIMIT, SERVER};

type Body = tonic::body::Body;
type Request = http::Request<Body>;
type Connector = Http2Connector<Body, AddressConnector>;
type Make = grpc_lb_reconnect::MakeReconnect<Connector>;
type Stack = Balance<ResolveDiscover<Make>, Request, ByConnectivity, HttpCalls>;

/// The stack, built from its layers.
fn stack<P: Policy>(target: &str, policy: fn() -> P) -> Stack {
    let connector = Http2Connector::<Body>::new().with_transport(AddressConnector::new());
    let config = ReconnectConfig::default().backoff(fast_backoff());
    ServiceBuilder::new()
        .layer(BalanceLayer::new(policy).subchannels().http())
        .layer(ResolveLayer::new(target).expect("a valid target"))
        .layer(MakeReconnectLayer::new(config))
        .service(connector)
}

async fn say_hello(stack: &mut Stack) -> Result<String, tonic::Status> {
    let mut client = GreeterClient::new(stack);
    let request = HelloRequest {
        name: "test".into(),
    };
    let reply = timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call finishes");
    reply.map(|r| r.into_inner().message)
}

/// Handles the balancer's events with no call made, until `done` holds.
async fn events_until(stack: &mut Stack, mut done: impl FnMut(&Stack) -> bool) {
    let reached = poll_fn(|cx| {
        if let Poll::Ready(Err(error)) = stack.poll_events(cx) {
            panic!("{error}");
        }
        if done(stack) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    timeout(LIMIT, reached).await.expect("the state is reached");
}

#[tokio::test]
async fn round_robin_stack_spreads_calls_over_every_server() {
    let servers = [
        GreeterProcess::start(SERVER, "127.0.0.1:0", "alpha"),
        GreeterProcess::start(SERVER, "127.0.0.1:0", "beta"),
    ];
    let mut stack = stack(&ipv4_target(&servers), RoundRobin::new);
    // With no call made, discovery and connections move: round_robin connects
    // every endpoint by itself.
    events_until(&mut stack, |s| {
        s.len() == 2
            && s.endpoints()
                .all(|(_, state)| state == ConnectivityState::Ready)
    })
    .await;
    assert_eq!(stack.state(), ConnectivityState::Ready);
    let status = stack.get_ref().status();
    assert!(status.borrow().resolved);
    assert_eq!(status.borrow().endpoints, 2);

    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(say_hello(&mut stack).await.unwrap());
    }
    replies.sort();
    assert_eq!(
        replies,
        [
            "Hello test from alpha",
            "Hello test from alpha",
            "Hello test from beta",
            "Hello test from beta"
        ]
    );
}

#[tokio::test]
async fn pick_first_stack_moves_to_the_next_server_and_re_resolves() {
    let mut servers = [
        GreeterProcess::start(SERVER, "127.0.0.1:0", "alpha"),
        GreeterProcess::start(SERVER, "127.0.0.1:0", "beta"),
    ];
    let mut stack = stack(&ipv4_target(&servers), PickFirst::new);
    for _ in 0..3 {
        assert_eq!(
            say_hello(&mut stack).await.unwrap(),
            "Hello test from alpha"
        );
    }
    let resolve_now = stack.get_ref().resolve_now();
    assert_eq!(resolve_now.count(), 0);

    servers[0].kill();
    // The loss is seen with no call in flight: pick_first goes IDLE, and the
    // subchannel raised its resolver's signal, shared by the resolver stage.
    events_until(&mut stack, |s| s.state() == ConnectivityState::Idle).await;
    assert!(resolve_now.count() >= 1);

    // The next call exits idle; alpha refuses, and pick_first moves to beta.
    assert_eq!(say_hello(&mut stack).await.unwrap(), "Hello test from beta");
    assert_eq!(stack.state(), ConnectivityState::Ready);
}

#[tokio::test]
async fn a_bad_target_is_a_typed_error() {
    let error = ResolveLayer::new("nosuchscheme:///x").unwrap_err();
    assert!(
        matches!(error, grpc_lb_resolve::ResolveError::NoResolver { .. })
            || matches!(error, grpc_lb_resolve::ResolveError::BadTarget(_)),
        "{error:?}"
    );
    // The make-service shape is public: a resolver stage over any make-service.
    let make = tower::service_fn(|new: NewSubchannel<Address>| async move {
        Ok::<_, std::convert::Infallible>(new.target)
    });
    let mut discover = tower::Layer::layer(&ResolveLayer::new("ipv4:127.0.0.1:1").unwrap(), make);
    match futures::StreamExt::next(&mut discover).await {
        Some(Ok(tower::discover::Change::Insert(key, made))) => assert_eq!(key, made),
        other => panic!("{other:?}"),
    }
}
