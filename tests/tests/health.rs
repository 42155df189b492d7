//! Client-side health checking (gRFC A17) in the channel, against real tonic
//! servers on loopback whose `grpc.health.v1` status the tests flip with
//! tonic-health's `HealthReporter`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use grpc_lb::resolve::{Address, Endpoint};
use grpc_lb::{Channel, ChannelEvent, ConnectivityState};
use grpc_lb_helloworld::proto::GreeterServer;
use grpc_lb_helloworld::NamedGreeter;
use support::{backend, hello, wait_for_ready_count, wait_for_state, GrpcChannel, LIMIT};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

const SERVICE: &str = "helloworld.Greeter";

/// A Greeter named `name` on 127.0.0.1, with the health service beside it
/// (SERVING) unless `with_health` is false, counting the health watches open
/// on it.
struct Backend {
    addr: SocketAddr,
    reporter: Option<HealthReporter>,
    /// How many `Health/Watch` streams are open on the server.
    watches: watch::Receiver<usize>,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    async fn start(name: &str, with_health: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (count, watches) = watch::channel(0);
        let mut router = tonic::transport::Server::builder()
            .add_service(GreeterServer::new(NamedGreeter::new(name)));
        let reporter = if with_health {
            let reporter = HealthReporter::new();
            reporter
                .set_service_status(SERVICE, ServingStatus::Serving)
                .await;
            router = router.add_service(HealthServer::new(CountingHealth {
                inner: HealthService::from_health_reporter(reporter.clone()),
                open: Arc::new(count),
            }));
            Some(reporter)
        } else {
            None
        };
        tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        Backend {
            addr,
            reporter,
            watches,
            _stop: stop,
        }
    }

    async fn set(&self, status: ServingStatus) {
        let reporter = self.reporter.as_ref().expect("a backend with health");
        reporter.set_service_status(SERVICE, status).await;
    }

    async fn wait_for_watches(&self, open: usize) {
        let mut watches = self.watches.clone();
        timeout(LIMIT, watches.wait_for(|n| *n == open))
            .await
            .unwrap_or_else(|_| panic!("never {open} health watches on {}", self.addr))
            .unwrap();
    }
}

/// tonic's health service, counting the watch streams it has open.
struct CountingHealth {
    inner: HealthService,
    open: Arc<watch::Sender<usize>>,
}

/// A watch stream that counts itself open until the client goes.
struct CountedStream {
    inner: <HealthService as Health>::WatchStream,
    open: Arc<watch::Sender<usize>>,
}

impl Stream for CountedStream {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.send_modify(|n| *n -= 1);
    }
}

#[tonic::async_trait]
impl Health for CountingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = CountedStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inner = self.inner.watch(request).await?.into_inner();
        self.open.send_modify(|n| *n += 1);
        Ok(Response::new(CountedStream {
            inner,
            open: self.open.clone(),
        }))
    }
}

fn target(backends: &[&Backend]) -> String {
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    format!("ipv4:{}", addrs.join(","))
}

/// A channel with `policy` and health checking of [`SERVICE`] turned on by
/// the service config, as a deployment would.
fn channel(target: String, policy: &str) -> GrpcChannel {
    let config = format!(
        r#"{{"loadBalancingConfig": [{{"{policy}": {{}}}}],
            "healthCheckConfig": {{"serviceName": "{SERVICE}"}}}}"#
    );
    Channel::builder(target)
        .service_config(config.parse().unwrap())
        .backoff(support::fast_backoff())
        .build()
        .unwrap()
}

/// `calls` sequential calls, counted per backend.
async fn spread(channel: &GrpcChannel, calls: usize) -> HashMap<String, usize> {
    support::spread(channel, calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_serving_backend_leaves_the_picker_and_comes_back() {
    let a = Backend::start("a", true).await;
    let b = Backend::start("b", true).await;
    let c = Backend::start("c", true).await;
    let channel = channel(target(&[&a, &b, &c]), "round_robin");
    channel.connect();
    wait_for_ready_count(&channel, 3).await;
    let counts = spread(&channel, 30).await;
    assert_eq!(counts.len(), 3, "{counts:?}");

    let mut events = channel.events();
    b.set(ServingStatus::NotServing).await;
    wait_for_ready_count(&channel, 2).await;
    // The policy was told why: the subchannel is TRANSIENT_FAILURE with the
    // health status as its last error.
    let b_address = Address::from(b.addr);
    let reason = timeout(LIMIT, async {
        loop {
            match events.recv().await.unwrap() {
                ChannelEvent::SubchannelState {
                    address,
                    to: ConnectivityState::TransientFailure,
                    last_error,
                    ..
                } if address == b_address => break last_error,
                _ => {}
            }
        }
    })
    .await
    .expect("b reported TRANSIENT_FAILURE");
    let reason = reason.expect("a last error").to_string();
    assert!(reason.contains("NOT_SERVING"), "{reason}");
    assert_eq!(channel.state(), ConnectivityState::Ready);
    let counts = spread(&channel, 30).await;
    assert_eq!(counts.get("b"), None, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 30);

    b.set(ServingStatus::Serving).await;
    wait_for_ready_count(&channel, 3).await;
    let counts = spread(&channel, 30).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_not_serving_fails_fast_with_the_health_status() {
    let a = Backend::start("a", true).await;
    let b = Backend::start("b", true).await;
    a.set(ServingStatus::NotServing).await;
    b.set(ServingStatus::NotServing).await;
    let channel = channel(target(&[&a, &b]), "round_robin");
    channel.connect();
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    assert!(channel.ready_addresses().is_empty());
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("NOT_SERVING"), "{status:?}");

    // A wait-for-ready call waits through it and is served once one serves.
    let waiting = tokio::spawn({
        let channel = channel.clone();
        async move { hello(&channel, true).await }
    });
    a.set(ServingStatus::Serving).await;
    let message = waiting.await.unwrap().unwrap();
    assert_eq!(backend(&message), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_health_service_is_used() {
    let with = Backend::start("with", true).await;
    let without = Backend::start("without", false).await;
    let channel = channel(target(&[&with, &without]), "round_robin");
    channel.connect();
    wait_for_ready_count(&channel, 2).await;
    let counts = spread(&channel, 20).await;
    assert_eq!(counts.get("with"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("without"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_does_not_health_check() {
    // As in gRPC (A17, grpc-go's pick_first): the one connection is used
    // whatever the health service says, and no watch is opened.
    let a = Backend::start("a", true).await;
    a.set(ServingStatus::NotServing).await;
    let channel = channel(target(&[&a]), "pick_first");
    assert_eq!(backend(&hello(&channel, false).await.unwrap()), "a");
    assert_eq!(channel.state(), ConnectivityState::Ready);
    assert_eq!(*a.watches.borrow(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_option_turns_health_checking_on_too() {
    let a = Backend::start("a", true).await;
    let b = Backend::start("b", true).await;
    a.set(ServingStatus::NotServing).await;
    let channel = Channel::builder(target(&[&a, &b]))
        .policy("least_request")
        .health_check(SERVICE)
        .build()
        .unwrap();
    channel.connect();
    wait_for_ready_count(&channel, 1).await;
    let counts = spread(&channel, 10).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_ends_with_the_subchannel_and_restarts_with_a_new_connection() {
    let a = Backend::start("a", true).await;
    let b = Backend::start("b", true).await;
    let (channel, resolver) = {
        let (resolver, handle) = grpc_lb::resolve::ManualResolver::new("health");
        let mut registry = grpc_lb::resolve::Registry::with_defaults();
        registry.register(resolver);
        let channel = Channel::builder("health:///greeter")
            .resolver_registry(registry)
            .policy("round_robin")
            .health_check(SERVICE)
            .backoff(support::fast_backoff())
            .build()
            .unwrap();
        (channel, handle)
    };
    let endpoints = |backends: &[&Backend]| -> Vec<Endpoint> {
        backends.iter().map(|b| Endpoint::new(b.addr)).collect()
    };
    resolver.reset(endpoints(&[&a, &b]));
    wait_for_ready_count(&channel, 2).await;
    a.wait_for_watches(1).await;
    b.wait_for_watches(1).await;

    // Removed from the resolver: the subchannel goes, and its watch with it.
    resolver.reset(endpoints(&[&b]));
    a.wait_for_watches(0).await;
    wait_for_ready_count(&channel, 1).await;
    assert_eq!(*b.watches.borrow(), 1);

    // Back again: a new subchannel, a new connection, a new watch.
    resolver.reset(endpoints(&[&a, &b]));
    wait_for_ready_count(&channel, 2).await;
    a.wait_for_watches(1).await;
}

/// The same against grpcio's health service (C-core, from Python), flipped by
/// signals: NOT_SERVING leaves the picker, SERVING comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_health_status_flips_move_traffic() {
    let servers = [
        integration_tests::GreeterProcess::start_python("127.0.0.1:0", "a"),
        integration_tests::GreeterProcess::start_python("127.0.0.1:0", "b"),
    ];
    let channel = channel(integration_tests::ipv4_target(&servers), "round_robin");
    channel.connect();
    wait_for_ready_count(&channel, 2).await;
    let counts = spread(&channel, 20).await;
    assert_eq!(counts.len(), 2, "{counts:?}");

    servers[1].set_serving(false);
    wait_for_ready_count(&channel, 1).await;
    let counts = spread(&channel, 20).await;
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");

    servers[1].set_serving(true);
    wait_for_ready_count(&channel, 2).await;
    let counts = spread(&channel, 20).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
}

/// A health service whose watches answer only what the test sends them.
struct Scripted {
    watches: tokio::sync::mpsc::UnboundedSender<
        tokio::sync::mpsc::UnboundedSender<Result<HealthCheckResponse, Status>>,
    >,
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented("watch only"))
    }

    type WatchStream =
        tokio_stream::wrappers::UnboundedReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (answers, stream) = tokio::sync::mpsc::unbounded_channel();
        self.watches.send(answers).unwrap();
        Ok(Response::new(
            tokio_stream::wrappers::UnboundedReceiverStream::new(stream),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_until_the_first_answer_and_a_call_waits_for_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (watches, mut opened) = tokio::sync::mpsc::unbounded_channel();
    let router = tonic::transport::Server::builder()
        .add_service(GreeterServer::new(NamedGreeter::new("a")))
        .add_service(HealthServer::new(Scripted { watches }));
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = channel(format!("ipv4:{addr}"), "round_robin");
    channel.connect();
    let watch = timeout(LIMIT, opened.recv())
        .await
        .expect("a health watch")
        .unwrap();
    // Connected, watch open, no answer yet: CONNECTING, nothing to pick.
    assert_eq!(channel.state(), ConnectivityState::Connecting);
    assert!(channel.ready_addresses().is_empty());
    let waiting = tokio::spawn({
        let channel = channel.clone();
        async move { hello(&channel, false).await }
    });
    watch
        .send(Ok(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
        .unwrap();
    let message = waiting.await.unwrap().unwrap();
    assert_eq!(backend(&message), "a");
    assert_eq!(channel.state(), ConnectivityState::Ready);
}
