//! A body whose messages are checked against a limit as they stream.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use grpc_lb_core::BoxError;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::scan::{Direction, FrameScanner, MessageTooLarge};

pin_project! {
    /// A gRPC body whose messages may not be longer than a limit: the request
    /// bodies [`MessageSize`](crate::MessageSize) sends and the response bodies
    /// it returns.
    ///
    /// Data passes through as it comes; only the five-byte message prefixes
    /// are read. The first oversized message ends the body with an error that
    /// is a `RESOURCE_EXHAUSTED` [`tonic::Status`], which tonic's decoder hands
    /// to the caller as it is.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use grpc_lb_message_size::LimitedBody;
    /// use http_body_util::{BodyExt, Full};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let reply = Full::new(Bytes::from_static(&[0, 0, 0, 0, 3, b'a', b'b', b'c']));
    /// let body = LimitedBody::receiving(reply, 2);
    /// let status = tonic::Status::from_error(body.collect().await.unwrap_err());
    /// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    ///
    /// let reply = Full::new(Bytes::from_static(&[0, 0, 0, 0, 3, b'a', b'b', b'c']));
    /// let body = LimitedBody::receiving(reply, 3);
    /// assert_eq!(body.collect().await.unwrap().to_bytes().len(), 8);
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        scanner: FrameScanner,
        limit: usize,
        direction: Direction,
        // Where a request body leaves the oversized message it stopped at,
        // for the response future to report.
        tripped: Option<Arc<OnceLock<MessageTooLarge>>>,
        failed: bool,
    }
}

impl<B> LimitedBody<B> {
    /// A response body: messages above `limit` end it with
    /// `RESOURCE_EXHAUSTED`.
    pub fn receiving(inner: B, limit: usize) -> Self {
        Self::new(inner, limit, Direction::Receive, None)
    }

    pub(crate) fn sending(inner: B, limit: usize, tripped: Arc<OnceLock<MessageTooLarge>>) -> Self {
        Self::new(inner, limit, Direction::Send, Some(tripped))
    }

    fn new(
        inner: B,
        limit: usize,
        direction: Direction,
        tripped: Option<Arc<OnceLock<MessageTooLarge>>>,
    ) -> Self {
        LimitedBody {
            inner,
            scanner: FrameScanner::new(),
            limit,
            direction,
            tripped,
            failed: false,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            if let Err(too_large) = this
                .scanner
                .scan(data.chunk(), *this.limit, *this.direction)
            {
                *this.failed = true;
                tracing::debug!(%too_large, "message size limit");
                if let Some(tripped) = this.tripped {
                    let _ = tripped.set(too_large);
                }
                return Poll::Ready(Some(Err(too_large.to_status().into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
