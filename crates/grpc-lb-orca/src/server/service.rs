//! `xds.service.orca.v3.OpenRcaService`: the out-of-band stream, served from
//! a [`ServerMetricsRecorder`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tonic::{Request, Response, Status};

use super::ServerMetricsRecorder;
use crate::proto::open_rca_service_server::{OpenRcaService, OpenRcaServiceServer};
use crate::proto::{self, OrcaLoadReportRequest};

/// The out-of-band ORCA service: each `StreamCoreMetrics` stream gets a
/// report from the [`ServerMetricsRecorder`] at once, then one per interval
/// (gRFC A51; grpc-go `orca.Service`).
///
/// The interval is what the client asked for, but never less than the
/// minimum reporting interval: 30 s by default, as in gRFC A51 and grpc-go;
/// an unset or zero request gets the minimum. Every report is the whole state,
/// changed or not.
///
/// An endless stream would hold a graceful shutdown open (the server waits
/// for its calls), so call [`close_streams`](OrcaService::close_streams) first:
/// open streams end with OK and new ones are refused with UNAVAILABLE.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_orca::{OrcaService, ServerMetricsRecorder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let recorder = ServerMetricsRecorder::new();
/// let orca = OrcaService::new(recorder.clone());
/// assert_eq!(orca.min_interval(), Duration::from_secs(30));
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(
///     tonic::transport::Server::builder()
///         .add_service(orca.clone().into_server())
///         .serve_with_incoming_shutdown(
///             tokio_stream::wrappers::TcpListenerStream::new(listener),
///             async { let _ = stopped.await; },
///         ),
/// );
/// recorder.set_application_utilization(0.6)?;
///
/// // At shutdown: end the streams, then the server.
/// orca.close_streams();
/// let _ = stop.send(());
/// server.await??;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct OrcaService {
    recorder: ServerMetricsRecorder,
    min_interval: Duration,
    closing: Arc<watch::Sender<bool>>,
}

impl OrcaService {
    /// The default minimum reporting interval, 30 s (gRFC A51, grpc-go
    /// `orca/service.go minReportingInterval`).
    pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(30);

    /// Serves `recorder`'s metrics with the default 30 s minimum interval.
    pub fn new(recorder: ServerMetricsRecorder) -> Self {
        OrcaService {
            recorder,
            min_interval: Self::DEFAULT_MIN_INTERVAL,
            closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Sets the minimum reporting interval; zero restores the default.
    /// Unlike grpc-go, which accepts less than 30 s only from its tests,
    /// any positive value is taken: short ones are for tests.
    pub fn min_reporting_interval(mut self, min: Duration) -> Self {
        self.min_interval = if min.is_zero() {
            Self::DEFAULT_MIN_INTERVAL
        } else {
            min
        };
        self
    }

    /// The minimum reporting interval in force.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// The interval a stream gets for what its client asked for.
    pub fn interval_for(&self, requested: Option<Duration>) -> Duration {
        requested.map_or(self.min_interval, |d| d.max(self.min_interval))
    }

    /// Ends every open stream (with OK) and refuses new ones (UNAVAILABLE),
    /// for good; for a graceful shutdown.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> OpenRcaServiceServer<Self> {
        OpenRcaServiceServer::new(self)
    }
}

impl fmt::Debug for OrcaService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrcaService")
            .field("min_interval", &self.min_interval)
            .field("closing", &*self.closing.borrow())
            .finish()
    }
}

#[tonic::async_trait]
impl OpenRcaService for OrcaService {
    type StreamCoreMetricsStream = ReportStream;

    async fn stream_core_metrics(
        &self,
        request: Request<OrcaLoadReportRequest>,
    ) -> Result<Response<ReportStream>, Status> {
        let mut closing = self.closing.subscribe();
        if *closing.borrow_and_update() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let requested = request
            .into_inner()
            .report_interval
            .and_then(from_proto_duration);
        let period = self.interval_for(requested);
        tracing::debug!(?requested, ?period, "StreamCoreMetrics");
        // The first tick is immediate: a report as soon as the stream opens.
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Response::new(ReportStream {
            recorder: self.recorder.clone(),
            ticks,
            closed: Box::pin(async move {
                // An error means the service is gone: end the stream too.
                let _ = closing.wait_for(|closing| *closing).await;
            }),
        }))
    }
}

/// A protobuf Duration as a std one; `None` for zero or a negative or
/// malformed value, which count as unset.
fn from_proto_duration(duration: proto::Duration) -> Option<Duration> {
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u32::try_from(duration.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos)).filter(|d| !d.is_zero())
}

/// The stream of reports [`OrcaService`] sends on one `StreamCoreMetrics`
/// call: one per tick until the client leaves or
/// [`OrcaService::close_streams`] is called.
///
/// ```no_run
/// // Returned by `OpenRcaService::stream_core_metrics`; tonic drives it.
/// fn assert_stream<S: futures::Stream>() {}
/// assert_stream::<grpc_lb_orca::ReportStream>();
/// ```
pub struct ReportStream {
    recorder: ServerMetricsRecorder,
    ticks: Interval,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for ReportStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportStream")
            .field("period", &self.ticks.period())
            .finish_non_exhaustive()
    }
}

impl Stream for ReportStream {
    type Item = Result<proto::OrcaLoadReport, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match self.ticks.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(self.recorder.snapshot().into()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_the_request_but_at_least_the_minimum() {
        let service = OrcaService::new(ServerMetricsRecorder::new());
        let secs = Duration::from_secs;
        assert_eq!(service.interval_for(None), secs(30));
        assert_eq!(service.interval_for(Some(secs(1))), secs(30));
        assert_eq!(service.interval_for(Some(secs(60))), secs(60));
        let fast = service.min_reporting_interval(Duration::from_millis(10));
        assert_eq!(fast.interval_for(Some(secs(1))), secs(1));
        assert_eq!(
            fast.min_reporting_interval(Duration::ZERO).min_interval(),
            secs(30)
        );
    }

    #[test]
    fn malformed_or_zero_durations_count_as_unset() {
        let d = |seconds, nanos| from_proto_duration(proto::Duration { seconds, nanos });
        assert_eq!(d(0, 0), None);
        assert_eq!(d(-1, 0), None);
        assert_eq!(d(1, -5), None);
        assert_eq!(d(1, 1_000_000_000), None);
        assert_eq!(d(2, 500), Some(Duration::new(2, 500)));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_stream_reports_at_once_then_each_period_until_closed() {
        use futures::StreamExt as _;
        let recorder = ServerMetricsRecorder::new();
        recorder.set_eps(1.0).unwrap();
        let service = OrcaService::new(recorder.clone());
        let request = Request::new(OrcaLoadReportRequest {
            report_interval: Some(proto::Duration {
                seconds: 45,
                nanos: 0,
            }),
            request_cost_names: Vec::new(),
        });
        let mut stream = service
            .stream_core_metrics(request)
            .await
            .unwrap()
            .into_inner();
        let start = tokio::time::Instant::now();
        assert_eq!(stream.next().await.unwrap().unwrap().eps, 1.0);
        assert_eq!(start.elapsed(), Duration::ZERO);
        recorder.set_eps(2.0).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().eps, 2.0);
        assert_eq!(start.elapsed(), Duration::from_secs(45));

        service.close_streams();
        assert!(stream.next().await.is_none());
        let refused = service
            .stream_core_metrics(Request::new(OrcaLoadReportRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
    }
}
