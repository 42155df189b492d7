//! Helpers shared by the channel test files: channels over real server
//! processes, one RPC, and waits on the channel's own events (never sleeps).
// Each test file uses its own subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use grpc_lb::resolve::{ManualHandle, ManualResolver, Registry};
use grpc_lb::{Channel, ConnectivityState, WaitForReady};
use grpc_lb_backoff::BackoffConfig;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use integration_tests::{ipv4_target, GreeterProcess};
use tokio::time::timeout;

pub(crate) type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

/// Our tonic Greeter server binary.
pub(crate) const SERVER: &str = env!("CARGO_BIN_EXE_test-greeter-server");
/// A guard against hangs: no wait in these tests should come near it.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn fast_backoff() -> BackoffConfig {
    BackoffConfig::try_new(
        Duration::from_millis(50),
        1.6,
        0.2,
        Duration::from_millis(500),
        Duration::from_secs(2),
    )
    .unwrap()
}

/// A round_robin channel fed by a manual resolver, and the resolver's handle.
pub(crate) fn manual_round_robin(backoff: BackoffConfig) -> (GrpcChannel, ManualHandle) {
    manual_channel("round_robin", backoff)
}

/// A channel with `policy` fed by a manual resolver, and the resolver's handle.
pub(crate) fn manual_channel(policy: &str, backoff: BackoffConfig) -> (GrpcChannel, ManualHandle) {
    let (resolver, handle) = ManualResolver::new("test");
    let mut registry = Registry::with_defaults();
    registry.register(resolver);
    let channel = Channel::builder("test:///greeter")
        .resolver_registry(registry)
        .policy(policy)
        .backoff(backoff)
        .build()
        .unwrap();
    (channel, handle)
}

/// A round_robin channel over `servers`, with a fast backoff.
pub(crate) fn round_robin(servers: &[GreeterProcess]) -> GrpcChannel {
    Channel::builder(ipv4_target(servers))
        .policy("round_robin")
        .backoff(fast_backoff())
        .build()
        .unwrap()
}

/// Our tonic servers on 127.0.0.1, one per name.
pub(crate) fn servers(names: &[&str]) -> Vec<GreeterProcess> {
    names
        .iter()
        .map(|name| GreeterProcess::start(SERVER, "127.0.0.1:0", name))
        .collect()
}

/// One SayHello, fail-fast or wait-for-ready (the `WaitForReady` extension).
pub(crate) async fn hello(
    channel: &GrpcChannel,
    wait_for_ready: bool,
) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(HelloRequest { name: "t".into() });
    if wait_for_ready {
        request.extensions_mut().insert(WaitForReady(true));
    }
    say_hello(channel, request).await
}

/// One SayHello with the channel's own wait-for-ready default.
pub(crate) async fn say_hello(
    channel: &GrpcChannel,
    request: tonic::Request<HelloRequest>,
) -> Result<String, tonic::Status> {
    let mut client = GreeterClient::new(channel.clone());
    let reply = timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call ends");
    reply.map(|r| r.into_inner().message)
}

/// The backend named in a reply, "Hello {name} from {backend}".
pub(crate) fn backend(message: &str) -> String {
    message.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// `calls` sequential fail-fast calls, counted per backend.
pub(crate) async fn spread(channel: &GrpcChannel, calls: usize) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..calls {
        *counts
            .entry(backend(&hello(channel, false).await.unwrap()))
            .or_default() += 1;
    }
    counts
}

pub(crate) async fn wait_for_state(channel: &GrpcChannel, want: ConnectivityState) {
    let mut watch = channel.watch_state();
    timeout(LIMIT, watch.wait_for(|c| c.state == want))
        .await
        .unwrap_or_else(|_| panic!("channel never reached {want}, still {}", channel.state()))
        .unwrap();
}

/// Waits until the channel picks from exactly `count` ready addresses.
pub(crate) async fn wait_for_ready_count(channel: &GrpcChannel, count: usize) {
    let mut watch = channel.watch_picker();
    timeout(LIMIT, async {
        while channel.ready_addresses().len() != count {
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never {count} ready: {:?}", channel.ready_addresses()));
}

/// The channel's state trace from its first CONNECTING on.
pub(crate) fn states_from_first_connecting(channel: &GrpcChannel) -> Vec<ConnectivityState> {
    channel
        .state_history()
        .into_iter()
        .skip_while(|s| *s != ConnectivityState::Connecting)
        .collect()
}

/// grpc-go's StopConnectedServer: a pick_first channel to the lone `server`
/// (whose name is `solo`) goes Connecting, Ready, Idle (server killed),
/// Connecting, Ready (restarted, one call).
pub(crate) async fn assert_stop_connected_server_state_sequence(mut server: GreeterProcess) {
    let channel = Channel::builder(ipv4_target(std::slice::from_ref(&server)))
        .backoff(fast_backoff())
        .build()
        .unwrap();
    channel.connect();
    wait_for_state(&channel, ConnectivityState::Ready).await;
    server.kill();
    wait_for_state(&channel, ConnectivityState::Idle).await;
    server.restart();
    assert_eq!(backend(&hello(&channel, false).await.unwrap()), "solo");
    // The trace, not the watch: a watch may merge changes that follow quickly.
    use ConnectivityState::*;
    assert_eq!(
        states_from_first_connecting(&channel),
        [Connecting, Ready, Idle, Connecting, Ready]
    );
}
