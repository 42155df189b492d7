//! How a balancer reads a call: its pick info, and when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use grpc_lb_core::status::GrpcStatus;

use crate::tree::{DoneInfo, OnDone, Outcome, PickInfo};

/// What a balancer reads from the calls it sends: the [`PickInfo`] of a
/// request, and how its response ends, for the pick's [`OnDone`].
///
/// A type parameter of [`Balance`](crate::service::Balance), for the same
/// reason as [`Probe`](crate::service::Probe): [`PlainCalls`] serves any
/// request type, [`HttpCalls`] serves `http::Request`s and reads gRPC's final
/// status from the response's trailers. Implement it for request types of
/// your own to give their pickers something to read.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::service::Calls;
/// use grpc_lb_balance::tree::{DoneInfo, OnDone, Outcome, PickInfo};
///
/// /// Your own request type, whose pickers see its method name.
/// struct Job { method: &'static str }
///
/// struct JobCalls;
///
/// impl Calls<Job, Result<u32, String>> for JobCalls {
///     type Response = Result<u32, String>;
///     fn pick_info(job: &Job) -> PickInfo<'_> {
///         PickInfo::new(Some(job.method), None)
///     }
///     fn respond(response: Result<u32, String>, done: Option<Arc<dyn OnDone>>) -> Self::Response {
///         if let Some(done) = done {
///             let outcome = match &response {
///                 Ok(_) => Outcome::Ok,
///                 Err(message) => Outcome::Status { code: 2, message },
///             };
///             done.on_done(&DoneInfo::new(outcome));
///         }
///         response
///     }
/// }
///
/// assert_eq!(JobCalls::pick_info(&Job { method: "resize" }).method(), Some("resize"));
/// ```
pub trait Calls<Req, Resp>: Send + 'static {
    /// The response handed back to the caller.
    type Response;

    /// The pick info of a request.
    fn pick_info(request: &Req) -> PickInfo<'_>;

    /// The service answered: tell `done` now, or when the response ends.
    fn respond(response: Resp, done: Option<Arc<dyn OnDone>>) -> Self::Response;
}

/// Calls of any type: no pick info; a call ends when its service answers,
/// `Ok` or `Err`.
///
/// ```
/// use grpc_lb_balance::service::{Calls, PlainCalls};
///
/// let info = <PlainCalls as Calls<u32, u32>>::pick_info(&7);
/// assert!(info.method().is_none());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainCalls;

impl<Req, Resp> Calls<Req, Resp> for PlainCalls {
    type Response = Resp;

    fn pick_info(_request: &Req) -> PickInfo<'_> {
        PickInfo::none()
    }

    fn respond(response: Resp, done: Option<Arc<dyn OnDone>>) -> Resp {
        if let Some(done) = done {
            done.on_done(&DoneInfo::new(Outcome::Ok));
        }
        response
    }
}

/// HTTP calls (gRPC over HTTP/2): the pick info is the request's path and
/// headers; a call ends with its `grpc-status`, read from a Trailers-Only
/// response's headers, or from the trailers at the end of its body. A body
/// that ends without trailers ends the call `Ok`; one that errs or is dropped
/// early ends it with that error or as cancelled.
///
/// ```
/// use grpc_lb_balance::service::{Calls, HttpCalls};
///
/// let request = http::Request::builder()
///     .uri("/helloworld.Greeter/SayHello")
///     .header("x-user", "alice")
///     .body(())
///     .unwrap();
/// let info = <HttpCalls as Calls<_, http::Response<String>>>::pick_info(&request);
/// assert_eq!(info.method(), Some("/helloworld.Greeter/SayHello"));
/// assert_eq!(info.header("x-user"), Some("alice"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpCalls;

impl<B, RB> Calls<http::Request<B>, http::Response<RB>> for HttpCalls
where
    RB: Body,
    RB::Error: std::error::Error + Send + Sync + 'static,
{
    type Response = http::Response<DoneBody<RB>>;

    fn pick_info(request: &http::Request<B>) -> PickInfo<'_> {
        PickInfo::new(Some(request.uri().path()), Some(request.headers()))
            .with_extensions(request.extensions())
    }

    fn respond(
        response: http::Response<RB>,
        mut done: Option<Arc<dyn OnDone>>,
    ) -> http::Response<DoneBody<RB>> {
        if let Some(callback) = &done {
            if status_in(response.headers(), callback.as_ref()) {
                done = None;
            }
        }
        response.map(|inner| DoneBody { inner, done })
    }
}

/// Tells `done` the `grpc-status` in `headers`, if there is one (read by
/// `grpc_lb_core`'s one reader: UNKNOWN when unparsable, the message
/// percent-decoded).
fn status_in(headers: &http::HeaderMap, done: &dyn OnDone) -> bool {
    let Some(status) = GrpcStatus::from_headers(headers) else {
        return false;
    };
    let message;
    let outcome = if status.is_ok() {
        Outcome::Ok
    } else {
        message = status.message();
        Outcome::Status {
            code: status.code(),
            message: &message,
        }
    };
    done.on_done(&DoneInfo::new(outcome).with_trailers(headers));
    true
}

pin_project! {
    /// A response body that tells the pick's [`OnDone`] how the call ended.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use grpc_lb_balance::service::{Calls, HttpCalls};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let response = http::Response::new(Full::new(bytes::Bytes::from_static(b"hi")));
    /// let response = <HttpCalls as Calls<http::Request<()>, _>>::respond(response, None);
    /// let bytes = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(&bytes[..], b"hi");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct DoneBody<B> {
        #[pin]
        inner: B,
        done: Option<Arc<dyn OnDone>>,
    }

    impl<B> PinnedDrop for DoneBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(done) = this.project().done.take() {
                done.on_done(&DoneInfo::new(Outcome::Cancelled));
            }
        }
    }
}

impl<B> DoneBody<B> {
    /// The body inside.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for DoneBody<B>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(done) = this.done.take() {
                        if !status_in(trailers, done.as_ref()) {
                            done.on_done(&DoneInfo::new(Outcome::Ok).with_trailers(trailers));
                        }
                    }
                }
            }
            Some(Err(error)) => {
                if let Some(done) = this.done.take() {
                    done.on_done(&DoneInfo::new(Outcome::Error(error)));
                }
            }
            None => {
                if let Some(done) = this.done.take() {
                    done.on_done(&DoneInfo::new(Outcome::Ok));
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
