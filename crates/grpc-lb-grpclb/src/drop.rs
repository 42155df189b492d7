//! Drops: the server list's drop entries, applied in the list's order over
//! the balanced service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use grpc_lb_core::BoxError;
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

use crate::balancer::{ServerEntry, ServerList};
use crate::stats::ClientStatsRecorder;

/// The message of a dropped call's UNAVAILABLE status (grpc-go's words).
pub const DROP_MESSAGE: &str = "request dropped by grpclb";

/// Applies the drop entries of the server list in use over a balanced
/// service (grpc-go's first-layer pick).
///
/// Every call takes the next entry of the list, round robin from the list's
/// start (a new list starts over): on a drop entry the call fails with
/// UNAVAILABLE and is counted against the entry's token; on a backend entry
/// it goes to the inner service, whose own policy picks the backend (the
/// second layer). As in grpc-go, the entry is taken only once the inner
/// service is ready, so calls are not dropped while no backend can take
/// them. In fallback, or with a list without drops, calls pass through.
///
/// The list is read from a watch without a lock on the call path: only a
/// changed list is read again.
///
/// ```
/// use grpc_lb_grpclb::{ClientStatsRecorder, GrpclbDrop, ServerList, proto};
/// use tower::{Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let entry = |drop| proto::Server { ip_address: vec![127, 0, 0, 1], port: 1, load_balance_token: "t".into(), drop };
/// let list = ServerList::from_proto(&proto::ServerList { servers: vec![entry(false), entry(true)] });
/// let (_lists, active) = tokio::sync::watch::channel(Some(list));
/// let stats = ClientStatsRecorder::new();
/// let backend = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>("ok") });
/// let mut service = GrpclbDrop::new(backend, active, stats.clone());
/// let mut outcomes = Vec::new();
/// for _ in 0..4 {
///     outcomes.push(service.ready().await.unwrap().call(()).await.is_ok());
/// }
/// assert_eq!(outcomes, [true, false, true, false]);
/// assert_eq!(stats.take().calls_finished_with_drop[0].num_calls, 2);
/// # }
/// ```
#[derive(Debug)]
pub struct GrpclbDrop<S> {
    inner: S,
    active: watch::Receiver<Option<ServerList>>,
    entries: Option<Arc<[ServerEntry]>>,
    next: usize,
    stats: ClientStatsRecorder,
}

impl<S> GrpclbDrop<S> {
    /// Drops the calls of `inner` that land on drop entries of the list on
    /// `active` (none while it holds `None`), counting them in `stats`.
    pub fn new(
        inner: S,
        mut active: watch::Receiver<Option<ServerList>>,
        stats: ClientStatsRecorder,
    ) -> Self {
        let entries = drop_entries(&active.borrow_and_update());
        GrpclbDrop {
            inner,
            active,
            entries,
            next: 0,
            stats,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Reads the list again if it changed; a new list starts over.
    fn refresh(&mut self) {
        // `has_changed` reads the version only; the list is read on change.
        if self.active.has_changed().unwrap_or(false) {
            self.entries = drop_entries(&self.active.borrow_and_update());
            self.next = 0;
        }
    }
}

/// The entries of a list that has drops; `None` for one without (calls then
/// skip the list).
fn drop_entries(list: &Option<ServerList>) -> Option<Arc<[ServerEntry]>> {
    let list = list.as_ref().filter(|list| list.has_drops())?;
    Some(Arc::from(list.entries()))
}

impl<S, Req> Service<Req> for GrpclbDrop<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GrpclbDropFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.refresh();
        if let Some(entries) = &self.entries {
            let index = self.next;
            self.next = (index + 1) % entries.len();
            if let ServerEntry::Drop { token } = &entries[index] {
                self.stats.dropped(token);
                return GrpclbDropFuture::dropped();
            }
        }
        GrpclbDropFuture::forward(self.inner.call(request))
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpclbDrop`]: the balanced service's, or a
    /// drop's UNAVAILABLE.
    #[derive(Debug)]
    pub struct GrpclbDropFuture<F> {
        #[pin]
        inner: Option<F>,
        error: Option<BoxError>,
    }
}

impl<F> GrpclbDropFuture<F> {
    fn forward(inner: F) -> Self {
        GrpclbDropFuture {
            inner: Some(inner),
            error: None,
        }
    }

    fn dropped() -> Self {
        GrpclbDropFuture {
            inner: None,
            error: Some(Box::new(tonic::Status::unavailable(DROP_MESSAGE))),
        }
    }
}

impl<F, T, E> Future for GrpclbDropFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(this
                .error
                .take()
                .unwrap_or_else(|| "grpclb drop future polled after completion".into()))),
        }
    }
}

/// Wraps a balanced service in a [`GrpclbDrop`].
///
/// ```
/// use grpc_lb_grpclb::{ClientStatsRecorder, GrpclbDropLayer};
/// use tower::ServiceBuilder;
///
/// let (_lists, active) = tokio::sync::watch::channel(None);
/// let service = ServiceBuilder::new()
///     .layer(GrpclbDropLayer::new(active, ClientStatsRecorder::new()))
///     .service(tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) }));
/// # drop(service);
/// ```
#[derive(Clone, Debug)]
pub struct GrpclbDropLayer {
    active: watch::Receiver<Option<ServerList>>,
    stats: ClientStatsRecorder,
}

impl GrpclbDropLayer {
    /// Drops by the list on `active`, counting in `stats`.
    pub fn new(active: watch::Receiver<Option<ServerList>>, stats: ClientStatsRecorder) -> Self {
        GrpclbDropLayer { active, stats }
    }
}

impl<S> Layer<S> for GrpclbDropLayer {
    type Service = GrpclbDrop<S>;

    fn layer(&self, inner: S) -> GrpclbDrop<S> {
        GrpclbDrop::new(inner, self.active.clone(), self.stats.clone())
    }
}
