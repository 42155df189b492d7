//! The response future of [`Balance`](crate::service::Balance).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use grpc_lb_core::BoxError;
use pin_project_lite::pin_project;

use crate::service::calls::Calls;
use crate::tree::{DoneInfo, OnDone, Outcome};

pin_project! {
    /// The response future of [`Balance`](crate::service::Balance): the picked
    /// endpoint's future, with its error boxed and the pick's done callback
    /// told how the call ended; or the error of a dropped call.
    ///
    /// ```
    /// use grpc_lb_balance::service::{future::ResponseFuture, Balance};
    /// use grpc_lb_balance::tree::RoundRobin;
    /// use tower::discover::ServiceList;
    /// use tower::{Service, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
    /// let backend = tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n * 2) });
    /// let mut balance = Balance::new(ServiceList::new([backend]), RoundRobin::new());
    /// let future: ResponseFuture<_, _, u32> = balance.ready().await?.call(21);
    /// assert_eq!(future.await?, 42);
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseFuture<F, X, Req> {
        #[pin]
        kind: Kind<F>,
        done: Option<Arc<dyn OnDone>>,
        _calls: PhantomData<fn(Req) -> X>,
    }

    impl<F, X, Req> PinnedDrop for ResponseFuture<F, X, Req> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(done) = this.project().done.take() {
                done.on_done(&DoneInfo::new(Outcome::Cancelled));
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F, X, Req> ResponseFuture<F, X, Req> {
    pub(crate) fn called(future: F, done: Option<Arc<dyn OnDone>>) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            done,
            _calls: PhantomData,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(error) },
            done: None,
            _calls: PhantomData,
        }
    }
}

impl<F, X, Req> std::fmt::Debug for ResponseFuture<F, X, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.done.is_some())
            .finish()
    }
}

impl<F, X, Req, Resp, E> Future for ResponseFuture<F, X, Req>
where
    F: Future<Output = Result<Resp, E>>,
    E: Into<BoxError>,
    X: Calls<Req, Resp>,
{
    type Output = Result<X::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => match std::task::ready!(future.poll(cx)) {
                Ok(response) => Poll::Ready(Ok(X::respond(response, this.done.take()))),
                Err(error) => {
                    let error = error.into();
                    if let Some(done) = this.done.take() {
                        done.on_done(&DoneInfo::new(Outcome::Error(&*error)));
                    }
                    Poll::Ready(Err(error))
                }
            },
            KindProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
