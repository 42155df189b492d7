//! The channel type every subcommand uses, and a wrapper that records which
//! backend answered each call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use grpc_lb::{Channel, Peer};
use pin_project_lite::pin_project;
use tower_service::Service;

/// The channel type every subcommand uses: tonic bodies over HTTP/2.
pub(crate) type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

/// Where [`RecordPeer`] puts the address that answered one call. Put a fresh
/// one in each request's extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerSlot(Arc<OnceLock<Peer>>);

impl PeerSlot {
    /// The backend that answered, if a response came back.
    pub(crate) fn get(&self) -> Option<&Peer> {
        self.0.get()
    }
}

/// Copies the channel's [`Peer`] response extension into the request's
/// [`PeerSlot`], so that the caller learns which backend answered even when
/// the answer is an error status (a `tonic::Status` carries no extensions).
#[derive(Clone, Debug)]
pub(crate) struct RecordPeer<S> {
    inner: S,
}

impl<S> RecordPeer<S> {
    pub(crate) fn new(inner: S) -> Self {
        RecordPeer { inner }
    }
}

impl<S, B, R> Service<http::Request<B>> for RecordPeer<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RecordPeerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let slot = request.extensions().get::<PeerSlot>().cloned();
        RecordPeerFuture {
            inner: self.inner.call(request),
            slot,
        }
    }
}

pin_project! {
    /// The response future of [`RecordPeer`].
    pub(crate) struct RecordPeerFuture<F> {
        #[pin]
        inner: F,
        slot: Option<PeerSlot>,
    }
}

impl<F> fmt::Debug for RecordPeerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordPeerFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for RecordPeerFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(slot)) = (&result, this.slot.take()) {
            if let Some(peer) = response.extensions().get::<Peer>() {
                let _ = slot.0.set(peer.clone());
            }
        }
        Poll::Ready(result)
    }
}
