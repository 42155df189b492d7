//! The task behind [`OobLoadReports`](super::OobLoadReports): opens
//! `StreamCoreMetrics`, publishes what arrives, retries with backoff.

use std::sync::{Arc, Weak};
use std::time::Duration;

use grpc_lb_backoff::{Backoff, BackoffConfig};
use http::uri::PathAndQuery;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::client::{Grpc, GrpcService};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use super::{LatestReport, OobStreamState, Shared};
use crate::proto::{self, OrcaLoadReportRequest, STREAM_CORE_METRICS_PATH};
use crate::{BoxError, OrcaLoadReport};

/// How one stream ended.
struct StreamEnd {
    /// Whether a report arrived first, which resets the backoff.
    reported: bool,
    status: Status,
}

pub(super) async fn run<S>(
    connection: S,
    backoff: BackoffConfig,
    mut interval: watch::Receiver<Duration>,
    reports: watch::Sender<LatestReport>,
    shared: Weak<Shared>,
    generation: u64,
) where
    S: GrpcService<Body> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let set_state = |state| {
        if let Some(shared) = shared.upgrade() {
            shared.set_state(generation, state);
        }
    };
    let mut grpc = Grpc::new(connection);
    let mut backoff = Backoff::new(backoff);
    loop {
        let requested = *interval.borrow_and_update();
        if let Err(error) = grpc.ready().await {
            let error: BoxError = error.into();
            tracing::debug!(%error, "connection gone; out-of-band load reports end");
            set_state(OobStreamState::ConnectionClosed);
            return;
        }
        set_state(OobStreamState::Streaming {
            interval: requested,
        });
        let end = tokio::select! {
            end = stream_once(&mut grpc, requested, &reports, &mut backoff) => end,
            changed = interval.changed() => match changed {
                // A new smallest interval: this stream ends (dropping it
                // cancels it) and one with the new interval starts.
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        if end.status.code() == Code::Unimplemented {
            tracing::error!(
                "server does not implement xds.service.orca.v3.OpenRcaService; \
                 no out-of-band load reports on this connection"
            );
            set_state(OobStreamState::Unimplemented);
            return;
        }
        match end.status.code() {
            // What a closing connection or a draining server gives.
            Code::Unavailable | Code::Cancelled => {
                tracing::debug!(status = %end.status, "out-of-band load report stream ended")
            }
            _ => tracing::warn!(status = %end.status, "out-of-band load report stream failed"),
        }
        if end.reported {
            continue; // gRFC A51: after a report, retry at once
        }
        let delay = backoff.next_delay();
        set_state(OobStreamState::BackingOff { delay });
        // An interval change does not cut the backoff short; the next stream
        // asks for whatever is smallest then.
        tokio::time::sleep(delay).await;
    }
}

async fn stream_once<S>(
    grpc: &mut Grpc<S>,
    interval: Duration,
    reports: &watch::Sender<LatestReport>,
    backoff: &mut Backoff,
) -> StreamEnd
where
    S: GrpcService<Body> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let request = OrcaLoadReportRequest {
        report_interval: Some(to_proto_duration(interval)),
        request_cost_names: Vec::new(),
    };
    let codec = ProstCodec::<OrcaLoadReportRequest, proto::OrcaLoadReport>::default();
    let path = PathAndQuery::from_static(STREAM_CORE_METRICS_PATH);
    let mut stream = match grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return StreamEnd {
                reported: false,
                status,
            }
        }
    };
    let mut reported = false;
    loop {
        match stream.message().await {
            Ok(Some(report)) => {
                reported = true;
                backoff.reset();
                reports.send_replace(Some(Arc::new(OrcaLoadReport::from(report))));
            }
            Ok(None) => {
                return StreamEnd {
                    reported,
                    status: Status::unavailable("the server ended the load report stream"),
                }
            }
            Err(status) => return StreamEnd { reported, status },
        }
    }
}

/// A protobuf Duration, saturating past `i64::MAX` seconds.
fn to_proto_duration(interval: Duration) -> proto::Duration {
    proto::Duration {
        seconds: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(interval.subsec_nanos()).unwrap_or(0),
    }
}
