//! Request bodies the channel can send again, for transparent retries.

use bytes::Bytes;
use grpc_lb_retry::ReplayBody;
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
/// Implemented for `tonic::body::Body` (what tonic clients send: its frames
/// are kept in a [`grpc_lb_retry::ReplayBody`] up to
/// [`REPLAY_BUFFER_LIMIT`]), for `Empty` and `Full` (copied), and for `()`.
/// A body type that cannot be sent twice implements it with `Replay = ()`
/// and a `replay` that returns `None`:
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

impl ReplayableBody for tonic::body::Body {
    type Replay = ReplayBody<tonic::body::Body>;

    fn keep(self, limit: usize) -> (Self, Self::Replay) {
        let kept = ReplayBody::new(self, limit);
        (tonic::body::Body::new(kept.replay()), kept)
    }

    fn replay(kept: &Self::Replay) -> Option<Self> {
        kept.is_replayable()
            .then(|| tonic::body::Body::new(kept.replay()))
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
    use http_body_util::BodyExt;

    use super::*;

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
}
