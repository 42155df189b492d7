//! The connectivity timeline of a `call` load: the channel's state changes
//! and each subchannel's, timed from the start of the command, read from
//! [`GrpcChannel::events`] while traffic flows (the way `watch` reads them).

use std::time::Duration;

use grpc_lb::{ChannelEvent, ConnectivityState};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::channel::GrpcChannel;

/// One entry of a state timeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateAt {
    pub(crate) t: Duration,
    pub(crate) state: ConnectivityState,
}

/// What the channel's events told while traffic flowed.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The channel's states, from IDLE at 0.
    pub(crate) states: Vec<StateAt>,
    /// Each subchannel's states, by address, in the order they were first
    /// seen; a removed one ends in SHUTDOWN.
    pub(crate) subchannels: Vec<(String, Vec<StateAt>)>,
    /// The policy of the last `ServiceConfig` event: the one in use.
    pub(crate) policy: Option<String>,
}

impl Seen {
    fn record(&mut self, event: ChannelEvent, t: Duration) {
        match event {
            ChannelEvent::State { to, .. } => push(&mut self.states, t, to),
            ChannelEvent::ServiceConfig { policy, .. } => self.policy = Some(policy),
            ChannelEvent::SubchannelAdded { address, state, .. } => {
                self.subchannel(address.to_string(), t, state);
            }
            ChannelEvent::SubchannelState { address, to, .. } => {
                self.subchannel(address.to_string(), t, to);
            }
            ChannelEvent::SubchannelRemoved { address, .. } => {
                self.subchannel(address.to_string(), t, ConnectivityState::Shutdown);
            }
            _ => {}
        }
    }

    fn subchannel(&mut self, address: String, t: Duration, state: ConnectivityState) {
        match self.subchannels.iter_mut().find(|(a, _)| *a == address) {
            Some((_, states)) => push(states, t, state),
            None => self.subchannels.push((address, vec![StateAt { t, state }])),
        }
    }

    /// Takes the channel's state and its subchannels' as they are now (at
    /// the start, or after missing events).
    fn resync(&mut self, channel: &GrpcChannel, t: Duration) {
        push(&mut self.states, t, channel.state());
        for sub in channel.subchannels() {
            self.subchannel(sub.address.to_string(), t, sub.state);
        }
    }
}

/// Records the channel's and subchannels' state changes, from `start`,
/// until finished.
#[derive(Debug)]
pub(crate) struct Timeline {
    flush: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Seen>,
}

impl Timeline {
    /// Call right after building the channel: its worker may already have
    /// moved, and the changes it made before the subscription are taken from
    /// the channel's history and its subchannels, timed at the subscription.
    pub(crate) fn start(channel: &GrpcChannel, start: Instant) -> Self {
        let mut events = channel.events();
        let now = start.elapsed();
        let mut seen = Seen {
            states: vec![StateAt {
                t: Duration::ZERO,
                state: ConnectivityState::Idle,
            }],
            ..Seen::default()
        };
        for state in channel.state_history() {
            push(&mut seen.states, now, state);
        }
        seen.resync(channel, now);
        let channel = channel.clone();
        let (flush, mut flushed) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => seen.record(event, start.elapsed()),
                        Err(RecvError::Lagged(_)) => seen.resync(&channel, start.elapsed()),
                        Err(RecvError::Closed) => return seen,
                    },
                    _ = &mut flushed => break,
                }
            }
            // What the worker sent before the traffic ended is in the queue.
            loop {
                match events.try_recv() {
                    Ok(event) => seen.record(event, start.elapsed()),
                    Err(TryRecvError::Lagged(_)) => seen.resync(&channel, start.elapsed()),
                    Err(_) => return seen,
                }
            }
        });
        Timeline { flush, task }
    }

    pub(crate) async fn finish(self) -> Seen {
        let _ = self.flush.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Appends a state, skipping a repeat (subscribing and reading the history
/// race, so one change can be seen twice).
fn push(states: &mut Vec<StateAt>, t: Duration, state: ConnectivityState) {
    if states.last().map(|s| s.state) != Some(state) {
        states.push(StateAt { t, state });
    }
}
