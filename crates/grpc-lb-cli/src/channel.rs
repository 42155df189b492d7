//! The channel type every subcommand uses, and a wrapper that records which
//! backend answered each call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use grpc_lb::core::{grpc_timeout, BoxError};
use grpc_lb::resolve::Address;
use grpc_lb::service_config::ServiceConfig;
use grpc_lb::{Channel, Peer};
use http_body_util::Either;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::grpclb::{BackendAddress, GrpclbBody, GrpclbClient, GrpclbService};
use crate::tree_stack::{TreeBody, TreeClient, TreeService};

/// The channel type every subcommand uses: tonic bodies over HTTP/2.
pub(crate) type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

/// What `call` sends through: the channel, or, for a grpclb target, the
/// grpclb stack (crate::grpclb), or a tree policy's stack
/// (crate::tree_stack).
#[derive(Clone, Debug)]
pub(crate) enum Client {
    Channel(GrpcChannel),
    Grpclb(Arc<GrpclbClient>),
    Tree(Arc<TreeClient>),
}

impl Client {
    /// The service config in force: the channel's (the resolver's, else
    /// `--service-config`), or `--service-config` on the grpclb path.
    pub(crate) fn service_config(&self) -> Option<Arc<ServiceConfig>> {
        match self {
            Client::Channel(channel) => channel.service_config(),
            Client::Grpclb(grpclb) => grpclb.config.clone(),
            Client::Tree(tree) => tree.config.clone(),
        }
    }

    /// The channel, unless this is a grpclb stack.
    pub(crate) fn channel(&self) -> Option<&GrpcChannel> {
        match self {
            Client::Channel(channel) => Some(channel),
            Client::Grpclb(_) | Client::Tree(_) => None,
        }
    }

    /// The grpclb stack, if this is one.
    pub(crate) fn grpclb(&self) -> Option<&GrpclbClient> {
        match self {
            Client::Grpclb(grpclb) => Some(grpclb),
            Client::Channel(_) | Client::Tree(_) => None,
        }
    }

    /// The tree policy's stack, if this is one.
    pub(crate) fn tree(&self) -> Option<&TreeClient> {
        match self {
            Client::Tree(tree) => Some(tree),
            Client::Channel(_) | Client::Grpclb(_) => None,
        }
    }

    /// The service at the bottom of the call stack.
    pub(crate) fn service(&self) -> ClientService {
        match self {
            Client::Channel(channel) => ClientService::Channel(channel.clone()),
            Client::Grpclb(grpclb) => ClientService::Grpclb(grpclb.service.clone()),
            Client::Tree(tree) => ClientService::Tree(tree.service.clone()),
        }
    }
}

/// The body type of an `http::Response`.
pub(crate) trait ResponseBodyOf {
    type Body;
}

impl<B> ResponseBodyOf for http::Response<B> {
    type Body = B;
}

type Request = http::Request<tonic::body::Body>;
type ChannelBody = <<GrpcChannel as Service<Request>>::Response as ResponseBodyOf>::Body;
type StackBody = <GrpclbBody as ResponseBodyOf>::Body;
type TreeStackBody = <TreeBody as ResponseBodyOf>::Body;
type Joined = http_body_util::Either<ChannelBody, http_body_util::Either<StackBody, TreeStackBody>>;

/// The service at the bottom of the call stack: the channel as it always
/// was, or the grpclb stack's buffer, or a tree policy stack's buffer. Each
/// branch is its own service; only the body and error types are joined.
#[derive(Clone)]
pub(crate) enum ClientService {
    Channel(GrpcChannel),
    Grpclb(GrpclbService),
    Tree(TreeService),
}

impl fmt::Debug for ClientService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientService::Channel(channel) => f.debug_tuple("Channel").field(channel).finish(),
            ClientService::Grpclb(_) => f.write_str("Grpclb"),
            ClientService::Tree(_) => f.write_str("Tree"),
        }
    }
}

impl Service<Request> for ClientService {
    type Response = http::Response<Joined>;
    type Error = BoxError;
    type Future = ClientFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            ClientService::Channel(channel) => channel.poll_ready(cx).map_err(Into::into),
            ClientService::Grpclb(stack) => stack.poll_ready(cx),
            ClientService::Tree(stack) => stack.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self {
            ClientService::Channel(channel) => ClientFuture::Channel {
                inner: channel.call(request),
            },
            ClientService::Grpclb(stack) => {
                // The channel enforces a call's deadline; without one the
                // grpclb path does it here, so that a call no backend takes
                // (no list yet, say) ends at its deadline.
                let deadline = grpc_timeout::parse(request.headers()).map(tokio::time::sleep);
                ClientFuture::Grpclb {
                    inner: stack.call(request),
                    deadline,
                }
            }
            ClientService::Tree(stack) => {
                // As on the grpclb path: the deadline of a call no endpoint
                // takes.
                let deadline = grpc_timeout::parse(request.headers()).map(tokio::time::sleep);
                ClientFuture::Tree {
                    inner: stack.call(request),
                    deadline,
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`ClientService`].
    #[project = ClientFutureProj]
    pub(crate) enum ClientFuture {
        Channel { #[pin] inner: <GrpcChannel as Service<Request>>::Future },
        Grpclb {
            #[pin] inner: <GrpclbService as Service<Request>>::Future,
            #[pin] deadline: Option<tokio::time::Sleep>,
        },
        Tree {
            #[pin] inner: <TreeService as Service<Request>>::Future,
            #[pin] deadline: Option<tokio::time::Sleep>,
        },
    }
}

impl fmt::Debug for ClientFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFuture").finish_non_exhaustive()
    }
}

impl Future for ClientFuture {
    type Output = Result<http::Response<Joined>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ClientFutureProj::Channel { inner } => inner
                .poll(cx)
                .map_ok(|response| response.map(http_body_util::Either::Left))
                .map_err(Into::into),
            ClientFutureProj::Grpclb { inner, deadline } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    return Poll::Ready(
                        result
                            .map(|response| response.map(|body| Either::Right(Either::Left(body)))),
                    );
                }
                poll_deadline(deadline, cx)
            }
            ClientFutureProj::Tree { inner, deadline } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    return Poll::Ready(
                        result.map(|response| {
                            response.map(|body| Either::Right(Either::Right(body)))
                        }),
                    );
                }
                poll_deadline(deadline, cx)
            }
        }
    }
}

/// The deadline of a call on a stack without the channel's own.
fn poll_deadline<T>(
    deadline: Pin<&mut Option<tokio::time::Sleep>>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, BoxError>> {
    match deadline.as_pin_mut().map(|sleep| sleep.poll(cx)) {
        Some(Poll::Ready(())) => Poll::Ready(Err(Box::new(tonic::Status::deadline_exceeded(
            "deadline exceeded before a backend answered",
        )))),
        _ => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let read = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout::parse(&headers)
        };
        use std::time::Duration;
        assert_eq!(read("5000m"), Some(Duration::from_millis(5000)));
        assert_eq!(read("2S"), Some(Duration::from_secs(2)));
        assert_eq!(read("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(read("7u"), Some(Duration::from_micros(7)));
        assert_eq!(read("x"), None);
        assert_eq!(read("12q"), None);
        assert_eq!(grpc_timeout::parse(&http::HeaderMap::new()), None);
    }
}

/// Where [`RecordPeer`] puts the address that answered one call. Put a fresh
/// one in each request's extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerSlot(Arc<OnceLock<Address>>);

impl PeerSlot {
    /// The backend that answered, if a response came back.
    pub(crate) fn get(&self) -> Option<&Address> {
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
                let _ = slot.0.set(peer.address().clone());
            } else if let Some(backend) = response.extensions().get::<BackendAddress>() {
                let _ = slot.0.set(backend.0.clone());
            }
        }
        Poll::Ready(result)
    }
}
