//! One RPC through a channel, from `call` to its response headers: sent on
//! the connection picked at `poll_ready`, or waiting for one; sent again
//! when an attempt never reached a server (gRFC A6's transparent retries);
//! ended at its deadline.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{self, Either};
use grpc_lb_core::status::{GrpcStatus, GRPC_MESSAGE, GRPC_STATUS};
use grpc_lb_core::{grpc_timeout, BoxError, ConnectivityState};
use grpc_lb_failfast::{to_status, unavailable};
use grpc_lb_retry::{http_status_to_code, transparent_retry, TransparentRetry};
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::{CallEnd, InFlight, ResponseBody};
use crate::deadline::Deadline;
use crate::observe::Peer;
use crate::replay::{Head, ReplayableBody, GRPC_TIMEOUT};
use crate::snapshot::{PickAttempt, Picked, Shared};

/// How many times in a row an RPC is sent again because it never left the
/// client. grpc-go has no bound but the deadline; one here keeps an RPC
/// without a deadline from circling a connection that closes under it until
/// the worker publishes a picker without it.
pub(crate) const MAX_NEVER_SENT: u32 = grpc_lb_retry::MAX_NEVER_SENT;

/// How an RPC is sent: its deadline, whether it waits for ready.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) deadline: Option<Instant>,
    pub(crate) wait_for_ready: bool,
}

/// Sets `grpc-timeout` to the time left at send (grpc-go computes it at each
/// attempt's `NewStream`); `Err` when none is left, and then nothing is sent.
pub(crate) fn stamp_deadline<B>(
    request: &mut Request<B>,
    deadline_and_now: Option<(Instant, Instant)>,
) -> Result<(), tonic::Status> {
    if let Some((deadline, now)) = deadline_and_now {
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(tonic::Status::deadline_exceeded(
                "deadline exceeded before the request was sent",
            ));
        }
        request
            .headers_mut()
            .insert(grpc_timeout::HEADER_NAME, grpc_timeout::encode(left));
    }
    Ok(())
}

/// What the RPC needs to be sent again after its first attempt.
pub(crate) struct Resend<S, B: ReplayableBody> {
    pub(crate) shared: Arc<Shared<S>>,
    pub(crate) head: Head,
    pub(crate) replay: B::Replay,
    pub(crate) plan: Plan,
}

/// Transparent retries so far.
#[derive(Clone, Copy, Default)]
struct Tries {
    never_sent: u32,
    unprocessed: bool,
}

impl Tries {
    /// Whether one more is allowed for `why`, counting it: never-sent ones
    /// up to [`MAX_NEVER_SENT`], an unprocessed one once per RPC (gRFC A6
    /// and C-core; grpc-go allows it only after the first attempt).
    fn allow(&mut self, why: TransparentRetry) -> bool {
        match why {
            TransparentRetry::NeverSent if self.never_sent < MAX_NEVER_SENT => {
                self.never_sent += 1;
                true
            }
            TransparentRetry::Unprocessed if !self.unprocessed => {
                self.unprocessed = true;
                true
            }
            _ => false,
        }
    }
}

/// The attempts still to make, boxed once per RPC that waits or retries,
/// ending with the response `R`.
type Attempts<R> = Pin<Box<dyn Future<Output = Result<(R, InFlight, Peer), tonic::Status>> + Send>>;

pin_project! {
    /// Response future of [`Channel`](crate::Channel): sent on the connection
    /// picked at `poll_ready`, or (boxed) waiting for one first, and sent
    /// again on a new pick when an attempt never reached a server. It fails
    /// with `DEADLINE_EXCEEDED` at the RPC's deadline, wherever it is.
    ///
    /// ```
    /// use grpc_lb::{Channel, ResponseFuture};
    /// use tower::{Service, ServiceExt};
    ///
    /// # async fn greeter(name: &str) -> std::net::SocketAddr {
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let addr = listener.local_addr().unwrap();
    /// #     let service = grpc_lb_helloworld::proto::GreeterServer::new(grpc_lb_helloworld::NamedGreeter::new(name));
    /// #     tokio::spawn(
    /// #         tonic::transport::Server::builder()
    /// #             .add_service(service)
    /// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    /// #     );
    /// #     addr
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb::core::BoxError> {
    /// let addr = greeter("a").await;
    /// let mut channel = Channel::builder(format!("ipv4:{addr}")).build()?;
    ///
    /// // Any HTTP/2 request, as hyper or axum code would send it.
    /// let request = http::Request::post("/no.Such/Method").body(tonic::body::Body::empty())?;
    /// let future: ResponseFuture<_, _> = channel.ready().await?.call(request);
    /// let response = future.await?;
    /// assert_eq!(response.headers()["grpc-status"], "12"); // UNIMPLEMENTED
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
        B: ReplayableBody,
    {
        #[pin]
        kind: Kind<S, B>,
        end: Option<CallEnd>,
        deadline: Deadline,
        // The request is gRPC: a response without a status gets one.
        grpc: bool,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
        B: ReplayableBody,
    {
        Sent {
            #[pin]
            future: S::Future,
            in_flight: Option<InFlight>,
            peer: Option<Peer>,
            resend: Option<Resend<S, B>>,
        },
        Waiting {
            future: AttemptsOf<S, B>,
            shared: Arc<Shared<S>>,
        },
        Failed { status: Option<tonic::Status> },
        Done,
    }
}

/// [`Attempts`] for a connection `S` taking bodies `B`.
type AttemptsOf<S, B> = Attempts<<S as Service<Request<B>>>::Response>;

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    B: ReplayableBody,
{
    /// Sent on the connection picked at `poll_ready`.
    #[inline]
    pub(crate) fn sent(
        future: S::Future,
        in_flight: InFlight,
        peer: Peer,
        resend: Resend<S, B>,
        end: CallEnd,
        deadline: Option<Instant>,
        grpc: bool,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Sent {
                future,
                in_flight: Some(in_flight),
                peer: Some(peer),
                resend: Some(resend),
            },
            end: Some(end),
            deadline: Deadline::new(deadline),
            grpc,
        }
    }

    /// Waiting for a connection: no pick at `poll_ready`.
    pub(crate) fn waiting(
        future: AttemptsOf<S, B>,
        shared: Arc<Shared<S>>,
        end: CallEnd,
        deadline: Option<Instant>,
        grpc: bool,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Waiting { future, shared },
            end: Some(end),
            deadline: Deadline::new(deadline),
            grpc,
        }
    }

    /// Failed before anything was sent.
    pub(crate) fn failed(status: tonic::Status, end: CallEnd) -> Self {
        ResponseFuture {
            kind: Kind::Failed {
                status: Some(status),
            },
            end: Some(end),
            deadline: Deadline::default(),
            grpc: false,
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    B: ReplayableBody,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What one poll of the attempt under way came to.
enum Step<ResBody> {
    Pending,
    Answered(Response<ResBody>, InFlight, Peer),
    Failed(tonic::Status),
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: ReplayableBody + Send + 'static,
    ResBody: Send + 'static,
{
    type Output = Result<Response<ResponseBody<ResBody>>, crate::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let step = match this.kind.as_mut().project() {
            KindProj::Sent {
                future,
                in_flight,
                peer,
                resend,
            } => match future.poll(cx) {
                Poll::Pending => Step::Pending,
                Poll::Ready(Ok(response)) => Step::Answered(
                    response,
                    in_flight.take().expect("polled after completion"),
                    peer.take().expect("polled after completion"),
                ),
                Poll::Ready(Err(error)) => {
                    if let Some(in_flight) = in_flight.take() {
                        in_flight.finish(false);
                    }
                    let error = error.into();
                    let again = transparent_retry(&*error)
                        .zip(resend.take())
                        .and_then(|(why, resend)| resend_after(why, resend));
                    match again {
                        Some((future, shared)) => {
                            this.kind.set(Kind::Waiting { future, shared });
                            match this.kind.as_mut().project() {
                                KindProj::Waiting { future, .. } => poll_attempts(future, cx),
                                _ => unreachable!("just set"),
                            }
                        }
                        None => Step::Failed(to_status(error)),
                    }
                }
            },
            KindProj::Waiting { future, .. } => poll_attempts(future, cx),
            KindProj::Failed { status } => {
                Step::Failed(status.take().expect("polled after completion"))
            }
            KindProj::Done => panic!("ResponseFuture polled after completion"),
        };
        let result = match step {
            Step::Answered(response, in_flight, peer) => {
                Ok(answered(response, in_flight, peer, this.end, *this.grpc))
            }
            Step::Failed(status) => Err(status),
            Step::Pending => {
                if !this.deadline.poll_elapsed(cx) {
                    return Poll::Pending;
                }
                // Dropping the attempt under way resets its stream with
                // CANCEL, so that the server can stop.
                let status = match this.kind.as_mut().project() {
                    KindProj::Waiting { shared, .. } => waited_too_long(shared),
                    _ => tonic::Status::deadline_exceeded("deadline exceeded"),
                };
                Err(status)
            }
        };
        this.kind.set(Kind::Done);
        match result {
            Ok(response) => {
                // The body reads on under the same deadline, and its timer.
                let deadline = this.deadline.take();
                let end = this.end.take();
                Poll::Ready(Ok(response.map(|body| match body {
                    Some(body) => ResponseBody::new(body, end, deadline),
                    None => ResponseBody::ended(),
                })))
            }
            Err(mut status) => {
                if this.deadline.has_passed() && status.code() == tonic::Code::Cancelled {
                    status = tonic::Status::deadline_exceeded(status.message().to_owned());
                }
                if let Some(end) = this.end.take() {
                    end.finish(false);
                }
                this.deadline.clear();
                Poll::Ready(Err(crate::Error::call(status.into())))
            }
        }
    }
}

fn poll_attempts<ResBody>(
    future: &mut Attempts<Response<ResBody>>,
    cx: &mut Context<'_>,
) -> Step<ResBody> {
    match future.as_mut().poll(cx) {
        Poll::Pending => Step::Pending,
        Poll::Ready(Ok((response, in_flight, peer))) => Step::Answered(response, in_flight, peer),
        Poll::Ready(Err(status)) => Step::Failed(status),
    }
}

/// The deadline passed while the RPC waited for a connection: grpc-go's
/// blocked pick says so with the latest error of the channel.
fn waited_too_long<S>(shared: &Shared<S>) -> tonic::Status {
    let snapshot = shared.snapshot.load();
    let cause = match &snapshot.last_error {
        Some(error) => format!("; last error: {error}"),
        None => String::new(),
    };
    tonic::Status::deadline_exceeded(format!(
        "deadline exceeded while waiting for a connection (channel {}{cause})",
        snapshot.state
    ))
}

/// The response headers arrived: the peer goes into the extensions, the
/// call's end into the body, which counts it at its final status. A gRPC
/// request answered without a `grpc-status` by something that is not gRPC
/// gets the status doc/http-grpc-status-mapping.md gives its HTTP status,
/// and no body (`None`).
fn answered<ResBody>(
    mut response: Response<ResBody>,
    mut in_flight: InFlight,
    peer: Peer,
    end: &mut Option<CallEnd>,
    grpc: bool,
) -> Response<Option<ResBody>> {
    in_flight.headers_arrived();
    response.extensions_mut().insert(peer);
    let http_ok = response.status() == http::StatusCode::OK;
    let status = GrpcStatus::from_headers(response.headers());
    let trailers_only = status.map(|status| status.is_ok());
    let not_grpc = grpc && status.is_none() && (!http_ok || !is_grpc(response.headers()));
    let Some(mut call) = end.take() else {
        return response.map(Some);
    };
    call.answered_by(in_flight);
    if not_grpc {
        let code = http_status_to_code(response.status());
        let message = if http_ok {
            let kind = response.headers().get(http::header::CONTENT_TYPE);
            format!("unexpected content-type {kind:?} in a gRPC response")
        } else {
            format!(
                "unexpected HTTP status code received from server: {}",
                response.status()
            )
        };
        let headers = response.headers_mut();
        headers.insert(GRPC_STATUS.clone(), HeaderValue::from(code as i32));
        if let Ok(message) = HeaderValue::from_str(&message) {
            headers.insert(GRPC_MESSAGE.clone(), message);
        }
        call.finish(false);
        return response.map(|_| None);
    }
    match trailers_only {
        // A Trailers-Only response: the status is in the headers.
        Some(ok) => call.finish(ok && http_ok),
        // A gRPC call ends at the status in its trailers: counted there.
        None if grpc => {
            call.headers(http_ok, true);
            *end = Some(call);
        }
        // Anything else (REST over HTTP/1.1, say) is judged by its HTTP
        // status, at once; the body still keeps the call open for idle mode.
        None => {
            let (record_end, open) = call.split_open();
            record_end.finish(http_ok);
            *end = open;
        }
    }
    response.map(Some)
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    let kind = if headers.len() <= SCANNED_HEADERS {
        headers
            .iter()
            .find_map(|(name, value)| (name == http::header::CONTENT_TYPE).then_some(value))
    } else {
        headers.get(http::header::CONTENT_TYPE)
    };
    kind.is_some_and(|kind| kind.as_bytes().starts_with(b"application/grpc"))
}

/// Up to how many headers a lookup on the call path compares names in one
/// pass instead of hashing the name (which costs more for a short list).
const SCANNED_HEADERS: usize = 8;

/// A request's own deadline (`grpc-timeout`) and whether it is a gRPC one
/// (its content-type). A short header list is read in one pass, comparing
/// names, which costs less than two hashed lookups; a long one is looked up.
pub(crate) fn read_request_headers(
    headers: &http::HeaderMap,
) -> (Option<std::time::Duration>, bool) {
    let (timeout, kind) = if headers.len() <= SCANNED_HEADERS {
        let mut timeout = None;
        let mut kind = None;
        for (name, value) in headers {
            if timeout.is_none() && *name == GRPC_TIMEOUT {
                timeout = Some(value);
            } else if kind.is_none() && name == http::header::CONTENT_TYPE {
                kind = Some(value);
            }
        }
        (timeout, kind)
    } else {
        (
            headers.get(&GRPC_TIMEOUT),
            headers.get(http::header::CONTENT_TYPE),
        )
    };
    let grpc = kind.is_some_and(|kind| kind.as_bytes().starts_with(b"application/grpc"));
    (timeout.and_then(grpc_timeout::parse_value), grpc)
}

/// The attempts after the first, and the channel they wait on.
type Resent<S, ResBody> = (Attempts<Response<ResBody>>, Arc<Shared<S>>);

/// After a first attempt that never reached a server: the attempts that
/// follow, if a transparent retry is allowed and the body can be sent again.
fn resend_after<S, B, ResBody>(
    why: TransparentRetry,
    resend: Resend<S, B>,
) -> Option<Resent<S, ResBody>>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: ReplayableBody + Send + 'static,
    ResBody: Send + 'static,
{
    let mut tries = Tries::default();
    if !tries.allow(why) {
        return None;
    }
    let body = B::replay(&resend.replay)?;
    tracing::debug!(
        channel = resend.shared.channel_id,
        ?why,
        "request did not reach a server; sending it again"
    );
    let shared = resend.shared.clone();
    let future = Box::pin(attempts(
        resend.shared,
        resend.head,
        body,
        resend.replay,
        resend.plan,
        tries,
    ));
    Some((future, shared))
}

/// Starts the slow path: no connection was ready at `poll_ready`.
pub(crate) fn wait_then_send<S, B, ResBody>(
    shared: Arc<Shared<S>>,
    request: Request<B>,
    plan: Plan,
) -> Attempts<Response<ResBody>>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: ReplayableBody + Send + 'static,
    ResBody: Send + 'static,
{
    let (parts, body) = request.into_parts();
    let head = Head::of(&parts, plan.deadline.is_some());
    let (body, replay) = body.keep(crate::replay::REPLAY_BUFFER_LIMIT);
    Box::pin(attempts(shared, head, body, replay, plan, Tries::default()))
}

/// Picks, waiting for a connection as the channel's state and the RPC's
/// wait-for-ready say; sends; and sends again on a new pick while an attempt
/// allows a transparent retry. The deadline is the caller's, which drops
/// this future when it passes.
async fn attempts<S, B, ResBody>(
    shared: Arc<Shared<S>>,
    head: Head,
    body: B,
    replay: B::Replay,
    plan: Plan,
    mut tries: Tries,
) -> Result<(Response<ResBody>, InFlight, Peer), tonic::Status>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayableBody,
{
    let _permit = shared.waiting.clone().try_acquire_owned().map_err(|_| {
        tonic::Status::resource_exhausted(format!(
            "too many requests waiting for a connection (limit {})",
            shared.max_waiting
        ))
    })?;
    let mut body = Some(body);
    loop {
        let Picked {
            mut connection,
            load,
            outcome,
            peer,
            timed,
        } = pick(&shared, plan.wait_for_ready).await?;
        if poll_fn(|cx| connection.poll_ready(cx)).await.is_err() {
            // Closed between the pick and the send: nothing was sent, and the
            // request is still here; the worker publishes a picker without it.
            if !tries.allow(TransparentRetry::NeverSent) {
                return Err(tonic::Status::unavailable(
                    "connection closed before the request could be sent",
                ));
            }
            continue;
        }
        let mut request = head.request(body.take().expect("a body for every attempt"));
        stamp_deadline(&mut request, plan.deadline.map(|d| (d, Instant::now())))?;
        let in_flight = InFlight::start(load, outcome, timed);
        match connection.call(request).await {
            Ok(response) => return Ok((response, in_flight, peer)),
            Err(error) => {
                in_flight.finish(false);
                let error = error.into();
                let allowed = transparent_retry(&*error).filter(|why| tries.allow(*why));
                let again = allowed.and_then(|_| B::replay(&replay));
                match again {
                    Some(copy) => {
                        tracing::debug!(
                            channel = shared.channel_id,
                            why = ?allowed,
                            "request did not reach a server; sending it again"
                        );
                        body = Some(copy);
                    }
                    None => return Err(to_status(error)),
                }
            }
        }
    }
}

/// A connection for the RPC, waiting for one while the channel is IDLE or
/// CONNECTING (and through TRANSIENT_FAILURE for wait-for-ready).
///
/// Connections found busy (their `poll_ready` Pending: a stream limit, a
/// user's `ConcurrencyLimit`) are kept and polled while waiting, so that one
/// becoming ready ends the wait as a new picker would.
async fn pick<S, Req>(shared: &Shared<S>, wait_for_ready: bool) -> Result<Picked<S>, tonic::Status>
where
    S: Service<Req> + Clone,
{
    let mut version = shared.version.subscribe();
    // A channel that failed to leave idle mode reads TRANSIENT_FAILURE, not
    // IDLE: the call asks once more and waits for that attempt's outcome.
    let mut retried_idle = false;
    loop {
        version.borrow_and_update();
        if shared.is_closed() {
            return Err(closed());
        }
        let snapshot = shared.snapshot.load_full();
        let attempt = poll_fn(|cx| Poll::Ready(snapshot.try_pick::<Req>(cx))).await;
        let mut busy = match attempt {
            PickAttempt::Picked(picked) => return Ok(picked),
            PickAttempt::Busy(busy) => Some(busy),
            PickAttempt::Empty => None,
            PickAttempt::Invalid(error) => return Err(tonic::Status::from(error)),
        };
        let retry_idle = !retried_idle && shared.leaving_idle_failed.load(Ordering::Acquire);
        retried_idle |= retry_idle;
        if snapshot.state == ConnectivityState::Idle || retry_idle {
            shared.request_exit_idle();
        }
        match snapshot.state {
            ConnectivityState::TransientFailure
                if (!wait_for_ready || snapshot.fail_all) && !retry_idle =>
            {
                return Err(unavailable(snapshot.last_error.as_ref()));
            }
            ConnectivityState::Shutdown => return Err(closed()),
            _ => {}
        }
        // A new picker, or one of the connections found busy is ready.
        let changed = std::pin::pin!(version.changed());
        let picker_changed = match busy.as_mut() {
            None => changed.await.is_ok(),
            Some(busy) => {
                let ready = std::pin::pin!(poll_fn(|cx| busy.poll_ready::<Req>(cx)));
                match future::select(changed, ready).await {
                    Either::Left((changed, _)) => changed.is_ok(),
                    Either::Right((picked, _)) => return Ok(picked),
                }
            }
        };
        if !picker_changed {
            return Err(closed());
        }
    }
}

/// The status of an RPC made on, or waiting in, a closed channel.
///
/// grpc-go fails them with `CANCELED` "grpc: the client connection is
/// closing" (`ErrClientConnClosing`); here they are `UNAVAILABLE`, as gRPC's
/// `doc/wait-for-ready.md` has RPCs fail in SHUTDOWN, and as the channel
/// fails any other RPC it cannot send: no caller cancelled them.
pub(crate) fn closed() -> tonic::Status {
    tonic::Status::unavailable("channel is closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpin<T: Unpin>() {}

    /// Callers poll them by `&mut` (`Pin::new`), as they could before the
    /// deadline's timer and the retry state were kept in them.
    #[test]
    fn a_channels_futures_and_bodies_stay_unpin() {
        type Connection = grpc_lb_connect::Http2Connection<tonic::body::Body>;
        unpin::<ResponseFuture<Connection, tonic::body::Body>>();
        unpin::<ResponseBody<grpc_lb_connect::Http2Body>>();
    }

    #[test]
    fn request_headers_are_read_in_one_pass_or_looked_up() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        headers.insert(&GRPC_TIMEOUT, "5m".parse().unwrap());
        let five_ms = Some(std::time::Duration::from_millis(5));
        assert_eq!(read_request_headers(&headers), (five_ms, true));
        for i in 0..10 {
            headers.insert(
                http::HeaderName::try_from(format!("x-{i}")).unwrap(),
                "v".parse().unwrap(),
            );
        }
        assert_eq!(read_request_headers(&headers), (five_ms, true));
        headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        headers.remove(&GRPC_TIMEOUT);
        assert_eq!(read_request_headers(&headers), (None, false));
        assert_eq!(read_request_headers(&http::HeaderMap::new()), (None, false));
    }
}
