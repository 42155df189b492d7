//! The stream's state machine against a scripted connection, on a paused
//! clock: which streams open, with which interval, and when.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use grpc_lb_backoff::BackoffConfig;
use http_body::Frame;
use http_body_util::BodyExt as _;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::Code;

use super::{OobLoadReports, OobStreamState};
use crate::proto::{OrcaLoadReportRequest, STREAM_CORE_METRICS_PATH};
use crate::{BoxError, OrcaLoadReport};

/// A connection whose every `StreamCoreMetrics` call is handed to the test,
/// which answers it frame by frame.
#[derive(Clone)]
struct Scripted {
    calls: mpsc::UnboundedSender<Call>,
    closed: Arc<AtomicBool>,
    /// Counts the clones alive, to see that no task keeps one.
    alive: Arc<()>,
}

/// One call the client made.
struct Call {
    interval: Duration,
    opened_at: Instant,
    frames: mpsc::UnboundedSender<Frame<Bytes>>,
}

impl Call {
    fn report(&self, report: OrcaLoadReport) {
        let message = crate::proto::OrcaLoadReport::from(report).encode_to_vec();
        let mut framed = BytesMut::with_capacity(5 + message.len());
        framed.put_u8(0);
        framed.put_u32(u32::try_from(message.len()).unwrap());
        framed.put_slice(&message);
        let _ = self.frames.send(Frame::data(framed.freeze()));
    }

    fn end(self, code: Code) {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", (code as i32).to_string().parse().unwrap());
        let _ = self.frames.send(Frame::trailers(trailers));
    }

    /// Resolves once the client has dropped (cancelled) the stream.
    async fn cancelled(&self) {
        self.frames.closed().await;
    }
}

struct ChannelBody(mpsc::UnboundedReceiver<Frame<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

impl tower_service::Service<http::Request<Body>> for Scripted {
    type Response = http::Response<ChannelBody>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.closed.load(Ordering::SeqCst) {
            Poll::Ready(Err("connection closed".into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let calls = self.calls.clone();
        Box::pin(async move {
            assert_eq!(request.uri().path(), STREAM_CORE_METRICS_PATH);
            let body = request.into_body().collect().await?.to_bytes();
            let request = OrcaLoadReportRequest::decode(&body[5..])?;
            let interval = request.report_interval.expect("an interval");
            let interval = Duration::new(
                u64::try_from(interval.seconds).unwrap(),
                u32::try_from(interval.nanos).unwrap(),
            );
            let (frames, body) = mpsc::unbounded_channel();
            let _ = calls.send(Call {
                interval,
                opened_at: Instant::now(),
                frames,
            });
            Ok(http::Response::builder()
                .header("content-type", "application/grpc")
                .body(ChannelBody(body))
                .unwrap())
        })
    }
}

fn scripted() -> (Scripted, mpsc::UnboundedReceiver<Call>) {
    let (calls, received) = mpsc::unbounded_channel();
    let connection = Scripted {
        calls,
        closed: Arc::new(AtomicBool::new(false)),
        alive: Arc::new(()),
    };
    (connection, received)
}

/// 1 s, 2 s, 4 s, ... without jitter, so delays are exact.
fn doubling() -> BackoffConfig {
    BackoffConfig::try_new(
        Duration::from_secs(1),
        2.0,
        0.0,
        Duration::from_secs(60),
        Duration::from_secs(20),
    )
    .unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cpu(value: f64) -> OrcaLoadReport {
    OrcaLoadReport {
        cpu_utilization: value,
        ..Default::default()
    }
}

/// Lets the spawned task run until it has nothing left to do.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_stream_at_the_smallest_interval() {
    let (connection, mut calls) = scripted();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    assert_eq!(reports.state(), OobStreamState::Idle);

    let ten = reports.subscribe(secs(10));
    let first = calls.recv().await.unwrap();
    assert_eq!(first.interval, secs(10));

    // A smaller interval replaces the stream at once.
    let five = reports.subscribe(secs(5));
    first.cancelled().await;
    let second = calls.recv().await.unwrap();
    assert_eq!(second.interval, secs(5));
    assert_eq!(reports.requested_interval(), Some(secs(5)));

    // A larger one changes nothing.
    let twenty = reports.subscribe(secs(20));
    settle().await;
    assert!(calls.try_recv().is_err());

    // The smallest leaves: back to the next smallest.
    drop(five);
    second.cancelled().await;
    let third = calls.recv().await.unwrap();
    assert_eq!(third.interval, secs(10));

    // The last ones leave: no stream at all.
    drop(ten);
    drop(twenty);
    third.cancelled().await;
    assert_eq!(reports.state(), OobStreamState::Idle);
    settle().await;
    assert!(calls.try_recv().is_err());

    // And a new subscriber starts one again.
    let _again = reports.subscribe(secs(7));
    assert_eq!(calls.recv().await.unwrap().interval, secs(7));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn set_interval_restarts_the_stream_only_when_the_smallest_changes() {
    let (connection, mut calls) = scripted();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let mut policy = reports.subscribe(secs(10));
    let _other = reports.subscribe(secs(3));
    let mut call = calls.recv().await.unwrap();
    // The first stream may have opened at 10 s before the 3 s subscriber came.
    if call.interval != secs(3) {
        call = calls.recv().await.unwrap();
    }
    assert_eq!(call.interval, secs(3));

    policy.set_interval(secs(8));
    settle().await;
    assert!(calls.try_recv().is_err(), "3 s is still the smallest");

    policy.set_interval(secs(1));
    assert_eq!(policy.interval(), secs(1));
    call.cancelled().await;
    assert_eq!(calls.recv().await.unwrap().interval, secs(1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_subscriber_sees_each_report() {
    let (connection, mut calls) = scripted();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let mut a = reports.subscribe(secs(1));
    let mut b = reports.subscribe(secs(2));
    let call = calls.recv().await.unwrap();
    assert_eq!(a.latest(), None);

    call.report(cpu(0.25));
    assert_eq!(a.changed().await.unwrap().cpu_utilization, 0.25);
    assert_eq!(b.changed().await.unwrap().cpu_utilization, 0.25);
    call.report(cpu(0.5));
    assert_eq!(b.changed().await.unwrap().cpu_utilization, 0.5);
    assert_eq!(a.latest().unwrap().cpu_utilization, 0.5);
    // A late subscriber starts from the latest report.
    let c = reports.subscribe(secs(1));
    assert_eq!(c.latest().unwrap().cpu_utilization, 0.5);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failures_back_off_and_a_report_resets_the_backoff() {
    let (connection, mut calls) = scripted();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let mut states = reports.state_changes();
    let _subscription = reports.subscribe(secs(1));

    // Failures before any report: 1 s, 2 s, 4 s between streams.
    let mut call = calls.recv().await.unwrap();
    for expected in [1, 2, 4] {
        let ended_at = Instant::now();
        call.end(Code::Unavailable);
        states
            .wait_for(|s| {
                *s == OobStreamState::BackingOff {
                    delay: secs(expected),
                }
            })
            .await
            .unwrap();
        call = calls.recv().await.unwrap();
        assert_eq!(call.opened_at - ended_at, secs(expected));
    }

    // A report, then a failure: the next stream opens at once...
    call.report(cpu(0.1));
    let ended_at = Instant::now();
    call.end(Code::Internal);
    call = calls.recv().await.unwrap();
    assert_eq!(call.opened_at - ended_at, Duration::ZERO);

    // ...and the next failure waits the base delay again.
    let ended_at = Instant::now();
    call.end(Code::Unknown);
    call = calls.recv().await.unwrap();
    assert_eq!(call.opened_at - ended_at, secs(1));

    // A stream the server ends with OK is retried like a failure.
    let ended_at = Instant::now();
    call.end(Code::Ok);
    let call = calls.recv().await.unwrap();
    assert_eq!(call.opened_at - ended_at, secs(2));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_new_interval_during_a_backoff_waits_for_it() {
    let (connection, mut calls) = scripted();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let mut subscription = reports.subscribe(secs(10));
    let call = calls.recv().await.unwrap();
    let ended_at = Instant::now();
    call.end(Code::Unavailable);
    let mut states = reports.state_changes();
    states
        .wait_for(|s| matches!(s, OobStreamState::BackingOff { .. }))
        .await
        .unwrap();
    subscription.set_interval(secs(2));
    let call = calls.recv().await.unwrap();
    assert_eq!(
        (call.interval, call.opened_at - ended_at),
        (secs(2), secs(1))
    );
}

/// Everything logged while the guard lives, as text.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines_with(&self, text: &str) -> usize {
        let log = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        log.lines().filter(|line| line.contains(text)).count()
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unimplemented_ends_reporting_for_good() {
    let log = Captured::default();
    let _guard = log.install();
    let (connection, mut calls) = scripted();
    let alive = connection.alive.clone();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let mut subscription = reports.subscribe(secs(1));
    calls.recv().await.unwrap().end(Code::Unimplemented);

    assert_eq!(subscription.changed().await, None, "reporting has ended");
    assert_eq!(reports.state(), OobStreamState::Unimplemented);
    // Not retried, not even for a new subscriber or a new interval, however long.
    let mut late = reports.subscribe(Duration::from_millis(1));
    subscription.set_interval(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(calls.try_recv().is_err());
    assert_eq!(late.changed().await, None);
    // The task is gone, and the connection released.
    assert_eq!(Arc::strong_count(&alive), 1);
    // Logged once, at ERROR (gRFC A51).
    assert_eq!(log.lines_with("ERROR"), 1);
    assert_eq!(
        log.lines_with("does not implement xds.service.orca.v3.OpenRcaService"),
        1
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_closed_connection_ends_reporting() {
    let (connection, mut calls) = scripted();
    let closed = connection.closed.clone();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let _subscription = reports.subscribe(secs(1));
    let call = calls.recv().await.unwrap();
    closed.store(true, Ordering::SeqCst);
    call.end(Code::Unavailable);
    let mut states = reports.state_changes();
    states
        .wait_for(|s| *s == OobStreamState::ConnectionClosed)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(calls.try_recv().is_err());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_reports_cancels_the_stream_and_leaves_no_task() {
    let (connection, mut calls) = scripted();
    let alive = connection.alive.clone();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let mut subscription = reports.subscribe(secs(1));
    let call = calls.recv().await.unwrap();
    assert_eq!(
        Arc::strong_count(&alive),
        3,
        "the test, the handle and the task"
    );

    drop(reports);
    call.cancelled().await;
    assert_eq!(subscription.changed().await, None);
    settle().await;
    assert_eq!(Arc::strong_count(&alive), 1, "only the test's own");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(calls.try_recv().is_err());
    drop(subscription); // after its reporter: nothing to withdraw from
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_reports_during_a_backoff_leaves_no_task() {
    let (connection, mut calls) = scripted();
    let alive = connection.alive.clone();
    let reports = OobLoadReports::with_backoff(connection, doubling());
    let _subscription = reports.subscribe(secs(1));
    calls.recv().await.unwrap().end(Code::Unavailable);
    let mut states = reports.state_changes();
    states
        .wait_for(|s| matches!(s, OobStreamState::BackingOff { .. }))
        .await
        .unwrap();
    drop(reports);
    settle().await;
    assert_eq!(Arc::strong_count(&alive), 1);
}
