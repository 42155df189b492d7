//! What a Channel shows of itself, against real servers on loopback: its
//! subchannels, its event stream, its call counters and the peer of each
//! response.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use support::{fast_backoff, manual_channel, LIMIT, SERVER};

use grpc_lb::resolve::{Address, Endpoint};
use grpc_lb::{Channel, ChannelEvent, ConnectivityState, Peer};
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_helloworld::BACKEND_METADATA_KEY;
use integration_tests::GreeterProcess;
use tokio::sync::broadcast;
use tokio::time::timeout;

fn endpoints(addrs: &[SocketAddr]) -> Vec<Endpoint> {
    addrs.iter().map(|a| Endpoint::new(*a)).collect()
}

/// Reads events until one matches, and returns it; every event seen is kept in
/// `seen`.
async fn next_matching(
    events: &mut broadcast::Receiver<ChannelEvent>,
    seen: &mut Vec<ChannelEvent>,
    what: &str,
    matches: impl Fn(&ChannelEvent) -> bool,
) -> ChannelEvent {
    timeout(LIMIT, async {
        loop {
            let event = events.recv().await.expect("the channel lives");
            seen.push(event.clone());
            if matches(&event) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event {what}; saw {seen:#?}"))
}

fn subchannel_to(event: &ChannelEvent, address: &Address, state: ConnectivityState) -> bool {
    matches!(event, ChannelEvent::SubchannelState { address: a, to, .. } if a == address && *to == state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_every_subchannel_and_channel_transition() {
    let mut server = GreeterProcess::start(SERVER, "127.0.0.1:0", "a");
    let address = Address::from(server.addr());
    let (channel, handle) = manual_channel("round_robin", fast_backoff());
    let mut events = channel.events();
    let mut seen = Vec::new();
    handle.reset(endpoints(&[server.addr()]));

    let added = next_matching(&mut events, &mut seen, "added", |e| {
        matches!(e, ChannelEvent::SubchannelAdded { .. })
    })
    .await;
    let ChannelEvent::SubchannelAdded {
        id,
        address: added_address,
        state,
    } = added
    else {
        unreachable!()
    };
    assert_eq!(added_address, address);
    assert_eq!(state, ConnectivityState::Idle);
    next_matching(&mut events, &mut seen, "channel READY", |e| {
        matches!(
            e,
            ChannelEvent::State {
                to: ConnectivityState::Ready,
                ..
            }
        )
    })
    .await;
    // The subchannel went IDLE -> CONNECTING -> READY, each step its own event.
    let steps: Vec<(ConnectivityState, ConnectivityState)> = seen
        .iter()
        .filter_map(|e| match e {
            ChannelEvent::SubchannelState {
                id: i, from, to, ..
            } if *i == id => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [
            (ConnectivityState::Idle, ConnectivityState::Connecting),
            (ConnectivityState::Connecting, ConnectivityState::Ready)
        ],
        "{seen:#?}"
    );

    // The server dies: READY -> IDLE, then failed attempts, with the cause.
    server.kill();
    next_matching(&mut events, &mut seen, "READY -> IDLE", |e| {
        subchannel_to(e, &address, ConnectivityState::Idle)
    })
    .await;
    let failed = next_matching(&mut events, &mut seen, "TRANSIENT_FAILURE", |e| {
        subchannel_to(e, &address, ConnectivityState::TransientFailure)
    })
    .await;
    let ChannelEvent::SubchannelState { last_error, .. } = failed else {
        unreachable!()
    };
    assert!(last_error.is_some(), "a failure carries its cause");

    // The resolver removes it.
    handle.reset([]);
    next_matching(
        &mut events,
        &mut seen,
        "removed",
        |e| matches!(e, ChannelEvent::SubchannelRemoved { id: i, .. } if *i == id),
    )
    .await;
    assert!(channel.subchannels().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subchannels_list_address_state_attempts_and_last_error() {
    let servers: Vec<GreeterProcess> = ["a", "b"]
        .iter()
        .map(|name| GreeterProcess::start(SERVER, "127.0.0.1:0", name))
        .collect();
    let (channel, handle) = manual_channel("round_robin", fast_backoff());
    let mut events = channel.events();
    let mut seen = Vec::new();
    let mut dead = GreeterProcess::start(SERVER, "127.0.0.1:0", "dead");
    let dead_address = Address::from(dead.addr());
    dead.kill();
    handle.reset(endpoints(&[
        servers[0].addr(),
        servers[1].addr(),
        dead.addr(),
    ]));
    next_matching(&mut events, &mut seen, "dead in TF", |e| {
        subchannel_to(e, &dead_address, ConnectivityState::TransientFailure)
    })
    .await;
    let mut watch = channel.watch_picker();
    timeout(LIMIT, async {
        while channel.ready_addresses().len() != 2 {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("two ready");

    let infos = channel.subchannels();
    // In the resolver's order.
    let mut want: Vec<Address> = servers.iter().map(|s| Address::from(s.addr())).collect();
    want.push(dead_address.clone());
    let got: Vec<Address> = infos.iter().map(|i| i.address.clone()).collect();
    assert_eq!(got, want);
    for info in &infos {
        assert!(info.connect_attempts >= 1, "{info:?}");
        if info.address == dead_address {
            assert_ne!(info.state, ConnectivityState::Ready, "{info:?}");
            let error = info.last_error.as_ref().expect("the dead one has a cause");
            assert!(!error.to_string().is_empty());
        } else {
            assert_eq!(info.state, ConnectivityState::Ready, "{info:?}");
            assert!(info.last_error.is_none(), "{info:?}");
        }
    }
    let ids: std::collections::HashSet<u64> = infos.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 3, "distinct subchannel ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_its_peer() {
    let servers: Vec<GreeterProcess> = ["a", "b", "c"]
        .iter()
        .map(|name| GreeterProcess::start(SERVER, "127.0.0.1:0", name))
        .collect();
    let names: HashMap<Address, &str> = servers
        .iter()
        .map(|s| (Address::from(s.addr()), s.name()))
        .collect();
    let target = format!(
        "ipv4:{}",
        servers
            .iter()
            .map(|s| s.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // Fresh channels: the first calls take the slow path (waiting for a
    // connection) and the rest the fast one; both must name the peer.
    for _ in 0..2 {
        let channel = Channel::builder(target.clone())
            .policy("round_robin")
            .build()
            .unwrap();
        let mut client = GreeterClient::new(channel.clone());
        let mut per_peer: HashMap<Address, usize> = HashMap::new();
        for _ in 0..30 {
            let request = HelloRequest { name: "p".into() };
            let response = timeout(LIMIT, client.say_hello(request))
                .await
                .unwrap()
                .unwrap();
            let peer = response
                .extensions()
                .get::<Peer>()
                .expect("the response names its peer")
                .clone();
            let backend = response
                .metadata()
                .get(BACKEND_METADATA_KEY)
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(names[peer.address()], backend, "peer {peer}");
            *per_peer.entry(peer.address().clone()).or_default() += 1;
        }
        assert_eq!(per_peer.len(), 3, "{per_peer:?}");
    }
}

/// Answers `SayHello` with `INTERNAL` when the name is "fail".
#[derive(Debug)]
struct FailOnRequest;

#[tonic::async_trait]
impl Greeter for FailOnRequest {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let name = request.into_inner().name;
        if name == "fail" {
            return Err(tonic::Status::internal("asked to fail"));
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello {name}"),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_calls_by_outcome() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(FailOnRequest))
            .serve_with_incoming_shutdown(tokio_stream_from(listener), async {
                let _ = stopped.await;
            }),
    );
    let (channel, handle) = manual_channel("pick_first", fast_backoff());
    assert_eq!(channel.stats(), grpc_lb::ChannelStats::default());
    handle.reset(endpoints(&[addr]));
    let mut client = GreeterClient::new(channel.clone());
    let call = |name: &'static str| {
        let mut client = client.clone();
        async move {
            timeout(LIMIT, client.say_hello(HelloRequest { name: name.into() }))
                .await
                .unwrap()
        }
    };
    for _ in 0..5 {
        call("ok").await.unwrap();
    }
    for _ in 0..3 {
        let status = call("fail").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
    }
    let stats = channel.stats();
    assert_eq!(
        (
            stats.calls_started,
            stats.calls_succeeded,
            stats.calls_failed
        ),
        (8, 5, 3),
        "{stats:?}"
    );

    // A call the channel itself fails (nothing to connect to) counts too.
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    handle.reset([]);
    let mut watch = channel.watch_state();
    timeout(
        LIMIT,
        watch.wait_for(|c| c.state == ConnectivityState::TransientFailure),
    )
    .await
    .unwrap()
    .unwrap();
    let status = client
        .say_hello(HelloRequest { name: "ok".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let stats = channel.stats();
    assert_eq!(
        (
            stats.calls_started,
            stats.calls_succeeded,
            stats.calls_failed
        ),
        (9, 5, 4),
        "{stats:?}"
    );
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

// grpc-go: TestStateTransitions_SingleAddress (Connecting, Ready), here even
// when the connection completes within the worker's drive that starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_passes_through_connecting_on_its_way_to_ready() {
    let server = GreeterProcess::start(SERVER, "127.0.0.1:0", "a");
    for policy in ["pick_first", "round_robin", "least_request"] {
        for _ in 0..5 {
            let channel = Channel::builder(format!("ipv4:{}", server.addr()))
                .policy(policy)
                .build()
                .unwrap();
            channel.connect();
            let mut watch = channel.watch_state();
            timeout(
                LIMIT,
                watch.wait_for(|c| c.state == ConnectivityState::Ready),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(
                channel.state_history(),
                [ConnectivityState::Connecting, ConnectivityState::Ready],
                "{policy}"
            );
        }
    }
}
