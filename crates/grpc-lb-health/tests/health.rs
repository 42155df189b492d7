//! Health checking against a real tonic server on loopback whose health
//! status is flipped by the test.

use std::time::Duration;

use grpc_lb_backoff::BackoffConfig;
use grpc_lb_connect::{Http2Connection, Http2Connector};
use grpc_lb_core::ConnectivityState::{self, Connecting, Ready, TransientFailure};
use grpc_lb_health::{HealthCheck, HealthWatch};
use grpc_lb_helloworld::proto::GreeterServer;
use grpc_lb_helloworld::NamedGreeter;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;
use tower::ServiceExt;

const SERVICE: &str = "helloworld.Greeter";
const LIMIT: Duration = Duration::from_secs(10);

struct Server {
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// A Greeter server, with the health service beside it when `reporter` is
/// given.
async fn server(with_health: bool) -> (Server, Option<HealthReporter>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut router =
        tonic::transport::Server::builder().add_service(GreeterServer::new(NamedGreeter::new("a")));
    let reporter = if with_health {
        let (reporter, service) = tonic_health::server::health_reporter();
        router = router.add_service(service);
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
    (Server { addr, _stop: stop }, reporter)
}

async fn connect(server: &Server) -> Http2Connection<tonic::body::Body> {
    Http2Connector::new().oneshot(server.addr).await.unwrap()
}

fn fast_check() -> HealthCheck {
    let backoff = BackoffConfig::try_new(
        Duration::from_millis(20),
        1.6,
        0.2,
        Duration::from_millis(200),
        Duration::from_secs(1),
    )
    .unwrap();
    HealthCheck::new(SERVICE).backoff(backoff)
}

async fn next(watch: &mut HealthWatch, from: ConnectivityState) -> ConnectivityState {
    timeout(LIMIT, watch.wait_for_state_change(from))
        .await
        .unwrap_or_else(|_| panic!("health stayed {from}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_until_the_first_answer_then_follows_the_server() {
    let (server, reporter) = server(true).await;
    let reporter = reporter.unwrap();
    reporter
        .set_service_status(SERVICE, tonic_health::ServingStatus::NotServing)
        .await;
    let mut watch = fast_check().spawn(connect(&server).await);
    assert_eq!(watch.state(), Connecting);
    assert_eq!(next(&mut watch, Connecting).await, TransientFailure);
    let reason = watch.connectivity().last_error.unwrap().to_string();
    assert!(reason.contains("NOT_SERVING"), "{reason}");

    reporter.set_serving::<GreeterServer<NamedGreeter>>().await;
    assert_eq!(next(&mut watch, TransientFailure).await, Ready);
    assert!(watch.connectivity().last_error.is_none());

    reporter
        .set_service_status(SERVICE, tonic_health::ServingStatus::NotServing)
        .await;
    assert_eq!(next(&mut watch, Ready).await, TransientFailure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_a_transient_failure() {
    let (server, _reporter) = server(true).await;
    let mut watch = HealthCheck::new("no.Such").spawn(connect(&server).await);
    assert_eq!(next(&mut watch, Connecting).await, TransientFailure);
    // tonic's health server answers NOT_FOUND; grpc-go's sends SERVICE_UNKNOWN.
    let reason = watch.connectivity().last_error.unwrap().to_string();
    assert!(
        reason.contains("SERVICE_UNKNOWN") || reason.contains("NotFound"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_health_service_counts_as_healthy() {
    let (server, _) = server(false).await;
    let mut watch = fast_check().spawn(connect(&server).await);
    assert_eq!(next(&mut watch, Connecting).await, Ready);
}

/// A health service whose every Watch stream the test drives by hand.
struct Scripted {
    streams: mpsc::UnboundedSender<mpsc::UnboundedSender<Result<HealthCheckResponse, Status>>>,
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented("watch only"))
    }

    type WatchStream = UnboundedReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let (send, receive) = mpsc::unbounded_channel();
        self.streams.send(send).unwrap();
        Ok(tonic::Response::new(UnboundedReceiverStream::new(receive)))
    }
}

fn serving() -> Result<HealthCheckResponse, Status> {
    Ok(HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_watch_is_retried_and_each_retry_starts_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams, mut opened) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(Scripted { streams }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let connection = Http2Connector::new().oneshot(addr).await.unwrap();
    let mut watch = fast_check().spawn(connection);

    let first = timeout(LIMIT, opened.recv()).await.unwrap().unwrap();
    assert_eq!(watch.state(), Connecting);
    first.send(serving()).unwrap();
    assert_eq!(next(&mut watch, Connecting).await, Ready);

    first.send(Err(Status::unavailable("restarting"))).unwrap();
    assert_eq!(next(&mut watch, Ready).await, TransientFailure);
    let reason = watch.connectivity().last_error.unwrap().to_string();
    assert!(reason.contains("restarting"), "{reason}");

    // After the backoff, a new watch: CONNECTING until its first answer.
    let second = timeout(LIMIT, opened.recv()).await.unwrap().unwrap();
    assert_eq!(next(&mut watch, TransientFailure).await, Connecting);
    second.send(serving()).unwrap();
    assert_eq!(next(&mut watch, Connecting).await, Ready);
}
