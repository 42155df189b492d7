//! The server layer that sends each call's [`CallMetricsRecorder`] in its
//! `endpoint-load-metrics-bin` trailer.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{CallMetricsRecorder, ServerMetricsRecorder};
use crate::TRAILER;

/// Wraps a gRPC server so that each call's handler finds a fresh
/// [`CallMetricsRecorder`] in its request's extensions, and whatever it
/// records reaches the client in the call's trailers (gRFC A51 per-call
/// reporting; grpc-go `orca.CallMetricsServerOption`).
///
/// With [`with_server_metrics`](OrcaCallMetricsLayer::with_server_metrics),
/// the server's metrics are the base of every call's report, which the
/// call's own values override. A report with nothing set is not sent.
///
/// ```
/// use grpc_lb_orca::{CallMetricsRecorder, OrcaCallMetricsLayer, OrcaLoadReport};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // Any gRPC service; here one that fails at once (a "Trailers-Only" answer).
/// let handler = tower::service_fn(|request: http::Request<tonic::body::Body>| async move {
///     let recorder = request.extensions().get::<CallMetricsRecorder>().expect("layer installed");
///     recorder.set_cpu_utilization(0.4)?;
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(tonic::Status::unavailable("busy").into_http::<tonic::body::Body>())
/// });
/// let mut service = tower::ServiceBuilder::new().layer(OrcaCallMetricsLayer::new()).service(handler);
///
/// let response = service.ready().await?.call(http::Request::new(tonic::body::Body::empty())).await?;
/// let report = OrcaLoadReport::from_trailers(response.headers())?.expect("a report");
/// assert_eq!(report.cpu_utilization, 0.4);
/// # Ok(())
/// # }
/// ```
///
/// On a tonic server, install it for every service with
/// `tonic::transport::Server::builder().layer(OrcaCallMetricsLayer::new())`.
#[derive(Clone, Debug, Default)]
pub struct OrcaCallMetricsLayer {
    server: Option<ServerMetricsRecorder>,
}

impl OrcaCallMetricsLayer {
    /// Reports what each call records, and nothing else.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports `server`'s metrics with every call, under the call's own.
    pub fn with_server_metrics(server: ServerMetricsRecorder) -> Self {
        OrcaCallMetricsLayer {
            server: Some(server),
        }
    }
}

impl<S> Layer<S> for OrcaCallMetricsLayer {
    type Service = OrcaCallMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OrcaCallMetrics {
            inner,
            server: self.server.clone(),
        }
    }
}

/// The service [`OrcaCallMetricsLayer`] builds.
///
/// ```
/// use grpc_lb_orca::{OrcaCallMetrics, ServerMetricsRecorder};
///
/// let server = ServerMetricsRecorder::new();
/// let service = OrcaCallMetrics::new(tower::service_fn(|_: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
/// }), Some(server));
/// let _inner = service.get_ref();
/// ```
#[derive(Clone, Debug)]
pub struct OrcaCallMetrics<S> {
    inner: S,
    server: Option<ServerMetricsRecorder>,
}

impl<S> OrcaCallMetrics<S> {
    /// Wraps `inner`, with `server`'s metrics as the base of every report.
    pub const fn new(inner: S, server: Option<ServerMetricsRecorder>) -> Self {
        OrcaCallMetrics { inner, server }
    }

    /// The layer, as [`OrcaCallMetricsLayer::new`].
    pub fn layer() -> OrcaCallMetricsLayer {
        OrcaCallMetricsLayer::new()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for OrcaCallMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<OrcaBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let recorder = CallMetricsRecorder::new();
        request.extensions_mut().insert(recorder.clone());
        ResponseFuture {
            inner: self.inner.call(request),
            report: Some(Pending {
                recorder,
                server: self.server.clone(),
            }),
        }
    }
}

/// What is needed to build the report once the call ends.
#[derive(Debug)]
struct Pending {
    recorder: CallMetricsRecorder,
    server: Option<ServerMetricsRecorder>,
}

impl Pending {
    fn add_to(self, trailers: &mut HeaderMap) {
        let report = self.recorder.report(self.server.as_ref());
        if !report.is_empty() {
            trailers.insert(TRAILER, report.into_header_value());
        }
    }
}

pin_project! {
    /// The response future of [`OrcaCallMetrics`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        report: Option<Pending>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<OrcaBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let mut report = this.report.take();
        let (mut parts, body) = response.into_parts();
        // "Trailers-Only": the call ended in its headers, and the handler
        // with it, so the report goes there now.
        if parts.headers.contains_key("grpc-status") {
            if let Some(report) = report.take() {
                report.add_to(&mut parts.headers);
            }
        }
        Poll::Ready(Ok(Response::from_parts(
            parts,
            OrcaBody {
                inner: body,
                report,
            },
        )))
    }
}

pin_project! {
    /// A response body that adds the call's report to its trailers.
    #[derive(Debug)]
    pub struct OrcaBody<B> {
        #[pin]
        inner: B,
        report: Option<Pending>,
    }
}

impl<B: Body> Body for OrcaBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &mut frame {
            if let Some(trailers) = frame.trailers_mut() {
                // The trailers end the call: the handler has recorded all it will.
                if let Some(report) = this.report.take() {
                    report.add_to(trailers);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
