//! What the channel keeps of a request to send it again, for transparent
//! retries: its head ([`Head`]) and its body ([`ReplayableBody`]).
//!
//! What a retry needs of the body is kept at no copy: a body whose frames are
//! all ready when the call is made (a unary tonic request: one encoded
//! message) is read at once, and its frames are kept as reference-counted
//! `Bytes`, sent from a plain list; only a body still streaming when it is
//! sent goes through a [`ReplayBody`], which keeps its frames as they pass.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use grpc_lb_retry::ReplayBody;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Empty, Full};

/// How much of a request body the channel keeps for a transparent retry:
/// grpc-go's default `MaxRetryRPCBufferSize`, 256 KiB. A request whose body
/// outgrows it is no longer retried.
pub const REPLAY_BUFFER_LIMIT: usize = grpc_lb_retry::DEFAULT_BUFFER_LIMIT;

/// A request body a [`Channel`](crate::Channel) can send again when an
/// attempt failed without reaching the server (gRFC A6's transparent
/// retries: never sent, `REFUSED_STREAM`, a `GOAWAY` that excluded the
/// stream).
///
/// The channel calls [`keep`](Self::keep) once per RPC, sends the body it
/// returns, and asks [`replay`](Self::replay) for a copy when it has to send
/// the RPC again; `None` there fails the RPC with its attempt's status.
///
/// Implemented for `tonic::body::Body` (what tonic clients send: the frames
/// ready at once are read and kept by reference, with no copy, and a body
/// still streaming is kept as it is sent, in a [`grpc_lb_retry::ReplayBody`];
/// either way up to [`REPLAY_BUFFER_LIMIT`]), for `Empty` and `Full`
/// (cloned: a `Bytes` is reference-counted), and for `()`. A body type that
/// cannot be sent twice implements it with `Replay = ()` and a `replay` that
/// returns `None`:
///
/// ```
/// use grpc_lb::ReplayableBody;
///
/// /// A body that streams from somewhere it cannot rewind.
/// struct Upload(tokio::sync::mpsc::Receiver<bytes::Bytes>);
///
/// impl ReplayableBody for Upload {
///     type Replay = ();
///
///     fn keep(self, _limit: usize) -> (Self, ()) {
///         (self, ())
///     }
///
///     fn replay(_: &()) -> Option<Self> {
///         None // never sent twice: the RPC fails with its attempt's status
///     }
/// }
/// # let (_tx, rx) = tokio::sync::mpsc::channel(1);
/// # let (_body, ()) = Upload(rx).keep(1024);
/// ```
pub trait ReplayableBody: Sized {
    /// What the channel keeps to make copies of the body.
    type Replay: Send + 'static;

    /// The body to send first, and what later copies are made from, keeping
    /// at most `limit` bytes.
    fn keep(self, limit: usize) -> (Self, Self::Replay);

    /// A copy of the whole body for another attempt, or `None` once that is
    /// no longer possible (more than the limit was sent).
    fn replay(kept: &Self::Replay) -> Option<Self>;
}

/// `grpc-timeout`, which each attempt writes anew when the RPC has a deadline.
pub(crate) static GRPC_TIMEOUT: http::HeaderName = grpc_lb_core::grpc_timeout::HEADER_NAME;

/// Everything of a request but its body, kept to send it again.
///
/// Kept at every call, since a server may refuse a stream after the request
/// has gone (hyper gives a request back only when it never took it), so kept
/// cheaply: names, values, method and URI are cloned by reference count (or
/// not at all, for static ones), the headers into a short inline list rather
/// than a second `HeaderMap`, and the extensions only when there are some.
pub(crate) struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: KeptHeaders,
    extensions: Option<http::Extensions>,
}

impl Head {
    /// The head of `parts`. With `restamped` (the RPC has a deadline), its
    /// `grpc-timeout` is left out: each attempt writes the time left anew.
    #[inline]
    pub(crate) fn of(parts: &http::request::Parts, restamped: bool) -> Self {
        let skip = restamped.then_some(&GRPC_TIMEOUT);
        Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: KeptHeaders::of(&parts.headers, skip),
            extensions: (!parts.extensions.is_empty()).then(|| parts.extensions.clone()),
        }
    }

    pub(crate) fn request<B>(&self, body: B) -> http::Request<B> {
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.to_map();
        if let Some(extensions) = &self.extensions {
            *request.extensions_mut() = extensions.clone();
        }
        request
    }
}

/// How many headers [`KeptHeaders`] holds without allocating: what tonic
/// sends (`content-type`, `te`; its `grpc-timeout` is rewritten, not kept)
/// and one more. Each inline slot is 72 bytes of the response future, copied
/// whenever it moves, so there are few.
const INLINE_HEADERS: usize = 3;

/// A request's headers, in order, duplicates included.
#[derive(Default)]
struct KeptHeaders {
    inline: [Option<(http::HeaderName, http::HeaderValue)>; INLINE_HEADERS],
    more: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl KeptHeaders {
    fn of(headers: &http::HeaderMap, skip: Option<&http::HeaderName>) -> Self {
        let mut kept = KeptHeaders::default();
        let mut slots = kept.inline.iter_mut();
        for (name, value) in headers {
            if skip == Some(name) {
                continue;
            }
            let entry = (name.clone(), value.clone());
            match slots.next() {
                Some(slot) => *slot = Some(entry),
                None => kept.more.push(entry),
            }
        }
        kept
    }

    fn to_map(&self) -> http::HeaderMap {
        let entries = self.inline.iter().flatten().chain(&self.more);
        let mut map = http::HeaderMap::with_capacity(INLINE_HEADERS + self.more.len());
        for (name, value) in entries {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

/// What a [`Channel`](crate::Channel) keeps of a `tonic::body::Body` to send
/// it again: the frames that were ready when the call was made, or the body
/// itself, kept as it streams.
///
/// ```
/// use bytes::Bytes;
/// use grpc_lb::ReplayableBody;
/// use http_body_util::{BodyExt, Full};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tonic::Status> {
/// let body = tonic::body::Body::new(Full::new(Bytes::from_static(b"hello")));
/// let (first, kept): (_, grpc_lb::TonicReplay) = body.keep(1024);
/// assert_eq!(first.collect().await?.to_bytes(), "hello");
/// let again = tonic::body::Body::replay(&kept).expect("5 bytes fit in 1024");
/// assert_eq!(again.collect().await?.to_bytes(), "hello");
/// # Ok(())
/// # }
/// ```
pub struct TonicReplay(Kept);

enum Kept {
    /// The body had ended before it was sent: all of it is here.
    Whole(Frames),
    /// The body was still streaming (or failed) when it was sent: kept as
    /// it passes, up to the limit.
    Streaming(ReplayBody<Prefixed>),
    /// The body outgrew the limit before it was sent: never sent again.
    TooLarge,
}

impl fmt::Debug for TonicReplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kept::Whole(frames) => f
                .debug_struct("TonicReplay")
                .field("frames", &frames.len())
                .finish(),
            Kept::Streaming(body) => f
                .debug_struct("TonicReplay")
                .field("streaming", &true)
                .field("replayable", &body.is_replayable())
                .finish(),
            Kept::TooLarge => f
                .debug_struct("TonicReplay")
                .field("replayable", &false)
                .finish(),
        }
    }
}

impl ReplayableBody for tonic::body::Body {
    type Replay = TonicReplay;

    fn keep(self, limit: usize) -> (Self, Self::Replay) {
        if self.is_end_stream() {
            return (self, TonicReplay(Kept::Whole(Frames::default())));
        }
        match read_ready(self, limit) {
            Read::Whole(frames) => {
                let first = frames.body();
                (first, TonicReplay(Kept::Whole(frames)))
            }
            Read::Partly(prefixed) => {
                let kept = ReplayBody::new(prefixed, limit);
                let first = tonic::body::Body::new(kept.replay());
                (first, TonicReplay(Kept::Streaming(kept)))
            }
            Read::TooLarge(prefixed) => (
                tonic::body::Body::new(prefixed),
                TonicReplay(Kept::TooLarge),
            ),
        }
    }

    fn replay(kept: &Self::Replay) -> Option<Self> {
        match &kept.0 {
            Kept::Whole(frames) => Some(frames.body()),
            Kept::Streaming(body) => body
                .is_replayable()
                .then(|| tonic::body::Body::new(body.replay())),
            Kept::TooLarge => None,
        }
    }
}

/// What reading a body's ready frames came to.
enum Read {
    /// It ended, within the limit.
    Whole(Frames),
    /// It is still to be streamed from the frames read so far.
    Partly(Prefixed),
    /// What was read is already more than the limit.
    TooLarge(Prefixed),
}

/// Reads the frames `body` has ready now, without waiting (a no-op waker:
/// whoever polls it next registers its own), while they fit in `limit`.
/// What it reads, it hands on unchanged: the same frames, then the same end
/// or error, and for a body that has more to come, the rest of it.
fn read_ready(mut body: tonic::body::Body, limit: usize) -> Read {
    let mut cx = Context::from_waker(Waker::noop());
    let mut frames = Frames {
        exact: body.size_hint().exact().is_some(),
        ..Frames::default()
    };
    let mut size = 0;
    let mut too_large = false;
    let then = loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Read::Whole(frames),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    frames.push(data);
                    if size > limit {
                        too_large = true;
                        break None;
                    }
                }
                Err(other) => break Some(Ok(other)),
            },
            Poll::Ready(Some(Err(status))) => break Some(Err(status)),
            Poll::Pending => break None,
        }
    };
    let rest = then.is_none().then_some(body);
    let prefixed = Prefixed {
        frames,
        next: 0,
        then,
        rest,
    };
    if too_large {
        Read::TooLarge(prefixed)
    } else {
        Read::Partly(prefixed)
    }
}

/// Data frames read from a request body, each a reference-counted `Bytes`
/// (cloning one copies no byte). The first is held inline: a unary request
/// is one frame, and keeping it allocates nothing.
#[derive(Clone, Default)]
struct Frames {
    first: Option<Bytes>,
    more: Vec<Bytes>,
    /// The body gave its exact size: so do its copies. One that did not
    /// (tonic's encoder) is not given one either, so that hyper adds no
    /// `content-length` the caller's body would not have had.
    exact: bool,
}

impl Frames {
    fn push(&mut self, data: Bytes) {
        if self.first.is_none() {
            self.first = Some(data);
        } else {
            self.more.push(data);
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    fn get(&self, index: usize) -> Option<&Bytes> {
        match index {
            0 => self.first.as_ref(),
            _ => self.more.get(index - 1),
        }
    }

    fn remaining(&self, from: usize) -> u64 {
        (from..self.len())
            .filter_map(|i| self.get(i))
            .map(|data| data.len() as u64)
            .sum()
    }

    /// A body that sends these frames, for one attempt.
    fn body(&self) -> tonic::body::Body {
        if self.first.is_none() {
            return tonic::body::Body::empty();
        }
        tonic::body::Body::new(FramesBody {
            frames: self.clone(),
            next: 0,
        })
    }
}

/// One attempt's copy of a body that had ended before it was sent.
struct FramesBody {
    frames: Frames,
    next: usize,
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = this.frames.get(this.next).cloned();
        this.next += 1;
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }

    fn size_hint(&self) -> SizeHint {
        let left = self.frames.remaining(self.next);
        if self.frames.exact {
            return SizeHint::with_exact(left);
        }
        let mut hint = SizeHint::new();
        hint.set_lower(left);
        hint
    }
}

/// A body that was still streaming when it was sent: the frames read from
/// it before, then what came after them (its trailers, its error) or the
/// rest of the body.
struct Prefixed {
    frames: Frames,
    next: usize,
    /// A frame that is not data (trailers), or the error, read after them.
    then: Option<Result<Frame<Bytes>, tonic::Status>>,
    rest: Option<tonic::body::Body>,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if let Some(data) = this.frames.get(this.next) {
            let data = data.clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(then) = this.then.take() {
            return Poll::Ready(Some(then));
        }
        match this.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
            && self.then.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let kept = self.frames.remaining(self.next);
        let rest = match &self.rest {
            Some(rest) => rest.size_hint(),
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

impl ReplayableBody for () {
    type Replay = ();

    fn keep(self, _limit: usize) -> (Self, ()) {
        ((), ())
    }

    fn replay(_: &()) -> Option<Self> {
        Some(())
    }
}

impl<D: Send + 'static> ReplayableBody for Empty<D> {
    type Replay = ();

    fn keep(self, _limit: usize) -> (Self, ()) {
        (self, ())
    }

    fn replay(_: &()) -> Option<Self> {
        Some(Empty::new())
    }
}

impl ReplayableBody for Full<Bytes> {
    type Replay = Full<Bytes>;

    fn keep(self, _limit: usize) -> (Self, Self::Replay) {
        (self.clone(), self)
    }

    fn replay(kept: &Self::Replay) -> Option<Self> {
        Some(kept.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::channel::mpsc;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Sent = Result<Frame<Bytes>, Infallible>;

    /// A tonic body fed by the test: frames come when sent.
    fn streaming() -> (mpsc::UnboundedSender<Sent>, tonic::body::Body) {
        let (tx, rx) = mpsc::unbounded();
        (tx, tonic::body::Body::new(StreamBody::new(rx)))
    }

    #[test]
    fn a_kept_head_rebuilds_the_request_without_its_stale_deadline() {
        let mut request = http::Request::post("/s/m")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "1S")
            .header("x-a", "1")
            .header("x-a", "2")
            .header("x-b", "3")
            .header("x-c", "4")
            .body(())
            .unwrap();
        request.extensions_mut().insert(7u32);
        let (parts, ()) = request.into_parts();
        let again = Head::of(&parts, true).request(());
        assert_eq!(again.method(), http::Method::POST);
        assert_eq!(again.uri(), "/s/m");
        assert_eq!(again.extensions().get::<u32>(), Some(&7));
        assert!(
            again.headers().get("grpc-timeout").is_none(),
            "written anew"
        );
        let values: Vec<_> = again.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(again.headers().len(), parts.headers.len() - 1);
        let kept = Head::of(&parts, false).request(());
        assert_eq!(
            kept.headers(),
            &parts.headers,
            "without a deadline, kept as sent"
        );
    }

    #[tokio::test]
    async fn a_tonic_body_is_sent_again_while_it_fits() {
        let body = tonic::body::Body::new(Full::new(Bytes::from_static(b"hello")));
        let (first, kept) = body.keep(16);
        assert_eq!(first.collect().await.unwrap().to_bytes(), "hello");
        let again = tonic::body::Body::replay(&kept).expect("5 bytes fit in 16");
        assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");

        let body = tonic::body::Body::new(Full::new(Bytes::from_static(b"too long")));
        let (first, kept) = body.keep(4);
        first.collect().await.unwrap();
        assert!(tonic::body::Body::replay(&kept).is_none());
    }

    #[tokio::test]
    async fn a_body_ready_at_once_is_kept_by_reference_not_copied() {
        let message = Bytes::from(vec![7u8; 64]);
        let (tx, body) = streaming();
        tx.unbounded_send(Ok(Frame::data(message.clone()))).unwrap();
        drop(tx);
        let (first, kept) = body.keep(REPLAY_BUFFER_LIMIT);
        assert!(matches!(kept.0, Kept::Whole(_)), "{kept:?}");
        for body in [first, tonic::body::Body::replay(&kept).unwrap()] {
            let mut body = body;
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(
                frame.as_ptr(),
                message.as_ptr(),
                "the same bytes, not a copy"
            );
            assert!(body.frame().await.is_none());
        }
    }

    #[tokio::test]
    async fn a_body_still_streaming_is_sent_again_whole_while_it_fits() {
        let (tx, body) = streaming();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"ab"))))
            .unwrap();
        let (mut first, kept) = body.keep(8);
        assert!(matches!(kept.0, Kept::Streaming(_)), "{kept:?}");
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"cd"))))
            .unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-end", "1".parse().unwrap());
        tx.unbounded_send(Ok(Frame::trailers(trailers))).unwrap();
        drop(tx);
        let rest = first.collect().await.unwrap();
        assert_eq!(rest.trailers().unwrap()["x-end"], "1");
        assert_eq!(rest.to_bytes(), "cd");

        let again = tonic::body::Body::replay(&kept).expect("4 bytes fit in 8");
        let again = again.collect().await.unwrap();
        assert_eq!(again.trailers().unwrap()["x-end"], "1");
        assert_eq!(again.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_body_that_outgrows_the_limit_is_not_sent_again() {
        // Outgrown while the channel read it.
        let (tx, body) = streaming();
        for _ in 0..3 {
            tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"abc"))))
                .unwrap();
        }
        drop(tx);
        let (first, kept) = body.keep(8);
        assert!(tonic::body::Body::replay(&kept).is_none());
        assert_eq!(first.collect().await.unwrap().to_bytes(), "abcabcabc");

        // Outgrown later, while it was sent.
        let (tx, body) = streaming();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        let (mut first, kept) = body.keep(4);
        first.frame().await.unwrap().unwrap();
        assert!(
            tonic::body::Body::replay(&kept).is_some(),
            "3 of 4 bytes so far"
        );
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        first.frame().await.unwrap().unwrap();
        assert!(tonic::body::Body::replay(&kept).is_none());
    }

    #[tokio::test]
    async fn trailers_and_errors_read_early_reach_the_attempt() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-end", "1".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)));
        let (first, kept) = body.keep(8);
        for body in [first, tonic::body::Body::replay(&kept).unwrap()] {
            let collected = body.collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["x-end"], "1");
            assert_eq!(collected.to_bytes(), "x");
        }

        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err(tonic::Status::internal("encoding failed")),
        ];
        let body = tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)));
        let (mut first, kept) = body.keep(8);
        first.frame().await.unwrap().unwrap();
        let error = first.frame().await.unwrap().unwrap_err();
        assert_eq!(error.message(), "encoding failed");
        assert!(
            tonic::body::Body::replay(&kept).is_none(),
            "a failed body is not sent again"
        );
    }

    #[test]
    fn copies_give_an_exact_size_only_when_the_body_did() {
        let (tx, body) = streaming();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        drop(tx);
        let (first, _kept) = body.keep(8);
        assert_eq!(first.size_hint().exact(), None, "no content-length added");

        let body = tonic::body::Body::new(Full::new(Bytes::from_static(b"abc")));
        let (first, _kept) = body.keep(8);
        assert_eq!(first.size_hint().exact(), Some(3));
    }

    #[tokio::test]
    async fn an_empty_body_is_sent_again_empty() {
        let (first, kept) = tonic::body::Body::empty().keep(8);
        assert!(first.is_end_stream());
        let again = tonic::body::Body::replay(&kept).unwrap();
        assert!(again.is_end_stream());
        let (tx, body) = streaming();
        drop(tx);
        let (first, kept) = body.keep(8);
        assert!(first.collect().await.unwrap().to_bytes().is_empty());
        let again = tonic::body::Body::replay(&kept).unwrap();
        assert!(again.collect().await.unwrap().to_bytes().is_empty());
    }
}
