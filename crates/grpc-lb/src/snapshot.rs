//! What the worker publishes and every caller reads: the picker.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::task::AtomicWaker;
use grpc_lb_balance::outlier::CallCounter;
use grpc_lb_balance::{EndpointLoad, Pick, SingleReady};
use grpc_lb_core::{Connectivity, ConnectivityState, SharedError};
use grpc_lb_service_config::ServiceConfig;
use tokio::sync::{broadcast, watch, Semaphore};
use tower_service::Service;

use crate::idle::Activity;
use crate::observe::{
    CallCounters, ChannelEvent, Peer, SubchannelEntry, SubchannelInfo, EVENT_CAPACITY,
};

/// An immutable picker: the ready connections and how to choose among them.
/// Replaced as a whole by the worker; read without a lock by every caller.
pub(crate) struct Snapshot<S> {
    /// The ready endpoints, in the order of `connections`.
    pub(crate) peers: Vec<Peer>,
    pub(crate) connections: Vec<S>,
    pub(crate) loads: Vec<Arc<EndpointLoad>>,
    /// Where each endpoint's call outcomes are counted for outlier detection,
    /// in the order of `connections`; empty when it is off.
    pub(crate) outcomes: Vec<Arc<CallCounter>>,
    pub(crate) pick: Arc<dyn Pick>,
    pub(crate) state: ConnectivityState,
    pub(crate) last_error: Option<SharedError>,
    /// Every call fails at once with `last_error`, wait-for-ready or not: the
    /// resolver's first service config was bad and there is no default
    /// (grpc-go's failing picker, whose status error ends even wait-for-ready
    /// RPCs).
    pub(crate) fail_all: bool,
}

impl<S> Snapshot<S> {
    pub(crate) fn empty(state: ConnectivityState) -> Self {
        Snapshot {
            peers: Vec::new(),
            connections: Vec::new(),
            loads: Vec::new(),
            outcomes: Vec::new(),
            pick: Arc::new(SingleReady),
            state,
            last_error: None,
            fail_all: false,
        }
    }
}

impl<S: Clone> Snapshot<S> {
    /// Picks a connection that is ready now, for `poll_ready`'s fast path:
    /// `None` sends the call to wait (see [`try_pick`](Self::try_pick)).
    pub(crate) fn pick<Req>(self: &Arc<Self>, cx: &mut Context<'_>) -> Option<Picked<S>>
    where
        S: Service<Req>,
    {
        match self.try_pick(cx) {
            PickAttempt::Picked(picked) => Some(picked),
            PickAttempt::Busy(_) | PickAttempt::Empty | PickAttempt::Invalid(_) => None,
        }
    }

    /// Picks a connection that is ready, trying as many times as there are
    /// connections (a closed one is skipped: the worker will publish a picker
    /// without it). Connections that were not ready are handed back in
    /// [`PickAttempt::Busy`], still registered with the caller's waker: a
    /// connection that can be Pending (under a tower `ConcurrencyLimit`) wakes
    /// its waiter when it frees up, which a dropped clone never would.
    pub(crate) fn try_pick<Req>(self: &Arc<Self>, cx: &mut Context<'_>) -> PickAttempt<S>
    where
        S: Service<Req>,
    {
        let count = self.connections.len();
        if count == 0 {
            return PickAttempt::Empty;
        }
        let mut busy = Vec::new();
        for _ in 0..count {
            let index = self.pick.pick(&self.loads);
            if index >= count {
                let error = InvalidPick { index, count };
                tracing::error!(pick = ?self.pick, "{error}");
                return PickAttempt::Invalid(error);
            }
            let mut connection = self.connections[index].clone();
            match connection.poll_ready(cx) {
                Poll::Ready(Ok(())) => return PickAttempt::Picked(self.picked(index, connection)),
                Poll::Pending => busy.push((index, connection)),
                Poll::Ready(Err(_)) => {}
            }
        }
        if busy.is_empty() {
            return PickAttempt::Empty;
        }
        PickAttempt::Busy(Busy {
            snapshot: self.clone(),
            waiting: busy,
        })
    }

    fn picked(&self, index: usize, connection: S) -> Picked<S> {
        Picked {
            connection,
            load: self.loads[index].clone(),
            outcome: self.outcomes.get(index).cloned(),
            peer: self.peers[index].clone(),
            timed: self.pick.uses_latency(),
        }
    }
}

/// What one pick found.
pub(crate) enum PickAttempt<S> {
    Picked(Picked<S>),
    /// Connections to pick from, none of them ready yet.
    Busy(Busy<S>),
    /// No connection to pick from.
    Empty,
    /// The policy's [`Pick`] chose an endpoint that is not there.
    Invalid(InvalidPick),
}

/// The connections a pick found not ready, kept so that their readiness
/// wakes the caller.
pub(crate) struct Busy<S> {
    snapshot: Arc<Snapshot<S>>,
    waiting: Vec<(usize, S)>,
}

impl<S: Clone> Busy<S> {
    /// Ready with the first kept connection that is; one that fails is
    /// dropped, and with none left this stays Pending (the caller also waits
    /// for a new picker).
    pub(crate) fn poll_ready<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Picked<S>>
    where
        S: Service<Req>,
    {
        let mut i = 0;
        while i < self.waiting.len() {
            match self.waiting[i].1.poll_ready(cx) {
                Poll::Pending => i += 1,
                Poll::Ready(Ok(())) => {
                    let (index, connection) = self.waiting.swap_remove(i);
                    return Poll::Ready(self.snapshot.picked(index, connection));
                }
                Poll::Ready(Err(_)) => {
                    self.waiting.swap_remove(i);
                }
            }
        }
        Poll::Pending
    }
}

/// A [`Pick`] answered an index outside the endpoints it was given: a bug in
/// that pick, which fails the call (INTERNAL) instead of panicking in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidPick {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl fmt::Display for InvalidPick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the load-balancing pick chose endpoint {} of {} ready endpoints",
            self.index, self.count
        )
    }
}

impl std::error::Error for InvalidPick {}

impl From<InvalidPick> for tonic::Status {
    fn from(error: InvalidPick) -> Self {
        tonic::Status::internal(error.to_string())
    }
}

/// A pick: the connection to send on, its endpoint's load and its address.
pub(crate) struct Picked<S> {
    pub(crate) connection: S,
    pub(crate) load: Arc<EndpointLoad>,
    /// Where the call's outcome is counted, with outlier detection on.
    pub(crate) outcome: Option<Arc<CallCounter>>,
    pub(crate) peer: Peer,
    /// Whether the call's round-trip time feeds the pick (p2c's PeakEWMA).
    pub(crate) timed: bool,
}

/// State shared by the worker and every clone of the channel.
pub(crate) struct Shared<S> {
    pub(crate) channel_id: u64,
    pub(crate) snapshot: ArcSwap<Snapshot<S>>,
    /// Bumped on every new snapshot, for callers waiting for a pick.
    pub(crate) version: watch::Sender<u64>,
    pub(crate) connectivity: watch::Sender<Connectivity>,
    pub(crate) exit_idle: AtomicBool,
    /// Idle mode could not be left (the resolver would not start again): a
    /// request asks again, though the channel reads TRANSIENT_FAILURE, not
    /// IDLE.
    pub(crate) leaving_idle_failed: AtomicBool,
    pub(crate) worker: AtomicWaker,
    pub(crate) waiting: Arc<Semaphore>,
    pub(crate) max_waiting: usize,
    pub(crate) wait_for_ready: bool,
    /// The last state changes, oldest first, never coalesced (unlike the watch).
    pub(crate) history: Mutex<VecDeque<ConnectivityState>>,
    /// The subchannels, in the resolver's order; replaced when the list changes.
    pub(crate) subchannels: ArcSwap<Vec<SubchannelEntry>>,
    /// Every state change of the channel and its subchannels.
    pub(crate) events: broadcast::Sender<ChannelEvent>,
    /// Calls started, succeeded and failed.
    pub(crate) calls: Arc<CallCounters>,
    /// Open calls, for idle mode; `None` without it.
    pub(crate) activity: Option<Arc<Activity>>,
    /// The service config in force, whose method configs every call reads:
    /// swapped by the worker, loaded without a lock.
    pub(crate) service_config: ArcSwapOption<ServiceConfig>,
    /// The deadline of a call that sets none sooner (`Builder::timeout`).
    pub(crate) default_timeout: Option<std::time::Duration>,
    /// Set by `Channel::close` (or the drop of the last clone, through the
    /// worker): no call is picked or waits any more.
    pub(crate) closed: AtomicBool,
}

/// How many state changes [`Shared::history`] keeps.
pub(crate) const HISTORY_LEN: usize = 64;

impl<S> Shared<S> {
    /// Every subchannel, in the resolver's order, read live.
    pub(crate) fn subchannel_infos(&self) -> Vec<SubchannelInfo> {
        self.subchannels
            .load()
            .iter()
            .map(|entry| SubchannelInfo::read(&entry.address, &entry.handle))
            .collect()
    }

    pub(crate) fn new(
        channel_id: u64,
        max_waiting: usize,
        wait_for_ready: bool,
        track_activity: bool,
        service_config: Option<Arc<ServiceConfig>>,
    ) -> Self {
        let (version, _) = watch::channel(0);
        let (connectivity, _) = watch::channel(Connectivity::new(ConnectivityState::Idle));
        Shared {
            channel_id,
            snapshot: ArcSwap::from_pointee(Snapshot::empty(ConnectivityState::Idle)),
            version,
            connectivity,
            exit_idle: AtomicBool::new(false),
            leaving_idle_failed: AtomicBool::new(false),
            worker: AtomicWaker::new(),
            waiting: Arc::new(Semaphore::new(max_waiting)),
            max_waiting,
            wait_for_ready,
            history: Mutex::new(VecDeque::with_capacity(HISTORY_LEN)),
            subchannels: ArcSwap::from_pointee(Vec::new()),
            events: broadcast::channel(EVENT_CAPACITY).0,
            calls: Arc::new(CallCounters::new(channel_id)),
            activity: track_activity.then(|| Arc::new(Activity::new())),
            service_config: ArcSwapOption::new(service_config),
            default_timeout: None,
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the channel for calls: the picker goes empty in SHUTDOWN, and
    /// every call waiting for a connection wakes up to fail. The worker
    /// stops at its next poll.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.snapshot
            .store(Arc::new(Snapshot::empty(ConnectivityState::Shutdown)));
        self.version.send_modify(|v| *v += 1);
        self.worker.wake();
    }

    pub(crate) fn record(&self, state: ConnectivityState) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY_LEN {
            history.pop_front();
        }
        history.push_back(state);
    }

    /// Sends an event to whoever listens; nobody listening is fine.
    pub(crate) fn emit(&self, event: ChannelEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn request_exit_idle(&self) {
        if !self.exit_idle.swap(true, Ordering::AcqRel) {
            self.worker.wake();
        }
    }
}
