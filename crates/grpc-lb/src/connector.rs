//! Connects to resolved addresses with a connector for socket addresses.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use grpc_lb_core::BoxError;
use grpc_lb_resolve::Address;
use pin_project_lite::pin_project;
use tower_service::Service;

/// Adapts a connector for `SocketAddr` to the resolver's [`Address`]es.
///
/// Socket addresses go to the inner connector; others (Unix sockets,
/// passthrough names) fail the attempt with [`UnsupportedAddress`], which backs
/// off like any failed connection. Unix-socket and custom connectors that take
/// an `Address` need no adapter.
#[derive(Clone, Debug)]
pub struct SocketConnector<C> {
    inner: C,
}

impl<C> SocketConnector<C> {
    /// Wraps a connector for socket addresses.
    pub const fn new(inner: C) -> Self {
        SocketConnector { inner }
    }
}

/// The address is not one this connector can reach.
#[derive(Debug, Clone)]
pub struct UnsupportedAddress(Address);

impl std::fmt::Display for UnsupportedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot connect to {}: this connector reaches TCP socket addresses only",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedAddress {}

impl<C> Service<Address> for SocketConnector<C>
where
    C: Service<SocketAddr>,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ConnectFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, address: Address) -> Self::Future {
        match address.as_socket() {
            Some(addr) => ConnectFuture {
                kind: Kind::Connecting {
                    future: self.inner.call(addr),
                },
            },
            None => ConnectFuture {
                kind: Kind::Unsupported {
                    address: Some(address),
                },
            },
        }
    }
}

pin_project! {
    /// Future of [`SocketConnector`].
    #[derive(Debug)]
    pub struct ConnectFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Connecting { #[pin] future: F },
        Unsupported { address: Option<Address> },
    }
}

impl<F, S, E> Future for ConnectFuture<F>
where
    F: Future<Output = Result<S, E>>,
    E: Into<BoxError>,
{
    type Output = Result<S, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Connecting { future } => future.poll(cx).map_err(Into::into),
            KindProj::Unsupported { address } => {
                let address = address.take().expect("polled after completion");
                Poll::Ready(Err(UnsupportedAddress(address).into()))
            }
        }
    }
}
