use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use grpc_lb_core::{ConnectivityState, SharedError};

use super::{
    DoneInfo, EndpointAttributes, EndpointId, Helper, OnDone, Pick, PickInfo, PickResult,
    SubchannelId, TimerId,
};

/// An immutable snapshot that chooses a subchannel for each call (grpc-go's
/// `balancer.Picker`).
///
/// A policy builds a new picker whenever what it would pick changes, and
/// reports it with [`Helper::update_state`]; the balancer publishes the root's
/// picker, and every caller picks from the latest one at once, without a lock.
/// A picker is therefore `Send + Sync` and picks through `&self`: state that
/// changes per call (a round-robin cursor, calls in flight) lives in atomics.
/// A pick must not cost work proportional to the number of endpoints; the
/// provided pickers cost the same at 10 and at 10,000.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use grpc_lb_balance::tree::{Pick, PickInfo, PickResult, Picker, SubchannelId};
///
/// /// Alternates between two subchannels.
/// #[derive(Debug)]
/// struct Alternate([SubchannelId; 2], AtomicUsize);
///
/// impl Picker for Alternate {
///     fn pick(&self, _: &PickInfo<'_>) -> PickResult {
///         let turn = self.1.fetch_add(1, Ordering::Relaxed);
///         PickResult::Pick(Pick::new(self.0[turn % 2]))
///     }
/// }
///
/// let (a, b) = (SubchannelId::from_raw(1), SubchannelId::from_raw(2));
/// let picker = Alternate([a, b], AtomicUsize::new(0));
/// let picked: Vec<_> = (0..3)
///     .map(|_| match picker.pick(&PickInfo::none()) {
///         PickResult::Pick(pick) => pick.subchannel(),
///         other => panic!("{other:?}"),
///     })
///     .collect();
/// assert_eq!(picked, [a, b, a]);
/// ```
pub trait Picker: Send + Sync + fmt::Debug + 'static {
    /// Chooses a subchannel for one call: pick it, queue the call until the
    /// next picker, fail it (a call that waits for ready keeps waiting), or
    /// drop it (it fails even if it waits for ready).
    fn pick(&self, info: &PickInfo<'_>) -> PickResult;
}

/// A picker that always answers the same (grpc-go's `base.NewErrPicker` and
/// pick_first's picker of its one READY subchannel).
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::tree::{FixedPicker, Pick, PickInfo, PickResult, Picker, SubchannelId};
///
/// let queue = FixedPicker::queue();
/// assert!(matches!(queue.pick(&PickInfo::none()), PickResult::Queue));
/// let one = FixedPicker::new(PickResult::Pick(Pick::new(SubchannelId::from_raw(7))));
/// assert!(matches!(one.pick(&PickInfo::none()), PickResult::Pick(p) if p.subchannel().raw() == 7));
/// let failing = FixedPicker::fail(Arc::new(std::io::Error::other("refused")));
/// assert!(matches!(failing.pick(&PickInfo::none()), PickResult::Fail(_)));
/// ```
#[derive(Clone, Debug)]
pub struct FixedPicker(PickResult);

impl FixedPicker {
    /// Answers `result` to every pick.
    pub const fn new(result: PickResult) -> Self {
        FixedPicker(result)
    }

    /// Queues every call: the picker of a policy with nothing to pick yet.
    /// One shared instance, so reporting it allocates nothing.
    pub fn queue() -> Arc<dyn Picker> {
        static QUEUE: OnceLock<Arc<FixedPicker>> = OnceLock::new();
        QUEUE
            .get_or_init(|| Arc::new(FixedPicker(PickResult::Queue)))
            .clone()
    }

    /// Fails every call with `error` (TRANSIENT_FAILURE).
    pub fn fail(error: SharedError) -> Arc<dyn Picker> {
        Arc::new(FixedPicker(PickResult::Fail(error)))
    }

    /// Picks `subchannel` for every call.
    pub fn subchannel(subchannel: SubchannelId) -> Arc<dyn Picker> {
        Arc::new(FixedPicker(PickResult::Pick(Pick::new(subchannel))))
    }
}

impl Picker for FixedPicker {
    fn pick(&self, _info: &PickInfo<'_>) -> PickResult {
        self.0.clone()
    }
}

/// A [`Helper`] that forwards everything to its parent's, except that each
/// picker its policy reports passes through `wrap` first: how a policy that
/// wraps another wraps its picker (outlier detection counts the calls of its
/// child's picks this way).
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::tree::{FixedPicker, Helper, Picker, PickInfo, PickResult, WrappingHelper};
/// # use grpc_lb_balance::tree::{SubchannelId, TimerId};
/// # use grpc_lb_core::{ConnectivityState, SharedError};
/// # #[derive(Default)]
/// # struct Recorder(Option<Arc<dyn Picker>>);
/// # impl Helper for Recorder {
/// #     fn connect(&mut self, _: SubchannelId) {}
/// #     fn disconnect(&mut self, _: SubchannelId) {}
/// #     fn update_state(&mut self, _: ConnectivityState, _: Option<SharedError>, picker: Arc<dyn Picker>) { self.0 = Some(picker) }
/// #     fn set_timer(&mut self, _: std::time::Duration) -> TimerId { TimerId::from_raw(1) }
/// #     fn cancel_timer(&mut self, _: TimerId) {}
/// #     fn resolve_now(&mut self) {}
/// # }
///
/// let mut parent = Recorder::default(); // keeps the last picker reported
/// let mut helper = WrappingHelper::new(&mut parent, |_state, _child: Arc<dyn Picker>| {
///     FixedPicker::fail(Arc::new(std::io::Error::other("replaced")))
/// });
/// helper.update_state(ConnectivityState::Ready, None, FixedPicker::queue());
/// let reported = parent.0.unwrap();
/// assert!(matches!(reported.pick(&PickInfo::none()), PickResult::Fail(_)));
/// ```
pub struct WrappingHelper<'a, F> {
    parent: &'a mut dyn Helper,
    wrap: F,
}

impl<'a, F> WrappingHelper<'a, F>
where
    F: FnMut(ConnectivityState, Arc<dyn Picker>) -> Arc<dyn Picker>,
{
    /// Forwards to `parent`, wrapping each reported picker with `wrap`.
    pub fn new(parent: &'a mut dyn Helper, wrap: F) -> Self {
        WrappingHelper { parent, wrap }
    }
}

impl<F> fmt::Debug for WrappingHelper<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappingHelper").finish_non_exhaustive()
    }
}

impl<F> Helper for WrappingHelper<'_, F>
where
    F: FnMut(ConnectivityState, Arc<dyn Picker>) -> Arc<dyn Picker>,
{
    fn connect(&mut self, subchannel: SubchannelId) {
        self.parent.connect(subchannel)
    }
    fn disconnect(&mut self, subchannel: SubchannelId) {
        self.parent.disconnect(subchannel)
    }
    fn update_state(
        &mut self,
        state: ConnectivityState,
        error: Option<SharedError>,
        picker: Arc<dyn Picker>,
    ) {
        let picker = (self.wrap)(state, picker);
        self.parent.update_state(state, error, picker)
    }
    fn set_timer(&mut self, after: Duration) -> TimerId {
        self.parent.set_timer(after)
    }
    fn cancel_timer(&mut self, timer: TimerId) {
        self.parent.cancel_timer(timer)
    }
    fn resolve_now(&mut self) {
        self.parent.resolve_now()
    }
    fn endpoint_attributes(&self, endpoint: EndpointId) -> Option<EndpointAttributes> {
        self.parent.endpoint_attributes(endpoint)
    }
}

/// Two callbacks told of the same call: a wrapping policy's and its child's.
#[derive(Debug)]
pub(crate) struct Chained {
    pub(crate) outer: Arc<dyn OnDone>,
    pub(crate) inner: Arc<dyn OnDone>,
}

impl OnDone for Chained {
    fn on_start(&self) {
        self.outer.on_start();
        self.inner.on_start();
    }

    fn on_done(&self, info: &DoneInfo<'_>) {
        self.outer.on_done(info);
        self.inner.on_done(info);
    }
}

/// `pick` with `outer` told of its call too; allocates only when the pick
/// already has a callback of its own.
pub(crate) fn with_outer_done(pick: Pick, outer: &Arc<dyn OnDone>) -> Pick {
    with_owned_outer_done(pick, outer.clone())
}

/// [`with_outer_done`] with a callback the caller already cloned (one
/// reference count increment per pick, not two and a decrement).
pub(crate) fn with_owned_outer_done(pick: Pick, outer: Arc<dyn OnDone>) -> Pick {
    let subchannel = pick.subchannel();
    match pick.into_done() {
        Some(inner) => Pick::with_done(subchannel, Arc::new(Chained { outer, inner })),
        None => Pick::with_done(subchannel, outer),
    }
}

/// A random `u64` from a per-thread xorshift generator: pickers that draw
/// (least_request's candidates, ring_hash's random hash) need spread, not
/// secrecy, and concurrent callers must not contend on one atomic.
pub(crate) fn fast_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// A random index below `n` (which must be non-zero).
pub(crate) fn random_below(n: usize) -> usize {
    ((fast_random() as u128 * n as u128) >> 64) as usize
}
