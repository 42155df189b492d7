//! A clonable, lock-free pick handle over a running [`Balance`]: the root
//! picker and an id → service table, published together as one immutable
//! snapshot.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use grpc_lb_core::{BoxError, ConnectivityState};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tower_service::Service;

use super::calls::{Calls, PlainCalls};
use super::error::{Dropped, Unavailable};
use super::future::ResponseFuture;
use super::root::index_of;
use super::wakers::Woken;
use crate::tree::cow::ChunkedVec;
use crate::tree::{FixedPicker, OnDone, PickInfo, PickResult, Picker, SubchannelId};

/// Each endpoint's service by slot index, with its id to tell reused slots
/// apart.
type Services<S> = ChunkedVec<Option<(SubchannelId, S)>>;

/// What a balancer publishes for its handles, in one piece so that a handle
/// never sees a picker with another picker's services.
struct Snapshot<S> {
    picker: Arc<dyn Picker>,
    services: Services<S>,
    state: ConnectivityState,
    generation: u64,
    /// Set once the balancer is gone (or can never pick): every pick fails
    /// with this error.
    closed: Option<fn() -> BoxError>,
}

/// Shared by a balancer and its handles.
pub(super) struct Shared<S> {
    snapshot: ArcSwap<Snapshot<S>>,
    /// Notified after each publish, waking every queued pick (grpc-go's
    /// picker wrapper wakes its blocked picks on each new picker).
    published: Arc<Notify>,
    woken: Arc<Woken>,
}

/// The balancer's side of the handles, type-erased so that a balancer over
/// services that are neither `Clone` nor `Sync` stays `Send`.
pub(super) trait Publish<S> {
    fn insert(&mut self, index: u32, id: SubchannelId, service: &S);
    fn remove(&mut self, index: u32);
    fn publish(&mut self, picker: &Arc<dyn Picker>, state: ConnectivityState);
    fn close(&mut self, error: fn() -> BoxError);
    /// The `Arc<Shared<S>>`, for a new handle.
    fn shared(&self) -> Box<dyn Any>;
}

pub(super) struct Publisher<S> {
    shared: Arc<Shared<S>>,
    services: Services<S>,
    generation: u64,
    closed: bool,
}

impl<S> Publisher<S>
where
    S: Clone + Send + Sync + 'static,
{
    pub(super) fn new(woken: Arc<Woken>) -> Self {
        let snapshot = Snapshot {
            picker: FixedPicker::queue(),
            services: ChunkedVec::default(),
            state: ConnectivityState::Idle,
            generation: 0,
            closed: None,
        };
        Publisher {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(snapshot),
                published: Arc::new(Notify::new()),
                woken,
            }),
            services: ChunkedVec::default(),
            generation: 0,
            closed: false,
        }
    }

    fn store(&mut self, snapshot: Snapshot<S>) {
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.published.notify_waiters();
    }
}

impl<S> Publish<S> for Publisher<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn insert(&mut self, index: u32, id: SubchannelId, service: &S) {
        let index = index as usize;
        while self.services.len() <= index {
            self.services.push(None);
        }
        self.services.set(index, Some((id, service.clone())));
    }

    fn remove(&mut self, index: u32) {
        if (index as usize) < self.services.len() {
            self.services.set(index as usize, None);
        }
    }

    fn publish(&mut self, picker: &Arc<dyn Picker>, state: ConnectivityState) {
        if self.closed {
            return;
        }
        self.generation += 1;
        self.store(Snapshot {
            picker: picker.clone(),
            services: self.services.clone(),
            state,
            generation: self.generation,
            closed: None,
        });
    }

    fn close(&mut self, error: fn() -> BoxError) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        self.generation += 1;
        self.store(Snapshot {
            picker: FixedPicker::queue(),
            services: ChunkedVec::default(),
            state: ConnectivityState::Shutdown,
            generation: self.generation,
            closed: Some(error),
        });
    }

    fn shared(&self) -> Box<dyn Any> {
        Box::new(self.shared.clone())
    }
}

/// A clonable handle that picks from a running [`Balance`](super::Balance)'s
/// latest picker, from any task or thread (from
/// [`Balance::handle`](super::Balance::handle)).
///
/// The balancer publishes its root policy's picker together with a table of
/// its endpoints' services (one immutable snapshot, swapped atomically) once
/// per batch of events. A pick loads the snapshot, asks the picker, and
/// answers a clone of the picked endpoint's service with the pick's done
/// callback: no lock, no work proportional to the endpoint count, no
/// allocation but the service's clone. A pick that queues waits (its waker
/// registered) for the next snapshot and picks again, as grpc-go's picker
/// wrapper does; the balancer hears that a pick queued and exits idle if it
/// was IDLE.
///
/// The picked service is a clone and has not been polled: drive it to ready
/// (`ServiceExt::ready`) before [`Picked::call`]. A pick that fails
/// (TRANSIENT_FAILURE) ends a fail-fast pick with [`Unavailable`], and keeps a
/// [`wait_for_ready`](PickFuture::wait_for_ready) pick waiting; a dropped call
/// ends with [`Dropped`]; a dropped balancer ends every pick with
/// [`Closed`](super::error::Closed).
///
/// ```
/// use grpc_lb_balance::service::Balance;
/// use grpc_lb_balance::tree::{PickInfo, RoundRobin};
/// use tower::discover::ServiceList;
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let backends = ServiceList::new((0..3u32).map(|id| {
///     tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(id) })
/// }));
/// let mut balance = Balance::new(backends, RoundRobin::new());
/// let handle = balance.handle();
/// // The balancer runs on its own task; the handle's clones pick anywhere.
/// tokio::spawn(std::future::poll_fn(move |cx| balance.poll_events(cx)));
///
/// let mut answers = Vec::new();
/// for _ in 0..3 {
///     let mut picked = handle.clone().pick(PickInfo::none()).await?;
///     picked.service_mut().ready().await?;
///     answers.push(picked.call(()).await?);
/// }
/// answers.sort();
/// assert_eq!(answers, [0, 1, 2]); // round robin over the three
/// # Ok(())
/// # }
/// ```
pub struct PickHandle<S, X = PlainCalls> {
    shared: Arc<Shared<S>>,
    _calls: PhantomData<fn() -> X>,
}

impl<S, X> Clone for PickHandle<S, X> {
    fn clone(&self) -> Self {
        PickHandle {
            shared: self.shared.clone(),
            _calls: PhantomData,
        }
    }
}

impl<S, X> fmt::Debug for PickHandle<S, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.shared.snapshot.load();
        f.debug_struct("PickHandle")
            .field("state", &snapshot.state)
            .field("generation", &snapshot.generation)
            .finish()
    }
}

impl<S: 'static, X> PickHandle<S, X> {
    pub(super) fn from_any(shared: Box<dyn Any>) -> Self {
        let shared = shared
            .downcast::<Arc<Shared<S>>>()
            .expect("a balancer publishes its own service type");
        PickHandle {
            shared: *shared,
            _calls: PhantomData,
        }
    }
}

impl<S: Clone, X> PickHandle<S, X> {
    /// Picks an endpoint for a call described by `info`, waiting while the
    /// picker queues. Fail-fast unless
    /// [`wait_for_ready`](PickFuture::wait_for_ready) is set.
    pub fn pick<'a>(&'a self, info: PickInfo<'a>) -> PickFuture<'a, S, X> {
        PickFuture::new(Holder::Borrowed(&self.shared), info)
    }

    /// As [`pick`](Self::pick), from a handle the future owns: with
    /// [`PickInfo::none`] the future is `'static`, for a service that keeps
    /// it across `poll_ready` calls.
    ///
    /// ```
    /// use grpc_lb_balance::service::{Balance, PickFuture};
    /// use grpc_lb_balance::tree::{PickInfo, RoundRobin};
    /// use tower::discover::ServiceList;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let backend = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
    /// let mut balance = Balance::new(ServiceList::new([backend]), RoundRobin::new());
    /// let handle = balance.handle();
    /// tokio::spawn(std::future::poll_fn(move |cx| balance.poll_events(cx)));
    /// // Kept in a struct field, polled from poll_ready, or spawned.
    /// let pick = tokio::spawn(handle.clone().into_pick(PickInfo::none()));
    /// assert!(pick.await.unwrap().is_ok());
    /// # }
    /// ```
    pub fn into_pick(self, info: PickInfo<'_>) -> PickFuture<'_, S, X> {
        PickFuture::new(Holder::Owned(self.shared), info)
    }

    /// The state of the balancer's root policy in the latest snapshot.
    pub fn state(&self) -> ConnectivityState {
        self.shared.snapshot.load().state
    }
}

/// What one attempt on a snapshot decided.
enum Attempt<T> {
    Done(Result<T, BoxError>),
    /// Wait for the next snapshot; `queued` if the picker queued the call.
    Wait {
        queued: bool,
    },
}

/// The future of [`PickHandle::pick`]: a picked endpoint's service, or the
/// reason there is none.
///
/// ```
/// use grpc_lb_balance::service::Balance;
/// use grpc_lb_balance::tree::{PickInfo, RoundRobin};
/// use tower::discover::ServiceList;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (service, mut backend) = tower_test::mock::pair::<(), ()>();
/// backend.send_error("refused"); // TRANSIENT_FAILURE
/// let mut balance = Balance::new(ServiceList::new([service]), RoundRobin::new());
/// let handle = balance.handle();
/// tokio::spawn(std::future::poll_fn(move |cx| balance.poll_events(cx)));
/// // A fail-fast pick fails; one that waits for ready is still waiting.
/// assert!(handle.pick(PickInfo::none()).await.is_err());
/// let waiting = handle.pick(PickInfo::none()).wait_for_ready(true);
/// let waited = tokio::time::timeout(std::time::Duration::from_millis(50), waiting).await;
/// assert!(waited.is_err(), "still waiting");
/// # }
/// ```
pub struct PickFuture<'a, S, X = PlainCalls> {
    shared: Holder<'a, S>,
    info: PickInfo<'a>,
    wait_for_ready: bool,
    /// Registered for the next publish, once a pick had to wait.
    waiting: Option<Pin<Box<OwnedNotified>>>,
    _calls: PhantomData<fn() -> X>,
}

impl<S, X> fmt::Debug for PickFuture<'_, S, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickFuture")
            .field("info", &self.info)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

/// The shared snapshot, borrowed from a handle or owned with one.
enum Holder<'a, S> {
    Borrowed(&'a Arc<Shared<S>>),
    Owned(Arc<Shared<S>>),
}

impl<S> std::ops::Deref for Holder<'_, S> {
    type Target = Shared<S>;
    fn deref(&self) -> &Shared<S> {
        match self {
            Holder::Borrowed(shared) => shared,
            Holder::Owned(shared) => shared,
        }
    }
}

impl<'a, S: Clone, X> PickFuture<'a, S, X> {
    fn new(shared: Holder<'a, S>, info: PickInfo<'a>) -> Self {
        PickFuture {
            shared,
            info,
            wait_for_ready: false,
            waiting: None,
            _calls: PhantomData,
        }
    }

    /// A call that waits for ready keeps waiting while the picker fails
    /// (TRANSIENT_FAILURE), instead of failing with [`Unavailable`].
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = wait;
        self
    }

    fn attempt(&self, snapshot: &Snapshot<S>) -> Attempt<Picked<S, X>> {
        if let Some(error) = snapshot.closed {
            return Attempt::Done(Err(error()));
        }
        match snapshot.picker.pick(&self.info) {
            PickResult::Pick(pick) => {
                let id = pick.subchannel();
                match snapshot.services.get(index_of(id) as usize) {
                    Some(Some((known, service))) if *known == id => Attempt::Done(Ok(Picked {
                        service: service.clone(),
                        done: pick.into_done(),
                        _calls: PhantomData,
                    })),
                    // Picked from an older picker than the table: the next
                    // snapshot is on its way.
                    _ => Attempt::Wait { queued: false },
                }
            }
            PickResult::Queue => Attempt::Wait { queued: true },
            PickResult::Fail(_) if self.wait_for_ready => Attempt::Wait { queued: false },
            PickResult::Fail(error) => Attempt::Done(Err(Unavailable::new(error).into())),
            PickResult::Drop(error) => Attempt::Done(Err(Dropped::new(error).into())),
        }
    }
}

impl<S: Clone, X> Future for PickFuture<'_, S, X> {
    type Output = Result<Picked<S, X>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let snapshot = this.shared.snapshot.load();
            let generation = snapshot.generation;
            match this.attempt(&snapshot) {
                Attempt::Done(result) => return Poll::Ready(result),
                Attempt::Wait { queued: true } => this.shared.woken.pick_queued(),
                Attempt::Wait { queued: false } => {}
            }
            drop(snapshot);
            if this.waiting.is_none() {
                // Registered before looking again, so that a publish between
                // the pick above and now is not missed.
                let mut notified = Box::pin(this.shared.published.clone().notified_owned());
                notified.as_mut().enable();
                this.waiting = Some(notified);
                if this.shared.snapshot.load().generation != generation {
                    continue;
                }
            }
            let notified = this.waiting.as_mut().expect("set above");
            if notified.as_mut().poll(cx).is_ready() {
                this.waiting = None;
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// An endpoint picked through a [`PickHandle`]: a clone of its service and the
/// pick's done callback.
///
/// ```
/// use grpc_lb_balance::service::Balance;
/// use grpc_lb_balance::tree::{PickInfo, RoundRobin};
/// use tower::discover::ServiceList;
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let backend = tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n + 1) });
/// let mut balance = Balance::new(ServiceList::new([backend]), RoundRobin::new());
/// let handle = balance.handle();
/// tokio::spawn(std::future::poll_fn(move |cx| balance.poll_events(cx)));
/// let mut picked = handle.pick(PickInfo::none()).await?;
/// assert!(picked.done().is_none()); // round_robin keeps no per-call state
/// picked.service_mut().ready().await?;
/// assert_eq!(picked.call(41).await?, 42);
/// # Ok(())
/// # }
/// ```
pub struct Picked<S, X = PlainCalls> {
    service: S,
    done: Option<Arc<dyn OnDone>>,
    _calls: PhantomData<fn() -> X>,
}

impl<S, X> fmt::Debug for Picked<S, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("done", &self.done.is_some())
            .finish()
    }
}

impl<S, X> Picked<S, X> {
    /// The picked endpoint's service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The picked endpoint's service, to drive it to ready.
    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// The pick's done callback, if the policy keeps per-call state.
    pub fn done(&self) -> Option<&Arc<dyn OnDone>> {
        self.done.as_ref()
    }

    /// The service and the done callback: a caller that sends the call
    /// itself calls [`OnDone::on_start`] when it does and
    /// [`OnDone::on_done`] with its final status.
    pub fn into_parts(self) -> (S, Option<Arc<dyn OnDone>>) {
        (self.service, self.done)
    }

    /// Sends `request` on the service (which must be ready), telling the done
    /// callback when the call starts and how it ends, as `Balance`'s own
    /// calls do.
    pub fn call<Req>(mut self, request: Req) -> ResponseFuture<S::Future, X, Req>
    where
        S: Service<Req>,
        X: Calls<Req, S::Response>,
    {
        if let Some(done) = &self.done {
            done.on_start();
        }
        ResponseFuture::called(self.service.call(request), self.done)
    }
}
