//! What the worker publishes and every caller reads: the picker.

use std::collections::VecDeque;
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
    /// Picks a connection that is still open. A closed one is skipped (the worker
    /// will publish a picker without it); after as many tries as there are
    /// connections, gives up.
    pub(crate) fn pick<Req>(&self, cx: &mut Context<'_>) -> Option<Picked<S>>
    where
        S: Service<Req>,
    {
        if self.connections.is_empty() {
            return None;
        }
        for _ in 0..self.connections.len() {
            let index = self.pick.pick(&self.loads);
            let mut connection = self.connections[index].clone();
            if let Poll::Ready(Ok(())) = connection.poll_ready(cx) {
                return Some(Picked {
                    connection,
                    load: self.loads[index].clone(),
                    outcome: self.outcomes.get(index).cloned(),
                    peer: self.peers[index].clone(),
                    timed: self.pick.uses_latency(),
                });
            }
        }
        None
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
