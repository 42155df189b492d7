//! The stream client against a balancer in memory, on tokio's paused clock.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::proto::load_balancer_server::{LoadBalancer, LoadBalancerServer};
use crate::stats::CallOutcome;

/// Answers with an initial response asking for reports every `interval`,
/// then `list`, and forwards every request it receives.
struct Recording {
    interval: Duration,
    requests: mpsc::UnboundedSender<LoadBalanceRequest>,
    /// Ends the first stream with an error after its list.
    fail_first: std::sync::atomic::AtomicBool,
}

type Responses = Pin<Box<dyn Stream<Item = Result<proto::LoadBalanceResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LoadBalancer for Recording {
    type BalanceLoadStream = Responses;

    async fn balance_load(
        &self,
        request: Request<Streaming<LoadBalanceRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut incoming = request.into_inner();
        let forward = self.requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = incoming.message().await {
                let _ = forward.send(request);
            }
        });
        let interval = proto::Duration {
            seconds: self.interval.as_secs() as i64,
            nanos: self.interval.subsec_nanos() as i32,
        };
        let messages = [
            LoadBalanceResponseType::InitialResponse(proto::InitialLoadBalanceResponse {
                client_stats_report_interval: Some(interval),
            }),
            LoadBalanceResponseType::ServerList(proto::ServerList {
                servers: vec![proto::Server {
                    ip_address: vec![127, 0, 0, 1],
                    port: 9,
                    load_balance_token: "t".into(),
                    drop: false,
                }],
            }),
        ]
        .map(|kind| {
            Ok(proto::LoadBalanceResponse {
                load_balance_response_type: Some(kind),
            })
        });
        let fail = self
            .fail_first
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        let head = futures::stream::iter(messages);
        let stream: Responses = if fail {
            Box::pin(head.chain(futures::stream::iter([Err(Status::unavailable("bye"))])))
        } else {
            Box::pin(head.chain(futures::stream::pending()))
        };
        Ok(Response::new(stream))
    }
}

fn recording(
    fail_first: bool,
) -> (
    LoadBalancerServer<Recording>,
    mpsc::UnboundedReceiver<LoadBalanceRequest>,
) {
    let (requests, received) = mpsc::unbounded_channel();
    let balancer = Recording {
        interval: Duration::from_secs(1),
        requests,
        fail_first: fail_first.into(),
    };
    (LoadBalancerServer::new(balancer), received)
}

fn client_stats(request: LoadBalanceRequest) -> Option<proto::ClientStats> {
    match request.load_balance_request_type {
        Some(LoadBalanceRequestType::ClientStats(stats)) => Some(stats),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn reports_go_at_the_interval_and_repeated_empty_ones_are_quashed() {
    let (balancer, mut received) = recording(false);
    let stats = ClientStatsRecorder::new();
    let client = BalancerClient::new(balancer, "svc", stats.clone(), BackoffConfig::default());
    let (mut status, _task) = client.spawn();

    // The initial request names the service.
    match received.recv().await.unwrap().load_balance_request_type {
        Some(LoadBalanceRequestType::InitialRequest(initial)) => assert_eq!(initial.name, "svc"),
        other => panic!("{other:?}"),
    }
    status.wait_for(|s| s.server_list.is_some()).await.unwrap();
    assert_eq!(
        status.borrow().report_interval,
        Some(Duration::from_secs(1))
    );
    let start = tokio::time::Instant::now();
    stats.call_started();
    stats.call_finished(CallOutcome::KnownReceived);

    let first = client_stats(received.recv().await.unwrap()).unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(first.num_calls_started, 1);
    assert!(first.timestamp.is_some());
    // One empty report, then none while nothing happens.
    let second = client_stats(received.recv().await.unwrap()).unwrap();
    assert_eq!(second.num_calls_started, 0);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .is_err()
    );
    // A drop wakes the reports again.
    stats.dropped("lb");
    let third = client_stats(received.recv().await.unwrap()).unwrap();
    assert_eq!(third.calls_finished_with_drop[0].num_calls, 1);
    assert_eq!(status.borrow().reports_sent, 3);
}

#[tokio::test(start_paused = true)]
async fn a_stream_lost_after_its_handshake_is_opened_again_at_once_keeping_the_list() {
    let (balancer, mut received) = recording(true);
    let client = BalancerClient::new(
        balancer,
        "svc",
        ClientStatsRecorder::new(),
        BackoffConfig::default(),
    );
    let (mut status, _task) = client.spawn();
    let start = tokio::time::Instant::now();
    status.wait_for(|s| s.handshakes == 2).await.unwrap();
    // No backoff after a handshake (grpc-go's watchRemoteBalancer).
    assert_eq!(start.elapsed(), Duration::ZERO);
    let now = status.borrow().clone();
    assert_eq!(now.streams_lost, 1);
    assert!(now.server_list.is_some());
    assert_eq!(now.server_lists, 1, "the same list again is no new list");
    let initials = std::iter::from_fn(|| received.try_recv().ok())
        .filter(|r| {
            matches!(
                r.load_balance_request_type,
                Some(LoadBalanceRequestType::InitialRequest(_))
            )
        })
        .count();
    assert_eq!(initials, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_its_handshake_waits_for_the_backoff() {
    // A balancer that refuses every stream.
    let refusing = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
        Ok::<_, std::convert::Infallible>(
            Status::unavailable("no").into_http::<tonic::body::Body>(),
        )
    });
    let backoff = BackoffConfig::try_new(
        Duration::from_secs(1),
        2.0,
        0.0,
        Duration::from_secs(60),
        Duration::from_secs(20),
    )
    .unwrap();
    let client = BalancerClient::new(refusing, "svc", ClientStatsRecorder::new(), backoff);
    let (mut status, _task) = client.spawn();
    status.wait_for(|s| s.last_error.is_some()).await.unwrap();
    let start = tokio::time::Instant::now();
    // The next attempts fail after 1 s, then 2 s more (no jitter here).
    status.changed().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    status.changed().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(status.borrow().handshakes, 0);
    assert!(!status.borrow().connected);
}
