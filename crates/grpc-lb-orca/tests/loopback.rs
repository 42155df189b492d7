//! The server side against the client side over real loopback connections:
//! tonic servers with this crate's layer and service, clients on
//! grpc-lb-connect's HTTP/2 connections.

use std::time::Duration;

use grpc_lb_backoff::BackoffConfig;
use grpc_lb_connect::{Http2Connection, Http2Connector};
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_orca::{
    CallMetricsRecorder, OobLoadReports, OobStreamState, OobSubscription, OrcaCallMetricsLayer,
    OrcaLoadReport, OrcaService, ServerMetricsRecorder,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tower::ServiceExt as _;

/// A Greeter that records a load for each call: the application utilization
/// is the length of the name over 100 (nothing is recorded for an empty
/// name), and a name starting with "fail" fails the call after recording.
#[derive(Clone)]
struct LoadedGreeter;

#[tonic::async_trait]
impl Greeter for LoadedGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let recorder = CallMetricsRecorder::from_request(&request)
            .ok_or_else(|| Status::internal("no CallMetricsRecorder: layer missing"))?;
        let name = &request.get_ref().name;
        if !name.is_empty() {
            recorder
                .set_application_utilization(name.len() as f64 / 100.0)
                .map_err(|e| Status::internal(e.to_string()))?;
            recorder.set_request_cost("name_bytes", name.len() as f64);
        }
        if name.starts_with("fail") {
            return Err(Status::resource_exhausted("too busy"));
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello {name}"),
        }))
    }
}

struct TestServer {
    connection: Http2Connection<tonic::body::Body>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Serves the Greeter (with the per-call layer over `server_metrics`) and,
/// when given, the ORCA service; returns a connection to it.
async fn serve(server_metrics: ServerMetricsRecorder, orca: Option<OrcaService>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .layer(OrcaCallMetricsLayer::with_server_metrics(server_metrics))
        .add_service(GreeterServer::new(LoadedGreeter))
        .add_optional_service(orca.map(OrcaService::into_server));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    ));
    let connection = Http2Connector::<tonic::body::Body>::new()
        .oneshot(addr)
        .await
        .unwrap();
    TestServer {
        connection,
        stop,
        task,
    }
}

/// Waits for a server's graceful shutdown; a stream left open would hold it
/// forever, so a minute (far above the milliseconds it takes) means a hang.
async fn shut_down(task: JoinHandle<Result<(), tonic::transport::Error>>) {
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the graceful shutdown is held open")
        .unwrap()
        .unwrap();
}

/// Reads the reports not seen yet, and returns once reporting has ended.
async fn until_ended(subscription: &mut OobSubscription) {
    while subscription.changed().await.is_some() {}
}

fn fast_backoff() -> BackoffConfig {
    BackoffConfig::try_from_secs_f64(0.01, 1.6, 0.2, 0.1, 1.0).unwrap()
}

#[tokio::test]
async fn per_call_reports_arrive_in_the_trailers_of_successes_and_failures() {
    let server_metrics = ServerMetricsRecorder::new();
    server_metrics.set_cpu_utilization(0.7).unwrap();
    server_metrics.set_application_utilization(0.9).unwrap();
    let server = serve(server_metrics.clone(), None).await;
    let mut client = GreeterClient::new(server.connection.clone());

    // A success: the report travels in the trailers after the message.
    let response = client
        .say_hello(HelloRequest {
            name: "a".repeat(25),
        })
        .await
        .unwrap();
    let trailers = response.metadata().clone().into_headers();
    let report = OrcaLoadReport::from_trailers(&trailers).unwrap().unwrap();
    assert_eq!(
        report.application_utilization, 0.25,
        "the call's value wins"
    );
    assert_eq!(report.cpu_utilization, 0.7, "the server's value fills in");
    assert_eq!(report.request_cost["name_bytes"], 25.0);

    // A failure: "Trailers-Only", the report is in the only header block.
    let status = client
        .say_hello(HelloRequest {
            name: "fail-1234".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let report = OrcaLoadReport::from_trailers(&status.metadata().clone().into_headers())
        .unwrap()
        .unwrap();
    assert_eq!(report.application_utilization, 0.09);

    // Nothing recorded by the call or the server: no trailer at all.
    server_metrics.clear_cpu_utilization();
    server_metrics.clear_application_utilization();
    let response = client
        .say_hello(HelloRequest {
            name: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        OrcaLoadReport::from_trailers(&response.metadata().clone().into_headers()),
        Ok(None)
    );
}

#[tokio::test]
async fn the_out_of_band_stream_follows_the_server_recorder() {
    let server_metrics = ServerMetricsRecorder::new();
    server_metrics.set_cpu_utilization(0.1).unwrap();
    server_metrics.set_qps(10.0).unwrap();
    let orca =
        OrcaService::new(server_metrics.clone()).min_reporting_interval(Duration::from_millis(5));
    let server = serve(server_metrics.clone(), Some(orca)).await;

    let reports = OobLoadReports::with_backoff(server.connection.clone(), fast_backoff());
    let mut subscription = reports.subscribe(Duration::from_millis(10));
    let first = subscription.changed().await.unwrap();
    assert_eq!((first.cpu_utilization, first.rps_fractional), (0.1, 10.0));
    assert_eq!(
        reports.state(),
        OobStreamState::Streaming {
            interval: Duration::from_millis(10)
        }
    );

    server_metrics.set_cpu_utilization(0.6).unwrap();
    server_metrics.set_named_utilization("disk", 0.3).unwrap();
    let mut latest = subscription.receiver();
    let report = latest
        .wait_for(|r| r.as_ref().is_some_and(|r| r.cpu_utilization == 0.6))
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(report.utilization["disk"], 0.3);
    assert!(
        report.request_cost.is_empty(),
        "no request costs out of band"
    );

    // A second subscriber with a shorter interval restarts the stream.
    let _faster = reports.subscribe(Duration::from_millis(6));
    let mut states = reports.state_changes();
    states
        .wait_for(|s| {
            *s == OobStreamState::Streaming {
                interval: Duration::from_millis(6),
            }
        })
        .await
        .unwrap();
    server_metrics.set_eps(4.0).unwrap();
    latest
        .wait_for(|r| r.as_ref().is_some_and(|r| r.eps == 4.0))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_without_orca_ends_out_of_band_reporting() {
    let server = serve(ServerMetricsRecorder::new(), None).await;
    let reports = OobLoadReports::with_backoff(server.connection.clone(), fast_backoff());
    let mut subscription = reports.subscribe(Duration::from_millis(10));
    assert_eq!(subscription.changed().await, None);
    assert_eq!(reports.state(), OobStreamState::Unimplemented);
    // The connection is still good for calls.
    GreeterClient::new(server.connection.clone())
        .say_hello(HelloRequest { name: "x".into() })
        .await
        .unwrap();
}

#[tokio::test]
async fn close_streams_lets_a_graceful_shutdown_finish() {
    let server_metrics = ServerMetricsRecorder::new();
    server_metrics.set_eps(1.0).unwrap();
    let orca =
        OrcaService::new(server_metrics.clone()).min_reporting_interval(Duration::from_millis(5));
    let server = serve(server_metrics, Some(orca.clone())).await;
    let reports = OobLoadReports::with_backoff(server.connection.clone(), fast_backoff());
    let mut subscription = reports.subscribe(Duration::from_millis(5));
    subscription.changed().await.unwrap();

    // The open stream would hold the shutdown; closing the streams ends it
    // and the server stops.
    orca.close_streams();
    server.stop.send(()).unwrap();
    shut_down(server.task).await;

    // The client retries, is refused, then finds the connection gone.
    let mut states = reports.state_changes();
    states
        .wait_for(|s| *s == OobStreamState::ConnectionClosed)
        .await
        .unwrap();
    until_ended(&mut subscription).await;
}

#[tokio::test]
async fn dropping_the_reports_cancels_the_stream_on_the_server() {
    let server_metrics = ServerMetricsRecorder::new();
    server_metrics.set_eps(1.0).unwrap();
    let orca =
        OrcaService::new(server_metrics.clone()).min_reporting_interval(Duration::from_millis(5));
    let server = serve(server_metrics, Some(orca)).await;
    let reports = OobLoadReports::with_backoff(server.connection.clone(), fast_backoff());
    let mut subscription = reports.subscribe(Duration::from_millis(5));
    subscription.changed().await.unwrap();
    drop(reports);
    until_ended(&mut subscription).await;

    // With the stream cancelled, nothing holds a graceful shutdown open
    // (no close_streams here).
    server.stop.send(()).unwrap();
    drop(server.connection);
    shut_down(server.task).await;
}
