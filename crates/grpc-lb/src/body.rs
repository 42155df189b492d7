//! The response body of a channel's call: where a call ends, and so where it
//! is counted (stats, least_request's load, outlier detection) and where its
//! deadline keeps running after the response headers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_balance::outlier::CallCounter;
use grpc_lb_balance::EndpointLoad;
use grpc_lb_core::status::GrpcStatus;
use grpc_lb_core::BoxError;
use grpc_lb_failfast::to_status;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::deadline::Deadline;

use crate::idle::OpenCall;
use crate::observe::CallRecord;

/// Counts one request against an endpoint's load until its call ends,
/// its outcome for outlier detection when it ends with a status, and its
/// time to the response headers when the pick reads round-trip times.
pub(crate) struct InFlight {
    load: Arc<EndpointLoad>,
    outcome: Option<Arc<CallCounter>>,
    /// `None` when the pick does not use latency: reading the clock twice and
    /// updating the estimate were a fifth of a call's instructions in the
    /// channel (callgrind, `grpc-lb-bench pick`), for a figure only p2c reads.
    started: Option<Instant>,
    rtt: Option<Duration>,
    /// Set by `finish`, so that the drop that follows counts nothing twice.
    answered: bool,
}

impl InFlight {
    pub(crate) fn start(
        load: Arc<EndpointLoad>,
        outcome: Option<Arc<CallCounter>>,
        timed: bool,
    ) -> Self {
        load.start();
        InFlight {
            load,
            outcome,
            started: timed.then(Instant::now),
            rtt: None,
            answered: false,
        }
    }

    /// The response headers arrived: the round trip p2c's estimate reads.
    pub(crate) fn headers_arrived(&mut self) {
        self.rtt = self.started.map(|started| started.elapsed());
    }

    /// The call ended with a status: `ok` or not, as [`ChannelStats`]
    /// counts it (gRFC A48 and grpc-go's `Done`, at the final status).
    ///
    /// [`ChannelStats`]: crate::ChannelStats
    pub(crate) fn finish(mut self, ok: bool) {
        self.load.finish(self.rtt);
        if let Some(outcome) = self.outcome.take() {
            outcome.record(ok);
        }
        self.answered = true;
    }
}

impl Drop for InFlight {
    /// A call dropped before its end (cancelled by its caller) is not
    /// counted as a failure of the endpoint.
    fn drop(&mut self) {
        if !self.answered {
            self.load.finish(None);
        }
    }
}

/// What a call holds until its final status: its stats record, its
/// endpoint's load and outcome, and idle mode's open-call guard. Dropped
/// before it is finished, the call counts as cancelled.
pub(crate) struct CallEnd {
    record: CallRecord,
    in_flight: Option<InFlight>,
    _open: Option<OpenCall>,
    /// The response headers looked like a success so far.
    ok_so_far: bool,
    /// A gRPC response whose status is still to come in trailers.
    expect_status: bool,
}

impl CallEnd {
    pub(crate) fn new(record: CallRecord, open: Option<OpenCall>) -> Self {
        CallEnd {
            record,
            in_flight: None,
            _open: open,
            ok_so_far: true,
            expect_status: false,
        }
    }

    /// The attempt that answered, counted when the call ends.
    pub(crate) fn answered_by(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    /// What the response headers said: a success so far, and whether its
    /// status is still to come in trailers.
    pub(crate) fn headers(&mut self, ok_so_far: bool, expect_status: bool) {
        self.ok_so_far = ok_so_far;
        self.expect_status = expect_status;
    }

    /// Splits off the open-call guard, for a call counted now whose body
    /// still keeps it open.
    pub(crate) fn split_open(mut self) -> (Self, Option<Self>) {
        let open = self._open.take().map(|open| CallEnd {
            record: CallRecord::detached(),
            in_flight: None,
            _open: Some(open),
            ok_so_far: true,
            expect_status: false,
        });
        (self, open)
    }

    /// Counts the call as ended, `ok` or not.
    pub(crate) fn finish(mut self, ok: bool) {
        self.record.finish(ok);
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish(ok);
        }
    }

    /// The body ended without trailers: a success only when no status was
    /// expected (a response that is not gRPC).
    fn finish_at_end(self) {
        let ok = self.ok_so_far && !self.expect_status;
        self.finish(ok);
    }
}

pin_project! {
    /// The body of a response from a [`Channel`](crate::Channel): the
    /// connection's own body, which is where the call ends.
    ///
    /// - A gRPC call is counted ([`Channel::stats`](crate::Channel::stats),
    ///   least_request's load, outlier detection) at its final status: the
    ///   `grpc-status` of its trailers (a body that ends without one fails).
    /// - The call counts as open until its body has been read to the end or
    ///   dropped, so that a channel with a streaming call open never goes idle
    ///   (see [`Builder::idle_timeout`](crate::Builder::idle_timeout)).
    /// - The RPC's deadline keeps running: when it passes before the end, the
    ///   body yields `DEADLINE_EXCEEDED` and drops the stream (which resets it
    ///   with `CANCEL`, so the server can stop).
    /// - Errors are gRPC statuses: a connection lost under the body is
    ///   `UNAVAILABLE`, an `RST_STREAM` its code's status.
    ///
    /// tonic clients read it like any body.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), grpc_lb::core::BoxError> {
    /// use http_body_util::{BodyExt, Empty};
    /// use tower::{Service, ServiceExt};
    ///
    /// let mut channel = grpc_lb::Channel::builder("dns:///api.internal:8080")
    ///     .build_http1::<Empty<bytes::Bytes>>()?;
    /// let request = http::Request::get("/users/1").body(Empty::new())?;
    /// let response = channel.ready().await?.call(request).await?;
    /// // The call counts as open until the body is read to its end.
    /// let body: grpc_lb::ResponseBody<_> = response.into_body();
    /// let bytes = body.collect().await?.to_bytes();
    /// # drop(bytes);
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseBody<B> {
        // `None` once dropped early: the deadline passed, or the channel
        // answered with a status of its own (an HTTP error without one).
        #[pin]
        inner: Option<B>,
        end: Option<CallEnd>,
        deadline: Deadline,
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("ended", &self.end.is_none())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<B> ResponseBody<B> {
    /// A body whose call's deadline (and its timer, if the call made one
    /// while it waited) keeps running until the body ends.
    pub(crate) fn new(inner: B, end: Option<CallEnd>, deadline: Deadline) -> Self {
        ResponseBody {
            inner: Some(inner),
            end,
            deadline,
        }
    }

    /// A body that has ended already: the channel answered with a status of
    /// its own, in the response headers.
    pub(crate) fn ended() -> Self {
        ResponseBody {
            inner: None,
            end: None,
            deadline: Deadline::default(),
        }
    }

    /// The connection's body, if the channel has not dropped it (it does at
    /// the deadline); the call is counted as cancelled unless it had ended.
    pub fn into_inner(self) -> Option<B> {
        self.inner
    }

    /// The connection's body, if the channel has not dropped it.
    pub fn get_ref(&self) -> Option<&B> {
        self.inner.as_ref()
    }
}

impl<B> Default for ResponseBody<B> {
    /// An empty body that ends at once, counting no call: what tonic's
    /// `InterceptedService` answers with when an interceptor rejects a call,
    /// so that `GreeterClient::with_interceptor(channel, f)` compiles.
    fn default() -> Self {
        ResponseBody::ended()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let ok = match GrpcStatus::from_headers(trailers) {
                        Some(status) => status.is_ok(),
                        None => !this.end.as_ref().is_some_and(|e| e.expect_status),
                    };
                    if let Some(end) = this.end.take() {
                        end.finish(ok);
                    }
                    this.deadline.clear();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(end) = this.end.take() {
                    end.finish_at_end();
                }
                this.deadline.clear();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                let mut status = to_status(error.into());
                if this.deadline.has_passed() && status.code() == tonic::Code::Cancelled {
                    // The spec's §Client Cancellation: a CANCEL after the
                    // deadline is the deadline's.
                    status = deadline_exceeded();
                }
                if let Some(end) = this.end.take() {
                    end.finish(false);
                }
                this.deadline.clear();
                this.inner.set(None);
                Poll::Ready(Some(Err(status)))
            }
            Poll::Pending => {
                if !this.deadline.poll_elapsed(cx) {
                    return Poll::Pending;
                }
                // Dropping the stream resets it with CANCEL: the server stops.
                this.inner.set(None);
                this.deadline.clear();
                if let Some(end) = this.end.take() {
                    end.finish(false);
                }
                Poll::Ready(Some(Err(deadline_exceeded())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// The status of an RPC whose deadline passed while its response was read.
fn deadline_exceeded() -> tonic::Status {
    tonic::Status::deadline_exceeded("deadline exceeded while reading the response")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::HeaderMap;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::observe::CallCounters;

    fn counters() -> Arc<CallCounters> {
        Arc::new(CallCounters::new(1))
    }

    fn trailers(status: &'static str) -> Frame<Bytes> {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", status.parse().unwrap());
        Frame::trailers(map)
    }

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

    fn body(frames: Vec<Frame<Bytes>>) -> StreamBody<Frames> {
        StreamBody::new(futures::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    }

    /// grpc-lb issue 13, defect 5: a failure status in trailers counted as a
    /// success, and the call counted at its headers.
    #[tokio::test]
    async fn a_failure_status_in_trailers_counts_as_a_failure_at_the_end() {
        let counters = counters();
        let mut end = CallEnd::new(CallRecord::start(&counters), None);
        end.headers(true, true);
        let response = ResponseBody::new(
            body(vec![Frame::data(Bytes::from_static(b"x")), trailers("14")]),
            Some(end),
            Deadline::default(),
        );
        assert_eq!(
            counters.stats().calls_failed,
            0,
            "not counted at the headers"
        );
        response.collect().await.unwrap();
        let stats = counters.stats();
        assert_eq!((stats.calls_succeeded, stats.calls_failed), (0, 1));

        let mut end = CallEnd::new(CallRecord::start(&counters), None);
        end.headers(true, true);
        let response = ResponseBody::new(body(vec![trailers("0")]), Some(end), Deadline::default());
        response.collect().await.unwrap();
        assert_eq!(counters.stats().calls_succeeded, 1);

        // A gRPC response that ends without any status fails.
        let mut end = CallEnd::new(CallRecord::start(&counters), None);
        end.headers(true, true);
        let response = ResponseBody::new(body(vec![]), Some(end), Deadline::default());
        response.collect().await.unwrap();
        assert_eq!(counters.stats().calls_failed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_a_body_that_is_still_coming() {
        let counters = counters();
        let end = CallEnd::new(CallRecord::start(&counters), None);
        let never = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >());
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut response = ResponseBody::new(never, Some(end), Deadline::new(Some(deadline)));
        let started = Instant::now();
        let status = response.frame().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(response.get_ref().is_none(), "the stream was dropped");
        assert_eq!(counters.stats().calls_failed, 1);
        assert!(response.frame().await.is_none());
    }
}
