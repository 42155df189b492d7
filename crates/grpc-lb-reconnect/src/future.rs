//! The response future of [`Reconnect`](crate::Reconnect).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use grpc_lb_core::BoxError;
use pin_project_lite::pin_project;

use crate::error::NotReady;

pin_project! {
    /// Response future of [`Reconnect`](crate::Reconnect): the connected service's
    /// future with its error boxed, or an immediate [`NotReady`] error.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use grpc_lb_reconnect::{future::ResponseFuture, Reconnect};
    /// use tower::{Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
    /// let connector = tower::service_fn(|_: &'static str| async {
    ///     Ok::<_, Infallible>(tower::service_fn(|n: u32| async move { Ok::<_, Infallible>(n + 1) }))
    /// });
    /// let mut subchannel = Reconnect::new(connector, "backend-1");
    /// let future: ResponseFuture<_> = subchannel.ready().await?.call(41);
    /// assert_eq!(future.await?, 42);
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] future: F },
        NotReady,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn not_ready() -> Self {
        ResponseFuture {
            kind: Kind::NotReady,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::NotReady => Poll::Ready(Err(NotReady.into())),
        }
    }
}
