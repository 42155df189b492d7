//! A request body that can be sent again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use grpc_lb_core::BoxError;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A request body whose frames are kept, up to a limit, so that a retry can
/// send them again.
///
/// Every copy made with [`replay`](ReplayBody::replay) starts from the first
/// frame. Frames are pulled from the original body only once, by whichever copy
/// gets furthest; the others read what was kept. Once more than the limit has
/// been read, nothing more is kept and [`is_replayable`](ReplayBody::is_replayable)
/// turns false: the RPC is committed to its current attempt, as grpc-go
/// commits one whose buffer outgrows `MaxRetryRPCBufferSize`.
///
/// ```
/// use bytes::Bytes;
/// use grpc_lb_retry::ReplayBody;
/// use http_body_util::{BodyExt, Full};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 1024);
/// let retry = body.replay();
///
/// assert_eq!(body.collect().await?.to_bytes(), "hello");
/// // The second attempt sends the same bytes, read from what was kept.
/// assert!(retry.is_replayable());
/// assert_eq!(retry.collect().await?.to_bytes(), "hello");
/// # Ok(())
/// # }
/// ```
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Data frames this copy has yielded.
    position: usize,
    trailers_sent: bool,
}

struct Shared<B> {
    inner: Option<B>,
    kept: Vec<Bytes>,
    kept_bytes: usize,
    limit: usize,
    /// Data frames pulled from `inner` so far.
    pulled: usize,
    overflowed: bool,
    /// Set once `inner` has ended, with its trailers if it had any.
    finished: Option<Option<HeaderMap>>,
    failed: Option<String>,
}

/// The original request body failed, or a copy needed frames that were not
/// kept.
///
/// ```
/// use bytes::Bytes;
/// use grpc_lb_retry::{ReplayBody, ReplayError};
/// use http_body_util::{BodyExt, Full};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // Only 4 bytes may be kept, and the body is longer.
/// let body = ReplayBody::new(Full::new(Bytes::from_static(b"too long to keep")), 4);
/// let retry = body.replay();
/// body.collect().await?;
///
/// assert!(!retry.is_replayable());
/// let error = retry.collect().await.unwrap_err();
/// assert!(error.is::<ReplayError>());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ReplayError(String);

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReplayError {}

impl<B> ReplayBody<B> {
    /// Wraps `body`, keeping up to `limit` bytes of it for replays.
    pub fn new(body: B, limit: usize) -> Self {
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                inner: Some(body),
                kept: Vec::new(),
                kept_bytes: 0,
                limit,
                pulled: 0,
                overflowed: false,
                finished: None,
                failed: None,
            })),
            position: 0,
            trailers_sent: false,
        }
    }

    /// A copy that yields the body again from its first frame.
    pub fn replay(&self) -> Self {
        ReplayBody {
            shared: self.shared.clone(),
            position: 0,
            trailers_sent: false,
        }
    }

    /// Whether a fresh copy could still yield the whole body.
    pub fn is_replayable(&self) -> bool {
        let shared = self.lock();
        !shared.overflowed && shared.failed.is_none()
    }

    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        // A panic elsewhere leaves the frames as they were; they stay usable.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut shared = this
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if this.position < shared.pulled {
            if shared.overflowed {
                return Poll::Ready(Some(Err(ReplayError(format!(
                    "request body is larger than the {} bytes kept for retries",
                    shared.limit
                ))
                .into())));
            }
            let frame = shared.kept[this.position].clone();
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if let Some(message) = &shared.failed {
            return Poll::Ready(Some(Err(ReplayError(message.clone()).into())));
        }
        if let Some(trailers) = &shared.finished {
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let Some(inner) = shared.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.inner = None;
                shared.finished = Some(None);
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                let error: BoxError = error.into();
                shared.inner = None;
                shared.failed = Some(format!("request body failed: {error}"));
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    shared.pulled += 1;
                    this.position += 1;
                    if !shared.overflowed {
                        if shared.kept_bytes + data.len() > shared.limit {
                            shared.overflowed = true;
                            shared.kept = Vec::new();
                        } else {
                            shared.kept_bytes += data.len();
                            shared.kept.push(data.clone());
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    shared.inner = None;
                    shared.finished = Some(trailers.clone());
                    this.trailers_sent = true;
                    Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        let caught_up = self.position >= shared.pulled;
        match &shared.finished {
            Some(trailers) => caught_up && (trailers.is_none() || self.trailers_sent),
            None => caught_up && shared.inner.as_ref().is_some_and(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        if shared.overflowed && self.position < shared.pulled {
            return SizeHint::default();
        }
        let kept: u64 = shared
            .kept
            .get(self.position..)
            .unwrap_or_default()
            .iter()
            .map(|frame| frame.len() as u64)
            .sum();
        let rest = match &shared.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        };
        // Upper first: `SizeHint` refuses a lower bound above its upper one.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + kept);
        }
        hint.set_lower(rest.lower() + kept);
        hint
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("ReplayBody")
            .field("position", &self.position)
            .field("kept_bytes", &shared.kept_bytes)
            .field("overflowed", &shared.overflowed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use http_body_util::BodyExt;

    use super::*;

    /// A body that yields the frames it was given, one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn frames(chunks: &[&'static str], trailers: bool) -> Frames {
        let mut frames: VecDeque<_> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
            .collect();
        if trailers {
            let mut map = HeaderMap::new();
            map.insert("x-end", "1".parse().unwrap());
            frames.push_back(Frame::trailers(map));
        }
        Frames(frames)
    }

    async fn read_all(body: ReplayBody<Frames>) -> (Bytes, Option<HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn every_copy_yields_the_whole_body_and_its_trailers() {
        let original = ReplayBody::new(frames(&["ab", "cd", "e"], true), 1024);
        let (first, trailers) = read_all(original.replay()).await;
        assert_eq!(first, "abcde");
        assert_eq!(trailers.unwrap()["x-end"], "1");
        let (second, trailers) = read_all(original.replay()).await;
        assert_eq!(second, "abcde");
        assert!(trailers.is_some());
        assert!(original.is_replayable());
    }

    #[tokio::test]
    async fn a_copy_that_failed_half_way_is_resumed_by_the_next() {
        let original = ReplayBody::new(frames(&["ab", "cd", "ef"], false), 1024);
        let mut first = original.replay();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        let second = original.replay();
        assert_eq!(second.size_hint().lower(), 2);
        assert_eq!(second.size_hint().upper(), None);
        assert_eq!(read_all(second).await.0, "abcdef");
    }

    #[tokio::test]
    async fn past_the_limit_the_current_copy_goes_on_but_no_replay_is_possible() {
        let original = ReplayBody::new(frames(&["abc", "def"], false), 4);
        assert_eq!(read_all(original.replay()).await.0, "abcdef");
        assert!(!original.is_replayable());
        let error = original.replay().collect().await.unwrap_err();
        assert!(
            error.to_string().contains("larger than the 4 bytes"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn end_of_stream_is_reported_once_caught_up() {
        let original = ReplayBody::new(frames(&["a"], false), 1024);
        let mut copy = original.replay();
        assert!(!copy.is_end_stream());
        copy.frame().await.unwrap().unwrap();
        assert!(copy.frame().await.is_none());
        assert!(copy.is_end_stream());
        assert!(!original.replay().is_end_stream());
    }
}
