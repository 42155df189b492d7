//! Regressions of issue 13's review of the worker, the policies and the
//! picker, against real sockets; each test is named after its defect. The
//! unit tests beside the code cover the same defects on tokio's paused clock.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpc_lb::backoff::BackoffConfig;
use grpc_lb::balance::PolicyRegistry;
use grpc_lb::connect::Http2Connector;
use grpc_lb::reconnect::{ConnectMode, Reconnect, ReconnectConfig, SubchannelHandle};
use grpc_lb::resolve::{Address, Endpoint, ManualResolver, ResolverDiscover};
use grpc_lb::{Channel, ChannelEvent, ChannelOptions, ConnectivityState, SocketConnector};
use grpc_lb_core::ResolveNow;
use grpc_lb_helloworld::proto::{GreeterServer, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use integration_tests::GreeterProcess;
use support::*;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::broadcast;
use tokio::time::timeout;

/// A port that refuses connections (bound, not listening) until
/// [`serve`](Self::serve) makes it a Greeter named `name`.
struct RefusingPort {
    socket: TcpSocket,
    addr: SocketAddr,
}

impl RefusingPort {
    fn new() -> RefusingPort {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        RefusingPort { socket, addr }
    }

    fn serve(self, name: &str) {
        let listener = self.socket.listen(64).unwrap();
        let greeter = GreeterServer::new(NamedGreeter::new(name));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(greeter)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }
}

/// Waits for the next event that `wanted` accepts.
async fn next_event(
    events: &mut broadcast::Receiver<ChannelEvent>,
    wanted: impl Fn(&ChannelEvent) -> bool,
) -> ChannelEvent {
    timeout(LIMIT, async {
        loop {
            let event = events.recv().await.expect("the channel lives");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the event comes")
}

// Issue 13, defect 1, measured as in the issue: `ipv4:A,B`, A refuses, B
// accepts but never speaks, a 2 s connect timeout, a server on A once the
// first pass is over, and a wait-for-ready call with a 15 s deadline. A's
// 1 s backoff ends while B's attempt is still running; when the pass ended
// nothing connected A again, and the call ended DEADLINE_EXCEEDED (grpc-go,
// grpcio and grpc-js succeed at 3.1-4.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_retries_an_address_whose_backoff_ended_during_the_first_pass() {
    let a = RefusingPort::new();
    let a_addr = a.addr;
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = silent.local_addr().unwrap();
    let backoff = BackoffConfig::try_new(
        Duration::from_secs(1),
        1.6,
        0.0,
        Duration::from_secs(120),
        Duration::from_secs(2),
    )
    .unwrap();
    let channel = Channel::builder(format!("ipv4:{a_addr},{b_addr}"))
        .backoff(backoff)
        .build()
        .unwrap();
    let mut events = channel.events();
    let call = tokio::spawn({
        let channel = channel.clone();
        async move {
            let mut request = tonic::Request::new(HelloRequest { name: "t".into() });
            request.set_timeout(Duration::from_secs(15));
            request.extensions_mut().insert(grpc_lb::WaitForReady(true));
            say_hello(&channel, request).await
        }
    });
    // A's backoff ends during the pass: A is IDLE before B's attempt fails.
    let a_address = Address::from(a_addr);
    next_event(&mut events, |event| {
        matches!(event, ChannelEvent::SubchannelState { address, to: ConnectivityState::Idle, .. } if *address == a_address)
    })
    .await;
    next_event(&mut events, |event| {
        matches!(
            event,
            ChannelEvent::State {
                to: ConnectivityState::TransientFailure,
                ..
            }
        )
    })
    .await;
    a.serve("a");
    let reply = call
        .await
        .unwrap()
        .expect("served by A before the deadline");
    assert_eq!(backend(&reply), "a");
    drop(silent);
}

// Issue 13, defect 2: an endpoint inserted again with other attributes
// (etcd metadata, an SRV weight) got a new IDLE subchannel that nothing
// connected; round_robin kept the old one's READY, so the channel read READY
// with nothing to pick and calls hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinserted_endpoint_is_connected_again() {
    let server = GreeterProcess::start(SERVER, "127.0.0.1:0", "solo");
    for policy in ["round_robin", "pick_first"] {
        let (channel, handle) = manual_channel(policy, fast_backoff());
        handle.reset([Endpoint::new(server.addr())]);
        assert_eq!(backend(&hello(&channel, true).await.unwrap()), "solo");
        let mut events = channel.events();
        handle.reset([Endpoint::new(server.addr()).with_metadata("zone", "b")]);
        let ChannelEvent::SubchannelAdded { id: new, .. } = next_event(&mut events, |event| {
            matches!(event, ChannelEvent::SubchannelAdded { .. })
        })
        .await
        else {
            unreachable!("matched above")
        };
        // The new subchannel is connected, and its connection is picked.
        next_event(&mut events, |event| {
            matches!(event, ChannelEvent::SubchannelState { id, to: ConnectivityState::Ready, .. } if *id == new)
        })
        .await;
        // Fail-fast: neither TRANSIENT_FAILURE nor a hang.
        assert_eq!(
            backend(&hello(&channel, false).await.unwrap()),
            "solo",
            "{policy}"
        );
        wait_for_state(&channel, ConnectivityState::Ready).await;
        let subchannels = channel.subchannels();
        assert_eq!(subchannels.len(), 1, "{policy}");
        assert_eq!(subchannels[0].connect_attempts, 1, "{policy}");
    }
}

/// A pick_first channel over eager subchannels (as the `ChannelOptions`
/// example builds them) to `addresses`, its worker's task, and each
/// subchannel's handle.
fn eager_pick_first(
    addresses: &[SocketAddr],
) -> (
    GrpcChannel,
    tokio::task::JoinHandle<()>,
    Arc<Mutex<Vec<SubchannelHandle>>>,
) {
    let (resolver, endpoints) = ManualResolver::new("mine");
    let resolve_now = ResolveNow::new();
    let connector = SocketConnector::new(Http2Connector::<tonic::body::Body>::new());
    let eager = ReconnectConfig::default()
        .backoff(fast_backoff())
        .mode(ConnectMode::Eager)
        .resolve_now(resolve_now.clone());
    let handles = Arc::new(Mutex::new(Vec::new()));
    let discover = ResolverDiscover::new(resolver.stream(resolve_now.clone()), {
        let handles = handles.clone();
        move |e: &Endpoint| {
            let subchannel =
                Reconnect::with_config(connector.clone(), e.address.clone(), eager.clone());
            handles.lock().unwrap().push(subchannel.handle());
            subchannel
        }
    });
    let options = ChannelOptions {
        resolve_now,
        resolver_status: Some(discover.status()),
        ..ChannelOptions::default()
    };
    let policy = PolicyRegistry::with_defaults().build("pick_first").unwrap();
    let (channel, worker) =
        Channel::pair::<_, _, _, _, http::Request<tonic::body::Body>>(discover, policy, options);
    let worker = tokio::spawn(worker);
    endpoints.reset(addresses.iter().map(|a| Endpoint::new(*a)));
    (channel, worker, handles)
}

// Issue 13, defect 3: pick_first over eager subchannels let go of the ones
// that lost, which reconnected at once, won, and let go of the winner: 108
// connects in under a second against real servers, and the worker never
// ended after the channel was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_over_eager_subchannels_does_not_livelock() {
    let servers = servers(&["first", "second"]);
    let addresses: Vec<SocketAddr> = servers.iter().map(|s| s.addr()).collect();
    let (channel, worker, handles) = eager_pick_first(&addresses);
    let first = backend(&hello(&channel, true).await.unwrap());
    for _ in 0..20 {
        assert_eq!(backend(&hello(&channel, true).await.unwrap()), first);
    }
    assert_eq!(channel.state(), ConnectivityState::Ready);
    let attempts: Vec<u64> = handles
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.connect_attempts())
        .collect();
    // The first address is dialed once, the second at most once (if the
    // first took longer than the Happy Eyeballs delay): the one let go stays
    // let go.
    assert_eq!(attempts[0], 1, "{attempts:?}");
    assert!(attempts[1] <= 1, "{attempts:?}");
    drop(channel);
    timeout(LIMIT, worker)
        .await
        .expect("the worker ends once its channel is gone")
        .unwrap();
}

// Issue 13, defect 4: a good list after an empty one stayed TRANSIENT_FAILURE;
// grpc-go reports CONNECTING (the empty list's failure is not sticky).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_good_list_after_an_empty_one_is_connecting() {
    let servers = servers(&["a", "b"]);
    let (channel, handle) = manual_channel("pick_first", fast_backoff());
    handle.reset([Endpoint::new(servers[0].addr())]);
    assert_eq!(backend(&hello(&channel, true).await.unwrap()), "a");
    handle.reset([]);
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    handle.reset([Endpoint::new(servers[1].addr())]);
    assert_eq!(backend(&hello(&channel, true).await.unwrap()), "b");
    use ConnectivityState::*;
    let history = channel.state_history();
    assert_eq!(
        history[history.len() - 3..],
        [TransientFailure, Connecting, Ready]
    );
}

// Issue 13, defect 4: gRFC A61 interleaves IPv6 and IPv4 addresses. With
// `v4 refused, v4 refused, v6 live` the live one is dialed second, right
// after the first refusal (the second IPv4 address, if at all, only after it,
// when the Happy Eyeballs delay passes before the v6 handshake completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_interleaves_ipv6_and_ipv4_addresses() {
    let live = GreeterProcess::start(SERVER, "[::1]:0", "v6");
    let refused: Vec<RefusingPort> = (0..2).map(|_| RefusingPort::new()).collect();
    let mut addresses: Vec<Address> = refused.iter().map(|p| Address::from(p.addr)).collect();
    addresses.push(Address::from(live.addr()));
    let (channel, handle) = manual_channel("pick_first", fast_backoff());
    let mut events = channel.events();
    handle.reset(addresses.iter().map(|a| Endpoint::new(a.clone())));
    assert_eq!(backend(&hello(&channel, true).await.unwrap()), "v6");
    let mut dialed: Vec<Address> = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ChannelEvent::SubchannelState {
            address,
            to: ConnectivityState::Connecting,
            ..
        } = event
        {
            if !dialed.contains(&address) {
                dialed.push(address);
            }
        }
    }
    assert_eq!(
        dialed[..2],
        [addresses[0].clone(), addresses[2].clone()],
        "first dials: {dialed:?}"
    );
}
