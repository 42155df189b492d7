//! Retries (gRFC A6) and transparent retry over a real Channel and real
//! servers: what the server sees of each attempt, and what a client under load
//! sees when a backend dies or drains.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_retry::{Retry, RetryLayer};
use grpc_lb_service_config::ServiceConfig;
use integration_tests::ipv4_target;
use support::{fast_backoff, GrpcChannel, LIMIT};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tonic::{Code, Status};
use tower::Layer;

type RetryChannel = Retry<GrpcChannel>;

fn retry_config(max_attempts: u32, throttling: &str) -> ServiceConfig {
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "helloworld.Greeter"}}],
            "retryPolicy": {{"maxAttempts": {max_attempts}, "initialBackoff": "0.01s",
                "maxBackoff": "0.05s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"]}}}}]{throttling}}}"#
    )
    .parse()
    .unwrap()
}

/// A Greeter that fails its first `failures` calls with `code`, recording the
/// `grpc-previous-rpc-attempts` each call carried.
struct Flaky {
    failures: usize,
    code: Code,
    pushback: Option<&'static str>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Greeter for Flaky {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, Status> {
        let previous = request
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let call = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(previous);
            seen.len()
        };
        if call <= self.failures {
            let mut status = Status::new(self.code, format!("call {call} fails"));
            if let Some(ms) = self.pushback {
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", ms.parse().unwrap());
            }
            return Err(status);
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("call {call} succeeds"),
        }))
    }
}

/// Serves `greeter` in this process until the returned sender fires or drops.
async fn serve(greeter: impl Greeter) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(greeter))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    (addr, stop)
}

fn channel(target: &str, config: ServiceConfig) -> (RetryChannel, RetryLayer) {
    let channel = Channel::builder(target)
        .policy("round_robin")
        .backoff(fast_backoff())
        .build()
        .unwrap();
    let layer = RetryLayer::new(config);
    (layer.layer(channel), layer)
}

async fn hello(client: &RetryChannel) -> Result<String, Status> {
    let mut client = GreeterClient::new(client.clone());
    let request = tonic::Request::new(HelloRequest { name: "t".into() });
    timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call ends")
        .map(|r| r.into_inner().message)
}

fn flaky(
    failures: usize,
    code: Code,
    pushback: Option<&'static str>,
) -> (Flaky, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let greeter = Flaky {
        failures,
        code,
        pushback,
        seen: seen.clone(),
    };
    (greeter, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_from_the_resolvers_service_config_is_followed() {
    let (greeter, seen) = flaky(2, Code::Unavailable, None);
    let (addr, _stop) = serve(greeter).await;
    let (channel, resolver) = support::manual_channel("round_robin", fast_backoff());
    let layer = RetryLayer::following({
        let channel = channel.clone();
        move || channel.service_config()
    });
    let client = layer.layer(channel.clone());

    resolver.reset([grpc_lb::resolve::Endpoint::new(addr)]);
    let json = r#"{"methodConfig": [{"name": [{"service": "helloworld.Greeter"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;
    let mut events = channel.events();
    resolver.service_config(json);
    timeout(LIMIT, async {
        while channel.service_config().is_none() {
            let _ = events.recv().await;
        }
    })
    .await
    .expect("the channel takes the resolver's config");

    assert_eq!(hello(&client).await.unwrap(), "call 3 succeeds");
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some("1".to_owned()), Some("2".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_status_is_retried_with_previous_attempts_counted() {
    let (greeter, seen) = flaky(2, Code::Unavailable, None);
    let (addr, _stop) = serve(greeter).await;
    let (client, _) = channel(&format!("ipv4:{addr}"), retry_config(3, ""));
    assert_eq!(hello(&client).await.unwrap(), "call 3 succeeds");
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some("1".to_owned()), Some("2".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_stop_at_max_attempts_capped_at_five() {
    let (greeter, seen) = flaky(usize::MAX, Code::Unavailable, None);
    let (addr, _stop) = serve(greeter).await;
    let (client, _) = channel(&format!("ipv4:{addr}"), retry_config(100, ""));
    let status = hello(&client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "call 5 fails");
    assert_eq!(seen.lock().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_codes_are_not_retried() {
    let (greeter, seen) = flaky(1, Code::Internal, None);
    let (addr, _stop) = serve(greeter).await;
    let (client, _) = channel(&format!("ipv4:{addr}"), retry_config(5, ""));
    assert_eq!(hello(&client).await.unwrap_err().code(), Code::Internal);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_pushback_stops_retries_and_a_valid_one_is_honoured() {
    let (greeter, seen) = flaky(1, Code::Unavailable, Some("-1"));
    let (addr, _stop) = serve(greeter).await;
    let (client, _) = channel(&format!("ipv4:{addr}"), retry_config(5, ""));
    assert_eq!(hello(&client).await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (greeter, seen) = flaky(1, Code::Unavailable, Some("300"));
    let (addr, _stop) = serve(greeter).await;
    let (client, _) = channel(&format!("ipv4:{addr}"), retry_config(5, ""));
    let started = tokio::time::Instant::now();
    assert_eq!(hello(&client).await.unwrap(), "call 2 succeeds");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_stops_retries_once_half_the_tokens_are_gone() {
    let (greeter, seen) = flaky(usize::MAX, Code::Unavailable, None);
    let (addr, _stop) = serve(greeter).await;
    let throttling = r#", "retryThrottling": {"maxTokens": 4, "tokenRatio": 0.1}"#;
    let (client, layer) = channel(&format!("ipv4:{addr}"), retry_config(5, throttling));
    // 4 tokens: the first failure leaves 3 (a retry), the second 2, which is
    // half, so the throttle stops retries there.
    hello(&client).await.unwrap_err();
    assert_eq!(seen.lock().unwrap().len(), 2);
    hello(&client).await.unwrap_err();
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(layer.throttle().unwrap().tokens(), 1.0);
}

/// Calls from `tasks` tasks until `stop` is set, counting replies per backend
/// and failures by code.
struct Load {
    replies: Mutex<HashMap<String, usize>>,
    failures: Mutex<Vec<Status>>,
    calls: AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
    /// Fires after every reply.
    progress: tokio::sync::Notify,
}

impl Load {
    fn start(client: &RetryChannel, tasks: usize) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
        let load = Arc::new(Load {
            replies: Mutex::new(HashMap::new()),
            failures: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            stop: Default::default(),
            progress: tokio::sync::Notify::new(),
        });
        let handles = (0..tasks)
            .map(|_| {
                let load = load.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    while !load.stop.load(Ordering::Relaxed) {
                        load.calls.fetch_add(1, Ordering::Relaxed);
                        match hello(&client).await {
                            Ok(message) => {
                                let backend = message.rsplit(' ').next().unwrap().to_owned();
                                *load.replies.lock().unwrap().entry(backend).or_default() += 1;
                                load.progress.notify_waiters();
                            }
                            Err(status) => load.failures.lock().unwrap().push(status),
                        }
                    }
                })
            })
            .collect();
        (load, handles)
    }

    fn replies_from(&self, backend: &str) -> usize {
        self.replies
            .lock()
            .unwrap()
            .get(backend)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `backend` has answered `more` calls beyond what it had.
    async fn wait_for_replies(&self, backend: &str, more: usize) {
        let target = self.replies_from(backend) + more;
        timeout(LIMIT, async {
            loop {
                let progress = self.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if self.replies_from(backend) >= target {
                    return;
                }
                progress.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{backend} never answered {more} more calls"));
    }

    fn assert_no_failures(&self) {
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} of {} RPCs failed, first: {:?}",
            failures.len(),
            self.calls.load(Ordering::Relaxed),
            failures.first()
        );
    }

    async fn stop(&self, handles: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in handles {
            handle.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_four_backends_under_load_fails_no_rpc_with_retries_on() {
    let mut servers = support::servers(&["a", "b", "c", "d"]);
    let target = ipv4_target(&servers);
    let (client, _) = channel(&target, retry_config(5, ""));
    let (load, handles) = Load::start(&client, 16);
    for name in ["a", "b", "c", "d"] {
        load.wait_for_replies(name, 50).await;
    }
    servers[0].kill();
    for name in ["b", "c", "d"] {
        load.wait_for_replies(name, 300).await;
    }
    servers[0].restart();
    load.wait_for_replies("a", 50).await;
    load.stop(handles).await;
    load.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_backend_fails_no_rpc_without_a_retry_policy() {
    let mut backends = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(grpc_lb_helloworld::serve(
            listener,
            grpc_lb_helloworld::NamedGreeter::new(name),
            async {
                let _ = stopped.await;
            },
        ));
        backends.push((addr, stop, server));
    }
    let target = format!(
        "ipv4:{}",
        backends
            .iter()
            .map(|(a, _, _)| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let (client, _) = channel(&target, ServiceConfig::default());
    let (load, handles) = Load::start(&client, 16);
    for name in ["a", "b", "c", "d"] {
        load.wait_for_replies(name, 50).await;
    }
    let (_, stop, server) = backends.remove(0);
    // A graceful shutdown: GOAWAY, in-flight calls finish, then the server exits.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    for name in ["b", "c", "d"] {
        load.wait_for_replies(name, 300).await;
    }
    load.stop(handles).await;
    load.assert_no_failures();
}
