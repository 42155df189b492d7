//! pick_first and the channel's connection management against real sockets:
//! ports of grpc-go's pickfirst and clientconn tests (named after them) that
//! need a listener that never answers, an address list that changes under a
//! blocked call, or a subchannel's backoff reset from outside.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpc_lb::backoff::BackoffConfig;
use grpc_lb::balance::{PolicyRegistry, CONNECTION_DELAY};
use grpc_lb::connect::Http2Connector;
use grpc_lb::reconnect::{Reconnect, ReconnectConfig, SubchannelHandle};
use grpc_lb::resolve::{Endpoint, Registry, ResolverDiscover};
use grpc_lb::{Channel, ChannelOptions, ConnectivityState, SocketConnector};
use grpc_lb_core::ResolveNow;
use integration_tests::GreeterProcess;
use support::*;
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::{timeout, Instant};

/// A listening socket that never completes a TCP handshake: its accept queue
/// (backlog 0, so one connection) is full and never drained, so the kernel
/// drops every further SYN and a connect hangs until its own timeout. Unlike a
/// non-routable address, this holds on a loopback-only machine (some sandboxes
/// answer every outside address).
struct Blackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: TcpStream,
}

impl Blackhole {
    fn new() -> Blackhole {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let queued = TcpStream::connect(addr).expect("the first connection is queued");
        // Check it: a further connect must hang rather than complete.
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("a full accept queue does not blackhole connects here: {other:?}"),
        }
        Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

// grpc-go balancer/pickfirst/pickfirst_ext_test.go:
// TestPickFirst_HappyEyeballs_TriggerConnectionDelay (gRFC A61). The first
// address never answers; the second is dialed after the 250 ms connection delay,
// not after the first attempt's 20 s connect timeout, and wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_happy_eyeballs_trigger_connection_delay() {
    let blackhole = Blackhole::new();
    // On 127.0.0.2, the live server sorts after the blackhole (127.0.0.1)
    // whatever the ports: the channel orders addresses itself (see
    // pick_first_tries_addresses_in_the_resolvers_order).
    let live = GreeterProcess::start(SERVER, "127.0.0.2:0", "live");
    let backoff = BackoffConfig::default();
    assert_eq!(backoff.min_connect_timeout(), Duration::from_secs(20));
    // The channel starts its first pass as soon as the resolver answers.
    let started = Instant::now();
    let channel = Channel::builder(format!("ipv4:{},{}", blackhole.addr, live.addr()))
        .backoff(backoff)
        .build()
        .unwrap();
    channel.connect();
    wait_for_state(&channel, ConnectivityState::Ready).await;
    let elapsed = started.elapsed();
    println!("READY {elapsed:?} after the channel was built");
    assert!(
        elapsed >= CONNECTION_DELAY,
        "the second address was dialed before the connection delay: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "the second address waited for the first attempt: {elapsed:?}"
    );
    assert_eq!(backend(&hello(&channel, false).await.unwrap()), "live");
    use ConnectivityState::*;
    assert_eq!(states_from_first_connecting(&channel), [Connecting, Ready]);
}

// gRFC A62 / grpc-go pickfirst: the first pass tries the addresses in the
// order the resolver gives them. Two live servers, listed "higher" address
// first: pick_first must connect to the first one listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_tries_addresses_in_the_resolvers_order() {
    let listed_first = GreeterProcess::start(SERVER, "127.0.0.2:0", "listed-first");
    let listed_second = GreeterProcess::start(SERVER, "127.0.0.1:0", "listed-second");
    let target = format!("ipv4:{},{}", listed_first.addr(), listed_second.addr());
    let channel = Channel::builder(target).build().unwrap();
    assert_eq!(
        backend(&hello(&channel, true).await.unwrap()),
        "listed-first",
        "ready: {:?}",
        channel.ready_addresses()
    );

    // The same through a manual resolver's Reset.
    let (channel, handle) = manual_channel("pick_first", fast_backoff());
    handle.reset([
        Endpoint::new(listed_first.addr()),
        Endpoint::new(listed_second.addr()),
    ]);
    assert_eq!(
        backend(&hello(&channel, true).await.unwrap()),
        "listed-first"
    );
}

// grpc-go balancer/pickfirst/pickfirst_ext_test.go:
// TestPickFirst_NewAddressWhileBlocking. A wait-for-ready call blocks while the
// address list is empty, then while it holds only a dead address, and completes
// once the resolver adds a live one; fail-fast calls meanwhile fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_new_address_while_blocking() {
    let first = GreeterProcess::start(SERVER, "127.0.0.1:0", "first");
    let mut dead = GreeterProcess::start(SERVER, "127.0.0.1:0", "dead");
    dead.kill();
    let late = GreeterProcess::start(SERVER, "127.0.0.1:0", "late");
    let (channel, handle) = manual_channel("pick_first", fast_backoff());
    handle.reset([Endpoint::new(first.addr())]);
    assert_eq!(backend(&hello(&channel, true).await.unwrap()), "first");

    handle.reset([]);
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    let blocked = tokio::spawn({
        let channel = channel.clone();
        async move { hello(&channel, true).await }
    });
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    handle.reset([Endpoint::new(dead.addr())]);
    let dead_addr = dead.addr().to_string();
    let mut state = channel.watch_state();
    timeout(
        LIMIT,
        state.wait_for(|c| {
            c.state == ConnectivityState::TransientFailure
                && c.last_error
                    .as_ref()
                    .is_some_and(|e| e.to_string().contains(&dead_addr))
        }),
    )
    .await
    .expect("the dead address is tried and fails")
    .unwrap();
    assert!(!blocked.is_finished(), "the call waits through the failure");

    handle.add([Endpoint::new(late.addr())]);
    let message = blocked.await.unwrap().expect("the blocked call completes");
    assert_eq!(backend(&message), "late");
}

/// A pick_first channel over `target` built by hand with `Channel::pair`,
/// keeping each subchannel's handle, since the Channel itself exposes no
/// ResetConnectBackoff.
fn channel_with_handles(
    target: &str,
    backoff: BackoffConfig,
) -> (GrpcChannel, Arc<Mutex<Vec<SubchannelHandle>>>) {
    let resolve_now = ResolveNow::new();
    let updates = Registry::with_defaults()
        .resolve(target, resolve_now.clone())
        .unwrap();
    let connector = SocketConnector::new(Http2Connector::<tonic::body::Body>::new());
    let config = ReconnectConfig::default()
        .backoff(backoff)
        .resolve_now(resolve_now.clone());
    let handles = Arc::new(Mutex::new(Vec::new()));
    let discover = ResolverDiscover::new(updates, {
        let handles = handles.clone();
        move |endpoint: &Endpoint| {
            let subchannel =
                Reconnect::with_config(connector.clone(), endpoint.address.clone(), config.clone());
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
    tokio::spawn(worker);
    (channel, handles)
}

// grpc-go clientconn_test.go: TestResetConnectBackoff. After a failed attempt
// the subchannel waits out a 60 s backoff; resetting it redials at once, and the
// channel, whose server is back, is READY long before the backoff would end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connect_backoff_redials_at_once() {
    let mut server = GreeterProcess::start(SERVER, "127.0.0.1:0", "back");
    server.kill();
    let long = Duration::from_secs(60);
    let backoff = BackoffConfig::try_new(long, 1.6, 0.0, long, Duration::from_secs(20)).unwrap();
    let (channel, handles) = channel_with_handles(&format!("ipv4:{}", server.addr()), backoff);
    channel.connect();
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    let handle = handles.lock().unwrap()[0].clone();
    assert_eq!(handle.connect_attempts(), 1);

    server.restart();
    // Backing off: no new attempt by itself, whatever the test waits for.
    assert_eq!(channel.state(), ConnectivityState::TransientFailure);
    assert_eq!(handle.connect_attempts(), 1);
    let reset_at = Instant::now();
    handle.reset_backoff();
    timeout(
        Duration::from_secs(5),
        wait_for_state(&channel, ConnectivityState::Ready),
    )
    .await
    .expect("READY within 5 s of the reset, not after the 60 s backoff");
    println!("READY {:?} after reset_backoff()", reset_at.elapsed());
    assert_eq!(handle.connect_attempts(), 2);
    assert_eq!(backend(&hello(&channel, false).await.unwrap()), "back");
}
