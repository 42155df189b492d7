//! Which backends are in use: the balancer's, or the resolver's (fallback).
//!
//! Two stages, both driven by watches: a task that reads the resolver's
//! updates and splits them into balancer addresses and fallback backends
//! ([`Resolved`]), and the stream of [`Update`]s that a
//! [`GrpclbDiscover`](crate::GrpclbDiscover) turns into backends, which
//! follows grpc-go's rules for entering and leaving fallback.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use grpc_lb_core::{Connectivity, ConnectivityState};
use grpc_lb_resolve::{Address, Endpoint, Update, UpdateStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::backend::LB_TOKEN_KEY;
use crate::balancer::{BalancerStatus, ServerList};

/// The endpoint metadata key that marks a resolver's endpoint as a balancer
/// rather than a backend (the `dns` resolver sets it on the addresses of
/// `_grpclb._tcp.<host>` SRV records when asked to look them up).
pub const BALANCER_ADDRESS_KEY: &str = grpc_lb_resolve::dns::GRPCLB_BALANCER_KEY;

/// What the resolver says, split: balancer addresses and fallback backends.
///
/// ```
/// use grpc_lb_grpclb::Resolved;
///
/// let nothing_yet = Resolved::default();
/// assert!(!nothing_yet.resolved && nothing_yet.balancers.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Endpoints marked with [`BALANCER_ADDRESS_KEY`], in the resolver's order.
    pub balancers: Arc<[Endpoint]>,
    /// The other endpoints: the backends used in fallback.
    pub backends: Arc<[Endpoint]>,
    /// The resolver has reported at least once.
    pub resolved: bool,
}

/// Which backends are in use.
///
/// ```
/// use grpc_lb_grpclb::{Mode, ModeStatus};
///
/// // A policy starts waiting for its first server list.
/// assert_eq!(ModeStatus::default().mode, Mode::Waiting);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// No server list yet, not in fallback: there are no backends.
    #[default]
    Waiting,
    /// The backends of the balancer's server list.
    Balancer,
    /// The resolver's backends.
    Fallback,
}

/// Reads `updates` until they end, publishing each new split on `resolved`.
pub(crate) async fn split_resolver(mut updates: UpdateStream, resolved: watch::Sender<Resolved>) {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    while let Some(update) = updates.next().await {
        match update {
            Ok(Update::Reset(all)) => endpoints = all,
            Ok(Update::Add(added)) => {
                for endpoint in added {
                    match endpoints.iter_mut().find(|e| e.address == endpoint.address) {
                        Some(known) => *known = endpoint,
                        None => endpoints.push(endpoint),
                    }
                }
            }
            Ok(Update::Remove(gone)) => endpoints.retain(|e| !gone.contains(&e.address)),
            // The service config is the channel's business, not the policy's.
            Ok(Update::ServiceConfig(_)) => continue,
            Err(error) => {
                tracing::debug!("grpclb: resolver error, keeping the last addresses: {error}");
                continue;
            }
        }
        let (balancers, backends): (Vec<Endpoint>, Vec<Endpoint>) = endpoints
            .iter()
            .cloned()
            .partition(|e| e.attributes.metadata.contains_key(BALANCER_ADDRESS_KEY));
        resolved.send_if_modified(|now| {
            let next = Resolved {
                balancers: balancers.into(),
                backends: backends.into(),
                resolved: true,
            };
            let changed = *now != next;
            *now = next;
            changed
        });
    }
    tracing::debug!("grpclb: the resolver's stream ended; keeping its last addresses");
}

/// The state behind the update stream of a [`GrpclbDiscover`](crate::GrpclbDiscover).
pub(crate) struct ModeMachine {
    pub(crate) status: watch::Receiver<BalancerStatus>,
    pub(crate) resolved: watch::Receiver<Resolved>,
    pub(crate) backends: watch::Receiver<Option<watch::Receiver<Connectivity>>>,
    pub(crate) active: Arc<watch::Sender<Option<ServerList>>>,
    pub(crate) mode: Arc<watch::Sender<ModeStatus>>,
    pub(crate) fallback_timer: Option<Pin<Box<Sleep>>>,
    backend_state: Option<watch::Receiver<Connectivity>>,
    seen_lists: u64,
    seen_fallbacks: u64,
    seen_losses: u64,
    current: Mode,
    emitted: Option<Vec<Endpoint>>,
    status_closed: bool,
    resolved_closed: bool,
    backends_closed: bool,
}

/// The mode and how often fallback was entered, for observers and tests
/// ([`Grpclb::mode`](crate::Grpclb::mode); see [`Mode`]'s example).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModeStatus {
    /// The mode now.
    pub mode: Mode,
    /// How many times fallback was entered.
    pub fallbacks: u64,
    /// How many times a server list was taken into use.
    pub lists_used: u64,
}

impl ModeMachine {
    pub(crate) fn new(
        status: watch::Receiver<BalancerStatus>,
        resolved: watch::Receiver<Resolved>,
        backends: watch::Receiver<Option<watch::Receiver<Connectivity>>>,
        active: Arc<watch::Sender<Option<ServerList>>>,
        mode: Arc<watch::Sender<ModeStatus>>,
        fallback_timeout: Duration,
    ) -> Self {
        ModeMachine {
            status,
            resolved,
            backends,
            active,
            mode,
            fallback_timer: Some(Box::pin(tokio::time::sleep_until(
                Instant::now() + fallback_timeout,
            ))),
            backend_state: None,
            seen_lists: 0,
            seen_fallbacks: 0,
            seen_losses: 0,
            current: Mode::Waiting,
            emitted: None,
            status_closed: false,
            resolved_closed: false,
            backends_closed: false,
        }
    }

    /// The stream of updates, for a `ResolverDiscover`.
    pub(crate) fn into_updates(self) -> UpdateStream {
        Box::pin(futures::stream::unfold(self, |mut machine| async move {
            let update = machine.next_update().await;
            Some((Ok(update), machine))
        }))
    }

    async fn next_update(&mut self) -> Update {
        loop {
            if let Some(update) = self.evaluate() {
                return update;
            }
            tokio::select! {
                changed = self.status.changed(), if !self.status_closed => {
                    // The balancer task is gone: as a balancer that never answers.
                    self.status_closed = changed.is_err();
                }
                changed = self.resolved.changed(), if !self.resolved_closed => {
                    self.resolved_closed = changed.is_err();
                }
                changed = self.backends.changed(), if !self.backends_closed => {
                    self.backends_closed = changed.is_err();
                    self.backend_state = self.backends.borrow_and_update().clone();
                }
                () = backend_state_changed(&mut self.backend_state) => {}
                () = fire(&mut self.fallback_timer) => {
                    if self.current == Mode::Waiting {
                        tracing::info!("grpclb: no server list within the fallback timeout; using the resolver's backends");
                        self.enter(Mode::Fallback);
                    }
                }
            }
        }
    }

    fn enter(&mut self, mode: Mode) {
        if mode == Mode::Fallback && self.current != Mode::Fallback {
            self.mode.send_modify(|now| now.fallbacks += 1);
        }
        self.current = mode;
        self.mode.send_modify(|now| now.mode = mode);
    }

    /// Applies what changed; the update to emit, if the backends changed.
    fn evaluate(&mut self) -> Option<Update> {
        let status = self.status.borrow_and_update().clone();
        if status.fallback_responses != self.seen_fallbacks {
            self.seen_fallbacks = status.fallback_responses;
            tracing::info!("grpclb: the balancer asked for fallback");
            self.enter(Mode::Fallback);
        }
        if status.server_lists != self.seen_lists {
            self.seen_lists = status.server_lists;
            if status.server_list.is_some() {
                // A server list ends fallback, and the fallback timer.
                self.fallback_timer = None;
                self.enter(Mode::Balancer);
                self.mode.send_modify(|now| now.lists_used += 1);
            }
        }
        let lost = status.streams_lost != self.seen_losses;
        self.seen_losses = status.streams_lost;
        // grpc-go enters fallback when the balancer is lost and the backends
        // are not READY: at the loss, and at any backend change while it
        // stays lost. Without a watch on the backends they are taken as
        // READY: the last server list is kept. (Read on every pass, so that
        // the watch's change is marked seen.)
        let backends_ready = self
            .backend_state
            .as_mut()
            .is_none_or(|state| state.borrow_and_update().state == ConnectivityState::Ready);
        if self.current != Mode::Fallback {
            // At a loss (even one already followed by a new stream), and
            // for as long as the balancer stays away.
            let away = lost || !status.connected;
            let waiting_lost = self.current == Mode::Waiting && lost;
            let balancer_lost = self.current == Mode::Balancer && away && !backends_ready;
            if waiting_lost || balancer_lost {
                tracing::info!(
                    "grpclb: balancer lost and no backend ready; using the resolver's backends"
                );
                self.enter(Mode::Fallback);
            }
        }
        let (wanted, list) = match self.current {
            Mode::Waiting => return None,
            Mode::Balancer => {
                let list = status.server_list.clone();
                (list.as_ref().map(list_endpoints).unwrap_or_default(), list)
            }
            Mode::Fallback => (self.resolved.borrow_and_update().backends.to_vec(), None),
        };
        self.active.send_if_modified(|now| {
            let changed = *now != list;
            if changed {
                *now = list;
            }
            changed
        });
        if self.emitted.as_ref() == Some(&wanted) {
            return None;
        }
        self.emitted = Some(wanted.clone());
        Some(Update::Reset(wanted))
    }
}

/// The backends of a server list, each address once (a repeated address is
/// one backend: the drop order still counts its entries), with its token.
fn list_endpoints(list: &ServerList) -> Vec<Endpoint> {
    let mut seen: HashMap<Address, ()> = HashMap::new();
    list.backends()
        .filter(|(address, _)| seen.insert(Address::Socket(*address), ()).is_none())
        .map(|(address, token)| Endpoint::new(address).with_metadata(LB_TOKEN_KEY, token))
        .collect()
}

/// Resolves when the backends' state changes (never without a watch, nor
/// once its balancer is gone).
async fn backend_state_changed(state: &mut Option<watch::Receiver<Connectivity>>) {
    match state {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *state = None;
            }
        }
        None => std::future::pending().await,
    }
}

async fn fire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer.as_mut() {
        Some(sleep) => {
            sleep.await;
            *timer = None;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "updates_tests.rs"]
mod tests;
