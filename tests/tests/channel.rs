//! The Channel against real server processes on loopback: black-box ports of
//! grpc-go's round_robin, pick_first and wait-for-ready tests (named after them).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use grpc_lb::resolve::{Address, Endpoint};
use grpc_lb::{Channel, ConnectivityState, WaitForReady};
use grpc_lb_backoff::BackoffConfig;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use integration_tests::{ipv4_target, GreeterProcess};
use support::*;
use tokio::time::timeout;

// grpc-go test/roundrobin_test.go: TestRoundRobin_Basic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_basic_spreads_evenly() {
    let servers = servers(&["a", "b", "c"]);
    let channel = round_robin(&servers);
    // Discovery and connections happen with no request made.
    wait_for_ready_count(&channel, 3).await;
    let counts = spread(&channel, 300).await;
    for name in ["a", "b", "c"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!((90..=110).contains(&n), "uneven spread {counts:?}");
    }
}

// grpc-go: TestRoundRobin_OneServerDown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_one_server_down_keeps_serving_on_the_rest() {
    let mut servers = servers(&["a", "b", "c"]);
    let channel = round_robin(&servers);
    wait_for_ready_count(&channel, 3).await;
    servers[0].kill();
    // Once the channel has seen the loss, no fail-fast RPC fails.
    wait_for_ready_count(&channel, 2).await;
    for _ in 0..60 {
        let message = hello(&channel, false)
            .await
            .expect("no RPC fails after the loss is seen");
        assert_ne!(backend(&message), "a");
    }
    assert_eq!(channel.state(), ConnectivityState::Ready);
}

// grpc-go: TestRoundRobin_AllServersDown, TestWaitForReady, TestTimeoutOnDeadServer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_fails_fast_and_wait_for_ready_waits() {
    let mut servers = servers(&["a", "b"]);
    let channel = round_robin(&servers);
    wait_for_ready_count(&channel, 2).await;
    for server in &mut servers {
        server.kill();
    }
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // The cause names a dead backend (refused, or reset while it was dying).
    let named = servers
        .iter()
        .any(|s| status.message().contains(&s.addr().to_string()));
    assert!(named, "names the cause: {}", status.message());

    // A wait-for-ready call with a short deadline gets DEADLINE_EXCEEDED.
    let mut client = GreeterClient::new(channel.clone());
    let mut request = tonic::Request::new(HelloRequest { name: "t".into() });
    request.set_timeout(Duration::from_millis(200));
    request.extensions_mut().insert(WaitForReady(true));
    let status = client.say_hello(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

    // A wait-for-ready call without a deadline succeeds once a backend returns.
    let waiting = tokio::spawn({
        let channel = channel.clone();
        async move { hello(&channel, true).await }
    });
    servers[1].restart();
    let message = waiting
        .await
        .unwrap()
        .expect("wait-for-ready call succeeds");
    assert_eq!(backend(&message), "b");
}

// Discovery without traffic (tonic#1581): a backend added by the resolver is
// connected and gets traffic with no request needed to notice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_added_by_the_resolver_gets_traffic_without_a_request_to_notice() {
    let servers = servers(&["a", "b", "c"]);
    let (channel, handle) = manual_round_robin(fast_backoff());
    handle.reset(servers[..2].iter().map(|s| Endpoint::new(s.addr())));
    wait_for_ready_count(&channel, 2).await;

    handle.add([Endpoint::new(servers[2].addr())]);
    timeout(Duration::from_secs(1), wait_for_ready_count(&channel, 3))
        .await
        .expect("the new backend is READY within 1 s, with no request made");
    let mut seen_c = false;
    for _ in 0..6 {
        seen_c |= backend(&hello(&channel, false).await.unwrap()) == "c";
    }
    assert!(seen_c);

    // Removed: no longer picked, with no request needed to notice.
    handle.remove([Address::Socket(servers[0].addr())]);
    wait_for_ready_count(&channel, 2).await;
    for _ in 0..6 {
        assert_ne!(backend(&hello(&channel, false).await.unwrap()), "a");
    }
}

// grpc-go test/pickfirst_test.go: StopConnectedServer — the single-address
// restart sequence Connecting, Ready, Idle, Connecting, Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_single_address_restart_state_sequence() {
    let server = GreeterProcess::start(SERVER, "127.0.0.1:0", "solo");
    assert_stop_connected_server_state_sequence(server).await;
}

// grpc-go test/balancer_test.go TestWaitForReady (resolver error first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_error_before_any_result_is_transient_failure_with_the_cause() {
    let server = GreeterProcess::start(SERVER, "127.0.0.1:0", "late");
    let (channel, handle) = manual_round_robin(BackoffConfig::default());
    handle.error("lookup greeter: no such host");
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("no such host"),
        "{}",
        status.message()
    );

    let waiting = tokio::spawn({
        let channel = channel.clone();
        async move { hello(&channel, true).await }
    });
    handle.reset([Endpoint::new(server.addr())]);
    assert_eq!(backend(&waiting.await.unwrap().unwrap()), "late");
}

// grpc-go: TestRoundRobin_AddressesRemoved / EmptyAddressList.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_address_list_is_transient_failure_not_a_hang() {
    let (channel, handle) = manual_round_robin(BackoffConfig::default());
    handle.reset([]);
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("zero addresses"),
        "{}",
        status.message()
    );
}

// p2c over PeakEWMA sends sequential calls to the endpoint with the lowest
// latency estimate, so only least_request (random among equals) must spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_serves_and_least_request_spreads() {
    let servers = servers(&["a", "b"]);
    for policy in ["p2c", "least_request", "pick_first"] {
        let channel = Channel::builder(ipv4_target(&servers))
            .policy(policy)
            .build()
            .unwrap();
        let mut seen = HashMap::<String, usize>::new();
        for _ in 0..40 {
            *seen
                .entry(backend(&hello(&channel, false).await.unwrap()))
                .or_default() += 1;
        }
        match policy {
            "pick_first" => assert_eq!(seen.len(), 1, "{policy}: {seen:?}"),
            "least_request" => assert_eq!(seen.len(), 2, "{policy}: {seen:?}"),
            _ => assert_eq!(seen.values().sum::<usize>(), 40),
        }
    }
}

#[tokio::test]
async fn bad_target_and_policy_are_typed_errors() {
    let error = Channel::builder("ipv4:1.2.3").build().unwrap_err();
    assert!(error.to_string().contains("1.2.3"), "{error}");
    let error = Channel::builder("ipv4:127.0.0.1:1")
        .policy("no_such_policy")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("no_such_policy"), "{error}");
}
