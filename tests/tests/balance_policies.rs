//! ring_hash and weighted_round_robin through `Balance` against real tonic
//! servers on loopback: a key stays on one backend; traffic follows the
//! utilization the backends report in their ORCA trailers.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use grpc_lb::AddressConnector;
use grpc_lb_balance::service::{Balance, BalanceLayer, ByConnectivity, HttpCalls};
use grpc_lb_balance::tree::{
    EndpointAttributes, Policy, RingHash, RingHashConfig, WeightedRoundRobin, WrrConfig,
};
use grpc_lb_connect::Http2Connector;
use grpc_lb_core::ConnectivityState;
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_orca::{OrcaCallMetricsLayer, ServerMetricsRecorder};
use grpc_lb_reconnect::{MakeReconnectLayer, ReconnectConfig};
use grpc_lb_resolve::{Address, ResolveDiscover, ResolveLayer};
use tokio::time::timeout;
use tower::ServiceBuilder;

#[path = "support/mod.rs"]
mod support;
use support::{fast_backoff, LIMIT};

type Body = tonic::body::Body;
type Request = http::Request<Body>;
type Connector = Http2Connector<Body, AddressConnector>;
type Make = grpc_lb_reconnect::MakeReconnect<Connector>;
type Stack = Balance<ResolveDiscover<Make>, Request, ByConnectivity, HttpCalls>;

/// The ServiceBuilder stack of the balance branch, with endpoints named by
/// their address (what ring_hash hashes, as grpc-go does).
fn stack<P: Policy>(target: &str, make: impl Fn() -> P + Send + Sync + 'static) -> Stack {
    let connector = Http2Connector::<Body>::new().with_transport(AddressConnector::new());
    let config = ReconnectConfig::default().backoff(fast_backoff());
    ServiceBuilder::new()
        .layer(BalanceLayer::new(make).subchannels().http())
        .layer(ResolveLayer::new(target).expect("a valid target"))
        .layer(MakeReconnectLayer::new(config))
        .service(connector)
        .describe_endpoints(|address: &Address| EndpointAttributes::named(address.to_string()))
}

struct Named(&'static str);

#[tonic::async_trait]
impl Greeter for Named {
    async fn say_hello(
        &self,
        _: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Ok(tonic::Response::new(HelloReply {
            message: self.0.into(),
        }))
    }
}

/// A tonic server named `name` that reports `utilization` at 100 qps in
/// every call's ORCA trailer.
async fn server(name: &'static str, utilization: f64) -> SocketAddr {
    let load = ServerMetricsRecorder::new();
    load.set_application_utilization(utilization).unwrap();
    load.set_qps(100.0).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(OrcaCallMetricsLayer::with_server_metrics(load))
            .add_service(GreeterServer::new(Named(name)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn target(addrs: &[SocketAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("ipv4:{}", addrs.join(","))
}

async fn say_hello(stack: &mut Stack, key: Option<&str>) -> String {
    let mut client = GreeterClient::new(stack);
    let mut request = tonic::Request::new(HelloRequest {
        name: "test".into(),
    });
    if let Some(key) = key {
        request.metadata_mut().insert("x-key", key.parse().unwrap());
    }
    let reply = timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call finishes");
    reply.expect("the call succeeds").into_inner().message
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
async fn ring_hash_keeps_each_key_on_one_backend() {
    let addrs = [
        server("alpha", 0.5).await,
        server("beta", 0.5).await,
        server("gamma", 0.5).await,
    ];
    let config = RingHashConfig::default()
        .request_hash_header("X-Key")
        .validate()
        .unwrap();
    let mut stack = stack(&target(&addrs), move || RingHash::new(config.clone()));
    events_until(&mut stack, |s| s.len() == 3).await;
    assert_eq!(
        stack.state(),
        ConnectivityState::Idle,
        "nothing connects before a call"
    );
    // The first calls connect the endpoints their keys land on, on demand;
    // once those are READY each key's calls go to its own backend.
    let keys = ["alice", "bob", "carol", "dave", "erin", "frank"];
    for key in keys {
        say_hello(&mut stack, Some(key)).await;
    }
    events_until(&mut stack, |s| {
        s.endpoints()
            .filter(|(_, state)| *state == ConnectivityState::Ready)
            .count()
            >= 2
    })
    .await;
    let mut owners = std::collections::BTreeMap::new();
    for key in keys {
        let first = say_hello(&mut stack, Some(key)).await;
        for _ in 0..1000 / keys.len() {
            assert_eq!(
                say_hello(&mut stack, Some(key)).await,
                first,
                "key {key} moved"
            );
        }
        owners.insert(key, first);
    }
    let distinct: std::collections::BTreeSet<_> = owners.values().collect();
    assert!(
        distinct.len() >= 2,
        "the keys spread over backends: {owners:?}"
    );
}

#[tokio::test]
async fn weighted_round_robin_follows_reported_utilization() {
    // Same qps; utilization 0.2 and 0.8: weights 500 and 125, a 80/20 split.
    let addrs = [server("light", 0.2).await, server("heavy", 0.8).await];
    let config = WrrConfig {
        blackout_period: Duration::ZERO,
        weight_update_period: Duration::from_millis(100),
        ..WrrConfig::default()
    }
    .validate()
    .unwrap();
    let mut stack = stack(&target(&addrs), move || {
        WeightedRoundRobin::new(config.clone())
    });
    events_until(&mut stack, |s| {
        s.len() == 2
            && s.endpoints()
                .all(|(_, state)| state == ConnectivityState::Ready)
    })
    .await;
    // Weights come with the calls' trailers, and count from the scheduler's
    // next update: call until a batch shows the shift, then measure.
    let light_share = |replies: &[String]| {
        replies.iter().filter(|r| *r == "light").count() as f64 / replies.len() as f64
    };
    let mut shifted = false;
    for _ in 0..500 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            batch.push(say_hello(&mut stack, None).await);
        }
        if light_share(&batch) > 0.7 {
            shifted = true;
            break;
        }
    }
    assert!(shifted, "traffic never moved toward the lighter backend");
    let mut replies = Vec::new();
    for _ in 0..2000 {
        replies.push(say_hello(&mut stack, None).await);
    }
    let share = light_share(&replies);
    println!("light backend's share: {share:.3} (expected 0.8)");
    assert!((share - 0.8).abs() < 0.08, "{share}");
}
