//! What a call through the default channel is guaranteed (issue 14), against
//! real servers: our tonic server frozen with SIGSTOP, grpcio servers that
//! stop or rotate their connections under load, and a bare h2 server that
//! answers the way no well-behaved gRPC server does on purpose (resets,
//! refusals, HTTP errors, a connection cut mid-response). docs/channel.md
//! ("Guarantees") lists each rule and the test here that shows it.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use grpc_lb::{Channel, WaitForReady};
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use http_body_util::BodyExt;
use integration_tests::{ipv4_target, GreeterProcess};
use support::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::{timeout, Instant};
use tower::{Service, ServiceExt};

// ===== a bare HTTP/2 server =====

type Respond = h2::server::SendResponse<Bytes>;

/// An HTTP/2 server on loopback whose every request is handed, with its
/// index, to a script.
struct RawServer {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    requests: Arc<AtomicUsize>,
}

impl RawServer {
    async fn start<F, Fut>(script: F) -> RawServer
    where
        F: Fn(usize, http::Request<h2::RecvStream>, Respond) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (kept, counted) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (script, counted) = (script.clone(), counted.clone());
                let connection = tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((request, respond))) = connection.accept().await {
                        let index = counted.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(script(index, request, respond));
                    }
                });
                kept.lock().unwrap().push(connection.abort_handle());
            }
        });
        RawServer {
            addr,
            connections,
            requests,
        }
    }

    /// Cuts every connection: its socket closes with no GOAWAY.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn channel(&self) -> GrpcChannel {
        Channel::builder(format!("ipv4:{}", self.addr))
            .backoff(fast_backoff())
            .build()
            .unwrap()
    }
}

fn grpc_headers() -> http::Response<()> {
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

/// A length-prefixed `HelloReply { message }`.
fn reply_frame(message: &str) -> Bytes {
    let mut frame = vec![
        0,
        0,
        0,
        0,
        (message.len() + 2) as u8,
        0x0a,
        message.len() as u8,
    ];
    frame.extend_from_slice(message.as_bytes());
    Bytes::from(frame)
}

fn trailers(status: u32) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", status.into());
    trailers
}

/// Answers a SayHello as a gRPC server does.
fn answer(mut respond: Respond, message: &str) {
    let mut stream = respond.send_response(grpc_headers(), false).unwrap();
    stream.send_data(reply_frame(message), false).unwrap();
    stream.send_trailers(trailers(0)).unwrap();
}

/// The reason the client reset `respond`'s stream with.
async fn reset_by_client(mut respond: Respond) -> h2::Reason {
    std::future::poll_fn(|cx| respond.poll_reset(cx))
        .await
        .unwrap()
}

fn request_with_timeout(timeout: Duration) -> tonic::Request<HelloRequest> {
    let mut request = tonic::Request::new(HelloRequest { name: "t".into() });
    request.set_timeout(timeout);
    request
}

/// A SayHello as raw HTTP, for tests that read the response body themselves.
fn raw_say_hello() -> http::Request<tonic::body::Body> {
    http::Request::post("/helloworld.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from_static(&[0, 0, 0, 0, 0]),
        )))
        .unwrap()
}

// ===== 1. deadlines =====

// Issue 14: a server frozen by SIGSTOP let a 1 s call finish OK after 3 s.
// grpc-go's TestTimeoutOnDeadServer, with the server frozen after READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_ends_a_call_to_a_frozen_server() {
    let mut servers = servers(&["a"]);
    let channel = round_robin(&servers);
    let with_default = Channel::builder(ipv4_target(&servers))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    hello(&channel, false).await.unwrap();
    hello(&with_default, false).await.unwrap();
    servers[0].pause();
    let started = Instant::now();
    let (own, default) = tokio::join!(
        say_hello(&channel, request_with_timeout(Duration::from_secs(1))),
        hello(&with_default, false),
    );
    let took = started.elapsed();
    servers[0].resume();
    for status in [own.unwrap_err(), default.unwrap_err()] {
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }
    assert!(
        took >= Duration::from_secs(1),
        "not before the deadline: {took:?}"
    );
    println!("both calls failed DEADLINE_EXCEEDED after {took:?}");
    hello(&channel, false).await.unwrap();
}

// grpc-go IT/client_stream.go Close: an RPC past its deadline resets its
// stream with CANCEL, so that the server can stop; grpc-timeout is the time
// left (encode_duration.go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_deadline_the_stream_is_cancelled_and_the_server_saw_the_time_left() {
    let (seen, mut seen_rx) = mpsc::unbounded_channel();
    let server = RawServer::start(move |index, request, mut respond| {
        let seen = seen.clone();
        async move {
            let timeout = request.headers()["grpc-timeout"].clone();
            if index == 1 {
                // The second call gets its headers and a message, then nothing.
                let mut stream = respond.send_response(grpc_headers(), false).unwrap();
                stream.send_data(reply_frame("partial"), false).unwrap();
                let reason = std::future::poll_fn(|cx| stream.poll_reset(cx))
                    .await
                    .unwrap();
                let _ = seen.send((timeout, reason));
                return;
            }
            let reason = reset_by_client(respond).await;
            let _ = seen.send((timeout, reason));
        }
    })
    .await;
    let channel = server.channel();
    for phase in ["waiting for the headers", "reading the body"] {
        let status = say_hello(&channel, request_with_timeout(Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::DeadlineExceeded,
            "{phase}: {status:?}"
        );
        let (grpc_timeout, reason) = timeout(LIMIT, seen_rx.recv()).await.unwrap().unwrap();
        assert_eq!(reason, h2::Reason::CANCEL, "{phase}");
        let text = grpc_timeout.to_str().unwrap();
        let left = grpc_lb::core::grpc_timeout::parse_value(&grpc_timeout).unwrap();
        assert!(text.ends_with('u'), "grpc-go's unit for 300 ms: {text}");
        assert!(
            left <= Duration::from_millis(300) && !left.is_zero(),
            "{text}"
        );
        println!("{phase}: the server saw grpc-timeout {text}, then RST_STREAM(CANCEL)");
    }
}

// ===== 2. transparent retry =====

// gRFC A6: a stream the server refused (REFUSED_STREAM) was not processed,
// and is sent again, with its body, on a new pick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_sent_again_with_its_body() {
    let server = RawServer::start(|index, request, mut respond| async move {
        if index == 0 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            return;
        }
        let body = request.into_body();
        let bytes = collect_h2(body).await;
        answer(respond, &format!("body of {} bytes", bytes.len()));
    })
    .await;
    let channel = server.channel();
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest {
            name: "0123456789".into(),
        })
        .await
        .unwrap();
    // 5 bytes of frame header, 2 of field tag and length, 10 of name.
    assert_eq!(reply.into_inner().message, "body of 17 bytes");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

async fn collect_h2(mut body: h2::RecvStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

// gRFC A6: only once per call. A server that refuses every stream fails the
// call UNAVAILABLE after two attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refused_twice_fails_unavailable() {
    let server = RawServer::start(|_, _, mut respond| async move {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    })
    .await;
    let status = hello(&server.channel(), false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

/// Fail-fast SayHellos from `tasks` tasks until `stop` is set, each asking
/// the server to take `delay_ms`; returns (calls, failures).
fn load(
    channel: &GrpcChannel,
    tasks: usize,
    delay_ms: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<tonic::Status>)>> {
    (0..tasks)
        .map(|_| {
            let (channel, stop, done) = (channel.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut client = GreeterClient::new(channel);
                let (mut calls, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let mut request = tonic::Request::new(HelloRequest { name: "t".into() });
                    if delay_ms > 0 {
                        let behavior = format!("sleep-{delay_ms}").parse().unwrap();
                        request.metadata_mut().insert("rpc-behavior", behavior);
                    }
                    calls += 1;
                    match timeout(LIMIT, client.say_hello(request)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(status)) => failed.push(status),
                        Err(_) => panic!("a call hung"),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                (calls, failed)
            })
        })
        .collect()
}

async fn wait_for_calls(done: &AtomicUsize, calls: usize) {
    // The count has no event of its own: look at it every few milliseconds.
    timeout(LIMIT * 3, async {
        while done.load(Ordering::SeqCst) < calls {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {calls} calls in {:?}", LIMIT * 3));
}

async fn finish(
    stop: &std::sync::atomic::AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<tonic::Status>)>>,
) -> (usize, Vec<tonic::Status>) {
    stop.store(true, Ordering::SeqCst);
    let (mut calls, mut failed) = (0, Vec::new());
    for task in tasks {
        let (n, f) = task.await.unwrap();
        calls += n;
        failed.extend(f);
    }
    (calls, failed)
}

// Issue 14: grpcio servers rotating their connections (max_connection_age
// 300 ms, 5 s grace) failed ~48 of 55,000 RPCs the servers never saw with
// UNAVAILABLE "operation was canceled"; grpc-go, grpcio and grpc-js fail 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_rotated_by_max_connection_age_under_load_fail_no_call() {
    let options = [
        ("grpc.max_connection_age_ms", 300),
        ("grpc.max_connection_age_grace_ms", 5000),
    ];
    let servers: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| GreeterProcess::start_python_with_options("127.0.0.1:0", name, &options))
        .collect();
    let channel = round_robin(&servers);
    wait_for_ready_count(&channel, 2).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks = load(&channel, 8, 0, stop.clone(), done.clone());
    // Long enough for each server to rotate its connection several times.
    wait_for_calls(&done, 20_000).await;
    let (calls, failed) = finish(&stop, tasks).await;
    println!(
        "{calls} calls over rotating connections, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {calls} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

// Issue 14: grpcio with max_concurrent_streams 2 and 32 calls in flight
// (5 ms each) failed 71-85 of 1,000 with UNAVAILABLE "http2 error"; grpc-js
// fails 0-1, C-core and grpc-go 1.33 more (they retry a refused stream once,
// as here). grpcio refuses streams the client kept within the limit: it
// counts a stream until its call is freed, after the client saw it end.
// After a refusal the connection opens fewer streams until one opened then
// ends well, so the transparent retry mostly waits for a stream instead of
// being refused again: 0 failed in 182 of 185 loaded runs, 1 in each of the
// others (docs/channel.md). A call may fail only by a second refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refused_at_max_concurrent_streams_fail_only_when_refused_twice() {
    let server = GreeterProcess::start_python_with_options(
        "127.0.0.1:0",
        "narrow",
        &[("grpc.max_concurrent_streams", 2)],
    );
    let channel = round_robin(std::slice::from_ref(&server));
    wait_for_ready_count(&channel, 1).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks = load(&channel, 32, 5, stop.clone(), done.clone());
    wait_for_calls(&done, 1000).await;
    let (calls, failed) = finish(&stop, tasks).await;
    println!(
        "{calls} calls at max_concurrent_streams 2, {} failed: {failed:?}",
        failed.len()
    );
    for status in &failed {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        let refused = format!("{status:?}").contains("REFUSED_STREAM");
        assert!(refused, "only a second refusal fails a call: {status:?}");
    }
}

// ===== 3. status codes =====

// core doc/statuscodes.md: data sent, then the connection broke, is
// UNAVAILABLE (issue 14: it was UNKNOWN "h2 protocol error: error reading a
// body from connection"); an RST_STREAM mid-body is its code's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_body_is_unavailable_and_a_reset_its_codes_status() {
    let (started, mut started_rx) = mpsc::unbounded_channel::<()>();
    let server = RawServer::start(move |index, _, mut respond| {
        let started = started.clone();
        async move {
            let mut stream = respond.send_response(grpc_headers(), false).unwrap();
            stream.send_data(reply_frame("partial"), false).unwrap();
            match index {
                0 => {
                    let _ = started.send(());
                    // Held open until the test cuts the connection.
                    std::future::pending::<()>().await;
                }
                _ => stream.send_reset(h2::Reason::ENHANCE_YOUR_CALM),
            }
            drop(stream);
        }
    })
    .await;
    let mut channel = server.channel();
    let response = channel
        .ready()
        .await
        .unwrap()
        .call(raw_say_hello())
        .await
        .unwrap();
    timeout(LIMIT, started_rx.recv()).await.unwrap().unwrap();
    server.cut();
    let status = timeout(LIMIT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // pick_first went IDLE with the connection; this call reconnects.
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
}

// core doc/http-grpc-status-mapping.md and grpc-go's HTTPStatusConvTab: a
// response without grpc-status gets its HTTP status's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_status_without_grpc_status_is_mapped() {
    let cases: [(u16, &str, tonic::Code); 5] = [
        (404, "text/plain", tonic::Code::Unimplemented),
        (503, "text/html", tonic::Code::Unavailable),
        (401, "application/grpc", tonic::Code::Unauthenticated),
        (400, "text/plain", tonic::Code::Internal),
        (200, "text/html", tonic::Code::Unknown),
    ];
    let server = RawServer::start(move |index, _, mut respond| async move {
        let (status, kind, _) = cases[index % cases.len()];
        let response = http::Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(())
            .unwrap();
        let mut stream = respond.send_response(response, false).unwrap();
        stream
            .send_data(Bytes::from_static(b"<html>not gRPC</html>"), true)
            .unwrap();
    })
    .await;
    let channel = server.channel();
    for (status, kind, code) in cases {
        let got = hello(&channel, false).await.unwrap_err();
        assert_eq!(got.code(), code, "HTTP {status} {kind}: {got:?}");
    }
}

// ===== 5. counted at the final status =====

// grpc-lb issue 13, defect 5: stats, least_request and outlier detection
// counted a call when its response headers arrived, and a failure status in
// trailers as a success. A48 and grpc-go's Done count at the final status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_defect_5_a_failure_status_in_trailers_counts_as_a_failure_at_the_end() {
    let (release, released) = mpsc::unbounded_channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(released));
    let server = RawServer::start(move |_, _, mut respond| {
        let released = released.clone();
        async move {
            let mut stream = respond.send_response(grpc_headers(), false).unwrap();
            stream.send_data(reply_frame("hi"), false).unwrap();
            released.lock().await.recv().await;
            stream.send_trailers(trailers(13)).unwrap();
        }
    })
    .await;
    let channel = server.channel();
    let mut client = GreeterClient::new(channel.clone());
    let call = tokio::spawn(async move { client.say_hello(HelloRequest::default()).await });
    // The headers and the message are in; the status is not.
    timeout(LIMIT, async {
        while server.requests.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let stats = channel.stats();
    assert_eq!(
        (
            stats.calls_started,
            stats.calls_succeeded,
            stats.calls_failed
        ),
        (1, 0, 0),
        "in flight until its status"
    );
    release.send(()).unwrap();
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    let stats = channel.stats();
    assert_eq!(
        (
            stats.calls_started,
            stats.calls_succeeded,
            stats.calls_failed
        ),
        (1, 0, 1)
    );
}

// ===== 4. close =====

// Issue 14: `oneshot` drops the last clone after `call`; the worker never
// said SHUTDOWN, so a call waiting for a connection hung forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_fails_a_waiting_call_at_once() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let channel = Channel::builder(format!("ipv4:{dead}"))
        .wait_for_ready(true)
        .build()
        .unwrap();
    let mut request = raw_say_hello();
    request.extensions_mut().insert(WaitForReady(true));
    let error = timeout(LIMIT, channel.oneshot(request))
        .await
        .unwrap()
        .unwrap_err();
    let status = error.status().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "channel is closed");
}

/// Waits until the runtime runs no more than `tasks` tasks.
async fn wait_for_tasks(tasks: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    // Tasks ending raise no event: look again after letting them run.
    timeout(LIMIT, async {
        while metrics.num_alive_tasks() > tasks {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} tasks still alive, {tasks} before the channels",
            metrics.num_alive_tasks()
        )
    });
}

// grpc-go clientconn.go Close, test/clientconn_test.go
// TestClientConnClose_WithPendingRPC: a pending RPC fails at once; here an
// RPC in flight finishes, then every task of the channels ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_waiting_calls_lets_calls_in_flight_finish_and_ends_every_task() {
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let server = GreeterProcess::start_python("127.0.0.1:0", "slow");
    let live = Channel::builder(ipv4_target(std::slice::from_ref(&server)))
        .build()
        .unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let waiting = Channel::builder(format!("ipv4:{dead}"))
        .wait_for_ready(true)
        .backoff(fast_backoff())
        .build()
        .unwrap();
    hello(&live, false).await.unwrap();

    let mut client = GreeterClient::new(live.clone());
    let (sent, on_sent) = oneshot::channel();
    let in_flight = tokio::spawn(async move {
        let mut request = tonic::Request::new(HelloRequest {
            name: "late".into(),
        });
        request
            .metadata_mut()
            .insert("rpc-behavior", "sleep-500".parse().unwrap());
        let call = client.say_hello(request);
        let _ = sent.send(());
        call.await
    });
    let pending = tokio::spawn({
        let waiting = waiting.clone();
        async move { hello(&waiting, true).await }
    });
    on_sent.await.unwrap();
    // The in-flight call is on the wire once the server has it: wait for
    // the channel to count it started and its endpoint to be loaded.
    timeout(LIMIT, async {
        while live.stats().calls_started < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    waiting.close();
    live.close();
    let status = pending.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "channel is closed");
    let status = hello(&live, false).await.unwrap_err();
    assert_eq!(
        status.message(),
        "channel is closed",
        "no new call after close"
    );
    drop((live, waiting));
    let reply = in_flight.await.unwrap().expect("a call in flight finishes");
    assert_eq!(reply.into_inner().message, "Hello late from slow");
    wait_for_tasks(before).await;
}
