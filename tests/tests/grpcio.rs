//! The Channel black-box against gRPC servers written in another language:
//! grpcio's C-core, driven from Python (tests/python/greeter_server.py), killed
//! with SIGKILL and restarted on the same port, with and without load. Named
//! after the grpc-go tests they port.
//!
//! These need `python3` with grpcio (`scripts/test` installs it); without it
//! they fail and say what to install.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpc_lb::{Channel, ConnectivityState};
use grpc_lb_helloworld::proto::HelloRequest;
use integration_tests::{ipv4_target, GreeterProcess};
use support::*;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

/// How long a fail-fast RPC may take to fail in TRANSIENT_FAILURE: "at once",
/// with room for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(1);

fn python_servers(names: &[&str]) -> Vec<GreeterProcess> {
    names
        .iter()
        .map(|name| GreeterProcess::start_python("127.0.0.1:0", name))
        .collect()
}

fn assert_even(counts: &HashMap<String, usize>, names: &[&str], calls: usize) {
    let share = calls / names.len();
    let (low, high) = (share * 9 / 10, share * 11 / 10);
    for name in names {
        let n = counts.get(*name).copied().unwrap_or(0);
        assert!(
            (low..=high).contains(&n),
            "{name} served {n} of {calls}, outside {low}..={high}: {counts:?}"
        );
    }
    println!("spread over {names:?}: {counts:?}");
}

// grpc-go test/roundrobin_test.go: TestRoundRobin_Basic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_basic_spreads_evenly_over_python_servers() {
    let servers = python_servers(&["a", "b", "c"]);
    let channel = round_robin(&servers);
    // Discovery and connections happen with no request made.
    wait_for_ready_count(&channel, 3).await;
    assert_even(&spread(&channel, 300).await, &["a", "b", "c"], 300);
}

/// Fail-fast calls from several tasks at once, until told to stop.
struct Load {
    /// Set once the test has seen the channel drop a backend: every call
    /// started after it must succeed, and not on that backend.
    seen_loss: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Successful calls so far, to wait on.
    served: watch::Receiver<usize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>,
}

struct Call {
    after_loss: bool,
    result: Result<String, tonic::Status>,
}

impl Load {
    fn start(channel: &GrpcChannel, tasks: usize) -> Load {
        let seen_loss = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, served) = watch::channel(0);
        let count = Arc::new(count);
        let tasks = (0..tasks)
            .map(|_| {
                let (channel, seen_loss, stop, count) = (
                    channel.clone(),
                    seen_loss.clone(),
                    stop.clone(),
                    count.clone(),
                );
                tokio::spawn(async move {
                    let mut calls = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let after_loss = seen_loss.load(Ordering::SeqCst);
                        let result = hello(&channel, false).await;
                        if result.is_ok() {
                            count.send_modify(|n| *n += 1);
                        }
                        calls.push(Call { after_loss, result });
                    }
                    calls
                })
            })
            .collect();
        Load {
            seen_loss,
            stop,
            served,
            tasks,
        }
    }

    /// Waits until `more` calls beyond those so far have succeeded.
    async fn wait_for_more(&mut self, more: usize) {
        let target = *self.served.borrow() + more;
        timeout(LIMIT, self.served.wait_for(|n| *n >= target))
            .await
            .unwrap_or_else(|_| panic!("fewer than {more} calls succeeded in {LIMIT:?}"))
            .unwrap();
    }

    async fn finish(self) -> Vec<Call> {
        self.stop.store(true, Ordering::SeqCst);
        let mut calls = Vec::new();
        for task in self.tasks {
            calls.extend(task.await.unwrap());
        }
        calls
    }
}

// grpc-go test/roundrobin_test.go: TestRoundRobin_OneServerDown, under load;
// then the backend comes back (xds-test-descriptions backends_restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_one_server_down_under_load_and_back() {
    let mut servers = python_servers(&["a", "b", "c"]);
    let channel = round_robin(&servers);
    wait_for_ready_count(&channel, 3).await;

    let mut load = Load::start(&channel, 6);
    load.wait_for_more(150).await;
    let killed_at = Instant::now();
    servers[0].kill();
    wait_for_ready_count(&channel, 2).await;
    load.seen_loss.store(true, Ordering::SeqCst);
    let seen_after = killed_at.elapsed();
    // Traffic goes on, on the others.
    load.wait_for_more(300).await;
    let calls = load.finish().await;

    let mut after: HashMap<String, usize> = HashMap::new();
    let mut failed_in_flight = 0;
    for call in &calls {
        match (&call.result, call.after_loss) {
            (Ok(message), true) => *after.entry(backend(message)).or_default() += 1,
            (Ok(_), false) => {}
            (Err(status), true) => {
                panic!("a call started after the loss was seen failed: {status:?}")
            }
            (Err(status), false) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                failed_in_flight += 1;
            }
        }
    }
    assert_eq!(
        after.get("a"),
        None,
        "no call after the loss went to a: {after:?}"
    );
    let served_after: usize = after.values().sum();
    assert_even(&after, &["b", "c"], served_after);
    println!(
        "{} calls; loss seen {seen_after:?} after the kill; {failed_in_flight} calls started \
         before it failed",
        calls.len()
    );

    // Back on the same port: connected again with no request in flight, and
    // picked again.
    let restarted_at = Instant::now();
    servers[0].restart();
    wait_for_ready_count(&channel, 3).await;
    println!("ready again {:?} after the restart", restarted_at.elapsed());
    assert_even(&spread(&channel, 300).await, &["a", "b", "c"], 300);
}

// grpc-go test/roundrobin_test.go: TestRoundRobin_AllServersDown; test/balancer_test.go:
// TestWaitForReady (both the per-call option and the channel default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_all_servers_down_fails_fast_and_wait_for_ready_waits() {
    let mut servers = python_servers(&["a", "b"]);
    let channel = round_robin(&servers);
    let waiting_channel = Channel::builder(ipv4_target(&servers))
        .policy("round_robin")
        .backoff(fast_backoff())
        .wait_for_ready(true)
        .build()
        .unwrap();
    wait_for_ready_count(&channel, 2).await;
    wait_for_ready_count(&waiting_channel, 2).await;

    let killed_at = Instant::now();
    for server in &mut servers {
        server.kill();
    }
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    let to_failure = killed_at.elapsed();
    let started = Instant::now();
    let status = hello(&channel, false).await.unwrap_err();
    let to_unavailable = started.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        to_unavailable < PROMPTLY,
        "fail-fast took {to_unavailable:?}"
    );
    let named = servers
        .iter()
        .any(|s| status.message().contains(&s.addr().to_string()));
    assert!(named, "names the cause: {}", status.message());
    println!(
        "TRANSIENT_FAILURE {to_failure:?} after the kill; fail-fast UNAVAILABLE in \
         {to_unavailable:?}: {}",
        status.message()
    );

    // Waiting for ready: per call, and by the channel's default.
    wait_for_state(&waiting_channel, ConnectivityState::TransientFailure).await;
    let per_call = tokio::spawn({
        let channel = channel.clone();
        async move { hello(&channel, true).await }
    });
    let by_default = tokio::spawn({
        let channel = waiting_channel.clone();
        async move {
            say_hello(
                &channel,
                tonic::Request::new(HelloRequest { name: "t".into() }),
            )
            .await
        }
    });
    let restarted_at = Instant::now();
    servers[1].restart();
    assert_eq!(backend(&per_call.await.unwrap().unwrap()), "b");
    assert_eq!(backend(&by_default.await.unwrap().unwrap()), "b");
    println!(
        "wait-for-ready calls served {:?} after the restart",
        restarted_at.elapsed()
    );
}

// grpc-go balancer/pickfirst/pickfirst_ext_test.go: StopConnectedServer — the
// single-address restart sequence Connecting, Ready, Idle, Connecting, Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_stop_connected_server_state_sequence() {
    let server = GreeterProcess::start_python("127.0.0.1:0", "solo");
    assert_stop_connected_server_state_sequence(server).await;
}

// A graceful stop (SIGTERM: grpcio sends GOAWAY and lets calls in flight
// finish) under load: traffic moves to the other backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_under_load_moves_traffic() {
    let mut servers = python_servers(&["a", "b"]);
    let channel = round_robin(&servers);
    wait_for_ready_count(&channel, 2).await;
    let mut load = Load::start(&channel, 4);
    load.wait_for_more(100).await;
    let status = servers[0].stop().expect("it was running");
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    wait_for_ready_count(&channel, 1).await;
    load.seen_loss.store(true, Ordering::SeqCst);
    load.wait_for_more(100).await;
    let calls = load.finish().await;
    let failed: Vec<_> = calls
        .iter()
        .filter_map(|c| c.result.as_ref().err().map(|s| (c.after_loss, s)))
        .collect();
    println!("{} calls, failed: {failed:?}", calls.len());
    // No RPC fails for want of a connection: those the server never took
    // (hyper's "canceled", REFUSED_STREAM, above a GOAWAY's last stream) are
    // sent again on the other server (transparent retry, gRFC A6), and the
    // GOAWAY takes the connection out of the picker as it is read. A request
    // h2 had numbered but not written when grpcio's first GOAWAY (last
    // stream 2^31-1) arrived is failed as unprocessed too, and retried: it
    // used to go out and die with "broken pipe" when the exiting server
    // closed before its second GOAWAY.
    //
    // What is left is grpcio's own: it answers CANCELLED (Trailers-Only,
    // then RST_STREAM NO_ERROR) to streams it received after its shutdown
    // began, before its GOAWAY reached the client, and its GOAWAYs cover
    // them, so by A6 the server processed them. grpcio's and grpc-js's
    // clients fail the same calls the same way (tests/python/
    // graceful_stop_peer.py, tests/node/graceful_stop_peer.js; counts in
    // docs/channel.md). Only a call the client had sent before it read the
    // GOAWAY can meet this, never one started after the channel dropped the
    // server.
    let unserved: Vec<_> = failed
        .iter()
        .filter(|(after_loss, status)| *after_loss || status.code() != tonic::Code::Cancelled)
        .collect();
    assert!(
        unserved.is_empty(),
        "{} of {} calls failed other than by grpcio's CANCELLED at shutdown: {failed:?}",
        unserved.len(),
        calls.len()
    );
    for call in calls.iter().filter(|c| c.after_loss) {
        assert_eq!(backend(call.result.as_ref().unwrap()), "b");
    }
}
